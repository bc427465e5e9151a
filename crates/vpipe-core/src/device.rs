//! Device selection.
//!
//! vpipe runs on burn's `flex` CPU backend by default. Its parallel kernels
//! (convolutions, matrix products) run on rayon's global thread pool, so the
//! CPU thread count is set once per process with [`set_cpu_threads`].

use burn::tensor::Device;

/// The device networks run on unless told otherwise: burn's `flex` CPU backend.
pub fn default_device() -> Device {
    Device::default()
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

/// Name prefix of the CPU backend's worker threads (as `/proc` shows them).
pub const CPU_THREAD_PREFIX: &str = "vpipe-cpu-";

/// The number of threads the CPU backend uses.
pub fn cpu_threads() -> usize {
    rayon::current_num_threads()
}
