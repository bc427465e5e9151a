//! Activations with a fast CPU path.
//!
//! burn's SiLU is `x * sigmoid(x)` evaluated one element at a time with the C
//! library's `expf`; in MobileViT it took about half of the CPU inference time. On
//! the CPU backend, [`silu`] instead runs one fused pass with a polynomial `exp`
//! (Cephes' `expf`, relative error below 2e-7) that the compiler vectorises, using
//! AVX-512 or AVX2 where the processor has them (see [`vpipe_simd`]). Other backends use burn's own.

use burn::tensor::{Device, Tensor};

/// Elements per parallel task.
const CHUNK: usize = 16 * 1024;

/// SiLU (swish): `x * sigmoid(x)`; in place on the host for CPU tensors, with
/// burn's op elsewhere and on autodiff tensors (which must stay on the graph).
pub fn silu<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    let device = x.device();
    if device != Device::flex() || x.is_autodiff() {
        return burn::tensor::activation::silu(x);
    }
    let mut data = x.into_data();
    match data.as_mut_slice::<f32>() {
        Ok(values) => {
            vpipe_core::parallel::for_each_chunk_mut(values, CHUNK, |_, v| silu_slice(v, 0.0))
        }
        Err(_) => {
            // Not f32: leave it to burn.
            return burn::tensor::activation::silu(Tensor::from_data(data, &device));
        }
    }
    Tensor::from_data(data, &device)
}

/// `silu(v + offset)` in place over a slice, with the widest vector unit available
/// (the offset folds a convolution's bias into the same pass).
pub fn silu_slice(values: &mut [f32], offset: f32) {
    #[cfg(target_arch = "x86_64")]
    if vpipe_simd::level() == vpipe_simd::Level::Avx512 {
        // SAFETY: the processor has AVX-512F, checked by `level`.
        unsafe { silu_avx512(values, offset) };
        return;
    }
    silu_portable(values, offset);
}

/// `silu(v + offset)` in place to about 1e-4 (relative), for models in
/// [`Precision::Bf16`](crate::Precision::Bf16), whose products round their inputs to
/// 8 bits anyway: a degree-4 exponential and the reciprocal estimate without its
/// Newton step, about two thirds of [`silu_slice`]'s work. Without AVX-512 (where bf16
/// never runs) it is [`silu_slice`].
pub fn silu_slice_coarse(values: &mut [f32], offset: f32) {
    #[cfg(target_arch = "x86_64")]
    if vpipe_simd::level() == vpipe_simd::Level::Avx512 {
        // SAFETY: the processor has AVX-512F, checked by `level`.
        unsafe { silu_coarse_avx512(values, offset) };
        return;
    }
    silu_portable(values, offset);
}

/// [`silu_slice_coarse`] with AVX-512, the tail in a masked vector.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn silu_coarse_avx512(values: &mut [f32], offset: f32) {
    use std::arch::x86_64::*;
    let ptr = values.as_mut_ptr();
    let n = values.len();
    for i in (0..n).step_by(16) {
        let mask = (((1u32 << (n - i).min(16)) - 1) & 0xffff) as __mmask16;
        // SAFETY: the lanes of `mask` are inside `values`.
        unsafe {
            let x = _mm512_add_ps(
                _mm512_maskz_loadu_ps(mask, ptr.add(i)),
                _mm512_set1_ps(offset),
            );
            _mm512_mask_storeu_ps(ptr.add(i), mask, silu_vector_coarse(x));
        }
    }
}

/// SiLU of 16 lanes as [`silu_slice_coarse`] computes it.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
pub(crate) fn silu_vector_coarse(x: std::arch::x86_64::__m512) -> std::arch::x86_64::__m512 {
    use std::arch::x86_64::*;
    let e = exp_avx512_coarse(_mm512_sub_ps(_mm512_setzero_ps(), x));
    _mm512_mul_ps(x, _mm512_rcp14_ps(_mm512_add_ps(e, _mm512_set1_ps(1.0))))
}

vpipe_simd::simd_fn! {
    /// SiLU in place, in plain code that the compiler vectorises.
    fn silu_portable(values: &mut [f32], offset: f32) {
        for v in values.iter_mut() {
            let x = *v + offset;
            *v = x / (1.0 + exp_approx(-x));
        }
    }
}

/// SiLU with AVX-512 instructions the compiler does not pick by itself: `scalef`
/// for the `2^n` of `exp` (see [`exp_avx512`]), and a reciprocal estimate refined by
/// one Newton step (relative error about 1e-7) instead of a division.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn silu_avx512(values: &mut [f32], offset: f32) {
    use std::arch::x86_64::*;
    let n16 = values.len() / 16 * 16;
    let (head, tail) = values.split_at_mut(n16);
    let ptr = head.as_mut_ptr();
    let splat = _mm512_set1_ps;
    for i in (0..n16).step_by(16) {
        // SAFETY: i + 16 <= n16, inside `head`.
        unsafe {
            let x = _mm512_add_ps(_mm512_loadu_ps(ptr.add(i)), splat(offset));
            _mm512_storeu_ps(ptr.add(i), silu_vector(x));
        }
    }
    silu_portable(tail, offset);
}

/// SiLU of 16 lanes, as [`silu_slice`] computes it with AVX-512.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
pub(crate) fn silu_vector(x: std::arch::x86_64::__m512) -> std::arch::x86_64::__m512 {
    use std::arch::x86_64::*;
    let e = exp_avx512(_mm512_sub_ps(_mm512_setzero_ps(), x));
    // x / (1 + e) with one Newton step on the reciprocal.
    let d = _mm512_add_ps(e, _mm512_set1_ps(1.0));
    let rc = _mm512_rcp14_ps(d);
    let rc = _mm512_mul_ps(rc, _mm512_fnmadd_ps(d, rc, _mm512_set1_ps(2.0)));
    _mm512_mul_ps(x, rc)
}

/// `exp` of 16 lanes: [`exp_approx`]'s range reduction and polynomial in fused
/// multiply-adds, and `scalef` for the `2^n` (relative error below 2e-7).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
fn exp_avx512(x: std::arch::x86_64::__m512) -> std::arch::x86_64::__m512 {
    use std::arch::x86_64::*;
    let splat = _mm512_set1_ps;
    let t = _mm512_min_ps(_mm512_max_ps(x, splat(EXP_MIN)), splat(EXP_MAX));
    let n = _mm512_roundscale_ps::<{ _MM_FROUND_TO_NEG_INF | _MM_FROUND_NO_EXC }>(_mm512_fmadd_ps(
        t,
        splat(std::f32::consts::LOG2_E),
        splat(0.5),
    ));
    let r = _mm512_fnmadd_ps(n, splat(LN2_HI), t);
    let r = _mm512_fnmadd_ps(n, splat(LN2_LO), r);
    let mut p = splat(EXP_POLY[0]);
    for &c in &EXP_POLY[1..] {
        p = _mm512_fmadd_ps(p, r, splat(c));
    }
    let e = _mm512_add_ps(_mm512_fmadd_ps(_mm512_mul_ps(p, r), r, r), splat(1.0));
    _mm512_scalef_ps(e, n)
}

/// `exp` of 16 lanes to about 16 bits (relative error below 5e-5): the same range
/// reduction with one `ln 2`, and the Taylor polynomial of degree 4. For values
/// that are rounded to bf16 next (8 bits), as the bf16 attention's weights are.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
pub(crate) fn exp_avx512_coarse(x: std::arch::x86_64::__m512) -> std::arch::x86_64::__m512 {
    use std::arch::x86_64::*;
    let splat = _mm512_set1_ps;
    exp_avx512_coarse_unclamped(_mm512_min_ps(
        _mm512_max_ps(x, splat(EXP_MIN)),
        splat(EXP_MAX),
    ))
}

/// [`exp_avx512_coarse`] without its clamping of the input: for inputs that cannot
/// overflow (at most 0, as a softmax's scores less their maximum); far below
/// `EXP_MIN` the result still goes to 0 (`scalef`).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
pub(crate) fn exp_avx512_coarse_unclamped(
    t: std::arch::x86_64::__m512,
) -> std::arch::x86_64::__m512 {
    use std::arch::x86_64::*;
    let splat = _mm512_set1_ps;
    let n = _mm512_roundscale_ps::<{ _MM_FROUND_TO_NEG_INF | _MM_FROUND_NO_EXC }>(_mm512_fmadd_ps(
        t,
        splat(std::f32::consts::LOG2_E),
        splat(0.5),
    ));
    let r = _mm512_fnmadd_ps(n, splat(std::f32::consts::LN_2), t);
    let mut p = splat(1.0 / 24.0);
    for c in [1.0 / 6.0, 0.5, 1.0, 1.0] {
        p = _mm512_fmadd_ps(p, r, splat(c));
    }
    _mm512_scalef_ps(p, n)
}

/// [`exp_approx`] of 16 lanes, rounded exactly as it is (every multiply and add
/// rounded on its own), with `scalef` for the `2^n`: the softmax of the attention
/// uses it, since a fused multiply-add there moved a DeepLabv3 parity mask pixel
/// that is a near-tie.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
pub(crate) fn exp_avx512_unfused(x: std::arch::x86_64::__m512) -> std::arch::x86_64::__m512 {
    use std::arch::x86_64::*;
    let splat = _mm512_set1_ps;
    let (add, mul, sub) = (_mm512_add_ps, _mm512_mul_ps, _mm512_sub_ps);
    let x = _mm512_min_ps(_mm512_max_ps(x, splat(EXP_MIN)), splat(EXP_MAX));
    let n = _mm512_roundscale_ps::<{ _MM_FROUND_TO_NEG_INF | _MM_FROUND_NO_EXC }>(add(
        mul(x, splat(std::f32::consts::LOG2_E)),
        splat(0.5),
    ));
    let r = sub(sub(x, mul(n, splat(LN2_HI))), mul(n, splat(LN2_LO)));
    let mut p = splat(EXP_POLY[0]);
    for &c in &EXP_POLY[1..] {
        p = add(mul(p, r), splat(c));
    }
    let e = add(add(mul(mul(p, r), r), r), splat(1.0));
    _mm512_scalef_ps(e, n)
}

/// The range where `exp` of an `f32` is a normal `f32`: arguments are clamped to it.
const EXP_MIN: f32 = -87.336_55;
/// See [`EXP_MIN`].
const EXP_MAX: f32 = 88.376_26;
/// `ln 2` in two parts, the first exact in few bits, for the range reduction.
const LN2_HI: f32 = 0.693_359_4;
/// See [`LN2_HI`].
const LN2_LO: f32 = -2.121_944_4e-4;
/// Cephes' polynomial for `(e^r - 1 - r) / r^2` on `|r| <= ln 2 / 2`, highest
/// degree first.
const EXP_POLY: [f32; 6] = [
    1.987_569_1e-4,
    1.398_199_9e-3,
    8.333_452e-3,
    4.166_579_6e-2,
    1.666_666_5e-1,
    0.5,
];

/// `exp(x)` for `f32` after Cephes' `expf`: range reduction by `ln 2` in two parts
/// and a degree-6 polynomial, branch-free so that loops over it vectorise.
#[inline(always)]
pub fn exp_approx(x: f32) -> f32 {
    let x = x.clamp(EXP_MIN, EXP_MAX);
    let n = (x * std::f32::consts::LOG2_E + 0.5).floor();
    let r = x - n * LN2_HI - n * LN2_LO;
    let mut p = EXP_POLY[0];
    for c in &EXP_POLY[1..] {
        p = p * r + c;
    }
    let e = p * r * r + r + 1.0;
    // 2^n from the bits of n + 1.5 * 2^23, whose low mantissa bits hold n: integer
    // arithmetic only, so that the loop vectorises (a float-to-int cast does not).
    const SHIFTER: f32 = 12_582_912.0;
    let biased = (n + SHIFTER)
        .to_bits()
        .wrapping_sub(SHIFTER.to_bits())
        .wrapping_add(127);
    let pow2 = f32::from_bits(biased << 23);
    e * pow2
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_and_silu_are_accurate() {
        let mut worst = 0.0f64;
        for i in -20000..=20000 {
            let x = i as f32 * 0.004;
            let want = (x as f64).exp();
            let got = exp_approx(x) as f64;
            worst = worst.max(((got - want) / want).abs());
        }
        assert!(worst < 3e-7, "relative error {worst}");
        let mut v = vec![-100.0f32, -3.0, -0.5, 0.0, 0.5, 3.0, 100.0, 1e-8];
        let want: Vec<f32> = v
            .iter()
            .map(|&x| (x as f64 / (1.0 + (-x as f64).exp())) as f32)
            .collect();
        silu_slice(&mut v, 0.0);
        for (g, w) in v.iter().zip(&want) {
            assert!((g - w).abs() <= 1e-6 * w.abs().max(1.0), "{g} vs {w}");
        }
        // Every vector path against f64, on 16-wide blocks and a tail.
        let xs: Vec<f32> = (-4000..4003).map(|i| i as f32 * 0.02).collect();
        let mut got = xs.clone();
        silu_slice(&mut got, 0.0);
        for (x, g) in xs.iter().zip(&got) {
            let w = *x as f64 / (1.0 + (-*x as f64).exp());
            assert!(
                (*g as f64 - w).abs() <= 1e-6 * w.abs().max(1.0),
                "silu({x}) = {g}, want {w}"
            );
        }
        // The coarse SiLU of the bf16 mode: within 2e-4 of the value's size.
        let mut got = xs.clone();
        silu_slice_coarse(&mut got, 0.0);
        for (x, g) in xs.iter().zip(&got) {
            let w = *x as f64 / (1.0 + (-*x as f64).exp());
            assert!(
                (*g as f64 - w).abs() <= 2e-4 * w.abs().max(1e-3),
                "coarse silu({x}) = {g}, want {w}"
            );
        }
    }
}
