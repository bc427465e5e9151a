//! Detection heads' tracks over the frames of one run (`heads[i].tracker`): each such
//! head gets its own ByteTrack ([`vpipe_track`]), fed the head's detections frame by
//! frame, in order; the detections it follows get their track id, and each track
//! keeps a short trail of box centres for the annotated output.

use std::collections::{BTreeMap, VecDeque};

use vpipe_annotate::Trail;
use vpipe_core::result::HeadOutput;
use vpipe_track::{ByteTrack, TrackInput};

use crate::error::{PipelineError, Result};
use crate::graph::NamedOutput;
use crate::spec::PipelineSpec;

/// One head's tracker and its tracks' trails.
struct HeadTracker {
    tracker: ByteTrack,
    /// Points kept per trail (0: no trails).
    trail: usize,
    /// Each track's recent box centres, and the frame it was last seen in.
    trails: BTreeMap<u64, (VecDeque<[f32; 2]>, u64)>,
    frame: u64,
}

/// The trackers of one run, one per head that asks for one.
pub(crate) struct Tracking {
    heads: Vec<Option<HeadTracker>>,
}

impl Tracking {
    /// Trackers for the heads of `spec` that have a `tracker:`, for a video of `fps`
    /// frames per second (0 when unknown).
    pub(crate) fn new(spec: &PipelineSpec, fps: f64) -> Self {
        Self {
            heads: spec
                .heads
                .iter()
                .map(|h| {
                    h.tracker.as_ref().map(|t| HeadTracker {
                        tracker: ByteTrack::new(t.config(fps)),
                        trail: t.trail,
                        trails: BTreeMap::new(),
                        frame: 0,
                    })
                })
                .collect(),
        }
    }

    /// Whether no head has a tracker.
    pub(crate) fn is_empty(&self) -> bool {
        self.heads.iter().all(Option::is_none)
    }

    /// Feeds one frame's results (in head order) to the trackers: the detections a
    /// track follows get its id. Returns the trails to draw on the frame.
    pub(crate) fn update(&mut self, outputs: &mut [NamedOutput]) -> Result<Vec<Trail>> {
        let mut trails = Vec::new();
        for (head, out) in self.heads.iter_mut().zip(outputs.iter_mut()) {
            let Some(head) = head else { continue };
            let HeadOutput::Detection { detections } = &mut out.output else {
                return Err(PipelineError::Tracking {
                    head: out.head.clone(),
                    message:
                        "has a tracker but gave no detections (trackers follow detection heads)"
                            .into(),
                });
            };
            head.frame += 1;
            let input: Vec<TrackInput> = detections
                .iter()
                .map(|d| TrackInput {
                    bbox: d.bbox,
                    score: d.score,
                })
                .collect();
            for t in head.tracker.update(&input) {
                let (Some(id), Some(i)) = (t.id, t.detection) else {
                    continue;
                };
                let d = &mut detections[i];
                d.track_id = Some(id);
                if head.trail > 0 {
                    let b = d.bbox;
                    let (points, seen) = head.trails.entry(id).or_default();
                    points.push_back([(b[0] + b[2]) / 2.0, (b[1] + b[3]) / 2.0]);
                    if points.len() > head.trail {
                        points.pop_front();
                    }
                    *seen = head.frame;
                }
            }
            // Trails of tracks not seen for a trail's length are dropped.
            let (frame, keep) = (head.frame, head.trail as u64);
            head.trails.retain(|_, (_, seen)| frame - *seen < keep);
            trails.extend(head.trails.iter().map(|(&id, (points, _))| Trail {
                track_id: id,
                points: points.iter().copied().collect(),
            }));
        }
        Ok(trails)
    }
}
