//! Multi-object tracking for vpipe's detection heads.
//!
//! - [`byte_track`]: ByteTrack, as Roboflow supervision runs it (the reference of
//!   this crate's tests).
//! - [`kalman`]: its constant-velocity Kalman filter.
//! - [`assignment`]: minimum-cost assignment, as SciPy's `linear_sum_assignment`.
//! - [`zones`]: counts in polygon zones and across lines.

pub mod assignment;
pub mod byte_track;
pub mod kalman;
pub mod zones;

pub use byte_track::{ByteTrack, ByteTrackConfig, TrackInput, TrackedBox};
pub use zones::{Anchor, Direction, LineCounter, PolygonZone};
