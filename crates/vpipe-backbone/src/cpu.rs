//! Fused CPU kernels for the default `flex` backend.
//!
//! Run op by op through burn, MobileViT spends much of its CPU time outside the
//! matrix products: each bias, activation and residual is a separate sweep over
//! memory, and small products run on one thread. On the CPU device the layers
//! instead keep host copies of their weights and run these kernels, which
//!
//! - split every product into tiles spread over [`vpipe_core::parallel`]'s pool (so two threads give
//!   close to twice the speed),
//! - apply bias, activation and residual to each output tile while it is still
//!   in cache (one sweep instead of three),
//! - run depthwise convolutions and attention directly on NCHW / token-major data.
//!
//! The convolutions' and attention's matrix products are the `gemm` crate's, as in
//! burn's own CPU backend; the linear layers' run against weights packed at load
//! ([`crate::panels`]). Other devices use burn's tensor operations (see
//! [`crate::layers`]).

use burn::tensor::{Device, Tensor, TensorData};
use std::mem::MaybeUninit;

use vpipe_core::parallel::{for_each, for_each_chunk_mut};

use crate::activation::{exp_approx, silu_slice, silu_slice_coarse};
#[cfg(target_arch = "x86_64")]
use crate::activation::{exp_avx512_unfused, silu_vector, silu_vector_coarse};
use crate::bf16::{self, Bf16Panels, Bf16Rows};
use crate::int8::{self, I8Panels, I8Rows};
use crate::layers::Activation;
use crate::panels::{self, F32Panels};
use crate::precision::Precision;
use crate::weighted_sum;

/// Products smaller than this many multiply-adds run as one task.
const SERIAL_WORK: usize = 1 << 18;
/// Largest im2col band, in floats, before a convolution is split into more bands
/// than threads: 1 MiB, so that the unfolded band is still in the core's L2 cache
/// when the product packs it (at 1 thread, 2-5 % faster than 16 MiB bands).
const IM2COL_BAND_FLOATS: usize = 256 << 10;

thread_local! {
    /// Each thread's im2col buffer, kept between convolutions.
    static IM2COL_BUFFER: std::cell::Cell<Vec<f32>> = const { std::cell::Cell::new(Vec::new()) };
    /// Each thread's zero-padded depthwise input plane, with the `[h, w, stride,
    /// padding]` it was laid out for.
    static PADDED_BUFFER: std::cell::Cell<(Vec<f32>, [usize; 4])> =
        const { std::cell::Cell::new((Vec::new(), [0; 4])) };
    /// Each thread's attention score buffer, kept between heads and layers.
    static SCORES_BUFFER: std::cell::Cell<Vec<f32>> = const { std::cell::Cell::new(Vec::new()) };
}

/// Whether tensors on `device` are run by these kernels.
pub fn is_cpu(device: &Device) -> bool {
    *device == Device::flex()
}

/// A contiguous, row-major `f32` array in host memory.
#[derive(Debug, Clone)]
pub struct HostArray<const D: usize> {
    /// Elements, row-major.
    pub data: Vec<f32>,
    /// Shape.
    pub dims: [usize; D],
}

impl<const D: usize> HostArray<D> {
    /// Takes a tensor's data; no copy when the tensor is contiguous and unshared.
    pub fn from_tensor(x: Tensor<D>) -> Self {
        let dims = x.dims();
        let data = x
            .into_data()
            .convert::<f32>()
            .try_into_vec::<f32>()
            .unwrap_or_else(|e| unreachable!("converted to f32 above: {e:?}"));
        Self { data, dims }
    }

    /// Hands the data to a tensor on `device` (no copy on the CPU device).
    pub fn into_tensor(self, device: &Device) -> Tensor<D> {
        Tensor::from_data(TensorData::new(self.data, self.dims), device)
    }
}

/// A raw matrix view: element `(r, c)` is at `ptr + r * rs + c * cs`.
#[derive(Clone, Copy)]
pub(crate) struct MatPtr {
    pub(crate) ptr: *const f32,
    pub(crate) rs: isize,
    pub(crate) cs: isize,
}

// SAFETY: the views are only read, and the buffers outlive the parallel sections.
unsafe impl Send for MatPtr {}
unsafe impl Sync for MatPtr {}

impl MatPtr {
    /// The view moved `rows` rows and `cols` columns in.
    ///
    /// # Safety
    /// The new origin must lie inside the viewed buffer.
    pub(crate) unsafe fn at(self, rows: usize, cols: usize) -> *const f32 {
        // SAFETY: the caller keeps the offset inside the buffer.
        unsafe {
            self.ptr
                .offset(rows as isize * self.rs + cols as isize * self.cs)
        }
    }
}

#[derive(Clone, Copy)]
pub(crate) struct OutPtr(pub(crate) *mut f32);
// SAFETY: parallel tasks write disjoint tiles of the output.
unsafe impl Send for OutPtr {}
unsafe impl Sync for OutPtr {}

impl OutPtr {
    /// The element `offset` places in.
    ///
    /// # Safety
    /// The offset must lie inside the output buffer.
    pub(crate) unsafe fn at(self, offset: usize) -> *mut f32 {
        // SAFETY: the caller keeps the offset inside the buffer.
        unsafe { self.0.add(offset) }
    }
}

/// Bias of a product's output.
#[derive(Clone, Copy)]
pub enum Bias<'a> {
    /// No bias.
    None,
    /// One value per output row (convolutions: per output channel).
    Rows(&'a [f32]),
    /// One value per output column (linear layers: per output feature).
    Cols(&'a [f32]),
}

/// What happens to each output value after the product: `act(acc + bias) + residual`.
#[derive(Clone, Copy)]
pub struct Epilogue<'a> {
    /// Bias.
    pub bias: Bias<'a>,
    /// Activation.
    pub act: Activation,
    /// A tensor laid out like the output, added last.
    pub residual: Option<&'a [f32]>,
    /// The model's precision: in a reduced one ([`Precision::is_reduced`]) the SiLU
    /// is computed to about 1e-4 ([`silu_slice_coarse`]) and depthwise taps are fused.
    pub precision: Precision,
}

impl<'a> Epilogue<'a> {
    /// Bias per row and an activation.
    pub fn rows(bias: &'a [f32], act: Activation) -> Self {
        Self {
            bias: Bias::Rows(bias),
            act,
            residual: None,
            precision: Precision::Fp32,
        }
    }

    /// Bias per column and an activation.
    pub fn cols(bias: &'a [f32], act: Activation) -> Self {
        Self {
            bias: Bias::Cols(bias),
            act,
            residual: None,
            precision: Precision::Fp32,
        }
    }

    /// Adds a residual after the activation.
    pub fn with_residual(mut self, residual: &'a [f32]) -> Self {
        self.residual = Some(residual);
        self
    }

    /// For a model in `precision`.
    pub fn with_precision(mut self, precision: Precision) -> Self {
        self.precision = precision;
        self
    }

    /// The bias that output row `r` adds to every column (0 unless the bias is per row).
    fn row_offset(&self, r: usize) -> f32 {
        match self.bias {
            Bias::Rows(b) => b[r],
            Bias::None | Bias::Cols(_) => 0.0,
        }
    }

    /// `row = act(row + offset) + res`, in one pass per step; `res` is the matching
    /// slice of the residual.
    fn apply(&self, row: &mut [f32], offset: f32, res: Option<&[f32]>) {
        match self.act {
            Activation::Identity => add_offset(row, offset, res),
            Activation::Relu => relu_slice(row, offset),
            Activation::Silu if self.precision.is_reduced() => silu_slice_coarse(row, offset),
            Activation::Silu => silu_slice(row, offset),
        }
        if let (Some(_), Activation::Relu | Activation::Silu) = (res, self.act) {
            add_offset(row, 0.0, res);
        }
    }

    /// [`Epilogue::finish`] on rows `r0..r1`, columns `c0..c1` of `c` (row stride `ldc`).
    ///
    /// # Safety
    /// The block must lie inside `c`, be written, and belong to the calling task alone.
    pub(crate) unsafe fn finish_block(
        &self,
        c: OutPtr,
        ldc: usize,
        (r0, r1): (usize, usize),
        (c0, c1): (usize, usize),
    ) {
        let cols = c1 - c0;
        for r in r0..r1 {
            let start = r * ldc + c0;
            // SAFETY: inside the block (caller's contract).
            let row = unsafe { std::slice::from_raw_parts_mut(c.at(start), cols) };
            let res = self.residual.map(|x| &x[start..start + cols]);
            self.finish(row, r, c0, res);
        }
    }

    /// Adds the bias of output row `r`, columns `c0..`, to `row`, then applies
    /// the activation and residual.
    pub(crate) fn finish(&self, row: &mut [f32], r: usize, c0: usize, res: Option<&[f32]>) {
        if let Bias::Cols(b) = self.bias {
            add_offset(row, 0.0, Some(&b[c0..c0 + row.len()]));
        }
        self.apply(row, self.row_offset(r), res);
    }

    /// [`Epilogue::finish`] of the 16 outputs at row `r`, columns `c..c + 16`, in
    /// a register, rounded lane for lane as `finish` rounds them on a whole vector
    /// (its AVX-512 path); the residual, if any, has row stride `ldc`.
    ///
    /// # Safety
    /// AVX-512F; columns `c..c + 16` of row `r` must lie inside the bias and residual.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f")]
    pub(crate) unsafe fn finish_vector(
        &self,
        v: std::arch::x86_64::__m512,
        r: usize,
        c: usize,
        ldc: usize,
    ) -> std::arch::x86_64::__m512 {
        use std::arch::x86_64::*;
        let (add, zero) = (_mm512_add_ps, _mm512_setzero_ps());
        // SAFETY (loads): inside the bias and residual (caller's contract).
        let mut v = match self.bias {
            Bias::Cols(b) => add(add(v, zero), unsafe { _mm512_loadu_ps(b.as_ptr().add(c)) }),
            Bias::None | Bias::Rows(_) => v,
        };
        let offset = self.row_offset(r);
        let res = self
            .residual
            .map(|x| unsafe { _mm512_loadu_ps(x.as_ptr().add(r * ldc + c)) });
        let splat = _mm512_set1_ps(offset);
        match self.act {
            Activation::Identity => match res {
                Some(o) => v = add(add(v, splat), o),
                None if offset != 0.0 => v = add(v, splat),
                None => {}
            },
            Activation::Relu => v = _mm512_max_ps(add(v, splat), zero),
            Activation::Silu if self.precision.is_reduced() => {
                v = silu_vector_coarse(add(v, splat))
            }
            Activation::Silu => v = silu_vector(add(v, splat)),
        }
        if let (Some(o), Activation::Relu | Activation::Silu) = (res, self.act) {
            v = add(add(v, zero), o);
        }
        v
    }
}

/// An output buffer whose every element the kernel writes before reading it.
fn output_buffer(len: usize) -> Vec<MaybeUninit<f32>> {
    let mut v = Vec::with_capacity(len);
    // SAFETY: `MaybeUninit` needs no initialisation.
    unsafe { v.set_len(len) };
    v
}

/// The first `len` elements of a kept scratch buffer, grown when shorter and never
/// shrunk, with whatever they held: for callers that write every element before
/// reading it, so that layers of different sizes do not clear it again and again.
pub(crate) fn reuse<T: Copy + Default>(buf: &mut Vec<T>, len: usize) -> &mut [T] {
    if buf.len() < len {
        buf.resize(len, T::default());
    }
    &mut buf[..len]
}

/// The buffer as floats.
///
/// # Safety
/// Every element must have been written.
unsafe fn assume_init(v: Vec<MaybeUninit<f32>>) -> Vec<f32> {
    let mut v = std::mem::ManuallyDrop::new(v);
    // SAFETY: same allocation, layout-compatible element type, all initialised.
    unsafe { Vec::from_raw_parts(v.as_mut_ptr().cast::<f32>(), v.len(), v.capacity()) }
}

vpipe_simd::simd_fn! {
    /// `row += offset`, plus `other` element by element when given.
    fn add_offset(row: &mut [f32], offset: f32, other: Option<&[f32]>) {
        match other {
            Some(other) => row.iter_mut().zip(other).for_each(|(v, o)| *v = *v + offset + o),
            None if offset != 0.0 => row.iter_mut().for_each(|v| *v += offset),
            None => {}
        }
    }
}

vpipe_simd::simd_fn! {
    fn relu_slice(row: &mut [f32], offset: f32) {
        row.iter_mut().for_each(|v| *v = (*v + offset).max(0.0));
    }
}

/// Splits `len` into about `parts` ranges whose starts are multiples of `align`.
fn split(len: usize, parts: usize, align: usize) -> Vec<(usize, usize)> {
    let step = len.div_ceil(parts.max(1)).div_ceil(align).max(1) * align;
    (0..len)
        .step_by(step)
        .map(|s| (s, (s + step).min(len)))
        .collect()
}

/// `dst[m x n] = scale * a[m x k] · b[k x n]` on one thread (added to `dst`'s
/// contents when `accumulate`), `dst` row-major with row stride `ldd`.
///
/// # Safety
/// All three views must be valid for the sizes and strides given.
unsafe fn product(
    dims: [usize; 3],
    dst: *mut f32,
    ldd: usize,
    a: MatPtr,
    b: MatPtr,
    scale: f32,
    accumulate: bool,
) {
    let [m, n, k] = dims;
    // SAFETY: forwarded from the caller.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst,
            1,
            ldd as isize,
            accumulate,
            a.ptr,
            a.cs,
            a.rs,
            b.ptr,
            b.cs,
            b.rs,
            1.0,
            scale,
            false,
            false,
            false,
            gemm::Parallelism::None,
        );
    }
}

/// `c[r0..r1, c0..c1] = a[r0..r1, :] · b[:, c0..c1]`, then `ep` on that block.
///
/// # Safety
/// `a` must be valid for rows `r0..r1` and `k` columns, `b` for `k` rows and
/// columns `c0..c1`; the block of `c` (row stride `ldc`) must lie inside it and
/// belong to the calling task alone.
#[allow(clippy::too_many_arguments)]
unsafe fn tile_product(
    a: MatPtr,
    b: MatPtr,
    k: usize,
    c: OutPtr,
    ldc: usize,
    (r0, r1): (usize, usize),
    (c0, c1): (usize, usize),
    ep: &Epilogue,
) {
    let cols = c1 - c0;
    // SAFETY: the block lies inside the matrices (caller's contract).
    unsafe {
        product(
            [r1 - r0, cols, k],
            c.at(r0 * ldc + c0),
            ldc,
            MatPtr {
                ptr: a.at(r0, 0),
                ..a
            },
            MatPtr {
                ptr: b.at(0, c0),
                ..b
            },
            1.0,
            false,
        );
    }
    // SAFETY: as above; the product has just written the block.
    unsafe { ep.finish_block(c, ldc, (r0, r1), (c0, c1)) };
}

/// How many parallel tasks an `m x n` product with inner dimension `k` is split
/// into: one when it is small, else one per thread.
fn product_tasks([m, n, k]: [usize; 3]) -> usize {
    if m * n * k < SERIAL_WORK {
        1
    } else {
        vpipe_core::device::cpu_threads()
    }
}

/// Splits an `m x n` product (inner dimension `k`) into tiles, run in parallel as
/// `run(rows, cols)`: along the longer side, with tile starts that are multiples
/// of `align` (`[rows, columns]`), and as one tile when the product is small.
fn for_each_tile(
    [m, n, k]: [usize; 3],
    [row_align, col_align]: [usize; 2],
    run: impl Fn((usize, usize), (usize, usize)) + Sync,
) {
    let tasks = product_tasks([m, n, k]);
    let tiles: Vec<((usize, usize), (usize, usize))> = if n >= m {
        split(n, tasks, col_align)
            .into_iter()
            .map(|cols| ((0, m), cols))
            .collect()
    } else {
        split(m, tasks, row_align)
            .into_iter()
            .map(|rows| (rows, (0, n)))
            .collect()
    };
    if tiles.len() == 1 {
        run(tiles[0].0, tiles[0].1);
    } else {
        for_each(tiles.len(), |i| run(tiles[i].0, tiles[i].1));
    }
}

/// Splits the rows of an `m x n` product (inner dimension `k`) into bands whose
/// starts are multiples of `align`, run in parallel as `run(rows)`; one band when
/// the product is small.
fn for_each_row_band([m, n, k]: [usize; 3], align: usize, run: impl Fn((usize, usize)) + Sync) {
    let bands = split(m, product_tasks([m, n, k]), align);
    if bands.len() == 1 {
        run(bands[0]);
    } else {
        for_each(bands.len(), |i| run(bands[i]));
    }
}

/// `c[m x n] = a · b` followed by `ep`, where `c` is row-major with row stride `ldc`
/// and the residual (if any) is laid out like `c`: in `f32` when both operands are,
/// otherwise in bf16 ([`bf16`]). The output is split into tiles that run in parallel.
///
/// # Safety
/// The operands must be valid for the strides and sizes given, and `c` must hold
/// `(m - 1) * ldc + n` elements.
unsafe fn matmul_raw(
    dims: [usize; 3],
    a: bf16::Left,
    b: bf16::Right,
    c: OutPtr,
    ldc: usize,
    ep: &Epilogue,
) {
    let k = dims[2];
    match (a, b) {
        (bf16::Left::F32(a), bf16::Right::F32(b)) => for_each_tile(dims, [4, 16], |rows, cols| {
            // SAFETY: the tile lies inside the matrices (caller's contract); tiles are disjoint.
            unsafe { tile_product(a, b, k, c, ldc, rows, cols, ep) }
        }),
        _ => for_each_tile(dims, [bf16::row_block(), bf16::NR], |rows, cols| {
            // SAFETY: as above; a packed operand exists only where bf16 is supported.
            unsafe { bf16::tile(a, b, k, c, ldc, rows, cols, ep) }
        }),
    }
}

/// [`matmul_raw`] in int8 ([`int8`]).
///
/// # Safety
/// As for [`matmul_raw`].
unsafe fn matmul_int8(
    dims: [usize; 3],
    a: int8::Left,
    b: int8::Right,
    c: OutPtr,
    ldc: usize,
    ep: &Epilogue,
) {
    let k = dims[2];
    for_each_tile(dims, [int8::MR, int8::NR], |rows, cols| {
        // SAFETY: the tile lies inside the matrices (caller's contract); tiles are
        // disjoint; a packed operand exists only where int8 is supported.
        unsafe { int8::tile(a, b, k, c, ldc, rows, cols, ep) }
    });
}

/// `[rows, cols]` row-major to `[cols, rows]`.
pub fn transpose(x: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    (0..cols)
        .flat_map(|c| (0..rows).map(move |r| x[r * cols + c]))
        .collect()
}

/// A dense convolution's weight matrix, in the form its products read.
#[derive(Debug, Clone)]
pub enum DenseWeight {
    /// `f32`, row-major.
    F32(Vec<f32>),
    /// Rounded to bf16 and packed ([`Precision::Bf16`]).
    Bf16(Bf16Rows),
    /// Quantised to int8 and packed ([`Precision::Int8`]).
    Int8(I8Rows),
}

/// A dense convolution's weight matrix `[c_out, c_in * k * k]` as the left operand
/// of its products.
#[derive(Clone, Copy)]
enum WeightRows<'a> {
    F32(MatPtr),
    Bf16(&'a Bf16Rows),
    Int8(&'a I8Rows),
}

/// A linear layer's weight `[d_in, d_out]`, in the form its products read.
#[derive(Debug, Clone)]
pub enum LinearWeight {
    /// `f32`, in column panels ([`crate::panels`]).
    F32(F32Panels),
    /// Rounded to bf16 and packed ([`Precision::Bf16`]).
    Bf16(Bf16Panels),
    /// Quantised to int8 and packed ([`Precision::Int8`]).
    Int8(I8Panels),
}

/// A linear layer over the rows of `x` `[rows, d_in]`: `act(x · w + b) + residual`,
/// with `w` `[d_in, d_out]` (the transpose of PyTorch's weight), packed when the
/// model is loaded.
pub fn linear(
    x: &[f32],
    rows: usize,
    w: &LinearWeight,
    bias: &[f32],
    act: Activation,
    residual: Option<&[f32]>,
) -> Vec<f32> {
    let d_out = bias.len();
    let (d_in, cols) = match w {
        LinearWeight::F32(p) => (p.rows(), p.cols()),
        LinearWeight::Bf16(p) => (p.rows(), p.cols()),
        LinearWeight::Int8(p) => (p.rows(), p.cols()),
    };
    assert_eq!(cols, d_out, "linear: weight is not [d_in, {d_out}]");
    assert_eq!(x.len(), rows * d_in, "linear: input is not [rows, {d_in}]");
    let mut out = output_buffer(rows * d_out);
    let mut ep = Epilogue::cols(bias, act);
    if let Some(r) = residual {
        ep = ep.with_residual(r);
    }
    match w {
        LinearWeight::F32(_) => {}
        LinearWeight::Bf16(_) => ep = ep.with_precision(Precision::Bf16),
        LinearWeight::Int8(_) => ep = ep.with_precision(Precision::Int8),
    }
    let left = MatPtr {
        ptr: x.as_ptr(),
        rs: d_in as isize,
        cs: 1,
    };
    let c = OutPtr(out.as_mut_ptr().cast());
    let dims = [rows, d_out, d_in];
    match w {
        LinearWeight::F32(p) => for_each_row_band(dims, panels::MR, |rows| {
            // SAFETY: x is [rows, d_in], the panels [d_in, d_out], out [rows, d_out];
            // the bands are disjoint.
            unsafe { panels::tile(left, p, c, d_out, rows, &ep) }
        }),
        // SAFETY: as above.
        LinearWeight::Bf16(p) => unsafe {
            matmul_raw(
                dims,
                bf16::Left::F32(left),
                bf16::Right::Packed(p),
                c,
                d_out,
                &ep,
            );
        },
        // SAFETY: as above.
        LinearWeight::Int8(p) => unsafe {
            matmul_int8(
                dims,
                int8::Left::F32(left),
                int8::Right::Packed(p),
                c,
                d_out,
                &ep,
            );
        },
    }
    // SAFETY: the tiles cover the whole output.
    unsafe { assume_init(out) }
}

/// Geometry of a 2-D convolution with square kernel, stride, dilation and padding.
#[derive(Debug, Clone, Copy)]
pub struct ConvGeometry {
    /// Kernel size.
    pub kernel: usize,
    /// Stride.
    pub stride: usize,
    /// Dilation.
    pub dilation: usize,
    /// Zero padding on each side.
    pub padding: usize,
}

impl ConvGeometry {
    /// Output size along one axis.
    pub fn out_size(&self, size: usize) -> usize {
        (size + 2 * self.padding - self.dilation * (self.kernel - 1) - 1) / self.stride + 1
    }

    /// For kernel tap `k`, the output positions `lo..hi` whose input position
    /// `o * stride + k * dilation - padding` lies inside `0..size`.
    fn valid(&self, k: usize, size: usize, out: usize) -> (usize, usize) {
        let off = (k * self.dilation) as isize - self.padding as isize;
        let s = self.stride as isize;
        // smallest o with o*s + off >= 0
        let lo = if off >= 0 { 0 } else { (-off + s - 1) / s };
        // largest o with o*s + off <= size - 1, plus one
        let last = size as isize - 1 - off;
        let hi = if last < 0 { 0 } else { last / s + 1 };
        let lo = (lo as usize).min(out);
        (lo, (hi as usize).min(out).max(lo))
    }
}

/// A dense convolution (`groups = 1`) of `x` `[n, c_in, h, w]` with `weight`
/// `[c_out, c_in, k, k]` (`[c_out, c_in * k * k]` when packed), followed by `ep`
/// (bias per output channel; residual laid out like the output).
pub fn conv2d(
    x: &HostArray<4>,
    weight: &DenseWeight,
    c_out: usize,
    g: ConvGeometry,
    ep: &Epilogue,
) -> HostArray<4> {
    let kk = x.dims[1] * g.kernel * g.kernel;
    let wmat = match weight {
        DenseWeight::F32(w) => {
            assert_eq!(w.len(), c_out * kk, "conv2d: weight size");
            WeightRows::F32(MatPtr {
                ptr: w.as_ptr(),
                rs: kk as isize,
                cs: 1,
            })
        }
        DenseWeight::Bf16(p) => {
            assert_eq!([p.rows(), p.cols()], [c_out, kk], "conv2d: weight size");
            WeightRows::Bf16(p)
        }
        DenseWeight::Int8(p) => {
            assert_eq!([p.rows(), p.cols()], [c_out, kk], "conv2d: weight size");
            WeightRows::Int8(p)
        }
    };
    // SAFETY: the weight matrix is [c_out, kk], checked above.
    unsafe { conv2d_with(x, wmat, c_out, g, ep) }
}

/// [`conv2d`] with the weight matrix `[c_out, c_in * k * k]` as a product operand.
///
/// # Safety
/// `wmat` must be valid for that shape.
unsafe fn conv2d_with(
    x: &HostArray<4>,
    wmat: WeightRows,
    c_out: usize,
    g: ConvGeometry,
    ep: &Epilogue,
) -> HostArray<4> {
    let [n, c_in, h, w] = x.dims;
    let (oh, ow) = (g.out_size(h), g.out_size(w));
    let plane = oh * ow;
    let kk = c_in * g.kernel * g.kernel;
    let dims = [n, c_out, oh, ow];
    let mut out = output_buffer(n * c_out * plane);
    if g.kernel == 1 && g.stride == 1 && g.padding == 0 {
        for b in 0..n {
            let xb = &x.data[b * c_in * plane..(b + 1) * c_in * plane];
            let ob = OutPtr(out[b * c_out * plane..].as_mut_ptr().cast());
            let ep = Epilogue {
                residual: ep
                    .residual
                    .map(|r| &r[b * c_out * plane..(b + 1) * c_out * plane]),
                ..*ep
            };
            let xm = MatPtr {
                ptr: xb.as_ptr(),
                rs: plane as isize,
                cs: 1,
            };
            let dims = [c_out, plane, c_in];
            // SAFETY: W is [c_out, c_in], x[b] is [c_in, plane], out[b] is [c_out, plane].
            unsafe {
                match wmat {
                    WeightRows::F32(w) => {
                        let (w, xm) = (bf16::Left::F32(w), bf16::Right::F32(xm));
                        matmul_raw(dims, w, xm, ob, plane, &ep);
                    }
                    WeightRows::Bf16(p) => {
                        let (w, xm) = (bf16::Left::Packed(p), bf16::Right::F32(xm));
                        matmul_raw(dims, w, xm, ob, plane, &ep);
                    }
                    WeightRows::Int8(p) => {
                        let (w, xm) = (int8::Left::Packed(p), int8::Right::F32(xm));
                        matmul_int8(dims, w, xm, ob, plane, &ep);
                    }
                }
            }
        }
        // SAFETY: matmul_raw wrote every element of every image.
        let data = unsafe { assume_init(out) };
        return HostArray { data, dims };
    }
    // im2col over bands of output rows: each task unfolds its band and multiplies.
    let threads = vpipe_core::device::cpu_threads();
    let bands = threads
        .max((kk * plane).div_ceil(IM2COL_BAND_FLOATS))
        .min(oh);
    let tasks: Vec<(usize, usize, usize)> = (0..n)
        .flat_map(|b| {
            split(oh, bands, 1)
                .into_iter()
                .map(move |(y0, y1)| (b, y0, y1))
        })
        .collect();
    let optr = OutPtr(out.as_mut_ptr().cast());
    for_each(tasks.len(), |t| {
        let (b, y0, y1) = tasks[t];
        let (p0, cols) = (y0 * ow, (y1 - y0) * ow);
        // Every element of the band's columns is written below (input values, or
        // zeros where the tap falls in the padding), so the per-thread buffer is
        // reused without clearing.
        let mut col_buffer = IM2COL_BUFFER.take();
        let col = reuse(&mut col_buffer, kk * cols);
        let xb = &x.data[b * c_in * h * w..(b + 1) * c_in * h * w];
        for ci in 0..c_in {
            let src = &xb[ci * h * w..(ci + 1) * h * w];
            for ky in 0..g.kernel {
                let (vy0, vy1) = g.valid(ky, h, oh);
                let vy0 = vy0.clamp(y0, y1);
                let vy1 = vy1.clamp(vy0, y1);
                for kx in 0..g.kernel {
                    let (vx0, vx1) = g.valid(kx, w, ow);
                    let rows = &mut col[((ci * g.kernel + ky) * g.kernel + kx) * cols..][..cols];
                    rows[..(vy0 - y0) * ow].fill(0.0);
                    rows[(vy1 - y0) * ow..].fill(0.0);
                    if g.stride == 1 && ow == w {
                        // Output and input rows have the same length: the tap's rows
                        // are one run of the input, shifted by the tap's column offset,
                        // whose values that wrapped around a row end are then zeroed.
                        let block = &mut rows[(vy0 - y0) * ow..(vy1 - y0) * ow];
                        if block.is_empty() {
                            continue;
                        }
                        let start = ((vy0 + ky * g.dilation - g.padding) * w) as isize
                            + (kx * g.dilation) as isize
                            - g.padding as isize;
                        let lo = (-start).clamp(0, block.len() as isize) as usize;
                        let hi = (src.len() as isize - start)
                            .clamp(lo as isize, block.len() as isize)
                            as usize;
                        block[..lo].fill(0.0);
                        block[hi..].fill(0.0);
                        let from = (start + lo as isize) as usize;
                        block[lo..hi].copy_from_slice(&src[from..from + hi - lo]);
                        if vx0 > 0 || vx1 < ow {
                            for row in block.chunks_exact_mut(ow) {
                                row[..vx0.min(ow)].iter_mut().for_each(|v| *v = 0.0);
                                row[vx1.max(vx0).min(ow)..]
                                    .iter_mut()
                                    .for_each(|v| *v = 0.0);
                            }
                        }
                        continue;
                    }
                    for oy in vy0..vy1 {
                        let dst = &mut rows[(oy - y0) * ow..(oy - y0 + 1) * ow];
                        dst[..vx0].fill(0.0);
                        dst[vx1..].fill(0.0);
                        if vx0 >= vx1 {
                            continue;
                        }
                        let ix0 = vx0 * g.stride + kx * g.dilation - g.padding;
                        let iy = oy * g.stride + ky * g.dilation - g.padding;
                        let dst = &mut dst[vx0..vx1];
                        take_every(dst, &src[iy * w + ix0..], g.stride);
                    }
                }
            }
        }
        // SAFETY: W is [c_out, kk], col is [kk, cols], the band is columns p0.. of out[b].
        unsafe {
            let col_mat = MatPtr {
                ptr: col.as_ptr(),
                rs: cols as isize,
                cs: 1,
            };
            // Columns of the band, counted from its first output pixel.
            let band = OutPtr(optr.at(b * c_out * plane + p0));
            let ep = Epilogue {
                residual: ep.residual.map(|r| &r[b * c_out * plane + p0..]),
                ..*ep
            };
            let (rows, cols) = ((0, c_out), (0, cols));
            match wmat {
                WeightRows::F32(wmat) => {
                    tile_product(wmat, col_mat, kk, band, plane, rows, cols, &ep);
                }
                WeightRows::Bf16(p) => {
                    let (wmat, col_mat) = (bf16::Left::Packed(p), bf16::Right::F32(col_mat));
                    bf16::tile(wmat, col_mat, kk, band, plane, rows, cols, &ep);
                }
                WeightRows::Int8(p) => {
                    let (wmat, col_mat) = (int8::Left::Packed(p), int8::Right::F32(col_mat));
                    int8::tile(wmat, col_mat, kk, band, plane, rows, cols, &ep);
                }
            }
        }
        IM2COL_BUFFER.set(col_buffer);
    });
    // SAFETY: the bands cover every output row of every image and channel.
    let data = unsafe { assume_init(out) };
    HostArray { data, dims }
}

/// A depthwise convolution (`groups = channels`) of `x` `[n, c, h, w]` with `w` `[c, 1, k, k]`,
/// followed by `ep` (bias per channel).
pub fn depthwise_conv2d(
    x: &HostArray<4>,
    weight: &[f32],
    g: ConvGeometry,
    ep: &Epilogue,
) -> HostArray<4> {
    let [n, c, h, w] = x.dims;
    let (oh, ow) = (g.out_size(h), g.out_size(w));
    let kk = g.kernel * g.kernel;
    assert_eq!(weight.len(), c * kk, "depthwise conv: weight size");
    assert!(ep.residual.is_none(), "depthwise conv: no residual");
    assert!(
        !matches!(ep.bias, Bias::Cols(_)),
        "depthwise conv: bias per channel"
    );
    let mut out = output_buffer(n * c * oh * ow);
    for_each_chunk_mut(&mut out, oh * ow, |plane_index, dst| {
        let ch = plane_index % c;
        let src = &x.data[plane_index * h * w..(plane_index + 1) * h * w];
        let taps = &weight[ch * kk..(ch + 1) * kk];
        depthwise_plane(src, dst, taps, [h, w, oh, ow], g, ep, ch);
    });
    // SAFETY: `depthwise_plane` writes every output of its plane.
    let data = unsafe { assume_init(out) };
    HostArray {
        data,
        dims: [n, c, oh, ow],
    }
}

/// Writes channel `ch`'s depthwise convolution to `dst`: the taps accumulated onto
/// the channel's bias, then `ep`'s activation.
fn depthwise_plane(
    src: &[f32],
    dst: &mut [MaybeUninit<f32>],
    taps: &[f32],
    [h, w, oh, ow]: [usize; 4],
    g: ConvGeometry,
    ep: &Epilogue,
    ch: usize,
) {
    let bias = ep.row_offset(ch);
    let k = g.kernel;
    let s = g.stride;
    let pad = g.padding;
    // A zero-padded copy of the input, split into `s` phases by column (phase `q`
    // holds padded columns `q, q + s, q + 2s, ...`), so that every tap of every
    // output row reads one contiguous run of `ow` values: no bounds, no remainders.
    let (hp, wp) = (h + 2 * pad, w + 2 * pad);
    let wq = wp.div_ceil(s);
    // Every plane of one geometry writes the same places of the buffer, so the
    // padding stays zero between planes; it is cleared when the geometry changes.
    let (mut buf, key) = PADDED_BUFFER.take();
    let new_key = [h, w, s, pad];
    if key != new_key || buf.len() != s * hp * wq {
        buf.clear();
        buf.resize(s * hp * wq, 0.0);
    }
    for q in 0..s {
        // Padded columns q + j*s that hold input column x = q + j*s - pad.
        let j0 = pad.saturating_sub(q).div_ceil(s);
        for y in 0..h {
            let row = &mut buf[(q * hp + y + pad) * wq..(q * hp + y + pad + 1) * wq];
            let first = q + j0 * s - pad;
            if first >= w {
                continue;
            }
            take_every(&mut row[j0..], &src[y * w + first..(y + 1) * w], s);
        }
    }
    // Where tap (ky, kx) of output row 0 starts in `buf`; output row `oy` reads
    // `s * wq * oy` further on.
    let offsets: Vec<usize> = (0..k * k)
        .map(|t| {
            let xp = (t % k) * g.dilation;
            ((xp % s) * hp + (t / k) * g.dilation) * wq + xp / s
        })
        .collect();
    let row_step = s * wq;
    assert!(
        offsets
            .iter()
            .all(|&o| (oh - 1) * row_step + o + ow <= buf.len()),
        "depthwise conv: taps inside the padded input"
    );
    assert_eq!(dst.len(), oh * ow, "depthwise conv: output plane");
    #[cfg(target_arch = "x86_64")]
    let done = if let (Ok(offsets), Ok(taps), vpipe_simd::Level::Avx512) = (
        <&[usize; 9]>::try_from(&offsets[..]),
        <&[f32; 9]>::try_from(taps),
        vpipe_simd::level(),
    ) {
        // SAFETY: AVX-512F is present (checked by `level`); every read stays in `buf`
        // and every write in `dst` (asserted above).
        unsafe {
            let shape = [ow, row_step];
            depthwise3x3_avx512(&buf, offsets, taps, dst, shape, bias, ep.act, ep.precision);
        }
        true
    } else {
        false
    };
    #[cfg(not(target_arch = "x86_64"))]
    let done = false;
    if !done {
        dst.iter_mut().for_each(|d| {
            d.write(bias);
        });
        // SAFETY: initialised just above.
        let dst = unsafe { &mut *(dst as *mut [MaybeUninit<f32>] as *mut [f32]) };
        accumulate_taps(&buf, &offsets, taps, dst, ow, row_step);
        ep.apply(dst, 0.0, None);
    }
    PADDED_BUFFER.set((buf, new_key));
}

/// `dst[i] = src[i * step]` for as many `i` as both hold: a copy for step 1, a
/// vectorised split for step 2 (`step_by(2)` copies one float at a time), and a
/// plain strided loop otherwise.
fn take_every(dst: &mut [f32], src: &[f32], step: usize) {
    let n = dst.len().min(src.len().div_ceil(step));
    match step {
        1 => dst[..n].copy_from_slice(&src[..n]),
        2 => every_second(&mut dst[..n], src),
        _ => dst[..n]
            .iter_mut()
            .zip(src.iter().step_by(step))
            .for_each(|(d, v)| *d = *v),
    }
}

vpipe_simd::simd_fn! {
    /// `dst[i] = src[2 * i]` for every `i` of `dst` (`src` holds at least
    /// `2 * dst.len() - 1` values).
    fn every_second(dst: &mut [f32], src: &[f32]) {
        let pairs = dst.len().min(src.len() / 2);
        dst[..pairs]
            .iter_mut()
            .zip(src.chunks_exact(2))
            .for_each(|(d, pair)| *d = pair[0]);
        if pairs < dst.len() {
            dst[pairs] = src[2 * pairs];
        }
    }
}

vpipe_simd::simd_fn! {
/// Adds every tap's shifted input row to each output row, one tap at a time.
fn accumulate_taps(
    buf: &[f32],
    offsets: &[usize],
    taps: &[f32],
    dst: &mut [f32],
    ow: usize,
    row_step: usize,
) {
    for (oy, out) in dst.chunks_exact_mut(ow).enumerate() {
        for (&offset, &tap) in offsets.iter().zip(taps) {
            let inp = &buf[oy * row_step + offset..][..ow];
            out.iter_mut().zip(inp).for_each(|(o, i)| *o += tap * i);
        }
    }
}
}

/// [`accumulate_taps`] for a 3x3 kernel with AVX-512, onto `bias` and followed by
/// the activation `act` (as [`Epilogue::apply`] computes it): runs of 64 outputs
/// start from the bias in four registers, take all nine taps and the activation
/// there, and are stored once (rather than loaded and stored per tap, and again
/// for the bias and the activation). Each tap is a multiply then an add, rounded twice
/// like [`accumulate_taps`]: a fused multiply-add is faster but moved the DeepLabv3
/// parity test's logits enough to flip one near-tie mask pixel. Models in
/// [`Precision::Bf16`] take the fused multiply-adds and the coarse SiLU.
///
/// # Safety
/// The processor must have AVX-512F; for every output row `oy` and tap `t`,
/// `oy * row_step + offsets[t] + ow <= buf.len()`, and `dst.len()` is a multiple of
/// `ow`. Every element of `dst` is written.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[allow(clippy::too_many_arguments)]
unsafe fn depthwise3x3_avx512(
    buf: &[f32],
    offsets: &[usize; 9],
    taps: &[f32; 9],
    dst: &mut [MaybeUninit<f32>],
    shape: [usize; 2],
    bias: f32,
    act: Activation,
    precision: Precision,
) {
    // SAFETY: forwarded from the caller.
    unsafe {
        if precision.is_reduced() {
            depthwise3x3::<true>(buf, offsets, taps, dst, shape, bias, act)
        } else {
            depthwise3x3::<false>(buf, offsets, taps, dst, shape, bias, act)
        }
    }
}

/// [`depthwise3x3_avx512`], with fused multiply-adds and the coarse SiLU when `BF16`.
///
/// # Safety
/// As [`depthwise3x3_avx512`].
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn depthwise3x3<const BF16: bool>(
    buf: &[f32],
    offsets: &[usize; 9],
    taps: &[f32; 9],
    dst: &mut [MaybeUninit<f32>],
    [ow, row_step]: [usize; 2],
    bias: f32,
    act: Activation,
) {
    use std::arch::x86_64::*;
    let t = taps.map(|v| _mm512_set1_ps(v));
    let act = |v: __m512| match act {
        Activation::Identity => v,
        Activation::Relu => _mm512_max_ps(v, _mm512_setzero_ps()),
        Activation::Silu if BF16 => silu_vector_coarse(v),
        Activation::Silu => silu_vector(v),
    };
    let tap = |t: __m512, v: __m512, a: __m512| {
        if BF16 {
            _mm512_fmadd_ps(t, v, a)
        } else {
            _mm512_add_ps(_mm512_mul_ps(t, v), a)
        }
    };
    let oh = dst.len() / ow;
    for oy in 0..oh {
        // SAFETY (whole loop): reads stay below `oy * row_step + offsets[t] + ow`,
        // writes below `(oy + 1) * ow`, per the contract; masked lanes are not touched.
        unsafe {
            let out = dst.as_mut_ptr().cast::<f32>().add(oy * ow);
            let inp = buf.as_ptr().add(oy * row_step);
            let mut x = 0;
            while x + 64 <= ow {
                let mut acc = [_mm512_set1_ps(bias); 4];
                for (t_k, &offset) in t.iter().zip(offsets) {
                    let p = inp.add(offset + x);
                    for (j, a) in acc.iter_mut().enumerate() {
                        *a = tap(*t_k, _mm512_loadu_ps(p.add(16 * j)), *a);
                    }
                }
                for (j, a) in acc.iter().enumerate() {
                    _mm512_storeu_ps(out.add(x + 16 * j), act(*a));
                }
                x += 64;
            }
            while x < ow {
                let n = (ow - x).min(16);
                let mask = ((1u32 << n) - 1) as __mmask16;
                let mut acc = _mm512_set1_ps(bias);
                for (t_k, &offset) in t.iter().zip(offsets) {
                    let v = _mm512_maskz_loadu_ps(mask, inp.add(offset + x));
                    acc = tap(*t_k, v, acc);
                }
                _mm512_mask_storeu_ps(out.add(x), mask, act(acc));
                x += 16;
            }
        }
    }
}

/// Layer normalisation over the last dimension (`gamma.len()`) of `x`, into a new array.
pub fn layer_norm(x: &[f32], gamma: &[f32], beta: &[f32], eps: f32) -> Vec<f32> {
    let d = gamma.len();
    let mut out = output_buffer(x.len());
    for_each_chunk_mut(&mut out, d * 64, |i, rows| {
        // SAFETY: every element of the rows is written by `normalise_row` below.
        let rows = unsafe { &mut *(rows as *mut [MaybeUninit<f32>] as *mut [f32]) };
        let src = &x[i * d * 64..][..rows.len()];
        for (dst, row) in rows.chunks_mut(d).zip(src.chunks(d)) {
            normalise_row(row, dst, gamma, beta, eps);
        }
    });
    // SAFETY: every row was written.
    unsafe { assume_init(out) }
}

vpipe_simd::simd_fn! {
    fn normalise_row(row: &[f32], dst: &mut [f32], gamma: &[f32], beta: &[f32], eps: f32) {
        let d = row.len() as f32;
        let mean = sum(row) / d;
        let mut sq = [0.0f32; 16];
        let chunks = row.chunks_exact(16);
        let tail = chunks.remainder();
        for c in chunks {
            for (s, v) in sq.iter_mut().zip(c) {
                *s += (v - mean) * (v - mean);
            }
        }
        let var = (sq.iter().sum::<f32>() + tail.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>()) / d;
        let inv = 1.0 / (var + eps).sqrt();
        dst.iter_mut()
            .zip(row)
            .zip(gamma.iter().zip(beta))
            .for_each(|((o, v), (g, b))| *o = (*v - mean) * inv * g + b);
    }
}

/// Sum of a slice in 16 interleaved lanes (vectorises; float sums otherwise do not).
#[inline(always)]
fn sum(x: &[f32]) -> f32 {
    let mut acc = [0.0f32; 16];
    let chunks = x.chunks_exact(16);
    let tail = chunks.remainder();
    for c in chunks {
        for (a, v) in acc.iter_mut().zip(c) {
            *a += v;
        }
    }
    acc.iter().sum::<f32>() + tail.iter().sum::<f32>()
}

/// Multi-head scaled dot-product attention over `qkv` `[seqs, tokens, 3 * d]`
/// (queries, keys and values side by side, each split into `heads` heads).
/// Returns the context `[seqs, tokens, d]`. In a reduced precision
/// ([`Precision::is_reduced`]), both products of each head run in bf16 (see [`bf16`]).
pub fn attention(
    qkv: &[f32],
    [seqs, tokens, d]: [usize; 3],
    heads: usize,
    precision: Precision,
) -> Vec<f32> {
    let hd = d / heads;
    let scale = 1.0 / (hd as f32).sqrt();
    let mut out = output_buffer(seqs * tokens * d);
    let optr = OutPtr(out.as_mut_ptr().cast());
    let row = 3 * d;
    for_each(seqs * heads, |task| {
        let (s, hh) = (task / heads, task % heads);
        let base = qkv[s * tokens * row..].as_ptr();
        // The products below overwrite every score, so the thread's buffer is
        // reused without clearing.
        let mut scores = SCORES_BUFFER.take();
        // SAFETY: q, k, v are [tokens, hd] views with row stride 3d inside qkv[s];
        // the output view is columns hh*hd.. of out[s], disjoint between tasks.
        unsafe {
            let view = |offset: usize| MatPtr {
                ptr: base.add(offset),
                rs: row as isize,
                cs: 1,
            };
            let (q, k, v) = (view(hh * hd), view(d + hh * hd), view(2 * d + hh * hd));
            let dst = optr.at(s * tokens * d + hh * hd);
            match precision {
                Precision::Fp32 => {
                    let k_t = MatPtr {
                        ptr: k.ptr,
                        rs: 1,
                        cs: row as isize,
                    };
                    let ldp = score_stride(tokens);
                    let scores = reuse(&mut scores, tokens * ldp);
                    let sp = scores.as_mut_ptr();
                    product([tokens, tokens, hd], sp, ldp, q, k_t, scale, false);
                    for r in 0..tokens {
                        softmax(&mut scores[r * ldp..r * ldp + tokens]);
                    }
                    let s_mat = MatPtr {
                        ptr: scores.as_ptr(),
                        rs: ldp as isize,
                        cs: 1,
                    };
                    if weighted_sum::supported(hd) {
                        weighted_sum::weighted_sum(s_mat, v, [tokens, hd], OutPtr(dst), d);
                    } else {
                        product([tokens, hd, tokens], dst, d, s_mat, v, 1.0, false);
                    }
                }
                Precision::Bf16 | Precision::Int8 => {
                    let (qkv, dims) = ([q, k, v], [tokens, hd]);
                    bf16::attention_head(qkv, dims, scale, &mut scores, OutPtr(dst), d);
                }
            }
        }
        SCORES_BUFFER.set(scores);
    });
    // SAFETY: each (sequence, head) task wrote its columns of every token.
    unsafe { assume_init(out) }
}

/// The row stride of a `[tokens, tokens]` score matrix: whole 64-byte lines, and
/// not a multiple of 512 bytes, so that the score rows one weighted sum reads
/// together ([`weighted_sum`]) fall in different cache sets (with 1024 tokens,
/// rows 4 KiB apart made it 10 % slower than `gemm`).
fn score_stride(tokens: usize) -> usize {
    let stride = tokens.next_multiple_of(16);
    if stride.is_multiple_of(128) {
        stride + 16
    } else {
        stride
    }
}

/// Softmax of one row, in place, in `f32` (relative error below 2e-7), with
/// AVX-512 where the processor has it.
pub fn softmax(row: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if vpipe_simd::level() == vpipe_simd::Level::Avx512 {
        // SAFETY: the processor has AVX-512F, checked by `level`.
        unsafe { softmax_avx512(row) };
        return;
    }
    softmax_portable(row);
}

vpipe_simd::simd_fn! {
    /// [`softmax`] in plain code with the vectorised [`exp_approx`].
    fn softmax_portable(row: &mut [f32]) {
        // Maximum, exponentials and their sum in 16 interleaved lanes (the same
        // summation order as `sum`), so that every pass vectorises.
        let mut lanes = [f32::NEG_INFINITY; 16];
        let (chunks, tail) = row.as_chunks::<16>();
        for c in chunks {
            for (m, v) in lanes.iter_mut().zip(c) {
                *m = m.max(*v);
            }
        }
        let max = tail.iter().fold(lanes.into_iter().fold(f32::NEG_INFINITY, f32::max), |m, &v| m.max(v));
        let mut acc = [0.0f32; 16];
        let (chunks, tail) = row.as_chunks_mut::<16>();
        for c in chunks {
            for (a, v) in acc.iter_mut().zip(c) {
                *v = exp_approx(*v - max);
                *a += *v;
            }
        }
        tail.iter_mut().for_each(|v| *v = exp_approx(*v - max));
        let inv = 1.0 / (acc.iter().sum::<f32>() + tail.iter().sum::<f32>());
        row.iter_mut().for_each(|v| *v *= inv);
    }
}

/// [`softmax`] with AVX-512, rounded exactly as [`softmax_portable`]: the same
/// exponentials ([`exp_avx512_unfused`]), summed in the same order (16 lanes, then
/// the lanes in turn, then the tail's values in turn).
///
/// # Safety
/// The processor must have AVX-512F.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn softmax_avx512(row: &mut [f32]) {
    use std::arch::x86_64::*;
    let n = row.len();
    let full = n / 16 * 16;
    let tail = ((1u32 << (n - full)) - 1) as __mmask16;
    let ptr = row.as_mut_ptr();
    // SAFETY (all three passes): full vectors end at `full <= n`; the tail's loads
    // and stores keep only its `n - full` lanes.
    unsafe {
        let mut m = _mm512_set1_ps(f32::NEG_INFINITY);
        for i in (0..full).step_by(16) {
            m = _mm512_max_ps(m, _mm512_loadu_ps(ptr.add(i)));
        }
        m = _mm512_mask_max_ps(m, tail, m, _mm512_maskz_loadu_ps(tail, ptr.add(full)));
        let max = _mm512_set1_ps(_mm512_reduce_max_ps(m));
        let mut acc = _mm512_setzero_ps();
        for i in (0..full).step_by(16) {
            let e = exp_avx512_unfused(_mm512_sub_ps(_mm512_loadu_ps(ptr.add(i)), max));
            _mm512_storeu_ps(ptr.add(i), e);
            acc = _mm512_add_ps(acc, e);
        }
        let e = exp_avx512_unfused(_mm512_sub_ps(
            _mm512_maskz_loadu_ps(tail, ptr.add(full)),
            max,
        ));
        _mm512_mask_storeu_ps(ptr.add(full), tail, e);
        let mut lanes = [0.0f32; 16];
        _mm512_storeu_ps(lanes.as_mut_ptr(), acc);
        let tail_sum: f32 = std::slice::from_raw_parts(ptr.add(full), n - full)
            .iter()
            .sum();
        let inv = _mm512_set1_ps(1.0 / (lanes.iter().sum::<f32>() + tail_sum));
        for i in (0..full).step_by(16) {
            _mm512_storeu_ps(ptr.add(i), _mm512_mul_ps(_mm512_loadu_ps(ptr.add(i)), inv));
        }
        let v = _mm512_maskz_loadu_ps(tail, ptr.add(full));
        _mm512_mask_storeu_ps(ptr.add(full), tail, _mm512_mul_ps(v, inv));
    }
}

/// A grouped convolution of `x` `[n, c_in, h, w]` with `w` `[c_out, c_in / groups, k, k]`:
/// each group through [`conv2d`] on its slice of the channels, followed by `ep`
/// (bias per output channel, no residual).
pub fn grouped_conv2d(
    x: &HostArray<4>,
    weight: &[f32],
    c_out: usize,
    groups: usize,
    g: ConvGeometry,
    ep: &Epilogue,
) -> HostArray<4> {
    let [n, c_in, h, w] = x.dims;
    let (cig, cog) = (c_in / groups, c_out / groups);
    assert!(ep.residual.is_none(), "grouped conv: no residual");
    let plane = h * w;
    let w_len = cog * cig * g.kernel * g.kernel;
    let parts: Vec<HostArray<4>> = (0..groups)
        .map(|gi| {
            let mut data = Vec::with_capacity(n * cig * plane);
            for b in 0..n {
                let start = (b * c_in + gi * cig) * plane;
                data.extend_from_slice(&x.data[start..start + cig * plane]);
            }
            let xg = HostArray {
                data,
                dims: [n, cig, h, w],
            };
            let ep = Epilogue {
                bias: match ep.bias {
                    Bias::Rows(b) => Bias::Rows(&b[gi * cog..(gi + 1) * cog]),
                    other => other,
                },
                ..*ep
            };
            let wmat = WeightRows::F32(MatPtr {
                ptr: weight[gi * w_len..(gi + 1) * w_len].as_ptr(),
                rs: (w_len / cog) as isize,
                cs: 1,
            });
            // SAFETY: the group's weights are [cog, cig * k * k].
            unsafe { conv2d_with(&xg, wmat, cog, g, &ep) }
        })
        .collect();
    let [_, _, oh, ow] = parts[0].dims;
    let out_plane = cog * oh * ow;
    let mut data = Vec::with_capacity(n * c_out * oh * ow);
    for b in 0..n {
        for part in &parts {
            data.extend_from_slice(&part.data[b * out_plane..(b + 1) * out_plane]);
        }
    }
    HostArray {
        data,
        dims: [n, c_out, oh, ow],
    }
}

/// Unfolds `x` `[n, d, nh * p, nw * p]` into patch sequences `[n * p * p, nh * nw, d]`
/// (ml-cvnets' order: one sequence per pixel position inside the patches).
pub fn unfold_patches(x: &HostArray<4>, p: usize) -> HostArray<3> {
    let [n, d, h, w] = x.dims;
    let (nh, nw) = (h / p, w / p);
    let dims = [n * p * p, nh * nw, d];
    let mut out = output_buffer(dims.iter().product());
    for_each_chunk_mut(&mut out, nh * nw * d, |seq, dst| {
        let (b, py, px) = (seq / (p * p), (seq / p) % p, seq % p);
        for c in 0..d {
            let src = &x.data[(b * d + c) * h * w..];
            for iy in 0..nh {
                let srow = &src[(iy * p + py) * w + px..];
                for ix in 0..nw {
                    dst[(iy * nw + ix) * d + c].write(srow[ix * p]);
                }
            }
        }
    });
    // SAFETY: every (token, channel) of every sequence was written.
    let data = unsafe { assume_init(out) };
    HostArray { data, dims }
}

/// The inverse of [`unfold_patches`]: `[n * p * p, nh * nw, d]` back to
/// `[n, d, nh * p, nw * p]`.
pub fn fold_patches(x: &HostArray<3>, p: usize, nh: usize, nw: usize) -> HostArray<4> {
    let [seqs, _, d] = x.dims;
    let n = seqs / (p * p);
    let (h, w) = (nh * p, nw * p);
    let dims = [n, d, h, w];
    let mut out = output_buffer(dims.iter().product());
    for_each_chunk_mut(&mut out, h * w, |plane, dst| {
        let (b, c) = (plane / d, plane % d);
        for (y, row) in dst.chunks_exact_mut(w).enumerate() {
            let (iy, py) = (y / p, y % p);
            for px in 0..p {
                let seq = (b * p + py) * p + px;
                let src = &x.data[(seq * nh * nw + iy * nw) * d + c..];
                for (ix, out) in row.iter_mut().skip(px).step_by(p).enumerate() {
                    out.write(src[ix * d]);
                }
            }
        }
    });
    // SAFETY: every pixel of every plane was written.
    let data = unsafe { assume_init(out) };
    HostArray { data, dims }
}

/// Concatenates two `[n, _, h, w]` arrays along the channels.
pub fn concat_channels(a: &HostArray<4>, b: &HostArray<4>) -> HostArray<4> {
    let [n, ca, h, w] = a.dims;
    let cb = b.dims[1];
    let plane = h * w;
    let mut data = Vec::with_capacity(n * (ca + cb) * plane);
    for i in 0..n {
        data.extend_from_slice(&a.data[i * ca * plane..(i + 1) * ca * plane]);
        data.extend_from_slice(&b.data[i * cb * plane..(i + 1) * cb * plane]);
    }
    HostArray {
        data,
        dims: [n, ca + cb, h, w],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Direct convolution, for checking the fast paths.
    fn conv_reference(
        x: &HostArray<4>,
        w: &[f32],
        c_out: usize,
        groups: usize,
        g: ConvGeometry,
    ) -> HostArray<4> {
        let [n, c_in, h, wd] = x.dims;
        let (oh, ow) = (g.out_size(h), g.out_size(wd));
        let cpg = c_in / groups;
        let opg = c_out / groups;
        let mut out = HostArray {
            data: vec![0.0; n * c_out * oh * ow],
            dims: [n, c_out, oh, ow],
        };
        for b in 0..n {
            for co in 0..c_out {
                let grp = co / opg;
                for oy in 0..oh {
                    for ox in 0..ow {
                        let mut acc = 0.0f64;
                        for ci in 0..cpg {
                            for ky in 0..g.kernel {
                                for kx in 0..g.kernel {
                                    let iy = (oy * g.stride + ky * g.dilation) as isize
                                        - g.padding as isize;
                                    let ix = (ox * g.stride + kx * g.dilation) as isize
                                        - g.padding as isize;
                                    if iy < 0 || ix < 0 || iy >= h as isize || ix >= wd as isize {
                                        continue;
                                    }
                                    let xv = x.data[((b * c_in + grp * cpg + ci) * h
                                        + iy as usize)
                                        * wd
                                        + ix as usize];
                                    let wv = w[((co * cpg + ci) * g.kernel + ky) * g.kernel + kx];
                                    acc += xv as f64 * wv as f64;
                                }
                            }
                        }
                        out.data[((b * c_out + co) * oh + oy) * ow + ox] = acc as f32;
                    }
                }
            }
        }
        out
    }

    fn pseudo_random(len: usize, seed: u32) -> Vec<f32> {
        let mut s = seed.wrapping_mul(2_654_435_761).wrapping_add(1);
        (0..len)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 17;
                s ^= s << 5;
                (s as f32 / u32::MAX as f32) * 2.0 - 1.0
            })
            .collect()
    }

    fn close(a: &[f32], b: &[f32], tol: f32) {
        assert_eq!(a.len(), b.len());
        for (i, (x, y)) in a.iter().zip(b).enumerate() {
            assert!((x - y).abs() <= tol, "element {i}: {x} vs {y}");
        }
    }

    #[test]
    fn convolutions_match_direct_reference() {
        let geoms = [
            (1, 1, 1, 0),
            (3, 1, 1, 1),
            (3, 2, 1, 1),
            (3, 1, 2, 2),
            (3, 1, 6, 6),
            (3, 2, 1, 0),
        ];
        for (case, &(kernel, stride, dilation, padding)) in geoms.iter().enumerate() {
            let g = ConvGeometry {
                kernel,
                stride,
                dilation,
                padding,
            };
            let x = HostArray {
                data: pseudo_random(2 * 5 * 13 * 11, case as u32),
                dims: [2, 5, 13, 11],
            };
            let w = pseudo_random(7 * 5 * kernel * kernel, 100 + case as u32);
            let bias = pseudo_random(7, 200 + case as u32);
            let want = conv_reference(&x, &w, 7, 1, g);
            let w32 = DenseWeight::F32(w.clone());
            let got = conv2d(&x, &w32, 7, g, &Epilogue::rows(&bias, Activation::Identity));
            let want_b: Vec<f32> = want
                .data
                .iter()
                .enumerate()
                .map(|(i, v)| v + bias[(i / (want.dims[2] * want.dims[3])) % 7])
                .collect();
            assert_eq!(got.dims, want.dims);
            close(&got.data, &want_b, 1e-5);

            let wd = pseudo_random(5 * kernel * kernel, 300 + case as u32);
            let want = conv_reference(&x, &wd, 5, 5, g);
            let zero = [0.0f32; 5];
            let got = depthwise_conv2d(&x, &wd, g, &Epilogue::rows(&zero, Activation::Identity));
            assert_eq!(got.dims, want.dims);
            close(&got.data, &want.data, 1e-5);
            // The activations applied inside the kernel match the separate passes (to
            // rounding: a plane's last values, short of a vector, take the vector
            // formula there and the scalar one in a pass).
            let bias = pseudo_random(5, 700 + case as u32);
            let plain = depthwise_conv2d(&x, &wd, g, &Epilogue::rows(&bias, Activation::Identity));
            for act in [Activation::Silu, Activation::Relu] {
                let fused = depthwise_conv2d(&x, &wd, g, &Epilogue::rows(&bias, act));
                let mut separate = plain.data.clone();
                Epilogue::rows(&bias, act).apply(&mut separate, 0.0, None);
                close(&fused.data, &separate, 1e-6);
            }

            // 10 -> 15 channels in 5 groups of 2 -> 3.
            let x10 = HostArray {
                data: pseudo_random(2 * 10 * 13 * 11, 400 + case as u32),
                dims: [2, 10, 13, 11],
            };
            let wg = pseudo_random(15 * 2 * kernel * kernel, 500 + case as u32);
            let bg = pseudo_random(15, 600 + case as u32);
            let want = conv_reference(&x10, &wg, 15, 5, g);
            let got = grouped_conv2d(
                &x10,
                &wg,
                15,
                5,
                g,
                &Epilogue::rows(&bg, Activation::Identity),
            );
            let plane = want.dims[2] * want.dims[3];
            let want_b: Vec<f32> = (want.data.iter().enumerate())
                .map(|(i, v)| v + bg[(i / plane) % 15])
                .collect();
            assert_eq!(got.dims, want.dims);
            close(&got.data, &want_b, 1e-5);
        }
    }

    #[test]
    fn softmax_matches_f64_on_every_path() {
        for len in [1, 7, 16, 17, 100, 400] {
            let row: Vec<f32> = pseudo_random(len, len as u32)
                .iter()
                .map(|v| v * 30.0)
                .collect();
            let max = row.iter().fold(f64::NEG_INFINITY, |m, &v| m.max(v as f64));
            let total: f64 = row.iter().map(|&v| (v as f64 - max).exp()).sum();
            let mut fast = row.clone();
            softmax(&mut fast);
            let mut portable = row.clone();
            softmax_portable(&mut portable);
            assert_eq!(fast, portable, "the paths round alike");
            for (i, &v) in row.iter().enumerate() {
                let want = (v as f64 - max).exp() / total;
                for got in [fast[i], portable[i]] {
                    let err = (got as f64 - want).abs();
                    // The f32 difference from the maximum rounds by up to 2e-6 here.
                    assert!(
                        err <= 4e-6 * want + 1e-30,
                        "len {len}, {i}: {got} vs {want}"
                    );
                }
            }
        }
    }

    /// How many values of `got` differ from `want` in any bit.
    fn bits_differ(got: &[f32], want: &[f32]) -> usize {
        assert_eq!(got.len(), want.len());
        got.iter()
            .zip(want)
            .filter(|(g, w)| g.to_bits() != w.to_bits())
            .count()
    }

    /// Attention with the weighted sums of [`weighted_sum`] gives the outputs of
    /// `gemm`'s products to the bit: head sizes of one to four vectors, partial
    /// blocks of tokens, and more tokens than one block of `gemm`'s inner dimension.
    #[test]
    fn attention_matches_gemm_to_the_bit() {
        for (case, &(seqs, tokens, d, heads)) in [
            (1, 400, 64, 4),
            (2, 70, 80, 4),
            (1, 1100, 96, 4),
            (1, 33, 144, 4),
            (1, 16, 240, 4),
            (1, 50, 48, 1),
        ]
        .iter()
        .enumerate()
        {
            let qkv = pseudo_random(seqs * tokens * 3 * d, 40 + case as u32);
            let got = attention(&qkv, [seqs, tokens, d], heads, Precision::Fp32);
            let hd = d / heads;
            let scale = 1.0 / (hd as f32).sqrt();
            let mut want = vec![0.0f32; seqs * tokens * d];
            let mut scores = vec![0.0f32; tokens * tokens];
            for s in 0..seqs {
                for h in 0..heads {
                    let base = qkv[s * tokens * 3 * d..].as_ptr();
                    // SAFETY: [tokens, hd] views with row stride 3d inside qkv[s];
                    // the output view is columns h*hd.. of want[s].
                    unsafe {
                        let view = |offset: usize, rs: isize, cs: isize| MatPtr {
                            ptr: base.add(offset),
                            rs,
                            cs,
                        };
                        let row = 3 * d as isize;
                        let q = view(h * hd, row, 1);
                        let k_t = view(d + h * hd, 1, row);
                        let v = view(2 * d + h * hd, row, 1);
                        let sp = scores.as_mut_ptr();
                        product([tokens, tokens, hd], sp, tokens, q, k_t, scale, false);
                        scores.chunks_mut(tokens).for_each(softmax);
                        let p = MatPtr {
                            ptr: scores.as_ptr(),
                            rs: tokens as isize,
                            cs: 1,
                        };
                        let dst = want.as_mut_ptr().add(s * tokens * d + h * hd);
                        product([tokens, hd, tokens], dst, d, p, v, 1.0, false);
                    }
                }
            }
            let differ = bits_differ(&got, &want);
            assert_eq!(differ, 0, "{tokens} tokens, head {hd}: {differ} differ");
        }
    }

    /// The linear layers' panel kernel gives `gemm`'s outputs to the bit (inner
    /// dimensions up to 512, which `gemm` sums in one block), with every epilogue,
    /// partial row blocks, panels and vectors, and split tiles.
    #[test]
    fn panel_products_match_gemm_to_the_bit() {
        let shapes = [
            (37, 20, 50),
            (64, 144, 432),
            (100, 96, 40),
            (9, 480, 130),
            (2, 64, 17),
            (50, 64, 64),
            (33, 80, 160),
        ];
        for (case, &(rows, d_in, d_out)) in shapes.iter().enumerate() {
            let seed = 10 * case as u32;
            let x = pseudo_random(rows * d_in, seed);
            let wt = pseudo_random(d_in * d_out, seed + 1);
            let b = pseudo_random(d_out, seed + 2);
            let res = pseudo_random(rows * d_out, seed + 3);
            let panels = LinearWeight::F32(F32Panels::new(&wt, d_in, d_out));
            for (act, residual) in [
                (Activation::Identity, None),
                (Activation::Identity, Some(&res[..])),
                (Activation::Silu, None),
                (Activation::Silu, Some(&res[..])),
                (Activation::Relu, Some(&res[..])),
            ] {
                let got = linear(&x, rows, &panels, &b, act, residual);
                let mut ep = Epilogue::cols(&b, act);
                if let Some(r) = residual {
                    ep = ep.with_residual(r);
                }
                let mut want = vec![0.0f32; rows * d_out];
                // SAFETY: x is [rows, d_in], wt [d_in, d_out], want [rows, d_out].
                unsafe {
                    matmul_raw(
                        [rows, d_out, d_in],
                        bf16::Left::F32(MatPtr {
                            ptr: x.as_ptr(),
                            rs: d_in as isize,
                            cs: 1,
                        }),
                        bf16::Right::F32(MatPtr {
                            ptr: wt.as_ptr(),
                            rs: d_out as isize,
                            cs: 1,
                        }),
                        OutPtr(want.as_mut_ptr()),
                        d_out,
                        &ep,
                    );
                }
                let differ = bits_differ(&got, &want);
                assert_eq!(differ, 0, "{rows}x{d_in}x{d_out} {act:?}: {differ} differ");
            }
        }
    }

    #[test]
    fn epilogue_and_linear() {
        let x = pseudo_random(37 * 20, 1);
        let w = pseudo_random(50 * 20, 2);
        let b = pseudo_random(50, 3);
        let res = pseudo_random(37 * 50, 4);
        let got = linear(
            &x,
            37,
            &LinearWeight::F32(F32Panels::new(&transpose(&w, 50, 20), 20, 50)),
            &b,
            Activation::Silu,
            Some(&res),
        );
        for r in 0..37 {
            for o in 0..50 {
                let mut acc = b[o] as f64;
                for i in 0..20 {
                    acc += x[r * 20 + i] as f64 * w[o * 20 + i] as f64;
                }
                let want = acc / (1.0 + (-acc).exp()) + res[r * 50 + o] as f64;
                let g = got[r * 50 + o] as f64;
                assert!((g - want).abs() < 1e-5, "{g} vs {want}");
            }
        }
    }

    /// `x` rounded to bf16 (to nearest, ties to even), as the bf16 products round.
    fn to_bf16(x: &[f32]) -> Vec<f32> {
        x.iter()
            .map(|v| {
                let b = v.to_bits();
                f32::from_bits((b + 0x7fff + ((b >> 16) & 1)) & 0xffff_0000)
            })
            .collect()
    }

    /// Convolutions `(c_in, c_out, kernel, stride, h, w)` for the reduced-precision
    /// products: odd inner sizes, row blocks and panels with remainders, one and
    /// several tiles, im2col bands and 1x1 products, zero padding.
    const PRODUCT_CASES: [(usize, usize, usize, usize, usize, usize); 4] = [
        (5, 7, 3, 1, 13, 11),
        (5, 30, 3, 2, 13, 11),
        (33, 70, 1, 1, 40, 50),
        (16, 40, 3, 1, 64, 64),
    ];

    /// The geometry of a [`PRODUCT_CASES`] convolution: "same" padding, no dilation.
    fn case_geometry(kernel: usize, stride: usize) -> ConvGeometry {
        ConvGeometry {
            kernel,
            stride,
            dilation: 1,
            padding: kernel / 2,
        }
    }

    #[test]
    fn bf16_products_match_f32_on_rounded_inputs() {
        if !bf16::supported() {
            eprintln!("skipped: this processor has no AVX512_BF16");
            return;
        }
        for (case, &(c_in, c_out, kernel, stride, h, w)) in PRODUCT_CASES.iter().enumerate() {
            let g = case_geometry(kernel, stride);
            let x = HostArray {
                data: to_bf16(&pseudo_random(2 * c_in * h * w, case as u32)),
                dims: [2, c_in, h, w],
            };
            let wt = to_bf16(&pseudo_random(
                c_out * c_in * kernel * kernel,
                50 + case as u32,
            ));
            let bias = pseudo_random(c_out, 60 + case as u32);
            let ep = Epilogue::rows(&bias, Activation::Silu);
            let want = conv2d(&x, &DenseWeight::F32(wt.clone()), c_out, g, &ep);
            let packed = DenseWeight::Bf16(Bf16Rows::new(&wt, c_out, c_in * kernel * kernel));
            let got = conv2d(&x, &packed, c_out, g, &ep);
            assert_eq!(got.dims, want.dims);
            close(&got.data, &want.data, 2e-5);
        }
        let (rows, d_in, d_out) = (300, 21, 70);
        let x = to_bf16(&pseudo_random(rows * d_in, 7));
        let wt = to_bf16(&pseudo_random(d_in * d_out, 8));
        let b = pseudo_random(d_out, 9);
        let res = pseudo_random(rows * d_out, 10);
        let run = |w: &LinearWeight| linear(&x, rows, w, &b, Activation::Relu, Some(&res));
        let want = run(&LinearWeight::F32(F32Panels::new(&wt, d_in, d_out)));
        let got = run(&LinearWeight::Bf16(Bf16Panels::new(&wt, d_in, d_out)));
        close(&got, &want, 2e-5);
    }

    /// `x` quantised as the int8 products quantise one row or column: the integers
    /// and the scale.
    fn quantise(x: &[f32]) -> (Vec<i32>, f32) {
        let m = x.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        let inv = if m > 0.0 { 127.0 / m } else { 0.0 };
        let q = x
            .iter()
            .map(|v| (v * inv).round_ties_even() as i32)
            .collect();
        (q, m * (1.0 / 127.0))
    }

    /// `a · b` (`[m, k]` by `[k, n]`, row-major) as the int8 products compute it:
    /// each row of `a` and column of `b` quantised, the integer sums exact, then
    /// scaled by the column's and the row's scale, in that order.
    fn int8_reference(a: &[f32], b: &[f32], [m, n, k]: [usize; 3]) -> Vec<f32> {
        let rows: Vec<_> = a.chunks_exact(k).map(quantise).collect();
        let cols: Vec<_> = (0..n)
            .map(|c| quantise(&(0..k).map(|i| b[i * n + c]).collect::<Vec<_>>()))
            .collect();
        let mut out = Vec::with_capacity(m * n);
        for (qa, sa) in &rows {
            for (qb, sb) in &cols {
                let dot: i32 = qa.iter().zip(qb).map(|(x, y)| x * y).sum();
                out.push(dot as f32 * sb * sa);
            }
        }
        out
    }

    #[test]
    fn int8_products_match_the_quantised_reference_to_the_bit() {
        if !int8::supported() {
            eprintln!("skipped: this processor has no AVX512_VNNI");
            return;
        }
        // Inner sizes not multiples of 4 among them.
        for (case, &(c_in, c_out, kernel, stride, h, w)) in PRODUCT_CASES.iter().enumerate() {
            let g = case_geometry(kernel, stride);
            let (n, kk) = (2, c_in * kernel * kernel);
            let x = HostArray {
                data: pseudo_random(n * c_in * h * w, case as u32),
                dims: [n, c_in, h, w],
            };
            let wt = pseudo_random(c_out * kk, 50 + case as u32);
            let zeros = vec![0.0; c_out];
            let ep = Epilogue::rows(&zeros, Activation::Identity);
            let packed = DenseWeight::Int8(I8Rows::new(&wt, c_out, kk));
            let got = conv2d(&x, &packed, c_out, g, &ep);
            let (oh, ow) = (g.out_size(h), g.out_size(w));
            for b in 0..n {
                // The image's im2col matrix [kk, oh * ow], then the reference product.
                let mut col = vec![0.0; kk * oh * ow];
                for (t, row) in col.chunks_exact_mut(oh * ow).enumerate() {
                    let (ci, ky, kx) = (t / (kernel * kernel), t / kernel % kernel, t % kernel);
                    for (p, v) in row.iter_mut().enumerate() {
                        let iy = (p / ow * stride + ky) as isize - g.padding as isize;
                        let ix = (p % ow * stride + kx) as isize - g.padding as isize;
                        if (0..h as isize).contains(&iy) && (0..w as isize).contains(&ix) {
                            *v = x.data[((b * c_in + ci) * h + iy as usize) * w + ix as usize];
                        }
                    }
                }
                let want = int8_reference(&wt, &col, [c_out, oh * ow, kk]);
                let got = &got.data[b * c_out * oh * ow..(b + 1) * c_out * oh * ow];
                let differ = bits_differ(got, &want);
                assert_eq!(differ, 0, "case {case}, image {b}: {differ} differ");
            }
        }
        let (rows, d_in, d_out) = (300, 21, 70);
        let x = pseudo_random(rows * d_in, 7);
        let wt = pseudo_random(d_in * d_out, 8);
        let zeros = vec![0.0; d_out];
        let w = LinearWeight::Int8(I8Panels::new(&wt, d_in, d_out));
        let got = linear(&x, rows, &w, &zeros, Activation::Identity, None);
        let differ = bits_differ(&got, &int8_reference(&x, &wt, [rows, d_out, d_in]));
        assert_eq!(differ, 0, "linear: {differ} differ");
        // The epilogue (bias, SiLU, residual) is `Epilogue::finish` on the rows of sums.
        let (bias, res) = (pseudo_random(d_out, 9), pseudo_random(rows * d_out, 10));
        let with = linear(&x, rows, &w, &bias, Activation::Silu, Some(&res));
        let ep = Epilogue::cols(&bias, Activation::Silu)
            .with_residual(&res)
            .with_precision(Precision::Int8);
        let mut want = got;
        for (r, row) in want.chunks_exact_mut(d_out).enumerate() {
            ep.finish(row, r, 0, Some(&res[r * d_out..(r + 1) * d_out]));
        }
        let differ = bits_differ(&with, &want);
        assert_eq!(differ, 0, "linear with its epilogue: {differ} differ");
    }

    #[test]
    fn int8_products_are_within_one_percent_of_f32() {
        if !int8::supported() {
            eprintln!("skipped: this processor has no AVX512_VNNI");
            return;
        }
        let (rows, d_in, d_out) = (64, 256, 96);
        let x = pseudo_random(rows * d_in, 11);
        let wt = pseudo_random(d_in * d_out, 12);
        let b = pseudo_random(d_out, 13);
        let run = |w: &LinearWeight| linear(&x, rows, w, &b, Activation::Silu, None);
        let want = run(&LinearWeight::F32(F32Panels::new(&wt, d_in, d_out)));
        let got = run(&LinearWeight::Int8(I8Panels::new(&wt, d_in, d_out)));
        let norm = |v: &[f32]| v.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
        let diff: Vec<f32> = got.iter().zip(&want).map(|(g, w)| g - w).collect();
        let rel = norm(&diff) / norm(&want);
        assert!(rel < 0.01, "relative error {rel}");
    }

    /// Where AMX runs the bf16 products, the bf16 tests once more in a process with
    /// AMX turned off, so that the AVX512_BF16 kernel is tested on such processors too.
    #[test]
    fn amx_off_runs_the_bf16_tests_on_avx512() {
        if !crate::amx::available() {
            eprintln!("skipped: the bf16 tests run without AMX in this process already");
            return;
        }
        let exe = std::env::current_exe().expect("the test binary's path");
        let out = std::process::Command::new(exe)
            .env(crate::amx::AMX_ENV, "off")
            .args(["cpu::tests::bf16_", "--test-threads", "1"])
            .output()
            .expect("the test binary reruns");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && stdout.contains("test result: ok. 2 passed"),
            "{stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    #[test]
    fn bf16_attention_matches_f64() {
        if !bf16::supported() {
            eprintln!("skipped: this processor has no AVX512_BF16");
            return;
        }
        // Token counts and head sizes that leave partial row blocks and panels.
        for (case, &(seqs, tokens, d, heads)) in [(2, 50, 40, 2), (1, 70, 72, 4)].iter().enumerate()
        {
            let qkv = to_bf16(&pseudo_random(seqs * tokens * 3 * d, 20 + case as u32));
            let got = attention(&qkv, [seqs, tokens, d], heads, Precision::Bf16);
            let hd = d / heads;
            let at = |s: usize, t: usize, part: usize, h: usize, j: usize| {
                f64::from(qkv[(s * tokens + t) * 3 * d + part * d + h * hd + j])
            };
            for s in 0..seqs {
                for h in 0..heads {
                    for t in 0..tokens {
                        let logits: Vec<f64> = (0..tokens)
                            .map(|u| {
                                (0..hd)
                                    .map(|j| at(s, t, 0, h, j) * at(s, u, 1, h, j))
                                    .sum::<f64>()
                                    / (hd as f64).sqrt()
                            })
                            .collect();
                        let max = logits.iter().copied().fold(f64::MIN, f64::max);
                        let e: Vec<f64> = logits.iter().map(|l| (l - max).exp()).collect();
                        let total: f64 = e.iter().sum();
                        for j in 0..hd {
                            let want: f64 =
                                (0..tokens).map(|u| e[u] / total * at(s, u, 2, h, j)).sum();
                            let g = f64::from(got[(s * tokens + t) * d + h * hd + j]);
                            assert!((g - want).abs() < 4e-3, "{case}: {g} vs {want}");
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn patches_round_trip_and_attention_rows_sum() {
        let x = HostArray {
            data: pseudo_random(2 * 3 * 8 * 6, 9),
            dims: [2, 3, 8, 6],
        };
        let seq = unfold_patches(&x, 2);
        assert_eq!(seq.dims, [8, 12, 3]);
        // sequence (b=1, py=1, px=0), token (iy=2, ix=1), channel 2 = x[1, 2, 5, 2]
        let s = (2 + 1) * 2;
        assert_eq!(
            seq.data[(s * 12 + 2 * 3 + 1) * 3 + 2],
            x.data[((3 + 2) * 8 + 5) * 6 + 2]
        );
        let back = fold_patches(&seq, 2, 4, 3);
        assert_eq!(back.data, x.data);

        // With equal keys, attention averages the values.
        let (seqs, tokens, d, heads) = (2, 5, 4, 2);
        let mut qkv = pseudo_random(seqs * tokens * 3 * d, 11);
        for s in 0..seqs {
            for t in 0..tokens {
                for j in 0..d {
                    qkv[(s * tokens + t) * 3 * d + d + j] = 0.5;
                }
            }
        }
        let ctx = attention(&qkv, [seqs, tokens, d], heads, Precision::Fp32);
        for s in 0..seqs {
            for j in 0..d {
                let mean: f32 = (0..tokens)
                    .map(|t| qkv[(s * tokens + t) * 3 * d + 2 * d + j])
                    .sum::<f32>()
                    / tokens as f32;
                for t in 0..tokens {
                    assert!((ctx[(s * tokens + t) * d + j] - mean).abs() < 1e-5);
                }
            }
        }
    }
}
