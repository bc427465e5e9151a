//! Counting in regions of the frame: what is inside a polygon zone on each frame,
//! and which tracks cross a line, in which direction.

use std::collections::{BTreeMap, HashMap};

/// The point of a box that decides where it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Anchor {
    /// The middle of the bottom edge: where an object stands (the default).
    #[default]
    BottomCenter,
    /// The box's centre.
    Center,
}

impl Anchor {
    /// The anchor point of `bbox` `[x1, y1, x2, y2]`.
    pub fn of(self, bbox: [f32; 4]) -> [f64; 2] {
        let x = (f64::from(bbox[0]) + f64::from(bbox[2])) / 2.0;
        match self {
            Anchor::BottomCenter => [x, f64::from(bbox[3])],
            Anchor::Center => [x, (f64::from(bbox[1]) + f64::from(bbox[3])) / 2.0],
        }
    }
}

impl std::str::FromStr for Anchor {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "bottom_center" => Ok(Anchor::BottomCenter),
            "center" => Ok(Anchor::Center),
            _ => Err(format!(
                "unknown anchor '{s}' (expected 'bottom_center' or 'center')"
            )),
        }
    }
}

/// A polygon in frame pixels.
#[derive(Debug, Clone, PartialEq)]
pub struct PolygonZone {
    points: Vec<[f64; 2]>,
}

impl PolygonZone {
    /// A zone with corners `points`, in order: at least 3, not all on one line, and
    /// no two edges crossing.
    pub fn new(points: Vec<[f64; 2]>) -> Result<Self, String> {
        if points.len() < 3 {
            return Err(format!(
                "a zone needs at least 3 points, and this one has {}",
                points.len()
            ));
        }
        if points.iter().flatten().any(|v| !v.is_finite()) {
            return Err("a zone's points must be finite numbers".into());
        }
        let n = points.len();
        for i in 0..n {
            for j in i + 1..n {
                // Neighbouring edges share a corner; every other pair must not touch.
                if j == i + 1 || (i == 0 && j == n - 1) {
                    continue;
                }
                let (a, b) = (points[i], points[(i + 1) % n]);
                let (c, d) = (points[j], points[(j + 1) % n]);
                if segments_intersect(a, b, c, d) {
                    return Err(format!(
                        "the zone's edges {} and {} cross: a zone must not intersect itself",
                        i + 1,
                        j + 1
                    ));
                }
            }
        }
        let area2: f64 = (0..n)
            .map(|i| {
                let (a, b) = (points[i], points[(i + 1) % n]);
                a[0] * b[1] - b[0] * a[1]
            })
            .sum();
        if area2 == 0.0 {
            return Err("the zone's points lie on one line: it has no area".into());
        }
        Ok(Self { points })
    }

    /// Its corners.
    pub fn points(&self) -> &[[f64; 2]] {
        &self.points
    }

    /// Whether `p` is inside (even-odd rule; points on the boundary may go either way).
    pub fn contains(&self, p: [f64; 2]) -> bool {
        let n = self.points.len();
        let mut inside = false;
        for i in 0..n {
            let (a, b) = (self.points[i], self.points[(i + n - 1) % n]);
            if (a[1] > p[1]) != (b[1] > p[1]) {
                let x = a[0] + (p[1] - a[1]) * (b[0] - a[0]) / (b[1] - a[1]);
                if p[0] < x {
                    inside = !inside;
                }
            }
        }
        inside
    }

    /// How many of `objects` (class name, anchor point) are inside, per class.
    pub fn count<'a>(
        &self,
        objects: impl IntoIterator<Item = (&'a str, [f64; 2])>,
    ) -> BTreeMap<String, u64> {
        let mut counts = BTreeMap::new();
        for (class, p) in objects {
            if self.contains(p) {
                *counts.entry(class.to_string()).or_insert(0) += 1;
            }
        }
        counts
    }
}

/// Which way a track crossed a line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// From the left of the line (seen from its start towards its end) to its right.
    In,
    /// From its right to its left.
    Out,
}

/// A line segment that counts the tracks crossing it, per class and direction. A
/// crossing is a track's anchor moving, between two frames it is seen in, from one
/// side of the line to the other through the segment itself. In image coordinates
/// (y down), "right of the line" is clockwise from its direction: a line drawn left
/// to right counts objects moving down as `in`.
#[derive(Debug, Clone)]
pub struct LineCounter {
    start: [f64; 2],
    end: [f64; 2],
    /// Each track's last anchor that was off the line.
    last: HashMap<u64, [f64; 2]>,
    ins: BTreeMap<String, u64>,
    outs: BTreeMap<String, u64>,
}

impl LineCounter {
    /// A line from `start` to `end` (two different points).
    pub fn new(start: [f64; 2], end: [f64; 2]) -> Result<Self, String> {
        if start.iter().chain(&end).any(|v| !v.is_finite()) {
            return Err("a line's points must be finite numbers".into());
        }
        if start == end {
            return Err("a line needs two different points".into());
        }
        Ok(Self {
            start,
            end,
            last: HashMap::new(),
            ins: BTreeMap::new(),
            outs: BTreeMap::new(),
        })
    }

    /// Its ends.
    pub fn ends(&self) -> [[f64; 2]; 2] {
        [self.start, self.end]
    }

    /// Which side of the line `p` is on: +1 right, -1 left, 0 on it.
    fn side(&self, p: [f64; 2]) -> i8 {
        let (s, e) = (self.start, self.end);
        let cross = (e[0] - s[0]) * (p[1] - s[1]) - (e[1] - s[1]) * (p[0] - s[0]);
        if cross > 0.0 {
            1
        } else if cross < 0.0 {
            -1
        } else {
            0
        }
    }

    /// Takes track `id`'s anchor on this frame (its class named `class`); returns the
    /// crossing it made since the frame it was last seen in, if any.
    pub fn update(&mut self, id: u64, class: &str, p: [f64; 2]) -> Option<Direction> {
        let now = self.side(p);
        if now == 0 {
            return None;
        }
        let before = self.last.insert(id, p)?;
        let was = self.side(before);
        if was == now || !segments_intersect(before, p, self.start, self.end) {
            return None;
        }
        let (direction, counts) = if now > 0 {
            (Direction::In, &mut self.ins)
        } else {
            (Direction::Out, &mut self.outs)
        };
        *counts.entry(class.to_string()).or_insert(0) += 1;
        Some(direction)
    }

    /// Crossings so far into the right side, per class.
    pub fn ins(&self) -> &BTreeMap<String, u64> {
        &self.ins
    }

    /// Crossings so far into the left side, per class.
    pub fn outs(&self) -> &BTreeMap<String, u64> {
        &self.outs
    }
}

/// Whether segments `ab` and `cd` have a point in common.
fn segments_intersect(a: [f64; 2], b: [f64; 2], c: [f64; 2], d: [f64; 2]) -> bool {
    let orient = |p: [f64; 2], q: [f64; 2], r: [f64; 2]| {
        let v = (q[0] - p[0]) * (r[1] - p[1]) - (q[1] - p[1]) * (r[0] - p[0]);
        v.partial_cmp(&0.0).map_or(0, |o| o as i8)
    };
    let on = |p: [f64; 2], q: [f64; 2], r: [f64; 2]| {
        r[0] >= p[0].min(q[0])
            && r[0] <= p[0].max(q[0])
            && r[1] >= p[1].min(q[1])
            && r[1] <= p[1].max(q[1])
    };
    let (o1, o2, o3, o4) = (
        orient(a, b, c),
        orient(a, b, d),
        orient(c, d, a),
        orient(c, d, b),
    );
    if o1 != o2 && o3 != o4 {
        return true;
    }
    (o1 == 0 && on(a, b, c))
        || (o2 == 0 && on(a, b, d))
        || (o3 == 0 && on(c, d, a))
        || (o4 == 0 && on(c, d, b))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn square() -> PolygonZone {
        PolygonZone::new(vec![[0.0, 0.0], [10.0, 0.0], [10.0, 10.0], [0.0, 10.0]]).unwrap()
    }

    #[test]
    fn zones_count_what_is_inside_per_class() {
        let z = square();
        assert!(z.contains([5.0, 5.0]) && !z.contains([15.0, 5.0]) && !z.contains([5.0, -1.0]));
        let counts = z.count([
            ("car", [1.0, 1.0]),
            ("car", [9.0, 9.0]),
            ("person", [5.0, 5.0]),
            ("person", [50.0, 5.0]),
        ]);
        assert_eq!(
            counts,
            BTreeMap::from([("car".into(), 2), ("person".into(), 1)])
        );
        // A concave zone (an L): the notch is outside.
        let l = PolygonZone::new(vec![
            [0.0, 0.0],
            [10.0, 0.0],
            [10.0, 4.0],
            [4.0, 4.0],
            [4.0, 10.0],
            [0.0, 10.0],
        ])
        .unwrap();
        assert!(l.contains([2.0, 8.0]) && l.contains([8.0, 2.0]) && !l.contains([8.0, 8.0]));
        // Anchors: a box standing in the zone whose centre is above it.
        let b = [2.0, -6.0, 4.0, 2.0];
        assert!(z.contains(Anchor::BottomCenter.of(b)) && !z.contains(Anchor::Center.of(b)));
    }

    #[test]
    fn bad_zones_are_refused() {
        let e = PolygonZone::new(vec![[0.0, 0.0], [1.0, 1.0]]).unwrap_err();
        assert!(e.contains("at least 3 points"), "{e}");
        // A bow tie: edges 1 and 3 cross.
        let e =
            PolygonZone::new(vec![[0.0, 0.0], [10.0, 10.0], [10.0, 0.0], [0.0, 10.0]]).unwrap_err();
        assert!(e.contains("intersect itself"), "{e}");
        let e = PolygonZone::new(vec![[0.0, 0.0], [1.0, 1.0], [2.0, 2.0]]).unwrap_err();
        assert!(e.contains("no area") || e.contains("intersect"), "{e}");
        assert!(LineCounter::new([1.0, 1.0], [1.0, 1.0]).is_err());
    }

    #[test]
    fn lines_count_crossings_by_track_class_and_direction() {
        // A line from left to right at y = 100, x from 0 to 200.
        let mut line = LineCounter::new([0.0, 100.0], [200.0, 100.0]).unwrap();
        // Track 1 (person) walks down through the line: one `in`.
        let mut got = Vec::new();
        for y in [60.0, 80.0, 100.0, 120.0, 140.0] {
            got.push(line.update(1, "person", [50.0, y]));
        }
        assert_eq!(got, [None, None, None, Some(Direction::In), None]);
        // Track 2 (car) goes up and back down: one `out`, then one `in`.
        for y in [150.0, 90.0, 130.0] {
            line.update(2, "car", [100.0, y]);
        }
        // Track 3 passes beside the segment (x = 300): no crossing.
        for y in [50.0, 150.0] {
            assert_eq!(line.update(3, "person", [300.0, y]), None);
        }
        // Track 4 is seen once on each side, with frames missing between: counted.
        line.update(4, "person", [150.0, 20.0]);
        assert_eq!(
            line.update(4, "person", [160.0, 180.0]),
            Some(Direction::In)
        );
        // Track 5 stays on one side, jittering: nothing.
        for y in [95.0, 99.0, 97.0] {
            assert_eq!(line.update(5, "car", [20.0, y]), None);
        }
        assert_eq!(
            line.ins(),
            &BTreeMap::from([("car".into(), 1), ("person".into(), 2)])
        );
        assert_eq!(line.outs(), &BTreeMap::from([("car".into(), 1)]));
    }
}
