//! MobileViT v1 architectures.
//!
//! Widths, depths, heads and expansion ratios follow Apple ml-cvnets
//! (`cvnets/models/classification/config/mobilevit.py`), which timm and Hugging Face
//! transformers reproduce.

use std::fmt;
use std::str::FromStr;

use crate::layout::CheckpointTask;

/// The output strides a MobileViT backbone is built for: 32 (as trained for
/// classification and detection), 16 (layer 5 dilated instead of strided, as the
/// DeepLabv3 checkpoints) or 8 (layers 4 and 5 dilated). The one list every check
/// of an output stride uses.
pub const OUTPUT_STRIDES: [usize; 3] = [32, 16, 8];

/// [`OUTPUT_STRIDES`] in words: `32, 16 or 8`.
pub fn output_strides_in_words() -> String {
    let [a, b, c] = OUTPUT_STRIDES;
    format!("{a}, {b} or {c}")
}

/// Checks that a backbone can be built at `output_stride` (one of
/// [`OUTPUT_STRIDES`]); the error says so in words: `output stride 12 is not
/// supported (32, 16 or 8)`.
pub fn check_output_stride(output_stride: usize) -> Result<(), String> {
    if OUTPUT_STRIDES.contains(&output_stride) {
        Ok(())
    } else {
        Err(format!(
            "output stride {output_stride} is not supported ({})",
            output_strides_in_words()
        ))
    }
}

/// The output stride the checkpoints of `task` were trained at, the default of a
/// backbone built from one: 16 for segmentation (DeepLabv3), 32 otherwise.
pub fn default_output_stride(task: CheckpointTask) -> usize {
    match task {
        CheckpointTask::Segmentation => 16,
        CheckpointTask::Classification | CheckpointTask::Detection => 32,
    }
}

/// The three published MobileViT v1 sizes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MobileVitSize {
    /// MobileViT-XXS (1.3 M parameters with the ImageNet classifier).
    Xxs,
    /// MobileViT-XS (2.3 M).
    Xs,
    /// MobileViT-S (5.6 M).
    S,
}

impl MobileVitSize {
    /// All sizes, smallest first.
    pub const ALL: [MobileVitSize; 3] = [MobileVitSize::Xxs, MobileVitSize::Xs, MobileVitSize::S];

    /// The architecture name used on the command line and in configs (`mobilevit_xxs`, ...).
    pub fn arch_name(self) -> &'static str {
        match self {
            MobileVitSize::Xxs => "mobilevit_xxs",
            MobileVitSize::Xs => "mobilevit_xs",
            MobileVitSize::S => "mobilevit_s",
        }
    }
}

impl fmt::Display for MobileVitSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.arch_name())
    }
}

impl FromStr for MobileVitSize {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let norm = s.to_ascii_lowercase().replace(['-', '_'], "");
        match norm.trim_start_matches("mobilevit") {
            "xxs" | "xxsmall" => Ok(MobileVitSize::Xxs),
            "xs" | "xsmall" => Ok(MobileVitSize::Xs),
            "s" | "small" => Ok(MobileVitSize::S),
            _ => Err(format!(
                "unknown architecture '{s}' (expected mobilevit_xxs, mobilevit_xs or mobilevit_s)"
            )),
        }
    }
}

/// A stage of MobileNetV2 inverted residual blocks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mv2Stage {
    /// Output channels.
    pub out_channels: usize,
    /// Number of blocks.
    pub blocks: usize,
    /// Stride of the first block.
    pub stride: usize,
}

/// A stage made of one strided inverted residual followed by one MobileViT block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VitStage {
    /// Output channels.
    pub out_channels: usize,
    /// Transformer width.
    pub transformer_dim: usize,
    /// Transformer feed-forward width.
    pub ffn_dim: usize,
    /// Number of transformer layers.
    pub transformer_blocks: usize,
}

/// A complete MobileViT v1 backbone description.
#[derive(Debug, Clone, PartialEq)]
pub struct MobileVitConfig {
    /// Which published size this is.
    pub size: MobileVitSize,
    /// Channels of the stem convolution.
    pub stem_channels: usize,
    /// Expansion ratio of every inverted residual block.
    pub mv2_expansion: usize,
    /// Layers 1 and 2.
    pub mv2_stages: [Mv2Stage; 2],
    /// Layers 3, 4 and 5.
    pub vit_stages: [VitStage; 3],
    /// Attention heads of every transformer layer.
    pub num_heads: usize,
    /// Patch height and width of the unfolding.
    pub patch_size: usize,
    /// Channels of the 1x1 expansion before the classifier (`min(4 * layer5, 960)`).
    pub exp_channels: usize,
    /// Output stride of the deepest feature map: 32 (classification, detection),
    /// 16 or 8 (segmentation, by removing strides and dilating as ml-cvnets does).
    pub output_stride: usize,
    /// Epsilon of the batch norms.
    pub bn_eps: f64,
    /// Epsilon of the layer norms.
    pub ln_eps: f64,
}

impl MobileVitConfig {
    /// The reference architecture of `size` at output stride 32.
    pub fn new(size: MobileVitSize) -> Self {
        let vit = |out_channels, transformer_dim| VitStage {
            out_channels,
            transformer_dim,
            ffn_dim: 2 * transformer_dim,
            transformer_blocks: 0,
        };
        let with_depth = |mut s: VitStage, d| {
            s.transformer_blocks = d;
            s
        };
        let (stem, exp, l1, l2, l3, l4, l5) = match size {
            MobileVitSize::Xxs => (16, 2, 16, 24, vit(48, 64), vit(64, 80), vit(80, 96)),
            MobileVitSize::Xs => (16, 4, 32, 48, vit(64, 96), vit(80, 120), vit(96, 144)),
            MobileVitSize::S => (16, 4, 32, 64, vit(96, 144), vit(128, 192), vit(160, 240)),
        };
        Self {
            size,
            stem_channels: stem,
            mv2_expansion: exp,
            mv2_stages: [
                Mv2Stage {
                    out_channels: l1,
                    blocks: 1,
                    stride: 1,
                },
                Mv2Stage {
                    out_channels: l2,
                    blocks: 3,
                    stride: 2,
                },
            ],
            vit_stages: [with_depth(l3, 2), with_depth(l4, 4), with_depth(l5, 3)],
            num_heads: 4,
            patch_size: 2,
            exp_channels: (4 * l5.out_channels).min(960),
            output_stride: 32,
            bn_eps: 1e-5,
            ln_eps: 1e-5,
        }
    }

    /// The architecture of a checkpoint of `size` and `task`, at `output_stride`, or
    /// when `None` at the one the task's checkpoints were trained at
    /// ([`default_output_stride`]). [`crate::MobileVit::load`] checks the stride.
    pub fn for_task(
        size: MobileVitSize,
        task: CheckpointTask,
        output_stride: Option<usize>,
    ) -> Self {
        Self::new(size).with_output_stride(output_stride.unwrap_or(default_output_stride(task)))
    }

    /// The same architecture at another output stride (one of [`OUTPUT_STRIDES`]).
    pub fn with_output_stride(mut self, output_stride: usize) -> Self {
        self.output_stride = output_stride;
        self
    }

    /// Output stride of layer `level` (1 to 5): `2^level`, capped at the backbone's
    /// output stride.
    pub fn level_stride(&self, level: usize) -> usize {
        (1usize << level.min(5)).min(self.output_stride)
    }

    /// Output channels of layers 1 to 5, i.e. of the feature maps at output
    /// strides 2, 4, 8, 16 and 32.
    pub fn feature_channels(&self) -> [usize; 5] {
        [
            self.mv2_stages[0].out_channels,
            self.mv2_stages[1].out_channels,
            self.vit_stages[0].out_channels,
            self.vit_stages[1].out_channels,
            self.vit_stages[2].out_channels,
        ]
    }

    /// Hidden width of an inverted residual block with `in_channels` inputs:
    /// `make_divisible(round(in * expansion), 8)` as in ml-cvnets.
    pub fn mv2_hidden(&self, in_channels: usize) -> usize {
        make_divisible(in_channels * self.mv2_expansion, 8)
    }
}

/// ml-cvnets' `make_divisible`: the nearest multiple of `divisor` not below 90 % of `v`.
pub fn make_divisible(v: usize, divisor: usize) -> usize {
    let new_v = (divisor.max((v + divisor / 2) / divisor * divisor)) as f64;
    if new_v < 0.9 * v as f64 {
        new_v as usize + divisor
    } else {
        new_v as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_and_match_the_reference_widths() {
        assert_eq!("mobilevit_s".parse::<MobileVitSize>(), Ok(MobileVitSize::S));
        assert_eq!("XX-Small".parse::<MobileVitSize>(), Ok(MobileVitSize::Xxs));
        assert!("resnet50".parse::<MobileVitSize>().is_err());
        let xxs = MobileVitConfig::new(MobileVitSize::Xxs);
        assert_eq!(xxs.feature_channels(), [16, 24, 48, 64, 80]);
        assert_eq!(xxs.exp_channels, 320);
        assert_eq!(xxs.mv2_hidden(16), 32);
        let s = MobileVitConfig::new(MobileVitSize::S);
        assert_eq!(s.feature_channels(), [32, 64, 96, 128, 160]);
        assert_eq!(s.exp_channels, 640);
        assert_eq!(s.vit_stages[2].ffn_dim, 480);
        assert_eq!(MobileVitConfig::new(MobileVitSize::Xs).exp_channels, 384);
    }

    #[test]
    fn output_strides_are_checked_against_the_one_list() {
        for os in OUTPUT_STRIDES {
            assert_eq!(check_output_stride(os), Ok(()));
        }
        assert_eq!(
            check_output_stride(12),
            Err("output stride 12 is not supported (32, 16 or 8)".to_string())
        );
        let seg = MobileVitConfig::for_task(MobileVitSize::Xxs, CheckpointTask::Segmentation, None);
        assert_eq!(seg.output_stride, 16);
        let det = MobileVitConfig::for_task(MobileVitSize::Xxs, CheckpointTask::Detection, None);
        assert_eq!(det.output_stride, 32);
        let os8 =
            MobileVitConfig::for_task(MobileVitSize::S, CheckpointTask::Segmentation, Some(8));
        assert_eq!((os8.size, os8.output_stride), (MobileVitSize::S, 8));
    }
}
