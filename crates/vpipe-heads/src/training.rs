//! The opt-in training hook of a head.
//!
//! A head loaded in trainable form ([`crate::LoadOptions::trainable_head`]) holds its
//! parameters as autodiff leaves ([`Param`]) under their canonical checkpoint names.
//! [`TrainableHead`] gives a trainer those parameters (to read their gradients and
//! write the updates) and the training forward: the head's own inference layers,
//! run on autodiff tensors, returning the tensors its loss needs ([`TrainOutput`]).
//! The losses themselves are in `vpipe-train`, chosen by the kind of output; a head
//! of your own opts in by implementing this trait and returning the output kind
//! whose loss fits it.

use burn::tensor::Tensor;
use vpipe_backbone::{Features, Param};

use crate::error::Result;

/// What a head's training forward returns, by task.
#[derive(Debug, Clone)]
#[allow(
    clippy::large_enum_variant,
    reason = "one value per head and step, moved to the loss; boxing would allocate for each"
)]
pub enum TrainOutput {
    /// Class logits `[batch, classes]` (loss: label-smoothed cross-entropy).
    Classification {
        /// Logits.
        logits: Tensor<2>,
    },
    /// SSD outputs (loss: multibox loss, with targets matched to `anchors`).
    Detection {
        /// Class logits `[batch, anchors, classes]`, background at index 0.
        conf_logits: Tensor<3>,
        /// Box regressions `[batch, anchors, 4]`.
        loc: Tensor<3>,
        /// Anchors (centre x, centre y, width, height; fractions of the image).
        anchors: Vec<[f32; 4]>,
    },
    /// Segmentation logits at the network input size, `[batch, classes, h, w]`
    /// (loss: cross-entropy with an ignore index).
    Segmentation {
        /// Logits.
        logits: Tensor<4>,
    },
}

/// A head that can be trained.
pub trait TrainableHead {
    /// Its parameters under their canonical checkpoint names, frozen batch norm
    /// statistics included ([`Param::is_trainable`] tells them apart), in a fixed
    /// order.
    fn params(&self) -> Vec<&Param>;

    /// Its parameters, mutable (to apply updates), in the order of
    /// [`TrainableHead::params`].
    fn params_mut(&mut self) -> Vec<&mut Param>;

    /// The training forward on `features` (autodiff tensors) for a network input of
    /// `input_size` (`[height, width]`): the same layers as inference.
    fn train_forward(&self, features: &Features, input_size: [usize; 2]) -> Result<TrainOutput>;
}

/// `head` as a [`TrainableHead`] when its layers were loaded in trainable form
/// (it has parameters), `None` otherwise: what the built-in heads'
/// [`crate::Head::trainable`] returns.
pub fn is_trainable<H: TrainableHead>(head: &mut H) -> Option<&mut dyn TrainableHead> {
    if head.params().is_empty() {
        None
    } else {
        Some(head)
    }
}
