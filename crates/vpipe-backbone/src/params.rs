//! Named parameters in the canonical (ml-cvnets) naming, handed out with shape checks.

use std::collections::{BTreeMap, BTreeSet};

use burn::tensor::{Device, Tensor, TensorData};
use vpipe_core::HostTensor;

use crate::error::{BackboneError, Result};
use crate::kernels::Kernels;
use crate::layout::{CanonicalTensors, SourceLayout, source_name};
use crate::precision::{Precision, cpu_precision};

/// The tensors of a checkpoint under canonical names, handed out as the layers are
/// built.
///
/// A tensor can be taken by as many layers as ask for it (a checkpoint read once can
/// feed several backbones and heads); [`Params::finish`] reports any tensor that no
/// layer took, and [`Params::take`] reports a missing or wrongly shaped one under the
/// name it has in the original file.
#[derive(Debug)]
pub struct Params {
    file: String,
    tensors: BTreeMap<String, HostTensor>,
    /// Canonical names of the tensors taken so far.
    taken: BTreeSet<String>,
    source_names: BTreeMap<String, String>,
    source: Option<SourceLayout>,
    device: Device,
    kernels: Kernels,
    precision: Precision,
    bn_eps: f64,
    synthetic: Option<u64>,
    /// Made-up tensors follow ml-cvnets' initialisation ([`Params::initialised`]).
    cvnets_init: bool,
    trainable: bool,
}

/// A convolution whose batch norm (if any) has been folded into its weight and bias.
#[derive(Debug, Clone)]
pub struct FoldedConv {
    /// Weight `[out, in / groups, k, k]`.
    pub weight: HostTensor,
    /// Bias `[out]`.
    pub bias: Option<Vec<f32>>,
}

impl Params {
    /// Wraps the canonical tensors of `file`.
    pub fn new(file: impl Into<String>, canonical: CanonicalTensors, device: &Device) -> Self {
        Self {
            source_names: canonical.source_names,
            source: Some(canonical.source),
            ..Self::from_named(file, canonical.tensors, device)
        }
    }

    /// The tensors of a file that is no MobileViT checkpoint (a head's own weights),
    /// under the names they have in it.
    pub fn from_named(
        file: impl Into<String>,
        tensors: BTreeMap<String, HostTensor>,
        device: &Device,
    ) -> Self {
        Self {
            file: file.into(),
            tensors,
            taken: BTreeSet::new(),
            source_names: BTreeMap::new(),
            source: None,
            device: device.clone(),
            kernels: Kernels::for_device(device),
            precision: match Kernels::for_device(device) {
                Kernels::Fused => cpu_precision(),
                Kernels::Generic => Precision::Fp32,
            },
            bn_eps: 1e-5,
            synthetic: None,
            cvnets_init: false,
            trainable: false,
        }
    }

    /// Parameters that do not come from a file: every tensor asked for is made up
    /// from a seeded generator (weights ~ U(-a, a) with a = 1/sqrt(fan_in), norm
    /// scales and variances in [0.5, 1.5]). Used by benchmarks, where only the
    /// amount of arithmetic matters.
    pub fn synthetic(seed: u64, device: &Device) -> Self {
        Self {
            synthetic: Some(seed),
            ..Self::from_named("<synthetic>", BTreeMap::new(), device)
        }
    }

    /// Parameters for new layers, initialised as ml-cvnets initialises a model
    /// (`cvnets/misc/init_utils.py`, its defaults) from a seeded generator:
    /// convolution weights ~ N(0, 2 / fan_out) (Kaiming normal, `fan_out` = output
    /// channels × kernel area), linear weights ~ N(0, 0.01²), biases 0, norm weights 1,
    /// running means 0 and variances 1. For heads trained from scratch (see
    /// [`Params::set_trainable`]); every tensor asked for is made up.
    pub fn initialised(seed: u64, device: &Device) -> Self {
        Self {
            cvnets_init: true,
            ..Self::synthetic(seed, device)
        }
    }

    /// The next uniform draw in `[0, 1)` of the seeded generator.
    fn uniform(seed: &mut u64) -> f64 {
        // 64-bit LCG (Knuth's MMIX constants).
        *seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (*seed >> 11) as f64 / (1u64 << 53) as f64
    }

    /// A tensor initialised as ml-cvnets does (see [`Params::initialised`]).
    fn initialise(&mut self, key: &str, shape: &[usize]) -> HostTensor {
        let seed = self.synthetic.get_or_insert(0);
        let n: usize = shape.iter().product();
        let std = match shape.len() {
            4 => Some((2.0 / (shape[0] * shape[2] * shape[3]).max(1) as f64).sqrt()),
            2 => Some(0.01),
            _ => None,
        };
        let one = key.ends_with("running_var") || (shape.len() == 1 && key.ends_with("weight"));
        let data = (0..n)
            .map(|_| match std {
                // Box-Muller.
                Some(std) => {
                    let u1 = 1.0 - Self::uniform(seed);
                    let u2 = Self::uniform(seed);
                    std * (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
                }
                None if one => 1.0,
                None => 0.0,
            })
            .map(|v| v as f32)
            .collect();
        HostTensor::new(shape.to_vec(), data)
    }

    fn make_up(&mut self, key: &str, shape: &[usize]) -> HostTensor {
        if self.cvnets_init {
            return self.initialise(key, shape);
        }
        let seed = self.synthetic.get_or_insert(0);
        let n: usize = shape.iter().product();
        let fan_in = if shape.len() > 1 { n / shape[0] } else { 1 };
        let positive = key.ends_with("running_var") || key.ends_with("norm.weight");
        let amp = 1.0 / (fan_in as f64).sqrt();
        let data = (0..n)
            .map(|_| {
                let u = Self::uniform(seed);
                if positive {
                    0.5 + u
                } else {
                    (2.0 * u - 1.0) * amp
                }
            })
            .map(|v| v as f32)
            .collect();
        HostTensor::new(shape.to_vec(), data)
    }

    /// Builds the layers loaded from now on in trainable form ([`crate::trainable`]):
    /// convolutions keep their batch norms unfolded, every tensor becomes a leaf of
    /// burn's autodiff graph on the autodiff form of the device, and the layers run
    /// on burn's generic ops. Layers loaded before (a frozen backbone) keep their
    /// inference form.
    pub fn set_trainable(&mut self) {
        self.trainable = true;
        self.kernels = Kernels::Generic;
        self.precision = Precision::Fp32;
        self.device = self.device.clone().autodiff();
    }

    /// Whether layers are built in trainable form ([`Params::set_trainable`]).
    pub fn is_trainable(&self) -> bool {
        self.trainable
    }

    /// The batch norm epsilon.
    pub fn bn_eps(&self) -> f64 {
        self.bn_eps
    }

    /// The kernels the layers are built for ([`Kernels::for_device`]).
    pub fn kernels(&self) -> Kernels {
        self.kernels
    }

    /// The precision of the fused kernels' products ([`crate::set_cpu_precision`];
    /// always fp32 for burn's generic ops).
    pub fn precision(&self) -> Precision {
        self.precision
    }

    /// The device tensors are created on.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// The layout of the checkpoint (ml-cvnets for synthetic weights).
    pub fn source(&self) -> SourceLayout {
        self.source.unwrap_or(SourceLayout::Cvnets)
    }

    /// The checkpoint file name, for messages.
    pub fn file(&self) -> &str {
        &self.file
    }

    /// The name `key` has in the original file.
    pub fn source_name(&self, key: &str) -> String {
        match (self.source_names.get(key), self.source) {
            (Some(name), _) => name.clone(),
            (None, Some(SourceLayout::Cvnets))
                if (key.starts_with("conv_1.") || key.starts_with("layer_"))
                    && self
                        .source_names
                        .values()
                        .any(|n| n.starts_with("encoder.")) =>
            {
                format!("encoder.{key}")
            }
            (None, Some(source)) => source_name(source, key),
            (None, None) => key.to_string(),
        }
    }

    /// Dimension `axis` of tensor `key`, or `default` when the tensor is absent
    /// (always, for synthetic parameters).
    pub fn dim_or(&self, key: &str, axis: usize, default: usize) -> usize {
        self.shape_of(key)
            .and_then(|s| s.get(axis).copied())
            .unwrap_or(default)
    }

    /// Whether tensor `key` is present (always true for synthetic parameters).
    pub fn has(&self, key: &str) -> bool {
        self.synthetic.is_some() || self.tensors.contains_key(key)
    }

    /// The shape of a canonical tensor, if present.
    pub fn shape_of(&self, key: &str) -> Option<&[usize]> {
        self.tensors.get(key).map(|t| t.shape.as_slice())
    }

    /// A copy of tensor `key`, which must have shape `expected`; the tensor counts
    /// as used and stays available to later layers.
    pub fn take(&mut self, key: &str, expected: &[usize]) -> Result<HostTensor> {
        if self.synthetic.is_some() {
            return Ok(self.make_up(key, expected));
        }
        let Some(t) = self.tensors.get(key) else {
            return Err(BackboneError::MissingTensor {
                file: self.file.clone(),
                key: self.source_name(key),
                expected: expected.to_vec(),
            });
        };
        if t.shape != expected {
            return Err(BackboneError::ShapeMismatch {
                file: self.file.clone(),
                key: self.source_name(key),
                expected: expected.to_vec(),
                found: t.shape.clone(),
            });
        }
        let t = t.clone();
        self.taken.insert(key.to_string());
        Ok(t)
    }

    /// Takes an ml-cvnets `ConvLayer` at `prefix` (`{prefix}.block.conv.*`, and with
    /// `norm`, `{prefix}.block.norm.*`), folding the batch norm into the convolution.
    pub fn conv(
        &mut self,
        prefix: &str,
        shape: [usize; 4],
        conv_bias: bool,
        norm: bool,
    ) -> Result<FoldedConv> {
        let weight = self.take(&format!("{prefix}.block.conv.weight"), &shape)?;
        let out = shape[0];
        let bias = if conv_bias {
            Some(
                self.take(&format!("{prefix}.block.conv.bias"), &[out])?
                    .data,
            )
        } else {
            None
        };
        if !norm {
            return Ok(FoldedConv { weight, bias });
        }
        let n = format!("{prefix}.block.norm");
        let gamma = self.take(&format!("{n}.weight"), &[out])?.data;
        let beta = self.take(&format!("{n}.bias"), &[out])?.data;
        let mean = self.take(&format!("{n}.running_mean"), &[out])?.data;
        let var = self.take(&format!("{n}.running_var"), &[out])?.data;
        Ok(fold_batch_norm(
            weight,
            bias,
            &gamma,
            &beta,
            &mean,
            &var,
            self.bn_eps,
        ))
    }

    /// How many tensors no layer has taken yet.
    pub fn untaken(&self) -> usize {
        self.tensors.len() - self.taken.len()
    }

    /// Reports tensors that no layer took.
    pub fn finish(self) -> Result<()> {
        let mut unused = self
            .tensors
            .iter()
            .filter(|(key, _)| !self.taken.contains(*key));
        if let Some((key, t)) = unused.next() {
            return Err(BackboneError::UnexpectedTensors {
                file: self.file.clone(),
                count: 1 + unused.count(),
                first: self.source_name(key),
                shape: t.shape.clone(),
            });
        }
        Ok(())
    }

    /// Uploads a host tensor of rank `D` to the device.
    pub fn upload<const D: usize>(&self, t: HostTensor) -> Tensor<D> {
        Tensor::from_data(TensorData::new(t.data, t.shape), &self.device)
    }

    /// Uploads a vector as a rank-1 tensor.
    pub fn upload_vec(&self, v: Vec<f32>) -> Tensor<1> {
        let n = v.len();
        Tensor::from_data(TensorData::new(v, [n]), &self.device)
    }
}

/// Folds inference-mode batch norm into the preceding convolution, in `f64`:
/// `w' = w * g / sqrt(v + eps)`, `b' = (b - m) * g / sqrt(v + eps) + beta`.
pub fn fold_batch_norm(
    weight: HostTensor,
    bias: Option<Vec<f32>>,
    gamma: &[f32],
    beta: &[f32],
    mean: &[f32],
    var: &[f32],
    eps: f64,
) -> FoldedConv {
    let out = weight.shape[0];
    let per_out = weight.data.len() / out.max(1);
    let scale: Vec<f64> = (0..out)
        .map(|o| gamma[o] as f64 / (var[o] as f64 + eps).sqrt())
        .collect();
    let data = weight
        .data
        .iter()
        .enumerate()
        .map(|(i, &w)| (w as f64 * scale[i / per_out]) as f32)
        .collect();
    let b = (0..out)
        .map(|o| {
            let b0 = bias.as_ref().map_or(0.0, |b| b[o] as f64);
            ((b0 - mean[o] as f64) * scale[o] + beta[o] as f64) as f32
        })
        .collect();
    FoldedConv {
        weight: HostTensor::new(weight.shape, data),
        bias: Some(b),
    }
}
