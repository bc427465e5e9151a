#!/usr/bin/env python3
"""A small COCO training set for vpipe's training tests: tests/fixtures/train_coco/.

    python scripts/make_train_fixture.py --coco128 ../shared/datasets/coco128 --out tests/fixtures/train_coco

Takes the first N images of coco128 (sorted by file name) that have at least one annotation of a
PASCAL VOC category (so that both boxes and VOC masks are exercised), scales each so that its longer
side is 160 px (Pillow, bilinear), saves it as JPEG quality 85, and writes instances.json with those
images and their annotations scaled alike: boxes, polygons and areas (crowd RLE regions are dropped,
as their run lengths do not scale; their images keep their other annotations). The categories are
coco128's 80. Deterministic; made with Python 3.11 and Pillow 13.0.0.
"""
import argparse
import json
import os

from PIL import Image

VOC_COCO_IDS = {5, 2, 16, 9, 44, 6, 3, 17, 62, 21, 67, 18, 19, 4, 1, 64, 20, 63, 7, 72}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--coco128", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--count", type=int, default=8)
    ap.add_argument("--side", type=int, default=160)
    a = ap.parse_args()
    src = json.load(open(os.path.join(a.coco128, "instances.json")))
    anns = {}
    for ann in src["annotations"]:
        anns.setdefault(ann["image_id"], []).append(ann)
    images, annotations = [], []
    for img in sorted(src["images"], key=lambda i: i["file_name"]):
        mine = [x for x in anns.get(img["id"], []) if not x["iscrowd"]]
        if not any(x["category_id"] in VOC_COCO_IDS for x in mine):
            continue
        s = a.side / max(img["width"], img["height"])
        w, h = round(img["width"] * s), round(img["height"] * s)
        im = Image.open(os.path.join(a.coco128, "images", img["file_name"])).convert("RGB")
        os.makedirs(os.path.join(a.out, "images"), exist_ok=True)
        im.resize((w, h), Image.BILINEAR).save(os.path.join(a.out, "images", img["file_name"]), quality=85)
        images.append({"id": img["id"], "file_name": img["file_name"], "width": w, "height": h})
        for x in mine:
            bx, by, bw, bh = x["bbox"]
            annotations.append({
                "id": x["id"], "image_id": img["id"], "category_id": x["category_id"], "iscrowd": 0,
                "bbox": [round(v * s, 2) for v in (bx, by, bw, bh)],
                "area": round(x["area"] * s * s, 2),
                "segmentation": [[round(v * s, 2) for v in poly] for poly in x["segmentation"]],
            })
        if len(images) == a.count:
            break
    out = {"images": images, "annotations": annotations, "categories": src["categories"]}
    with open(os.path.join(a.out, "instances.json"), "w") as f:
        json.dump(out, f, separators=(",", ":"))
    print(f"{len(images)} images, {len(annotations)} annotations -> {a.out}")


if __name__ == "__main__":
    main()
