//! Video files, network streams and cameras, read and written through OpenCV.
//!
//! Colour frames come out as BGR [`Frame`]s, OpenCV's order, so that neither
//! reading nor writing swaps channels. Frames a file fails to decode are skipped
//! and counted rather than ending the video. Written videos go to a temporary file
//! beside the target and take their final name only when [`VideoWriter::finish`]
//! succeeds, so no half-written video is left under the final name.

use std::path::{Path, PathBuf};

use opencv::core::{CV_8UC1, CV_8UC3, CV_8UC4, Mat, Scalar, Size, Vec3b};
use opencv::prelude::*;
use opencv::videoio;

use vpipe_core::pixel::{ChannelOrder, swap_red_blue};
use vpipe_io::output::PartialFile;

use super::{FramePool, VideoInput};
use crate::error::{MediaError, Result};
use crate::image_io::Frame;

/// Keeps OpenCV's own log lines (back-ends it tries and rejects) off the terminal;
/// vpipe reports failures itself.
fn quiet_opencv() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let _ = opencv::core::set_log_level(opencv::core::LogLevel::LOG_LEVEL_SILENT);
    });
}

fn cv_err(input: &str, what: &str, e: opencv::Error) -> MediaError {
    MediaError::Video(format!("{input}: {what}: {}", e.message))
}

/// Failed reads in a row after which a file or stream counts as ended.
const MAX_FAILED_READS: u32 = 50;

/// Runs of skipped frames of one input that get a warning each; later ones are
/// logged at debug level and counted.
const WARNED_FAILURES: u64 = 3;

/// Reads frames from a [`VideoInput`].
pub struct VideoReader {
    cap: videoio::VideoCapture,
    input: VideoInput,
    name: String,
    fps: f64,
    frame_count: Option<u64>,
    width: usize,
    height: usize,
    decoded: u64,
    skipped: u64,
    /// Failed reads since the last frame that decoded: skipped frames once a frame
    /// decodes after them, nothing if the input ends instead.
    failed_run: u64,
    /// Warnings given about skipped frames.
    warned: u64,
    mat: Mat,
    pool: FramePool,
}

impl std::fmt::Debug for VideoReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VideoReader")
            .field("input", &self.input)
            .field("fps", &self.fps)
            .field("frame_count", &self.frame_count)
            .finish()
    }
}

impl VideoReader {
    /// Opens a file, stream or camera.
    pub fn open(input: &VideoInput) -> Result<Self> {
        let name = input.to_string();
        if let VideoInput::File(p) = input
            && !p.is_file()
        {
            return Err(MediaError::Video(format!("{name}: no such file")));
        }
        quiet_opencv();
        // Files and URLs go to FFmpeg first; other back-ends only if it declines.
        let open = |api| match input {
            VideoInput::File(p) => videoio::VideoCapture::from_file(p, api),
            VideoInput::Url(u) => videoio::VideoCapture::from_file(u, api),
            VideoInput::Camera(i) => videoio::VideoCapture::new(*i, api),
        };
        let first = if input.is_live() && matches!(input, VideoInput::Camera(_)) {
            videoio::CAP_ANY
        } else {
            videoio::CAP_FFMPEG
        };
        let mut cap = open(first).map_err(|e| cv_err(&name, "cannot open", e))?;
        if !cap.is_opened().unwrap_or(false) && first != videoio::CAP_ANY {
            cap = open(videoio::CAP_ANY).map_err(|e| cv_err(&name, "cannot open", e))?;
        }
        if !cap.is_opened().unwrap_or(false) {
            return Err(MediaError::Video(format!(
                "{name}: cannot open as a video (not a video, an unsupported codec, or unreachable)"
            )));
        }
        let get = |prop| cap.get(prop).unwrap_or(0.0);
        let fps = get(videoio::CAP_PROP_FPS);
        let count = get(videoio::CAP_PROP_FRAME_COUNT);
        let (width, height) = (
            get(videoio::CAP_PROP_FRAME_WIDTH) as usize,
            get(videoio::CAP_PROP_FRAME_HEIGHT) as usize,
        );
        tracing::debug!(
            input = %name,
            backend = %cap.get_backend_name().unwrap_or_default(),
            fps,
            frames = count,
            width,
            height,
            "video opened"
        );
        Ok(Self {
            cap,
            input: input.clone(),
            name,
            fps: if fps.is_finite() && fps > 0.0 {
                fps
            } else {
                25.0
            },
            frame_count: (!input.is_live() && count >= 1.0).then_some(count as u64),
            width,
            height,
            decoded: 0,
            skipped: 0,
            failed_run: 0,
            warned: 0,
            mat: Mat::default(),
            pool: FramePool::default(),
        })
    }

    /// The pool the reader takes frame buffers from: hand finished frames' buffers
    /// to it ([`FramePool::give`]) to save an allocation and a copy per frame.
    pub fn frame_pool(&self) -> FramePool {
        self.pool.clone()
    }

    /// Frames per second (25 when the container does not say).
    pub fn fps(&self) -> f64 {
        self.fps
    }

    /// Number of frames, for files whose container says.
    pub fn frame_count(&self) -> Option<u64> {
        self.frame_count
    }

    /// Frame size `(width, height)` as the container reports it.
    pub fn size(&self) -> (usize, usize) {
        (self.width, self.height)
    }

    /// The input.
    pub fn input(&self) -> &VideoInput {
        &self.input
    }

    /// Frames that failed to decode and were skipped so far.
    pub fn skipped(&self) -> u64 {
        self.skipped
    }

    /// The time of the frame read last, in ms, by the source's own clock (its
    /// presentation timestamps, counted from the start of the stream), when the source
    /// gives one.
    pub fn position_ms(&self) -> Option<f64> {
        self.cap
            .get(videoio::CAP_PROP_POS_MSEC)
            .ok()
            .filter(|t| t.is_finite() && *t >= 0.0)
    }

    /// The next frame, or `None` at the end. Frames that fail to decode are skipped
    /// with a warning and counted ([`VideoReader::skipped`]); failed reads at the end
    /// of the input (a live stream that stopped) are not frames and count for
    /// nothing.
    pub fn next_frame(&mut self) -> Result<Option<Frame>> {
        let mut failures = 0;
        loop {
            if let Some(frame) = self.read_into_pooled_buffer() {
                self.confirm_failures();
                self.decoded += 1;
                return Ok(Some(frame));
            }
            let ok = !self.mat.empty();
            if ok {
                match mat_to_frame(&self.mat) {
                    Ok(f) => {
                        self.confirm_failures();
                        self.decoded += 1;
                        return Ok(Some(f));
                    }
                    Err(e) => {
                        tracing::warn!(input = %self.name, error = %e, "skipping an unreadable frame");
                    }
                }
            }
            // A failed read is the end, unless the file says more frames follow
            // (a corrupt frame) or the source is live (a hiccup).
            let position = self.cap.get(videoio::CAP_PROP_POS_FRAMES).unwrap_or(0.0) as u64;
            let more = match self.frame_count {
                Some(n) => position + 1 < n,
                None => self.input.is_live(),
            };
            failures += 1;
            if !more || failures >= MAX_FAILED_READS {
                // Nothing decoded after these failures: the input ended.
                self.failed_run = 0;
                self.count_missing();
                return Ok(None);
            }
            self.failed_run += 1;
        }
    }
}

impl VideoReader {
    /// A frame decoded after failed reads: those were frames, now skipped. The
    /// first few runs get a warning each, naming the frames by their place in the
    /// input; the rest are counted (and shown from `-v` on).
    fn confirm_failures(&mut self) {
        if self.failed_run == 0 {
            return;
        }
        let (first, n) = (self.decoded + self.skipped, self.failed_run);
        self.skipped += n;
        self.failed_run = 0;
        let frames = if n == 1 {
            format!("frame {first}")
        } else {
            format!("frames {first}-{}", first + n - 1)
        };
        if self.warned < WARNED_FAILURES {
            self.warned += 1;
            tracing::warn!(input = %self.name, "skipping {frames}: failed to decode");
            if self.warned == WARNED_FAILURES {
                tracing::warn!(input = %self.name, "further frames that fail to decode are counted without a warning each");
            }
        } else {
            tracing::debug!(input = %self.name, "skipping {frames}: failed to decode");
        }
    }

    /// Reads the next frame. When it is BGR at the container's frame size, OpenCV
    /// writes it straight into a pooled buffer, which becomes the frame; otherwise
    /// (a failed read, an unknown frame size, another size or pixel type) it is
    /// left in `self.mat` and this returns `None`.
    fn read_into_pooled_buffer(&mut self) -> Option<Frame> {
        let (w, h) = (self.width, self.height);
        if w == 0 || h == 0 {
            // No size to decode into: OpenCV allocates.
            self.read_into_mat();
            return None;
        }
        let mut buffer = self.pool.take(w * h * 3);
        let start = buffer.as_ptr();
        let in_place =
            match Mat::new_rows_cols_with_bytes_mut::<Vec3b>(h as i32, w as i32, &mut buffer) {
                Ok(mut mat) => {
                    let ok = self.cap.read(&mut mat).unwrap_or(false);
                    // OpenCV reallocates a header whose size or type differs from the
                    // frame.
                    let in_place = ok && mat.data() == start && mat.typ() == CV_8UC3;
                    if !in_place {
                        self.mat = if ok {
                            mat.try_clone().unwrap_or_default()
                        } else {
                            Mat::default()
                        };
                    }
                    in_place
                }
                Err(_) => {
                    self.read_into_mat();
                    false
                }
            };
        if in_place {
            Frame::with_order(w, h, buffer, ChannelOrder::Bgr).ok()
        } else {
            self.pool.give(buffer);
            None
        }
    }

    /// Reads the next frame into `self.mat` (left empty when the read fails).
    fn read_into_mat(&mut self) {
        if !self.cap.read(&mut self.mat).unwrap_or(false) {
            self.mat = Mat::default();
        }
    }

    /// At the end of a file: frames the container announced but that never decoded
    /// (the decoder drops packets it cannot decode) count as skipped.
    fn count_missing(&mut self) {
        if let Some(n) = self.frame_count {
            let missing = n.saturating_sub(self.decoded + self.skipped);
            if missing > 0 {
                let first = self.decoded + self.skipped;
                self.skipped += missing;
                tracing::warn!(
                    input = %self.name,
                    "frames {first}-{} of the {n} the file announces did not decode; {} frame(s) skipped in all",
                    n - 1,
                    self.skipped
                );
            }
        }
    }
}

/// Converts an 8-bit OpenCV image into a frame: BGR images stay BGR (a plain copy),
/// gray and BGRA ones become RGB.
fn mat_to_frame(mat: &Mat) -> Result<Frame> {
    let (w, h) = (mat.cols() as usize, mat.rows() as usize);
    // Decoded frames are continuous; anything else is copied into one buffer first.
    let copy;
    let mat = if mat.is_continuous() {
        mat
    } else {
        copy = mat
            .try_clone()
            .map_err(|e| MediaError::Video(format!("cannot copy a frame: {}", e.message)))?;
        &copy
    };
    let bytes = mat
        .data_bytes()
        .map_err(|e| MediaError::Video(format!("cannot read a frame: {}", e.message)))?;
    let typ = mat.typ();
    let channels = if typ == CV_8UC3 {
        3
    } else if typ == CV_8UC1 {
        1
    } else if typ == CV_8UC4 {
        4
    } else {
        return Err(MediaError::Video(format!(
            "unsupported frame type {typ} (8-bit gray, BGR or BGRA expected)"
        )));
    };
    if bytes.len() != w * h * channels {
        return Err(MediaError::Video(
            "frame buffer does not match its size".into(),
        ));
    }
    match channels {
        3 => Frame::with_order(w, h, bytes.to_vec(), ChannelOrder::Bgr),
        1 => Frame::new(w, h, bytes.iter().flat_map(|&v| [v; 3]).collect()),
        _ => {
            let mut rgb = vec![0u8; w * h * 3];
            swap_red_blue(&mut rgb, bytes, 4);
            Frame::new(w, h, rgb)
        }
    }
}

/// Writes frames (BGR or RGB) into a video file.
pub struct VideoWriter {
    writer: videoio::VideoWriter,
    /// The file being written; taken when it gets its final name.
    partial: Option<PartialFile>,
    target: PathBuf,
    width: usize,
    height: usize,
    frames: u64,
    mat: Mat,
}

impl std::fmt::Debug for VideoWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VideoWriter")
            .field("target", &self.target)
            .field("frames", &self.frames)
            .finish()
    }
}

impl VideoWriter {
    /// Starts a video of `width x height` at `fps` with codec `fourcc` (e.g. `mp4v`).
    pub fn create(
        target: &Path,
        fourcc: &str,
        fps: f64,
        width: usize,
        height: usize,
    ) -> Result<Self> {
        let name = target.display().to_string();
        let code: Vec<char> = fourcc.chars().collect();
        if code.len() != 4 {
            return Err(MediaError::Video(format!(
                "{name}: codec '{fourcc}' is not a four-character code"
            )));
        }
        let cc = videoio::VideoWriter::fourcc(code[0], code[1], code[2], code[3])
            .map_err(|e| cv_err(&name, "bad codec", e))?;
        // The temporary file keeps the extension: OpenCV picks the container from it.
        let partial = PartialFile::new(target)
            .map_err(|e| MediaError::Video(format!("{name}: cannot create: {e}")))?;
        let temp = partial.path().to_string_lossy().into_owned();
        quiet_opencv();
        let size = Size::new(width as i32, height as i32);
        let writer = videoio::VideoWriter::new(&temp, cc, fps, size, true)
            .map_err(|e| cv_err(&name, "cannot create", e))?;
        if !writer.is_opened().unwrap_or(false) {
            return Err(MediaError::Video(format!(
                "{name}: OpenCV cannot write this video (codec '{fourcc}' unavailable or folder not writable)"
            )));
        }
        let mat =
            Mat::new_rows_cols_with_default(height as i32, width as i32, CV_8UC3, Scalar::all(0.0))
                .map_err(|e| cv_err(&name, "cannot allocate a frame", e))?;
        Ok(Self {
            writer,
            partial: Some(partial),
            target: target.to_path_buf(),
            width,
            height,
            frames: 0,
            mat,
        })
    }

    /// Appends a frame; it must have the video's size.
    pub fn write(&mut self, frame: &Frame) -> Result<()> {
        if (frame.width, frame.height) != (self.width, self.height) {
            return Err(MediaError::Video(format!(
                "{}: frame is {}x{}, the video is {}x{}",
                self.target.display(),
                frame.width,
                frame.height,
                self.width,
                self.height
            )));
        }
        let name = self.target.display().to_string();
        let written = match frame.order {
            // OpenCV's order: the frame's own pixels, without a copy.
            ChannelOrder::Bgr => {
                let mat = Mat::new_rows_cols_with_bytes::<Vec3b>(
                    self.height as i32,
                    self.width as i32,
                    &frame.data,
                )
                .map_err(|e| cv_err(&name, "frame buffer", e))?;
                self.writer.write(&mat)
            }
            ChannelOrder::Rgb => {
                let dst = self
                    .mat
                    .data_bytes_mut()
                    .map_err(|e| cv_err(&name, "frame buffer", e))?;
                swap_red_blue(dst, &frame.data, 3);
                self.writer.write(&self.mat)
            }
        };
        written.map_err(|e| cv_err(&name, "cannot write a frame", e))?;
        self.frames += 1;
        Ok(())
    }

    /// Frames written so far.
    pub fn frames(&self) -> u64 {
        self.frames
    }

    /// Closes the file and gives it its final name.
    pub fn finish(mut self) -> Result<PathBuf> {
        let name = self.target.display().to_string();
        self.writer
            .release()
            .map_err(|e| cv_err(&name, "cannot close", e))?;
        let partial = self
            .partial
            .take()
            .ok_or_else(|| MediaError::Video(format!("{name}: already finished")))?;
        partial.finish().map_err(|e| {
            MediaError::Video(format!(
                "{name}: cannot move the finished video into place: {e}"
            ))
        })
    }
}

impl Drop for VideoWriter {
    fn drop(&mut self) {
        // Unfinished: OpenCV closes the file, then the partial file is removed.
        if self.partial.is_some() {
            let _ = self.writer.release();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(w: usize, h: usize, shade: u8) -> Frame {
        let mut data = vec![0u8; w * h * 3];
        for (i, px) in data.chunks_exact_mut(3).enumerate() {
            px.copy_from_slice(&[shade, (i % w) as u8, 200]);
        }
        Frame::new(w, h, data).unwrap()
    }

    #[test]
    fn writes_and_reads_back_a_video() {
        let dir = std::env::temp_dir().join(format!("vpipe-video-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let target = dir.join("clip.avi");
        let mut w = VideoWriter::create(&target, "MJPG", 10.0, 64, 48).unwrap();
        for i in 0..12 {
            // RGB frames are swapped on the way out, BGR ones written as they are.
            let f = frame(64, 48, (i * 20) as u8);
            let f = if i % 2 == 0 {
                f
            } else {
                f.into_order(ChannelOrder::Bgr)
            };
            w.write(&f).unwrap();
        }
        assert!(w.write(&frame(32, 48, 0)).is_err());
        assert!(!target.exists(), "the video appears only when finished");
        w.finish().unwrap();
        let mut r = VideoReader::open(&VideoInput::File(target.clone())).unwrap();
        assert_eq!(r.size(), (64, 48));
        assert!((r.fps() - 10.0).abs() < 0.01);
        let pool = r.frame_pool();
        let mut n = 0;
        let mut given = None;
        while let Some(f) = r.next_frame().unwrap() {
            assert_eq!((f.width, f.height), (64, 48));
            if let Some(p) = given {
                assert_eq!(
                    f.data.as_ptr(),
                    p,
                    "frame {n} was not decoded into the pooled buffer"
                );
            }
            assert_eq!(f.order, ChannelOrder::Bgr);
            let rgb = f.clone().into_order(ChannelOrder::Rgb);
            // Red channel carries the shade, blue stays 200 (JPEG is lossy).
            let shade = n * 20;
            assert!(
                (rgb.data[0] as i32 - shade).abs() < 12,
                "red {}",
                rgb.data[0]
            );
            assert!(
                (rgb.data[2] as i32 - 200).abs() < 12,
                "blue {}",
                rgb.data[2]
            );
            // The next frame is decoded into this frame's buffer.
            given = Some(f.data.as_ptr());
            pool.give(f.data);
            n += 1;
        }
        assert_eq!(n, 12);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn missing_and_non_video_files_are_errors() {
        let e = VideoReader::open(&VideoInput::File("/nonexistent/x.mp4".into())).unwrap_err();
        assert!(e.to_string().contains("no such file"), "{e}");
        let dir = std::env::temp_dir().join(format!("vpipe-notvideo-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("fake.mp4");
        std::fs::write(&p, b"this is not a video at all").unwrap();
        let e = VideoReader::open(&VideoInput::File(p)).unwrap_err();
        assert!(e.to_string().contains("cannot open"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn an_unfinished_video_leaves_nothing_behind() {
        let dir = std::env::temp_dir().join(format!("vpipe-unfinished-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let target = dir.join("clip.avi");
        {
            let mut w = VideoWriter::create(&target, "MJPG", 10.0, 16, 16).unwrap();
            w.write(&frame(16, 16, 1)).unwrap();
        }
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 0);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
