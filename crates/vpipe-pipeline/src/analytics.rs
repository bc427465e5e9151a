//! What a run works out from detection heads' results over the frames: tracks
//! (`heads[i].tracker`), counts in polygon zones (`zones`) and crossings of lines
//! (`lines`). Each such head gets its own ByteTrack ([`vpipe_track`]), fed the head's
//! detections frame by frame, in order; the detections it follows get their track
//! id, and each track keeps a short trail of box centres for the annotated output.

use std::collections::{BTreeMap, VecDeque};

use vpipe_annotate::{Region, Trail};
use vpipe_core::result::{Detection, HeadOutput, RegionCount};
use vpipe_track::{Anchor, ByteTrack, LineCounter, PolygonZone, TrackInput};

use crate::error::{PipelineError, Result};
use crate::graph::NamedOutput;
use crate::spec::PipelineSpec;

/// A zone with its name and anchor.
struct Zone {
    name: String,
    zone: PolygonZone,
    anchor: Anchor,
}

/// A line with its name and anchor.
struct Line {
    name: String,
    counter: LineCounter,
    anchor: Anchor,
}

/// One head's tracker, zones and lines.
struct HeadAnalytics {
    tracker: Option<ByteTrack>,
    zones: Vec<Zone>,
    lines: Vec<Line>,
    /// Points kept per trail (0: no trails).
    trail: usize,
    /// Each track's recent box centres, and the frame it was last seen in.
    trails: BTreeMap<u64, (VecDeque<[f32; 2]>, u64)>,
    frame: u64,
}

/// What one frame adds to the results and the drawing.
#[derive(Debug, Default)]
pub(crate) struct FrameAnalytics {
    /// Tracks' trails to draw.
    pub(crate) trails: Vec<Trail>,
    /// Zones and lines to draw, with their counts.
    pub(crate) regions: Vec<Region>,
    /// The zones' and lines' counts, for the results.
    pub(crate) counts: Vec<RegionCount>,
}

/// The trackers, zones and lines of one run, per head that has any.
pub(crate) struct Analytics {
    heads: Vec<Option<HeadAnalytics>>,
}

/// The class name results and counts use: the label, else the class index.
fn class_name(d: &Detection) -> String {
    if d.label.is_empty() {
        d.class_id.to_string()
    } else {
        d.label.clone()
    }
}

/// `counts` as `name n, name n` (or `0`).
fn summary(counts: &BTreeMap<String, u64>) -> String {
    if counts.is_empty() {
        return "0".into();
    }
    counts
        .iter()
        .map(|(k, v)| format!("{k} {v}"))
        .collect::<Vec<_>>()
        .join(", ")
}

impl Analytics {
    /// The trackers, zones and lines of the heads of `spec`, for a video of `fps`
    /// frames per second (0 when unknown). The file was checked when it was read.
    pub(crate) fn new(spec: &PipelineSpec, fps: f64) -> Self {
        let anchor = |a: &str| a.parse::<Anchor>().unwrap_or_default();
        Self {
            heads: spec
                .heads
                .iter()
                .map(|h| {
                    (h.tracker.is_some() || !h.zones.is_empty()).then(|| HeadAnalytics {
                        tracker: h.tracker.as_ref().map(|t| ByteTrack::new(t.config(fps))),
                        zones: h
                            .zones
                            .iter()
                            .filter_map(|z| {
                                Some(Zone {
                                    name: z.name.clone(),
                                    zone: PolygonZone::new(z.polygon.clone()).ok()?,
                                    anchor: anchor(&z.anchor),
                                })
                            })
                            .collect(),
                        lines: h
                            .lines
                            .iter()
                            .filter_map(|l| {
                                Some(Line {
                                    name: l.name.clone(),
                                    counter: LineCounter::new(l.start, l.end).ok()?,
                                    anchor: anchor(&l.anchor),
                                })
                            })
                            .collect(),
                        trail: h.tracker.as_ref().map_or(0, |t| t.trail),
                        trails: BTreeMap::new(),
                        frame: 0,
                    })
                })
                .collect(),
        }
    }

    /// Whether no head has a tracker, zone or line.
    pub(crate) fn is_empty(&self) -> bool {
        self.heads.iter().all(Option::is_none)
    }

    /// Feeds one frame's results (in head order) to the trackers, zones and lines:
    /// the detections a track follows get its id.
    pub(crate) fn update(&mut self, outputs: &mut [NamedOutput]) -> Result<FrameAnalytics> {
        let mut frame = FrameAnalytics::default();
        for (head, out) in self.heads.iter_mut().zip(outputs.iter_mut()) {
            let Some(head) = head else { continue };
            let name = out.head.clone();
            let HeadOutput::Detection { detections } = &mut out.output else {
                return Err(PipelineError::Tracking {
                    head: name,
                    message: "has a tracker or zones but gave no detections (they follow \
                              detection heads)"
                        .into(),
                });
            };
            head.frame += 1;
            if let Some(tracker) = &mut head.tracker {
                let input: Vec<TrackInput> = detections
                    .iter()
                    .map(|d| TrackInput {
                        bbox: d.bbox,
                        score: d.score,
                    })
                    .collect();
                for t in tracker.update(&input) {
                    if let (Some(id), Some(i)) = (t.id, t.detection) {
                        detections[i].track_id = Some(id);
                    }
                }
            }
            head.follow(detections, &name, &mut frame);
        }
        Ok(frame)
    }
}

impl HeadAnalytics {
    /// Trails, zone counts and line crossings of one frame's (tracked) detections.
    fn follow(&mut self, detections: &[Detection], head: &str, frame: &mut FrameAnalytics) {
        let now = self.frame;
        // Each detection's class name, for the zones' and lines' counts.
        let names: Vec<String> = detections.iter().map(class_name).collect();
        for (d, name) in detections.iter().zip(&names) {
            let Some(id) = d.track_id else { continue };
            if self.trail > 0 {
                let b = d.bbox;
                let (points, seen) = self.trails.entry(id).or_default();
                points.push_back([(b[0] + b[2]) / 2.0, (b[1] + b[3]) / 2.0]);
                if points.len() > self.trail {
                    points.pop_front();
                }
                *seen = now;
            }
            for line in &mut self.lines {
                line.counter.update(id, name, line.anchor.of(d.bbox));
            }
        }
        // Trails of tracks not seen for a trail's length are dropped.
        let keep = self.trail as u64;
        self.trails.retain(|_, (_, seen)| now - *seen < keep);
        frame
            .trails
            .extend(self.trails.iter().map(|(&id, (points, _))| Trail {
                track_id: id,
                points: points.iter().copied().collect(),
            }));
        let as_f32 = |p: &[[f64; 2]]| p.iter().map(|q| [q[0] as f32, q[1] as f32]).collect();
        for z in &self.zones {
            let counts = z.zone.count(
                names
                    .iter()
                    .zip(detections)
                    .map(|(n, d)| (n.as_str(), z.anchor.of(d.bbox))),
            );
            frame.regions.push(Region {
                points: as_f32(z.zone.points()),
                closed: true,
                text: format!("{}: {}", z.name, summary(&counts)),
            });
            frame.counts.push(RegionCount::Zone {
                head: head.to_string(),
                name: z.name.clone(),
                total: counts.values().sum(),
                counts,
            });
        }
        for l in &self.lines {
            let (ins, outs) = (l.counter.ins().clone(), l.counter.outs().clone());
            let (in_total, out_total) = (ins.values().sum(), outs.values().sum());
            frame.regions.push(Region {
                points: as_f32(&l.counter.ends()),
                closed: false,
                text: format!("{}: in {in_total}, out {out_total}", l.name),
            });
            frame.counts.push(RegionCount::Line {
                head: head.to_string(),
                name: l.name.clone(),
                ins,
                out: outs,
                in_total,
                out_total,
            });
        }
    }
}
