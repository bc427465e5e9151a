#!/usr/bin/env python3
"""Reference fixtures for MobileViT v1 classification, from timm and Hugging Face transformers.

For each size (xxs, xs, s) and source (timm, huggingface) it builds the reference model with
seeded random weights (the scheme of tests/fixtures: BatchNorm statistics and affine terms
uniform, conv/linear weights N(0,1)/sqrt(fan_in), LayerNorm near 1), preprocesses the photo
with the source's own pipeline, and saves
    {source}_{size}.safetensors, {source}_{size}_input.npy, {source}_{size}_logits.npy
into --out. With --check it then runs `vpipe infer` on each case and prints the largest
absolute logit difference (pass: <= 1e-4).

    pip install torch timm transformers safetensors pillow numpy
    python3 scripts/make_reference.py --image tests/fixtures/image.png --out /tmp/ref --check

`make_reference.py preprocess [--check]` writes the preprocessing references of
tests/fixtures/preprocess (see `preprocess_references`); `--check` regenerates them into a
temporary folder and compares them with the committed files.

`make_reference.py seg-os8 WEIGHTS CONFIG PIXELS OUT` re-runs a Hugging Face DeepLabv3 checkpoint
at output stride 8 (tests/fixtures/hf_xxs_seg_os8_logits.npy).

ml-cvnets is not on PyPI; the checked-in cvnets fixtures were made with its repository
(HEAD 77717569ab4a) in the same way.
"""
import argparse, os, subprocess, sys

import numpy as np
import torch
from PIL import Image
from safetensors.torch import save_file

SIZES = {"xxs": ("mobilevit_xxs", "apple/mobilevit-xx-small", [64, 80, 96], [16, 16, 24, 48, 64, 80, 320], 2.0),
         "xs": ("mobilevit_xs", "apple/mobilevit-x-small", [96, 120, 144], [16, 32, 48, 64, 80, 96, 384], 4.0),
         "s": ("mobilevit_s", "apple/mobilevit-small", [144, 192, 240], [16, 32, 64, 96, 128, 160, 640], 4.0)}


def randomise(model, seed):
    g = torch.Generator().manual_seed(seed)
    u = lambda t, lo, hi: t.copy_(torch.rand(t.shape, generator=g) * (hi - lo) + lo)
    with torch.no_grad():
        for _, m in model.named_modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                u(m.running_mean, -0.2, 0.2); u(m.running_var, 0.5, 1.5)
                u(m.weight, 0.5, 1.5); u(m.bias, -0.2, 0.2)
            elif isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)):
                fan_in = m.weight[0].numel()
                m.weight.copy_(torch.randn(m.weight.shape, generator=g) / fan_in ** 0.5)
                if m.bias is not None:
                    u(m.bias, -0.1, 0.1)
            elif isinstance(m, torch.nn.LayerNorm):
                u(m.weight, 0.8, 1.2); u(m.bias, -0.1, 0.1)
    return model.eval()


def timm_case(size, image, seed):
    import timm
    from timm.data import resolve_data_config, create_transform
    model = randomise(timm.create_model(SIZES[size][0], pretrained=False), seed)
    tf = create_transform(**resolve_data_config({}, model=model))
    x = tf(image).unsqueeze(0)
    return model, x


def hf_case(size, image, seed):
    from transformers import MobileViTConfig, MobileViTForImageClassification, MobileViTImageProcessor
    _, _, hidden, neck, exp = SIZES[size]
    cfg = MobileViTConfig(hidden_sizes=hidden, neck_hidden_sizes=neck, expand_ratio=exp, num_labels=1000)
    model = randomise(MobileViTForImageClassification(cfg), seed)
    proc = MobileViTImageProcessor(size={"shortest_edge": 288}, crop_size={"height": 256, "width": 256},
                                   resample=2)
    x = proc(images=image, return_tensors="pt")["pixel_values"]
    return model, x


def seg_output_stride_8(weights, config, pixel_values, out):
    """Logits of a Hugging Face DeepLabv3-MobileViT checkpoint re-run at output stride 8."""
    import json
    from safetensors.torch import load_file
    from transformers import MobileViTConfig, MobileViTForSemanticSegmentation
    cfg = json.load(open(config))
    cfg["output_stride"] = 8
    model = MobileViTForSemanticSegmentation(MobileViTConfig(**cfg)).eval()
    model.load_state_dict(load_file(weights))
    with torch.inference_mode():
        logits = model(torch.from_numpy(np.load(pixel_values))).logits
    np.save(out, logits.numpy().astype(np.float32))
    print(f"wrote {out} {tuple(logits.shape)}")


# ---------------------------------------------------------------------------
# Preprocessing references: every vpipe preset against its source's own code.
# ---------------------------------------------------------------------------

PREPROCESS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures", "preprocess")

# The Hub preprocessor configs of apple/mobilevit-xx-small and apple/deeplabv3-mobilevit-xx-small
# (the same for the other sizes).
HF_CONFIGS = {
    "hf-cls": {"crop_size": {"height": 256, "width": 256}, "do_center_crop": True, "do_flip_channel_order": True,
               "do_reduce_labels": False, "do_rescale": True, "do_resize": True, "resample": 2,
               "rescale_factor": 0.00392156862745098, "size": {"shortest_edge": 288}},
    "hf-seg": {"crop_size": {"height": 512, "width": 512}, "do_center_crop": True, "do_flip_channel_order": True,
               "do_reduce_labels": False, "do_rescale": True, "do_resize": True, "resample": 2,
               "rescale_factor": 0.00392156862745098, "size": {"shortest_edge": 544}},
}


def make_inputs(photo, out):
    """Lossless test images: odd sizes, up- and downscaling, a 300x7 strip, one pixel, grey,
    RGBA, 16-bit colour and 16-bit grey, cut from the fixture photo (deterministic)."""
    base = Image.open(photo).convert("RGB")
    big = Image.new("RGB", (1024, 1024))
    for i, t in enumerate([None, Image.FLIP_LEFT_RIGHT, Image.FLIP_TOP_BOTTOM, Image.ROTATE_180]):
        big.paste(base if t is None else base.transpose(t), ((i % 2) * 512, (i // 2) * 512))
    # Cut, shrunk, then enlarged fourfold: smooth content keeps the PNGs small.
    rgb = lambda w, h, box: big.crop(box).resize((max(1, w // 4), max(1, h // 4)), Image.LANCZOS).resize(
        (w, h), Image.BILINEAR)
    images = {
        "odd_517x389": rgb(517, 389, (100, 60, 900, 662)),
        "large_600x760": rgb(600, 760, (200, 0, 1004, 1018)),
        "short288_288x345": rgb(288, 345, (300, 300, 590, 650)),
        "strip_300x7": rgb(300, 7, (0, 400, 1024, 424)),
        "pixel_1x1": rgb(1, 1, (250, 250, 260, 260)),
        "grey_131x97": rgb(131, 97, (500, 100, 800, 322)).convert("L"),
    }
    rgba = rgb(190, 143, (40, 500, 420, 786)).convert("RGBA")
    a = np.asarray(rgba).copy()
    a[..., 3] = (np.arange(190)[None, :] * 255 // 189).astype(np.uint8)
    images["rgba_190x143"] = Image.fromarray(a, "RGBA")
    os.makedirs(out, exist_ok=True)
    paths = {}
    for name, im in images.items():
        paths[name] = os.path.join(out, name + ".png")
        im.save(paths[name], optimize=True)
    # 16-bit PNGs through OpenCV (Pillow cannot write 16-bit colour); low bytes vary.
    import cv2
    src = np.asarray(rgb(64, 48, (600, 600, 1000, 900)), dtype=np.uint16)
    rng = np.random.default_rng(16)
    wide = (src << 8) | rng.integers(0, 256, src.shape, dtype=np.uint16)
    paths["rgb16_64x48"] = os.path.join(out, "rgb16_64x48.png")
    cv2.imwrite(paths["rgb16_64x48"], wide[..., ::-1].copy())
    paths["grey16_40x30"] = os.path.join(out, "grey16_40x30.png")
    cv2.imwrite(paths["grey16_40x30"], wide[:30, :40, 0].copy())
    return paths


def cvnets_v01(path, preset):
    """ml-cvnets v0.1 (tag cvnets-v0.1, d38a116), written out from its code:
    data/datasets/dataset_base.py read_image: cv2.imread(path, cv2.IMREAD_COLOR) (BGR);
    data/transforms/image.py _resize_fn / Resize (cv2.resize, 'bilinear' = INTER_LINEAR),
    CenterCrop ((h - size) // 2, (w - size) // 2), NumpyToTensor (CHW, float, / 255);
    the validation_transforms of classification/imagenet.py (Resize(size + 32), CenterCrop(size)),
    detection/coco.py and segmentation/pascal_voc.py (Resize((h, w)))."""
    import cv2
    img = cv2.imread(path, cv2.IMREAD_COLOR)
    if preset == "cvnets-cls":
        size = 288
        h, w = img.shape[:2]
        if not ((w <= h and w == size) or (h <= w and h == size)):
            if w < h:
                size_h, size_w = int(size * h / w), size
            else:
                size_w, size_h = int(size * w / h), size
            img = cv2.resize(img, dsize=(size_w, size_h), interpolation=cv2.INTER_LINEAR)
        h, w = img.shape[:2]
        i, j = (h - 256) // 2, (w - 256) // 2
        img = img[i:i + 256, j:j + 256]
    else:
        side = 320 if preset == "cvnets-ssd" else 512
        img = cv2.resize(img, dsize=(side, side), interpolation=cv2.INTER_LINEAR)
    chw = np.ascontiguousarray(img.transpose(2, 0, 1))
    return torch.div(torch.from_numpy(chw).float(), 255.0).numpy(), chw


def timm_eval(path):
    """timm's evaluation transform of mobilevit_xxs (resolve_data_config + create_transform) on
    the image as a user loads it: PIL's convert('RGB')."""
    import timm
    from timm.data import resolve_data_config, create_transform
    model = timm.create_model("mobilevit_xxs", pretrained=False)
    tf = create_transform(**resolve_data_config({}, model=model))
    return tf(Image.open(path).convert("RGB")).numpy()


def hf_processor(path, preset):
    """transformers' MobileViTImageProcessor with the Hub config, on PIL's convert('RGB')."""
    from transformers import MobileViTImageProcessor
    proc = MobileViTImageProcessor(**HF_CONFIGS[preset])
    return proc(images=Image.open(path).convert("RGB"), return_tensors="np")["pixel_values"][0]


# How each source turns bytes into floats: torch.div(x, 255.0) in ml-cvnets v0.1 and timm's
# ToTensor; x * float32(1/255) in the Hugging Face processor's rescale.
SCALING = {"cvnets-cls": "divide", "cvnets-ssd": "divide", "cvnets-seg": "divide", "timm": "divide",
           "hf-cls": "multiply", "hf-seg": "multiply"}


def as_bytes(x, preset):
    """The 8-bit image behind a reference tensor, checked to give the tensor back exactly with
    the source's scaling (so that the reference is stored losslessly as a PNG)."""
    u8 = np.rint(x.astype(np.float64) * 255).astype(np.uint8)
    f = u8.astype(np.float32)
    back = f / np.float32(255) if SCALING[preset] == "divide" else f * np.float32(1 / 255)
    if not np.array_equal(back, x):
        raise SystemExit(f"{preset}: the reference tensor is not an 8-bit image scaled as {SCALING[preset]}")
    return u8, SCALING[preset]


def preprocess_references(out):
    """Every preset's reference on every test image: tests/fixtures/preprocess/expected/<preset>/
    <image>.png holds the network input as 8-bit planes (the PNG's channels, in network channel
    order), and MANIFEST.json the scaling back to floats, the shapes and every file's sha256."""
    import cv2, hashlib, json, timm, transformers
    paths = make_inputs(os.path.join(os.path.dirname(PREPROCESS_DIR), "image.png"), os.path.join(out, "inputs"))
    manifest = {"versions": {"opencv-python": cv2.__version__, "pillow": Image.__version__,
                             "torch": torch.__version__, "timm": timm.__version__,
                             "transformers": transformers.__version__, "numpy": np.__version__},
                "inputs": {}, "expected": {}, "not_compared": {}}
    sha = lambda p: hashlib.sha256(open(p, "rb").read()).hexdigest()
    for name, path in paths.items():
        manifest["inputs"][name] = {"file": os.path.relpath(path, out), "sha256": sha(path)}
    for preset in ["cvnets-cls", "cvnets-ssd", "cvnets-seg", "timm", "hf-cls", "hf-seg"]:
        os.makedirs(os.path.join(out, "expected", preset), exist_ok=True)
        for name, path in paths.items():
            if name == "grey16_40x30" and not preset.startswith("cvnets"):
                manifest["not_compared"][f"{preset}/{name}"] = (
                    "Pillow's convert('RGB') clamps 16-bit grey ('I;16') samples at 255 instead of "
                    "scaling them; vpipe keeps the high byte of 16-bit samples, as OpenCV does")
                continue
            if preset.startswith("cvnets"):
                x, _ = cvnets_v01(path, preset)
            elif preset == "timm":
                x = timm_eval(path)
            else:
                x = hf_processor(path, preset)
            x = np.asarray(x, dtype=np.float32)
            u8, scaling = as_bytes(x, preset)
            target = os.path.join(out, "expected", preset, name + ".png")
            Image.fromarray(np.ascontiguousarray(u8.transpose(1, 2, 0)), "RGB").save(target, optimize=True)
            manifest["expected"][f"{preset}/{name}"] = {
                "file": os.path.relpath(target, out), "shape": [1, *x.shape], "scaling": scaling,
                "sha256": sha(target)}
            print(f"{preset} {name}: {tuple(x.shape)} ({scaling})")
    with open(os.path.join(out, "MANIFEST.json"), "w") as f:
        json.dump(manifest, f, indent=1, sort_keys=True)
        f.write("\n")


def check_preprocess_references():
    """Regenerates the references into a temporary folder and compares every file's bytes."""
    import filecmp, tempfile
    with tempfile.TemporaryDirectory() as tmp:
        preprocess_references(tmp)
        bad = []
        for root, _, files in os.walk(tmp):
            for f in files:
                rel = os.path.relpath(os.path.join(root, f), tmp)
                committed = os.path.join(PREPROCESS_DIR, rel)
                if not os.path.exists(committed) or not filecmp.cmp(os.path.join(root, f), committed, shallow=False):
                    bad.append(rel)
        print(f"{'FAIL' if bad else 'PASS'}: {len(bad)} file(s) differ from tests/fixtures/preprocess"
              + "".join(f"\n  {b}" for b in bad))
        sys.exit(1 if bad else 0)


def main():
    if len(sys.argv) > 1 and sys.argv[1] == "preprocess":
        # python3 scripts/make_reference.py preprocess [--check]
        if "--check" in sys.argv[2:]:
            check_preprocess_references()
        else:
            preprocess_references(PREPROCESS_DIR)
        return
    if len(sys.argv) > 1 and sys.argv[1] == "seg-os8":
        # python3 scripts/make_reference.py seg-os8 WEIGHTS CONFIG_JSON PIXEL_VALUES.npy OUT.npy
        seg_output_stride_8(*sys.argv[2:6])
        return
    ap = argparse.ArgumentParser()
    ap.add_argument("--image", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--sizes", default="xxs,xs,s")
    ap.add_argument("--check", action="store_true", help="run vpipe infer and compare")
    ap.add_argument("--vpipe", default="target/release/vpipe")
    a = ap.parse_args()
    os.makedirs(a.out, exist_ok=True)
    image = Image.open(a.image).convert("RGB")
    worst = 0.0
    for k, size in enumerate(a.sizes.split(",")):
        for j, (source, make) in enumerate([("timm", timm_case), ("huggingface", hf_case)]):
            model, x = make(size, image, 2000 + 10 * k + j)
            with torch.inference_mode():
                out = model(x)
                logits = out.logits if hasattr(out, "logits") else out
            stem = os.path.join(a.out, f"{source}_{size}")
            save_file({n: t.contiguous() for n, t in model.state_dict().items()}, stem + ".safetensors")
            np.save(stem + "_input.npy", x.numpy().astype(np.float32))
            np.save(stem + "_logits.npy", logits.numpy().astype(np.float32))
            print(f"wrote {stem}.safetensors, _input.npy, _logits.npy")
            if a.check:
                res = stem + "_vpipe"
                subprocess.run([a.vpipe, "infer", "--weights", stem + ".safetensors", "--tensor",
                                stem + "_input.npy", "--out", res], check=True)
                diff = float(np.abs(np.load(os.path.join(res, "logits.npy")) - logits.numpy()).max())
                worst = max(worst, diff)
                print(f"{source} {size}: max |logit diff| = {diff:.3g}")
    if a.check:
        print(f"worst max |logit diff| = {worst:.3g}: {'PASS' if worst <= 1e-4 else 'FAIL'}")
        sys.exit(0 if worst <= 1e-4 else 1)


if __name__ == "__main__":
    main()
