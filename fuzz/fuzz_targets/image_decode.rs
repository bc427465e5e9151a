//! Still images (PNG, JPEG, BMP, WebP, TIFF): the bytes are written to a file and
//! decoded by `vpipe_media::load_image`, as image inputs of `vpipe infer` and of
//! pipelines are.
#![no_main]

use std::io::Write;

use libfuzzer_sys::fuzz_target;
use vpipe_media::load_image;

fuzz_target!(|data: &[u8]| {
    let mut file = tempfile::NamedTempFile::new().expect("temp file");
    file.write_all(data).expect("write temp file");
    file.flush().expect("flush temp file");
    if let Ok(frame) = load_image(file.path()) {
        assert_eq!(frame.data.len(), frame.width * frame.height * 3);
    }
});
