//! vpipe's datasets: the readers that evaluation (`vpipe eval`) and training share.
//!
//! - [`coco`]: COCO instances JSON (images, boxes, polygons, RLE, crowd regions, categories),
//!   validated with located errors; what can be skipped is skipped and counted in a
//!   [`DatasetReport`].
//! - [`masks`]: COCO polygons and RLE rasterised exactly as pycocotools does
//!   (`frPyObjects` + `decode`, so masks equal `COCO.annToMask` bit for bit), and VOC-21 class
//!   masks made from COCO instances with ml-cvnets' mapping.
//! - [`mask_folder`]: segmentation datasets as folders of images and class-index masks (PNG),
//!   paired by file stem.
//! - [`classification`]: ImageFolder trees and `path,label` CSV files.

pub mod classification;
pub mod coco;
mod error;
pub mod mask_folder;
pub mod masks;
mod report;

pub use error::DataError;
pub use report::DatasetReport;

/// Result of the dataset readers.
pub type Result<T> = std::result::Result<T, DataError>;
