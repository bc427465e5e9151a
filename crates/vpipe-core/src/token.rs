//! Names made safe to put into file names and message subjects.

/// `text` as one safe token: ASCII letters, digits, `-` and `_` kept, every other
/// character (path and subject separators, wildcards, spaces) made `_`; `_` for an
/// empty text.
pub fn safe_token(text: &str) -> String {
    let t: String = text
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if t.is_empty() { "_".into() } else { t }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_hold_no_separator_or_wildcard() {
        assert_eq!(safe_token("videos/cam 1.mp4"), "videos_cam_1_mp4");
        assert_eq!(safe_token("rtsp://h:554/a*b>"), "rtsp___h_554_a_b_");
        assert_eq!(safe_token("objects-2_x"), "objects-2_x");
        assert_eq!(safe_token(""), "_");
    }
}
