//! The number format of the fused CPU kernels' matrix products.

use std::fmt;
use std::str::FromStr;
use std::sync::atomic::{AtomicU8, Ordering};

use crate::{bf16, int8};

/// The number format of the matrix products (convolutions and linear layers) of
/// models run by the fused CPU kernels. In both reduced precisions attention's
/// products run in bf16 and the SiLU and depthwise convolutions take coarser `f32`
/// arithmetic; normalisations and everything else stay in `f32`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Precision {
    /// `f32` throughout: the reference implementations' numbers (the default).
    #[default]
    Fp32,
    /// Weights and activations rounded to bf16 for the products, sums in `f32`
    /// (AVX512_BF16).
    Bf16,
    /// Weights and activations quantised to int8, each row or column with its own
    /// scale taken as it is packed, integer sums (AVX512_VNNI); see [`crate::int8`].
    Int8,
}

/// The precision of models loaded on the CPU from now on, as its index in
/// [`Precision::ALL`].
static CPU_PRECISION: AtomicU8 = AtomicU8::new(0);

/// Chooses the precision of models loaded on the CPU from now on, for the whole
/// process (like the thread count), and returns the one they get: a precision this
/// processor cannot run falls back to [`Precision::Fp32`] with a warning (see
/// [`Precision::resolve`]).
pub fn set_cpu_precision(precision: Precision) -> Precision {
    let (got, warning) = precision.resolve();
    if let Some(w) = warning {
        tracing::warn!("{w}");
    }
    let index = Precision::ALL.iter().position(|p| *p == got).unwrap_or(0);
    CPU_PRECISION.store(index as u8, Ordering::Relaxed);
    got
}

/// The precision chosen with [`set_cpu_precision`] ([`Precision::Fp32`] unless set).
pub fn cpu_precision() -> Precision {
    Precision::ALL[CPU_PRECISION.load(Ordering::Relaxed) as usize]
}

impl Precision {
    /// Every precision, most exact first.
    pub const ALL: [Precision; 3] = [Precision::Fp32, Precision::Bf16, Precision::Int8];

    /// The precision this processor runs for `self`, and a warning when that is
    /// another one: bf16 needs AVX-512 with AVX512_BF16 (and no lower vector unit
    /// chosen with `VPIPE_SIMD`), and falls back to fp32 without it; int8 needs
    /// AVX512_VNNI as well, and falls back to bf16 (or fp32) without it.
    pub fn resolve(self) -> (Precision, Option<String>) {
        self.resolve_with(bf16::supported(), int8::supported())
    }

    /// Whether the SiLU, depthwise convolutions and attention take the coarser
    /// arithmetic of the reduced precisions.
    pub fn is_reduced(self) -> bool {
        self != Precision::Fp32
    }

    /// The instructions that run the CPU's matrix products in this precision (one
    /// that [`Precision::resolve`] returned): `fma` for fp32, and for bf16 `amx`
    /// where AMX runs them ([`crate::amx::available`]), else `avx512_bf16`.
    pub fn product_unit(self) -> &'static str {
        match self {
            Precision::Fp32 => "fma",
            Precision::Bf16 if crate::amx::available() => "amx",
            Precision::Bf16 => "avx512_bf16",
            Precision::Int8 => "avx512_vnni",
        }
    }

    /// [`Precision::resolve`] on a processor that has or lacks the bf16 and the int8
    /// instructions.
    fn resolve_with(self, bf16: bool, int8: bool) -> (Precision, Option<String>) {
        match self {
            Precision::Int8 if !int8 => {
                let (next, _) = Precision::Bf16.resolve_with(bf16, int8);
                (
                    next,
                    Some(format!(
                        "precision int8 needs a processor with AVX-512, AVX512_VNNI and \
                         AVX512_BF16, which this one lacks (or VPIPE_SIMD caps it below \
                         AVX-512): running in {next}"
                    )),
                )
            }
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
            Precision::Int8 => "int8",
        })
    }
}

impl FromStr for Precision {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "fp32" => Ok(Precision::Fp32),
            "bf16" => Ok(Precision::Bf16),
            "int8" => Ok(Precision::Int8),
            _ => Err(format!(
                "unknown precision '{s}' (expected 'fp32', 'bf16' or 'int8')"
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bf16_falls_back_to_fp32_without_the_instructions() {
        let (got, warning) = Precision::Bf16.resolve_with(false, false);
        assert_eq!(got, Precision::Fp32);
        assert!(warning.unwrap().contains("AVX512_BF16"));
        assert_eq!(
            Precision::Bf16.resolve_with(true, false),
            (Precision::Bf16, None)
        );
        assert_eq!(
            Precision::Fp32.resolve_with(false, false),
            (Precision::Fp32, None)
        );
    }

    #[test]
    fn int8_falls_back_to_bf16_then_fp32() {
        let (got, warning) = Precision::Int8.resolve_with(true, false);
        assert_eq!(got, Precision::Bf16);
        let warning = warning.unwrap();
        assert!(warning.contains("AVX512_VNNI") && warning.contains("running in bf16"));
        let (got, warning) = Precision::Int8.resolve_with(false, false);
        assert_eq!(got, Precision::Fp32);
        assert!(warning.unwrap().contains("running in fp32"));
        assert_eq!(
            Precision::Int8.resolve_with(true, true),
            (Precision::Int8, None)
        );
    }

    #[test]
    fn parses_and_names() {
        for p in Precision::ALL {
            assert_eq!(p.to_string().parse::<Precision>(), Ok(p));
        }
        assert!("int4".parse::<Precision>().unwrap_err().contains("int4"));
    }
}
