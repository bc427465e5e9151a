//! The named preprocessing presets: which checkpoint source's own input pipeline
//! a backbone uses. The recipes themselves (resize, crop, channels, scaling) are in
//! `vpipe-media` (`PresetRecipe`); the names are shared here so that crates that only
//! name presets (the weights registry) need no media code.

use std::fmt;
use std::str::FromStr;

/// The named presets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PreprocessPreset {
    /// timm's `mobilevit_*` evaluation transform (`timm.data.create_transform` with
    /// the model's pretrained config: `Resize(284, bicubic)`, `CenterCrop(256)`,
    /// `ToTensor`).
    Timm,
    /// ml-cvnets v0.1 ImageNet evaluation (`imagenet.py` `validation_transforms`):
    /// BGR, shorter side to 288 with `cv2.resize` `INTER_LINEAR`, centre crop 256.
    CvnetsCls,
    /// Hugging Face `MobileViTImageProcessor` with the `apple/mobilevit-*` Hub config.
    HfCls,
    /// Hugging Face `MobileViTImageProcessor` with the `apple/deeplabv3-mobilevit-*`
    /// Hub config.
    HfSeg,
    /// ml-cvnets v0.1 COCO SSD evaluation (`coco.py` `validation_transforms`): BGR,
    /// `cv2.resize` to 320x320, `INTER_LINEAR`.
    CvnetsSsd,
    /// ml-cvnets v0.1 PASCAL VOC evaluation (`pascal_voc.py`
    /// `validation_transforms`): BGR, `cv2.resize` to 512x512, `INTER_LINEAR`.
    CvnetsSeg,
}

impl PreprocessPreset {
    /// All presets.
    pub const ALL: [PreprocessPreset; 6] = [
        PreprocessPreset::Timm,
        PreprocessPreset::CvnetsCls,
        PreprocessPreset::HfCls,
        PreprocessPreset::HfSeg,
        PreprocessPreset::CvnetsSsd,
        PreprocessPreset::CvnetsSeg,
    ];

    /// The preset's name.
    pub fn name(self) -> &'static str {
        match self {
            PreprocessPreset::Timm => "timm",
            PreprocessPreset::CvnetsCls => "cvnets-cls",
            PreprocessPreset::HfCls => "hf-cls",
            PreprocessPreset::HfSeg => "hf-seg",
            PreprocessPreset::CvnetsSsd => "cvnets-ssd",
            PreprocessPreset::CvnetsSeg => "cvnets-seg",
        }
    }
}

impl fmt::Display for PreprocessPreset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A preprocessing preset name that is none of [`PreprocessPreset::ALL`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownPreset {
    /// The name as written.
    pub written: String,
    /// The known name closest to it, if it looks like a typo of one.
    pub suggestion: Option<&'static str>,
}

impl UnknownPreset {
    /// What is wrong, without the suggestion.
    pub fn message(&self) -> String {
        let names = PreprocessPreset::ALL.map(PreprocessPreset::name);
        format!(
            "unknown preprocessing preset '{}' (known: {})",
            self.written,
            names.join(", ")
        )
    }
}

impl fmt::Display for UnknownPreset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message())?;
        match self.suggestion {
            Some(s) => write!(f, " (hint: did you mean '{s}'?)"),
            None => Ok(()),
        }
    }
}

impl std::error::Error for UnknownPreset {}

impl FromStr for PreprocessPreset {
    type Err = UnknownPreset;

    fn from_str(s: &str) -> std::result::Result<Self, Self::Err> {
        PreprocessPreset::ALL
            .into_iter()
            .find(|p| p.name() == s)
            .ok_or_else(|| UnknownPreset {
                written: s.to_string(),
                suggestion: crate::suggest::closest(
                    s,
                    PreprocessPreset::ALL.map(PreprocessPreset::name),
                ),
            })
    }
}
