#!/usr/bin/env bash
# Builds the vpipe command line without the `video` feature (no OpenCV) and checks
# that it runs a pipeline on a still image, and that a video gets an error naming the
# missing feature. Run by .ci/run, after the tests (it rebuilds target/release/vpipe
# without video; the next default build brings it back).
set -euo pipefail
cd "$(dirname "$0")/.."

cargo build --release -p vpipe-cli --no-default-features
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
if ldd target/release/vpipe | grep -q libopencv; then
  echo "error: the build without the video feature links OpenCV" >&2
  exit 1
fi
target/release/vpipe run pipelines/classify.yaml --input assets/squirrel_cls.jpg \
  --out "$out/image" --no-progress 2>/dev/null
test -s "$out/image/results.jsonl"
if target/release/vpipe run pipelines/detect.yaml --input assets/street.mp4 \
  --out "$out/video" --no-progress 2>"$out/err"; then
  echo "error: a video ran without the video feature" >&2
  exit 1
fi
grep -q 'built without the `video` feature' "$out/err" || {
  cat "$out/err" >&2
  exit 1
}
echo "without video: a still image runs, OpenCV is not linked, and a video says: $(tail -1 "$out/err")"
