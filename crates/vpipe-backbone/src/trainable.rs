//! The trainable form of the layers: unfolded parameters as autodiff leaves.
//!
//! Inference folds each batch norm into its convolution ([`crate::params::fold_batch_norm`]).
//! For training ([`Params::set_trainable`]), a [`crate::layers::ConvNorm`] keeps the
//! convolution's weight and bias and the batch norm's affine `weight` and `bias` as
//! separate [`Param`]s, leaves of burn's autodiff graph that record their gradients,
//! and the batch norm's running statistics as frozen constants: the norm runs in
//! inference mode (`(x - running_mean) / sqrt(running_var + eps) * weight + bias`),
//! a deliberate choice for heads trained on a frozen backbone at the small batch
//! sizes a CPU allows, where batch statistics would be noisy. Its layers run on
//! burn's generic ops ([`crate::Kernels::Generic`]) over the same forward code as
//! inference.
//!
//! The trainable form covers the layers heads are made of (convolutions with or
//! without batch norm, linear layers); layer norms and attention, found only in
//! the backbone, which stays frozen, have none.
//!
//! Every parameter carries its canonical (ml-cvnets) checkpoint name, so that a
//! trained head can be written out under those names and read back by the normal,
//! folding loader.

use burn::tensor::Gradients;
use burn::tensor::module::conv2d;
use burn::tensor::ops::ConvOptions;
use burn::tensor::{Device, Tensor, TensorData};
use vpipe_core::HostTensor;

use crate::error::{BackboneError, Result};
use crate::params::Params;

/// One named tensor of a trainable layer: a flat autodiff leaf and its shape.
///
/// A trainable parameter records its gradient in the backward pass
/// (`require_grad`); a frozen one (a batch norm's running statistics) is a constant
/// of the graph, saved with the layer but never updated.
#[derive(Debug, Clone)]
pub struct Param {
    name: String,
    shape: Vec<usize>,
    value: Tensor<1>,
    trainable: bool,
}

impl Param {
    /// A parameter named `name` holding `t` on `device` (an autodiff device).
    pub fn new(name: impl Into<String>, t: HostTensor, trainable: bool, device: &Device) -> Self {
        let value = leaf(t.data, trainable, device);
        Self {
            name: name.into(),
            shape: t.shape,
            value,
            trainable,
        }
    }

    /// The canonical checkpoint name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The shape.
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    /// Whether the optimiser updates it (false for frozen statistics).
    pub fn is_trainable(&self) -> bool {
        self.trainable
    }

    /// The value in its shape, as a node of the autodiff graph.
    pub fn tensor<const D: usize>(&self) -> Tensor<D> {
        let dims: [usize; D] = std::array::from_fn(|i| self.shape[i]);
        self.value.clone().reshape(dims)
    }

    /// The value in host memory.
    pub fn to_host(&self) -> Result<HostTensor> {
        Ok(HostTensor::new(
            self.shape.clone(),
            read_back(self.value.clone(), &self.name)?,
        ))
    }

    /// The gradient recorded for it in `grads`, flat (`None` for a frozen parameter
    /// or one the loss does not depend on).
    pub fn grad(&self, grads: &Gradients) -> Result<Option<Vec<f32>>> {
        match self.value.grad(grads) {
            Some(g) => read_back(g, &self.name).map(Some),
            None => Ok(None),
        }
    }

    /// Replaces the value (flat, same element count) with a new leaf.
    pub fn set(&mut self, data: Vec<f32>) {
        debug_assert_eq!(data.len(), self.shape.iter().product::<usize>());
        let device = self.value.device();
        self.value = leaf(data, self.trainable, &device);
    }
}

/// A flat leaf tensor on `device`, recording its gradient when `trainable`.
fn leaf(data: Vec<f32>, trainable: bool, device: &Device) -> Tensor<1> {
    let n = data.len();
    let t = Tensor::<1>::from_data(TensorData::new(data, [n]), device);
    if trainable { t.require_grad() } else { t }
}

/// The elements of `t` in host memory.
fn read_back(t: Tensor<1>, name: &str) -> Result<Vec<f32>> {
    t.into_data()
        .convert::<f32>()
        .try_into_vec::<f32>()
        .map_err(|e| BackboneError::ReadBack {
            name: name.to_string(),
            problem: format!("{e:?}"),
        })
}

/// A batch norm in inference mode with a trainable affine part.
#[derive(Debug, Clone)]
struct FrozenStatsNorm {
    weight: Param,
    bias: Param,
    running_mean: Param,
    running_var: Param,
    eps: f64,
}

impl FrozenStatsNorm {
    fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let c = self.weight.shape[0];
        let shape = |t: Tensor<1>| t.reshape([1, c, 1, 1]);
        let inv_std = shape((self.running_var.tensor::<1>() + self.eps).sqrt().recip());
        (x - shape(self.running_mean.tensor())) * inv_std * shape(self.weight.tensor())
            + shape(self.bias.tensor())
    }
}

/// An ml-cvnets `ConvLayer` in trainable form: convolution weight, optional bias,
/// optional batch norm (trainable affine part, frozen statistics).
#[derive(Debug, Clone)]
pub(crate) struct TrainableConv {
    weight: Param,
    bias: Option<Param>,
    norm: Option<FrozenStatsNorm>,
    options: ConvOptions<2>,
}

impl TrainableConv {
    /// Takes `{prefix}.block.conv.*` (and with `norm`, `{prefix}.block.norm.*`)
    /// unfolded from `params`.
    pub(crate) fn load(
        params: &mut Params,
        prefix: &str,
        shape: [usize; 4],
        conv_bias: bool,
        norm: bool,
        options: ConvOptions<2>,
    ) -> Result<Self> {
        let out = shape[0];
        let param = |params: &mut Params, key: String, shape: &[usize], trainable: bool| {
            let t = params.take(&key, shape)?;
            Ok::<_, BackboneError>(Param::new(key, t, trainable, &params.device().clone()))
        };
        let weight = param(params, format!("{prefix}.block.conv.weight"), &shape, true)?;
        let bias = if conv_bias {
            Some(param(
                params,
                format!("{prefix}.block.conv.bias"),
                &[out],
                true,
            )?)
        } else {
            None
        };
        let norm = if norm {
            let n = format!("{prefix}.block.norm");
            Some(FrozenStatsNorm {
                weight: param(params, format!("{n}.weight"), &[out], true)?,
                bias: param(params, format!("{n}.bias"), &[out], true)?,
                running_mean: param(params, format!("{n}.running_mean"), &[out], false)?,
                running_var: param(params, format!("{n}.running_var"), &[out], false)?,
                eps: params.bn_eps(),
            })
        } else {
            None
        };
        Ok(Self {
            weight,
            bias,
            norm,
            options,
        })
    }

    /// Convolution then batch norm (no activation).
    pub(crate) fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let y = conv2d(
            x,
            self.weight.tensor(),
            self.bias.as_ref().map(Param::tensor),
            self.options.clone(),
        );
        match &self.norm {
            Some(n) => n.forward(y),
            None => y,
        }
    }

    /// Its parameters, frozen statistics included, in a fixed order.
    pub(crate) fn params(&self) -> Vec<&Param> {
        let mut out = vec![&self.weight];
        out.extend(&self.bias);
        if let Some(n) = &self.norm {
            out.extend([&n.weight, &n.bias, &n.running_mean, &n.running_var]);
        }
        out
    }

    /// Its parameters, mutable, in the order of [`TrainableConv::params`].
    pub(crate) fn params_mut(&mut self) -> Vec<&mut Param> {
        let mut out = vec![&mut self.weight];
        out.extend(&mut self.bias);
        if let Some(n) = &mut self.norm {
            out.extend([
                &mut n.weight,
                &mut n.bias,
                &mut n.running_mean,
                &mut n.running_var,
            ]);
        }
        out
    }
}

/// A linear layer in trainable form: `weight` `[out, in]` and `bias` `[out]`.
#[derive(Debug, Clone)]
pub(crate) struct TrainableLinear {
    weight: Param,
    bias: Param,
}

impl TrainableLinear {
    /// Takes `{prefix}.weight` and `{prefix}.bias`.
    pub(crate) fn load(
        params: &mut Params,
        prefix: &str,
        d_in: usize,
        d_out: usize,
    ) -> Result<Self> {
        let device = params.device().clone();
        let w = format!("{prefix}.weight");
        let b = format!("{prefix}.bias");
        Ok(Self {
            weight: Param::new(&w, params.take(&w, &[d_out, d_in])?, true, &device),
            bias: Param::new(&b, params.take(&b, &[d_out])?, true, &device),
        })
    }

    /// `x · Wᵀ + b` over the last dimension.
    pub(crate) fn forward<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        burn::tensor::module::linear(
            x,
            self.weight.tensor::<2>().transpose(),
            Some(self.bias.tensor()),
        )
    }

    /// Weight and bias.
    pub(crate) fn params(&self) -> Vec<&Param> {
        vec![&self.weight, &self.bias]
    }

    /// Weight and bias, mutable.
    pub(crate) fn params_mut(&mut self) -> Vec<&mut Param> {
        vec![&mut self.weight, &mut self.bias]
    }
}
