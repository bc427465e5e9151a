//! Building blocks of MobileViT and its heads, loaded from canonical parameters.

use burn::tensor::Tensor;
use burn::tensor::activation::relu;

use crate::activation::silu;
use burn::tensor::module::{attention, conv2d, interpolate, layer_norm, linear};
use burn::tensor::ops::{AttentionModuleOptions, ConvOptions, InterpolateMode, InterpolateOptions};

use crate::cpu::{self, ConvGeometry, Epilogue, HostArray};
use crate::error::Result;
use crate::params::Params;

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
    weight: Tensor<4>,
    bias: Option<Tensor<1>>,
    options: ConvOptions<2>,
    act: Activation,
    cpu: Option<CpuConv>,
}

/// Host copy of a convolution's weights for the fused CPU kernels.
#[derive(Debug, Clone)]
struct CpuConv {
    weight: Vec<f32>,
    bias: Vec<f32>,
    out_channels: usize,
    geometry: ConvGeometry,
    depthwise: bool,
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
        let folded = params.conv(prefix, shape, spec.bias, spec.norm)?;
        let pad = (spec.kernel - 1) / 2 * spec.dilation;
        let depthwise = spec.groups == spec.in_channels && spec.groups == spec.out_channels;
        let cpu =
            (cpu::is_cpu(params.device()) && (spec.groups == 1 || depthwise)).then(|| CpuConv {
                weight: folded.weight.data.clone(),
                bias: folded
                    .bias
                    .clone()
                    .unwrap_or_else(|| vec![0.0; spec.out_channels]),
                out_channels: spec.out_channels,
                geometry: ConvGeometry {
                    kernel: spec.kernel,
                    stride: spec.stride,
                    dilation: spec.dilation,
                    padding: pad,
                },
                depthwise,
            });
        Ok(Self {
            weight: params.upload(folded.weight),
            bias: folded.bias.map(|b| params.upload_vec(b)),
            options: ConvOptions::new([spec.stride; 2], [pad; 2], [spec.dilation; 2], spec.groups),
            act: spec.act,
            cpu,
        })
    }

    /// The device its weights live on.
    pub fn device(&self) -> burn::tensor::Device {
        self.weight.device()
    }

    /// Output channels.
    pub fn out_channels(&self) -> usize {
        self.weight.dims()[0]
    }

    /// Runs the convolution and activation.
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        if self.cpu.is_some() {
            let device = x.device();
            return self
                .forward_cpu(&HostArray::from_tensor(x), None)
                .into_tensor(&device);
        }
        let y = conv2d(
            x,
            self.weight.clone(),
            self.bias.clone(),
            self.options.clone(),
        );
        self.act.apply(y)
    }

    /// Whether the layer runs on the fused CPU kernels.
    pub(crate) fn on_cpu(&self) -> bool {
        self.cpu.is_some()
    }

    /// The convolution and activation on host memory, plus `residual` (laid out
    /// like the output) when given. Only for layers loaded on the CPU device.
    pub(crate) fn forward_cpu(&self, x: &HostArray<4>, residual: Option<&[f32]>) -> HostArray<4> {
        let c = self
            .cpu
            .as_ref()
            .unwrap_or_else(|| unreachable!("forward_cpu on a layer loaded on another device"));
        let mut ep = Epilogue::rows(&c.bias, self.act);
        if let Some(r) = residual {
            ep = ep.with_residual(r);
        }
        if c.depthwise {
            cpu::depthwise_conv2d(x, &c.weight, c.geometry, &ep)
        } else {
            cpu::conv2d(x, &c.weight, c.out_channels, c.geometry, &ep)
        }
    }
}

/// A linear layer (`y = x W^T + b`), stored transposed for burn.
#[derive(Debug, Clone)]
pub struct Linear {
    weight: Tensor<2>,
    bias: Option<Tensor<1>>,
    cpu: Option<CpuLinear>,
}

/// Host copy of a linear layer's weights (`[out, in]`) for the fused CPU kernels.
#[derive(Debug, Clone)]
struct CpuLinear {
    weight: Vec<f32>,
    bias: Vec<f32>,
    d_out: usize,
}

impl Linear {
    /// Loads `{prefix}.weight` `[out, in]` and `{prefix}.bias` `[out]`.
    pub fn load(params: &mut Params, prefix: &str, d_in: usize, d_out: usize) -> Result<Self> {
        let w = params.take(&format!("{prefix}.weight"), &[d_out, d_in])?;
        let b = params.take(&format!("{prefix}.bias"), &[d_out])?;
        let cpu = cpu::is_cpu(params.device()).then(|| CpuLinear {
            weight: w.data.clone(),
            bias: b.data.clone(),
            d_out,
        });
        let weight: Tensor<2> = params.upload(w);
        Ok(Self {
            weight: weight.transpose(),
            bias: Some(params.upload_vec(b.data)),
            cpu,
        })
    }

    /// Applies the layer to the last dimension.
    pub fn forward<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        if let Some(c) = &self.cpu {
            let device = x.device();
            let x = HostArray::from_tensor(x);
            let mut dims = x.dims;
            let rows = x.data.len() / dims[D - 1].max(1);
            dims[D - 1] = c.d_out;
            let data = self.forward_cpu(&x.data, rows, Activation::Identity, None);
            return HostArray { data, dims }.into_tensor(&device);
        }
        linear(x, self.weight.clone(), self.bias.clone())
    }

    /// `act(x · wᵀ + b) + residual` over `rows` rows of host memory. Only for layers
    /// loaded on the CPU device.
    fn forward_cpu(
        &self,
        x: &[f32],
        rows: usize,
        act: Activation,
        residual: Option<&[f32]>,
    ) -> Vec<f32> {
        let c = self
            .cpu
            .as_ref()
            .unwrap_or_else(|| unreachable!("forward_cpu on a layer loaded on another device"));
        cpu::linear(x, rows, &c.weight, c.d_out, &c.bias, act, residual)
    }
}

/// Layer normalisation over the last dimension.
#[derive(Debug, Clone)]
pub struct LayerNorm {
    gamma: Tensor<1>,
    beta: Tensor<1>,
    eps: f64,
    cpu: Option<(Vec<f32>, Vec<f32>)>,
}

impl LayerNorm {
    /// Loads `{prefix}.weight` and `{prefix}.bias` of width `dim`.
    pub fn load(params: &mut Params, prefix: &str, dim: usize, eps: f64) -> Result<Self> {
        let g = params.take(&format!("{prefix}.weight"), &[dim])?;
        let b = params.take(&format!("{prefix}.bias"), &[dim])?;
        let cpu = cpu::is_cpu(params.device()).then(|| (g.data.clone(), b.data.clone()));
        Ok(Self {
            gamma: params.upload_vec(g.data),
            beta: params.upload_vec(b.data),
            eps,
            cpu,
        })
    }

    /// Normalises the last dimension.
    pub fn forward<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        if self.cpu.is_some() {
            let device = x.device();
            let mut x = HostArray::from_tensor(x);
            self.forward_cpu(&mut x.data);
            return x.into_tensor(&device);
        }
        layer_norm(x, self.gamma.clone(), Some(self.beta.clone()), self.eps)
    }

    /// Normalises rows of host memory in place. Only for layers loaded on the CPU device.
    fn forward_cpu(&self, x: &mut [f32]) {
        let (g, b) = self
            .cpu
            .as_ref()
            .unwrap_or_else(|| unreachable!("forward_cpu on a layer loaded on another device"));
        cpu::layer_norm(x, g.len(), g, b, self.eps as f32);
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
        if self.reduce.on_cpu() {
            let device = x.device();
            return self
                .forward_cpu(HostArray::from_tensor(x))
                .into_tensor(&device);
        }
        let h = match &self.expand {
            Some(e) => e.forward(x.clone()),
            None => x.clone(),
        };
        let y = self.reduce.forward(self.depthwise.forward(h));
        if self.residual { x + y } else { y }
    }

    /// The block on host memory (CPU device only).
    pub(crate) fn forward_cpu(&self, x: HostArray<4>) -> HostArray<4> {
        let hidden = self.expand.as_ref().map(|e| e.forward_cpu(&x, None));
        let dw = self
            .depthwise
            .forward_cpu(hidden.as_ref().unwrap_or(&x), None);
        drop(hidden);
        let residual = self.residual.then_some(&x.data[..]);
        self.reduce.forward_cpu(&dw, residual)
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
        })
    }

    /// Runs the layer on sequences `[batch, tokens, dim]`.
    pub fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        let [b, n, d] = x.dims();
        let hd = d / self.heads;
        let qkv = self
            .qkv
            .forward(self.norm_attn.forward(x.clone()))
            .reshape([b, n, 3, self.heads, hd])
            .permute([2, 0, 3, 1, 4]);
        let part = |i: usize| qkv.clone().narrow(0, i, 1).reshape([b, self.heads, n, hd]);
        let ctx = attention(
            part(0),
            part(1),
            part(2),
            None,
            None,
            AttentionModuleOptions::default(),
        )
        .swap_dims(1, 2)
        .reshape([b, n, d]);
        let x = x + self.out_proj.forward(ctx);
        let h = self.fc1.forward(self.norm_ffn.forward(x.clone()));
        x + self.fc2.forward(silu(h))
    }

    /// The layer on host sequences `[batch, tokens, dim]` (CPU device only).
    fn forward_cpu(&self, x: HostArray<3>) -> HostArray<3> {
        let [b, n, d] = x.dims;
        let rows = b * n;
        let mut h = x.data.clone();
        self.norm_attn.forward_cpu(&mut h);
        let qkv = self.qkv.forward_cpu(&h, rows, Activation::Identity, None);
        let ctx = cpu::attention(&qkv, b, n, d, self.heads);
        drop(qkv);
        let x = self
            .out_proj
            .forward_cpu(&ctx, rows, Activation::Identity, Some(&x.data));
        h.copy_from_slice(&x);
        self.norm_ffn.forward_cpu(&mut h);
        let f = self.fc1.forward_cpu(&h, rows, Activation::Silu, None);
        let data = self
            .fc2
            .forward_cpu(&f, rows, Activation::Identity, Some(&x));
        HostArray {
            data,
            dims: [b, n, d],
        }
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
        if self.fusion.on_cpu() {
            let device = x.device();
            return self
                .forward_cpu(HostArray::from_tensor(x), &device)
                .into_tensor(&device);
        }
        let fm = self.local_proj.forward(self.local_conv.forward(x.clone()));
        let [b, d, h, w] = fm.dims();
        let p = self.patch;
        // Patch grids that do not divide the map are resized to fit, as the reference does.
        let (nh, nw) = (h.div_ceil(p), w.div_ceil(p));
        let resized = nh * p != h || nw * p != w;
        let fm = if resized {
            resize_bilinear(fm, [nh * p, nw * p])
        } else {
            fm
        };
        // [B, D, nh, p, nw, p] -> [B, p, p, nh, nw, D] -> [B*P, N, D]
        let mut seq = fm
            .reshape([b, d, nh, p, nw, p])
            .permute([0, 3, 5, 2, 4, 1])
            .reshape([b * p * p, nh * nw, d]);
        for layer in &self.transformer {
            seq = layer.forward(seq);
        }
        let seq = self.norm.forward(seq);
        let fm = seq
            .reshape([b, p, p, nh, nw, d])
            .permute([0, 5, 3, 1, 4, 2])
            .reshape([b, d, nh * p, nw * p]);
        let fm = if resized {
            resize_bilinear(fm, [h, w])
        } else {
            fm
        };
        let fm = self.proj.forward(fm);
        self.fusion.forward(Tensor::cat(vec![x, fm], 1))
    }

    /// The block on host memory (CPU device only); `device` is used for the rare
    /// resize of maps that the patch grid does not divide.
    pub(crate) fn forward_cpu(
        &self,
        x: HostArray<4>,
        device: &burn::tensor::Device,
    ) -> HostArray<4> {
        let fm = self
            .local_proj
            .forward_cpu(&self.local_conv.forward_cpu(&x, None), None);
        let [_, _, h, w] = fm.dims;
        let p = self.patch;
        let (nh, nw) = (h.div_ceil(p), w.div_ceil(p));
        let resized = nh * p != h || nw * p != w;
        let resize = |m: HostArray<4>, size: [usize; 2]| {
            HostArray::from_tensor(resize_bilinear(m.into_tensor(device), size))
        };
        let fm = if resized {
            resize(fm, [nh * p, nw * p])
        } else {
            fm
        };
        let mut seq = cpu::unfold_patches(&fm, p);
        drop(fm);
        for layer in &self.transformer {
            seq = layer.forward_cpu(seq);
        }
        self.norm.forward_cpu(&mut seq.data);
        let fm = cpu::fold_patches(&seq, p, nh, nw);
        let fm = if resized { resize(fm, [h, w]) } else { fm };
        let fm = self.proj.forward_cpu(&fm, None);
        self.fusion
            .forward_cpu(&cpu::concat_channels(&x, &fm), None)
    }
}

/// Bilinear resize with PyTorch's default `align_corners = false`.
pub fn resize_bilinear(x: Tensor<4>, size: [usize; 2]) -> Tensor<4> {
    interpolate(
        x,
        InterpolateOptions::new(InterpolateMode::Bilinear)
            .with_align_corners(false)
            .with_output_size(size),
    )
}
