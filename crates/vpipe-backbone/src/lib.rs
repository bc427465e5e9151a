//! The MobileViT v1 backbone (Mehta & Rastegari, arXiv 2110.02178) on burn.
//!
//! - [`config`]: the XXS, XS and S architectures and their output strides.
//! - [`layout`]: recognises ml-cvnets, timm and Hugging Face checkpoints and maps
//!   their tensor names onto one canonical (ml-cvnets) naming.
//! - [`params`]: hands named tensors to the layers, checking every shape.
//! - [`kernels`]: the operations the layers are written in, with two
//!   implementations (vpipe's fused CPU kernels, burn's generic ops).
//! - [`panels`]: the linear layers' `f32` products, against weights packed at load;
//!   [`weighted_sum`]: the second product of `f32` attention.
//! - [`precision`] and [`bf16`]: the opt-in bf16 matrix products of those kernels.
//! - [`layers`]: the building blocks (convolution with folded batch norm,
//!   inverted residual, transformer layer, MobileViT block).
//! - [`trainable`]: the layers' trainable form (unfolded parameters as autodiff
//!   leaves, batch norm with frozen statistics), for training heads.
//! - [`mobilevit`]: the backbone, which returns the feature maps at output
//!   strides 2, 4, 8, 16 and 32.

pub mod activation;
pub mod amx;
pub mod bf16;
pub mod config;
pub mod cpu;
pub mod error;
pub mod int8;
pub mod kernels;
pub mod layers;
pub mod layout;
pub mod mobilevit;
pub mod panels;
pub mod params;
pub mod precision;
pub mod trainable;
pub mod weighted_sum;

pub use config::{
    MobileVitConfig, MobileVitSize, OUTPUT_STRIDES, check_output_stride, default_output_stride,
    output_strides_in_words,
};
pub use error::{BackboneError, Result};
pub use kernels::Kernels;
pub use layout::{CheckpointLayout, SourceLayout};
pub use mobilevit::{Features, MobileVit};
pub use params::Params;
pub use precision::{Precision, cpu_precision, set_cpu_precision};
pub use trainable::Param;
