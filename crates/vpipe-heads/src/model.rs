//! Turning a checkpoint file into a ready-to-run model.
//!
//! [`LoadedModel::load`] reads the file, recognises its layout (ml-cvnets, timm,
//! Hugging Face), task and size, builds the backbone and the head, and checks that
//! every tensor was used and had the right shape.

use std::path::Path;

use burn::tensor::{Device, Tensor};
use vpipe_backbone::layout::{CheckpointTask, to_canonical};
use vpipe_backbone::{
    BackboneError, CheckpointLayout, MobileVit, MobileVitConfig, MobileVitSize, Params, Result,
    SourceLayout,
};
use vpipe_core::TensorFile;

use crate::classification::ClassificationHead;
use crate::detection::{SsdHead, SsdSettings};
use crate::segmentation::{ASPP_RATES, DeepLabHead, UpsampleConvention};

/// A backbone with its head.
#[derive(Debug, Clone)]
pub enum Model {
    /// Image classification.
    Classifier {
        /// The shared backbone.
        backbone: MobileVit,
        /// The classification head.
        head: Box<ClassificationHead>,
    },
    /// SSDLite object detection.
    Detector {
        /// The shared backbone.
        backbone: MobileVit,
        /// The detection head.
        head: Box<SsdHead>,
    },
    /// DeepLabv3 semantic segmentation.
    Segmenter {
        /// The shared backbone (output stride 16 unless chosen otherwise).
        backbone: MobileVit,
        /// The segmentation head.
        head: Box<DeepLabHead>,
    },
}

/// A raw output tensor of a model, copied to the host.
#[derive(Debug, Clone, PartialEq)]
pub struct RawTensor {
    /// Name, also the `.npy` file stem written by `vpipe infer` (e.g. `logits`).
    pub name: String,
    /// Shape.
    pub shape: Vec<usize>,
    /// Elements in C order.
    pub data: Vec<f32>,
}

/// The raw outputs of one forward pass.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelOutput {
    /// The outputs, in a fixed order per task.
    pub tensors: Vec<RawTensor>,
}

impl ModelOutput {
    /// The output named `name`.
    pub fn get(&self, name: &str) -> Option<&RawTensor> {
        self.tensors.iter().find(|t| t.name == name)
    }
}

/// Copies a device tensor to the host.
pub fn to_raw<const D: usize>(name: &str, t: Tensor<D>) -> Result<RawTensor> {
    let shape = t.dims().to_vec();
    let data = t
        .into_data()
        .try_into_vec::<f32>()
        .map_err(|e| BackboneError::Input(format!("cannot read output '{name}': {e:?}")))?;
    Ok(RawTensor {
        name: name.to_string(),
        shape,
        data,
    })
}

impl Model {
    /// Builds the network that `layout` describes from `params`.
    pub fn build(
        params: &mut Params,
        layout: &CheckpointLayout,
        options: &LoadOptions,
    ) -> Result<Self> {
        Ok(match layout.task {
            CheckpointTask::Classification => {
                let config = MobileVitConfig::new(layout.size);
                let backbone = MobileVit::load(params, &config)?;
                let head = ClassificationHead::load(params, &config)?;
                Model::Classifier {
                    backbone,
                    head: Box::new(head),
                }
            }
            CheckpointTask::Detection => {
                let config = MobileVitConfig::new(layout.size);
                let backbone = MobileVit::load(params, &config)?;
                let head =
                    SsdHead::load(params, config.feature_channels(), SsdSettings::default())?;
                Model::Detector {
                    backbone,
                    head: Box::new(head),
                }
            }
            CheckpointTask::Segmentation => {
                // The backbone checks the stride against the one list of them.
                let os = options.output_stride.unwrap_or(16);
                let config = MobileVitConfig::new(layout.size).with_output_stride(os);
                let backbone = MobileVit::load(params, &config)?;
                let upsample = match layout.source {
                    SourceLayout::HuggingFace => UpsampleConvention::HalfPixel,
                    _ => UpsampleConvention::AlignCorners,
                };
                let head = DeepLabHead::load(
                    params,
                    config.vit_stages[2].out_channels,
                    ASPP_RATES,
                    upsample,
                )?;
                Model::Segmenter {
                    backbone,
                    head: Box::new(head),
                }
            }
        })
    }

    /// The network of `task` and `size` with synthetic weights (see
    /// [`Params::synthetic`]), for benchmarks: the same arithmetic as a real checkpoint.
    pub fn synthetic(task: CheckpointTask, size: MobileVitSize, device: &Device) -> Result<Self> {
        let layout = CheckpointLayout {
            source: SourceLayout::Cvnets,
            task,
            size,
        };
        Model::build(
            &mut Params::synthetic(42, device),
            &layout,
            &LoadOptions::default(),
        )
    }

    /// The backbone.
    pub fn backbone(&self) -> &MobileVit {
        match self {
            Model::Classifier { backbone, .. }
            | Model::Detector { backbone, .. }
            | Model::Segmenter { backbone, .. } => backbone,
        }
    }

    /// Runs the network on a preprocessed batch `[batch, 3, height, width]` and
    /// returns its raw outputs: classification `logits` `[batch, classes]`; detection
    /// `conf_logits` `[batch, anchors, classes]`, `loc` `[batch, anchors, 4]`, `anchors`
    /// `[anchors, 4]`; segmentation `logits` (before upsampling) and `mask` (class
    /// indices at the input size, `[batch, 1, h, w]`).
    pub fn forward_raw(&self, input: Tensor<4>) -> Result<ModelOutput> {
        let [_, _, h, w] = input.dims();
        let features = self.backbone().forward(input)?;
        let tensors = match self {
            Model::Classifier { head, .. } => vec![to_raw("logits", head.forward(&features))?],
            Model::Detector { head, .. } => head.forward(&features)?,
            Model::Segmenter { head, .. } => head.forward(&features, [h, w])?,
        };
        Ok(ModelOutput { tensors })
    }
}

/// A model built from a checkpoint file, with what was recognised about the file.
#[derive(Debug, Clone)]
pub struct LoadedModel {
    /// The network.
    pub model: Model,
    /// The recognised layout, task and size.
    pub layout: CheckpointLayout,
}

/// Choices made when building a model from a checkpoint.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LoadOptions {
    /// Output stride of a segmentation backbone: 16 (the released checkpoints, the
    /// default) or 8 (layers 4 and 5 dilated instead of strided).
    pub output_stride: Option<usize>,
}

impl LoadedModel {
    /// Reads a checkpoint and builds the model it holds on `device`.
    pub fn load(path: &Path, device: &Device) -> Result<Self> {
        Self::load_with(path, device, &LoadOptions::default())
    }

    /// [`LoadedModel::load`] with options.
    pub fn load_with(path: &Path, device: &Device, options: &LoadOptions) -> Result<Self> {
        let file = TensorFile::read(path)?;
        let layout = CheckpointLayout::detect(&file)?;
        let canonical = to_canonical(&file)?;
        let mut params = Params::new(path.display().to_string(), canonical, device);
        if options.output_stride.is_some() && layout.task != CheckpointTask::Segmentation {
            return Err(BackboneError::Input(format!(
                "an output stride can only be chosen for segmentation checkpoints; {} is a {} checkpoint",
                path.display(),
                layout.task
            )));
        }
        let model = Model::build(&mut params, &layout, options)?;
        params.finish()?;
        tracing::info!(
            file = %path.display(),
            source = %layout.source,
            task = %layout.task,
            arch = %layout.size,
            "loaded checkpoint"
        );
        Ok(Self { model, layout })
    }
}
