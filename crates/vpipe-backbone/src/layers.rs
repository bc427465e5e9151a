//! Building blocks of MobileViT and its heads, loaded from canonical parameters.

//!
//! Each layer's forward pass is written once, on [`Act`] values, through the
//! operations of [`crate::kernels`]; the layer stores its weights once, in the form
//! of the kernels it was loaded for ([`Params::kernels`]). The `forward` methods
//! take and return burn tensors, for heads and callers outside the backbone.

use burn::tensor::activation::relu;
use burn::tensor::module::{conv2d, layer_norm, linear};
use burn::tensor::ops::ConvOptions;
use burn::tensor::{Device, Tensor};

use crate::activation::silu;
use crate::bf16::{Bf16Panels, Bf16Rows};
use crate::cpu::{self, ConvGeometry, DenseWeight, Epilogue, HostArray, LinearWeight};
use crate::error::Result;
use crate::int8::{I8Panels, I8Rows};
use crate::kernels::{self, Act, Kernels};
use crate::panels::F32Panels;
use crate::params::Params;
use crate::precision::Precision;
use crate::trainable::{Param, TrainableConv, TrainableLinear};

/// Activation after a convolution.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    /// None (linear).
    Identity,
    /// SiLU (swish), used throughout the MobileViT backbone.
    Silu,
    /// ReLU, used by the SSD and DeepLabv3 heads.
    Relu,
}

impl Activation {
    /// Applies the activation.
    pub fn apply<const D: usize>(self, x: Tensor<D>) -> Tensor<D> {
        match self {
            Activation::Identity => x,
            Activation::Silu => silu(x),
            Activation::Relu => relu(x),
        }
    }
}

/// Shape and behaviour of an ml-cvnets `ConvLayer`.
#[derive(Debug, Clone, Copy)]
pub struct ConvSpec {
    /// Input channels.
    pub in_channels: usize,
    /// Output channels.
    pub out_channels: usize,
    /// Square kernel size.
    pub kernel: usize,
    /// Stride.
    pub stride: usize,
    /// Dilation; padding is `(kernel - 1) / 2 * dilation`.
    pub dilation: usize,
    /// Groups (`in_channels` for depthwise).
    pub groups: usize,
    /// Whether the convolution has its own bias.
    pub bias: bool,
    /// Whether a batch norm follows (folded in at load time).
    pub norm: bool,
    /// Activation after the (folded) batch norm.
    pub act: Activation,
}

impl ConvSpec {
    /// A convolution with batch norm and activation `act`, stride 1, no own bias.
    pub fn new(in_channels: usize, out_channels: usize, kernel: usize, act: Activation) -> Self {
        Self {
            in_channels,
            out_channels,
            kernel,
            stride: 1,
            dilation: 1,
            groups: 1,
            bias: false,
            norm: true,
            act,
        }
    }

    /// Sets the stride.
    pub fn stride(mut self, stride: usize) -> Self {
        self.stride = stride;
        self
    }

    /// Sets the dilation.
    pub fn dilation(mut self, dilation: usize) -> Self {
        self.dilation = dilation;
        self
    }

    /// Makes it depthwise (groups = channels).
    pub fn depthwise(mut self) -> Self {
        self.groups = self.in_channels;
        self
    }

    /// A plain convolution with its own bias and no batch norm.
    pub fn plain(mut self) -> Self {
        self.bias = true;
        self.norm = false;
        self
    }

    /// Sets whether the convolution has its own bias.
    pub fn with_bias(mut self, bias: bool) -> Self {
        self.bias = bias;
        self
    }
}

/// A convolution with its batch norm folded in, followed by an activation.
#[derive(Debug, Clone)]
pub struct ConvNorm {
    weights: ConvWeights,
    act: Activation,
    out_channels: usize,
    device: Device,
}

/// A convolution's folded weights, in the form of its kernels.
#[derive(Debug, Clone)]
enum ConvWeights {
    Fused {
        /// `[out, in / groups, k, k]`, row-major (packed bf16 or int8
        /// `[out, in * k * k]` only when `groups == 1`).
        weight: DenseWeight,
        /// One per output channel (zeros where the layer has none).
        bias: Vec<f32>,
        geometry: ConvGeometry,
        groups: usize,
        /// The model's precision (its depthwise convolutions and activations
        /// follow it too).
        precision: Precision,
    },
    Generic(Box<GenericConv>),
    /// Unfolded, as autodiff leaves ([`Params::set_trainable`]).
    Trainable(Box<TrainableConv>),
}

/// A convolution's weights as burn tensors.
#[derive(Debug, Clone)]
struct GenericConv {
    weight: Tensor<4>,
    bias: Option<Tensor<1>>,
    options: ConvOptions<2>,
}

impl ConvNorm {
    /// Loads an ml-cvnets `ConvLayer` at `prefix`.
    pub fn load(params: &mut Params, prefix: &str, spec: ConvSpec) -> Result<Self> {
        let shape = [
            spec.out_channels,
            spec.in_channels / spec.groups,
            spec.kernel,
            spec.kernel,
        ];
        let pad = (spec.kernel - 1) / 2 * spec.dilation;
        let options = ConvOptions::new([spec.stride; 2], [pad; 2], [spec.dilation; 2], spec.groups);
        if params.is_trainable() {
            return Ok(Self {
                weights: ConvWeights::Trainable(Box::new(TrainableConv::load(
                    params, prefix, shape, spec.bias, spec.norm, options,
                )?)),
                act: spec.act,
                out_channels: spec.out_channels,
                device: params.device().clone(),
            });
        }
        let folded = params.conv(prefix, shape, spec.bias, spec.norm)?;
        // The weight as the matrix [out, in * k * k] its products read.
        let (rows, cols) = (
            spec.out_channels,
            spec.in_channels * spec.kernel * spec.kernel,
        );
        let weights = match params.kernels() {
            Kernels::Fused => ConvWeights::Fused {
                weight: match params.precision() {
                    Precision::Bf16 if spec.groups == 1 => {
                        DenseWeight::Bf16(Bf16Rows::new(&folded.weight.data, rows, cols))
                    }
                    Precision::Int8 if spec.groups == 1 => {
                        DenseWeight::Int8(I8Rows::new(&folded.weight.data, rows, cols))
                    }
                    _ => DenseWeight::F32(folded.weight.data),
                },
                bias: folded.bias.unwrap_or_else(|| vec![0.0; spec.out_channels]),
                geometry: ConvGeometry {
                    kernel: spec.kernel,
                    stride: spec.stride,
                    dilation: spec.dilation,
                    padding: pad,
                },
                groups: spec.groups,
                precision: params.precision(),
            },
            Kernels::Generic => ConvWeights::Generic(Box::new(GenericConv {
                weight: params.upload(folded.weight),
                bias: folded.bias.map(|b| params.upload_vec(b)),
                options,
            })),
        };
        Ok(Self {
            weights,
            act: spec.act,
            out_channels: spec.out_channels,
            device: params.device().clone(),
        })
    }

    /// The device its weights live on.
    pub fn device(&self) -> Device {
        self.device.clone()
    }

    /// The kernels it was loaded for.
    pub fn kernels(&self) -> Kernels {
        match self.weights {
            ConvWeights::Fused { .. } => Kernels::Fused,
            ConvWeights::Generic(_) | ConvWeights::Trainable(_) => Kernels::Generic,
        }
    }

    /// Its parameters under their canonical names (frozen batch norm statistics
    /// included), when loaded in trainable form; none otherwise.
    pub fn params(&self) -> Vec<&Param> {
        match &self.weights {
            ConvWeights::Trainable(t) => t.params(),
            _ => Vec::new(),
        }
    }

    /// Its parameters, mutable, in the order of [`ConvNorm::params`].
    pub fn params_mut(&mut self) -> Vec<&mut Param> {
        match &mut self.weights {
            ConvWeights::Trainable(t) => t.params_mut(),
            _ => Vec::new(),
        }
    }

    /// Output channels.
    pub fn out_channels(&self) -> usize {
        self.out_channels
    }

    /// Runs the convolution and activation.
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        self.run(&Act::from_tensor(x, self.kernels()), None)
            .into_tensor(&self.device)
    }

    /// `act(conv(x) + bias) + residual` (`residual` laid out like the output).
    pub fn run(&self, x: &Act<4>, residual: Option<&Act<4>>) -> Act<4> {
        match &self.weights {
            ConvWeights::Fused {
                weight,
                bias,
                geometry,
                groups,
                precision,
            } => {
                let x = x.host();
                let residual = residual.map(Act::host);
                let residual = residual.as_ref().map(|r| &r.data[..]);
                let c_in = x.dims[1];
                let ep = Epilogue::rows(bias, self.act).with_precision(*precision);
                let y = if *groups == 1 {
                    let mut ep = ep;
                    if let Some(r) = residual {
                        ep = ep.with_residual(r);
                    }
                    cpu::conv2d(&x, weight, self.out_channels, *geometry, &ep)
                } else {
                    let DenseWeight::F32(weight) = weight else {
                        unreachable!("only dense convolutions are packed")
                    };
                    let mut y = if *groups == c_in && *groups == self.out_channels {
                        cpu::depthwise_conv2d(&x, weight, *geometry, &ep)
                    } else {
                        cpu::grouped_conv2d(&x, weight, self.out_channels, *groups, *geometry, &ep)
                    };
                    if let Some(r) = residual {
                        y.data.iter_mut().zip(r).for_each(|(v, r)| *v += r);
                    }
                    y
                };
                Act::Host(y)
            }
            ConvWeights::Generic(g) => self.finish(
                conv2d(
                    x.tensor(&self.device),
                    g.weight.clone(),
                    g.bias.clone(),
                    g.options.clone(),
                ),
                residual,
            ),
            ConvWeights::Trainable(t) => self.finish(t.forward(x.tensor(&self.device)), residual),
        }
    }

    /// `act(y) + residual`, on burn's ops.
    fn finish(&self, y: Tensor<4>, residual: Option<&Act<4>>) -> Act<4> {
        let y = self.act.apply(y);
        Act::Tensor(match residual {
            Some(r) => y + r.tensor(&self.device),
            None => y,
        })
    }
}

/// A linear layer (`y = x Wᵀ + b`).
#[derive(Debug, Clone)]
pub struct Linear {
    weights: LinearWeights,
    d_out: usize,
    device: Device,
}

/// A linear layer's weights, in the form of its kernels.
#[derive(Debug, Clone)]
enum LinearWeights {
    /// `[in, out]` and `[out]`.
    Fused {
        weight: LinearWeight,
        bias: Vec<f32>,
    },
    /// `[in, out]` (transposed for burn's `linear`) and `[out]`.
    Generic(Box<(Tensor<2>, Tensor<1>)>),
    /// `[out, in]` and `[out]` as autodiff leaves ([`Params::set_trainable`]).
    Trainable(Box<TrainableLinear>),
}

impl Linear {
    /// Loads `{prefix}.weight` `[out, in]` and `{prefix}.bias` `[out]`.
    pub fn load(params: &mut Params, prefix: &str, d_in: usize, d_out: usize) -> Result<Self> {
        if params.is_trainable() {
            return Ok(Self {
                weights: LinearWeights::Trainable(Box::new(TrainableLinear::load(
                    params, prefix, d_in, d_out,
                )?)),
                d_out,
                device: params.device().clone(),
            });
        }
        let w = params.take(&format!("{prefix}.weight"), &[d_out, d_in])?;
        let b = params.take(&format!("{prefix}.bias"), &[d_out])?;
        let weights = match params.kernels() {
            Kernels::Fused => LinearWeights::Fused {
                weight: {
                    let t = cpu::transpose(&w.data, d_out, d_in);
                    match params.precision() {
                        Precision::Bf16 => LinearWeight::Bf16(Bf16Panels::new(&t, d_in, d_out)),
                        Precision::Int8 => LinearWeight::Int8(I8Panels::new(&t, d_in, d_out)),
                        Precision::Fp32 => LinearWeight::F32(F32Panels::new(&t, d_in, d_out)),
                    }
                },
                bias: b.data,
            },
            Kernels::Generic => LinearWeights::Generic(Box::new((
                params.upload::<2>(w).transpose(),
                params.upload_vec(b.data),
            ))),
        };
        Ok(Self {
            weights,
            d_out,
            device: params.device().clone(),
        })
    }

    fn kernels(&self) -> Kernels {
        match self.weights {
            LinearWeights::Fused { .. } => Kernels::Fused,
            LinearWeights::Generic(_) | LinearWeights::Trainable(_) => Kernels::Generic,
        }
    }

    /// Its parameters under their canonical names, when loaded in trainable form;
    /// none otherwise.
    pub fn params(&self) -> Vec<&Param> {
        match &self.weights {
            LinearWeights::Trainable(t) => t.params(),
            _ => Vec::new(),
        }
    }

    /// Its parameters, mutable, in the order of [`Linear::params`].
    pub fn params_mut(&mut self) -> Vec<&mut Param> {
        match &mut self.weights {
            LinearWeights::Trainable(t) => t.params_mut(),
            _ => Vec::new(),
        }
    }

    /// Applies the layer to the last dimension.
    pub fn forward<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        self.run(
            &Act::from_tensor(x, self.kernels()),
            Activation::Identity,
            None,
        )
        .into_tensor(&self.device)
    }

    /// `act(x · Wᵀ + b) + residual` over the last dimension.
    pub fn run<const D: usize>(
        &self,
        x: &Act<D>,
        act: Activation,
        residual: Option<&Act<D>>,
    ) -> Act<D> {
        match &self.weights {
            LinearWeights::Fused { weight, bias } => {
                let x = x.host();
                let residual = residual.map(Act::host);
                let mut dims = x.dims;
                let rows = x.data.len() / dims[D - 1].max(1);
                dims[D - 1] = self.d_out;
                let data = cpu::linear(
                    &x.data,
                    rows,
                    weight,
                    bias,
                    act,
                    residual.as_ref().map(|r| &r.data[..]),
                );
                Act::Host(HostArray { data, dims })
            }
            LinearWeights::Generic(wb) => self.finish(
                linear(x.tensor(&self.device), wb.0.clone(), Some(wb.1.clone())),
                act,
                residual,
            ),
            LinearWeights::Trainable(t) => {
                self.finish(t.forward(x.tensor(&self.device)), act, residual)
            }
        }
    }

    /// `act(y) + residual`, on burn's ops.
    fn finish<const D: usize>(
        &self,
        y: Tensor<D>,
        act: Activation,
        residual: Option<&Act<D>>,
    ) -> Act<D> {
        let y = act.apply(y);
        Act::Tensor(match residual {
            Some(r) => y + r.tensor(&self.device),
            None => y,
        })
    }
}

/// Layer normalisation over the last dimension.
#[derive(Debug, Clone)]
pub struct LayerNorm {
    weights: NormWeights,
    eps: f64,
    device: Device,
}

/// A layer norm's scale and shift, in the form of its kernels.
#[derive(Debug, Clone)]
enum NormWeights {
    Fused { gamma: Vec<f32>, beta: Vec<f32> },
    Generic(Box<(Tensor<1>, Tensor<1>)>),
}

impl LayerNorm {
    /// Loads `{prefix}.weight` and `{prefix}.bias` of width `dim`.
    pub fn load(params: &mut Params, prefix: &str, dim: usize, eps: f64) -> Result<Self> {
        let g = params.take(&format!("{prefix}.weight"), &[dim])?;
        let b = params.take(&format!("{prefix}.bias"), &[dim])?;
        let weights = match params.kernels() {
            Kernels::Fused => NormWeights::Fused {
                gamma: g.data,
                beta: b.data,
            },
            Kernels::Generic => NormWeights::Generic(Box::new((
                params.upload_vec(g.data),
                params.upload_vec(b.data),
            ))),
        };
        Ok(Self {
            weights,
            eps,
            device: params.device().clone(),
        })
    }

    fn kernels(&self) -> Kernels {
        match self.weights {
            NormWeights::Fused { .. } => Kernels::Fused,
            NormWeights::Generic(_) => Kernels::Generic,
        }
    }

    /// Normalises the last dimension.
    pub fn forward<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        self.run(&Act::from_tensor(x, self.kernels()))
            .into_tensor(&self.device)
    }

    /// Normalises the last dimension of `x` into a new array.
    pub fn run<const D: usize>(&self, x: &Act<D>) -> Act<D> {
        match &self.weights {
            NormWeights::Fused { gamma, beta } => {
                let x = x.host();
                let data = cpu::layer_norm(&x.data, gamma, beta, self.eps as f32);
                Act::Host(HostArray { data, dims: x.dims })
            }
            NormWeights::Generic(gb) => Act::Tensor(layer_norm(
                x.tensor(&self.device),
                gb.0.clone(),
                Some(gb.1.clone()),
                self.eps,
            )),
        }
    }
}

/// MobileNetV2 inverted residual: 1x1 expansion, 3x3 depthwise, 1x1 linear reduction.
#[derive(Debug, Clone)]
pub struct InvertedResidual {
    expand: Option<ConvNorm>,
    depthwise: ConvNorm,
    reduce: ConvNorm,
    residual: bool,
}

impl InvertedResidual {
    /// Loads an ml-cvnets `InvertedResidual` at `prefix` (`{prefix}.block.*`).
    pub fn load(
        params: &mut Params,
        prefix: &str,
        in_channels: usize,
        out_channels: usize,
        hidden: usize,
        stride: usize,
        dilation: usize,
    ) -> Result<Self> {
        let expand = if hidden != in_channels {
            Some(ConvNorm::load(
                params,
                &format!("{prefix}.block.exp_1x1"),
                ConvSpec::new(in_channels, hidden, 1, Activation::Silu),
            )?)
        } else {
            None
        };
        let depthwise = ConvNorm::load(
            params,
            &format!("{prefix}.block.conv_3x3"),
            ConvSpec::new(hidden, hidden, 3, Activation::Silu)
                .stride(stride)
                .dilation(dilation)
                .depthwise(),
        )?;
        let reduce = ConvNorm::load(
            params,
            &format!("{prefix}.block.red_1x1"),
            ConvSpec::new(hidden, out_channels, 1, Activation::Identity),
        )?;
        Ok(Self {
            expand,
            depthwise,
            reduce,
            residual: stride == 1 && in_channels == out_channels,
        })
    }

    /// Runs the block.
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        self.run(&Act::from_tensor(x, self.reduce.kernels()))
            .into_tensor(&self.reduce.device)
    }

    /// Runs the block on `x`.
    pub fn run(&self, x: &Act<4>) -> Act<4> {
        let hidden = self.expand.as_ref().map(|e| e.run(x, None));
        let dw = self.depthwise.run(hidden.as_ref().unwrap_or(x), None);
        drop(hidden);
        self.reduce.run(&dw, self.residual.then_some(x))
    }
}

/// A pre-norm transformer encoder layer with fused-qkv multi-head attention and a
/// SiLU feed-forward network.
#[derive(Debug, Clone)]
pub struct TransformerLayer {
    norm_attn: LayerNorm,
    qkv: Linear,
    out_proj: Linear,
    norm_ffn: LayerNorm,
    fc1: Linear,
    fc2: Linear,
    heads: usize,
    /// The precision of the attention's products.
    precision: Precision,
}

impl TransformerLayer {
    /// Loads an ml-cvnets `TransformerEncoder` at `prefix`.
    pub fn load(
        params: &mut Params,
        prefix: &str,
        dim: usize,
        ffn_dim: usize,
        heads: usize,
        eps: f64,
    ) -> Result<Self> {
        Ok(Self {
            norm_attn: LayerNorm::load(params, &format!("{prefix}.pre_norm_mha.0"), dim, eps)?,
            qkv: Linear::load(
                params,
                &format!("{prefix}.pre_norm_mha.1.qkv_proj"),
                dim,
                3 * dim,
            )?,
            out_proj: Linear::load(
                params,
                &format!("{prefix}.pre_norm_mha.1.out_proj"),
                dim,
                dim,
            )?,
            norm_ffn: LayerNorm::load(params, &format!("{prefix}.pre_norm_ffn.0"), dim, eps)?,
            fc1: Linear::load(params, &format!("{prefix}.pre_norm_ffn.1"), dim, ffn_dim)?,
            fc2: Linear::load(params, &format!("{prefix}.pre_norm_ffn.4"), ffn_dim, dim)?,
            heads,
            precision: params.precision(),
        })
    }

    /// Runs the layer on sequences `[batch, tokens, dim]`.
    pub fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        self.run(Act::from_tensor(x, self.qkv.kernels()))
            .into_tensor(&self.qkv.device)
    }

    /// Runs the layer on sequences `x` `[batch, tokens, dim]`.
    pub fn run(&self, x: Act<3>) -> Act<3> {
        let qkv = self
            .qkv
            .run(&self.norm_attn.run(&x), Activation::Identity, None);
        let ctx = kernels::attention_heads(&qkv, self.heads, self.precision);
        drop(qkv);
        let x = self.out_proj.run(&ctx, Activation::Identity, Some(&x));
        let h = self.fc1.run(&self.norm_ffn.run(&x), Activation::Silu, None);
        self.fc2.run(&h, Activation::Identity, Some(&x))
    }
}

/// The MobileViT block: local 3x3 and 1x1 convolutions, unfolding into patches,
/// transformer layers over the patches, folding, 1x1 projection, and fusion of
/// the result with the block's input by concatenation and a 3x3 convolution.
#[derive(Debug, Clone)]
pub struct MobileVitBlock {
    local_conv: ConvNorm,
    local_proj: ConvNorm,
    transformer: Vec<TransformerLayer>,
    norm: LayerNorm,
    proj: ConvNorm,
    fusion: ConvNorm,
    patch: usize,
}

/// Shape of a MobileViT block.
#[derive(Debug, Clone, Copy)]
pub struct MobileVitBlockSpec {
    /// Input and output channels.
    pub channels: usize,
    /// Transformer width.
    pub dim: usize,
    /// Feed-forward width.
    pub ffn_dim: usize,
    /// Number of transformer layers.
    pub depth: usize,
    /// Attention heads.
    pub heads: usize,
    /// Patch height and width.
    pub patch: usize,
    /// Layer norm epsilon.
    pub ln_eps: f64,
}

impl MobileVitBlock {
    /// Loads an ml-cvnets `MobileViTBlock` at `prefix`.
    pub fn load(params: &mut Params, prefix: &str, spec: MobileVitBlockSpec) -> Result<Self> {
        let c = spec.channels;
        let local_conv = ConvNorm::load(
            params,
            &format!("{prefix}.local_rep.conv_3x3"),
            ConvSpec::new(c, c, 3, Activation::Silu),
        )?;
        let local_proj = ConvNorm::load(
            params,
            &format!("{prefix}.local_rep.conv_1x1"),
            ConvSpec {
                norm: false,
                ..ConvSpec::new(c, spec.dim, 1, Activation::Identity)
            },
        )?;
        let transformer = (0..spec.depth)
            .map(|i| {
                TransformerLayer::load(
                    params,
                    &format!("{prefix}.global_rep.{i}"),
                    spec.dim,
                    spec.ffn_dim,
                    spec.heads,
                    spec.ln_eps,
                )
            })
            .collect::<Result<Vec<_>>>()?;
        let norm = LayerNorm::load(
            params,
            &format!("{prefix}.global_rep.{}", spec.depth),
            spec.dim,
            spec.ln_eps,
        )?;
        let proj = ConvNorm::load(
            params,
            &format!("{prefix}.conv_proj"),
            ConvSpec::new(spec.dim, c, 1, Activation::Silu),
        )?;
        let fusion = ConvNorm::load(
            params,
            &format!("{prefix}.fusion"),
            ConvSpec::new(2 * c, c, 3, Activation::Silu),
        )?;
        Ok(Self {
            local_conv,
            local_proj,
            transformer,
            norm,
            proj,
            fusion,
            patch: spec.patch,
        })
    }

    /// Runs the block.
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        self.run(&Act::from_tensor(x, self.fusion.kernels()))
            .into_tensor(&self.fusion.device)
    }

    /// Runs the block on `x`.
    pub fn run(&self, x: &Act<4>) -> Act<4> {
        let device = &self.fusion.device;
        let fm = self.local_proj.run(&self.local_conv.run(x, None), None);
        let [_, _, h, w] = fm.dims();
        let p = self.patch;
        // Patch grids that do not divide the map are resized to fit, as the reference does.
        let (nh, nw) = (h.div_ceil(p), w.div_ceil(p));
        let resized = nh * p != h || nw * p != w;
        let fm = if resized {
            kernels::resize_bilinear(&fm, [nh * p, nw * p], device)
        } else {
            fm
        };
        let mut seq = kernels::unfold_patches(&fm, p);
        drop(fm);
        for layer in &self.transformer {
            seq = layer.run(seq);
        }
        let fm = kernels::fold_patches(&self.norm.run(&seq), p, nh, nw);
        let fm = if resized {
            kernels::resize_bilinear(&fm, [h, w], device)
        } else {
            fm
        };
        let fm = self.proj.run(&fm, None);
        self.fusion
            .run(&kernels::concat_channels(x, &fm, device), None)
    }
}
