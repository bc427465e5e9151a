#!/usr/bin/env python3
"""PyTorch side of `vpipe bench train`: the same training step of one head, timed the same way.

Usage
-----
    /tmp/refenv/bin/python scripts/bench_train.py --head ssd|deeplabv3|classification \\
        [--batch 8] [--steps 10] [--warmup 2] [--cache] [--threads 2] [--json] \\
        [--cvnets /work/.mirror/apple+ml-cvnets/repo]

Run from anywhere; it reads weights/reference/ and tests/fixtures/image.png of this repository.
Needs the python of scripts/make_reference.py (torch, numpy, pillow, safetensors: the versions
it pins; --allow-version-mismatch runs with others) and an ml-cvnets git mirror (--cvnets or
CVNETS_SRC): the model comes from ml-cvnets 77717569ab4a as make_reference.cvnets_build builds it,
the losses and the SSD matcher from tag cvnets-v0.1 as make_train_reference.py takes them.

The step (what vpipe_train::benchmark does): the reference checkpoint of the head (its own
backbone) with the backbone frozen in eval mode under no_grad and the head in train mode with
every BatchNorm in eval mode and dropout at p = 0 (make_train_reference.prepare_head); a batch of
BATCH copies of image.png resized to the checkpoint's input size (PIL bilinear, / 255: 320x320
SSD, 512x512 DeepLabv3, 256x256 classification); fixed targets, as vpipe_train::benchmark's:
labels 3 and 417 alternating (label smoothing 0.1), the three boxes of SSD_BOXES on every image
(matched to the anchors in every step, as vpipe does, then the multibox loss with 3:1 hard
negatives), a mask of background with a class-15 rectangle (rows 15-70 %, columns 25-60 %) and a
class-8 square (rows and columns 70-90 %); then backward and torch.optim.AdamW (lr 1e-4, betas
0.9/0.999, eps 1e-8, weight decay 0.01). Without --cache a step starts with the backbone's
forward; with --cache the features are computed once and each step is the head's part alone.

Prints images/s = batch x steps / the timed steps' seconds, and the median step in ms.
"""
import argparse, json, os, statistics, sys, tempfile, time

import numpy as np
import torch
from PIL import Image

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import make_reference as mr  # noqa: E402
import make_train_reference as mtr  # noqa: E402

HEADS = {"ssd": ("ssd", 320), "deeplabv3": ("seg", 512), "classification": ("cls", 256)}
LR = 1e-4


def bench_mask(batch, size):
    """The segmentation targets of vpipe_train::benchmark::bench_targets, (batch, size, size)."""
    i = np.arange(size) * 100
    within = lambda lo, hi: (i >= lo * size) & (i < hi * size)  # noqa: E731
    m = np.zeros((size, size), np.int64)
    m[np.ix_(within(15, 70), within(25, 60))] = 15
    m[np.ix_(within(70, 90), within(70, 90))] = 8
    return torch.from_numpy(np.stack([m] * batch))


def make_step(task, model, batch, size, repo, tmp):
    """(backbone(x) -> features, head_loss(features) -> loss) of the task."""
    encoder = model if task == "cls" else model.encoder  # a classifier is its own encoder
    extract = encoder.extract_end_points_all  # bound before the SSD step replaces it

    def backbone(x):
        with torch.no_grad():
            return extract(x)

    if task == "cls":
        target = torch.tensor([mtr.CLS_LABELS[i % 2] for i in range(batch)])
        return backbone, lambda f: mtr.label_smoothing_loss(
            model.classifier(model.conv_1x1_exp(f["out_l5"])), target)
    if task == "seg":
        mask = bench_mask(batch, size)
        return backbone, lambda f: mtr.seg_loss(model.seg_head(enc_out={"out_l5": f["out_l5"]}), mask)
    ssd_utils = mtr.v01_module(repo, "cvnets/misc/third_party/ssd_utils.py", "v01_ssd_utils", tmp)
    box_utils = mtr.v01_module(repo, "cvnets/misc/box_utils.py", "v01_box_utils", tmp)
    images = [{"boxes": [b for b, _ in mtr.SSD_BOXES], "labels": [c for _, c in mtr.SSD_BOXES]}] * batch

    def loss(f):
        # The head's part of SSD.forward: the extra layers and the predictors on the features.
        model.encoder.extract_end_points_all = lambda _x, *a, **k: dict(f)
        conf, loc, anchors = model.ssd_forward(model.get_backbone_features(None))
        gt_labels, gt_loc = mtr.match_boxes(anchors.reshape(-1, 4), images, ssd_utils, box_utils)
        return mtr.ssd_loss(conf, loc, gt_labels, gt_loc, ssd_utils)

    return backbone, loss


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--head", required=True, choices=sorted(HEADS))
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--cache", action="store_true")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--cvnets", default=os.environ.get("CVNETS_SRC", "/work/.mirror/apple+ml-cvnets/repo"))
    ap.add_argument("--allow-version-mismatch", action="store_true")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    mr.check_versions(a.allow_version_mismatch)
    task, size = HEADS[a.head]
    with tempfile.TemporaryDirectory() as tmp:
        mr.cvnets_source(a.cvnets, tmp, a.allow_version_mismatch)
        model, _, _ = mr.cvnets_build(task)
        state = torch.load(os.path.join(mtr.ROOT, "weights/reference", mtr.WEIGHTS[task]), map_location="cpu")
        model.load_state_dict(state)
        named = mtr.prepare_head(model, task)
        img = Image.open(os.path.join(mtr.ROOT, "tests/fixtures/image.png")).convert("RGB")
        img = img.resize((size, size), Image.BILINEAR)
        one = torch.from_numpy(np.asarray(img, dtype=np.float32) / 255.0).permute(2, 0, 1)
        x = torch.stack([one] * a.batch)
        backbone, head_loss = make_step(task, model, a.batch, size, a.cvnets, tmp)
        opt = torch.optim.AdamW([p for _, p in named], lr=LR, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01)
        cached = backbone(x) if a.cache else None
        times, backbone_ms, loss = [], [], float("nan")
        for i in range(a.warmup + a.steps):
            t0 = time.perf_counter()
            feats = cached if a.cache else backbone(x)
            t1 = time.perf_counter()
            opt.zero_grad()
            l = head_loss(feats)
            l.backward()
            opt.step()
            loss = float(l.detach())
            if i >= a.warmup:
                times.append((time.perf_counter() - t0) * 1e3)
                backbone_ms.append((t1 - t0) * 1e3)
    report = {"head": a.head, "batch": a.batch, "input_size": [size, size], "cache": a.cache,
              "threads": torch.get_num_threads(), "steps": a.steps,
              "images_per_s": a.batch * a.steps / (sum(times) / 1e3),
              "median_step_ms": statistics.median(times),
              "median_backbone_ms": None if a.cache else statistics.median(backbone_ms), "loss": loss,
              "torch": torch.__version__}
    if a.json:
        print(json.dumps(report))
    else:
        bb = "" if a.cache else f" (backbone {report['median_backbone_ms']:.1f} ms)"
        print(f"pytorch train {a.head} {[size, size]} batch={a.batch} cache={a.cache} threads={report['threads']}: "
              f"{report['images_per_s']:.2f} images/s, median step {report['median_step_ms']:.1f} ms{bb}, "
              f"loss {loss:.4f} ({a.steps} steps)")


if __name__ == "__main__":
    main()
