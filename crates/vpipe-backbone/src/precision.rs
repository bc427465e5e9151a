//! The number format of the fused CPU kernels' matrix products.

use std::fmt;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::bf16;

/// The number format of the matrix products (convolutions and linear layers) of
/// models run by the fused CPU kernels. Everything else (depthwise convolutions,
/// normalisations, attention, activations) stays in `f32`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Precision {
    /// `f32` throughout: the reference implementations' numbers (the default).
    #[default]
    Fp32,
    /// Weights and activations rounded to bf16 for the products, sums in `f32`
    /// (AVX512_BF16).
    Bf16,
}

/// Whether models loaded on the CPU from now on use bf16 products.
static BF16_ON_CPU: AtomicBool = AtomicBool::new(false);

/// Chooses the precision of models loaded on the CPU from now on, for the whole
/// process (like the thread count), and returns the one they get: a precision this
/// processor cannot run falls back to [`Precision::Fp32`] with a warning (see
/// [`Precision::resolve`]).
pub fn set_cpu_precision(precision: Precision) -> Precision {
    let (got, warning) = precision.resolve();
    if let Some(w) = warning {
        tracing::warn!("{w}");
    }
    BF16_ON_CPU.store(got == Precision::Bf16, Ordering::Relaxed);
    got
}

/// The precision chosen with [`set_cpu_precision`] ([`Precision::Fp32`] unless set).
pub fn cpu_precision() -> Precision {
    if BF16_ON_CPU.load(Ordering::Relaxed) {
        Precision::Bf16
    } else {
        Precision::Fp32
    }
}

impl Precision {
    /// The precision this processor runs for `self`, and a warning when that is
    /// another one: bf16 needs AVX-512 with AVX512_BF16 (and no lower vector unit
    /// chosen with `VPIPE_SIMD`), and falls back to fp32 without it.
    pub fn resolve(self) -> (Precision, Option<String>) {
        self.resolve_with(bf16::supported())
    }

    /// The instructions that run the CPU's matrix products in this precision (one
    /// that [`Precision::resolve`] returned): `fma` for fp32, and for bf16 `amx`
    /// where AMX runs them ([`crate::amx::available`]), else `avx512_bf16`.
    pub fn product_unit(self) -> &'static str {
        match self {
            Precision::Fp32 => "fma",
            Precision::Bf16 if crate::amx::available() => "amx",
            Precision::Bf16 => "avx512_bf16",
        }
    }

    /// [`Precision::resolve`] on a processor that has (`bf16`) or lacks the bf16
    /// instructions.
    fn resolve_with(self, bf16: bool) -> (Precision, Option<String>) {
        match self {
            Precision::Bf16 if !bf16 => (
                Precision::Fp32,
                Some(
                    "precision bf16 needs a processor with AVX-512 and AVX512_BF16, which this one \
                     lacks (or VPIPE_SIMD caps it below AVX-512): running in fp32"
                        .to_string(),
                ),
            ),
            other => (other, None),
        }
    }
}

impl fmt::Display for Precision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Precision::Fp32 => "fp32",
            Precision::Bf16 => "bf16",
        })
    }
}

impl FromStr for Precision {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "fp32" => Ok(Precision::Fp32),
            "bf16" => Ok(Precision::Bf16),
            _ => Err(format!(
                "unknown precision '{s}' (expected 'fp32' or 'bf16')"
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bf16_falls_back_to_fp32_without_the_instructions() {
        let (got, warning) = Precision::Bf16.resolve_with(false);
        assert_eq!(got, Precision::Fp32);
        assert!(warning.unwrap().contains("AVX512_BF16"));
        assert_eq!(Precision::Bf16.resolve_with(true), (Precision::Bf16, None));
        assert_eq!(Precision::Fp32.resolve_with(false), (Precision::Fp32, None));
    }

    #[test]
    fn parses_and_names() {
        for p in [Precision::Fp32, Precision::Bf16] {
            assert_eq!(p.to_string().parse::<Precision>(), Ok(p));
        }
        assert!("int4".parse::<Precision>().unwrap_err().contains("int4"));
    }
}
