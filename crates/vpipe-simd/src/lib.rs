//! Run-time choice of the widest vector unit for vpipe's CPU kernels (used by the
//! backbone, the heads and the preprocessing).
//!
//! [`simd_fn!`] defines a function whose body is compiled three
//! times: for AVX-512, for AVX2 with FMA, and for the baseline target. Each call
//! runs the widest version the processor supports, so plain loops over slices
//! vectorise at 16, 8 or 4 lanes without unsafe intrinsics in the kernels.

/// Vector units the processor offers, narrowest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    /// The baseline target.
    Baseline,
    /// AVX2 with FMA.
    Avx2,
    /// AVX-512 (F, VL, DQ, BW) with FMA.
    Avx512,
}

/// Environment variable that caps the vector unit the kernels use (`avx2` or
/// `baseline`), to test and compare the narrower code paths on a wider processor.
/// It can only lower the level the processor offers.
pub const SIMD_ENV: &str = "VPIPE_SIMD";

/// The widest vector unit of this processor, capped by [`SIMD_ENV`] when set.
/// Decided once per process; inlined, since every [`simd_fn!`] call asks it.
#[inline]
pub fn level() -> Level {
    static LEVEL: std::sync::OnceLock<Level> = std::sync::OnceLock::new();
    *LEVEL.get_or_init(|| {
        let cap = match std::env::var(SIMD_ENV).as_deref() {
            Ok("baseline") => Level::Baseline,
            Ok("avx2") => Level::Avx2,
            _ => Level::Avx512,
        };
        detect().min(cap)
    })
}

/// What the processor supports.
fn detect() -> Level {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::is_x86_feature_detected as has;
        if has!("avx512f")
            && has!("avx512vl")
            && has!("avx512dq")
            && has!("avx512bw")
            && has!("fma")
        {
            return Level::Avx512;
        }
        if has!("avx2") && has!("fma") {
            return Level::Avx2;
        }
    }
    Level::Baseline
}

/// Defines `fn name(args) body` compiled for each [`Level`] and dispatched at run time.
#[macro_export]
#[doc(hidden)]
macro_rules! simd_fn {
    ($(#[$meta:meta])* $vis:vis fn $name:ident($($arg:ident : $ty:ty),* $(,)?) $body:block) => {
        $(#[$meta])*
        #[allow(clippy::too_many_arguments)]
        $vis fn $name($($arg: $ty),*) {
            #[inline(always)]
            #[allow(clippy::too_many_arguments)]
            fn generic($($arg: $ty),*) $body
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f,avx512vl,avx512dq,avx512bw,avx2,fma")]
                #[allow(clippy::too_many_arguments)]
                fn avx512($($arg: $ty),*) { generic($($arg),*) }
                #[target_feature(enable = "avx2,fma")]
                #[allow(clippy::too_many_arguments)]
                fn avx2($($arg: $ty),*) { generic($($arg),*) }
                match $crate::level() {
                    // SAFETY: the processor supports the features, checked by `level`.
                    $crate::Level::Avx512 => return unsafe { avx512($($arg),*) },
                    // SAFETY: as above.
                    $crate::Level::Avx2 => return unsafe { avx2($($arg),*) },
                    $crate::Level::Baseline => {}
                }
            }
            generic($($arg),*)
        }
    };
}
