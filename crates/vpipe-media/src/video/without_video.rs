//! Video in a build without the `video` feature: no OpenCV, so opening or creating
//! a video is an error that says what is missing. The types cannot be constructed.

use std::convert::Infallible;
use std::path::{Path, PathBuf};

use super::{FramePool, VideoInput};
use crate::error::{MediaError, Result};
use crate::image_io::Frame;

/// The error of every video operation in this build.
fn missing(what: &str) -> MediaError {
    MediaError::Video(format!(
        "{what}: this vpipe was built without the `video` feature, so it reads still images only; build it with default features (which need OpenCV: `libopencv-dev`) to read and write videos, streams and cameras"
    ))
}

/// Reads frames from a [`VideoInput`]: in this build, never.
#[derive(Debug)]
pub struct VideoReader {
    never: Infallible,
}

impl VideoReader {
    /// Opens a file, stream or camera: an error in this build.
    pub fn open(input: &VideoInput) -> Result<Self> {
        Err(missing(&input.to_string()))
    }

    /// The pool decoded frames' buffers come from.
    pub fn frame_pool(&self) -> FramePool {
        match self.never {}
    }

    /// Frames per second.
    pub fn fps(&self) -> f64 {
        match self.never {}
    }

    /// Frames in the file, if known.
    pub fn frame_count(&self) -> Option<u64> {
        match self.never {}
    }

    /// Frame width and height.
    pub fn size(&self) -> (usize, usize) {
        match self.never {}
    }

    /// The input.
    pub fn input(&self) -> &VideoInput {
        match self.never {}
    }

    /// Frames skipped as undecodable.
    pub fn skipped(&self) -> u64 {
        match self.never {}
    }

    /// The time of the frame read last, by the source's clock.
    pub fn position_ms(&self) -> Option<f64> {
        match self.never {}
    }

    /// The next frame.
    pub fn next_frame(&mut self) -> Result<Option<Frame>> {
        match self.never {}
    }
}

/// Writes a video: in this build, never.
#[derive(Debug)]
pub struct VideoWriter {
    never: Infallible,
}

impl VideoWriter {
    /// Creates a video file: an error in this build.
    pub fn create(
        target: &Path,
        _fourcc: &str,
        _fps: f64,
        _width: usize,
        _height: usize,
    ) -> Result<Self> {
        Err(missing(&target.display().to_string()))
    }

    /// Appends a frame.
    pub fn write(&mut self, _frame: &Frame) -> Result<()> {
        match self.never {}
    }

    /// Frames written.
    pub fn frames(&self) -> u64 {
        match self.never {}
    }

    /// Completes the file.
    pub fn finish(self) -> Result<PathBuf> {
        match self.never {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn videos_say_that_the_video_feature_is_missing() {
        let err = VideoReader::open(&VideoInput::File("clip.mp4".into())).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("clip.mp4: this vpipe was built without the `video` feature"),
            "{err}"
        );
        let err = VideoWriter::create(Path::new("out.mp4"), "mp4v", 25.0, 2, 2).unwrap_err();
        assert!(
            err.to_string().contains("without the `video` feature"),
            "{err}"
        );
    }
}
