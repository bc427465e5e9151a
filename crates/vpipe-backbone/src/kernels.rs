//! The one interface below the layers: which kernels run a model's operations, and
//! the intermediate tensors they pass between them.
//!
//! Every layer's forward pass is written once (in [`crate::layers`]) against the
//! operations here. Each operation has two implementations:
//!
//! - [`Kernels::Fused`]: vpipe's host kernels ([`crate::cpu`]), which fuse bias,
//!   activation and residual into the matrix products. CPU (`flex`) only; the
//!   default there.
//! - [`Kernels::Generic`]: burn's tensor ops, on any device. Every GPU backend takes
//!   this path; on the CPU it can be chosen to test that path without a GPU
//!   (the parity tests run both).
//!
//! A layer stores its weights once, in the form its kernels use.

use std::borrow::Cow;
use std::fmt;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};

use burn::tensor::module::{attention, interpolate};
use burn::tensor::ops::{AttentionModuleOptions, InterpolateMode, InterpolateOptions};
use burn::tensor::{Device, Tensor};

use crate::cpu::{self, HostArray};
use crate::precision::Precision;

/// Which implementation runs a model's operations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kernels {
    /// vpipe's fused host kernels (CPU only).
    Fused,
    /// burn's generic tensor ops (any device).
    Generic,
}

/// Whether models loaded on the CPU from now on use burn's generic ops.
static GENERIC_ON_CPU: AtomicBool = AtomicBool::new(false);

/// Chooses the kernels of models loaded on the CPU from now on, for the whole
/// process (like the thread count): the fused ones (the default), or burn's generic
/// ops, to run or measure on the CPU the path GPU backends take.
pub fn set_cpu_kernels(kernels: Kernels) {
    GENERIC_ON_CPU.store(kernels == Kernels::Generic, Ordering::Relaxed);
}

impl Kernels {
    /// The kernels a model on `device` uses unless told otherwise: on the CPU the
    /// ones chosen with [`set_cpu_kernels`] (the fused ones by default), burn's ops
    /// elsewhere.
    pub fn for_device(device: &Device) -> Self {
        if cpu::is_cpu(device) && !GENERIC_ON_CPU.load(Ordering::Relaxed) {
            Kernels::Fused
        } else {
            Kernels::Generic
        }
    }
}

impl fmt::Display for Kernels {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Kernels::Fused => "fused",
            Kernels::Generic => "generic",
        })
    }
}

impl FromStr for Kernels {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "fused" => Ok(Kernels::Fused),
            "generic" => Ok(Kernels::Generic),
            _ => Err(format!(
                "unknown kernels '{s}' (expected 'fused' or 'generic')"
            )),
        }
    }
}

/// An intermediate tensor of a forward pass, in the form its kernels work on.
#[derive(Debug, Clone)]
#[allow(
    clippy::large_enum_variant,
    reason = "a few values per layer, moved rather than stored; boxing would allocate for each"
)]
pub enum Act<const D: usize> {
    /// Host memory, for the fused kernels.
    Host(HostArray<D>),
    /// A burn tensor, for burn's ops.
    Tensor(Tensor<D>),
}

impl<const D: usize> Act<D> {
    /// Wraps `x` in the form `kernels` work on (no copy on the CPU device).
    pub fn from_tensor(x: Tensor<D>, kernels: Kernels) -> Self {
        match kernels {
            Kernels::Fused => Act::Host(HostArray::from_tensor(x)),
            Kernels::Generic => Act::Tensor(x),
        }
    }

    /// The tensor on `device` (no copy when it already is one, or on the CPU device).
    pub fn into_tensor(self, device: &Device) -> Tensor<D> {
        match self {
            Act::Host(h) => h.into_tensor(device),
            Act::Tensor(t) => t,
        }
    }

    /// The data in host memory (no copy when it is there already, or on the CPU
    /// device).
    pub fn into_host(self) -> HostArray<D> {
        match self {
            Act::Host(h) => h,
            Act::Tensor(t) => HostArray::from_tensor(t),
        }
    }

    /// The shape.
    pub fn dims(&self) -> [usize; D] {
        match self {
            Act::Host(h) => h.dims,
            Act::Tensor(t) => t.dims(),
        }
    }

    /// The data in host memory, for the fused kernels.
    pub(crate) fn host(&self) -> Cow<'_, HostArray<D>> {
        match self {
            Act::Host(h) => Cow::Borrowed(h),
            Act::Tensor(t) => Cow::Owned(HostArray::from_tensor(t.clone())),
        }
    }

    /// The data as a tensor on `device`, for burn's ops.
    pub(crate) fn tensor(&self, device: &Device) -> Tensor<D> {
        match self {
            Act::Host(h) => h.clone().into_tensor(device),
            Act::Tensor(t) => t.clone(),
        }
    }
}

/// Multi-head self-attention over fused projections `qkv` `[seqs, tokens, 3 * d]`
/// (queries, keys, values, each split into `heads` heads); returns `[seqs, tokens, d]`.
/// `precision` is that of the fused kernels' products (burn's ops run fp32).
pub fn attention_heads(qkv: &Act<3>, heads: usize, precision: Precision) -> Act<3> {
    let [b, n, d3] = qkv.dims();
    let d = d3 / 3;
    match qkv {
        Act::Host(h) => Act::Host(HostArray {
            data: cpu::attention(&h.data, [b, n, d], heads, precision),
            dims: [b, n, d],
        }),
        Act::Tensor(t) => {
            let hd = d / heads;
            let qkv = t
                .clone()
                .reshape([b, n, 3, heads, hd])
                .permute([2, 0, 3, 1, 4]);
            let part = |i: usize| qkv.clone().narrow(0, i, 1).reshape([b, heads, n, hd]);
            let ctx = attention(
                part(0),
                part(1),
                part(2),
                None,
                None,
                AttentionModuleOptions::default(),
            );
            Act::Tensor(ctx.swap_dims(1, 2).reshape([b, n, d]))
        }
    }
}

/// Unfolds `x` `[n, d, nh * p, nw * p]` into patch sequences `[n * p * p, nh * nw, d]`
/// (ml-cvnets' order: one sequence per pixel position inside the patches).
pub fn unfold_patches(x: &Act<4>, p: usize) -> Act<3> {
    match x {
        Act::Host(h) => Act::Host(cpu::unfold_patches(h, p)),
        Act::Tensor(t) => {
            let [b, d, h, w] = t.dims();
            let (nh, nw) = (h / p, w / p);
            // [B, D, nh, p, nw, p] -> [B, p, p, nh, nw, D] -> [B*P, N, D]
            Act::Tensor(
                t.clone()
                    .reshape([b, d, nh, p, nw, p])
                    .permute([0, 3, 5, 2, 4, 1])
                    .reshape([b * p * p, nh * nw, d]),
            )
        }
    }
}

/// The inverse of [`unfold_patches`]: `[n * p * p, nh * nw, d]` back to
/// `[n, d, nh * p, nw * p]`.
pub fn fold_patches(x: &Act<3>, p: usize, nh: usize, nw: usize) -> Act<4> {
    match x {
        Act::Host(h) => Act::Host(cpu::fold_patches(h, p, nh, nw)),
        Act::Tensor(t) => {
            let [seqs, _, d] = t.dims();
            let b = seqs / (p * p);
            Act::Tensor(
                t.clone()
                    .reshape([b, p, p, nh, nw, d])
                    .permute([0, 5, 3, 1, 4, 2])
                    .reshape([b, d, nh * p, nw * p]),
            )
        }
    }
}

/// Concatenates two `[n, _, h, w]` maps along the channels.
pub fn concat_channels(a: &Act<4>, b: &Act<4>, device: &Device) -> Act<4> {
    match a {
        Act::Host(ha) => Act::Host(cpu::concat_channels(ha, &b.host())),
        Act::Tensor(ta) => Act::Tensor(Tensor::cat(vec![ta.clone(), b.tensor(device)], 1)),
    }
}

/// Bilinear resize with PyTorch's default `align_corners = false`. Both kernels use
/// burn's op (maps that need it are rare: only patch grids that do not divide them).
pub fn resize_bilinear(x: &Act<4>, size: [usize; 2], device: &Device) -> Act<4> {
    let y = interpolate(
        x.tensor(device),
        InterpolateOptions::new(InterpolateMode::Bilinear)
            .with_align_corners(false)
            .with_output_size(size),
    );
    match x {
        Act::Host(_) => Act::Host(HostArray::from_tensor(y)),
        Act::Tensor(_) => Act::Tensor(y),
    }
}
