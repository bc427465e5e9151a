//! The image classification head of MobileViT: a 1x1 convolution expanding
//! layer 5 (`conv_1x1_exp`), global average pooling, and a linear classifier.

use burn::tensor::Tensor;
use vpipe_backbone::layers::{Activation, ConvNorm, ConvSpec, Linear};
use vpipe_backbone::{Features, MobileVitConfig, Param, Params};

use crate::error::Result;
use vpipe_core::labels::LabelSet;
use vpipe_core::result::{HeadOutput, top_k};

/// The classification head.
#[derive(Debug, Clone)]
pub struct ClassificationHead {
    expand: ConvNorm,
    classifier: Linear,
    num_classes: usize,
    labels: Vec<String>,
}

impl ClassificationHead {
    /// Loads `conv_1x1_exp.*` and `classifier.fc.*`; the class count is read from the
    /// classifier's shape, and ImageNet-1k names are used when it has 1000 classes.
    pub fn load(params: &mut Params, config: &MobileVitConfig) -> Result<Self> {
        let in_ch = config.vit_stages[2].out_channels;
        let expand = ConvNorm::load(
            params,
            "conv_1x1_exp",
            ConvSpec::new(in_ch, config.exp_channels, 1, Activation::Silu),
        )?;
        let num_classes = params
            .shape_of("classifier.fc.weight")
            .map(|s| s[0])
            .unwrap_or(1000);
        let classifier = Linear::load(params, "classifier.fc", config.exp_channels, num_classes)?;
        let labels = LabelSet::ImageNet1k.names_for(num_classes);
        Ok(Self {
            expand,
            classifier,
            num_classes,
            labels,
        })
    }

    /// Its parameters when loaded in trainable form (see
    /// [`crate::training::TrainableHead::params`]).
    pub fn params(&self) -> Vec<&Param> {
        let mut out = self.expand.params();
        out.extend(self.classifier.params());
        out
    }

    /// Its parameters, mutable.
    pub fn params_mut(&mut self) -> Vec<&mut Param> {
        let mut out = self.expand.params_mut();
        out.extend(self.classifier.params_mut());
        out
    }

    /// Number of classes.
    pub fn num_classes(&self) -> usize {
        self.num_classes
    }

    /// Class names, one per class index.
    pub fn labels(&self) -> &[String] {
        &self.labels
    }

    /// The class names, to rename them (the `labels` option).
    pub(crate) fn labels_mut(&mut self) -> &mut Vec<String> {
        &mut self.labels
    }

    /// The 1x1 expansion of layer 5, `[batch, channels, h, w]`.
    pub fn expanded(&self, features: &Features) -> Tensor<4> {
        self.expand.forward(features.last().clone())
    }

    /// The expansion and global average pooling: the vector the classifier sees,
    /// `[batch, channels]`.
    pub fn pooled(&self, features: &Features) -> Tensor<2> {
        let x = self.expanded(features);
        let [b, c, _, _] = x.dims();
        x.mean_dim(3).mean_dim(2).reshape([b, c])
    }

    /// Logits `[batch, classes]`.
    pub fn forward(&self, features: &Features) -> Tensor<2> {
        self.classify(self.pooled(features))
    }

    /// The linear classifier on pooled vectors `[batch, channels]`.
    pub fn classify(&self, pooled: Tensor<2>) -> Tensor<2> {
        self.classifier.forward(pooled)
    }

    /// The top `k` classes of each row of `logits`.
    pub fn postprocess(&self, logits: &[f32], k: usize) -> Vec<HeadOutput> {
        logits
            .chunks(self.num_classes)
            .map(|row| HeadOutput::Classification {
                top_k: top_k(row, k, &self.labels),
            })
            .collect()
    }
}
