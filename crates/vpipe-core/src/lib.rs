//! The types every vpipe crate shares (file reading and writing is `vpipe-io`).
//!
//! - [`tensor`]: a tensor in host memory ([`HostTensor`]).
//! - [`labels`]: the class-name sets of the supported datasets.
//! - [`result`]: the result type shared by every head.
//! - [`device`]: picks the burn device the networks run on.
//! - [`parallel`]: the thread pool of the CPU kernels.
//! - [`geometry`]: where a network input lies in the original image.
//! - [`pixel`]: the channel order of colour pixels.
//! - [`preset`]: the names of the preprocessing presets.
//! - [`suggest`]: "did you mean" hints for mistyped names (the preset names' errors
//!   give them, so they live here with those names).

pub mod device;
pub mod geometry;
pub mod labels;
pub mod parallel;
pub mod pixel;
pub mod preset;
pub mod result;
pub mod suggest;
pub mod tensor;
pub mod token;

pub use tensor::HostTensor;
