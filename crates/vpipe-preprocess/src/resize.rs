//! The reference image resizes for interleaved 8-bit images (row-major, 3
//! channels, stride = `width * 3`): bit-exact reimplementations of Pillow's,
//! PyTorch's and OpenCV's bilinear resizes (and of the first two's other filters).
//!
//! * [`ResizeKernel::Pillow`] reproduces Pillow's `Image.resize((w, h), resample)`
//!   with default arguments (no `box`, no `reducing_gap`) on an `"RGB"` image:
//!   `libImaging/Resample.c` (two-pass separable convolution with 22-bit
//!   fixed-point weights and a uint8 intermediate) for `BILINEAR` / `BICUBIC`,
//!   and `ImagingScaleAffine` (`libImaging/Geometry.c`) for `NEAREST`.
//!   The pass order follows Pillow 13.0 (see `pillow_vertical_first`).
//! * [`ResizeKernel::TorchAntialias`] reproduces
//!   `torch.nn.functional.interpolate(x, size=(h, w), mode=..., antialias=True,
//!   align_corners=False)` on a CPU `uint8` NCHW tensor, i.e. the uint8
//!   antialiased path of `aten/src/ATen/native/cpu/UpSampleKernel.cpp`
//!   (`upsample_avx_bilinear_bicubic_uint8` and its generic fallback): the same
//!   filter weights as Pillow computed in `f64`, converted to `i16` with a
//!   per-axis `weights_precision`, horizontal pass then vertical pass with a
//!   uint8 intermediate.
//! * [`ResizeKernel::OpenCv`] reproduces `cv2.resize(img, dsize, interpolation=cv2.INTER_LINEAR)`
//!   as ml-cvnets v0.1 calls it. `INTER_LINEAR` ([`Filter::Bilinear`]) is
//!   reimplemented in Rust (`opencv_linear`: OpenCV 4.x's 8-bit fixed-point
//!   `resizeGeneric_` path, 11-bit weights, `i32` horizontal sums, a vertical pass
//!   with truncating shifts), compared byte for byte with the system OpenCV's
//!   `cv::resize` by `tests/opencv_linear.rs`. OpenCV's other interpolations are
//!   not reproduced (no preset uses them).
//!
//! The inner loops are plain safe Rust compiled for AVX-512, AVX2 and the
//! baseline target and picked at run time (`vpipe_simd::simd_fn!`), except the
//! two passes on processors with AVX-512 VBMI and VNNI, which use intrinsics
//! (module `vnni`); tests check them against the portable passes.

use std::cell::Cell;
use std::ops::Range;
use std::rc::Rc;

/// Interpolation filter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Filter {
    /// Nearest neighbour.
    ///
    /// With [`ResizeKernel::Pillow`] this is `Image.Resampling.NEAREST`.
    /// With [`ResizeKernel::TorchAntialias`] antialiasing does not apply (torch
    /// rejects `antialias=True` for nearest modes), so this reproduces
    /// `torch.nn.functional.interpolate(x, size=(h, w), mode="nearest")`
    /// (the legacy `floor(dst_index * (in / out))` rule computed in `f32`).
    Nearest,
    /// Triangle filter, support 1 (scaled by the downscale factor). OpenCV:
    /// `INTER_LINEAR` (not antialiased).
    Bilinear,
    /// Keys cubic filter with `a = -0.5`, support 2 (scaled by the downscale
    /// factor).
    Bicubic,
}

/// Which reference library's exact uint8 arithmetic to reproduce.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ResizeKernel {
    /// Pillow's `Image.resize` (`libImaging/Resample.c`, 22-bit fixed point).
    Pillow,
    /// torch's `F.interpolate(..., antialias=True)` on uint8 CPU tensors
    /// (`i16` weights with a computed precision).
    TorchAntialias,
    /// OpenCV's `cv::resize` with `INTER_LINEAR` (11-bit fixed point for 8-bit
    /// images), reimplemented for [`Filter::Bilinear`]; the other filters are not
    /// (no preset uses them): they give no image, an error in [`crate::Preprocess`].
    OpenCv,
}

/// Number of interleaved channels handled by this module.
const CHANNELS: usize = 3;

/// Pillow's `PRECISION_BITS` (`32 - 8 - 2`).
const PILLOW_PRECISION_BITS: u32 = 22;

/// Resize an interleaved RGB8 image. Returns the new buffer (`out_w * out_h * 3` bytes).
///
/// `src` holds `h` rows of `w` RGB pixels (`w * 3` bytes per row). Only the
/// first `w * h * 3` bytes are read; trailing bytes are ignored.
///
/// Returns an empty `Vec` (and never panics) when any of `w`, `h`, `out_w`,
/// `out_h` is zero, when `src` is shorter than `w * h * 3`, when a buffer size
/// overflows `usize`, or when a working buffer cannot be allocated.
///
/// When the output size equals the input size, every reference returns an
/// unmodified copy, and so does this function (for every filter and kernel).
///
/// For `Filter::Bilinear` / `Filter::Bicubic` the two reimplementations use the same
/// `f64` filter weights and differ in two ways: the fixed-point conversion
/// (Pillow: 22 fractional bits in `i32`; torch: `i16` weights whose number of
/// fractional bits is the largest value, at most 22, that keeps
/// `round(2 * max_weight * 2^bits)` below `2^15`) and the pass order (torch
/// always filters horizontally first; Pillow 13 filters vertically first when
/// the height shrinks by more than twice as many pixels as the width). For
/// `Filter::Nearest`, see the documentation of [`Filter::Nearest`].
///
/// Torch note: for an NCHW input and a 1x1 output, torch 2.x on AVX2/AVX512
/// CPUs raises an internal assert instead of returning; this function returns
/// what torch returns for the same data as a `channels_last` tensor (and what
/// its non-AVX fallback returns).
#[must_use]
pub fn resize_rgb8(
    src: &[u8],
    w: usize,
    h: usize,
    out_w: usize,
    out_h: usize,
    filter: Filter,
    kernel: ResizeKernel,
) -> Vec<u8> {
    if w == 0 || h == 0 || out_w == 0 || out_h == 0 {
        return Vec::new();
    }
    let (Some(src_len), Some(dst_len)) = (image_len(w, h), image_len(out_w, out_h)) else {
        return Vec::new();
    };
    let Some(src) = src.get(..src_len) else {
        return Vec::new();
    };
    if w == out_w && h == out_h {
        return src.to_vec();
    }
    let result = match (filter, kernel) {
        (Filter::Nearest, ResizeKernel::Pillow) => nearest_pillow(src, w, h, out_w, out_h),
        (Filter::Nearest, ResizeKernel::TorchAntialias) => nearest_torch(src, w, h, out_w, out_h),
        (Filter::Bilinear, ResizeKernel::OpenCv) => opencv_linear(src, w, h, out_w, out_h),
        // Only OpenCV's INTER_LINEAR is reimplemented: no preset uses the others.
        (_, ResizeKernel::OpenCv) => None,
        (Filter::Bilinear | Filter::Bicubic, _) => {
            resample_separable(src, w, h, out_w, out_h, filter, kernel)
        }
    };
    match result {
        Some(out) if out.len() == dst_len => out,
        _ => Vec::new(),
    }
}

// ---------------------------------------------------------------------------
// OpenCV INTER_LINEAR (8-bit)
// ---------------------------------------------------------------------------

/// OpenCV's `INTER_RESIZE_COEF_SCALE`: 8-bit linear weights have 11 fractional bits.
const OPENCV_COEF_SCALE: f32 = 2048.0;

/// One output sample of OpenCV's 8-bit `INTER_LINEAR` along one axis: the two
/// source indices (already clamped to the image) and their 11-bit weights.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct LinearTap {
    /// Source index of the first sample.
    first: usize,
    /// Source index of the second sample.
    second: usize,
    /// Weight of the first sample.
    w0: i32,
    /// Weight of the second sample.
    w1: i32,
}

/// The taps of one axis resized from `in_size` to `out_size` samples, as
/// `cv::hal::resize` computes them for `CV_8U` `INTER_LINEAR`
/// (`imgproc/src/resize.cpp`):
///
/// * `scale = 1 / (out_size / in_size)` in `f64` (`cv::resize` passes
///   `inv_scale = (double)dsize / ssize`, `hal::resize` inverts it);
/// * `f = (float)((d + 0.5) * scale - 0.5)`, `s = cvFloor(f)`, `f -= s` in `f32`;
/// * weights `saturate_cast<short>((1.f - f) * 2048)` and
///   `saturate_cast<short>(f * 2048)`, rounded half to even (`cvRound`);
/// * horizontally (`clamp_fraction`), a position left of the first sample or at or
///   right of the last one becomes that sample with weights `(2048, 0)`;
///   vertically the fraction is kept and only the row indices are clamped
///   (`clip(sy + k, 0, ssize.height)` in `resizeGeneric_Invoker`), so the two
///   weights of an edge row read the same row.
///
/// `None` when the table cannot be allocated.
fn opencv_linear_taps(
    in_size: usize,
    out_size: usize,
    clamp_fraction: bool,
) -> Option<Vec<LinearTap>> {
    let scale = 1.0 / (out_size as f64 / in_size as f64);
    let last = i64::try_from(in_size).ok()? - 1;
    let mut taps = Vec::new();
    taps.try_reserve_exact(out_size).ok()?;
    let weight = |v: f32| (v * OPENCV_COEF_SCALE).round_ties_even() as i32;
    for d in 0..out_size {
        let f = ((d as f64 + 0.5) * scale - 0.5) as f32;
        let floor = f.floor();
        let (mut s, mut frac) = (floor as i64, f - floor);
        if clamp_fraction {
            if s < 0 {
                (s, frac) = (0, 0.0);
            }
            if s >= last {
                (s, frac) = (last, 0.0);
            }
        }
        let clamp = |i: i64| i.clamp(0, last) as usize;
        taps.push(LinearTap {
            first: clamp(s),
            second: clamp(s + 1),
            w0: weight(1.0 - frac),
            w1: weight(frac),
        });
    }
    Some(taps)
}

/// A horizontal [`LinearTap`] rewritten to read a pixel and the next one:
/// `w0 * p[x] + w1 * p[x + 1]` with `x` at byte `offset`.
///
/// Only the taps clamped to the last pixel read one pixel twice (`w1 == 0`); they
/// become `0 * p[last - 1] + w0 * p[last]`, the same integer sum. A one-pixel-wide
/// image has no pair to read and is widened first ([`opencv_linear`]).
#[derive(Debug, Clone, Copy)]
struct PairTap {
    /// Byte offset of the first pixel in its row.
    offset: usize,
    /// Weight of the pixel at `offset`.
    w0: i32,
    /// Weight of the next pixel.
    w1: i32,
}

impl PairTap {
    /// The pair taps of `taps` (from [`opencv_linear_taps`] with
    /// `clamp_fraction`) on rows of `width >= 2` pixels.
    fn from_taps(taps: &[LinearTap], width: usize) -> Vec<PairTap> {
        debug_assert!(width >= 2);
        taps.iter()
            .map(|t| {
                let (first, w0, w1) = match t.first.checked_sub(1) {
                    Some(before) if t.second == t.first => (before, 0, t.w0),
                    _ => (t.first, t.w0, t.w1),
                };
                PairTap {
                    offset: first * CHANNELS,
                    w0,
                    w1,
                }
            })
            .collect()
    }
}

/// `cv::resize(src, dst, Size(out_w, out_h), 0, 0, INTER_LINEAR)` of a 3-channel
/// 8-bit image, reimplemented bit for bit (a test compares it with the `opencv`
/// crate's `cv::resize` on random sizes and contents).
///
/// OpenCV 4.x runs `resizeGeneric_` with `HResizeLinear` and the `uchar`
/// specialisation of `VResizeLinear` (its SIMD `VResizeLinearVec_32s8u` computes the
/// same integers): a horizontal pass `h = a0 * p0 + a1 * p1` in `i32` on every
/// source row an output row reads, then per output row
/// `((b0 * (h0 >> 4)) >> 16) + ((b1 * (h1 >> 4)) >> 16) + 2) >> 2`. An exact 2x
/// downscale of both axes goes to `INTER_AREA`'s `(a + b + c + d + 2) >> 2`
/// instead, which this arithmetic reproduces (weights 1024, 1024), and equal sizes
/// are copied (`resize_rgb8` copies them first).
///
/// `None` when a size exceeds OpenCV's `int` range (OpenCV refuses those) or a
/// buffer cannot be allocated.
fn opencv_linear(src: &[u8], w: usize, h: usize, out_w: usize, out_h: usize) -> Option<Vec<u8>> {
    for v in [w, h, out_w, out_h] {
        i32::try_from(v).ok()?;
    }
    let columns = opencv_linear_taps(w, out_w, true)?;
    let rows = opencv_linear_taps(h, out_h, false)?;
    // A one-pixel-wide image is read as two equal columns (every tap of it is
    // `2048 * p`, on either copy), so that every tap reads a pixel pair.
    let widened;
    let (src, in_stride) = if w == 1 {
        let mut wide = try_zeroed::<u8>(h.checked_mul(2 * CHANNELS)?)?;
        for (pair, px) in wide
            .chunks_exact_mut(2 * CHANNELS)
            .zip(src.chunks_exact(CHANNELS))
        {
            pair[..CHANNELS].copy_from_slice(px);
            pair[CHANNELS..].copy_from_slice(px);
        }
        widened = wide;
        (&widened[..], 2 * CHANNELS)
    } else {
        (src, w.checked_mul(CHANNELS)?)
    };
    let columns = PairTap::from_taps(&columns, in_stride / CHANNELS);
    let out_stride = out_w.checked_mul(CHANNELS)?;
    let mut out = try_zeroed::<u8>(out_h.checked_mul(out_stride)?)?;
    // The horizontal sums of the two source rows the current output row reads,
    // and which rows they are (`usize::MAX`: none yet); moving down one row
    // reuses the second as the next first. One spare element each for the pixels
    // computed on 4 lanes (`opencv_wide_pixels`).
    let mut sums = [
        try_zeroed::<i32>(out_stride + 1)?,
        try_zeroed::<i32>(out_stride + 1)?,
    ];
    let mut held = [usize::MAX; 2];
    let source_row = |i: usize| &src[i * in_stride..(i + 1) * in_stride];
    for (tap, out_row) in rows.iter().zip(out.chunks_exact_mut(out_stride)) {
        if held[0] != tap.first && held[1] == tap.first {
            sums.swap(0, 1);
            held.swap(0, 1);
        }
        let need_first = held[0] != tap.first;
        let need_second = tap.second != tap.first && held[1] != tap.second;
        let [s0, s1] = &mut sums;
        match (need_first, need_second) {
            (true, true) => opencv_horizontal_two(
                source_row(tap.first),
                source_row(tap.second),
                &columns,
                s0,
                s1,
            ),
            (true, false) => opencv_horizontal_one(source_row(tap.first), &columns, s0),
            (false, true) => opencv_horizontal_one(source_row(tap.second), &columns, s1),
            (false, false) => {}
        }
        held = [tap.first, if need_second { tap.second } else { held[1] }];
        let second = if tap.second == tap.first {
            &sums[0]
        } else {
            &sums[1]
        };
        opencv_vertical_row(
            &sums[0][..out_stride],
            &second[..out_stride],
            tap.w0,
            tap.w1,
            out_row,
        );
    }
    Some(out)
}

/// Bytes read from a [`PairTap`]'s offset to compute its pixel on 4 lanes: the
/// pair and the 2 bytes after it.
const PAIR4: usize = 2 * CHANNELS + 2;

/// How many leading pixels of `taps` can be computed on 4 lanes, on rows of `len`
/// bytes into `n` pixels of sums: the 4 lanes `w0 * p[c] + w1 * p[c + 3]`,
/// `c < 4`, read [`PAIR4`] bytes and write the next pixel's first sum, which that
/// pixel overwrites; so all but the last pixel, while the bytes are in the row.
fn opencv_wide_pixels(taps: &[PairTap], len: usize, n: usize) -> usize {
    taps.iter()
        .take(n.saturating_sub(1))
        .take_while(|t| t.offset + PAIR4 <= len)
        .count()
}

/// The 4 lanes `w0 * p[c] + w1 * p[c + 3]`, `c < 4`, of the [`PAIR4`] bytes `p`,
/// written whole into the 4 sums `o` (so that they compile to vector operations).
#[inline(always)]
fn opencv_pixel4(p: &[u8], tap: &PairTap, o: &mut [i32]) {
    let p: &[u8; PAIR4] = p
        .try_into()
        .unwrap_or_else(|_| unreachable!("{PAIR4} bytes"));
    let o: &mut [i32; CHANNELS + 1] = o.try_into().unwrap_or_else(|_| unreachable!("4 sums"));
    let first: [i32; CHANNELS + 1] = std::array::from_fn(|c| i32::from(p[c]));
    let second: [i32; CHANNELS + 1] = std::array::from_fn(|c| i32::from(p[c + CHANNELS]));
    *o = std::array::from_fn(|c| first[c] * tap.w0 + second[c] * tap.w1);
}

vpipe_simd::simd_fn! {
    /// OpenCV's `HResizeLinear` on one 3-channel row: `out[x] = w0 * p0 + w1 * p1`
    /// per output pixel and channel (exact in `i32`: each weight is at most 2048).
    /// `out` holds one spare element (see [`opencv_wide_pixels`]).
    fn opencv_horizontal_one(row: &[u8], taps: &[PairTap], out: &mut [i32]) {
        let wide = opencv_wide_pixels(taps, row.len(), out.len() / CHANNELS);
        for (x, tap) in taps[..wide].iter().enumerate() {
            opencv_pixel4(
                &row[tap.offset..tap.offset + PAIR4],
                tap,
                &mut out[x * CHANNELS..x * CHANNELS + CHANNELS + 1],
            );
        }
        let (out, _) = out.as_chunks_mut::<CHANNELS>();
        for (tap, o) in taps.iter().zip(out).skip(wide) {
            let p = &row[tap.offset..tap.offset + 2 * CHANNELS];
            for c in 0..CHANNELS {
                o[c] = i32::from(p[c]) * tap.w0 + i32::from(p[c + CHANNELS]) * tap.w1;
            }
        }
    }
}

vpipe_simd::simd_fn! {
    /// [`opencv_horizontal_one`] on two rows at once (the two rows of a downscaled
    /// output row), which share the loads of the taps.
    fn opencv_horizontal_two(a: &[u8], b: &[u8], taps: &[PairTap], out_a: &mut [i32], out_b: &mut [i32]) {
        let n = out_a.len().min(out_b.len()) / CHANNELS;
        let wide = opencv_wide_pixels(taps, a.len().min(b.len()), n);
        for (x, tap) in taps[..wide].iter().enumerate() {
            let (bytes, sums) = (tap.offset..tap.offset + PAIR4, x * CHANNELS..x * CHANNELS + CHANNELS + 1);
            opencv_pixel4(&a[bytes.clone()], tap, &mut out_a[sums.clone()]);
            opencv_pixel4(&b[bytes], tap, &mut out_b[sums]);
        }
        let (out_a, _) = out_a.as_chunks_mut::<CHANNELS>();
        let (out_b, _) = out_b.as_chunks_mut::<CHANNELS>();
        for ((tap, oa), ob) in taps.iter().zip(out_a).zip(out_b).skip(wide) {
            let (p, q) = (&a[tap.offset..tap.offset + 2 * CHANNELS], &b[tap.offset..tap.offset + 2 * CHANNELS]);
            for c in 0..CHANNELS {
                oa[c] = i32::from(p[c]) * tap.w0 + i32::from(p[c + CHANNELS]) * tap.w1;
                ob[c] = i32::from(q[c]) * tap.w0 + i32::from(q[c + CHANNELS]) * tap.w1;
            }
        }
    }
}

vpipe_simd::simd_fn! {
    /// OpenCV's `VResizeLinear<uchar, ...>` on one output row:
    /// `((b0 * (s0 >> 4)) >> 16) + ((b1 * (s1 >> 4)) >> 16) + 2) >> 2`, which its
    /// scalar loop and `VResizeLinearVec_32s8u` (16-bit `mulhi`, saturating adds and
    /// packs that never saturate on these ranges) both compute.
    fn opencv_vertical_row(s0: &[i32], s1: &[i32], b0: i32, b1: i32, out: &mut [u8]) {
        for ((o, &a), &b) in out.iter_mut().zip(s0).zip(s1) {
            let v = (((b0 * (a >> 4)) >> 16) + ((b1 * (b >> 4)) >> 16) + 2) >> 2;
            *o = v.clamp(0, 255) as u8;
        }
    }
}

/// `w * h * 3`, or `None` on overflow.
fn image_len(w: usize, h: usize) -> Option<usize> {
    w.checked_mul(h)?.checked_mul(CHANNELS)
}

/// Allocates a zeroed buffer, returning `None` instead of aborting when the
/// allocation fails.
fn try_zeroed<T: Clone + Default>(len: usize) -> Option<Vec<T>> {
    let mut v = Vec::new();
    v.try_reserve_exact(len).ok()?;
    v.resize(len, T::default());
    Some(v)
}

// ---------------------------------------------------------------------------
// Filters
// ---------------------------------------------------------------------------

/// Base support (half-width) of the filter before scaling.
fn filter_support(filter: Filter) -> f64 {
    match filter {
        Filter::Bicubic => 2.0,
        Filter::Nearest | Filter::Bilinear => 1.0,
    }
}

/// Filter kernel, evaluated exactly as in Pillow's `bilinear_filter` /
/// `bicubic_filter` (torch's `aa_filter` functions give bit-identical values:
/// with `a = -0.5` the two cubic formulations differ only by exact power-of-two
/// scalings).
fn filter_eval(filter: Filter, x: f64) -> f64 {
    let x = if x < 0.0 { -x } else { x };
    match filter {
        Filter::Bicubic => {
            const A: f64 = -0.5;
            if x < 1.0 {
                ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0
            } else if x < 2.0 {
                (((x - 5.0) * x + 8.0) * x - 4.0) * A
            } else {
                0.0
            }
        }
        Filter::Nearest | Filter::Bilinear => {
            if x < 1.0 {
                1.0 - x
            } else {
                0.0
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Coefficients
// ---------------------------------------------------------------------------

/// Fixed-point filter coefficients for one axis.
#[derive(Clone)]
struct AxisCoeffs {
    /// First source index of each output sample.
    start: Vec<usize>,
    /// Number of taps of each output sample (`<= ksize`).
    len: Vec<usize>,
    /// Row stride of `weights`.
    ksize: usize,
    /// `out_size * ksize` fixed-point weights.
    weights: Vec<i32>,
    /// Number of fractional bits of `weights` (always >= 1).
    precision: u32,
}

impl AxisCoeffs {
    /// Source rows/columns touched by any output sample.
    fn source_range(&self) -> Range<usize> {
        let first = self.start.iter().copied().min().unwrap_or(0);
        let last = self
            .start
            .iter()
            .zip(&self.len)
            .map(|(&s, &l)| s + l)
            .max()
            .unwrap_or(0);
        first..last.max(first)
    }

    /// The most taps any output sample has (`ksize` bounds it, often loosely).
    fn max_taps(&self) -> usize {
        self.len.iter().copied().max().unwrap_or(0)
    }

    /// Weights of output sample `i`, truncated to its tap count.
    fn taps(&self, i: usize) -> &[i32] {
        let begin = i * self.ksize;
        &self.weights[begin..begin + self.len[i]]
    }
}

/// Computes the filter coefficients of one axis, following Pillow's
/// `precompute_coeffs` (identical to torch's
/// `_compute_indices_min_size_weights_aa` for `align_corners=False`), then
/// converts them to fixed point the way `kernel` does.
fn compute_coeffs(
    in_size: usize,
    out_size: usize,
    filter: Filter,
    kernel: ResizeKernel,
) -> Option<AxisCoeffs> {
    let scale = match kernel {
        // Pillow: `(double)(in1 - in0) / outSize` with a `float` box.
        ResizeKernel::Pillow => f64::from(in_size as f32) / out_size as f64,
        // torch: `static_cast<double>(input_size) / output_size`.
        ResizeKernel::TorchAntialias => in_size as f64 / out_size as f64,
        // OpenCV's kernels are not built from these coefficients (`resize_rgb8`).
        ResizeKernel::OpenCv => return None,
    };
    let filterscale = if scale < 1.0 { 1.0 } else { scale };
    let support = filter_support(filter) * filterscale;
    let inv_scale = 1.0 / filterscale;
    let ksize = (support.ceil() as usize).checked_mul(2)?.checked_add(1)?;
    let total = out_size.checked_mul(ksize)?;

    let mut start = try_zeroed::<usize>(out_size)?;
    let mut len = try_zeroed::<usize>(out_size)?;
    let mut prekk = try_zeroed::<f64>(total)?;
    let in_size_i = i64::try_from(in_size).ok()?;
    let ksize_i = i64::try_from(ksize).ok()?;

    let mut w_max = 0.0_f64;
    for (xx, k) in prekk.chunks_exact_mut(ksize).enumerate() {
        let center = (xx as f64 + 0.5) * scale;
        // `(int)(center - support + 0.5)` truncates toward zero, like `as`.
        let xmin = ((center - support + 0.5) as i64).max(0);
        let xmax = ((center + support + 0.5) as i64).min(in_size_i);
        let n = (xmax - xmin).clamp(0, ksize_i);
        // Defensive: keep `xmin + n <= in_size` so indexing never fails.
        let xmin = xmin.min(in_size_i);
        let mut ww = 0.0_f64;
        for (x, slot) in (0..n).zip(k.iter_mut()) {
            let wv = filter_eval(filter, ((((x + xmin) as f64) - center) + 0.5) * inv_scale);
            *slot = wv;
            ww += wv;
        }
        if ww != 0.0 {
            for slot in k.iter_mut().take(n as usize) {
                *slot /= ww;
                w_max = w_max.max(*slot);
            }
        }
        start[xx] = xmin as usize;
        len[xx] = n as usize;
    }

    let (precision, weights) = match kernel {
        ResizeKernel::Pillow => {
            let mult = f64::from(1u32 << PILLOW_PRECISION_BITS);
            let weights = prekk
                .iter()
                .map(|&v| {
                    if v < 0.0 {
                        (-0.5 + v * mult) as i32
                    } else {
                        (0.5 + v * mult) as i32
                    }
                })
                .collect();
            (PILLOW_PRECISION_BITS, weights)
        }
        ResizeKernel::OpenCv => return None,
        ResizeKernel::TorchAntialias => {
            let mut precision = 0u32;
            while precision < 22 {
                let next = (0.5 + w_max * f64::from(1u32 << (precision + 1))) as i32;
                if next >= (1 << 15) {
                    break;
                }
                precision += 1;
            }
            if precision == 0 {
                // Unreachable for normalized weights (w_max <= ~1.2); torch
                // asserts on it. Refuse rather than shifting by -1.
                return None;
            }
            let mult = f64::from(1u32 << precision);
            let weights = prekk
                .iter()
                .map(|&w| {
                    let v = w * mult;
                    // `(int)` then implicit conversion to `int16_t`.
                    let r = if v < 0.0 {
                        (-0.5 + v) as i32
                    } else {
                        (0.5 + v) as i32
                    };
                    i32::from(r as i16)
                })
                .collect();
            (precision, weights)
        }
    };

    Some(AxisCoeffs {
        start,
        len,
        ksize,
        weights,
        precision,
    })
}

// ---------------------------------------------------------------------------
// Separable convolution (bilinear / bicubic)
// ---------------------------------------------------------------------------

/// Rounds the accumulator back to 8 bits: arithmetic shift then clamp
/// (Pillow's `clip8`; torch's `srai` + `packs_epi32` + `packus_epi16`).
#[inline]
fn clip8(acc: i32, precision: u32) -> u8 {
    (acc >> precision).clamp(0, 255) as u8
}

/// One axis's filter: its coefficients, and on processors with AVX-512 VBMI and
/// VNNI their weight-digit forms for the passes of module `vnni`.
struct AxisFilter {
    coeffs: AxisCoeffs,
    /// For filtering along rows (the horizontal pass).
    #[cfg(target_arch = "x86_64")]
    rows: Option<vnni::Plan>,
    /// For filtering down columns (the vertical pass, and the horizontal pass
    /// when `rows` is `None`).
    #[cfg(target_arch = "x86_64")]
    columns: Option<vnni::Columns>,
}

impl AxisFilter {
    /// The filter of an axis of `in_size` samples resized to `out_size`;
    /// `horizontal` when it filters along rows.
    fn new(
        in_size: usize,
        out_size: usize,
        filter: Filter,
        kernel: ResizeKernel,
        horizontal: bool,
    ) -> Option<AxisFilter> {
        let coeffs = compute_coeffs(in_size, out_size, filter, kernel)?;
        #[cfg(target_arch = "x86_64")]
        {
            let rows = horizontal
                .then(|| vnni::Plan::new(&coeffs, in_size))
                .flatten();
            let columns = if rows.is_none() {
                vnni::Columns::new(&coeffs)
            } else {
                None
            };
            Some(AxisFilter {
                coeffs,
                rows,
                columns,
            })
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            let _ = horizontal;
            Some(AxisFilter { coeffs })
        }
    }
}

/// A resample's `(w, h, out_w, out_h, filter, kernel)`.
type ResampleKey = (usize, usize, usize, usize, Filter, ResizeKernel);

/// What a two-pass resample derives from its sizes, filter and kernel.
struct Resample {
    key: ResampleKey,
    /// `None` when the width does not change.
    horizontal: Option<AxisFilter>,
    /// `None` when the height does not change.
    vertical: Option<AxisFilter>,
}

/// Resamples kept per thread: a video's frames, resized alike, reuse theirs.
const RESAMPLES_KEPT: usize = 4;

thread_local! {
    /// Each thread's most recently used resamples, newest first.
    static RESAMPLES: std::cell::RefCell<Vec<Rc<Resample>>> =
        const { std::cell::RefCell::new(Vec::new()) };
}

impl Resample {
    /// The resample for these sizes, filter and kernel: this thread's kept one, or
    /// a new one (then kept).
    fn get(key: ResampleKey) -> Option<Rc<Resample>> {
        let (w, h, out_w, out_h, filter, kernel) = key;
        RESAMPLES.with_borrow_mut(|kept| {
            if let Some(i) = kept.iter().position(|r| r.key == key) {
                let found = kept.remove(i);
                kept.insert(0, found.clone());
                return Some(found);
            }
            let axis = |need: bool, i, o, horizontal| {
                if need {
                    AxisFilter::new(i, o, filter, kernel, horizontal).map(Some)
                } else {
                    Some(None)
                }
            };
            let made = Rc::new(Resample {
                key,
                horizontal: axis(out_w != w, w, out_w, true)?,
                vertical: axis(out_h != h, h, out_h, false)?,
            });
            kept.insert(0, made.clone());
            kept.truncate(RESAMPLES_KEPT);
            Some(made)
        })
    }
}

/// Two-pass resample as in Pillow's `ImagingResampleInner` and torch's
/// `upsample_avx_bilinear_bicubic_uint8`. A pass is skipped when its
/// dimension does not change. Torch always runs the horizontal pass first;
/// Pillow's order is given by [`pillow_vertical_first`]. The order matters
/// because the intermediate image is rounded to uint8.
fn resample_separable(
    src: &[u8],
    w: usize,
    h: usize,
    out_w: usize,
    out_h: usize,
    filter: Filter,
    kernel: ResizeKernel,
) -> Option<Vec<u8>> {
    let resample = Resample::get((w, h, out_w, out_h, filter, kernel))?;
    let horizontal_first = match kernel {
        ResizeKernel::Pillow => !pillow_vertical_first(w, h, out_w, out_h),
        ResizeKernel::TorchAntialias | ResizeKernel::OpenCv => true,
    };
    let mut out = try_zeroed::<u8>(out_h.checked_mul(out_w)?.checked_mul(CHANNELS)?)?;
    match (&resample.horizontal, &resample.vertical) {
        (Some(horiz), None) => horizontal_pass(src, w, 0..h, horiz, &mut out)?,
        (None, Some(vert)) => vertical_pass(src, w, 0, vert, &mut out)?,
        (Some(horiz), Some(vert)) if !horizontal_first => {
            // Pillow, height reduced much more than width: vertical pass over
            // the full source width, then the horizontal pass.
            let tmp_len = out_h.checked_mul(w)?.checked_mul(CHANNELS)?;
            with_scratch(&INTERMEDIATE, tmp_len, |tmp| {
                vertical_pass(src, w, 0, vert, tmp)?;
                horizontal_pass(tmp, w, 0..out_h, horiz, &mut out)
            })??;
        }
        (Some(horiz), Some(vert)) => {
            // Rows of the source the vertical pass reads (Pillow's
            // ybox_first/last; torch filters every row, which gives identical
            // output).
            let rows = vert.coeffs.source_range();
            let tmp_len = rows.len().checked_mul(out_w)?.checked_mul(CHANNELS)?;
            with_scratch(&INTERMEDIATE, tmp_len, |tmp| {
                horizontal_pass(src, w, rows.clone(), horiz, tmp)?;
                vertical_pass(tmp, out_w, rows.start, vert, &mut out)
            })??;
        }
        // `resize_rgb8` copies same-size images before getting here.
        (None, None) => {
            let len = out.len();
            out.copy_from_slice(src.get(..len)?);
        }
    }
    Some(out)
}

/// Pass order of Pillow 13.0 (`ImagingResampleInner` after
/// python-pillow/Pillow PR #9549): the vertical pass runs first when the
/// height shrinks by more than twice as many pixels as the width does,
/// i.e. `in_h - out_h > 0 && in_h - out_h > 2 * (in_w - out_w)` (this includes
/// every "width kept or enlarged, height reduced" case). This was determined
/// from the PR and confirmed on the installed Pillow 13.0.0 binary.
///
/// Older Pillow releases differ: up to 12.1 the horizontal pass always runs
/// first; 12.2 and 12.3 run the vertical pass first only when
/// `in_h > 100 * in_w && out_h < in_h` (done in Python with two calls).
fn pillow_vertical_first(w: usize, h: usize, out_w: usize, out_h: usize) -> bool {
    let dh = h as i128 - out_h as i128;
    let dw = w as i128 - out_w as i128;
    dh > 0 && dh > 2 * dw
}

/// Horizontal pass: filters source rows `rows` of `src` (width `src_w`) into
/// `dst` (one output row per source row, width `filter.coeffs.start.len()`).
///
/// On processors with AVX-512 VBMI and VNNI, [`vnni::Plan`] filters each
/// row in place; otherwise [`horizontal_pass_transposed`] runs.
fn horizontal_pass(
    src: &[u8],
    src_w: usize,
    rows: Range<usize>,
    filter: &AxisFilter,
    dst: &mut [u8],
) -> Option<()> {
    let n = rows.len();
    let stride = src_w.checked_mul(CHANNELS)?;
    let band = src.get(rows.start.checked_mul(stride)?..rows.end.checked_mul(stride)?)?;
    #[cfg(target_arch = "x86_64")]
    if let Some(plan) = &filter.rows {
        let out_w = filter.coeffs.start.len();
        let dst = dst.get_mut(..n.checked_mul(out_w)?.checked_mul(CHANNELS)?)?;
        plan.filter_rows(band, dst);
        return Some(());
    }
    horizontal_pass_transposed(band, src_w, n, filter, dst)
}

/// [`horizontal_pass`] over the `n` rows of `band`, through two transposes and
/// [`vertical_pass`]: filtering along a row is filtering down a column of the
/// transposed image, so this transposes the rows, runs [`vertical_pass`] (whose
/// inner loop runs along contiguous rows and vectorises) and transposes back. The
/// integer sums are the same, so the output is identical to filtering pixel by
/// pixel. The two transposed images live in per-thread buffers kept between calls.
fn horizontal_pass_transposed(
    band: &[u8],
    src_w: usize,
    n: usize,
    filter: &AxisFilter,
    dst: &mut [u8],
) -> Option<()> {
    let out_w = filter.coeffs.start.len();
    let filtered_len = out_w.checked_mul(n)?.checked_mul(CHANNELS)?;
    with_scratch(&COLUMNS, band.len(), |columns| {
        transpose_rgb(band, src_w, n, columns);
        with_scratch(&FILTERED, filtered_len, |filtered| {
            vertical_pass(columns, n, 0, filter, filtered)?;
            transpose_rgb(filtered, n, out_w, dst.get_mut(..filtered_len)?);
            Some(())
        })?
    })?
}

thread_local! {
    /// Each thread's transposed source rows ([`horizontal_pass_transposed`]).
    static COLUMNS: Cell<Vec<u8>> = const { Cell::new(Vec::new()) };
    /// Each thread's transposed horizontal-pass output
    /// ([`horizontal_pass_transposed`]).
    static FILTERED: Cell<Vec<u8>> = const { Cell::new(Vec::new()) };
    /// Each thread's vertical-pass row of sums ([`vertical_pass`]).
    static SUMS: Cell<Vec<i32>> = const { Cell::new(Vec::new()) };
    /// Each thread's intermediate image between the two passes.
    static INTERMEDIATE: Cell<Vec<u8>> = const { Cell::new(Vec::new()) };
}

/// Largest scratch buffer, in elements, kept for the next call; larger ones (from
/// very large images) are freed after use.
const SCRATCH_KEPT: usize = 32 << 20;

/// Runs `f` on the first `len` elements of this thread's buffer `slot`, grown as
/// needed (contents are whatever the last call left: `f` must overwrite what it
/// reads). Returns `None` when the buffer cannot be allocated.
fn with_scratch<T: Copy + Default, R>(
    slot: &'static std::thread::LocalKey<Cell<Vec<T>>>,
    len: usize,
    f: impl FnOnce(&mut [T]) -> R,
) -> Option<R> {
    let mut buf = slot.take();
    if buf.len() < len {
        buf.try_reserve_exact(len - buf.len()).ok()?;
        buf.resize(len, T::default());
    }
    let r = f(&mut buf[..len]);
    if buf.len() <= SCRATCH_KEPT {
        slot.set(buf);
    }
    Some(r)
}

/// Both passes with AVX-512 VBMI byte permutes and VNNI byte dot products.
///
/// Every weight `w` is written in three signed base-256 digits,
/// `w = d2 * 2^16 + d1 * 2^8 + d0` with each digit in `-128..=127`. A `vpdpbusd`
/// adds `p0 * d0 + p1 * d1 + p2 * d2 + p3 * d3` over four pixel bytes and four
/// digit bytes to a 32-bit sum, so three of them (one per digit) filter four taps
/// at once, and `(sum2 << 16) + (sum1 << 8) + sum0` is the exact integer sum of
/// `p * w` that [`accumulate_row`] computes (the arithmetic wraps alike): the
/// output is the same as the portable passes' (tests compare them).
///
/// * Horizontal ([`Plan`]), row by row without transposing the image: each source
///   row is split into three channel rows, and outputs are filtered 16 at a time.
///   One 64-byte load covers every source pixel the 16 outputs read, and one
///   byte permute per four taps moves each output's four tap pixels into its
///   32-bit lane.
/// * Vertical ([`Columns`]): 64 bytes of an output row at a time, their sums kept
///   in registers over all the taps; four source rows are interleaved into the
///   bytes of 32-bit lanes per four taps.
#[cfg(target_arch = "x86_64")]
mod vnni {
    use std::arch::x86_64::*;

    use super::{AxisCoeffs, CHANNELS};

    /// Outputs filtered together by the horizontal pass.
    const LANES: usize = 16;
    /// Bytes one permute can pick from.
    const WINDOW: usize = 64;
    /// Taps one dot product sums.
    const TAPS: usize = 4;
    /// Digits of a weight.
    const DIGITS: usize = 3;

    /// The signed base-256 digits `[d0, d1, d2]` of `w` (see the module), or `None`
    /// when `w` needs more than three.
    fn digits(w: i32) -> Option<[i8; DIGITS]> {
        let low = |v: i32| ((v + 128) & 255) - 128;
        let d0 = low(w);
        let rest = (w - d0) >> 8;
        let d1 = low(rest);
        let d2 = i8::try_from((rest - d1) >> 8).ok()?;
        Some([d0 as i8, d1 as i8, d2])
    }

    /// Whether the processor has the instructions and `VPIPE_SIMD` allows them.
    pub(super) fn available() -> bool {
        vpipe_simd::level() == vpipe_simd::Level::Avx512
            && std::arch::is_x86_feature_detected!("avx512vbmi")
            && std::arch::is_x86_feature_detected!("avx512vnni")
    }

    /// Permute indices and weight digits for every block of 16 outputs of one axis.
    pub(super) struct Plan {
        /// First output of each block; the last block ends at the last output and
        /// may overlap the one before it.
        blocks: Vec<usize>,
        /// First source pixel of each block's window.
        bases: Vec<usize>,
        /// Per block and group of taps `4 q .. 4 q + 4`: byte `4 j + u` picks output
        /// `j`'s tap `4 q + u` from the window.
        index: Vec<[u8; WINDOW]>,
        /// Per block and group of taps, per digit: byte `4 j + u` is that digit of
        /// output `j`'s tap `4 q + u` (0 past an output's taps).
        weights: Vec<[[i8; WINDOW]; DIGITS]>,
        /// Groups of taps.
        groups: usize,
        /// Fractional bits of the weights.
        precision: u32,
        /// Source row width, in pixels.
        src_w: usize,
        /// Output row width, in pixels.
        out_w: usize,
    }

    impl Plan {
        /// The plan for `coeffs` over rows of `src_w` pixels, or `None` when the
        /// processor lacks the instructions (or `VPIPE_SIMD` caps them), the row
        /// is narrower than 16 outputs, 16 outputs read more than 64 pixels
        /// (a downscale by more than about 3), or a weight needs more digits.
        pub(super) fn new(coeffs: &AxisCoeffs, src_w: usize) -> Option<Plan> {
            if !available() {
                return None;
            }
            let out_w = coeffs.start.len();
            if out_w < LANES {
                return None;
            }
            let blocks: Vec<usize> = (0..out_w.div_ceil(LANES))
                .map(|b| (b * LANES).min(out_w - LANES))
                .collect();
            let groups = coeffs.max_taps().div_ceil(TAPS);
            let mut bases = Vec::with_capacity(blocks.len());
            let mut index = Vec::with_capacity(blocks.len() * groups);
            let mut weights = Vec::with_capacity(blocks.len() * groups);
            for &first in &blocks {
                let outputs = first..first + LANES;
                let base = outputs.clone().map(|x| coeffs.start[x]).min()?;
                let end = outputs
                    .clone()
                    .map(|x| coeffs.start[x] + coeffs.len[x])
                    .max()?;
                if end - base > WINDOW {
                    return None;
                }
                bases.push(base);
                for q in 0..groups {
                    let mut lanes = [0u8; WINDOW];
                    let mut digit_lanes = [[0i8; WINDOW]; DIGITS];
                    for j in 0..LANES {
                        let x = first + j;
                        for u in 0..TAPS {
                            let tap = TAPS * q + u;
                            // Taps past an output's last read the window's last
                            // byte and weigh 0.
                            lanes[TAPS * j + u] =
                                (coeffs.start[x] + tap - base).min(WINDOW - 1) as u8;
                            let w = coeffs.taps(x).get(tap).copied().unwrap_or(0);
                            for (d, digit) in digits(w)?.into_iter().enumerate() {
                                digit_lanes[d][TAPS * j + u] = digit;
                            }
                        }
                    }
                    index.push(lanes);
                    weights.push(digit_lanes);
                }
            }
            Some(Plan {
                blocks,
                bases,
                index,
                weights,
                groups,
                precision: coeffs.precision,
                src_w,
                out_w,
            })
        }

        /// Filters whole rows: `src` holds rows of `src_w` RGB pixels, `dst` as
        /// many rows of `out_w` pixels.
        pub(super) fn filter_rows(&self, src: &[u8], dst: &mut [u8]) {
            // Channel rows, padded so that every window load stays in bounds.
            let padded = self.src_w + WINDOW;
            let mut planes = vec![0u8; CHANNELS * padded];
            let mut filtered = vec![0u8; CHANNELS * self.out_w];
            let rows = src
                .chunks_exact(self.src_w * CHANNELS)
                .zip(dst.chunks_exact_mut(self.out_w * CHANNELS));
            for (row, out) in rows {
                // SAFETY: `new` checked that the processor has these features.
                unsafe { self.filter_row(row, out, &mut planes, &mut filtered) };
            }
        }

        #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vbmi,avx512vnni")]
        fn filter_row(&self, row: &[u8], out: &mut [u8], planes: &mut [u8], filtered: &mut [u8]) {
            let padded = self.src_w + WINDOW;
            let (r, rest) = planes.split_at_mut(padded);
            let (g, b) = rest.split_at_mut(padded);
            deinterleave(
                row,
                [
                    &mut r[..self.src_w],
                    &mut g[..self.src_w],
                    &mut b[..self.src_w],
                ],
            );
            let (pr, rest) = planes.split_at(padded);
            let (pg, pb) = rest.split_at(padded);
            let (fr, rest) = filtered.split_at_mut(self.out_w);
            let (fg, fb) = rest.split_at_mut(self.out_w);
            self.filter_planes([pr, pg, pb], [fr, fg, fb]);
            let (fr, rest) = filtered.split_at(self.out_w);
            let (fg, fb) = rest.split_at(self.out_w);
            interleave([fr, fg, fb], out);
        }

        /// Filters the three channel rows of one row (`src_w` pixels and `WINDOW`
        /// bytes of padding each) together, so that each permute index and weight
        /// vector is loaded once for all three.
        #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vbmi,avx512vnni")]
        fn filter_planes(&self, planes: [&[u8]; CHANNELS], out: [&mut [u8]; CHANNELS]) {
            let init = _mm512_set1_epi32(1 << (self.precision - 1));
            let shift = _mm_cvtsi32_si128(self.precision as i32);
            let zero = _mm512_setzero_si512();
            let [out_r, out_g, out_b] = out;
            for (bi, (&first, &base)) in self.blocks.iter().zip(&self.bases).enumerate() {
                let windows = planes.map(|plane| {
                    load64(
                        plane[base..base + WINDOW]
                            .try_into()
                            .unwrap_or_else(|_| unreachable!("rows are padded by a window")),
                    )
                });
                let mut sums = [[zero; DIGITS]; CHANNELS];
                for q in 0..self.groups {
                    let at = bi * self.groups + q;
                    let index = load64(&self.index[at]);
                    let weights = self.weights[at].each_ref().map(|d| load_digits(d));
                    for c in 0..CHANNELS {
                        let px = _mm512_permutexvar_epi8(index, windows[c]);
                        for d in 0..DIGITS {
                            sums[c][d] = _mm512_dpbusd_epi32(sums[c][d], px, weights[d]);
                        }
                    }
                }
                for (c, out) in [&mut *out_r, &mut *out_g, &mut *out_b]
                    .into_iter()
                    .enumerate()
                {
                    let acc = _mm512_add_epi32(join(sums[c]), init);
                    // `clip8`: arithmetic shift, then clamp to 0..=255.
                    let v = _mm512_max_epi32(_mm512_sra_epi32(acc, shift), zero);
                    let bytes = _mm512_cvtusepi32_epi8(v);
                    let dst: &mut [u8; LANES] = (&mut out[first..first + LANES])
                        .try_into()
                        .unwrap_or_else(|_| unreachable!("blocks lie inside the row"));
                    // SAFETY: `dst` is 16 writable bytes.
                    unsafe { _mm_storeu_si128(dst.as_mut_ptr().cast(), bytes) };
                }
            }
        }
    }

    /// `(sums[2] << 16) + (sums[1] << 8) + sums[0]`: the sum over the weights
    /// from the sums over their digits.
    #[inline]
    #[target_feature(enable = "avx512f")]
    fn join(sums: [__m512i; DIGITS]) -> __m512i {
        _mm512_add_epi32(
            _mm512_add_epi32(
                _mm512_slli_epi32::<16>(sums[2]),
                _mm512_slli_epi32::<8>(sums[1]),
            ),
            sums[0],
        )
    }

    /// Weight digits of the vertical pass, per output row and group of taps.
    pub(super) struct Columns {
        /// Per output row and group of taps `4 q .. 4 q + 4`, per digit: the four
        /// taps' digits as the bytes of one 32-bit lane (tap `4 q` in the lowest;
        /// 0 for a tap past the row's last).
        digits: Vec<[i32; DIGITS]>,
        /// Groups of taps.
        groups: usize,
    }

    impl Columns {
        /// The weight digits of `coeffs`, or `None` when the processor lacks the
        /// instructions (or `VPIPE_SIMD` caps them) or a weight needs more digits.
        pub(super) fn new(coeffs: &AxisCoeffs) -> Option<Columns> {
            if !available() {
                return None;
            }
            let groups = coeffs.max_taps().div_ceil(TAPS);
            let out = coeffs.start.len();
            let mut packed = Vec::with_capacity(out * groups);
            for i in 0..out {
                let taps = coeffs.taps(i);
                for q in 0..groups {
                    let mut lanes = [0i32; DIGITS];
                    for u in 0..TAPS {
                        let w = taps.get(TAPS * q + u).copied().unwrap_or(0);
                        for (lane, digit) in lanes.iter_mut().zip(digits(w)?) {
                            *lane |= i32::from(digit as u8) << (8 * u);
                        }
                    }
                    packed.push(lanes);
                }
            }
            Some(Columns {
                digits: packed,
                groups,
            })
        }

        /// Output row `yy` of the vertical pass from its taps' source `rows`.
        pub(super) fn filter_row(&self, yy: usize, rows: &[&[u8]], precision: u32, out: &mut [u8]) {
            let at = yy * self.groups..(yy + 1) * self.groups;
            // SAFETY: `new` checked that the processor has these features.
            unsafe { filter_row(rows, &self.digits[at], precision, out) };
        }
    }

    /// One output row of the vertical pass: `rows` are the taps' source rows (each
    /// `out.len()` bytes), `digits` the weight digits of their groups of four.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni")]
    fn filter_row(rows: &[&[u8]], digits: &[[i32; DIGITS]], precision: u32, out: &mut [u8]) {
        const CHUNK: usize = 64;
        let init = _mm512_set1_epi32(1 << (precision - 1));
        let shift = _mm_cvtsi32_si128(precision as i32);
        let zero = _mm512_setzero_si512();
        let len = out.len();
        for x in (0..len).step_by(CHUNK) {
            let mask: __mmask64 = if len - x >= CHUNK {
                !0
            } else {
                (1 << (len - x)) - 1
            };
            // Sums of outputs x.. per digit, in the unpacks' order: vector `k`
            // holds outputs `16 l + 4 k .. 16 l + 4 k + 4` of each 16-byte lane `l`
            // (the packs below restore the order).
            let mut sums = [[zero; DIGITS]; 4];
            for (taps, group) in rows.chunks(TAPS).zip(digits) {
                // Taps past the row's last weigh 0: any row will do.
                let [a, b, c, d] = [0, 1, 2, 3].map(|u| {
                    let row = taps.get(u).copied().unwrap_or(taps[0]);
                    // SAFETY: the mask reads only bytes x..len of the row, which
                    // has `len` bytes.
                    unsafe { _mm512_maskz_loadu_epi8(mask, row.as_ptr().add(x).cast()) }
                });
                let (ab_lo, ab_hi) = (_mm512_unpacklo_epi8(a, b), _mm512_unpackhi_epi8(a, b));
                let (cd_lo, cd_hi) = (_mm512_unpacklo_epi8(c, d), _mm512_unpackhi_epi8(c, d));
                let quads = [
                    _mm512_unpacklo_epi16(ab_lo, cd_lo),
                    _mm512_unpackhi_epi16(ab_lo, cd_lo),
                    _mm512_unpacklo_epi16(ab_hi, cd_hi),
                    _mm512_unpackhi_epi16(ab_hi, cd_hi),
                ];
                let weights = group.map(|w| _mm512_set1_epi32(w));
                for (k, px) in quads.into_iter().enumerate() {
                    for dgt in 0..DIGITS {
                        sums[k][dgt] = _mm512_dpbusd_epi32(sums[k][dgt], px, weights[dgt]);
                    }
                }
            }
            let [s0, s1, s2, s3] =
                sums.map(|s| _mm512_sra_epi32(_mm512_add_epi32(join(s), init), shift));
            // `clip8`: saturate to 16 bits, then to 0..=255.
            let bytes = _mm512_packus_epi16(_mm512_packs_epi32(s0, s1), _mm512_packs_epi32(s2, s3));
            // SAFETY: the mask writes only bytes x..len of `out`.
            unsafe { _mm512_mask_storeu_epi8(out.as_mut_ptr().add(x).cast(), mask, bytes) };
        }
    }

    #[inline]
    #[target_feature(enable = "avx512f")]
    fn load64(bytes: &[u8; WINDOW]) -> __m512i {
        // SAFETY: `bytes` is 64 readable bytes.
        unsafe { _mm512_loadu_si512(bytes.as_ptr().cast()) }
    }

    #[inline]
    #[target_feature(enable = "avx512f")]
    fn load_digits(d: &[i8; WINDOW]) -> __m512i {
        // SAFETY: `d` is 64 readable bytes.
        unsafe { _mm512_loadu_si512(d.as_ptr().cast()) }
    }

    /// Splits RGB pixels into three channel rows.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vbmi")]
    fn deinterleave(row: &[u8], planes: [&mut [u8]; 3]) {
        let [r, g, b] = planes;
        let gather: [u8; 64] = std::array::from_fn(|i| {
            let (c, j) = (i / LANES, i % LANES);
            if c < CHANNELS {
                (j * CHANNELS + c) as u8
            } else {
                0
            }
        });
        let gather = load64(&gather);
        let full = row.len() / (LANES * CHANNELS);
        for i in 0..full {
            let px = &row[i * LANES * CHANNELS..(i + 1) * LANES * CHANNELS];
            // SAFETY: the mask reads only the 48 bytes of `px`.
            let v = unsafe { _mm512_maskz_loadu_epi8((1u64 << 48) - 1, px.as_ptr().cast()) };
            let v = _mm512_permutexvar_epi8(gather, v);
            let at = i * LANES..(i + 1) * LANES;
            store16(&mut r[at.clone()], _mm512_extracti32x4_epi32::<0>(v));
            store16(&mut g[at.clone()], _mm512_extracti32x4_epi32::<1>(v));
            store16(&mut b[at], _mm512_extracti32x4_epi32::<2>(v));
        }
        for (j, px) in row.chunks_exact(CHANNELS).enumerate().skip(full * LANES) {
            (r[j], g[j], b[j]) = (px[0], px[1], px[2]);
        }
    }

    /// Joins three channel rows into RGB pixels.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vbmi")]
    fn interleave(planes: [&[u8]; 3], out: &mut [u8]) {
        let [r, g, b] = planes;
        let scatter: [u8; 64] = std::array::from_fn(|i| {
            let (j, c) = (i / CHANNELS, i % CHANNELS);
            if j < LANES { (c * LANES + j) as u8 } else { 0 }
        });
        let scatter = load64(&scatter);
        let full = r.len() / LANES;
        for i in 0..full {
            let at = i * LANES..(i + 1) * LANES;
            let v = _mm512_castsi128_si512(load16(&r[at.clone()]));
            let v = _mm512_inserti32x4::<1>(v, load16(&g[at.clone()]));
            let v = _mm512_inserti32x4::<2>(v, load16(&b[at]));
            let v = _mm512_permutexvar_epi8(scatter, v);
            let px = &mut out[i * LANES * CHANNELS..(i + 1) * LANES * CHANNELS];
            // SAFETY: the mask writes only the 48 bytes of `px`.
            unsafe { _mm512_mask_storeu_epi8(px.as_mut_ptr().cast(), (1u64 << 48) - 1, v) };
        }
        for (j, px) in out
            .chunks_exact_mut(CHANNELS)
            .enumerate()
            .skip(full * LANES)
        {
            px.copy_from_slice(&[r[j], g[j], b[j]]);
        }
    }

    #[inline]
    #[target_feature(enable = "avx512f")]
    fn load16(bytes: &[u8]) -> __m128i {
        let bytes: &[u8; LANES] = bytes
            .try_into()
            .unwrap_or_else(|_| unreachable!("16-byte chunks"));
        // SAFETY: `bytes` is 16 readable bytes.
        unsafe { _mm_loadu_si128(bytes.as_ptr().cast()) }
    }

    #[inline]
    #[target_feature(enable = "avx512f")]
    fn store16(bytes: &mut [u8], v: __m128i) {
        let bytes: &mut [u8; LANES] = bytes
            .try_into()
            .unwrap_or_else(|_| unreachable!("16-byte chunks"));
        // SAFETY: `bytes` is 16 writable bytes.
        unsafe { _mm_storeu_si128(bytes.as_mut_ptr().cast(), v) };
    }
}

/// Transposes `src` (`h` rows of `w` RGB pixels) into `dst` (`w` rows of `h`
/// pixels), in square blocks that stay in cache.
fn transpose_rgb(src: &[u8], w: usize, h: usize, dst: &mut [u8]) {
    const BLOCK: usize = 32;
    let (src, _) = src.as_chunks::<CHANNELS>();
    let (dst, _) = dst.as_chunks_mut::<CHANNELS>();
    for y0 in (0..h).step_by(BLOCK) {
        let y1 = (y0 + BLOCK).min(h);
        for x0 in (0..w).step_by(BLOCK) {
            let x1 = (x0 + BLOCK).min(w);
            for y in y0..y1 {
                for (x, px) in (x0..x1).zip(&src[y * w + x0..y * w + x1]) {
                    dst[x * h + y] = *px;
                }
            }
        }
    }
}

/// Vertical pass: `src` has rows of width `width` starting at source row
/// `row_offset`; writes `filter.coeffs.start.len()` rows into `dst`. Returns
/// `None` when `src` lacks a row that a tap reads.
///
/// Each output row is filtered by [`vnni::Columns`] where the processor has it,
/// else by [`accumulate_row`] and [`finish_row`].
fn vertical_pass(
    src: &[u8],
    width: usize,
    row_offset: usize,
    filter: &AxisFilter,
    dst: &mut [u8],
) -> Option<()> {
    let coeffs = &filter.coeffs;
    let stride = width * CHANNELS;
    let precision = coeffs.precision;
    let init = 1i32 << (precision - 1);
    with_scratch(&SUMS, stride, |acc| {
        let mut rows: Vec<&[u8]> = Vec::with_capacity(coeffs.ksize);
        for (yy, out) in dst.chunks_exact_mut(stride).enumerate() {
            let first = coeffs.start[yy].checked_sub(row_offset)?;
            rows.clear();
            for j in 0..coeffs.len[yy] {
                let begin = (first + j) * stride;
                rows.push(src.get(begin..begin + stride)?);
            }
            #[cfg(target_arch = "x86_64")]
            if let Some(columns) = &filter.columns {
                columns.filter_row(yy, &rows, precision, out);
                continue;
            }
            acc.fill(init);
            // Integer (wrapping) sums are order independent, so accumulating row
            // by row gives the same result as the per-pixel tap loop.
            for (row, &wt) in rows.iter().zip(coeffs.taps(yy)) {
                accumulate_row(acc, row, wt);
            }
            finish_row(out, acc, precision);
        }
        Some(())
    })?
}

vpipe_simd::simd_fn! {
    /// `acc += row * weight`, element by element, in wrapping `i32` arithmetic.
    fn accumulate_row(acc: &mut [i32], row: &[u8], weight: i32) {
        for (a, &p) in acc.iter_mut().zip(row) {
            *a = a.wrapping_add(i32::from(p).wrapping_mul(weight));
        }
    }
}

vpipe_simd::simd_fn! {
    /// Rounds the fixed-point sums of one output row to `u8`.
    fn finish_row(out: &mut [u8], acc: &[i32], precision: u32) {
        for (o, &a) in out.iter_mut().zip(acc) {
            *o = clip8(a, precision);
        }
    }
}

// ---------------------------------------------------------------------------
// Nearest neighbour
// ---------------------------------------------------------------------------

/// Pillow `NEAREST`: `_resize` builds the affine matrix
/// `a = [in_w / out_w, 0, 0, 0, in_h / out_h, 0]` and `ImagingScaleAffine`
/// walks it with accumulated `f64` positions starting at half a step;
/// out-of-range positions are filled with zeros.
fn nearest_pillow(src: &[u8], w: usize, h: usize, out_w: usize, out_h: usize) -> Option<Vec<u8>> {
    // `COORD(v)`: `v < 0.0 ? -1 : (int)v`.
    fn coord(v: f64, size: usize) -> Option<usize> {
        if v < 0.0 {
            return None;
        }
        let i = v as i64;
        usize::try_from(i).ok().filter(|&i| i < size)
    }
    let a0 = f64::from(w as f32) / out_w as f64;
    let a4 = f64::from(h as f32) / out_h as f64;

    let mut xtab: Vec<Option<usize>> = Vec::new();
    xtab.try_reserve_exact(out_w).ok()?;
    let mut xo = 0.0 + a0 * 0.5;
    for _ in 0..out_w {
        xtab.push(coord(xo, w));
        xo += a0;
    }

    let in_stride = w * CHANNELS;
    let out_stride = out_w * CHANNELS;
    let mut out = try_zeroed::<u8>(out_h.checked_mul(out_stride)?)?;
    let mut yo = 0.0 + a4 * 0.5;
    for out_row in out.chunks_exact_mut(out_stride) {
        if let Some(yi) = coord(yo, h) {
            let in_row = &src[yi * in_stride..(yi + 1) * in_stride];
            for (out_px, xi) in out_row.chunks_exact_mut(CHANNELS).zip(&xtab) {
                if let Some(xi) = *xi {
                    out_px.copy_from_slice(&in_row[xi * CHANNELS..(xi + 1) * CHANNELS]);
                }
            }
        }
        yo += a4;
    }
    Some(out)
}

/// torch `mode="nearest"` source index (`nearest_idx` /
/// `HelperInterpNearest`): `min(floor(dst * (float)in / out), in - 1)` in `f32`.
fn torch_nearest_index(dst: usize, in_size: usize, out_size: usize) -> usize {
    if out_size == in_size {
        dst
    } else if in_size.checked_mul(2) == Some(out_size) {
        dst >> 1
    } else {
        let scale = in_size as f32 / out_size as f32;
        let idx = (dst as f32 * scale).floor() as usize;
        idx.min(in_size - 1)
    }
}

/// torch `F.interpolate(x, size, mode="nearest")` on an NCHW tensor.
fn nearest_torch(src: &[u8], w: usize, h: usize, out_w: usize, out_h: usize) -> Option<Vec<u8>> {
    let mut xtab = Vec::new();
    xtab.try_reserve_exact(out_w).ok()?;
    xtab.extend((0..out_w).map(|x| torch_nearest_index(x, w, out_w)));
    let in_stride = w * CHANNELS;
    let out_stride = out_w * CHANNELS;
    let mut out = try_zeroed::<u8>(out_h.checked_mul(out_stride)?)?;
    for (y, out_row) in out.chunks_exact_mut(out_stride).enumerate() {
        let yi = torch_nearest_index(y, h, out_h);
        let in_row = &src[yi * in_stride..(yi + 1) * in_stride];
        for (out_px, &xi) in out_row.chunks_exact_mut(CHANNELS).zip(&xtab) {
            out_px.copy_from_slice(&in_row[xi * CHANNELS..(xi + 1) * CHANNELS]);
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_sizes_return_empty() {
        let src = [0u8; 12];
        for &(w, h, ow, oh) in &[(0, 2, 2, 2), (2, 0, 2, 2), (2, 2, 0, 2), (2, 2, 2, 0)] {
            for f in [Filter::Nearest, Filter::Bilinear, Filter::Bicubic] {
                for k in [ResizeKernel::Pillow, ResizeKernel::TorchAntialias] {
                    assert!(resize_rgb8(&src, w, h, ow, oh, f, k).is_empty());
                }
            }
        }
    }

    #[test]
    fn short_input_returns_empty() {
        let src = [0u8; 11];
        assert!(resize_rgb8(&src, 2, 2, 3, 3, Filter::Bilinear, ResizeKernel::Pillow).is_empty());
    }

    #[test]
    fn overflowing_sizes_return_empty() {
        let src = [0u8; 3];
        let r = resize_rgb8(
            &src,
            1,
            1,
            usize::MAX,
            2,
            Filter::Bicubic,
            ResizeKernel::Pillow,
        );
        assert!(r.is_empty());
    }

    /// Pseudo-random numbers below `n`, from a fixed seed.
    fn numbers() -> impl FnMut(usize) -> usize {
        let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
        move |n| {
            seed = seed
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            (seed >> 33) as usize % n
        }
    }

    /// The pass along one axis (`horizontal` or not) of `src` (`w` x `h` RGB
    /// pixels), tap by tap, as the references write it.
    fn tap_by_tap(
        src: &[u8],
        w: usize,
        h: usize,
        horizontal: bool,
        coeffs: &AxisCoeffs,
    ) -> Vec<u8> {
        let n = coeffs.start.len();
        let (out_w, out_h) = if horizontal { (n, h) } else { (w, n) };
        let init = 1i32 << (coeffs.precision - 1);
        let mut out = Vec::with_capacity(out_w * out_h * CHANNELS);
        for y in 0..out_h {
            for x in 0..out_w {
                for c in 0..CHANNELS {
                    let i = if horizontal { x } else { y };
                    let mut acc = init;
                    for (j, &wt) in coeffs.taps(i).iter().enumerate() {
                        let (sx, sy) = if horizontal {
                            (coeffs.start[i] + j, y)
                        } else {
                            (x, coeffs.start[i] + j)
                        };
                        let p = i32::from(src[(sy * w + sx) * CHANNELS + c]);
                        acc = acc.wrapping_add(p.wrapping_mul(wt));
                    }
                    out.push(clip8(acc, coeffs.precision));
                }
            }
        }
        out
    }

    /// Every way this processor can filter with `coeffs`: portable, and with the
    /// `vnni` plans it supports (for filtering along rows when `horizontal`).
    fn variants(coeffs: &AxisCoeffs, in_size: usize, horizontal: bool) -> Vec<AxisFilter> {
        #[cfg(target_arch = "x86_64")]
        {
            let mut all = vec![AxisFilter {
                coeffs: coeffs.clone(),
                rows: None,
                columns: None,
            }];
            if let Some(columns) = vnni::Columns::new(coeffs) {
                all.push(AxisFilter {
                    coeffs: coeffs.clone(),
                    rows: None,
                    columns: Some(columns),
                });
            }
            if let Some(plan) = horizontal
                .then(|| vnni::Plan::new(coeffs, in_size))
                .flatten()
            {
                all.push(AxisFilter {
                    coeffs: coeffs.clone(),
                    rows: Some(plan),
                    columns: None,
                });
            }
            all
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            let _ = (in_size, horizontal);
            vec![AxisFilter {
                coeffs: coeffs.clone(),
            }]
        }
    }

    /// Runs every pass variant along one axis over 300 random images, filters and
    /// kernels, checks each against [`tap_by_tap`], and counts the cases per variant.
    fn check_variants(horizontal: bool) -> [usize; 3] {
        let mut next = numbers();
        let mut passes = [0; 3];
        for _ in 0..300 {
            let (w, h, out) = if horizontal {
                (1 + next(800), 1 + next(9), 1 + next(400))
            } else {
                (1 + next(120), 1 + next(300), 1 + next(200))
            };
            let src: Vec<u8> = (0..w * h * CHANNELS).map(|_| next(256) as u8).collect();
            let in_size = if horizontal { w } else { h };
            for filter in [Filter::Bilinear, Filter::Bicubic] {
                for kernel in [ResizeKernel::Pillow, ResizeKernel::TorchAntialias] {
                    let coeffs = compute_coeffs(in_size, out, filter, kernel).unwrap();
                    let expected = tap_by_tap(&src, w, h, horizontal, &coeffs);
                    for (k, variant) in variants(&coeffs, in_size, horizontal).iter().enumerate() {
                        let mut got = vec![0u8; expected.len()];
                        if horizontal {
                            horizontal_pass(&src, w, 0..h, variant, &mut got).unwrap();
                        } else {
                            vertical_pass(&src, w, 0, variant, &mut got).unwrap();
                        }
                        let case = format!("{w}x{h}, {in_size} -> {out}, {filter:?}, {kernel:?}");
                        assert_eq!(got, expected, "{case}, variant {k}");
                        passes[k] += 1;
                    }
                }
            }
        }
        passes
    }

    /// Every horizontal pass (portable transposing, transposing with the VNNI
    /// column pass, byte permutes) gives the bytes of the tap-by-tap sums.
    #[test]
    fn horizontal_passes_match_the_tap_by_tap_sums() {
        let passes = check_variants(true);
        #[cfg(target_arch = "x86_64")]
        if vnni::available() {
            assert_eq!(passes[1], 1200);
            assert!(
                passes[2] > 300,
                "only {} cases used the permute pass",
                passes[2]
            );
        }
        assert_eq!(passes[0], 1200);
    }

    /// Every vertical pass (portable, VNNI) gives the bytes of the tap-by-tap sums.
    #[test]
    fn vertical_passes_match_the_tap_by_tap_sums() {
        let passes = check_variants(false);
        #[cfg(target_arch = "x86_64")]
        if vnni::available() {
            assert_eq!(passes[1], 1200);
        }
        assert_eq!(passes[0], 1200);
    }

    /// OpenCV's bilinear arithmetic on a case small enough to follow by hand:
    /// `[0, 255]` to 3 pixels: weights `(2048, 0)` at the clamped left edge,
    /// `(1024, 1024)` at position 0.5, `(2048, 0)` on the last pixel; the sums
    /// `0, 261120, 522240` become `(((2048 * (s >> 4)) >> 16) + 2) >> 2`.
    #[test]
    fn opencv_bilinear_by_hand() {
        let src = [0, 0, 0, 255, 255, 255];
        let out = resize_rgb8(&src, 2, 1, 3, 1, Filter::Bilinear, ResizeKernel::OpenCv);
        assert_eq!(out, [0, 0, 0, 128, 128, 128, 255, 255, 255]);
        let taps = opencv_linear_taps(2, 3, true).unwrap();
        let weights: Vec<_> = taps.iter().map(|t| (t.first, t.w0, t.w1)).collect();
        assert_eq!(weights, [(0, 2048, 0), (0, 1024, 1024), (1, 2048, 0)]);
        // Vertically the fraction outside the image is kept: rows -1 and 0 (both
        // read as row 0) with weights 512 and 1536 for the first of 4 rows from 2.
        let rows = opencv_linear_taps(2, 4, false).unwrap();
        assert_eq!(
            (rows[0].first, rows[0].second, rows[0].w0, rows[0].w1),
            (0, 0, 512, 1536)
        );
    }

    /// Sizes beyond OpenCV's `int` range are refused (as OpenCV refuses them), before
    /// any allocation.
    #[test]
    fn opencv_bilinear_refuses_sizes_beyond_int() {
        let big = 1usize << 31;
        let r = resize_rgb8(
            &[9; 3],
            1,
            1,
            big,
            1,
            Filter::Bilinear,
            ResizeKernel::OpenCv,
        );
        assert!(r.is_empty());
    }

    /// OpenCV's bilinear keeps a constant image constant at any size, one-pixel
    /// and one-row images included.
    #[test]
    fn opencv_bilinear_keeps_constants() {
        for &(w, h) in &[(1, 1), (1, 9), (9, 1), (7, 5), (300, 7)] {
            for v in [0u8, 1, 77, 254, 255] {
                let src = vec![v; w * h * 3];
                for &(ow, oh) in &[(1, 1), (3, 9), (20, 2), (7, 11), (288, 288), (2, 600)] {
                    let out =
                        resize_rgb8(&src, w, h, ow, oh, Filter::Bilinear, ResizeKernel::OpenCv);
                    assert_eq!(out.len(), ow * oh * 3);
                    assert!(out.iter().all(|&o| o == v), "{w}x{h} -> {ow}x{oh}, {v}");
                }
            }
        }
    }

    #[test]
    fn constant_image_stays_constant() {
        let src = vec![77u8; 7 * 5 * 3];
        for f in [Filter::Nearest, Filter::Bilinear, Filter::Bicubic] {
            for k in [ResizeKernel::Pillow, ResizeKernel::TorchAntialias] {
                for &(ow, oh) in &[(1, 1), (3, 9), (20, 2), (7, 11)] {
                    let out = resize_rgb8(&src, 7, 5, ow, oh, f, k);
                    assert_eq!(out.len(), ow * oh * 3);
                    assert!(out.iter().all(|&v| v == 77), "{f:?} {k:?} {ow}x{oh}");
                }
            }
        }
    }
}
