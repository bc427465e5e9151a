#!/usr/bin/env python3
"""The ByteTrack reference of vpipe-track's tests: a recorded detection sequence and the tracks
Roboflow supervision's `ByteTrack` makes of it.

    python3 scripts/make_track_reference.py [--out tests/fixtures/tracking]

Needs numpy, scipy and supervision==0.26.1 (the last release with `sv.ByteTrack`; later ones
moved it to the separate `trackers` package). supervision is the reference because it is the
ByteTrack our users run, and it keeps the original algorithm (ifzhang/ByteTrack's
`BYTETracker.update`: two associations, high then low scores, a constant-velocity Kalman filter,
lost tracks kept for a buffer of frames) with its matching done by scipy's
`linear_sum_assignment`. The PyPI package `bytetracker` (0.3.2) was not taken: it feeds centre
boxes where the tracker expects top-left ones, takes the low-score detections' classes from the
high-score rows, and pins lap 0.4.0, which no longer builds.

The sequence (seeded, so it is the same on every run): 8 objects crossing a 1280x720 frame at
constant velocities with per-frame jitter, for 320 frames. Paths cross; an occluder (a vertical
band) hides objects whose centre is inside it; each detection is missed with probability 0.08;
some scores drop into the low band (0.1-0.25) that only ByteTrack's second association uses; a few
false positives appear for a frame. Coordinates are multiples of 1/64 pixel and scores of 1/1024,
so they are exact in float32 and read the same in Python and Rust.

Writes `detections.json` (per frame: rows [x1, y1, x2, y2, score]) and `expected.json` (per frame:
the tracks `update_with_tensors` returns, [external id, x1, y1, x2, y2] of the Kalman state,
rounded to 1e-6).
"""

import argparse
import json
from pathlib import Path

import numpy as np
import supervision as sv

FRAMES = 320
WIDTH, HEIGHT = 1280, 720


def sequence(rng):
    objects = []
    for k in range(8):
        w, h = rng.uniform(40, 120), rng.uniform(60, 200)
        # Half start on the left going right, half on the right going left: their paths cross.
        left = k % 2 == 0
        x = rng.uniform(0, 300) if left else rng.uniform(900, 1200)
        y = rng.uniform(100, 600)
        vx = rng.uniform(2.0, 5.0) * (1 if left else -1)
        vy = rng.uniform(-1.5, 1.5)
        start = int(rng.integers(0, 60))
        objects.append(dict(w=w, h=h, x=x, y=y, vx=vx, vy=vy, start=start))
    frames = []
    for f in range(FRAMES):
        rows = []
        for o in objects:
            if f < o["start"]:
                continue
            t = f - o["start"]
            cx = o["x"] + o["vx"] * t + rng.normal(0, 1.5)
            cy = o["y"] + o["vy"] * t + rng.normal(0, 1.5)
            if not (0 < cx < WIDTH and 0 < cy < HEIGHT):
                continue
            if 600 < cx < 680:  # the occluder
                continue
            if rng.random() < 0.08:  # a missed detection
                continue
            w = o["w"] * (1 + rng.normal(0, 0.02))
            h = o["h"] * (1 + rng.normal(0, 0.02))
            score = rng.uniform(0.5, 0.95) if rng.random() > 0.15 else rng.uniform(0.12, 0.24)
            rows.append([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2, score])
        if rng.random() < 0.05:  # a false positive for one frame
            x, y = rng.uniform(0, WIDTH - 80), rng.uniform(0, HEIGHT - 80)
            rows.append([x, y, x + rng.uniform(20, 80), y + rng.uniform(20, 80), rng.uniform(0.3, 0.6)])
        frames.append([[round(v * 64) / 64 for v in r[:4]] + [round(r[4] * 1024) / 1024] for r in rows])
    return frames


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=Path("tests/fixtures/tracking"))
    args = parser.parse_args()
    assert sv.__version__ == "0.26.1", f"supervision {sv.__version__}: the reference is 0.26.1"
    frames = sequence(np.random.default_rng(19))
    tracker = sv.ByteTrack()  # the defaults: 0.25, 30 frames, 0.8, 30 fps, 1 frame
    expected = []
    for rows in frames:
        tensors = np.asarray(rows, dtype=np.float32).reshape(-1, 5)
        tracks = tracker.update_with_tensors(tensors=tensors)
        expected.append([[int(t.external_track_id)] + [round(float(v), 6) for v in t.tlbr] for t in tracks])
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "detections.json").write_text(json.dumps(frames, separators=(",", ":")) + "\n")
    (args.out / "expected.json").write_text(json.dumps(expected, separators=(",", ":")) + "\n")
    ids = {row[0] for frame in expected for row in frame}
    print(f"{len(frames)} frames, {sum(map(len, frames))} detections, "
          f"{sum(map(len, expected))} track boxes, {len(ids)} track ids -> {args.out}")


if __name__ == "__main__":
    main()
