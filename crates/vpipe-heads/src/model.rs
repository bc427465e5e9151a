//! Turning a checkpoint file into a ready-to-run model.
//!
//! [`LoadedModel::load`] reads the file, recognises its layout (ml-cvnets, timm,
//! Hugging Face), task and size, builds the backbone and the head, and checks that
//! every tensor was used and had the right shape.

use std::path::Path;

use burn::tensor::{Device, Tensor};
use serde_json::{Map, Value};
use vpipe_backbone::layout::{CheckpointTask, to_canonical};
use vpipe_backbone::{
    BackboneError, CheckpointLayout, MobileVit, MobileVitConfig, MobileVitSize, Params,
    SourceLayout,
};
use vpipe_io::TensorFile;

use crate::api::{Head, HeadContext, HeadRegistry};
use crate::error::{HeadError, Result};

/// A backbone with its head, built the way a pipeline builds them: the backbone at
/// its output stride, the head by its [`HeadRegistry`] factory.
#[derive(Debug)]
pub struct Model {
    backbone: MobileVit,
    head: Box<dyn Head>,
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
        .map_err(|e| HeadError::RawOutput {
            name: name.to_string(),
            problem: format!("cannot read it back: {e:?}"),
        })?;
    Ok(RawTensor {
        name: name.to_string(),
        shape,
        data,
    })
}

/// The registered head type of the head a checkpoint of `task` carries.
fn head_type(task: CheckpointTask) -> &'static str {
    match task {
        CheckpointTask::Classification => "classification",
        CheckpointTask::Detection => "ssd",
        CheckpointTask::Segmentation => "deeplabv3",
    }
}

impl Model {
    /// Builds the network that `layout` describes from `params`: the backbone at
    /// the chosen output stride (by default the task's, see
    /// [`vpipe_backbone::default_output_stride`]), and the checkpoint's head by the
    /// factory of its type (`classification`, `ssd` or `deeplabv3`) in
    /// [`HeadRegistry::with_builtins`], given `options.head_options` (a DeepLab head
    /// also gets the backbone's output stride as its `stride`).
    pub fn build(
        params: &mut Params,
        layout: &CheckpointLayout,
        options: &LoadOptions,
    ) -> Result<Self> {
        let config = MobileVitConfig::for_task(layout.size, layout.task, options.output_stride);
        let backbone = MobileVit::load(params, &config)?;
        if options.trainable_head {
            params.set_trainable();
        }
        let kind = head_type(layout.task);
        let mut head_options = options.head_options.clone();
        if layout.task == CheckpointTask::Segmentation {
            head_options.insert("stride".into(), config.output_stride.into());
        }
        let mut ctx = HeadContext::new(params, &config, &head_options);
        let head = HeadRegistry::with_builtins().build(kind, &mut ctx)?;
        Ok(Self { backbone, head })
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
        &self.backbone
    }

    /// The backbone and the head, apart (a trainer keeps the head, a feature
    /// extractor the backbone).
    pub fn into_parts(self) -> (MobileVit, Box<dyn Head>) {
        (self.backbone, self.head)
    }

    /// The head; its [`Head::postprocess`] turns [`Model::forward_raw`]'s outputs
    /// into results.
    pub fn head(&self) -> &dyn Head {
        self.head.as_ref()
    }

    /// Runs the network on a preprocessed batch `[batch, 3, height, width]` and
    /// returns its raw outputs: classification `logits` `[batch, classes]`; detection
    /// `conf_logits` `[batch, anchors, classes]`, `loc` `[batch, anchors, 4]`, `anchors`
    /// `[anchors, 4]`; segmentation `logits` (before upsampling) and `mask` (class
    /// indices at the input size, `[batch, 1, h, w]`).
    pub fn forward_raw(&self, input: Tensor<4>) -> Result<ModelOutput> {
        let [_, _, h, w] = input.dims();
        let features = self.backbone.forward(input)?;
        let tensors = self.head.forward(&features, [h, w])?;
        Ok(ModelOutput { tensors })
    }
}

/// A model built from a checkpoint file, with what was recognised about the file.
#[derive(Debug)]
pub struct LoadedModel {
    /// The network.
    pub model: Model,
    /// The recognised layout, task and size.
    pub layout: CheckpointLayout,
}

/// Choices made when building a model from a checkpoint.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LoadOptions {
    /// The task the checkpoint must be of (`None`: any); a checkpoint of another
    /// task is an error naming both, before any head is built.
    pub task: Option<CheckpointTask>,
    /// Output stride of a segmentation backbone: 16 (the released checkpoints, the
    /// default) or 8 (layers 4 and 5 dilated instead of strided).
    pub output_stride: Option<usize>,
    /// Options of the checkpoint's head, as under a head's `options:` in a pipeline
    /// file (e.g. `{"top_k": 3}` of `classification`); empty for the defaults. A
    /// DeepLab head's `stride` is the backbone's output stride, whatever is set here.
    pub head_options: Map<String, Value>,
    /// Build the head in trainable form ([`Params::set_trainable`]; the backbone
    /// stays in inference form, frozen) for training it
    /// ([`crate::training::TrainableHead`]).
    pub trainable_head: bool,
}

impl LoadedModel {
    /// Reads a checkpoint and builds the model it holds on `device`.
    pub fn load(path: &Path, device: &Device) -> Result<Self> {
        Self::load_with(path, device, &LoadOptions::default())
    }

    /// [`LoadedModel::load`] with options.
    pub fn load_with(path: &Path, device: &Device, options: &LoadOptions) -> Result<Self> {
        let file = TensorFile::read(path).map_err(BackboneError::from)?;
        let layout = CheckpointLayout::detect(&file)?;
        if let Some(task) = options.task
            && task != layout.task
        {
            return Err(HeadError::Model(format!(
                "{}: a {} checkpoint, not a {task} one",
                path.display(),
                layout.task
            )));
        }
        let canonical = to_canonical(&file)?;
        let mut params = Params::new(path.display().to_string(), canonical, device);
        if options.output_stride.is_some() && layout.task != CheckpointTask::Segmentation {
            return Err(HeadError::Model(format!(
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

#[cfg(test)]
mod tests {
    use vpipe_core::device::default_device;

    use super::*;

    fn synthetic(task: CheckpointTask, options: &LoadOptions) -> Result<Model> {
        let layout = CheckpointLayout {
            source: SourceLayout::Cvnets,
            task,
            size: MobileVitSize::Xxs,
        };
        Model::build(
            &mut Params::synthetic(7, &default_device()),
            &layout,
            options,
        )
    }

    #[test]
    fn each_task_gets_its_registered_head_and_stride() {
        for (task, kind, strides) in [
            (
                CheckpointTask::Classification,
                "classification",
                vec![(5, 32)],
            ),
            (CheckpointTask::Detection, "ssd", vec![(4, 16), (5, 32)]),
            (CheckpointTask::Segmentation, "deeplabv3", vec![(5, 16)]),
        ] {
            let model = synthetic(task, &LoadOptions::default()).expect("model");
            assert_eq!(model.head().kind(), kind);
            assert_eq!(model.head().required_strides(), strides);
            let config = model.backbone().config();
            for (level, stride) in strides {
                assert_eq!(config.level_stride(level), stride, "{kind}");
            }
        }
        // The DeepLab head follows a chosen output stride.
        let os8 = LoadOptions {
            output_stride: Some(8),
            ..LoadOptions::default()
        };
        let model = synthetic(CheckpointTask::Segmentation, &os8).expect("os8");
        assert_eq!(model.backbone().config().output_stride, 8);
        assert_eq!(model.head().required_strides(), vec![(5, 8)]);
    }

    /// A classification model's top classes for the logits 0, 1, 2, ... (the last
    /// class best).
    fn ramp_top_k(model: &Model) -> Vec<vpipe_core::result::ClassScore> {
        let classes = model.head().num_classes().expect("classes");
        let raw = RawTensor {
            name: "logits".into(),
            shape: vec![1, classes],
            data: (0..classes).map(|i| i as f32).collect(),
        };
        let geometry = vpipe_core::geometry::InputTransform::identity(32, 32);
        match model
            .head()
            .postprocess(&[raw], 0, &geometry)
            .expect("post")
        {
            vpipe_core::result::HeadOutput::Classification { top_k } => top_k,
            other => panic!("not a classification: {other:?}"),
        }
    }

    #[test]
    fn head_options_reach_the_factory_and_unknown_ones_are_refused() {
        let options = |key: &str, value: Value| LoadOptions {
            head_options: Map::from_iter([(key.to_string(), value)]),
            ..LoadOptions::default()
        };
        let model =
            synthetic(CheckpointTask::Classification, &options("top_k", 3.into())).expect("top_k");
        assert_eq!(ramp_top_k(&model).len(), 3);
        let err = synthetic(CheckpointTask::Classification, &options("topk", 3.into()))
            .expect_err("unknown option");
        assert!(
            matches!(&err, HeadError::UnknownOption { key, .. } if key == "topk"),
            "{err}"
        );
    }

    #[test]
    fn the_labels_option_renames_every_class_or_is_refused() {
        let with_labels = |n: usize| LoadOptions {
            head_options: Map::from_iter([(
                "labels".to_string(),
                Value::from((0..n).map(|i| format!("c{i}")).collect::<Vec<_>>()),
            )]),
            ..LoadOptions::default()
        };
        let model = synthetic(CheckpointTask::Classification, &with_labels(1000)).expect("labels");
        assert_eq!(ramp_top_k(&model)[0].label, "c999");
        for task in CheckpointTask::ALL {
            let err = synthetic(task, &with_labels(3)).expect_err("too few names");
            assert!(
                matches!(&err, HeadError::Option { key, .. } if key == "labels"),
                "{task}: {err}"
            );
        }
    }
}
