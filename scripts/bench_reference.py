#!/usr/bin/env python3
"""Side-by-side reference timings for `vpipe bench`: PyTorch eager and ONNX Runtime.

Usage: python3 scripts/bench_reference.py --task classification --arch mobilevit_s --size 256 \
           --batch 1 --threads 2 [--json]

Networks, matching `vpipe bench --task ...`:
- classification: timm `mobilevit_*`;
- segmentation: Hugging Face `MobileViTForSemanticSegmentation` (DeepLabv3, output stride 16),
  plus the bilinear upsampling to the input size and the argmax that vpipe's timing includes;
- detection: ml-cvnets' SSDLite head (extra layers os64/128/256/global, separable predictors,
  81 classes, 6/6/6/6/6/4 anchors) written out in plain PyTorch on timm's MobileViT layers 4
  and 5, since ml-cvnets is not on PyPI. Raw outputs only, as in `vpipe bench`.

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


HF_SIZES = {"mobilevit_xxs": ([64, 80, 96], [16, 16, 24, 48, 64, 80, 320], 2.0),
            "mobilevit_xs": ([96, 120, 144], [16, 32, 48, 64, 80, 96, 384], 4.0),
            "mobilevit_s": ([144, 192, 240], [16, 32, 64, 96, 128, 160, 640], 4.0)}


class Segmenter(torch.nn.Module):
    def __init__(self, arch):
        super().__init__()
        from transformers import MobileViTConfig, MobileViTForSemanticSegmentation
        hidden, neck, exp = HF_SIZES[arch]
        cfg = MobileViTConfig(hidden_sizes=hidden, neck_hidden_sizes=neck, expand_ratio=exp,
                              num_labels=21, output_stride=16)
        self.model = MobileViTForSemanticSegmentation(cfg).eval()

    def forward(self, x):
        logits = self.model(x).logits
        up = torch.nn.functional.interpolate(logits, size=x.shape[-2:], mode="bilinear", align_corners=True)
        return up.argmax(1)


def conv_bn(cin, cout, k=1, stride=1, groups=1, act=True):
    layers = [torch.nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False), torch.nn.BatchNorm2d(cout)]
    if act:
        layers.append(torch.nn.ReLU())
    return torch.nn.Sequential(*layers)


class Detector(torch.nn.Module):
    def __init__(self, arch, classes=81):
        super().__init__()
        self.backbone = timm.create_model(arch, pretrained=False, features_only=True, out_indices=(3, 4))
        c4, c5 = self.backbone.feature_info.channels()
        self.extra = torch.nn.ModuleList([
            torch.nn.Sequential(conv_bn(cin, cin, 3, 2, cin, act=False), conv_bn(cin, cout))
            for cin, cout in [(c5, 256), (256, 128), (128, 128)]])
        self.glob = torch.nn.Sequential(torch.nn.AdaptiveAvgPool2d(1), torch.nn.Conv2d(128, 64, 1, bias=False), torch.nn.ReLU())
        per = 4 + classes
        heads = []
        for cin, proj in [(c4, 512), (c5, 256), (256, 256), (128, 128), (128, 128)]:
            layers = [conv_bn(cin, proj)] if cin != proj else []
            layers += [conv_bn(proj, proj, 3, 1, proj, act=False), torch.nn.Conv2d(proj, 6 * per, 1)]
            heads.append(torch.nn.Sequential(*layers))
        heads.append(torch.nn.Conv2d(64, 4 * per, 1))
        self.heads = torch.nn.ModuleList(heads)
        self.per = per

    def forward(self, x):
        f4, f5 = self.backbone(x)
        levels = [f4, f5]
        y = f5
        for e in self.extra:
            y = e(y)
            levels.append(y)
        levels.append(self.glob(y))
        outs = [h(l).permute(0, 2, 3, 1).reshape(x.shape[0], -1, self.per) for h, l in zip(self.heads, levels)]
        out = torch.cat(outs, 1)
        return out[..., :4], out[..., 4:]


def build(task, arch):
    if task == "classification":
        return timm.create_model(arch, pretrained=False).eval()
    if task == "segmentation":
        return Segmenter(arch).eval()
    return Detector(arch).eval()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--task", default="classification", choices=["classification", "detection", "segmentation"])
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
    model = build(a.task, a.arch)
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
    meta = {"task": a.task, "arch": a.arch, "input": [a.batch, 3, a.size, a.size], "threads": a.threads,
            "torch": torch.__version__, "timm": timm.__version__}
    if a.json:
        print(json.dumps({"meta": meta, "results": results}))
    else:
        for k, v in results.items():
            print(f"{k:14s} {a.task} {a.arch} {meta['input']} threads={a.threads}: median {v['median_ms']:.2f} ms, "
                  f"p90 {v['p90_ms']:.2f} ms, {v['images_per_s']:.1f} images/s")


if __name__ == "__main__":
    main()
