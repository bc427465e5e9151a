#!/usr/bin/env python3
"""Reference fixtures for MobileViT v1 (timm, Hugging Face transformers, Apple ml-cvnets).

Subcommands
-----------
fixtures --out DIR
    Regenerates every committed reference fixture from its recipe: tests/fixtures/*.npy and
    tests/fixtures/image.png, and weights/reference/* (timm, Hugging Face classification
    .safetensors and .bin, Hugging Face DeepLabv3 (also re-run at output stride 8), ml-cvnets
    classification, SSD and DeepLabv3), written under DIR/tests/fixtures and
    DIR/weights/reference with DIR/tests/fixtures/MANIFEST.json (sha256 of every file, shape and
    dtype of every array, the library versions). It never writes into the repository unless
    DIR is the repository.
fixtures --check [--write-manifest]
    Regenerates everything into a temporary folder and compares it with the committed files:
    arrays element by element (largest absolute difference per file, pass within the file's
    tolerance: FLOAT_TOL, EXACT_FLOAT, PIXEL_SCALE, KNOWN), weights tensor by tensor (names in
    order, shapes, dtypes, values exactly), and the committed files against
    tests/fixtures/MANIFEST.json. --write-manifest rewrites tests/fixtures/MANIFEST.json from the
    committed files and the result of the check. About 10 s on one CPU core.
preprocess [--check]
    The preprocessing references of tests/fixtures/preprocess (see `preprocess_references`).
seg-os8 WEIGHTS CONFIG_JSON PIXEL_VALUES.npy OUT.npy
    Re-runs a Hugging Face DeepLabv3 checkpoint at output stride 8 (the `fixtures` subcommand
    makes tests/fixtures/hf_xxs_seg_os8_logits.npy the same way).
sweep --image IMG --out DIR [--sizes xxs,xs,s] [--check] [--vpipe BIN]
    timm and Hugging Face classifiers of any size with seeded random weights (seed 2000 + 10k + j,
    no logit rescale), written as {source}_{size}.safetensors, _input.npy, _logits.npy; --check
    runs `vpipe infer` on each and compares the logits (pass: <= 1e-4). The old spelling without
    the subcommand (`make_reference.py --image IMG --out DIR [--check]`) still works.

Setup (what the committed fixtures were made with; `fixtures` checks it, see PINNED)
--------------------------------------------------------------------------------------
    python 3.11, torch 2.15.0 (CPU is enough), torchvision 0.29.2, timm 1.0.31,
    transformers 5.24.0, numpy 2.4.6, pillow 13.0.0, safetensors 0.8.0,
    scikit-image 0.26.0 (only for image.png = skimage.data.astronaut()),
    and for ml-cvnets' own imports: PyYAML, requests, av, ftfy
        pip install torch==2.15.0 torchvision==0.29.2 timm==1.0.31 transformers==5.24.0 \\
            numpy==2.4.6 pillow==13.0.0 safetensors==0.8.0 scikit-image==0.26.0 \\
            pyyaml requests av ftfy
    ml-cvnets (Apple, not on PyPI) at commit 77717569ab4a ("Fix test", v0.4), used at run time
    only, from a checkout outside this repository:
        git clone https://github.com/apple/ml-cvnets /tmp/ml-cvnets-git
        mkdir /tmp/ml-cvnets
        git -C /tmp/ml-cvnets-git archive 77717569ab4a | tar -x -C /tmp/ml-cvnets
    then pass --cvnets /tmp/ml-cvnets (or set CVNETS_SRC). --cvnets may also name a git
    repository (a clone or a bare mirror): the script then extracts that commit into a temporary
    folder itself. The source tree is checked against CVNETS_TREE_SHA256 (every file's path and
    sha256, __pycache__ ignored).

    ml-cvnets is imported without its training entry point: `options.opts.get_training_arguments`
    imports every dataset, transform, tokenizer and video module, which need torchaudio,
    torchtext and torchvision.io.write_video; no release of those works with torch 2.15 /
    torchvision 0.29, and none of them is used here. The script builds the argument parser from
    the model arguments (`cvnets.modeling_arguments`), `arguments_common`, `arguments_ddp` and the
    three image_pil transforms it uses (Resize, CenterCrop, ToTensor), reads the config yaml with
    ml-cvnets' own `load_config_file`, and calls `cvnets.get_model(opts)`. Nothing is stubbed.

Example
-------
    python3 scripts/make_reference.py fixtures --check --cvnets /tmp/ml-cvnets
    python3 scripts/make_reference.py fixtures --out /tmp/regen --cvnets /tmp/ml-cvnets

Recipe (tests/fixtures/README.md has the long form)
---------------------------------------------------
Everything runs on the CPU in one thread (torch.set_num_threads(1)): only so do the committed
files come back bit for bit; with more threads the convolutions sum in another order (the timm
logits move by 1.9e-6, and the rescale factors computed from logits with them). Random weights (`randomise`): a torch.Generator seeded per case (1000 + k: timm 1,
hf_cls 2, hf_seg 3, cvnets_cls 4, cvnets_ssd 5, cvnets_seg 6) draws, module by module in
named_modules() order, BatchNorm running_mean ~U(-0.2,0.2), running_var ~U(0.5,1.5),
weight ~U(0.5,1.5), bias ~U(-0.2,0.2); conv/linear weight ~N(0,1)/sqrt(fan_in), bias ~U(-0.1,0.1);
LayerNorm weight ~U(0.8,1.2), bias ~U(-0.1,0.1). Then the last layer is rescaled: classifiers by
3 / std(logits) (Python float), DeepLabv3 heads after shifting the bias by minus the per-class
spatial mean of the logits, SSD heads by the search in `ssd_head_rescale`.
"""
import argparse, contextlib, hashlib, io, json, os, shutil, subprocess, sys, tempfile, time, warnings

import numpy as np
import torch
from PIL import Image
from safetensors.torch import save_file

ROOT = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

# The versions the committed fixtures were made with. `fixtures` refuses to run with others unless
# --allow-version-mismatch is given (then it warns and records the versions it used).
PINNED = {"torch": "2.15.0", "torchvision": "0.29.2", "timm": "1.0.31", "transformers": "5.24.0",
          "numpy": "2.4.6", "pillow": "13.0.0", "safetensors": "0.8.0"}
PINNED_OPTIONAL = {"scikit-image": "0.26.0"}  # image.png only
CVNETS_COMMIT = "77717569ab4a852614dae01f010b32b820cb33bb"
CVNETS_TREE_SHA256 = "e8cd2c5e606b285448b850afe2e481f122daf9f55e56532d2084d769107b48c4"

SIZES = {"xxs": ("mobilevit_xxs", "apple/mobilevit-xx-small", [64, 80, 96], [16, 16, 24, 48, 64, 80, 320], 2.0),
         "xs": ("mobilevit_xs", "apple/mobilevit-x-small", [96, 120, 144], [16, 32, 48, 64, 80, 96, 384], 4.0),
         "s": ("mobilevit_s", "apple/mobilevit-small", [144, 192, 240], [16, 32, 64, 96, 128, 160, 640], 4.0)}


def randomise(model, seed):
    """Seeded random weights, module by module in named_modules() order. ml-cvnets' LinearLayer
    (its own Module with a weight [out, in] and bias) counts as a linear layer."""
    g = torch.Generator().manual_seed(seed)
    u = lambda t, lo, hi: t.copy_(torch.rand(t.shape, generator=g) * (hi - lo) + lo)
    with torch.no_grad():
        for _, m in model.named_modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                u(m.running_mean, -0.2, 0.2); u(m.running_var, 0.5, 1.5)
                u(m.weight, 0.5, 1.5); u(m.bias, -0.2, 0.2)
            elif isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)) or type(m).__name__ == "LinearLayer":
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
    from safetensors.torch import load_file
    cfg = json.load(open(config))
    logits = hf_seg_os8_logits(load_file(weights), cfg, torch.from_numpy(np.load(pixel_values)))
    np.save(out, logits)
    print(f"wrote {out} {tuple(logits.shape)}")


def hf_seg_os8_logits(state_dict, cfg, pixel_values):
    from transformers import MobileViTConfig, MobileViTForSemanticSegmentation
    cfg = dict(cfg, output_stride=8)
    model = MobileViTForSemanticSegmentation(MobileViTConfig(**cfg)).eval()
    model.load_state_dict(state_dict)
    with torch.inference_mode():
        logits = model(pixel_values).logits
    return logits.numpy().astype(np.float32)


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


# ---------------------------------------------------------------------------
# The committed fixture set: tests/fixtures/*.npy, image.png and weights/reference/*.
# ---------------------------------------------------------------------------

FIXTURES = "tests/fixtures"
WEIGHTS = "weights/reference"
MANIFEST = os.path.join(FIXTURES, "MANIFEST.json")
SEED_BASE = 1000  # per-case seed = SEED_BASE + k
CVNETS_ROOT = None  # set by cvnets_source

# MobileViTConfig of apple/mobilevit-xx-small and apple/deeplabv3-mobilevit-xx-small (labels are the
# default LABEL_i names).
HF_COMMON = dict(aspp_dropout_prob=0.1, aspp_out_channels=256, atrous_rates=[6, 12, 18],
                 attention_probs_dropout_prob=0.0, classifier_dropout_prob=0.1, conv_kernel_size=3,
                 expand_ratio=2.0, hidden_act="silu", hidden_dropout_prob=0.05, hidden_sizes=[64, 80, 96],
                 initializer_range=0.02, layer_norm_eps=1e-05, mlp_ratio=2.0,
                 neck_hidden_sizes=[16, 16, 24, 48, 64, 80, 320], num_attention_heads=4, num_channels=3,
                 patch_size=2, qkv_bias=True, semantic_loss_ignore_index=255)
HF_MODEL = {"cls": dict(HF_COMMON, num_labels=1000, image_size=256, output_stride=32),
            "seg": dict(HF_COMMON, num_labels=21, image_size=512, output_stride=16)}
# The Hub preprocessor configs as stored (image_mean/std are unused: do_normalize is not set).
HF_PROCESSOR = {"cls": dict(HF_CONFIGS["hf-cls"], image_mean=[0.5, 0.5, 0.5], image_std=[0.5, 0.5, 0.5]),
                "seg": dict(HF_CONFIGS["hf-seg"], image_mean=[0.5, 0.5, 0.5], image_std=[0.5, 0.5, 0.5])}

# ml-cvnets: config yaml (in the ml-cvnets tree), task, overrides of the yaml.
CVNETS = {
    "cls": ("config/classification/imagenet/mobilevit.yaml", "classification",
            {"model.classification.mit.mode": "xx_small", "model.classification.n_classes": 1000,
             "model.normalization.name": "batch_norm", "model.classification.pretrained": None}),
    "ssd": ("config/detection/ssd_coco/mobilevit.yaml", "detection",
            {"model.classification.mit.mode": "xx_small", "model.detection.n_classes": 81,
             "model.detection.ssd.conf_threshold": 0.05, "model.normalization.name": "batch_norm",
             "model.classification.pretrained": None, "model.detection.pretrained": None}),
    # The released DeepLabv3-MobileViT head (output stride 16, ASPP 256 at rates 6/12/18, no aux
    # head); the yaml at this commit says 8, 512, 12/24/36 and an aux head.
    "seg": ("config/segmentation/pascal_voc/deeplabv3_mobilevit.yaml", "segmentation",
            {"model.classification.mit.mode": "xx_small", "model.normalization.name": "batch_norm",
             "model.classification.pretrained": None, "model.segmentation.output_stride": 16,
             "model.segmentation.deeplabv3.aspp_out_channels": 256,
             "model.segmentation.deeplabv3.aspp_rates": [6, 12, 18], "model.segmentation.use_aux_head": False}),
}

# --check tolerances (largest absolute difference). Exact: every input tensor, mask, label array,
# the SSD anchors and every weights file, unless KNOWN names them; other float arrays: FLOAT_TOL.
# The float outputs are logits of std ~3 and features (all |x| < 14, where one float32 ulp is at
# most 9.5e-7): 1e-5 is ten ulps or more, room for a rerun whose last bits differ, and far below
# the 1e-4 the parity tests ask of vpipe. Boxes in pixels are normalised boxes times the image
# size, so their tolerance is FLOAT_TOL times that size (PIXEL_SCALE). Everything was reproduced
# bit for bit here except what KNOWN names.
FLOAT_TOL = 1e-5
EXACT_FLOAT = ("_input.npy", "cvnets_xxs_ssd_anchors.npy")
PIXEL_SCALE = {f"{FIXTURES}/cvnets_xxs_ssd_det_boxes_input_px.npy": 320,
               f"{FIXTURES}/cvnets_xxs_ssd_det_boxes_orig_px.npy": 512}
KNOWN = {
    f"{FIXTURES}/hf_xxs_seg_os8_logits.npy": (1e-4, (
        "made by `seg-os8` from the committed checkpoint on another machine or thread count; a "
        "single-thread CPU rerun here differs by 2.8e-5 (1 to 16 threads: 2.8e-5 to 3.3e-5), and "
        "float32 itself is 3.3e-5 from a float64 rerun at this depth (logits up to 12.8), so no "
        "float32 rerun can promise better; 1e-4 is the tolerance tests/dense_parity.rs uses")),
}
# Weights files whose named tensors may differ within the file's KNOWN tolerance: {file: (prefix, suffix)}.
KNOWN_TENSORS = {}


# What each case is, for the manifest (the code above and below is the recipe).
CASES = {
    "timm": "timm.create_model('mobilevit_xxs', pretrained=False), seed 1001; input: timm's eval transform "
            "(resolve_data_config + create_transform: shorter side 284 bicubic, centre crop 256, x/255, RGB); "
            "head.fc x 3/std(logits)",
    "hf_cls": "MobileViTForImageClassification(MobileViTConfig(**HF_MODEL['cls'])), seed 1002; input: "
              "MobileViTImageProcessor(**HF_PROCESSOR['cls']) (shorter side 288 bilinear, crop 256, x/255, BGR); "
              "classifier x 3/std(logits); .bin = torch.save(dict(load_file(.safetensors)))",
    "hf_seg": "MobileViTForSemanticSegmentation(MobileViTConfig(**HF_MODEL['seg'])), seed 1003; input: "
              "MobileViTImageProcessor(**HF_PROCESSOR['seg']) (shorter side 544, crop 512, BGR); classifier bias "
              "minus per-class spatial mean, then x 3/std; mask: post_process_semantic_segmentation to 512x512; "
              "os8: the same weights with output_stride 8",
    "cvnets_cls": "ml-cvnets get_model(opts), " + CVNETS["cls"][0] + " + overrides, seed 1004; input: image_pil "
                  "Resize(288) CenterCrop(256) ToTensor on PIL RGB; classifier.fc x 3/std(logits); features: "
                  "forward hooks on layer_1..layer_5, conv_1x1_exp",
    "cvnets_ssd": "ml-cvnets get_model(opts), " + CVNETS["ssd"][0] + " + overrides, seed 1005; input: image_pil "
                  "Resize([320,320], bicubic) BoxPercentCoords ToTensor; class-logit biases minus their spatial "
                  "mean, class-logit rows x 2.35 (ssd_head_rescale); outputs: ssd_forward, predict (conf 0.05, "
                  "NMS 0.5, top-k 400, 200 per image), boxes x input size / x original size, clipped",
    "cvnets_seg": "ml-cvnets get_model(opts), " + CVNETS["seg"][0] + " + overrides (OS16, ASPP 256 at 6/12/18, "
                  "no aux head), seed 1006; input: image_pil Resize([512,512], bilinear) ToTensor; classifier bias "
                  "minus per-class spatial mean, then x 3/std of the pre-upsample logits; patch: model output "
                  "[:, :, 224:288, 224:288]; mask: argmax of the model output",
}


def base_version(v):
    return v.split("+")[0]


def library_versions():
    import platform, PIL, safetensors, timm, torchvision, transformers
    v = {"python": platform.python_version(), "torch": torch.__version__, "torchvision": torchvision.__version__,
         "timm": timm.__version__, "transformers": transformers.__version__, "numpy": np.__version__,
         "pillow": PIL.__version__, "safetensors": safetensors.__version__}
    try:
        import skimage
        v["scikit-image"] = skimage.__version__
    except ImportError:
        v["scikit-image"] = None
    return v


def check_versions(allow):
    have = library_versions()
    bad = [f"{k} {have[k]} (pinned {want})" for k, want in PINNED.items() if base_version(have[k]) != want]
    bad += [f"{k} {have[k]} (pinned {want}; image.png only)" for k, want in PINNED_OPTIONAL.items()
            if have[k] is not None and base_version(have[k]) != want]
    if bad:
        msg = "library versions differ from the pinned ones: " + ", ".join(bad)
        if not allow:
            raise SystemExit(msg + "\n(--allow-version-mismatch runs anyway; results may differ in the last bits)")
        warnings.warn(msg)
    return have


def tree_sha256(root):
    """Digest of a source tree: every file's path and sha256 (no __pycache__, .pyc or .git)."""
    h = hashlib.sha256()
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in ("__pycache__", ".git"))
        for f in sorted(filenames):
            p = os.path.join(dirpath, f)
            if f.endswith(".pyc") or os.path.islink(p):
                continue
            rel = os.path.relpath(p, root).replace(os.sep, "/")
            h.update(rel.encode() + b"\0" + hashlib.sha256(open(p, "rb").read()).digest())
    return h.hexdigest()


def cvnets_source(path, tmp, allow):
    """The ml-cvnets tree to import: PATH itself, or commit CVNETS_COMMIT extracted from PATH when
    PATH is a git repository (clone or bare mirror). Checked against CVNETS_TREE_SHA256."""
    import tarfile
    path = path or os.environ.get("CVNETS_SRC")
    if not path:
        raise SystemExit("ml-cvnets is needed: --cvnets DIR or CVNETS_SRC (see this script's docstring)")
    path = os.path.abspath(path)
    if os.path.isdir(os.path.join(path, ".git")) or (os.path.isfile(os.path.join(path, "HEAD"))
                                                     and os.path.isdir(os.path.join(path, "objects"))):
        tar = subprocess.run(["git", "-C", path, "archive", CVNETS_COMMIT], check=True, capture_output=True).stdout
        dest = os.path.join(tmp, "ml-cvnets")
        os.makedirs(dest)
        with tarfile.open(fileobj=io.BytesIO(tar)) as t:
            t.extractall(dest, filter="data")
        path = dest
    if not os.path.isfile(os.path.join(path, "cvnets", "__init__.py")):
        raise SystemExit(f"{path} is not an ml-cvnets source tree (no cvnets/__init__.py)")
    digest = tree_sha256(path)
    if digest != CVNETS_TREE_SHA256:
        msg = f"{path} is not ml-cvnets {CVNETS_COMMIT[:12]} (tree sha256 {digest})"
        if not allow:
            raise SystemExit(msg + "\n(--allow-version-mismatch runs anyway)")
        warnings.warn(msg)
    global CVNETS_ROOT
    CVNETS_ROOT = path
    if path not in sys.path:
        sys.path.insert(0, path)
    return path, digest


@contextlib.contextmanager
def quiet():
    """ml-cvnets logs to stdout (every trainable parameter, every yaml key it does not know)."""
    buf = io.StringIO()
    try:
        with contextlib.redirect_stdout(buf):
            yield
    except BaseException:
        sys.stderr.write(buf.getvalue())
        raise


def rescale_classifier(layer, logits):
    """Classifier weight and bias times 3 / std(logits) (a Python float), so logits have std ~3."""
    s = 3 / logits.std().item()
    layer.weight.mul_(s)
    layer.bias.mul_(s)


def centre_and_rescale(conv, logits_of):
    """Segmentation head: bias minus the per-class spatial mean of the logits, then weight and
    bias times 3 / std of the re-run logits. logits_of() runs the model, returns (N, C, H, W)."""
    conv.bias.sub_(logits_of().mean(dim=(0, 2, 3)))
    s = 3 / logits_of().std().item()
    conv.weight.mul_(s)
    conv.bias.mul_(s)


def case_timm(image):
    import timm
    from timm.data import resolve_data_config, create_transform
    model = randomise(timm.create_model("mobilevit_xxs", pretrained=False), SEED_BASE + 1)
    x = create_transform(**resolve_data_config({}, model=model))(image).unsqueeze(0)
    with torch.no_grad():
        rescale_classifier(model.head.fc, model(x))
        logits = model(x)
    return {f"{WEIGHTS}/timm_mobilevit_xxs.safetensors": model.state_dict(),
            f"{FIXTURES}/timm_xxs_input.npy": x, f"{FIXTURES}/timm_xxs_logits.npy": logits}


def case_hf_cls(image):
    from transformers import MobileViTConfig, MobileViTForImageClassification, MobileViTImageProcessor
    model = randomise(MobileViTForImageClassification(MobileViTConfig(**HF_MODEL["cls"])), SEED_BASE + 2)
    x = MobileViTImageProcessor(**HF_PROCESSOR["cls"])(images=image, return_tensors="pt")["pixel_values"]
    with torch.no_grad():
        rescale_classifier(model.classifier, model(x).logits)
        logits = model(x).logits
    st = f"{WEIGHTS}/hf_mobilevit_xxs_cls.safetensors"
    # The .bin is the pytorch_model.bin form of the same tensors: torch.save of the dict read back
    # from the safetensors file (whose order is sorted by name).
    return {st: model.state_dict(), f"{WEIGHTS}/hf_mobilevit_xxs_cls.bin": ("bin-from", st),
            f"{FIXTURES}/hf_xxs_cls_input.npy": x, f"{FIXTURES}/hf_xxs_cls_logits.npy": logits}


def case_hf_seg(image):
    from transformers import MobileViTConfig, MobileViTForSemanticSegmentation, MobileViTImageProcessor
    model = randomise(MobileViTForSemanticSegmentation(MobileViTConfig(**HF_MODEL["seg"])), SEED_BASE + 3)
    proc = MobileViTImageProcessor(**HF_PROCESSOR["seg"])
    x = proc(images=image, return_tensors="pt")["pixel_values"]
    with torch.no_grad():
        centre_and_rescale(model.segmentation_head.classifier.convolution, lambda: model(x).logits)
        out = model(x)
    mask = proc.post_process_semantic_segmentation(out, target_sizes=[(512, 512)])[0]
    state = {k: v.clone() for k, v in model.state_dict().items()}
    return {f"{WEIGHTS}/hf_deeplabv3_mobilevit_xxs.safetensors": model.state_dict(),
            f"{FIXTURES}/hf_xxs_seg_logits.npy": out.logits,
            f"{FIXTURES}/hf_xxs_seg_mask.npy": mask.numpy().astype(np.uint8),
            # The same checkpoint re-run at output stride 8 (as `seg-os8` does).
            f"{FIXTURES}/hf_xxs_seg_os8_logits.npy": hf_seg_os8_logits(state, HF_MODEL["seg"], x)}


def cvnets_build(task):
    """(model, input) of an ml-cvnets case: opts from the config yaml and overrides, the model from
    cvnets.get_model(opts), the input from image.png through that dataset's validation transforms
    (image_pil Resize [, CenterCrop | BoxPercentCoords], ToTensor) on PIL's convert('RGB')."""
    yaml_path, category, overrides = CVNETS[task]
    with quiet():
        from cvnets import get_model, modeling_arguments
        from data.transforms import image_pil
        from data.transforms.common import Compose
        from options.opts import arguments_common, arguments_ddp
        from options.utils import load_config_file
        parser = argparse.ArgumentParser()
        for add in (modeling_arguments, arguments_common, arguments_ddp, image_pil.Resize.add_arguments,
                    image_pil.CenterCrop.add_arguments, image_pil.ToTensor.add_arguments):
            parser = add(parser)
        opts = parser.parse_args([])
        setattr(opts, "common.config_file", os.path.join(CVNETS_ROOT, yaml_path))
        opts = load_config_file(opts)
        setattr(opts, "ddp.use_distributed", False)
        setattr(opts, "dataset.category", category)
        for k, v in overrides.items():
            setattr(opts, k, v)
        model = get_model(opts)
        middle = {"classification": [image_pil.CenterCrop(opts=opts)],
                  "detection": [image_pil.BoxPercentCoords(opts=opts)], "segmentation": []}[category]
        tf = Compose(opts=opts, img_transforms=[image_pil.Resize(opts=opts), *middle, image_pil.ToTensor(opts=opts)])
    return model, opts, tf


def cvnets_input(tf, image_path):
    return tf({"image": Image.open(image_path).convert("RGB")})["image"].unsqueeze(0)


def case_cvnets_cls(image_path):
    model, _, tf = cvnets_build("cls")
    model = randomise(model, SEED_BASE + 4)
    x = cvnets_input(tf, image_path)
    feats = {}
    names = ["layer_1", "layer_2", "layer_3", "layer_4", "layer_5", "conv_1x1_exp"]
    modules = dict(model.named_modules())
    with torch.no_grad():
        rescale_classifier(model.classifier.fc, model(x))
        hooks = [modules[n].register_forward_hook(lambda m, i, o, n=n: feats.__setitem__(n, o)) for n in names]
        logits = model(x)
        for h in hooks:
            h.remove()
    out = {f"{WEIGHTS}/cvnets_mobilevit_xxs.pt": model.state_dict(),
           f"{FIXTURES}/cvnets_xxs_cls_input.npy": x, f"{FIXTURES}/cvnets_xxs_cls_logits.npy": logits}
    out.update({f"{FIXTURES}/cvnets_xxs_cls_feat_{n}.npy": feats[n] for n in names})
    return out


def ssd_heads(model):
    """(pointwise conv, class-logit output channels) of every SSD head: the conv emits
    n_anchors * (4 + 81) channels, per anchor 4 box regressions then 81 class logits."""
    out = []
    for head in model.ssd_heads:
        layer = head.loc_cls_layer
        conv = layer.pw_conv.block.conv if hasattr(layer, "pw_conv") else layer.block.conv
        n_anchors = conv.out_channels // 85
        out.append((conv, torch.tensor([a * 85 + 4 + c for a in range(n_anchors) for c in range(81)])))
    return out


def ssd_detections_ok(model, x):
    """5..30 detections, consecutive scores more than 2e-4 apart, no class probability within
    3e-4 of the 0.05 threshold: a detection list that a reimplementation can match exactly."""
    out = model(x)
    det = out["detections"][0]
    probs = torch.softmax(out["scores"], dim=-1)[..., 1:]
    scores = torch.sort(det.scores, descending=True).values
    return (5 <= scores.numel() <= 30 and bool(((scores[:-1] - scores[1:]) > 2e-4).all())
            and not bool(((probs - 0.05).abs() < 3e-4).any()))


def ssd_head_rescale(model, x):
    """First every head's class-logit biases minus the mean over spatial positions of that
    (anchor, class) logit (each head run on its feature map); then the class-logit rows (weight and bias) of every head grow by 0.05
    steps from 1.0 (in place, times (k+1)/k) until `ssd_detections_ok`. Returns the factor."""
    heads = ssd_heads(model)
    with torch.no_grad():
        end_points = model.get_backbone_features(x)
        for os_, head, (conv, rows) in zip(model.output_strides, model.ssd_heads, heads):
            fm = end_points[f"os_{os_}"]
            # The head's own class-logit output, (1, H*W*anchors, 81): a view with stride 85 into
            # the conv output. The mean over it (not over a contiguous copy, whose reduction sums
            # in another order) is what the committed weights carry, to the last bit.
            _, class_logits = head(fm)
            mean = class_logits.view(1, fm.shape[2] * fm.shape[3], len(rows) // 81, 81).mean(dim=1)
            conv.bias[rows] -= mean.reshape(-1)
        k = 20  # factor k / 20
        while not ssd_detections_ok(model, x):
            if k >= 200:
                raise SystemExit("SSD head rescale: no factor up to 10 gives a clean detection list")
            for conv, rows in heads:
                conv.weight[rows] *= (k + 1) / k
                conv.bias[rows] *= (k + 1) / k
            k += 1
    return k / 20


def case_cvnets_ssd(image_path):
    model, _, tf = cvnets_build("ssd")
    model = randomise(model, SEED_BASE + 5)
    x = cvnets_input(tf, image_path)
    factor = ssd_head_rescale(model, x)
    with torch.no_grad():
        conf, loc, anchors = model.ssd_forward(model.get_backbone_features(x))
        det = model.predict(x)
    norm = det.boxes.numpy().astype(np.float32)
    orig_h, orig_w = Image.open(image_path).size[::-1]
    in_h, in_w = x.shape[2:]
    input_px = norm.copy()
    input_px[..., 0::2] = np.clip(norm[..., 0::2] * in_w, 0, in_w)
    input_px[..., 1::2] = np.clip(norm[..., 1::2] * in_h, 0, in_h)
    # engine/eval_detection.predict_and_save: clip(box * original size, 0, original size)
    orig_px = norm.copy()
    orig_px[..., 0::2] = np.clip(norm[..., 0::2] * orig_w, 0, orig_w)
    orig_px[..., 1::2] = np.clip(norm[..., 1::2] * orig_h, 0, orig_h)
    print(f"  cvnets SSD: class logits x {factor:.2f}, {det.labels.numel()} detections")
    p = f"{FIXTURES}/cvnets_xxs_ssd_"
    return {f"{WEIGHTS}/cvnets_ssd_mobilevit_xxs.pt": model.state_dict(),
            p + "conf_logits.npy": conf, p + "loc.npy": loc, p + "anchors.npy": anchors,
            p + "det_boxes_norm.npy": norm, p + "det_boxes_input_px.npy": input_px.astype(np.float32),
            p + "det_boxes_orig_px.npy": orig_px.astype(np.float32),
            p + "det_labels.npy": det.labels.numpy().astype(np.int32),
            p + "det_scores.npy": det.scores.numpy().astype(np.float32)}


def case_cvnets_seg(image_path):
    model, _, tf = cvnets_build("seg")
    model = randomise(model, SEED_BASE + 6)
    x = cvnets_input(tf, image_path)
    captured = {}
    model.seg_head.classifier.register_forward_hook(lambda m, i, o: captured.__setitem__("logits", o))
    with torch.no_grad():
        centre_and_rescale(model.seg_head.classifier.block.conv, lambda: (model(x), captured["logits"])[1])
        full = model(x)  # upsampled x16 inside the head (bilinear, align_corners=True)
    p = f"{FIXTURES}/cvnets_xxs_seg_"
    return {f"{WEIGHTS}/cvnets_deeplabv3_mobilevit_xxs.pt": model.state_dict(),
            p + "logits_pre_upsample.npy": captured["logits"], p + "logits_patch.npy": full[:, :, 224:288, 224:288],
            p + "mask.npy": full.argmax(dim=1)[0].numpy().astype(np.uint8)}


def sha256(path):
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


def as_array(v):
    if isinstance(v, torch.Tensor):
        v = v.detach().numpy()
    return np.ascontiguousarray(v)


def write_file(root, rel, value):
    path = os.path.join(root, rel)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    if isinstance(value, tuple) and value[0] == "bin-from":
        from safetensors.torch import load_file
        torch.save(dict(load_file(os.path.join(root, value[1]))), path)
    elif rel.endswith(".safetensors"):
        save_file({k: t.contiguous() for k, t in value.items()}, path)
    elif rel.endswith((".pt", ".bin")):
        torch.save(dict(value), path)  # the archive's folder is the file's stem
    else:
        np.save(path, as_array(value))


def make_image(root):
    """image.png: skimage.data.astronaut() saved by Pillow (PNG, default settings); without
    scikit-image the committed file is copied (and reported as not regenerated)."""
    path = os.path.join(root, FIXTURES, "image.png")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    try:
        import skimage.data
    except ImportError:
        shutil.copyfile(os.path.join(ROOT, FIXTURES, "image.png"), path)
        print("  image.png: scikit-image not installed, copied the committed file")
        return False
    Image.fromarray(skimage.data.astronaut()).save(path)
    return True


def generate(root, cvnets, allow):
    """Writes every fixture under root; returns the relative paths written, in order."""
    torch.set_num_threads(1)
    versions = check_versions(allow)
    t0 = time.time()
    with tempfile.TemporaryDirectory() as tmp:
        regenerated_image = make_image(root)
        image_path = os.path.join(root, FIXTURES, "image.png")
        image = Image.open(image_path).convert("RGB")
        written = [f"{FIXTURES}/image.png"]
        case_of = {f"{FIXTURES}/image.png": "image (skimage.data.astronaut())"}
        cases = [("timm", lambda: case_timm(image)), ("hf_cls", lambda: case_hf_cls(image)),
                 ("hf_seg", lambda: case_hf_seg(image))]
        cvnets_path, cvnets_digest = cvnets_source(cvnets, tmp, allow)
        cases += [("cvnets_cls", lambda: case_cvnets_cls(image_path)),
                  ("cvnets_ssd", lambda: case_cvnets_ssd(image_path)),
                  ("cvnets_seg", lambda: case_cvnets_seg(image_path))]
        for name, make in cases:
            t = time.time()
            files = make()
            for rel, value in files.items():
                write_file(root, rel, value)
                written.append(rel)
                case_of[rel] = name
            print(f"  {name}: {len(files)} files ({time.time() - t:.1f} s)")
    print(f"generated {len(written)} files in {time.time() - t0:.1f} s")
    return written, {"versions": versions, "cvnets_tree_sha256": cvnets_digest,
                     "image_regenerated": regenerated_image, "case_of": case_of}


def describe(path):
    """Manifest entry of one file: sha256, bytes, and shape/dtype (arrays) or tensor count (weights)."""
    entry = {"sha256": sha256(path), "bytes": os.path.getsize(path)}
    if path.endswith(".npy"):
        a = np.load(path)
        entry.update(kind="array", shape=list(a.shape), dtype=str(a.dtype))
    elif path.endswith(".png"):
        im = Image.open(path)
        entry.update(kind="image", width=im.width, height=im.height, mode=im.mode)
    else:
        sd = load_weights(path)
        entry.update(kind="weights", format=os.path.splitext(path)[1][1:], n_tensors=len(sd),
                     dtypes=sorted({str(t.dtype) for t in sd.values()}))
    return entry


def load_weights(path):
    if path.endswith(".safetensors"):
        from safetensors.torch import load_file
        return load_file(path)
    return torch.load(path, map_location="cpu", weights_only=True)


def manifest(root, files, info, results=None):
    m = {"generator": "scripts/make_reference.py fixtures (see its docstring and tests/fixtures/README.md)",
         "pinned_versions": dict(PINNED, **PINNED_OPTIONAL),
         "versions_used": info["versions"],
         "ml_cvnets": {"repository": "https://github.com/apple/ml-cvnets", "commit": CVNETS_COMMIT,
                       "tree_sha256": CVNETS_TREE_SHA256, "tree_sha256_used": info["cvnets_tree_sha256"]},
         "threads": 1,
         "cases": CASES,
         "seeds": {"base": SEED_BASE, "timm": SEED_BASE + 1, "hf_cls": SEED_BASE + 2, "hf_seg": SEED_BASE + 3,
                   "cvnets_cls": SEED_BASE + 4, "cvnets_ssd": SEED_BASE + 5, "cvnets_seg": SEED_BASE + 6},
         "tolerances": {"exact": "inputs (*_input.npy), masks, labels, SSD anchors, image.png, weights",
                        "float_outputs": FLOAT_TOL,
                        "boxes_in_pixels": {k: FLOAT_TOL * v for k, v in PIXEL_SCALE.items()},
                        "known": {k: {"tolerance": t, "why": why} for k, (t, why) in KNOWN.items()}},
         "files": {}}
    for rel in files:
        m["files"][rel] = dict(describe(os.path.join(root, rel)), case=info["case_of"][rel])
        if results is not None:
            m["files"][rel]["regenerated"] = results[rel]
    return m


def write_json(path, obj):
    with open(path, "w") as f:
        json.dump(obj, f, indent=1, sort_keys=True)
        f.write("\n")


def compare_array(new, old, rel):
    a, b = np.load(new), np.load(old)
    if a.shape != b.shape or a.dtype != b.dtype:
        return False, f"shape/dtype {a.shape} {a.dtype} != committed {b.shape} {b.dtype}", None
    if open(new, "rb").read() == open(old, "rb").read():
        return True, "identical", 0.0
    diff = float(np.abs(a.astype(np.float64) - b.astype(np.float64)).max())
    if a.dtype.kind != "f" or rel.endswith(EXACT_FLOAT):
        tol = KNOWN.get(rel, (0.0,))[0]
    else:
        tol = KNOWN.get(rel, (FLOAT_TOL * PIXEL_SCALE.get(rel, 1),))[0]
    return diff <= tol, f"max|diff| {diff:.3g} (tolerance {tol:g})", diff


def compare_weights(new, old, rel):
    a, b = load_weights(new), load_weights(old)
    same_bytes = open(new, "rb").read() == open(old, "rb").read()
    ordered = not rel.endswith(".safetensors")  # safetensors files keep no order
    if set(a) != set(b):
        return False, f"tensor names differ: {sorted(set(a) ^ set(b))[:5]}", None
    if ordered and list(a) != list(b):
        return False, "the same tensor names in another order", None
    tol = KNOWN.get(rel, (0.0,))[0]
    allowed = KNOWN_TENSORS.get(rel, None)
    worst, where, n_diff, ok = 0.0, "", 0, True
    for k in b:
        if a[k].shape != b[k].shape or a[k].dtype != b[k].dtype:
            return False, f"{k}: {tuple(a[k].shape)} {a[k].dtype} != committed {tuple(b[k].shape)} {b[k].dtype}", None
        if torch.equal(a[k], b[k]):
            continue
        n_diff += 1
        d = float((a[k].double() - b[k].double()).abs().max())
        if d > worst:
            worst, where = d, k
        if not (allowed and k.startswith(allowed[0]) and k.endswith(allowed[1]) and d <= tol):
            ok = False
    if same_bytes:
        return True, f"identical ({len(b)} tensors)", 0.0
    if n_diff == 0:
        return True, f"{len(b)} tensors equal (names, order, shapes, dtypes, values); file bytes differ", 0.0
    return ok, (f"{len(b)} tensors, {n_diff} differ, max|diff| {worst:.3g} in {where} "
                f"(tolerance {tol:g}{' for ' + '*'.join(allowed) if allowed else ''})"), worst


def check_fixtures(cvnets, allow, write_manifest):
    """Regenerates everything into a temporary folder and compares it with the committed files."""
    t0 = time.time()
    with tempfile.TemporaryDirectory() as tmp:
        written, info = generate(tmp, cvnets, allow)
        committed = sorted([f"{FIXTURES}/{f}" for f in os.listdir(os.path.join(ROOT, FIXTURES))
                            if f.endswith(".npy")] + [f"{FIXTURES}/image.png"]
                           + [f"{WEIGHTS}/{f}" for f in os.listdir(os.path.join(ROOT, WEIGHTS))])
        failed, results, lines = [], {}, []
        for rel in sorted(set(committed) | set(written)):
            new, old = os.path.join(tmp, rel), os.path.join(ROOT, rel)
            if rel not in written:
                ok, text, diff = False, "committed but not generated", None
            elif rel not in committed:
                ok, text, diff = False, "generated but not committed", None
            elif rel.endswith(".npy"):
                ok, text, diff = compare_array(new, old, rel)
            elif rel.endswith(".png"):
                same = open(new, "rb").read() == open(old, "rb").read()
                ok = same
                text = ("identical" if info["image_regenerated"] else "copied (scikit-image not installed)") \
                    if same else "differs"
                diff = 0.0 if same else None
            else:
                ok, text, diff = compare_weights(new, old, rel)
            if rel in KNOWN and ok and text != "identical":
                text += " [known, see KNOWN]"
            results[rel] = text if diff is None or text.startswith("identical") else {"result": text, "max_abs_diff": diff}
            lines.append(f"  {'ok  ' if ok else 'FAIL'} {rel}: {text}")
            if not ok:
                failed.append(rel)
        print("\n".join(lines))
        man_path = os.path.join(ROOT, MANIFEST)
        if os.path.exists(man_path) and not write_manifest:
            pinned = json.load(open(man_path))["files"]
            stale = [rel for rel in committed if rel not in pinned or pinned[rel]["sha256"] != sha256(os.path.join(ROOT, rel))]
            print(f"  {'ok  ' if not stale else 'FAIL'} {MANIFEST}: "
                  + ("every committed file has its sha256" if not stale else f"stale for {stale}"))
            failed += stale
        if write_manifest:
            write_json(man_path, manifest(ROOT, [r for r in written if r in committed], info, results))
            print(f"wrote {MANIFEST}")
        identical = sum(1 for r in results.values() if isinstance(r, str) and r.startswith("identical"))
        print(f"{'FAIL' if failed else 'PASS'}: {len(results)} files, {identical} identical, "
              f"{len(results) - identical - len(failed)} within tolerance, {len(failed)} failed "
              f"({time.time() - t0:.0f} s)")
        return 1 if failed else 0


def fixtures_main(argv):
    ap = argparse.ArgumentParser(prog="make_reference.py fixtures",
                                 description="Regenerate (--out) or check (--check) the committed fixtures.")
    ap.add_argument("--out", help="write the fixture set under this folder (tests/fixtures/..., weights/reference/...)")
    ap.add_argument("--check", action="store_true", help="regenerate into a temporary folder and compare")
    ap.add_argument("--write-manifest", action="store_true", help=f"with --check: rewrite {MANIFEST}")
    ap.add_argument("--cvnets", help="ml-cvnets source tree or git repository (default: $CVNETS_SRC)")
    ap.add_argument("--allow-version-mismatch", action="store_true",
                    help="run with other library versions or another ml-cvnets tree (warns)")
    a = ap.parse_args(argv)
    if a.check == bool(a.out):
        ap.error("give exactly one of --out DIR and --check")
    if a.check:
        sys.exit(check_fixtures(a.cvnets, a.allow_version_mismatch, a.write_manifest))
    out = os.path.abspath(a.out)
    written, info = generate(out, a.cvnets, a.allow_version_mismatch)
    write_json(os.path.join(out, MANIFEST), manifest(out, written, info))
    print(f"wrote {os.path.join(out, MANIFEST)}")


def sweep_main(argv):
    ap = argparse.ArgumentParser(prog="make_reference.py sweep")
    ap.add_argument("--image", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--sizes", default="xxs,xs,s")
    ap.add_argument("--check", action="store_true", help="run vpipe infer and compare")
    ap.add_argument("--vpipe", default="target/release/vpipe")
    a = ap.parse_args(argv)
    check_versions(allow=True)  # warns on a mismatch
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


def main():
    cmd, argv = (sys.argv[1], sys.argv[2:]) if len(sys.argv) > 1 else (None, [])
    if cmd == "fixtures":
        fixtures_main(argv)
    elif cmd == "preprocess":
        # python3 scripts/make_reference.py preprocess [--check]
        check_versions(allow=True)  # warns on a mismatch
        if "--check" in argv:
            check_preprocess_references()
        else:
            preprocess_references(PREPROCESS_DIR)
    elif cmd == "seg-os8":
        # python3 scripts/make_reference.py seg-os8 WEIGHTS CONFIG_JSON PIXEL_VALUES.npy OUT.npy
        if len(argv) != 4:
            raise SystemExit("usage: make_reference.py seg-os8 WEIGHTS CONFIG_JSON PIXEL_VALUES.npy OUT.npy")
        seg_output_stride_8(*argv)
    elif cmd == "sweep":
        sweep_main(argv)
    elif cmd is not None and cmd.startswith("--") and cmd not in ("--help", "-h"):
        sweep_main(sys.argv[1:])  # the old spelling: make_reference.py --image IMG --out DIR [--check]
    else:
        print(__doc__)
        sys.exit(0 if cmd in ("--help", "-h") else 2)


if __name__ == "__main__":
    main()
