//! Checkpoint files (safetensors, PyTorch zip archives and legacy pickles): the
//! bytes are written to a file and read as `LoadedModel::load` and `vpipe weights
//! import` read it (`TensorFile::read`, then layout detection and renaming), and
//! as a vpipe weights file's metadata.
#![no_main]

use std::io::Write;

use libfuzzer_sys::fuzz_target;
use vpipe_backbone::CheckpointLayout;
use vpipe_backbone::layout::to_canonical;
use vpipe_io::TensorFile;
use vpipe_weights::WeightsMetadata;

fuzz_target!(|data: &[u8]| {
    let mut file = tempfile::NamedTempFile::new().expect("temp file");
    file.write_all(data).expect("write temp file");
    file.flush().expect("flush temp file");
    let path = file.path();
    let _ = WeightsMetadata::read(path);
    if let Ok(tensors) = TensorFile::read(path) {
        let _ = CheckpointLayout::detect(&tensors);
        if let Ok(canonical) = to_canonical(&tensors) {
            let _ = canonical.backbone_digest();
        }
    }
});
