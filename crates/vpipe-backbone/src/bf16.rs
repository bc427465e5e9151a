//! Matrix products in bf16, for [`Precision::Bf16`].
//!
//! Both operands are rounded to bf16 (round to nearest even) and multiplied with
//! AVX512_BF16's `vdpbf16ps`, which adds the products of two bf16 pairs into each
//! `f32` lane: twice the multiply-adds of an `f32` FMA per instruction. Sums are kept
//! in `f32`, so the only loss is the rounding of the inputs (8 bits of mantissa).
//!
//! - The left operand ([`Bf16Rows`]) is row-major, each `u32` holding two
//!   neighbouring columns; a micro-kernel broadcasts one pair of each of [`MR`] rows.
//! - The right operand ([`Bf16Panels`]) is cut into panels of [`NR`] columns, each
//!   `u32` holding two neighbouring rows of one column, so one 512-bit load gives a
//!   row pair of 16 columns.
//!
//! Weights are packed once, when a model is loaded; activations are packed per call
//! by the task that multiplies them.
//!
//! Where the processor has AMX ([`amx::available`]), the same packed operands are
//! multiplied tile by tile on AMX instead; the rows are then padded to whole tiles
//! ([`row_block`]) and the panels to whole tiles of row pairs.

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

#[cfg(target_arch = "x86_64")]
use crate::activation::exp_avx512_coarse_unclamped;
use crate::amx;
use crate::cpu::{Bias, Epilogue, MatPtr, OutPtr, reuse};
use crate::layers::Activation;
use crate::precision::Precision;

/// Rows of the left operand per AVX512_BF16 micro-kernel call.
pub const MR: usize = 12;
/// Columns of the right operand per panel.
pub const NR: usize = 32;

thread_local! {
    /// Each thread's attention weights of one head, kept between calls.
    static WEIGHTS_BUFFER: std::cell::Cell<(Bf16Rows, Vec<f32>)> = std::cell::Cell::default();
    /// Each thread's packed left rows, kept between calls.
    static ROWS_BUFFER: std::cell::Cell<Vec<u32>> = const { std::cell::Cell::new(Vec::new()) };
    /// Each thread's packed right panels, kept between calls.
    static PANELS_BUFFER: std::cell::Cell<Vec<u32>> = const { std::cell::Cell::new(Vec::new()) };
}

/// Whether this processor runs the bf16 products: AVX-512 with AVX512_BF16, and no
/// lower vector unit chosen with [`vpipe_simd::SIMD_ENV`].
pub fn supported() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        vpipe_simd::level() == vpipe_simd::Level::Avx512
            && std::arch::is_x86_feature_detected!("avx512bf16")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// The rows of a packed left operand are padded to a multiple of this, and the
/// products' row tiles start at multiples of it: an AMX tile's rows where AMX runs
/// the products, else the AVX512_BF16 micro-kernel's [`MR`].
pub fn row_block() -> usize {
    if amx::available() { amx::ROWS } else { MR }
}

/// Pairs of rows per panel of a packed right operand with inner dimension `k`:
/// padded to whole AMX tiles where AMX runs the products.
fn panel_pairs(k: usize) -> usize {
    let pairs = k.div_ceil(2);
    if amx::available() {
        pairs.next_multiple_of(amx::PAIRS)
    } else {
        pairs
    }
}

/// Panics unless [`supported`]: callers choose bf16 only after checking it (see
/// [`crate::Precision::resolve`]), so an unsupported processor never reaches an
/// illegal instruction.
fn require_support() {
    assert!(
        supported(),
        "bf16 products need AVX512_BF16; resolve the precision first"
    );
}

/// A left operand in bf16: `rows` rows of pairs of columns, the row stride a
/// multiple of 16 pairs and the rows padded with zeros to a multiple of
/// [`row_block`].
#[derive(Debug, Clone, Default)]
pub struct Bf16Rows {
    data: Vec<u32>,
    rows: usize,
    cols: usize,
    stride: usize,
}

impl Bf16Rows {
    /// `x` `[rows, cols]`, row-major, rounded to bf16.
    pub fn new(x: &[f32], rows: usize, cols: usize) -> Self {
        assert_eq!(x.len(), rows * cols, "Bf16Rows: input is not [rows, cols]");
        require_support();
        let mut data = Vec::new();
        let stride = rows_stride(cols);
        let a = MatPtr {
            ptr: x.as_ptr(),
            rs: cols as isize,
            cs: 1,
        };
        // SAFETY: `a` views exactly `x`; support was checked above.
        unsafe { pack_rows(&mut data, a, rows, cols) };
        Self {
            data,
            rows,
            cols,
            stride,
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

/// A right operand in bf16: `[rows, cols]` cut into panels of [`NR`] columns, each
/// panel `[rows / 2, NR]` pairs of rows (padded with zeros, also to whole AMX tiles
/// where AMX runs the products).
#[derive(Debug, Clone)]
pub struct Bf16Panels {
    data: Vec<u32>,
    rows: usize,
    cols: usize,
}

impl Bf16Panels {
    /// `x` `[rows, cols]`, row-major, rounded to bf16.
    pub fn new(x: &[f32], rows: usize, cols: usize) -> Self {
        assert_eq!(
            x.len(),
            rows * cols,
            "Bf16Panels: input is not [rows, cols]"
        );
        require_support();
        let mut data = Vec::new();
        let b = MatPtr {
            ptr: x.as_ptr(),
            rs: cols as isize,
            cs: 1,
        };
        // SAFETY: `b` views exactly `x`; support was checked above.
        unsafe { pack_panels(&mut data, b, rows, (0, cols)) };
        Self { data, rows, cols }
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

/// `u32` pairs per packed left row: the pairs of `cols` columns, rounded up to 16.
fn rows_stride(cols: usize) -> usize {
    cols.div_ceil(2).next_multiple_of(16)
}

/// The left operand of a product.
#[derive(Clone, Copy)]
pub(crate) enum Left<'a> {
    /// Packed once.
    Packed(&'a Bf16Rows),
    /// `f32` rows with unit column stride, packed by each task for its rows.
    F32(MatPtr),
}

/// The right operand of a product.
#[derive(Clone, Copy)]
pub(crate) enum Right<'a> {
    /// Packed once.
    Packed(&'a Bf16Panels),
    /// `f32` rows with unit column stride, packed by each task for its columns.
    F32(MatPtr),
    /// `f32`, given as its transpose (`[cols, k]` with unit column stride: the keys
    /// of attention scores), packed by each task for its columns.
    F32Transposed(MatPtr),
}

/// `c[r0..r1, c0..c1] = a[r0..r1, :] · b[:, c0..c1]` in bf16, then `ep` on that
/// block; `r0` must be a multiple of [`row_block`] and `c0` of [`NR`].
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
    debug_assert!(r0.is_multiple_of(row_block()) && c0.is_multiple_of(NR));
    let (rows, cols) = (r1 - r0, c1 - c0);
    let (pairs, ppairs) = (k.div_ceil(2), panel_pairs(k));
    let mut own_rows = ROWS_BUFFER.take();
    let mut own_panels = PANELS_BUFFER.take();
    // The right operand first: packing a transpose uses the rows buffer on the way.
    let b_ptr = match b {
        Right::Packed(p) => {
            debug_assert_eq!(p.rows, k);
            // SAFETY: panel c0 / NR is inside the packed panels.
            unsafe { p.data.as_ptr().add(c0 / NR * ppairs * NR) }
        }
        Right::F32(m) => {
            // SAFETY: the caller makes columns c0..c1 of `b` valid.
            unsafe { pack_panels(&mut own_panels, m, k, (c0, c1)) };
            own_panels.as_ptr()
        }
        Right::F32Transposed(m) => {
            // SAFETY: as above, for rows c0..c1 of the transpose.
            unsafe { pack_panels_transposed(&mut own_panels, &mut own_rows, m, k, (c0, c1)) };
            own_panels.as_ptr()
        }
    };
    let (a_ptr, lda) = match a {
        Left::Packed(p) => {
            debug_assert_eq!(p.cols, k);
            // SAFETY: r0 is inside the packed rows.
            (unsafe { p.data.as_ptr().add(r0 * p.stride) }, p.stride)
        }
        Left::F32(m) => {
            // SAFETY: the caller makes rows r0..r1 of `a` valid.
            unsafe {
                pack_rows(
                    &mut own_rows,
                    MatPtr {
                        ptr: m.at(r0, 0),
                        ..m
                    },
                    rows,
                    k,
                );
            }
            (own_rows.as_ptr(), rows_stride(k))
        }
    };
    let on_amx = amx::available();
    let step = if on_amx { amx::BLOCK_ROWS } else { MR };
    if on_amx {
        // SAFETY: AMX is available.
        unsafe { amx::configure() };
    }
    // Row blocks outer: each block's epilogue runs while its rows are still in cache.
    for rb in (0..rows).step_by(step) {
        let block_rows = step.min(rows - rb);
        for (pi, pc) in (0..cols).step_by(NR).enumerate() {
            let (a, b) = (
                // SAFETY: inside the packed rows and panels.
                unsafe { a_ptr.add(rb * lda) },
                unsafe { b_ptr.add(pi * ppairs * NR) },
            );
            // SAFETY: the output block lies inside `c` (caller's contract).
            let out = unsafe { c.at((r0 + rb) * ldc + c0 + pc) };
            let block_cols = NR.min(cols - pc);
            // SAFETY: the packed rows are padded to whole blocks of `row_block()` rows
            // (and the rows past r1 in a block are rows of the operand or padding), the
            // panels to whole panels of `ppairs` pairs, with zeros past `pairs`.
            unsafe {
                if on_amx {
                    let steps = ppairs / amx::PAIRS;
                    amx::block(a, lda, b, steps, out, ldc, block_rows, block_cols);
                } else if block_cols <= 16 {
                    micro::<1>(a, lda, b, pairs, out, ldc, block_rows, block_cols);
                } else {
                    micro::<2>(a, lda, b, pairs, out, ldc, block_rows, block_cols);
                }
            }
        }
        // SAFETY: as above; the micro-kernels have just written the block's rows.
        unsafe { ep.finish_block(c, ldc, (r0 + rb, r0 + rb + block_rows), (c0, c1)) };
    }
    if on_amx {
        // SAFETY: AMX is available.
        unsafe { amx::release() };
    }
    ROWS_BUFFER.set(own_rows);
    PANELS_BUFFER.set(own_panels);
}

/// One head of scaled dot-product attention in bf16: `dst[tokens, hd]` (row stride
/// `ldd`) `= softmax(scale * q · kᵀ) · v`, `q`, `k`, `v` being `[tokens, hd]` views
/// with unit column stride. Both products run in bf16; the softmax's exponentials
/// ([`exp_avx512_coarse_unclamped`]) are packed as bf16 as they are made, and the rows are
/// divided by their sums after the second product. `scores` is scratch space.
///
/// # Safety
/// The views must be valid for `[tokens, hd]`, and `dst` for `tokens` rows of `hd`
/// columns that belong to the calling task alone; [`supported`] must hold.
pub(crate) unsafe fn attention_head(
    [q, k, v]: [MatPtr; 3],
    [tokens, hd]: [usize; 2],
    scale: f32,
    scores: &mut Vec<f32>,
    dst: OutPtr,
    ldd: usize,
) {
    let plain = Epilogue {
        bias: Bias::None,
        act: Activation::Identity,
        residual: None,
        precision: Precision::Bf16,
    };
    let all = (0, tokens);
    scores.resize(tokens * tokens, 0.0);
    let (mut weights, mut inv) = WEIGHTS_BUFFER.take();
    // SAFETY: the views hold [tokens, hd] (caller's contract); `scores` is
    // [tokens, tokens], and the weights are packed from it.
    unsafe {
        let s = OutPtr(scores.as_mut_ptr());
        tile(
            Left::F32(q),
            Right::F32Transposed(k),
            hd,
            s,
            tokens,
            all,
            all,
            &plain,
        );
        softmax_weights(&mut weights, &mut inv, scores, tokens, scale);
        tile(
            Left::Packed(&weights),
            Right::F32(v),
            tokens,
            dst,
            ldd,
            all,
            (0, hd),
            &plain,
        );
    }
    for (t, inv) in inv.iter().enumerate() {
        // SAFETY: row t of the output block (caller's contract).
        let row = unsafe { std::slice::from_raw_parts_mut(dst.at(t * ldd), hd) };
        row.iter_mut().for_each(|x| *x *= inv);
    }
    WEIGHTS_BUFFER.set((weights, inv));
}

/// For each row of `x` `[rows, cols]`: `e = exp(scale * (x - max))` packed into
/// `dst` as bf16, and `1 / sum(e)` in `inv`.
///
/// # Safety
/// [`supported`] must hold.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
unsafe fn softmax_weights(
    dst: &mut Bf16Rows,
    inv: &mut Vec<f32>,
    x: &[f32],
    rows: usize,
    scale: f32,
) {
    let cols = x.len() / rows.max(1);
    let stride = rows_stride(cols);
    let data = reuse(&mut dst.data, rows.next_multiple_of(row_block()) * stride);
    data[rows * stride..].fill(0);
    inv.clear();
    let scale = _mm512_set1_ps(scale);
    for (r, out) in data.chunks_exact_mut(stride).take(rows).enumerate() {
        let src = x[r * cols..].as_ptr();
        // SAFETY: the masks keep every load inside row r; each store writes 16 u32.
        unsafe {
            let mut m = _mm512_set1_ps(f32::NEG_INFINITY);
            for c in (0..cols).step_by(16) {
                let mask = lanes(cols - c);
                m = _mm512_mask_max_ps(m, mask, m, _mm512_maskz_loadu_ps(mask, src.add(c)));
            }
            // scale * (x - max) as one multiply-add: at most 0, but for its rounding.
            let shift = _mm512_mul_ps(_mm512_set1_ps(_mm512_reduce_max_ps(m)), scale);
            let exp = |mask: __mmask16, at: *const f32| {
                let x = _mm512_fmsub_ps(_mm512_maskz_loadu_ps(mask, at), scale, shift);
                _mm512_maskz_mov_ps(mask, exp_avx512_coarse_unclamped(x))
            };
            let mut acc = _mm512_setzero_ps();
            for (q, chunk) in out.chunks_exact_mut(16).enumerate() {
                let c = 32 * q;
                if c >= cols {
                    chunk.fill(0);
                    continue;
                }
                let lo = exp(lanes(cols - c), src.add(c));
                let hi = exp(lanes(cols.saturating_sub(c + 16)), src.wrapping_add(c + 16));
                acc = _mm512_add_ps(acc, _mm512_add_ps(lo, hi));
                let packed: __m512i = std::mem::transmute(_mm512_cvtne2ps_pbh(hi, lo));
                _mm512_storeu_si512(chunk.as_mut_ptr().cast(), packed);
            }
            inv.push(1.0 / _mm512_reduce_add_ps(acc));
        }
    }
    (dst.rows, dst.cols, dst.stride) = (rows, cols, stride);
}

/// Packs `rows` rows of `a` (`cols` columns, unit column stride) into `dst` as
/// [`Bf16Rows`] data.
///
/// # Safety
/// `a` must be valid for the rows and columns given; [`supported`] must hold.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
unsafe fn pack_rows(dst: &mut Vec<u32>, a: MatPtr, rows: usize, cols: usize) {
    debug_assert_eq!(a.cs, 1);
    let stride = rows_stride(cols);
    let dst = reuse(dst, rows.next_multiple_of(row_block()) * stride);
    dst[rows * stride..].fill(0);
    for r in 0..rows {
        // SAFETY: row r is valid (caller's contract).
        let src = unsafe { a.at(r, 0) };
        let out = &mut dst[r * stride..(r + 1) * stride];
        for (q, chunk) in out.chunks_exact_mut(16).enumerate() {
            let c = 32 * q;
            if c >= cols {
                chunk.fill(0);
                continue;
            }
            // SAFETY: the masks keep the loads inside the row; the store writes 16 u32.
            unsafe {
                let lo = _mm512_maskz_loadu_ps(lanes(cols - c), src.add(c));
                let hi = _mm512_maskz_loadu_ps(
                    lanes(cols.saturating_sub(c + 16)),
                    src.wrapping_add(c + 16),
                );
                let packed: __m512i = std::mem::transmute(_mm512_cvtne2ps_pbh(hi, lo));
                _mm512_storeu_si512(chunk.as_mut_ptr().cast(), packed);
            }
        }
    }
}

/// Packs columns `c0..c1` of `b` (`k` rows, unit column stride) into `dst` as
/// [`Bf16Panels`] data.
///
/// # Safety
/// `b` must be valid for the rows and columns given; [`supported`] must hold.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
unsafe fn pack_panels(dst: &mut Vec<u32>, b: MatPtr, k: usize, (c0, c1): (usize, usize)) {
    debug_assert_eq!(b.cs, 1);
    let (pairs, ppairs) = (k.div_ceil(2), panel_pairs(k));
    let cols = c1 - c0;
    let dst = reuse(dst, cols.div_ceil(NR) * ppairs * NR);
    // Interleaves [x0..x15, y0..y15] into [x0, y0, x1, y1, ...].
    let idx: [i16; 32] = std::array::from_fn(|i| (i / 2 + 16 * (i % 2)) as i16);
    // SAFETY: reads 32 i16.
    let idx = unsafe { _mm512_loadu_si512(idx.as_ptr().cast()) };
    for (pi, panel) in dst.chunks_exact_mut(ppairs * NR).enumerate() {
        let pc = pi * NR;
        panel[pairs * NR..].fill(0);
        for p in 0..pairs {
            for h in 0..NR / 16 {
                let c = pc + 16 * h;
                let mask = lanes(cols.saturating_sub(c));
                if mask == 0 {
                    panel[p * NR + 16 * h..][..16].fill(0);
                    continue;
                }
                // SAFETY: the masks keep the loads inside rows 2p and 2p + 1 (when
                // there is one) and columns c0..c1; the store writes 16 u32.
                unsafe {
                    let x = _mm512_maskz_loadu_ps(mask, b.at(2 * p, c0 + c));
                    let y = if 2 * p + 1 < k {
                        _mm512_maskz_loadu_ps(mask, b.at(2 * p + 1, c0 + c))
                    } else {
                        _mm512_setzero_ps()
                    };
                    let both: __m512i = std::mem::transmute(_mm512_cvtne2ps_pbh(y, x));
                    let pairs_v = _mm512_permutexvar_epi16(idx, both);
                    _mm512_storeu_si512(panel[p * NR + 16 * h..].as_mut_ptr().cast(), pairs_v);
                }
            }
        }
    }
}

/// Packs columns `c0..c1` of the matrix whose transpose is `bt` (`[cols, k]`, unit
/// column stride) into `dst` as [`Bf16Panels`] data; `scratch` holds the packed rows
/// of `bt` on the way.
///
/// # Safety
/// `bt` must be valid for rows `c0..c1` and `k` columns; [`supported`] must hold.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
unsafe fn pack_panels_transposed(
    dst: &mut Vec<u32>,
    scratch: &mut Vec<u32>,
    bt: MatPtr,
    k: usize,
    (c0, c1): (usize, usize),
) {
    let cols = c1 - c0;
    // SAFETY: rows c0..c1 of `bt` are valid (caller's contract).
    unsafe {
        pack_rows(
            scratch,
            MatPtr {
                ptr: bt.at(c0, 0),
                ..bt
            },
            cols,
            k,
        )
    };
    // The packed rows' stride (whole tiles of 16 pairs) covers the panels' pairs,
    // and past the `k` columns they hold zeros.
    let (ppairs, stride) = (panel_pairs(k), rows_stride(k));
    debug_assert!(ppairs <= stride);
    let dst = reuse(dst, cols.div_ceil(NR) * ppairs * NR);
    for (pi, panel) in dst.chunks_exact_mut(ppairs * NR).enumerate() {
        for j in 0..NR {
            let c = pi * NR + j;
            for p in 0..ppairs {
                // Row c of the packed transpose holds column c's pairs; the rows past
                // `cols` in the last row block are zeros, and later ones are padding.
                panel[p * NR + j] = if c < cols { scratch[c * stride + p] } else { 0 };
            }
        }
    }
}

/// The mask of the first `n` of 16 lanes.
#[cfg(target_arch = "x86_64")]
pub(crate) fn lanes(n: usize) -> __mmask16 {
    if n >= 16 { 0xffff } else { (1u16 << n) - 1 }
}

/// `c[rows, cols] = a[rows, :] · b[:, cols]` for one block of at most [`MR`] rows
/// and one panel of at most `16 * HALVES` columns (of [`NR`]), over `pairs` pairs of
/// the inner dimension. With `HALVES = 1` only the panel's first 16 columns are
/// multiplied: attention's values with heads of 16 columns, say.
///
/// # Safety
/// `a` must hold [`MR`] rows of `pairs` pairs at stride `lda`, `b` one panel of
/// `pairs` pairs, and `c` (row stride `ldc`) `rows` rows of `cols` columns;
/// [`supported`] must hold.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
#[allow(clippy::too_many_arguments)]
unsafe fn micro<const HALVES: usize>(
    a: *const u32,
    lda: usize,
    b: *const u32,
    pairs: usize,
    c: *mut f32,
    ldc: usize,
    rows: usize,
    cols: usize,
) {
    let mut acc = [[_mm512_setzero_ps(); HALVES]; MR];
    for p in 0..pairs {
        // SAFETY: inside the panel and rows (caller's contract).
        unsafe {
            let b: [__m512bh; HALVES] = std::array::from_fn(|h| {
                std::mem::transmute(_mm512_loadu_si512(b.add(p * NR + 16 * h).cast()))
            });
            for (r, acc) in acc.iter_mut().enumerate() {
                let av: __m512bh =
                    std::mem::transmute(_mm512_set1_epi32(*a.add(r * lda + p) as i32));
                for (acc, b) in acc.iter_mut().zip(b) {
                    *acc = _mm512_dpbf16_ps(*acc, av, b);
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
    for (r, acc) in acc.iter().enumerate() {
        for (h, acc) in acc.iter().enumerate() {
            // SAFETY: row r of the block, 16 columns of half h, in `c` or in `edge`.
            unsafe { _mm512_storeu_ps(dst.add(r * ld + 16 * h), *acc) };
        }
    }
    if !whole {
        // SAFETY: the stores above wrote every element of `edge`; `c` holds the
        // block's `rows` rows of `cols` columns (caller's contract).
        unsafe { copy_edge(edge.as_ptr().cast(), c, ldc, rows, cols) };
    }
}

/// Copies the first `rows` rows and `cols` columns of a block buffered in `edge`
/// (row stride [`NR`]) to `c` (row stride `ldc`): how the kernels write a partial
/// block.
///
/// # Safety
/// `edge` must hold `rows` initialised rows of [`NR`] floats, and `c` `rows` rows of
/// `cols` columns at stride `ldc`.
pub(crate) unsafe fn copy_edge(
    edge: *const f32,
    c: *mut f32,
    ldc: usize,
    rows: usize,
    cols: usize,
) {
    for r in 0..rows {
        // SAFETY: row r of both (caller's contract).
        unsafe { std::ptr::copy_nonoverlapping(edge.add(r * NR), c.add(r * ldc), cols) };
    }
}

#[cfg(not(target_arch = "x86_64"))]
unsafe fn pack_rows(_: &mut Vec<u32>, _: MatPtr, _: usize, _: usize) {
    unreachable!("bf16 products run only on x86_64 with AVX512_BF16")
}

#[cfg(not(target_arch = "x86_64"))]
unsafe fn softmax_weights(_: &mut Bf16Rows, _: &mut Vec<f32>, _: &[f32], _: usize, _: f32) {
    unreachable!("bf16 products run only on x86_64 with AVX512_BF16")
}

#[cfg(not(target_arch = "x86_64"))]
unsafe fn pack_panels(_: &mut Vec<u32>, _: MatPtr, _: usize, _: (usize, usize)) {
    unreachable!("bf16 products run only on x86_64 with AVX512_BF16")
}

#[cfg(not(target_arch = "x86_64"))]
unsafe fn pack_panels_transposed(
    _: &mut Vec<u32>,
    _: &mut Vec<u32>,
    _: MatPtr,
    _: usize,
    _: (usize, usize),
) {
    unreachable!("bf16 products run only on x86_64 with AVX512_BF16")
}

#[cfg(not(target_arch = "x86_64"))]
#[allow(clippy::too_many_arguments)]
unsafe fn micro<const HALVES: usize>(
    _: *const u32,
    _: usize,
    _: *const u32,
    _: usize,
    _: *mut f32,
    _: usize,
    _: usize,
    _: usize,
) {
    unreachable!("bf16 products run only on x86_64 with AVX512_BF16")
}
