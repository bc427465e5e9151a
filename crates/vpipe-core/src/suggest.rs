//! "Did you mean ...?" hints for names a user mistyped (edit distance from the
//! `strsim` crate).

/// The name in `known` closest to `word` by edit distance, if it is close enough to
/// be a likely typo.
pub fn closest<'a>(word: &str, known: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    known
        .into_iter()
        .map(|k| (strsim::levenshtein(word, k), k))
        .filter(|(d, k)| *d <= (k.len().max(word.len()) / 3).max(2))
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn closest_names() {
        let known = ["conf_threshold", "nms_iou", "top_k", "max_detections"];
        assert_eq!(closest("conf_treshold", known), Some("conf_threshold"));
        assert_eq!(closest("topk", known), Some("top_k"));
        assert_eq!(closest("colour", known), None);
    }
}
