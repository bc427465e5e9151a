#!/usr/bin/env bash
# Interleaved pairs: vpipe against PyTorch eager and ONNX Runtime, on each model, and the
# table of medians and ranges that docs/benchmarks.md keeps. --precision bf16 runs vpipe's bf16
# mode against the fp32 references.
#
#   scripts/bench_pairs.sh [--pairs 5] [--threads 2] [--batch 1] [--precision fp32] [--python PY] [MODEL...]
#
# MODEL is TASK:ARCH:SIZE (default: the five of issue 19: classification:mobilevit_s:256,
# classification:mobilevit_xxs:256, detection:mobilevit_xxs:320, detection:mobilevit_s:320,
# segmentation:mobilevit_xxs:512). Each pair runs `vpipe bench ... --json` and then
# `scripts/bench_reference.py ... --json` (PyTorch eager, then the same network exported to ONNX
# and run by ONNX Runtime with its default graph optimisations), one after the other, so a drift
# of the machine's speed moves both sides of a pair alike. The speed ratio vpipe/ORT is taken
# pair by pair (ORT's median time over vpipe's); the table gives the median of each side's
# per-run medians with their range, and the median ratio with its range.
#
# Needs: target/release/vpipe (cargo build --release -p vpipe-cli), and a Python with torch,
# timm, transformers, onnx and onnxruntime (PY, default python3). Raw per-run JSON lines go to
# $BENCH_LOG (default: a temporary file, named at the end).
set -euo pipefail

pairs=5 threads=2 batch=1 precision=fp32 python=python3
models=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    --pairs) pairs="$2"; shift 2 ;;
    --threads) threads="$2"; shift 2 ;;
    --batch) batch="$2"; shift 2 ;;
    --precision) precision="$2"; shift 2 ;;
    --python) python="$2"; shift 2 ;;
    -h|--help) sed -n '2,19p' "$0"; exit 0 ;;
    -*) echo "bench_pairs.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
    *) models+=("$1"); shift ;;
  esac
done
if [[ ${#models[@]} -eq 0 ]]; then
  models=(classification:mobilevit_s:256 classification:mobilevit_xxs:256
          detection:mobilevit_xxs:320 detection:mobilevit_s:320 segmentation:mobilevit_xxs:512)
fi
root="$(cd "$(dirname "$0")/.." && pwd)"
vpipe="$root/target/release/vpipe"
[[ -x "$vpipe" ]] || { echo "bench_pairs.sh: $vpipe is missing: cargo build --release -p vpipe-cli" >&2; exit 1; }
"$python" -c "import torch, timm, transformers, onnx, onnxruntime" 2>/dev/null \
  || { echo "bench_pairs.sh: $python lacks torch, timm, transformers, onnx or onnxruntime (--python PY)" >&2; exit 1; }
log="${BENCH_LOG:-$(mktemp /tmp/bench_pairs.XXXXXX.jsonl)}"
: > "$log"

for m in "${models[@]}"; do
  IFS=: read -r task arch size <<< "$m"
  [[ -n "$task" && -n "$arch" && -n "$size" ]] || { echo "bench_pairs.sh: model '$m' is not TASK:ARCH:SIZE" >&2; exit 2; }
  # Fewer timed runs where one run takes seconds (segmentation in PyTorch and ORT).
  iters=30; [[ "$task" == segmentation ]] && iters=5
  for ((i = 1; i <= pairs; i++)); do
    echo "pair $i/$pairs: $task $arch $size (batch $batch, $threads thread(s), vpipe $precision)" >&2
    v=$("$vpipe" bench --task "$task" --arch "$arch" --size "$size" --batch "$batch" \
          --threads "$threads" --iters "$iters" --precision "$precision" --json)
    r=$("$python" "$root/scripts/bench_reference.py" --task "$task" --arch "$arch" --size "$size" \
          --batch "$batch" --threads "$threads" --iters "$iters" --json)
    printf '{"model":"%s","pair":%d,"vpipe":%s,"reference":%s}\n' "$m" "$i" "$v" "$r" >> "$log"
  done
done

"$python" - "$log" "$threads" "$batch" <<'EOF'
import json, statistics, sys
log, threads, batch = sys.argv[1], sys.argv[2], sys.argv[3]
precisions = set()
rows = {}
for line in open(log):
    d = json.loads(line)
    r = d["reference"]["results"]
    precisions.add(d["vpipe"].get("precision", "fp32"))
    rows.setdefault(d["model"], []).append(
        (d["vpipe"]["median_ms"], r["pytorch_eager"]["median_ms"], r["onnxruntime"]["median_ms"]))
def span(xs, fmt="{:.1f}"):
    return f"{fmt.format(statistics.median(xs))} ({fmt.format(min(xs))}-{fmt.format(max(xs))})"
print(f"\nbatch {batch}, {threads} thread(s), vpipe in {'/'.join(sorted(precisions))} "
      f"(the references in fp32); median of the per-run medians (range), ms; "
      f"speed vs ORT = ORT ms / vpipe ms, pair by pair")
print("| model | vpipe | PyTorch eager | ONNX Runtime | vpipe speed vs ORT | pairs |")
print("|---|---|---|---|---|---|")
for model, runs in rows.items():
    v, p, o = zip(*runs)
    ratio = [oo / vv for vv, oo in zip(v, o)]
    print(f"| {model} | {span(v)} | {span(p)} | {span(o)} | {span(ratio, '{:.2f}')}x | {len(runs)} |")
print(f"\nraw runs: {log}")
EOF
