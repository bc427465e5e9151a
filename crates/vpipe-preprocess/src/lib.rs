//! Preprocessing: decoded frames into the network inputs each checkpoint source was
//! trained with.
//!
//! - [`resize`]: bit-exact reimplementations of Pillow's, PyTorch's and OpenCV's
//!   (`INTER_LINEAR`) uint8 resizes.
//! - [`preset`]: the named preprocessing presets of each checkpoint source, and the
//!   batching of frames into network inputs.

pub mod preset;
pub mod resize;

pub use preset::{
    ChannelOrder, CropRounding, InputTransform, Preprocess, PreprocessPreset, PresetRecipe, Resize,
    Scaling, UnknownPreset,
};
