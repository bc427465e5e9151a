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
//!
//! Dropout applies in training only, where ml-cvnets puts it in the released
//! models: before the classifier's linear layer ([`CLASSIFIER_DROPOUT`], elementwise)
//! and after DeepLabv3's ASPP projection ([`ASPP_DROPOUT`], whole channels); its
//! masks come from a seeded generator ([`Dropout`]), so a run can be repeated and
//! resumed exactly.

use burn::tensor::{Tensor, TensorData};
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

/// Dropout rate before the classification head's linear layer (ml-cvnets'
/// `classifier_dropout` of the MobileViT configs).
pub const CLASSIFIER_DROPOUT: f64 = 0.1;

/// Dropout rate (whole channels) after DeepLabv3's ASPP projection (ml-cvnets'
/// `aspp_dropout`).
pub const ASPP_DROPOUT: f64 = 0.1;

/// Dropout masks from a seeded generator (SplitMix64), or none at all.
///
/// An element (or channel) is kept when a uniform draw in `[0, 1)` is at least `p`,
/// and kept values are scaled by `1 / (1 - p)`, as PyTorch's dropout in training.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dropout {
    state: Option<u64>,
}

impl Dropout {
    /// Dropout whose masks follow from `seed`.
    pub fn seeded(seed: u64) -> Self {
        Self { state: Some(seed) }
    }

    /// [`Dropout::seeded`] with `Some(seed)`, [`Dropout::disabled`] with `None`.
    pub fn seeded_or_disabled(seed: Option<u64>) -> Self {
        Self { state: seed }
    }

    /// No dropout: every mask keeps everything (what a reference run with p = 0
    /// computes).
    pub fn disabled() -> Self {
        Self { state: None }
    }

    /// The generator's state (`None` when disabled), to save and resume with
    /// [`Dropout::resume`].
    pub fn state(&self) -> Option<u64> {
        self.state
    }

    /// Dropout continuing from a saved [`Dropout::state`].
    pub fn resume(state: Option<u64>) -> Self {
        Self { state }
    }

    /// Keep-masks scaled by `1 / (1 - p)`, `n` of them.
    fn mask(&mut self, n: usize, p: f64) -> Option<Vec<f32>> {
        let state = self.state.as_mut()?;
        if p <= 0.0 {
            return None;
        }
        let scale = (1.0 / (1.0 - p)) as f32;
        Some(
            (0..n)
                .map(|_| {
                    // SplitMix64.
                    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
                    let mut z = *state;
                    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
                    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
                    z ^= z >> 31;
                    let u = (z >> 11) as f64 / (1u64 << 53) as f64;
                    if u >= p { scale } else { 0.0 }
                })
                .collect(),
        )
    }

    /// Elementwise dropout of rate `p` (PyTorch's `nn.Dropout`).
    pub fn elements<const D: usize>(&mut self, x: Tensor<D>, p: f64) -> Tensor<D> {
        let dims = x.dims();
        match self.mask(dims.iter().product(), p) {
            Some(m) => {
                let mask = Tensor::from_data(TensorData::new(m, dims), &x.device());
                x * mask
            }
            None => x,
        }
    }

    /// Dropout of whole channels of `x` `[n, c, h, w]` at rate `p` (PyTorch's
    /// `nn.Dropout2d`).
    pub fn channels(&mut self, x: Tensor<4>, p: f64) -> Tensor<4> {
        let [n, c, _, _] = x.dims();
        match self.mask(n * c, p) {
            Some(m) => {
                let mask = Tensor::<4>::from_data(TensorData::new(m, [n, c, 1, 1]), &x.device());
                x * mask
            }
            None => x,
        }
    }
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
    /// `input_size` (`[height, width]`): the same layers as inference, with the
    /// head's dropout drawn from `dropout`.
    fn train_forward(
        &self,
        features: &Features,
        input_size: [usize; 2],
        dropout: &mut Dropout,
    ) -> Result<TrainOutput>;
}

/// `head` as a [`TrainableHead`] when its layers were loaded in trainable form
/// (it has parameters), `None` otherwise: what the built-in heads'
/// [`crate::Head::trainable`] returns.
pub fn as_trainable<H: TrainableHead>(head: &mut H) -> Option<&mut dyn TrainableHead> {
    if head.params().is_empty() {
        None
    } else {
        Some(head)
    }
}

#[cfg(test)]
mod tests {
    use burn::tensor::{Tensor, TensorData};

    use super::*;

    fn values<const D: usize>(t: Tensor<D>) -> Vec<f32> {
        t.into_data().convert::<f32>().try_to_vec().expect("f32")
    }

    #[test]
    fn channel_dropout_zeroes_whole_channels_and_scales_the_rest() {
        let device = vpipe_core::device::default_device();
        let x = Tensor::<4>::from_data(
            TensorData::new(vec![1.0f32; 2 * 64 * 9], [2, 64, 3, 3]),
            &device,
        );
        let y = values(Dropout::seeded(3).channels(x.clone(), 0.25));
        let mut dropped = 0;
        for channel in y.chunks_exact(9) {
            assert!(
                channel.iter().all(|&v| v == channel[0]),
                "one mask per channel"
            );
            match channel[0] {
                0.0 => dropped += 1,
                v => assert!((v - 1.0 / 0.75).abs() < 1e-6, "{v}"),
            }
        }
        assert!(
            dropped > 0 && dropped < 128,
            "{dropped} of 128 channels dropped"
        );
        // The same seed gives the same masks; disabled dropout is the identity.
        assert_eq!(values(Dropout::seeded(3).channels(x.clone(), 0.25)), y);
        assert_eq!(
            values(Dropout::disabled().channels(x.clone(), 0.25)),
            values(x.clone())
        );
        assert_eq!(
            values(Dropout::seeded(3).elements(x.clone(), 0.0)),
            values(x)
        );
    }
}
