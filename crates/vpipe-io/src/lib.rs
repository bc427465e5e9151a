//! vpipe's files: what it reads from and writes to disk, below every other crate
//! but the shared types (`vpipe-core`).
//!
//! - [`checkpoint`]: reads PyTorch (`.pt`, `.bin`) and safetensors checkpoints into
//!   host tensors, without executing anything from the file.
//! - [`npy`]: reads and writes NumPy `.npy` arrays.
//! - [`compare`]: computed arrays against references, refusing NaN.
//! - [`output`]: atomic file writes.

pub mod checkpoint;
pub mod compare;
pub mod error;
pub mod npy;
pub mod output;

pub use checkpoint::TensorFile;
pub use error::{IoError, Result};
