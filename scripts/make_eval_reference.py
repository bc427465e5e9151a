"""Reference values for vpipe's evaluation and dataset readers (crates vpipe-data, vpipe-eval).

Writes into tests/fixtures/eval/ (beside instances.json, a copy of coco128's COCO instances file,
the ground truth for everything here):

- dets_<name>.json: deterministic detection sets in the COCO results format, made from the
  ground truth: jittered true positives, misses, false positives, wrong classes, detections on
  crowd regions, detections on images without ground truth, categories without detections,
  tied scores, more than 100 detections on an image, detections of unknown categories.
- coco_eval_reference.json: for each set, pycocotools COCOeval (bbox) stats (the 12 numbers),
  the per-class AP (AP@[.5:.95], area all, maxDets 100; -1 where undefined) and the per-class
  precision at IoU 0.5 over the 101 recall points (the PR curves).
- masks_reference.json: pycocotools annToMask of every annotation (area and FNV-1a 64 hash of
  the row-major uint8 mask), compressed RLE strings of some annotations (mask.encode), masks of
  synthetic polygons (out of the image, negative, tiny), and the VOC-21 class masks of every
  image as ml-cvnets' COCOSegmentationDataset._gen_seg_mask makes them (hash and per-class
  pixel counts; the mapping and overlap rule are that file's, repeated below).
- seg/gt/*.png, seg/pred/*.png, seg_reference.json: generated class-index masks (21 classes,
  255 = ignore) and their numpy confusion matrix, per-class IoU, mIoU, pixel accuracy.

Regenerate (from the repository root):
    /tmp/refenv/bin/python scripts/make_eval_reference.py
Made with Python 3.11, numpy 2.4.6, pycocotools 2.0.11, Pillow 13.0.0 (PNG writing only, lossless).
Deterministic: every random draw comes from numpy.random.RandomState with a fixed seed.
"""

import copy
import io
import json
import os
import sys
import contextlib

import numpy as np
from PIL import Image
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
OUT = os.path.join(ROOT, "tests", "fixtures", "eval")
GT = os.path.join(OUT, "instances.json")

# ml-cvnets (HEAD, data/datasets/segmentation/coco_segmentation.py):
# coco_to_pascal_mapping()[voc_class] = COCO category id.
COCO_TO_PASCAL = [0, 5, 2, 16, 9, 44, 6, 3, 17, 62, 21, 67, 18, 19, 4, 1, 64, 20, 63, 7, 72]


def fnv1a64(data: bytes) -> str:
    h = 0xCBF29CE484222325
    for b in data:
        h ^= b
        h = (h * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return "%016x" % h


def quiet(f, *a):
    with contextlib.redirect_stdout(io.StringIO()):
        return f(*a)


def load_gt():
    return quiet(COCO, GT)


def jitter(rng, bb, s):
    x, y, w, h = bb
    dx, dy = rng.normal(0, s * w), rng.normal(0, s * h)
    dw, dh = rng.normal(0, s * w), rng.normal(0, s * h)
    return [round(x + dx, 2), round(y + dy, 2), round(max(1.0, w + dw), 2), round(max(1.0, h + dh), 2)]


def random_box(rng, img):
    w = float(rng.uniform(2, img["width"] / 2))
    h = float(rng.uniform(2, img["height"] / 2))
    x = float(rng.uniform(0, img["width"] - w))
    y = float(rng.uniform(0, img["height"] - h))
    return [round(x, 2), round(y, 2), round(w, 2), round(h, 2)]


def make_sets(coco):
    imgs = coco.dataset["images"]
    anns = coco.dataset["annotations"]
    cat_ids = sorted(coco.getCatIds())
    with_gt = {a["image_id"] for a in anns}
    no_gt = [i for i in imgs if i["id"] not in with_gt]
    sets = {}

    # perfect: every annotation (crowd ones too) exactly, score 1.
    sets["perfect"] = [
        {"image_id": a["image_id"], "category_id": a["category_id"], "bbox": a["bbox"], "score": 1.0}
        for a in anns
    ]

    # jitter: true positives jittered, 20% missed, scores with ties (two decimals).
    rng = np.random.RandomState(1)
    dets = []
    for a in anns:
        if a["iscrowd"] or rng.rand() < 0.2:
            continue
        dets.append({"image_id": a["image_id"], "category_id": a["category_id"],
                     "bbox": jitter(rng, a["bbox"], 0.08), "score": round(float(rng.rand()), 2)})
    sets["jitter"] = dets

    # mixed: everything at once.
    rng = np.random.RandomState(2)
    dropped = set(rng.choice(cat_ids, 8, replace=False).tolist())  # categories with no detections
    by_id = {i["id"]: i for i in imgs}
    dets = []
    for a in anns:
        img = by_id[a["image_id"]]
        if a["category_id"] in dropped:
            continue
        if a["iscrowd"]:
            # detections on a crowd region: matched to it, so ignored
            for _ in range(3):
                x, y, w, h = a["bbox"]
                sub = [x + rng.uniform(0, w / 2), y + rng.uniform(0, h / 2), w / 3, h / 3]
                dets.append({"image_id": a["image_id"], "category_id": a["category_id"],
                             "bbox": [round(v, 2) for v in sub], "score": round(float(rng.rand()), 3)})
            continue
        r = rng.rand()
        if r < 0.15:
            continue  # miss
        cat = a["category_id"]
        if r < 0.25:
            cat = int(rng.choice(cat_ids))  # wrong class
        dets.append({"image_id": a["image_id"], "category_id": cat,
                     "bbox": jitter(rng, a["bbox"], 0.1), "score": round(float(rng.rand()), 3)})
        if rng.rand() < 0.1:  # duplicate
            dets.append({"image_id": a["image_id"], "category_id": cat,
                         "bbox": jitter(rng, a["bbox"], 0.05), "score": round(float(rng.rand()), 3)})
    for img in imgs:  # false positives
        for _ in range(rng.randint(0, 4)):
            dets.append({"image_id": img["id"], "category_id": int(rng.choice(cat_ids)),
                         "bbox": random_box(rng, img), "score": round(float(rng.rand()), 3)})
    for img in no_gt:  # images without ground truth
        for _ in range(5):
            dets.append({"image_id": img["id"], "category_id": int(rng.choice(cat_ids)),
                         "bbox": random_box(rng, img), "score": round(float(rng.rand()), 3)})
    # more than 100 detections of one category on one image (maxDets), with tied scores
    busy = anns[0]
    img = by_id[busy["image_id"]]
    for i in range(130):
        box = jitter(rng, busy["bbox"], 0.3) if i % 3 == 0 else random_box(rng, img)
        dets.append({"image_id": img["id"], "category_id": busy["category_id"], "bbox": box,
                     "score": round(float(rng.rand()), 1)})
    # detections of a category the ground truth does not have: not evaluated
    dets.append({"image_id": imgs[0]["id"], "category_id": 999, "bbox": [1.0, 2.0, 30.0, 40.0], "score": 0.9})
    sets["mixed"] = dets

    # sparse: few detections, all with the same score.
    rng = np.random.RandomState(3)
    dets = []
    for a in anns:
        if rng.rand() < 0.1:
            dets.append({"image_id": a["image_id"], "category_id": a["category_id"],
                         "bbox": jitter(rng, a["bbox"], 0.15), "score": 0.5})
    sets["sparse"] = dets
    return sets


def evaluate(coco, dets):
    cd = quiet(coco.loadRes, copy.deepcopy(dets))
    ev = COCOeval(coco, cd, "bbox")
    quiet(ev.evaluate)
    quiet(ev.accumulate)
    quiet(ev.summarize)
    prec = ev.eval["precision"]  # T R K A M
    per_class = {}
    curves = {}
    for k, cat in enumerate(ev.params.catIds):
        p = prec[:, :, k, 0, 2]
        per_class[str(cat)] = float(np.mean(p[p > -1])) if (p > -1).any() else -1.0
        curves[str(cat)] = [float(v) for v in prec[0, :, k, 0, 2]]
    return {"stats": [float(s) for s in ev.stats], "per_class_ap": per_class, "pr_iou50": curves}


def mask_refs(coco):
    out = {"annotations": {}, "compressed": {}, "synthetic": [], "voc": {}}
    for a in coco.dataset["annotations"]:
        m = coco.annToMask(a)
        out["annotations"][str(a["id"])] = {"area": int(m.sum()), "fnv1a64": fnv1a64(np.ascontiguousarray(m).tobytes())}
    # compressed RLE strings: every crowd annotation and some polygons
    picks = [a for a in coco.dataset["annotations"] if a["iscrowd"]] + coco.dataset["annotations"][:12]
    for a in picks:
        m = coco.annToMask(a)
        rle = mask_utils.encode(np.asfortranarray(m))
        out["compressed"][str(a["id"])] = {"size": rle["size"], "counts": rle["counts"].decode("ascii")}
    rng = np.random.RandomState(4)
    for i in range(40):
        h, w = int(rng.randint(1, 60)), int(rng.randint(1, 60))
        n = int(rng.randint(3, 9))
        if i % 4 == 0:
            poly = rng.uniform(-10, max(w, h) + 10, size=2 * n)  # partly outside the image
        elif i % 4 == 1:
            poly = rng.uniform(0, 3, size=2 * n)  # tiny
        else:
            poly = np.stack([rng.uniform(0, w, n), rng.uniform(0, h, n)], 1).reshape(-1)
        poly = [round(float(v), 3) for v in poly]
        rles = mask_utils.frPyObjects([poly], h, w)
        m = mask_utils.decode(mask_utils.merge(rles))
        out["synthetic"].append({"height": h, "width": w, "polygon": poly, "area": int(m.sum()),
                                 "fnv1a64": fnv1a64(np.ascontiguousarray(m).tobytes())})
    for img in coco.dataset["images"]:
        h, w = img["height"], img["width"]
        mask = np.zeros((h, w), dtype=np.uint8)
        for inst in coco.loadAnns(coco.getAnnIds(imgIds=img["id"])):
            rle = mask_utils.frPyObjects(inst["segmentation"], h, w)
            m = mask_utils.decode(rle)
            cat = inst["category_id"]
            if cat not in COCO_TO_PASCAL:
                continue
            c = COCO_TO_PASCAL.index(cat)
            if len(m.shape) < 3:
                mask[:, :] += (mask == 0) * (m * c)
            else:
                mask[:, :] += (mask == 0) * (((np.sum(m, axis=2)) > 0) * c).astype(np.uint8)
        out["voc"][str(img["id"])] = {"fnv1a64": fnv1a64(mask.tobytes()),
                                     "counts": np.bincount(mask.reshape(-1), minlength=21).tolist()}
    return out


def seg_refs():
    rng = np.random.RandomState(5)
    n = 21
    gt_dir, pred_dir = os.path.join(OUT, "seg", "gt"), os.path.join(OUT, "seg", "pred")
    os.makedirs(gt_dir, exist_ok=True)
    os.makedirs(pred_dir, exist_ok=True)
    conf = np.zeros((n, n), dtype=np.int64)
    # classes 19 and 20 never occur (empty union: left out of the mean)
    for i, (h, w) in enumerate([(31, 47), (40, 40), (23, 64)]):
        gt = rng.randint(0, 19, size=(h, w)).astype(np.uint8)
        gt[rng.rand(h, w) < 0.1] = 255
        pred = gt.copy()
        flip = rng.rand(h, w) < 0.35
        pred[flip] = rng.randint(0, 19, size=int(flip.sum()))
        pred[pred == 255] = rng.randint(0, 19)
        Image.fromarray(gt, mode="L").save(os.path.join(gt_dir, "img%d.png" % i))
        Image.fromarray(pred, mode="L").save(os.path.join(pred_dir, "img%d.png" % i))
        valid = gt != 255
        conf += np.bincount(n * gt[valid].astype(np.int64) + pred[valid], minlength=n * n).reshape(n, n)
    inter = np.diag(conf).astype(np.float64)
    union = conf.sum(0) + conf.sum(1) - np.diag(conf)
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = inter / union
    miou = float(np.nanmean(iou))
    acc = float(inter.sum() / conf.sum())
    return {"classes": n, "ignore_index": 255, "confusion": conf.tolist(),
            "iou": [None if np.isnan(v) else float(v) for v in iou], "miou": miou, "pixel_accuracy": acc}


def main():
    coco = load_gt()
    sets = make_sets(coco)
    ref = {}
    for name, dets in sets.items():
        with open(os.path.join(OUT, "dets_%s.json" % name), "w") as f:
            json.dump(dets, f)
        ref[name] = evaluate(coco, dets)
        print(name, len(dets), ["%.4f" % s for s in ref[name]["stats"]], file=sys.stderr)
    with open(os.path.join(OUT, "coco_eval_reference.json"), "w") as f:
        json.dump(ref, f)
    with open(os.path.join(OUT, "masks_reference.json"), "w") as f:
        json.dump(mask_refs(load_gt()), f)
    with open(os.path.join(OUT, "seg_reference.json"), "w") as f:
        json.dump(seg_refs(), f, indent=1)


if __name__ == "__main__":
    main()
