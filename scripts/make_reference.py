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


def main():
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
