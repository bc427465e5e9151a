#!/usr/bin/env python3
"""Side-by-side reference timings for `vpipe bench`: PyTorch eager (timm) and ONNX Runtime.

Usage: python3 scripts/bench_reference.py --arch mobilevit_s --size 256 --batch 1 --threads 2 [--json]

Needs torch, timm, onnx, onnxruntime (pip). Weights are random: only the arithmetic matters.
Timing method matches `vpipe bench`: warm-up runs, then the median and p90 of timed runs.
"""
import argparse, json, os, statistics, tempfile, time

import torch
import timm


def stats(times_ms, batch):
    times_ms = sorted(times_ms)
    med = statistics.median(times_ms)
    p90 = times_ms[round((len(times_ms) - 1) * 0.9)]
    return {"median_ms": med, "p90_ms": p90, "mean_ms": sum(times_ms) / len(times_ms),
            "images_per_s": batch * 1e3 / med}


def time_fn(fn, warmup, iters):
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(iters):
        t0 = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t0) * 1e3)
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--arch", default="mobilevit_s")
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--iters", type=int, default=30)
    ap.add_argument("--no-onnx", action="store_true")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    model = timm.create_model(a.arch, pretrained=False).eval()
    x = torch.rand(a.batch, 3, a.size, a.size)
    results = {}
    with torch.inference_mode():
        results["pytorch_eager"] = stats(time_fn(lambda: model(x), a.warmup, a.iters), a.batch)
    if not a.no_onnx:
        import onnxruntime as ort
        with tempfile.TemporaryDirectory() as d:
            path = os.path.join(d, "m.onnx")
            torch.onnx.export(model, (x,), path, opset_version=17, dynamo=False)
            so = ort.SessionOptions()
            so.intra_op_num_threads = a.threads
            so.inter_op_num_threads = 1
            sess = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
            name = sess.get_inputs()[0].name
            xn = x.numpy()
            results["onnxruntime"] = stats(time_fn(lambda: sess.run(None, {name: xn}), a.warmup, a.iters), a.batch)
    meta = {"arch": a.arch, "input": [a.batch, 3, a.size, a.size], "threads": a.threads,
            "torch": torch.__version__, "timm": timm.__version__}
    if a.json:
        print(json.dumps({"meta": meta, "results": results}))
    else:
        for k, v in results.items():
            print(f"{k:14s} {a.arch} {meta['input']} threads={a.threads}: median {v['median_ms']:.2f} ms, "
                  f"p90 {v['p90_ms']:.2f} ms, {v['images_per_s']:.1f} images/s")


if __name__ == "__main__":
    main()
