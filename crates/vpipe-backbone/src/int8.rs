//! Matrix products in int8, for [`crate::Precision::Int8`].
//!
//! Quantisation is symmetric and dynamic: every row of the left operand and every
//! column of the right operand gets its own scale, `max |x| / 127`, taken when it is
//! packed (weights once, when the model is loaded; activations per call, by the task
//! that multiplies them), and its values are rounded to the nearest integer in
//! `-127..=127`. So no calibration images are needed: each activation vector is
//! scaled by its own range as it comes.
//!
//! AVX512_VNNI's `vpdpbusd` multiplies unsigned by signed bytes and adds four
//! products into each `i32` lane: four times the multiply-adds of an `f32` FMA per
//! instruction. The left operand is stored offset by 128 (`1..=255`), and
//! `128 ×` each right column's sum is taken off its sums before they are scaled
//! back: `c = (Σ (a + 128)·b − 128·Σ b) · scale_a · scale_b`. The integer sums are
//! exact; the loss is the rounding of the inputs to 8 bits.
//!
//! - The left operand ([`I8Rows`]) is row-major, each `u32` holding four
//!   neighbouring columns; a micro-kernel broadcasts one quad of each of [`MR`] rows.
//! - The right operand ([`I8Panels`]) is cut into panels of [`NR`] columns, each
//!   `u32` holding four neighbouring rows of one column, so one 512-bit load gives a
//!   quad of rows of 16 columns.

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

#[cfg(target_arch = "x86_64")]
use crate::bf16::lanes;
use crate::cpu::{Epilogue, MatPtr, OutPtr, reuse};

/// Rows of the left operand per micro-kernel call.
pub const MR: usize = 12;
/// Columns of the right operand per panel.
pub const NR: usize = 32;

/// What each thread keeps between calls: packed activations and their scales.
#[derive(Default)]
struct Scratch {
    rows: Vec<u32>,
    row_scales: Vec<f32>,
    panels: Vec<u32>,
    col_scales: Vec<f32>,
    col_offsets: Vec<i32>,
}

thread_local! {
    static SCRATCH: std::cell::Cell<Scratch> = std::cell::Cell::default();
}

/// Whether this processor runs the int8 products: AVX-512 with AVX512_VNNI, and the
/// bf16 products too ([`crate::bf16::supported`]), which run attention in this
/// precision.
pub fn supported() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        crate::bf16::supported() && std::arch::is_x86_feature_detected!("avx512vnni")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Panics unless [`supported`]: callers choose int8 only after checking it (see
/// [`crate::Precision::resolve`]), so an unsupported processor never reaches an
/// illegal instruction.
fn require_support() {
    assert!(
        supported(),
        "int8 products need AVX512_VNNI; resolve the precision first"
    );
}

/// `u32` quads per packed left row: the quads of `cols` columns, rounded up to 4
/// (16 columns, what one packing step writes).
fn rows_stride(cols: usize) -> usize {
    cols.div_ceil(16) * 4
}

/// A left operand in int8: `rows` rows of quads of columns (offset by 128), each
/// with its scale; the rows padded with zeros to a multiple of [`MR`].
#[derive(Debug, Clone)]
pub struct I8Rows {
    data: Vec<u32>,
    scales: Vec<f32>,
    rows: usize,
    cols: usize,
}

impl I8Rows {
    /// `x` `[rows, cols]`, row-major, quantised row by row.
    pub fn new(x: &[f32], rows: usize, cols: usize) -> Self {
        assert_eq!(x.len(), rows * cols, "I8Rows: input is not [rows, cols]");
        require_support();
        let (mut data, mut scales) = (Vec::new(), Vec::new());
        let a = MatPtr {
            ptr: x.as_ptr(),
            rs: cols as isize,
            cs: 1,
        };
        // SAFETY: `a` views exactly `x`; support was checked above.
        unsafe { pack_rows(&mut data, &mut scales, a, rows, cols) };
        Self {
            data,
            scales,
            rows,
            cols,
        }
    }

    /// Rows.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Columns (the products' inner dimension).
    pub fn cols(&self) -> usize {
        self.cols
    }
}

/// A right operand in int8: `[rows, cols]` cut into panels of [`NR`] columns, each
/// panel `[rows / 4, NR]` quads of rows (padded with zeros), with each column's
/// scale and `128 ×` its sum.
#[derive(Debug, Clone)]
pub struct I8Panels {
    data: Vec<u32>,
    scales: Vec<f32>,
    offsets: Vec<i32>,
    rows: usize,
    cols: usize,
}

impl I8Panels {
    /// `x` `[rows, cols]`, row-major, quantised column by column.
    pub fn new(x: &[f32], rows: usize, cols: usize) -> Self {
        assert_eq!(x.len(), rows * cols, "I8Panels: input is not [rows, cols]");
        require_support();
        let (mut data, mut scales, mut offsets) = (Vec::new(), Vec::new(), Vec::new());
        let b = MatPtr {
            ptr: x.as_ptr(),
            rs: cols as isize,
            cs: 1,
        };
        // SAFETY: `b` views exactly `x`; support was checked above.
        unsafe { pack_panels(&mut data, &mut scales, &mut offsets, b, rows, (0, cols)) };
        Self {
            data,
            scales,
            offsets,
            rows,
            cols,
        }
    }

    /// Rows (the products' inner dimension).
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Columns.
    pub fn cols(&self) -> usize {
        self.cols
    }
}

/// The left operand of a product.
#[derive(Clone, Copy)]
pub(crate) enum Left<'a> {
    /// Packed once.
    Packed(&'a I8Rows),
    /// `f32` rows with unit column stride, packed by each task for its rows.
    F32(MatPtr),
}

/// The right operand of a product.
#[derive(Clone, Copy)]
pub(crate) enum Right<'a> {
    /// Packed once.
    Packed(&'a I8Panels),
    /// `f32` rows with unit column stride, packed by each task for its columns.
    F32(MatPtr),
}

/// `c[r0..r1, c0..c1] = a[r0..r1, :] · b[:, c0..c1]` in int8, then `ep` on that
/// block; `r0` must be a multiple of [`MR`] and `c0` of [`NR`].
///
/// # Safety
/// `a` must be valid for rows `r0..r1` and `k` columns, `b` for `k` rows and
/// columns `c0..c1`; the block of `c` (row stride `ldc`) must lie inside it and
/// belong to the calling task alone; [`supported`] must hold.
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn tile(
    a: Left,
    b: Right,
    k: usize,
    c: OutPtr,
    ldc: usize,
    (r0, r1): (usize, usize),
    (c0, c1): (usize, usize),
    ep: &Epilogue,
) {
    debug_assert!(r0.is_multiple_of(MR) && c0.is_multiple_of(NR));
    let (rows, cols, quads) = (r1 - r0, c1 - c0, k.div_ceil(4));
    let mut own = SCRATCH.take();
    let (b_ptr, b_scales, b_offsets) = match b {
        Right::Packed(p) => {
            debug_assert_eq!(p.rows, k);
            // SAFETY: panel c0 / NR and columns c0.. are inside the packed panels.
            unsafe {
                (
                    p.data.as_ptr().add(c0 / NR * quads * NR),
                    p.scales.as_ptr().add(c0),
                    p.offsets.as_ptr().add(c0),
                )
            }
        }
        Right::F32(m) => {
            // SAFETY: the caller makes columns c0..c1 of `b` valid.
            unsafe {
                pack_panels(
                    &mut own.panels,
                    &mut own.col_scales,
                    &mut own.col_offsets,
                    m,
                    k,
                    (c0, c1),
                )
            };
            (
                own.panels.as_ptr(),
                own.col_scales.as_ptr(),
                own.col_offsets.as_ptr(),
            )
        }
    };
    let (a_ptr, a_scales, lda) = match a {
        Left::Packed(p) => {
            debug_assert_eq!(p.cols, k);
            let stride = rows_stride(k);
            // SAFETY: r0 is inside the packed rows.
            unsafe {
                (
                    p.data.as_ptr().add(r0 * stride),
                    p.scales.as_ptr().add(r0),
                    stride,
                )
            }
        }
        Left::F32(m) => {
            // SAFETY: the caller makes rows r0..r1 of `a` valid.
            unsafe {
                pack_rows(
                    &mut own.rows,
                    &mut own.row_scales,
                    MatPtr {
                        ptr: m.at(r0, 0),
                        ..m
                    },
                    rows,
                    k,
                );
            }
            (own.rows.as_ptr(), own.row_scales.as_ptr(), rows_stride(k))
        }
    };
    // Row blocks outer: each block's epilogue runs while its rows are still in cache.
    for rb in (0..rows).step_by(MR) {
        let block_rows = MR.min(rows - rb);
        for (pi, pc) in (0..cols).step_by(NR).enumerate() {
            // SAFETY: the packed rows (and their scales) are padded to whole blocks of
            // MR rows, the panels (and theirs) to whole panels, with zeros past `k`;
            // the output block lies inside `c` (caller's contract).
            unsafe {
                let operands = [a_ptr.add(rb * lda), b_ptr.add(pi * quads * NR)];
                let scales = [a_scales.add(rb), b_scales.add(pc)];
                let (out, offsets) = (c.at((r0 + rb) * ldc + c0 + pc), b_offsets.add(pc));
                let block = [block_rows, NR.min(cols - pc)];
                if block[1] <= 16 {
                    micro::<1>(operands, lda, quads, scales, offsets, out, ldc, block);
                } else {
                    micro::<2>(operands, lda, quads, scales, offsets, out, ldc, block);
                }
            }
        }
        // SAFETY: as above; the micro-kernels have just written the block's rows.
        unsafe { ep.finish_block(c, ldc, (r0 + rb, r0 + rb + block_rows), (c0, c1)) };
    }
    SCRATCH.set(own);
}

/// For maxima `m` of `|x|`, lane by lane: the factor `127 / m` that quantises
/// (0 where `m` is 0), and the scale `m / 127` that takes the integers back.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
fn scale_of(m: __m512) -> (__m512, __m512) {
    let inv = _mm512_maskz_div_ps(
        _mm512_cmp_ps_mask::<_CMP_GT_OQ>(m, _mm512_setzero_ps()),
        _mm512_set1_ps(127.0),
        m,
    );
    (inv, _mm512_mul_ps(m, _mm512_set1_ps(1.0 / 127.0)))
}

/// Packs `rows` rows of `a` (`cols` columns, unit column stride) into `dst` as
/// [`I8Rows`] data, with each row's scale in `scales` (both padded with zeros to a
/// multiple of [`MR`] rows).
///
/// # Safety
/// `a` must be valid for the rows and columns given; [`supported`] must hold.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
unsafe fn pack_rows(
    dst: &mut Vec<u32>,
    scales: &mut Vec<f32>,
    a: MatPtr,
    rows: usize,
    cols: usize,
) {
    debug_assert_eq!(a.cs, 1);
    let (stride, padded) = (rows_stride(cols), rows.next_multiple_of(MR));
    let dst = reuse(dst, padded * stride);
    dst[rows * stride..].fill(0);
    let scales = reuse(scales, padded);
    scales[rows..].fill(0.0);
    let offset = _mm512_set1_epi32(128);
    for r in 0..rows {
        // SAFETY: row r is valid (caller's contract).
        let src = unsafe { a.at(r, 0) };
        let mut m = _mm512_setzero_ps();
        for c in (0..cols).step_by(16) {
            // SAFETY: the mask keeps the load inside the row.
            let x = unsafe { _mm512_maskz_loadu_ps(lanes(cols - c), src.add(c)) };
            m = _mm512_max_ps(m, _mm512_abs_ps(x));
        }
        let (inv, scale) = scale_of(_mm512_set1_ps(_mm512_reduce_max_ps(m)));
        scales[r] = _mm512_cvtss_f32(scale);
        for (q, chunk) in dst[r * stride..(r + 1) * stride]
            .chunks_exact_mut(4)
            .enumerate()
        {
            let c = 16 * q;
            // SAFETY: the mask keeps the load inside the row; the store writes 16 bytes.
            unsafe {
                let x = _mm512_maskz_loadu_ps(lanes(cols - c), src.add(c));
                let v = _mm512_add_epi32(_mm512_cvtps_epi32(_mm512_mul_ps(x, inv)), offset);
                _mm_storeu_si128(chunk.as_mut_ptr().cast(), _mm512_cvtepi32_epi8(v));
            }
        }
    }
}

/// Chunks of 16 columns that [`pack_panels`] quantises together: their maxima,
/// scales and sums stay in registers, and their rows in the cache between its two
/// passes.
const CHUNKS: usize = 8;

/// Packs columns `c0..c1` of `b` (`k` rows, unit column stride) into `dst` as
/// [`I8Panels`] data, with each column's scale in `scales` and `128 ×` the sum of its
/// integers in `offsets` (both padded with zeros to whole panels).
///
/// # Safety
/// `b` must be valid for the rows and columns given; [`supported`] must hold.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
unsafe fn pack_panels(
    dst: &mut Vec<u32>,
    scales: &mut Vec<f32>,
    offsets: &mut Vec<i32>,
    b: MatPtr,
    k: usize,
    (c0, c1): (usize, usize),
) {
    debug_assert_eq!(b.cs, 1);
    let (cols, quads) = (c1 - c0, k.div_ceil(4));
    let panels = cols.div_ceil(NR);
    let dst = reuse(dst, panels * quads * NR);
    let scales = reuse(scales, panels * NR);
    let offsets = reuse(offsets, panels * NR);
    let chunks = panels * NR / 16;
    let byte = _mm512_set1_epi32(0xff);
    for first in (0..chunks).step_by(CHUNKS) {
        let n = CHUNKS.min(chunks - first);
        let masks: [__mmask16; CHUNKS] =
            std::array::from_fn(|i| lanes(cols.saturating_sub(16 * (first + i))));
        // SAFETY: the masks keep every load inside columns c0..c1 of row p < k.
        let load = |p: usize, i: usize| unsafe {
            _mm512_maskz_loadu_ps(masks[i], b.at(p, c0 + 16 * (first + i)))
        };
        let mut maxima = [_mm512_setzero_ps(); CHUNKS];
        for p in 0..k {
            for (i, m) in maxima.iter_mut().enumerate().take(n) {
                *m = _mm512_max_ps(*m, _mm512_abs_ps(load(p, i)));
            }
        }
        let mut inverses = [_mm512_setzero_ps(); CHUNKS];
        for i in 0..n {
            let (inv, scale) = scale_of(maxima[i]);
            inverses[i] = inv;
            // SAFETY: chunk first + i of `scales` holds 16 values.
            unsafe { _mm512_storeu_ps(scales[16 * (first + i)..].as_mut_ptr(), scale) };
        }
        let mut sums = [_mm512_setzero_si512(); CHUNKS];
        for q in 0..quads {
            for i in 0..n {
                let mut quad = _mm512_setzero_si512();
                for r in 0..4.min(k - 4 * q) {
                    let v = _mm512_cvtps_epi32(_mm512_mul_ps(load(4 * q + r, i), inverses[i]));
                    sums[i] = _mm512_add_epi32(sums[i], v);
                    quad = _mm512_or_si512(
                        quad,
                        _mm512_sllv_epi32(
                            _mm512_and_si512(v, byte),
                            _mm512_set1_epi32(8 * r as i32),
                        ),
                    );
                }
                let j = first + i;
                let at = (j / 2 * quads + q) * NR + 16 * (j % 2);
                // SAFETY: writes 16 u32 of quad q in panel j / 2.
                unsafe { _mm512_storeu_si512(dst[at..].as_mut_ptr().cast(), quad) };
            }
        }
        for (i, sum) in sums.iter().enumerate().take(n) {
            // SAFETY: chunk first + i of `offsets` holds 16 values.
            unsafe {
                _mm512_storeu_si512(
                    offsets[16 * (first + i)..].as_mut_ptr().cast(),
                    _mm512_slli_epi32::<7>(*sum),
                )
            };
        }
    }
}

/// `c[rows, cols] = a[rows, :] · b[:, cols]` for one block of at most [`MR`] rows
/// and one panel of at most `16 * HALVES` columns (of [`NR`]), over `quads` quads of
/// the inner dimension, scaled back to `f32` with the rows' and columns' `scales`
/// after the columns' `offsets` are taken off.
///
/// # Safety
/// `a` must hold [`MR`] rows of `quads` quads at stride `lda`, `b` one panel of
/// `quads` quads, the scales [`MR`] and [`NR`] values, `offsets` [`NR`], and `c`
/// (row stride `ldc`) `rows` rows of `cols` columns; [`supported`] must hold.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
#[allow(clippy::too_many_arguments)]
unsafe fn micro<const HALVES: usize>(
    [a, b]: [*const u32; 2],
    lda: usize,
    quads: usize,
    [a_scales, b_scales]: [*const f32; 2],
    offsets: *const i32,
    c: *mut f32,
    ldc: usize,
    [rows, cols]: [usize; 2],
) {
    let mut acc = [[_mm512_setzero_si512(); HALVES]; MR];
    for q in 0..quads {
        // SAFETY: inside the panel and rows (caller's contract).
        unsafe {
            let b: [__m512i; HALVES] =
                std::array::from_fn(|h| _mm512_loadu_si512(b.add(q * NR + 16 * h).cast()));
            for (r, acc) in acc.iter_mut().enumerate() {
                let av = _mm512_set1_epi32(*a.add(r * lda + q) as i32);
                for (acc, b) in acc.iter_mut().zip(b) {
                    *acc = _mm512_dpbusd_epi32(*acc, av, b);
                }
            }
        }
    }
    // A whole block goes straight to `c`; a partial one through a buffer, so that the
    // accumulators are never indexed at run time (which would keep them in memory).
    let mut edge = [std::mem::MaybeUninit::<f32>::uninit(); MR * NR];
    let whole = rows == MR && cols == 16 * HALVES;
    let (dst, ld) = if whole {
        (c, ldc)
    } else {
        (edge.as_mut_ptr().cast::<f32>(), NR)
    };
    // SAFETY: the scales and offsets hold whole blocks and panels (caller's contract);
    // each store writes row r of the block, 16 columns of half h, in `c` or in `edge`.
    unsafe {
        let offsets: [__m512i; HALVES] =
            std::array::from_fn(|h| _mm512_loadu_si512(offsets.add(16 * h).cast()));
        let scales: [__m512; HALVES] =
            std::array::from_fn(|h| _mm512_loadu_ps(b_scales.add(16 * h)));
        for (r, acc) in acc.iter().enumerate() {
            let sa = _mm512_set1_ps(*a_scales.add(r));
            for h in 0..HALVES {
                let v = _mm512_cvtepi32_ps(_mm512_sub_epi32(acc[h], offsets[h]));
                let v = _mm512_mul_ps(_mm512_mul_ps(v, scales[h]), sa);
                _mm512_storeu_ps(dst.add(r * ld + 16 * h), v);
            }
        }
    }
    if !whole {
        // SAFETY: the stores above wrote every element of `edge`; `c` holds the
        // block's `rows` rows of `cols` columns (caller's contract).
        unsafe { crate::bf16::copy_edge(edge.as_ptr().cast(), c, ldc, rows, cols) };
    }
}

#[cfg(not(target_arch = "x86_64"))]
unsafe fn pack_rows(_: &mut Vec<u32>, _: &mut Vec<f32>, _: MatPtr, _: usize, _: usize) {
    unreachable!("int8 products run only on x86_64 with AVX512_VNNI")
}

#[cfg(not(target_arch = "x86_64"))]
unsafe fn pack_panels(
    _: &mut Vec<u32>,
    _: &mut Vec<f32>,
    _: &mut Vec<i32>,
    _: MatPtr,
    _: usize,
    _: (usize, usize),
) {
    unreachable!("int8 products run only on x86_64 with AVX512_VNNI")
}

#[cfg(not(target_arch = "x86_64"))]
#[allow(clippy::too_many_arguments)]
unsafe fn micro<const HALVES: usize>(
    _: [*const u32; 2],
    _: usize,
    _: usize,
    _: [*const f32; 2],
    _: *const i32,
    _: *mut f32,
    _: usize,
    _: [usize; 2],
) {
    unreachable!("int8 products run only on x86_64 with AVX512_VNNI")
}
