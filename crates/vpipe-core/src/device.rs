//! Device selection.
//!
//! vpipe runs on burn's `flex` CPU backend by default. Its parallel kernels
//! (convolutions, matrix products) run on [`crate::parallel`]'s pool, and burn's
//! own CPU operations on rayon's global pool; both have the size that
//! [`set_cpu_threads`] sets once per process.
//!
//! A GPU backend of burn is opt-in: build with the cargo feature `vulkan`,
//! `wgpu` or `cuda`, then select the device with a [`DeviceSpec`] (the
//! pipeline's `device:` key or the CLI's `--device` flag). A device whose
//! feature was not compiled in is an error naming the feature, never a silent
//! fall-back to the CPU.

use std::fmt;
use std::str::FromStr;

use burn::tensor::Device;

/// The device networks run on unless told otherwise: burn's `flex` CPU backend.
///
/// Explicitly the CPU: burn's `Device::default()` prefers a GPU backend once
/// one is compiled in (and honours `BURN_DEVICE`), which vpipe never does
/// behind the user's back.
pub fn default_device() -> Device {
    Device::flex()
}

/// A device named by the user: `cpu`, `vulkan`, `vulkan:N`, `wgpu`, `cuda` or
/// `cuda:N`.
///
/// Parsing ([`FromStr`]) accepts every name whatever the build; [`DeviceSpec::device`]
/// then fails when the backend's cargo feature was not compiled in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DeviceSpec {
    /// burn's `flex` CPU backend with vpipe's fused kernels (the default).
    #[default]
    Cpu,
    /// wgpu pinned to Vulkan: `None` lets wgpu pick the adapter (high-power
    /// GPUs first, or a software driver such as Mesa's lavapipe), `Some(n)` is
    /// the n-th discrete GPU.
    Vulkan(Option<usize>),
    /// wgpu on whichever graphics API the machine offers, default adapter.
    Wgpu,
    /// CUDA: `None` is the backend's default device, `Some(n)` GPU number n.
    Cuda(Option<usize>),
}

/// Why a device name cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DeviceError {
    /// The name is none of the known devices.
    #[error("unknown device '{0}' (expected one of: cpu, vulkan, vulkan:N, wgpu, cuda, cuda:N)")]
    Unknown(String),
    /// The backend exists, but this build of vpipe does not include it.
    #[error("device '{device}' needs vpipe built with --features {feature}")]
    NotCompiled {
        /// The device as written.
        device: String,
        /// The cargo feature that enables it.
        feature: &'static str,
    },
}

impl DeviceSpec {
    /// The cargo feature this device needs (`None` for the CPU).
    pub fn feature(self) -> Option<&'static str> {
        match self {
            DeviceSpec::Cpu => None,
            DeviceSpec::Vulkan(_) => Some("vulkan"),
            DeviceSpec::Wgpu => Some("wgpu"),
            DeviceSpec::Cuda(_) => Some("cuda"),
        }
    }

    /// Whether this build includes the device's backend.
    pub fn is_compiled(self) -> bool {
        match self {
            DeviceSpec::Cpu => true,
            DeviceSpec::Vulkan(_) => cfg!(feature = "vulkan"),
            DeviceSpec::Wgpu => cfg!(feature = "wgpu"),
            DeviceSpec::Cuda(_) => cfg!(feature = "cuda"),
        }
    }

    /// The burn device, or [`DeviceError::NotCompiled`] when the backend's
    /// feature is off in this build. Creating a GPU device is lazy: a missing
    /// driver or adapter shows at the first tensor operation.
    pub fn device(self) -> Result<Device, DeviceError> {
        if !self.is_compiled() {
            return Err(DeviceError::NotCompiled {
                device: self.to_string(),
                feature: self.feature().unwrap_or_default(),
            });
        }
        Ok(match self {
            DeviceSpec::Cpu => default_device(),
            #[cfg(feature = "vulkan")]
            DeviceSpec::Vulkan(index) => Device::vulkan(match index {
                None => burn::tensor::DeviceKind::DefaultDevice,
                Some(n) => burn::tensor::DeviceKind::DiscreteGpu(n),
            }),
            #[cfg(feature = "wgpu")]
            DeviceSpec::Wgpu => Device::wgpu(burn::tensor::DeviceKind::DefaultDevice),
            #[cfg(feature = "cuda")]
            DeviceSpec::Cuda(index) => match index {
                None => Device::cuda(burn::tensor::DeviceIndex::Default),
                Some(n) => Device::cuda(n),
            },
            #[allow(unreachable_patterns)]
            _ => unreachable!("is_compiled() is false for backends not in this build"),
        })
    }
}

impl FromStr for DeviceSpec {
    type Err = DeviceError;

    fn from_str(s: &str) -> Result<Self, DeviceError> {
        let unknown = || DeviceError::Unknown(s.to_string());
        let (name, index) = match s.split_once(':') {
            Some((name, n)) => {
                let n = n
                    .parse::<usize>()
                    .ok()
                    .filter(|_| n.bytes().all(|b| b.is_ascii_digit()))
                    .ok_or_else(unknown)?;
                (name, Some(n))
            }
            None => (s, None),
        };
        match (name, index) {
            ("cpu", None) => Ok(DeviceSpec::Cpu),
            ("vulkan", index) => Ok(DeviceSpec::Vulkan(index)),
            ("wgpu", None) => Ok(DeviceSpec::Wgpu),
            ("cuda", index) => Ok(DeviceSpec::Cuda(index)),
            _ => Err(unknown()),
        }
    }
}

impl fmt::Display for DeviceSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeviceSpec::Cpu => f.write_str("cpu"),
            DeviceSpec::Vulkan(None) => f.write_str("vulkan"),
            DeviceSpec::Vulkan(Some(n)) => write!(f, "vulkan:{n}"),
            DeviceSpec::Wgpu => f.write_str("wgpu"),
            DeviceSpec::Cuda(None) => f.write_str("cuda"),
            DeviceSpec::Cuda(Some(n)) => write!(f, "cuda:{n}"),
        }
    }
}

/// Sets the number of CPU threads the backend uses (`0` = one per core).
///
/// Must be called before the first tensor operation. Returns `false` when the
/// pool was already started, in which case the earlier size stays.
pub fn set_cpu_threads(threads: usize) -> bool {
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .thread_name(|i| format!("{CPU_THREAD_PREFIX}{i}"))
        .build_global()
        .is_ok()
}

/// Name prefix of the CPU backend's worker threads, rayon's and
/// [`crate::parallel`]'s (as `/proc` shows them).
pub const CPU_THREAD_PREFIX: &str = "vpipe-cpu-";

/// The number of threads the CPU backend uses.
pub fn cpu_threads() -> usize {
    rayon::current_num_threads()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_names_parse_and_print_back() {
        for (s, d) in [
            ("cpu", DeviceSpec::Cpu),
            ("vulkan", DeviceSpec::Vulkan(None)),
            ("vulkan:1", DeviceSpec::Vulkan(Some(1))),
            ("wgpu", DeviceSpec::Wgpu),
            ("cuda", DeviceSpec::Cuda(None)),
            ("cuda:0", DeviceSpec::Cuda(Some(0))),
        ] {
            assert_eq!(s.parse::<DeviceSpec>(), Ok(d), "{s}");
            assert_eq!(d.to_string(), s);
        }
        for bad in [
            "", "gpu", "CPU", "cpu:0", "wgpu:0", "vulkan:", "cuda:x", "cuda:-1", "cuda:+1",
        ] {
            assert_eq!(
                bad.parse::<DeviceSpec>(),
                Err(DeviceError::Unknown(bad.into())),
                "{bad}"
            );
        }
        assert!(
            "metal"
                .parse::<DeviceSpec>()
                .unwrap_err()
                .to_string()
                .contains("expected one of: cpu, vulkan")
        );
    }

    #[test]
    fn cpu_is_the_explicit_default() {
        assert_eq!(DeviceSpec::default(), DeviceSpec::Cpu);
        assert_eq!(DeviceSpec::Cpu.device().unwrap(), Device::flex());
        assert_eq!(default_device(), Device::flex());
    }

    #[test]
    fn backends_not_compiled_in_name_their_feature() {
        for (name, feature) in [("vulkan:0", "vulkan"), ("wgpu", "wgpu"), ("cuda", "cuda")] {
            let spec: DeviceSpec = name.parse().unwrap();
            assert_eq!(spec.feature(), Some(feature));
            if spec.is_compiled() {
                continue;
            }
            let err = spec.device().unwrap_err();
            assert_eq!(
                err.to_string(),
                format!("device '{name}' needs vpipe built with --features {feature}")
            );
        }
    }
}
