//! The second product of `f32` attention: each token's weighted sum of the value
//! rows, `out = p · v` with `p` the `[tokens, tokens]` softmax weights and `v`
//! `[tokens, hd]`.
//!
//! MobileViT's heads are narrow (`hd` 16 to 60), which `gemm` handles with its
//! narrowest micro-kernel: 6 sums in flight, latency- and load-bound. Here the
//! micro-kernel keeps 24 sums in flight whatever the head size: 24 rows of one
//! 16-lane vector for `hd <= 16`, 12 rows of two for `hd <= 32`, 8 of three, 6 of
//! four. Each step loads one row of `v` and broadcasts one weight per row.
//!
//! The sums run over the tokens in order, in blocks of the length `gemm` uses for
//! this product (one block up to 512 tokens), each block one chain of fused
//! multiply-adds from zero and the blocks added in turn: the outputs are `gemm`'s
//! to the bit.

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

use crate::cpu::{MatPtr, OutPtr};

/// Widest head (in `f32` lanes: four vectors) the micro-kernel takes.
pub const MAX_HEAD: usize = 64;

/// Whether this processor runs the weighted sums of heads of `hd` values here
/// (otherwise attention uses `gemm`).
pub fn supported(hd: usize) -> bool {
    hd <= MAX_HEAD && vpipe_simd::level() == vpipe_simd::Level::Avx512
}

/// `gemm`'s block length along the inner dimension for this product (`gemm` sees
/// it transposed: `hd` rows, `tokens` columns), so that the sums are split where
/// `gemm` splits them.
fn inner_block(tokens: usize, hd: usize) -> usize {
    // gemm's own rule for products whose output is at most 64 x 64, else its
    // kernel parameters (f32 with AVX-512: micro-tiles of 64 x 6).
    if hd <= 64 && tokens <= 64 {
        tokens.min(512)
    } else {
        gemm_common::cache::kernel_params(hd, tokens, tokens, 64, 6, size_of::<f32>()).kc
    }
}

/// `dst[tokens, hd]` (row stride `ldd`) `= p · v`: `p` `[tokens, tokens]` and `v`
/// `[tokens, hd]`, both with unit column stride.
///
/// # Safety
/// [`supported`]`(hd)` must hold; the views must be valid for those shapes, and
/// `dst` for `tokens` rows of `hd` values that belong to the calling task alone.
pub(crate) unsafe fn weighted_sum(
    p: MatPtr,
    v: MatPtr,
    [tokens, hd]: [usize; 2],
    dst: OutPtr,
    ldd: usize,
) {
    debug_assert!(supported(hd) && p.cs == 1 && v.cs == 1);
    #[cfg(target_arch = "x86_64")]
    // SAFETY: forwarded from the caller.
    unsafe {
        match hd.div_ceil(16) {
            1 => weighted_sum_avx512::<24, 1>(p, v, [tokens, hd], dst, ldd),
            2 => weighted_sum_avx512::<12, 2>(p, v, [tokens, hd], dst, ldd),
            3 => weighted_sum_avx512::<8, 3>(p, v, [tokens, hd], dst, ldd),
            _ => weighted_sum_avx512::<6, 4>(p, v, [tokens, hd], dst, ldd),
        }
    }
}

/// [`weighted_sum`] in blocks of `MR` tokens, `NV` vectors per row.
///
/// # Safety
/// As [`weighted_sum`], with `hd <= 16 * NV`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn weighted_sum_avx512<const MR: usize, const NV: usize>(
    p: MatPtr,
    v: MatPtr,
    [tokens, hd]: [usize; 2],
    dst: OutPtr,
    ldd: usize,
) {
    let kc = inner_block(tokens, hd).max(1);
    // Lanes of each vector that hold values of the head.
    let masks: [__mmask16; NV] = std::array::from_fn(|j| {
        let lanes = hd.saturating_sub(16 * j).min(16);
        (((1u32 << lanes) - 1) & 0xffff) as __mmask16
    });
    for t0 in (0..tokens).step_by(MR) {
        let rows = MR.min(tokens - t0);
        // Rows past the end repeat the last one; their sums are dropped.
        // SAFETY: rows of `p` (caller's contract).
        let p_rows: [*const f32; MR] =
            std::array::from_fn(|i| unsafe { p.at(t0 + i.min(rows - 1), 0) });
        for k0 in (0..tokens).step_by(kc) {
            let k1 = (k0 + kc).min(tokens);
            let mut acc = [[_mm512_setzero_ps(); NV]; MR];
            for j in k0..k1 {
                // SAFETY: row j of `v` and column j of every row of `p` (contract);
                // masked lanes are not read.
                unsafe {
                    let vj = v.at(j, 0);
                    let mut vv = [_mm512_setzero_ps(); NV];
                    for (s, (x, &m)) in vv.iter_mut().zip(&masks).enumerate() {
                        *x = _mm512_maskz_loadu_ps(m, vj.add(16 * s));
                    }
                    for (row, acc) in p_rows.iter().zip(acc.iter_mut()) {
                        let w = _mm512_set1_ps(*row.add(j));
                        for (a, x) in acc.iter_mut().zip(&vv) {
                            *a = _mm512_fmadd_ps(w, *x, *a);
                        }
                    }
                }
            }
            for (i, acc) in acc.iter().enumerate().take(rows) {
                for (s, (&sum, &m)) in acc.iter().zip(&masks).enumerate() {
                    // SAFETY: row t0 + i, lanes of the head (contract).
                    unsafe {
                        let out = dst.at((t0 + i) * ldd + 16 * s);
                        let value = if k0 == 0 {
                            sum
                        } else {
                            _mm512_add_ps(_mm512_maskz_loadu_ps(m, out), sum)
                        };
                        _mm512_mask_storeu_ps(out, m, value);
                    }
                }
            }
        }
    }
}
