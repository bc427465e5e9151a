//! Class-name sets.

/// ImageNet-1k class names in the standard index order (WordNet lemmas; the
/// first lemma of each class is its short name).
const IMAGENET1K: &str = include_str!("../data/imagenet1k.txt");

/// COCO detection classes as ml-cvnets numbers them: background at 0, then the 80 COCO classes.
const COCO81: [&str; 81] = [
    "background",
    "person",
    "bicycle",
    "car",
    "motorcycle",
    "airplane",
    "bus",
    "train",
    "truck",
    "boat",
    "traffic light",
    "fire hydrant",
    "stop sign",
    "parking meter",
    "bench",
    "bird",
    "cat",
    "dog",
    "horse",
    "sheep",
    "cow",
    "elephant",
    "bear",
    "zebra",
    "giraffe",
    "backpack",
    "umbrella",
    "handbag",
    "tie",
    "suitcase",
    "frisbee",
    "skis",
    "snowboard",
    "sports ball",
    "kite",
    "baseball bat",
    "baseball glove",
    "skateboard",
    "surfboard",
    "tennis racket",
    "bottle",
    "wine glass",
    "cup",
    "fork",
    "knife",
    "spoon",
    "bowl",
    "banana",
    "apple",
    "sandwich",
    "orange",
    "broccoli",
    "carrot",
    "hot dog",
    "pizza",
    "donut",
    "cake",
    "chair",
    "couch",
    "potted plant",
    "bed",
    "dining table",
    "toilet",
    "tv",
    "laptop",
    "mouse",
    "remote",
    "keyboard",
    "cell phone",
    "microwave",
    "oven",
    "toaster",
    "sink",
    "refrigerator",
    "book",
    "clock",
    "vase",
    "scissors",
    "teddy bear",
    "hair drier",
    "toothbrush",
];

/// PASCAL VOC segmentation classes: background at 0, then the 20 VOC classes.
const VOC21: [&str; 21] = [
    "background",
    "aeroplane",
    "bicycle",
    "bird",
    "boat",
    "bottle",
    "bus",
    "car",
    "cat",
    "chair",
    "cow",
    "diningtable",
    "dog",
    "horse",
    "motorbike",
    "person",
    "pottedplant",
    "sheep",
    "sofa",
    "train",
    "tvmonitor",
];

/// A named set of class labels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LabelSet {
    /// ImageNet-1k, 1000 classes.
    ImageNet1k,
    /// COCO with background, 81 classes.
    Coco81,
    /// PASCAL VOC with background, 21 classes.
    Voc21,
}

impl LabelSet {
    /// The short class names, one per class index.
    pub fn names(self) -> Vec<String> {
        match self {
            LabelSet::ImageNet1k => IMAGENET1K
                .lines()
                .map(|l| l.split(',').next().unwrap_or(l).trim().to_string())
                .collect(),
            LabelSet::Coco81 => COCO81.iter().map(|s| s.to_string()).collect(),
            LabelSet::Voc21 => VOC21.iter().map(|s| s.to_string()).collect(),
        }
    }

    /// Names for a head with `num_classes` outputs: this set's names when the count
    /// matches it, otherwise `class_0`, `class_1`, ...
    pub fn names_for(self, num_classes: usize) -> Vec<String> {
        if num_classes == self.len() {
            self.names()
        } else {
            (0..num_classes).map(|i| format!("class_{i}")).collect()
        }
    }

    /// Number of classes.
    pub fn len(self) -> usize {
        match self {
            LabelSet::ImageNet1k => 1000,
            LabelSet::Coco81 => COCO81.len(),
            LabelSet::Voc21 => VOC21.len(),
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
            LabelSet::Coco81 => "coco81",
            LabelSet::Voc21 => "voc21",
        }
    }
}

/// The colour of class `index` in the standard PASCAL VOC palette (bit-interleaved
/// colour map of the VOC development kit).
pub fn voc_color(index: usize) -> [u8; 3] {
    let mut c = [0u8; 3];
    let mut id = index;
    for shift in (0..8).rev() {
        for (ch, v) in c.iter_mut().enumerate() {
            *v |= (((id >> ch) & 1) as u8) << shift;
        }
        id >>= 3;
        if id == 0 {
            break;
        }
    }
    c
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
        assert_eq!(LabelSet::Coco81.names()[1], "person");
        assert_eq!(LabelSet::Coco81.names()[80], "toothbrush");
        assert_eq!(LabelSet::Voc21.names()[15], "person");
        assert_eq!(LabelSet::Voc21.names_for(21)[20], "tvmonitor");
        assert_eq!(
            LabelSet::Voc21.names_for(3),
            vec!["class_0", "class_1", "class_2"]
        );
    }

    /// The standard PASCAL VOC colour map.
    #[test]
    fn voc_palette_matches_the_standard() {
        assert_eq!(voc_color(0), [0, 0, 0]);
        assert_eq!(voc_color(1), [128, 0, 0]);
        assert_eq!(voc_color(15), [192, 128, 128]);
        assert_eq!(voc_color(20), [0, 64, 128]);
    }
}
