//! Shared building blocks of vpipe.
//!
//! - [`checkpoint`]: reads PyTorch (`.pt`, `.bin`) and safetensors checkpoints into
//!   host tensors, without executing anything from the file.
//! - [`npy`]: reads and writes NumPy `.npy` arrays.
//! - [`compare`]: computed arrays against references, refusing NaN.
//! - [`output`]: atomic file writes.
//! - [`labels`]: the class-name sets of the supported datasets.
//! - [`result`]: the result type shared by every head.
//! - [`device`]: picks the burn device the networks run on.
//! - [`geometry`]: where a network input lies in the original image.
//! - [`pixel`]: the channel order of colour pixels.
//! - [`preset`]: the names of the preprocessing presets.
//! - [`suggest`]: "did you mean" hints for mistyped names.

pub mod checkpoint;
pub mod compare;
pub mod device;
pub mod error;
pub mod geometry;
pub mod labels;
pub mod npy;
pub mod output;
pub mod pixel;
pub mod preset;
pub mod result;
pub mod simd;
pub mod suggest;

pub use checkpoint::{HostTensor, TensorFile};
pub use error::{CoreError, Result};
