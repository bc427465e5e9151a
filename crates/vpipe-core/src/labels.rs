//! Class-name sets.

/// ImageNet-1k class names in the standard index order (WordNet lemmas; the
/// first lemma of each class is its short name).
const IMAGENET1K: &str = include_str!("../data/imagenet1k.txt");

/// A named set of class labels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LabelSet {
    /// ImageNet-1k, 1000 classes.
    ImageNet1k,
}

impl LabelSet {
    /// The short class names, one per class index.
    pub fn names(self) -> Vec<String> {
        match self {
            LabelSet::ImageNet1k => IMAGENET1K
                .lines()
                .map(|l| l.split(',').next().unwrap_or(l).trim().to_string())
                .collect(),
        }
    }

    /// Number of classes.
    pub fn len(self) -> usize {
        match self {
            LabelSet::ImageNet1k => 1000,
        }
    }

    /// Whether the set is empty (never, for the built-in sets).
    pub fn is_empty(self) -> bool {
        self.len() == 0
    }

    /// The set's name as used in configs and result files.
    pub fn name(self) -> &'static str {
        match self {
            LabelSet::ImageNet1k => "imagenet1k",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn imagenet_has_1000_names_in_order() {
        let n = LabelSet::ImageNet1k.names();
        assert_eq!(n.len(), LabelSet::ImageNet1k.len());
        assert_eq!(n[0], "tench");
        assert_eq!(n[1], "goldfish");
        assert_eq!(n[999], "toilet tissue");
    }
}
