//! DeepLabv3 semantic segmentation as in ml-cvnets and Hugging Face: atrous spatial
//! pyramid pooling on layer 5 (a 1x1 branch, three dilated 3x3 branches, an
//! image-pooling branch), a 1x1 projection, and a 1x1 classifier. The backbone runs
//! at output stride 16 (released checkpoints) or 8.

use burn::tensor::module::{adaptive_avg_pool2d, interpolate};
use burn::tensor::ops::{InterpolateMode, InterpolateOptions};
use burn::tensor::{Tensor, TensorData};
use vpipe_backbone::layers::{Activation, ConvNorm, ConvSpec};
use vpipe_backbone::{Features, Param, Params};

use crate::error::{HeadError, Result};
use vpipe_core::labels::LabelSet;
use vpipe_core::result::{ClassArea, HeadOutput};

use crate::model::{RawTensor, to_raw};

/// How logits are brought back to the input size, which differs between sources.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpsampleConvention {
    /// ml-cvnets: bilinear, `align_corners = true`.
    AlignCorners,
    /// Hugging Face post-processing: bilinear, `align_corners = false`.
    HalfPixel,
}

impl UpsampleConvention {
    /// `logits` upsampled (bilinear) to `size` (`[height, width]`) with this convention.
    pub fn upsample(self, logits: Tensor<4>, size: [usize; 2]) -> Tensor<4> {
        interpolate(
            logits,
            InterpolateOptions::new(InterpolateMode::Bilinear)
                .with_align_corners(self == UpsampleConvention::AlignCorners)
                .with_output_size(size),
        )
    }
}

/// The DeepLabv3 head.
#[derive(Debug, Clone)]
pub struct DeepLabHead {
    branches: Vec<ConvNorm>,
    pool: ConvNorm,
    project: ConvNorm,
    classifier: ConvNorm,
    num_classes: usize,
    labels: Vec<String>,
    upsample: UpsampleConvention,
}

/// ASPP dilation rates of the released checkpoints.
pub const ASPP_RATES: [usize; 3] = [6, 12, 18];

impl DeepLabHead {
    /// Loads `seg_head.aspp.*` and `seg_head.classifier.*` over `in_channels` (layer 5).
    pub fn load(
        params: &mut Params,
        in_channels: usize,
        rates: [usize; 3],
        upsample: UpsampleConvention,
    ) -> Result<Self> {
        let a = "seg_head.aspp.aspp_layer";
        let out = params.dim_or(&format!("{a}.convs.0.block.conv.weight"), 0, 256);
        let mut branches = vec![ConvNorm::load(
            params,
            &format!("{a}.convs.0"),
            ConvSpec::new(in_channels, out, 1, Activation::Relu),
        )?];
        for (i, rate) in rates.iter().enumerate() {
            branches.push(ConvNorm::load(
                params,
                &format!("{a}.convs.{}", i + 1),
                ConvSpec::new(in_channels, out, 3, Activation::Relu).dilation(*rate),
            )?);
        }
        let pool = ConvNorm::load(
            params,
            &format!("{a}.convs.4.aspp_pool.conv_1x1"),
            ConvSpec::new(in_channels, out, 1, Activation::Relu),
        )?;
        let project = ConvNorm::load(
            params,
            &format!("{a}.project"),
            ConvSpec::new(5 * out, out, 1, Activation::Relu),
        )?;
        let num_classes = params.dim_or("seg_head.classifier.block.conv.weight", 0, 21);
        let classifier = ConvNorm::load(
            params,
            "seg_head.classifier",
            ConvSpec::new(out, num_classes, 1, Activation::Identity).plain(),
        )?;
        let labels = LabelSet::Voc21.names_for(num_classes);
        Ok(Self {
            branches,
            pool,
            project,
            classifier,
            num_classes,
            labels,
            upsample,
        })
    }

    /// Its layers in a fixed order.
    fn layers(&self) -> impl Iterator<Item = &ConvNorm> {
        self.branches
            .iter()
            .chain([&self.pool, &self.project, &self.classifier])
    }

    /// Its parameters when loaded in trainable form (see
    /// [`crate::training::TrainableHead::params`]).
    pub fn params(&self) -> Vec<&Param> {
        self.layers().flat_map(ConvNorm::params).collect()
    }

    /// Its parameters, mutable, in the order of [`DeepLabHead::params`].
    pub fn params_mut(&mut self) -> Vec<&mut Param> {
        self.branches
            .iter_mut()
            .chain([&mut self.pool, &mut self.project, &mut self.classifier])
            .flat_map(ConvNorm::params_mut)
            .collect()
    }

    /// Class names.
    pub fn labels(&self) -> &[String] {
        &self.labels
    }

    /// The class names, to rename them (the `labels` option).
    pub(crate) fn labels_mut(&mut self) -> &mut Vec<String> {
        &mut self.labels
    }

    /// Number of classes.
    pub fn num_classes(&self) -> usize {
        self.num_classes
    }

    /// The ASPP output (branches, pooling branch, projection) at the backbone's
    /// output stride, `[batch, channels, h, w]`.
    pub fn aspp(&self, features: &Features) -> Tensor<4> {
        let x = features.last().clone();
        let [b, _, h, w] = x.dims();
        let mut parts: Vec<Tensor<4>> = self
            .branches
            .iter()
            .map(|br| br.forward(x.clone()))
            .collect();
        let pooled = self.pool.forward(adaptive_avg_pool2d(x, [1, 1]));
        let c = pooled.dims()[1];
        parts.push(pooled.expand([b, c, h, w]));
        self.project.forward(Tensor::cat(parts, 1))
    }

    /// The 1x1 classifier on the ASPP output.
    pub fn classify(&self, aspp: Tensor<4>) -> Tensor<4> {
        self.classifier.forward(aspp)
    }

    /// Logits at the backbone's output stride, `[batch, classes, h, w]`.
    pub fn logits(&self, features: &Features) -> Tensor<4> {
        self.classify(self.aspp(features))
    }

    /// `logits` upsampled to the network input `size` (`[height, width]`) with the
    /// source's convention: what the reference model outputs, and its loss sees.
    pub fn upsample(&self, logits: Tensor<4>, size: [usize; 2]) -> Tensor<4> {
        self.upsample.upsample(logits, size)
    }

    /// The class mask at the original image size `[height, width]` for image `index`
    /// of raw `logits` `[batch, classes, h, w]`: upsampled to the network input size
    /// `input` with the source's convention, then resized (bilinear, half-pixel) to the
    /// original size as Hugging Face's `post_process_semantic_segmentation` does, then
    /// the argmax.
    pub fn mask_at(
        &self,
        logits: &RawTensor,
        index: usize,
        input: [usize; 2],
        original: [usize; 2],
    ) -> Result<Vec<u8>> {
        let [_, c, h, w] =
            <[usize; 4]>::try_from(logits.shape.as_slice()).map_err(|_| HeadError::RawOutput {
                name: logits.name.clone(),
                problem: format!("shape {:?}, not [batch, classes, h, w]", logits.shape),
            })?;
        let per = c * h * w;
        let data = logits
            .data
            .get(index * per..(index + 1) * per)
            .ok_or_else(|| HeadError::RawOutput {
                name: logits.name.clone(),
                problem: format!("no image {index} in the batch"),
            })?
            .to_vec();
        let t = Tensor::<4>::from_data(
            TensorData::new(data, [1, c, h, w]),
            &self.classifier.device(),
        );
        let mut up = self.upsample.upsample(t, input);
        if original != input {
            up = interpolate(
                up,
                InterpolateOptions::new(InterpolateMode::Bilinear)
                    .with_align_corners(false)
                    .with_output_size(original),
            );
        }
        let mask = up
            .argmax(1)
            .into_data()
            .convert::<i64>()
            .try_to_vec::<i64>()
            .map_err(|e| HeadError::RawOutput {
                name: "mask".into(),
                problem: format!("cannot read it back: {e:?}"),
            })?;
        Ok(mask.into_iter().map(|v| v as u8).collect())
    }

    /// Raw outputs for an input of `size`: `logits` (before upsampling) and `mask`
    /// (argmax at the input size, as float class indices).
    pub fn forward(&self, features: &Features, size: [usize; 2]) -> Result<Vec<RawTensor>> {
        let logits = self.logits(features);
        let up = self.upsample.upsample(logits.clone(), size);
        let mask = up.argmax(1).float();
        Ok(vec![to_raw("logits", logits)?, to_raw("mask", mask)?])
    }

    /// The class areas of a mask.
    pub fn postprocess(&self, mask: Vec<u8>, width: usize, height: usize) -> HeadOutput {
        let mut counts = vec![0usize; self.num_classes.max(1)];
        for &m in &mask {
            if let Some(c) = counts.get_mut(m as usize) {
                *c += 1;
            }
        }
        let total = (width * height).max(1) as f32;
        let mut areas: Vec<ClassArea> = counts
            .iter()
            .enumerate()
            .filter(|(_, n)| **n > 0)
            .map(|(i, &n)| ClassArea {
                class_id: i,
                label: self.labels.get(i).cloned().unwrap_or_default(),
                pixels: n,
                fraction: n as f32 / total,
            })
            .collect();
        areas.sort_by(|a, b| b.pixels.cmp(&a.pixels).then(a.class_id.cmp(&b.class_id)));
        HeadOutput::Segmentation {
            width,
            height,
            mask,
            areas,
        }
    }
}
