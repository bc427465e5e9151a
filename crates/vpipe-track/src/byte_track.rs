//! ByteTrack (Zhang et al., "ByteTrack: Multi-Object Tracking by Associating Every
//! Detection Box", ECCV 2022), step for step as Roboflow supervision 0.26's
//! `ByteTrack.update_with_tensors` runs it, so that both give the same track ids and
//! boxes on the same detections (`tests/fixtures/tracking`, made by
//! `scripts/make_track_reference.py`).
//!
//! Each frame: the tracks are moved one frame ahead by their Kalman filters; the
//! high-score detections are matched to them by IoU weighted with the score; the
//! tracks left over are matched to the low-score detections (the "BYTE" step, which
//! keeps occluded objects whose score dropped); tracks seen once are confirmed by a
//! second match or dropped; unmatched high-score detections start tracks; and lost
//! tracks are kept for a buffer of frames before they are removed.

use std::collections::BTreeMap;

use crate::assignment::min_cost_assignment;
use crate::kalman::{KalmanState, xyah_to_xyxy};

/// ByteTrack's settings (defaults: supervision's).
#[derive(Debug, Clone, PartialEq)]
pub struct ByteTrackConfig {
    /// Detections scoring above this take part in the first association; a track
    /// starts from one scoring at least this + 0.1.
    pub track_activation_threshold: f32,
    /// Detections scoring above this (and not above the activation threshold) take part
    /// in the second association only.
    pub low_score_threshold: f32,
    /// Frames a lost track is kept (at 30 fps; scaled by `frame_rate / 30`).
    pub lost_track_buffer: usize,
    /// Largest matching cost (1 - IoU x score) of the first association.
    pub minimum_matching_threshold: f64,
    /// Largest matching cost (1 - IoU) of the second association.
    pub second_matching_threshold: f64,
    /// Largest matching cost (1 - IoU x score) that confirms a track seen once.
    pub unconfirmed_matching_threshold: f64,
    /// The video's frame rate.
    pub frame_rate: f64,
    /// Consecutive frames a track must be matched in before it gets an id.
    pub minimum_consecutive_frames: usize,
}

impl Default for ByteTrackConfig {
    fn default() -> Self {
        Self {
            track_activation_threshold: 0.25,
            low_score_threshold: 0.1,
            lost_track_buffer: 30,
            minimum_matching_threshold: 0.8,
            second_matching_threshold: 0.5,
            unconfirmed_matching_threshold: 0.7,
            frame_rate: 30.0,
            minimum_consecutive_frames: 1,
        }
    }
}

/// A detection handed to the tracker.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TrackInput {
    /// Box `[x1, y1, x2, y2]`.
    pub bbox: [f32; 4],
    /// Score.
    pub score: f32,
}

/// A track the tracker reports for a frame.
#[derive(Debug, Clone, PartialEq)]
pub struct TrackedBox {
    /// The track's id: 1, 2, ... in the order tracks are confirmed (`None` only for
    /// tracks of the first frame when `minimum_consecutive_frames > 1`, as in
    /// supervision).
    pub id: Option<u64>,
    /// The Kalman filter's box `[x1, y1, x2, y2]`.
    pub bbox: [f64; 4],
    /// The score of the detection it was last matched with.
    pub score: f32,
    /// The index, in this frame's input, of the detection it was matched with (`None`
    /// when it kept its place without one).
    pub detection: Option<usize>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Tracked,
    Lost,
    Removed,
}

/// A detection as the tracker holds it: in `f32`, as supervision keeps it.
#[derive(Debug, Clone, Copy)]
struct Det {
    tlwh: [f32; 4],
    score: f32,
    index: usize,
}

impl Det {
    fn tlbr(&self) -> [f32; 4] {
        let t = self.tlwh;
        [t[0], t[1], t[0] + t[2], t[1] + t[3]]
    }

    /// `(centre x, centre y, w / h, h)`, in `f32`.
    fn xyah(&self) -> [f64; 4] {
        let t = self.tlwh;
        [t[0] + t[2] / 2.0, t[1] + t[3] / 2.0, t[2] / t[3], t[3]].map(f64::from)
    }
}

#[derive(Debug, Clone)]
struct Track {
    external_id: Option<u64>,
    kalman: KalmanState,
    /// Neither predicted nor corrected yet: its mean is still the first measurement,
    /// in `f32`.
    fresh: bool,
    state: State,
    activated: bool,
    score: f32,
    tracklet_len: usize,
    frame_id: u64,
    start_frame: u64,
    detection: Option<usize>,
}

impl Track {
    /// The box `[x1, y1, x2, y2]`; in `f32` arithmetic while the track is fresh.
    fn tlbr(&self) -> [f64; 4] {
        let m = &self.kalman.mean;
        if self.fresh {
            let [x, y, a, h] = [m[0], m[1], m[2], m[3]].map(|v| v as f32);
            let w = a * h;
            let (x1, y1) = (x - w / 2.0, y - h / 2.0);
            [x1, y1, x1 + w, y1 + h].map(f64::from)
        } else {
            xyah_to_xyxy([m[0], m[1], m[2], m[3]])
        }
    }
}

/// A ByteTrack tracker over one video (or stream): call [`ByteTrack::update`] once
/// per frame, in order.
#[derive(Debug, Clone)]
pub struct ByteTrack {
    config: ByteTrackConfig,
    frame_id: u64,
    tracks: BTreeMap<u64, Track>,
    tracked: Vec<u64>,
    lost: Vec<u64>,
    removed: Vec<u64>,
    next_internal: u64,
    next_external: u64,
}

impl ByteTrack {
    /// A tracker with no tracks yet.
    pub fn new(config: ByteTrackConfig) -> Self {
        Self {
            config,
            frame_id: 0,
            tracks: BTreeMap::new(),
            tracked: Vec::new(),
            lost: Vec::new(),
            removed: Vec::new(),
            next_internal: 0,
            next_external: 1,
        }
    }

    /// Its settings.
    pub fn config(&self) -> &ByteTrackConfig {
        &self.config
    }

    /// Frames lost tracks are kept.
    fn max_time_lost(&self) -> u64 {
        (self.config.frame_rate / 30.0 * self.config.lost_track_buffer as f64) as u64
    }

    /// Takes the next frame's detections; returns the confirmed tracks that are being
    /// followed, in the tracker's order.
    pub fn update(&mut self, detections: &[TrackInput]) -> Vec<TrackedBox> {
        self.frame_id += 1;
        let frame = self.frame_id;
        let c = self.config.clone();
        for t in self.tracks.values_mut() {
            t.detection = None;
        }
        let dets: Vec<Det> = detections
            .iter()
            .enumerate()
            .map(|(index, d)| {
                let b = d.bbox;
                Det {
                    tlwh: [b[0], b[1], b[2] - b[0], b[3] - b[1]],
                    score: d.score,
                    index,
                }
            })
            .collect();
        let high: Vec<Det> = dets
            .iter()
            .filter(|d| d.score > c.track_activation_threshold)
            .copied()
            .collect();
        let low: Vec<Det> = dets
            .iter()
            .filter(|d| d.score > c.low_score_threshold && d.score < c.track_activation_threshold)
            .copied()
            .collect();
        let (mut activated, mut refound, mut lost, mut removed) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        let (unconfirmed, confirmed): (Vec<u64>, Vec<u64>) = self
            .tracked
            .iter()
            .partition(|id| !self.tracks[id].activated);

        // First association: every followed or lost track against the high scores.
        let pool = joint(&confirmed, &self.lost);
        for id in &pool {
            let t = self.track_mut(*id);
            t.kalman.predict(t.state == State::Tracked);
            t.fresh = false;
        }
        let cost = self.fused_cost(&pool, &high);
        let (matches, u_track, u_det) =
            assign(cost, pool.len(), high.len(), c.minimum_matching_threshold);
        for (it, id) in matches {
            self.matched(pool[it], &high[id], frame, &mut activated, &mut refound);
        }

        // Second association: the followed tracks left over against the low scores.
        let rest: Vec<u64> = u_track
            .iter()
            .map(|&i| pool[i])
            .filter(|id| self.tracks[id].state == State::Tracked)
            .collect();
        let cost = self.iou_cost(&rest, &low);
        let (matches, u_rest, _) = assign(cost, rest.len(), low.len(), c.second_matching_threshold);
        for (it, id) in matches {
            self.matched(rest[it], &low[id], frame, &mut activated, &mut refound);
        }
        for i in u_rest {
            let t = self.track_mut(rest[i]);
            if t.state != State::Lost {
                t.state = State::Lost;
                lost.push(rest[i]);
            }
        }

        // Tracks seen in one frame only: confirmed by a match, else dropped.
        let left: Vec<Det> = u_det.iter().map(|&i| high[i]).collect();
        let cost = self.fused_cost(&unconfirmed, &left);
        let (matches, u_unconfirmed, u_left) = assign(
            cost,
            unconfirmed.len(),
            left.len(),
            c.unconfirmed_matching_threshold,
        );
        for (it, id) in matches {
            self.follow(unconfirmed[it], &left[id], frame);
            activated.push(unconfirmed[it]);
        }
        for i in u_unconfirmed {
            self.track_mut(unconfirmed[i]).state = State::Removed;
            removed.push(unconfirmed[i]);
        }

        // New tracks from the high scores no track took.
        let start_score = (f64::from(c.track_activation_threshold) + 0.1) as f32;
        for i in u_left {
            let d = left[i];
            if d.score < start_score {
                continue;
            }
            let id = self.next_internal;
            self.next_internal += 1;
            let external_id = (c.minimum_consecutive_frames == 1).then(|| self.new_external());
            self.tracks.insert(
                id,
                Track {
                    external_id,
                    kalman: KalmanState::initiate(d.xyah()),
                    fresh: true,
                    state: State::Tracked,
                    activated: frame == 1,
                    score: d.score,
                    tracklet_len: 0,
                    frame_id: frame,
                    start_frame: frame,
                    detection: Some(d.index),
                },
            );
            activated.push(id);
        }

        // Lost too long.
        let max_lost = self.max_time_lost();
        for &id in &self.lost {
            let t = self.tracks.get_mut(&id).expect("lost track");
            if frame - t.frame_id > max_lost {
                t.state = State::Removed;
                removed.push(id);
            }
        }

        let still: Vec<u64> = self
            .tracked
            .iter()
            .copied()
            .filter(|id| self.tracks[id].state == State::Tracked)
            .collect();
        self.tracked = joint(&joint(&still, &activated), &refound);
        let mut kept = sub(&self.lost, &self.tracked);
        kept.extend(lost);
        self.lost = sub(&kept, &self.removed);
        self.removed = removed;
        self.remove_duplicates();
        // Forget the tracks no list holds any more.
        let (tracked, lost, removed) = (&self.tracked, &self.lost, &self.removed);
        self.tracks
            .retain(|id, _| tracked.contains(id) || lost.contains(id) || removed.contains(id));

        self.tracked
            .iter()
            .map(|id| &self.tracks[id])
            .filter(|t| t.activated)
            .map(|t| TrackedBox {
                id: t.external_id,
                bbox: t.tlbr(),
                score: t.score,
                detection: t.detection,
            })
            .collect()
    }

    fn track_mut(&mut self, id: u64) -> &mut Track {
        self.tracks.get_mut(&id).expect("a listed track")
    }

    fn new_external(&mut self) -> u64 {
        let id = self.next_external;
        self.next_external += 1;
        id
    }

    /// A match of the first or second association.
    fn matched(
        &mut self,
        id: u64,
        d: &Det,
        frame: u64,
        activated: &mut Vec<u64>,
        refound: &mut Vec<u64>,
    ) {
        if self.tracks[&id].state == State::Tracked {
            self.follow(id, d, frame);
            activated.push(id);
        } else {
            let t = self.track_mut(id);
            t.kalman.update(d.xyah());
            t.tracklet_len = 0;
            t.state = State::Tracked;
            t.frame_id = frame;
            t.score = d.score;
            t.detection = Some(d.index);
            refound.push(id);
        }
    }

    /// A followed track matched with `d`.
    fn follow(&mut self, id: u64, d: &Det, frame: u64) {
        let min_frames = self.config.minimum_consecutive_frames;
        let t = self.track_mut(id);
        t.frame_id = frame;
        t.tracklet_len += 1;
        t.kalman.update(d.xyah());
        // The corrected mean is in f64, as NumPy's (an f32 mean plus an f64 correction).
        t.fresh = false;
        t.state = State::Tracked;
        t.score = d.score;
        t.detection = Some(d.index);
        if t.tracklet_len == min_frames {
            t.activated = true;
            if t.external_id.is_none() {
                let e = self.new_external();
                self.track_mut(id).external_id = Some(e);
            }
        }
    }

    /// `1 - IoU x score` between tracks and detections, row-major.
    fn fused_cost(&self, tracks: &[u64], dets: &[Det]) -> Vec<f64> {
        let mut cost = self.iou_cost(tracks, dets);
        for (k, v) in cost.iter_mut().enumerate() {
            *v = 1.0 - (1.0 - *v) * f64::from(dets[k % dets.len()].score);
        }
        cost
    }

    /// `1 - IoU` between tracks and detections, row-major. The IoU is computed in
    /// `f32` when every track is fresh (all boxes are `f32` then, and NumPy computes in
    /// their type), else in `f64`.
    fn iou_cost(&self, tracks: &[u64], dets: &[Det]) -> Vec<f64> {
        let in_f32 = tracks.iter().all(|id| self.tracks[id].fresh);
        let mut cost = Vec::with_capacity(tracks.len() * dets.len());
        for id in tracks {
            let a = self.tracks[id].tlbr();
            for d in dets {
                let v = if in_f32 {
                    f64::from(iou_f32(a.map(|v| v as f32), d.tlbr()))
                } else {
                    iou(a, d.tlbr().map(f64::from))
                };
                cost.push(1.0 - v);
            }
        }
        cost
    }

    /// Drops, of each followed and lost track closer than IoU 0.85, the one followed
    /// for fewer frames.
    fn remove_duplicates(&mut self) {
        let (mut drop_a, mut drop_b) = (Vec::new(), Vec::new());
        for (i, a) in self.tracked.iter().enumerate() {
            for (j, b) in self.lost.iter().enumerate() {
                let (ta, tb) = (&self.tracks[a], &self.tracks[b]);
                if 1.0 - iou(ta.tlbr(), tb.tlbr()) < 0.15 {
                    if ta.frame_id - ta.start_frame > tb.frame_id - tb.start_frame {
                        drop_b.push(j);
                    } else {
                        drop_a.push(i);
                    }
                }
            }
        }
        let keep = |list: &[u64], drop: &[usize]| -> Vec<u64> {
            list.iter()
                .enumerate()
                .filter(|(i, _)| !drop.contains(i))
                .map(|(_, id)| *id)
                .collect()
        };
        self.tracked = keep(&self.tracked, &drop_a);
        self.lost = keep(&self.lost, &drop_b);
    }
}

/// The pairs of a minimum-cost assignment whose cost is at most `thresh` (costs above
/// it count as `thresh + 1e-4`), and the rows and columns left unmatched, ascending.
type Assigned = (Vec<(usize, usize)>, Vec<usize>, Vec<usize>);

fn assign(mut cost: Vec<f64>, rows: usize, cols: usize, thresh: f64) -> Assigned {
    if rows == 0 || cols == 0 {
        return (Vec::new(), (0..rows).collect(), (0..cols).collect());
    }
    for v in cost.iter_mut() {
        if *v > thresh {
            *v = thresh + 1e-4;
        }
    }
    let matches: Vec<(usize, usize)> = min_cost_assignment(&cost, rows, cols)
        .into_iter()
        .filter(|&(r, c)| cost[r * cols + c] <= thresh)
        .collect();
    let u_rows = (0..rows)
        .filter(|r| !matches.iter().any(|m| m.0 == *r))
        .collect();
    let u_cols = (0..cols)
        .filter(|c| !matches.iter().any(|m| m.1 == *c))
        .collect();
    (matches, u_rows, u_cols)
}

/// `a` then the ids of `b` not in `a`.
fn joint(a: &[u64], b: &[u64]) -> Vec<u64> {
    let mut out = a.to_vec();
    for id in b {
        if !out.contains(id) {
            out.push(*id);
        }
    }
    out
}

/// The ids of `a` not in `b`.
fn sub(a: &[u64], b: &[u64]) -> Vec<u64> {
    a.iter().copied().filter(|id| !b.contains(id)).collect()
}

/// Intersection over union of two `[x1, y1, x2, y2]` boxes (0 for empty unions).
pub fn iou(a: [f64; 4], b: [f64; 4]) -> f64 {
    iou_in(a, b)
}

/// [`iou`] in `f32` arithmetic.
fn iou_f32(a: [f32; 4], b: [f32; 4]) -> f32 {
    iou_in(a, b)
}

/// [`iou`] in the arithmetic of `T`.
fn iou_in<T>(a: [T; 4], b: [T; 4]) -> T
where
    T: Copy + PartialOrd + Default + Into<f64> + std::ops::Sub<Output = T>,
    T: std::ops::Add<Output = T>,
    T: std::ops::Mul<Output = T> + std::ops::Div<Output = T>,
{
    let zero = T::default();
    let pick = |x: T, y: T, larger: bool| if (x > y) == larger { x } else { y };
    let side = |lo: T, hi: T| pick(hi - lo, zero, true);
    let inter = side(pick(a[0], b[0], true), pick(a[2], b[2], false))
        * side(pick(a[1], b[1], true), pick(a[3], b[3], false));
    let union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter;
    // Zero for an empty union (NumPy's `where=union != 0`), and for boxes with NaN
    // or infinite corners (its `nan_to_num`; NaN fails every comparison).
    let ratio = inter / union;
    if union != zero && ratio.into().is_finite() {
        ratio
    } else {
        zero
    }
}
