//! `f32` products against a right operand packed once into column panels: the
//! linear layers' weights.
//!
//! The `gemm` crate packs both operands at every call; for a linear layer that
//! means copying its whole weight matrix each time. Here the weight `[d_in, d_out]`
//! is cut into panels of [`NR`] columns when the model is loaded (each panel
//! `[d_in, NR]`, contiguous), and an AVX-512 micro-kernel multiplies [`MR`] rows of
//! the activations, read where they are, by one panel: 24 accumulators, three
//! 16-lane loads and eight broadcasts per step of the inner dimension.
//!
//! Every output is one chain of fused multiply-adds over the inner dimension, in
//! order, from zero, which is how `gemm` sums when the inner dimension fits one of
//! its blocks (up to 512, every transformer layer of MobileViT): the outputs are
//! the same to the bit. The bias, activation and residual are applied in
//! registers, lane for lane as the epilogue of the other products computes them.

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

use crate::cpu::{Epilogue, MatPtr, OutPtr};

/// Rows of the left operand per micro-kernel call.
pub const MR: usize = 8;
/// Columns per panel: three 16-lane vectors (narrower panels only at the end).
pub const NR: usize = 48;

/// A right operand `[rows, cols]` cut into column panels, each `[rows, width]`
/// row-major with its rows padded with zeros to whole 16-lane vectors. Panels are
/// [`NR`] wide, except that the last columns go into one narrower panel, or, when
/// 16 are left over, into two panels of 32 (a 16-wide panel would keep too few
/// sums in flight).
#[derive(Debug, Clone)]
pub struct F32Panels {
    data: Vec<f32>,
    rows: usize,
    cols: usize,
    /// Each panel's first column, width and offset in `data`.
    panels: Vec<Panel>,
}

/// One panel of [`F32Panels`].
#[derive(Debug, Clone, Copy)]
struct Panel {
    col: usize,
    width: usize,
    offset: usize,
}

impl Panel {
    /// 16-lane vectors per row.
    fn vectors(&self) -> usize {
        self.width.div_ceil(16)
    }
}

impl F32Panels {
    /// `x` `[rows, cols]`, row-major.
    pub fn new(x: &[f32], rows: usize, cols: usize) -> Self {
        assert_eq!(x.len(), rows * cols, "F32Panels: input is not [rows, cols]");
        let mut widths = vec![NR; cols / NR];
        match cols % NR {
            0 => {}
            16 if !widths.is_empty() => {
                widths.pop();
                widths.extend([32, 32]);
            }
            rest => widths.push(rest),
        }
        let mut panels = Vec::with_capacity(widths.len());
        let (mut col, mut offset) = (0, 0);
        for width in widths {
            let panel = Panel { col, width, offset };
            offset += rows * 16 * panel.vectors();
            col += width;
            panels.push(panel);
        }
        let mut data = vec![0.0; offset];
        for p in &panels {
            let stride = 16 * p.vectors();
            for r in 0..rows {
                let src = &x[r * cols + p.col..r * cols + p.col + p.width];
                data[p.offset + r * stride..][..p.width].copy_from_slice(src);
            }
        }
        Self {
            data,
            rows,
            cols,
            panels,
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

/// `c[r0..r1, :] = a[r0..r1, :] · b`, then `ep` on those rows. With AVX-512 the
/// micro-kernel below, else `gemm` panel by panel.
///
/// # Safety
/// `a` must be valid for rows `r0..r1` and `b.rows()` columns, with unit column
/// stride; rows `r0..r1` of `c` (row stride `ldc`, `b.cols()` columns) must be
/// valid and belong to the calling task alone.
pub(crate) unsafe fn tile(
    a: MatPtr,
    b: &F32Panels,
    c: OutPtr,
    ldc: usize,
    (r0, r1): (usize, usize),
    ep: &Epilogue,
) {
    debug_assert!(a.cs == 1);
    #[cfg(target_arch = "x86_64")]
    if vpipe_simd::level() == vpipe_simd::Level::Avx512 {
        // SAFETY: AVX-512F is present; the rest is the caller's contract.
        unsafe { tile_avx512(a, b, c, ldc, (r0, r1), ep) };
        return;
    }
    for p in &b.panels {
        // SAFETY: rows r0..r1 of `a`, the panel and the rows of `c` are valid
        // (caller's contract).
        unsafe {
            gemm::gemm(
                r1 - r0,
                p.width,
                b.rows,
                c.at(r0 * ldc + p.col),
                1,
                ldc as isize,
                false,
                a.at(r0, 0),
                a.cs,
                a.rs,
                b.data[p.offset..].as_ptr(),
                1,
                (16 * p.vectors()) as isize,
                1.0,
                1.0,
                false,
                false,
                false,
                gemm::Parallelism::None,
            );
        }
    }
    // SAFETY: the rows have just been written.
    unsafe { ep.finish_block(c, ldc, (r0, r1), (0, b.cols)) };
}

/// [`tile`] with the AVX-512 micro-kernel: row blocks outer (their rows of `a`
/// stay in cache while every panel passes), panels inner. Columns past the last
/// whole 16-lane vector get the epilogue afterwards, as [`Epilogue::finish`] gives
/// them (its scalar tail).
///
/// # Safety
/// As [`tile`], and the processor must have AVX-512F.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn tile_avx512(
    a: MatPtr,
    b: &F32Panels,
    c: OutPtr,
    ldc: usize,
    (r0, r1): (usize, usize),
    ep: &Epilogue,
) {
    let k = b.rows;
    // Columns 0..vector_end take the epilogue in registers.
    let vector_end = b.cols / 16 * 16;
    for rb in (r0..r1).step_by(MR) {
        let rows = MR.min(r1 - rb);
        // Rows past the block's end repeat its last row; their sums are dropped.
        // SAFETY: every row pointer is a row of the block (caller's contract).
        let a_rows: [*const f32; MR] =
            std::array::from_fn(|i| unsafe { a.at(rb + i.min(rows - 1), 0) });
        for p in &b.panels {
            let panel = b.data[p.offset..].as_ptr();
            let out = Block {
                c,
                ldc,
                row: rb,
                rows,
                col: p.col,
                width: p.width,
                vector_end,
            };
            // SAFETY: the panel holds k rows of whole vectors (zero padded); the
            // output block lies inside `c` (caller's contract).
            unsafe {
                match p.vectors() {
                    3 => micro::<3>(a_rows, panel, k, out, ep),
                    2 => micro::<2>(a_rows, panel, k, out, ep),
                    _ => micro::<1>(a_rows, panel, k, out, ep),
                }
            }
        }
    }
    if vector_end < b.cols {
        let len = b.cols - vector_end;
        for r in r0..r1 {
            let start = r * ldc + vector_end;
            // SAFETY: inside the rows, written above, this task's alone.
            let row = unsafe { std::slice::from_raw_parts_mut(c.at(start), len) };
            let res = ep.residual.map(|x| &x[start..start + len]);
            ep.finish(row, r, vector_end, res);
        }
    }
}

/// Where one micro-kernel call writes: rows `row..row + rows` and columns
/// `col..col + width` of `c`; columns from `vector_end` on are stored without the
/// epilogue.
#[cfg(target_arch = "x86_64")]
#[derive(Clone, Copy)]
struct Block {
    c: OutPtr,
    ldc: usize,
    row: usize,
    rows: usize,
    col: usize,
    width: usize,
    vector_end: usize,
}

/// `MR` rows times `16 * NV` columns: the sums over `k`, then the epilogue.
///
/// # Safety
/// AVX-512F; each row pointer valid for `k` values, the panel for `k` rows of
/// `NV` vectors, the block inside `c`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn micro<const NV: usize>(
    a: [*const f32; MR],
    panel: *const f32,
    k: usize,
    out: Block,
    ep: &Epilogue,
) {
    let mut acc = [[_mm512_setzero_ps(); NV]; MR];
    for kk in 0..k {
        // SAFETY: kk < k, inside the panel and every row (contract).
        unsafe {
            let mut bv = [_mm512_setzero_ps(); NV];
            for (j, v) in bv.iter_mut().enumerate() {
                *v = _mm512_loadu_ps(panel.add((kk * NV + j) * 16));
            }
            for (row, acc) in a.iter().zip(acc.iter_mut()) {
                let av = _mm512_set1_ps(*row.add(kk));
                for (s, v) in acc.iter_mut().zip(&bv) {
                    *s = _mm512_fmadd_ps(av, *v, *s);
                }
            }
        }
    }
    for (i, acc) in acc.iter().enumerate().take(out.rows) {
        let r = out.row + i;
        for (j, &sum) in acc.iter().enumerate() {
            let col = out.col + 16 * j;
            let lanes = out.width.saturating_sub(16 * j).min(16);
            // SAFETY: lanes below `lanes` lie inside the block (contract).
            unsafe {
                let dst = out.c.at(r * out.ldc + col);
                if col + 16 <= out.vector_end {
                    _mm512_storeu_ps(dst, ep.finish_vector(sum, r, col, out.ldc));
                } else {
                    _mm512_mask_storeu_ps(dst, (((1u32 << lanes) - 1) & 0xffff) as __mmask16, sum);
                }
            }
        }
    }
}
