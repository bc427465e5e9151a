#!/usr/bin/env python3
"""Training-step references for vpipe-train: one AdamW step of each built-in head on a frozen
MobileViT-XXS backbone, in PyTorch, from the committed fixture checkpoints.

Usage
-----
    /tmp/refenv/bin/python scripts/make_train_reference.py --cvnets /work/.mirror/apple+ml-cvnets/repo \\
        [--out tests/fixtures/train]

Writes into OUT (default: crates/vpipe-train/tests/fixtures, what the tests read):
    {task}_features.npy   the frozen backbone's features the head reads ((2, C, H, W) float32;
                          SSD: {task}_features_l4.npy and _l5.npy), so that Rust starts from them
    {task}.json           the targets, the hyper-parameters, the loss (float64) and the learning rate
    {task}_delta.safetensors  per trainable head tensor (canonical name): updated - initial, as
                          float16 (the update is ~lr, so float16 keeps it to ~2e-7 absolute)
    schedule.json         learning rates of the warm-up + cosine schedule at chosen iterations
for task in cls, ssd, seg.

Versions: the ones scripts/make_reference.py pins (python 3.11, torch 2.15.0, numpy 2.4.6, pillow
13.0.0, safetensors 0.8.0); the models come from ml-cvnets 77717569ab4a (the commit the committed
checkpoints were written with, imported through make_reference.cvnets_source/cvnets_build), the
losses, the matcher and the schedule from ml-cvnets tag cvnets-v0.1 (the release the MobileViT v1
weights were trained with): the helper functions of cvnets/misc/third_party/ssd_utils.py and
cvnets/misc/box_utils.py are imported from that tag (extracted with `git show`); the loss classes
(SSDLoss.forward, LabelSmoothing._compute_loss, SegCrossEntropy._compute_loss) and
CosineScheduler.get_lr are restated below line for line, because both releases share their package
names and cannot be imported side by side. torch.optim.AdamW is the optimiser ml-cvnets v0.1
wraps (optim/adamw.py; eps 1e-8 from optim/base_optim.py).

Recipe
------
torch.set_num_threads(1), float32. Input: tests/fixtures/image.png (RGB) resized to 128x128
(PIL bilinear) / 255, and its horizontal flip: a batch of 2. The backbone (everything but the head)
runs in eval mode under no_grad; the head is in train mode with every BatchNorm back in eval mode
(running statistics frozen and used, as vpipe does) and every dropout at p = 0. Loss, backward,
one torch.optim.AdamW step (betas 0.9/0.999, eps 1e-6 (see ADAMW), weight decay 0.01 on every head parameter,
as the v0.1 configs' no_decay_bn_filter_bias: false) at the learning rate of iteration 3 of a
schedule with 10 warm-up iterations from 1e-4 to max 1e-3 (min 1e-5, period 100).
Targets: classification labels [3, 417], smoothing 0.1; SSD boxes (fractions, x1 y1 x2 y2) listed
in SSD_BOXES (the flipped image gets them mirrored), matched to the model's anchors with the v0.1
matcher (IoU 0.5, variances 0.1/0.2), neg_pos_ratio 3; segmentation: the mask of `seg_mask`
(classes 0, 8, 15 and 255 = ignore) at the input size.
"""
import argparse, importlib.util, json, os, subprocess, sys, tempfile

import numpy as np
import torch
from PIL import Image
from safetensors.torch import save_file

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.normpath(os.path.join(HERE, ".."))
sys.path.insert(0, HERE)
import make_reference as mr  # noqa: E402

SIZE = 128
SCHEDULE = {"warmup_iterations": 10, "warmup_init_lr": 1e-4, "max_lr": 1e-3, "min_lr": 1e-5,
            "period": 100}
STEP_ITER = 3
# eps 1e-6 rather than ml-cvnets' 1e-8: on a first step the update is lr * g / (|g| + eps), which
# for gradients near 1e-8 turns float32 noise in g into differences of a sizeable part of lr
# (one DeepLab weight with |g| ~ 1e-9 moved by 6e-5 with eps 1e-8); with 1e-6 the comparison is
# well-posed and still tests the same formula.
ADAMW = {"beta1": 0.9, "beta2": 0.999, "eps": 1e-6, "weight_decay": 0.01}
CLS_LABELS = [3, 417]
SSD_BOXES = [([0.10, 0.15, 0.60, 0.70], 1), ([0.50, 0.20, 0.90, 0.50], 17), ([0.05, 0.60, 0.30, 0.95], 3)]
SSD = {"iou_threshold": 0.5, "center_variance": 0.1, "size_variance": 0.2, "neg_pos_ratio": 3}
SMOOTHING = 0.1
IGNORE = 255
WEIGHTS = {"cls": "cvnets_mobilevit_xxs.pt", "ssd": "cvnets_ssd_mobilevit_xxs.pt",
           "seg": "cvnets_deeplabv3_mobilevit_xxs.pt"}
HEAD_PREFIXES = {"cls": ("conv_1x1_exp.", "classifier."), "ssd": ("extra_layers.", "ssd_heads."),
                 "seg": ("seg_head.",)}


def v01_module(repo, rel, name, tmp):
    """A self-contained module of ml-cvnets tag cvnets-v0.1, imported from the mirror."""
    src = subprocess.run(["git", "-C", repo, "show", f"cvnets-v0.1:{rel}"], check=True,
                         capture_output=True).stdout
    path = os.path.join(tmp, name + ".py")
    open(path, "wb").write(src)
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def cosine_lr(it, s=SCHEDULE):
    """CosineScheduler.get_lr of cvnets-v0.1 (optim/scheduler/cosine.py), iteration-based."""
    if it < s["warmup_iterations"]:
        step = (s["max_lr"] - s["warmup_init_lr"]) / s["warmup_iterations"]
        lr = s["warmup_init_lr"] + it * step
    else:
        it = it - s["warmup_iterations"]
        lr = s["min_lr"] + 0.5 * (s["max_lr"] - s["min_lr"]) * (1 + np.cos(np.pi * it / s["period"]))
    return max(0.0, float(lr))


def ssd_loss(confidence, predicted_locations, gt_labels, gt_locations, ssd_utils):
    """SSDLoss.forward of cvnets-v0.1 (loss_fn/detection_loss_fns/ssd_multibox_loss.py) in
    training with max_monitor_iter = -1 (wt_loc stays 1.0)."""
    num_classes = confidence.shape[-1]
    num_coordinates = predicted_locations.shape[-1]
    with torch.no_grad():
        loss = -torch.nn.functional.log_softmax(confidence, dim=2)[:, :, 0]
        mask = ssd_utils.hard_negative_mining(loss, gt_labels, SSD["neg_pos_ratio"])
    confidence = confidence[mask, :]
    classification_loss = torch.nn.functional.cross_entropy(
        input=confidence.reshape(-1, num_classes), target=gt_labels[mask], reduction="sum")
    pos_mask = gt_labels > 0
    predicted_locations = predicted_locations[pos_mask, :].view(-1, num_coordinates)
    gt_locations = gt_locations[pos_mask, :].view(-1, num_coordinates)
    smooth_l1_loss = torch.nn.functional.smooth_l1_loss(predicted_locations, gt_locations, reduction="sum")
    num_pos = gt_locations.shape[0]
    smooth_l1_loss = smooth_l1_loss * 1.0
    return (smooth_l1_loss + classification_loss) / num_pos


def match_boxes(anchors, images, ssd_utils, box_utils):
    """(labels (B, A), locations (B, A, 4)) of each image's boxes ({"boxes": fractions x1 y1 x2 y2,
    "labels"}) matched to the anchors (A, 4) as SSDMatcher.__call__ of cvnets-v0.1
    (cvnets/misc/match_prior.py)."""
    labels, regress = [], []
    priors_cor = box_utils.center_form_to_corner_form(boxes=anchors)
    for im in images:
        gt = torch.tensor(im["boxes"], dtype=torch.float32)
        matched_cor, matched_labels = ssd_utils.assign_priors(
            gt, torch.tensor(im["labels"]), priors_cor, SSD["iou_threshold"])
        regress.append(box_utils.convert_boxes_to_locations(
            gt_boxes=box_utils.corner_form_to_center_form(matched_cor), prior_boxes=anchors,
            center_variance=SSD["center_variance"], size_variance=SSD["size_variance"]))
        labels.append(matched_labels)
    return torch.stack(labels), torch.stack(regress)


def label_smoothing_loss(prediction, target):
    """LabelSmoothing.forward of cvnets-v0.1 in training (ignore_idx -1: no padding), reduction mean."""
    batch_size, num_classes = prediction.size()
    log_probs = torch.nn.functional.log_softmax(prediction, dim=-1).view(-1, num_classes)
    target = target.view(-1, 1)
    nll_loss = (-log_probs.gather(dim=-1, index=target)).squeeze(-1).sum()
    smooth_loss = (-log_probs.sum(dim=-1, keepdim=True)).squeeze(-1).sum()
    eps_i = SMOOTHING / log_probs.size(-1)
    loss = (1.0 - SMOOTHING) * nll_loss + eps_i * smooth_loss
    return loss / batch_size


def seg_loss(pred_mask, target_mask):
    """SegCrossEntropy._compute_loss of cvnets-v0.1 (no class weights, no aux head)."""
    _, _, x_h, x_w = pred_mask.shape
    _, y_h, y_w = target_mask.shape
    if x_h != y_h or x_w != y_w:
        pred_mask = torch.nn.functional.interpolate(pred_mask, size=(y_h, y_w), mode="nearest")
    return torch.nn.functional.cross_entropy(input=pred_mask, target=target_mask, ignore_index=IGNORE)


def seg_mask():
    """(2, SIZE, SIZE) int64: background, a class-15 rectangle, a class-8 disc, an ignored band;
    the second image is the mirror of the first (as its input is)."""
    m = np.zeros((SIZE, SIZE), np.int64)
    m[20:90, 30:80] = 15
    yy, xx = np.mgrid[:SIZE, :SIZE]
    m[(yy - 95) ** 2 + (xx - 95) ** 2 < 18 ** 2] = 8
    m[:, 60:64] = IGNORE
    m[0:3, :] = IGNORE
    return np.stack([m, m[:, ::-1]])


def prepare_head(model, task):
    """Backbone frozen (eval, no grad); head in train mode with BN in eval mode, dropout p = 0."""
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    named = []
    for name, p in model.named_parameters():
        if name.startswith(HEAD_PREFIXES[task]):
            p.requires_grad_(True)
            named.append((name, p))
    for name, m in model.named_modules():
        if name.startswith(HEAD_PREFIXES[task]) or (name + ".").startswith(HEAD_PREFIXES[task]):
            m.train()
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                m.eval()
        if isinstance(m, torch.nn.modules.dropout._DropoutNd):
            m.p = 0.0
    return named


def batch():
    img = Image.open(os.path.join(ROOT, "tests/fixtures/image.png")).convert("RGB")
    img = img.resize((SIZE, SIZE), Image.BILINEAR)
    x = torch.from_numpy(np.asarray(img, dtype=np.float32) / 255.0).permute(2, 0, 1)
    return torch.stack([x, x.flip(-1)])


def run_case(task, repo, tmp, out):
    model, _, _ = mr.cvnets_build(task)
    state = torch.load(os.path.join(ROOT, "weights/reference", WEIGHTS[task]), map_location="cpu")
    model.load_state_dict(state)
    named = prepare_head(model, task)
    x = batch()
    with torch.no_grad():
        encoder = model if task == "cls" else model.encoder  # a classifier is its own encoder
        ends = encoder.extract_end_points_all(x)
    l4, l5 = ends["out_l4"].detach(), ends["out_l5"].detach()
    info = {"task": task, "input_size": [SIZE, SIZE], "schedule": SCHEDULE, "iteration": STEP_ITER,
            "adamw": ADAMW}
    if task == "cls":
        logits = model.classifier(model.conv_1x1_exp(l5))
        target = torch.tensor(CLS_LABELS)
        loss = label_smoothing_loss(logits, target)
        info.update(labels=CLS_LABELS, smoothing=SMOOTHING)
        np.save(os.path.join(out, "cls_features.npy"), l5.numpy())
    elif task == "ssd":
        ssd_utils = v01_module(repo, "cvnets/misc/third_party/ssd_utils.py", "v01_ssd_utils", tmp)
        box_utils = v01_module(repo, "cvnets/misc/box_utils.py", "v01_box_utils", tmp)
        model.encoder.extract_end_points_all = lambda _x, *a, **k: {"out_l4": l4, "out_l5": l5}
        conf, loc, anchors = model.ssd_forward(model.get_backbone_features(x))
        anchors = anchors.reshape(-1, 4)  # (1, A, 4) in this release
        per_image = []
        for flip in (False, True):
            boxes = [[1 - b[2], b[1], 1 - b[0], b[3]] if flip else b for b, _ in SSD_BOXES]
            per_image.append({"boxes": boxes, "labels": [c for _, c in SSD_BOXES]})
        gt_labels, gt_loc = match_boxes(anchors, per_image, ssd_utils, box_utils)
        loss = ssd_loss(conf, loc, gt_labels, gt_loc, ssd_utils)
        info.update(images=per_image, ssd=SSD, num_anchors=int(anchors.shape[0]),
                    positives=int((gt_labels > 0).sum()), matched_labels=gt_labels.tolist())
        np.save(os.path.join(out, "ssd_anchors.npy"), anchors.numpy().astype(np.float32))
        np.save(os.path.join(out, "ssd_features_l4.npy"), l4.numpy())
        np.save(os.path.join(out, "ssd_features_l5.npy"), l5.numpy())
    else:
        logits = model.seg_head(enc_out={"out_l5": l5})
        mask = seg_mask()
        loss = seg_loss(logits, torch.from_numpy(mask.copy()))
        info.update(ignore_index=IGNORE)
        np.save(os.path.join(out, "seg_features.npy"), l5.numpy())
        np.save(os.path.join(out, "seg_mask.npy"), mask.astype(np.uint8))
    before = {n: p.detach().clone() for n, p in named}
    lr = cosine_lr(STEP_ITER)
    opt = torch.optim.AdamW([p for _, p in named], lr=lr, betas=(ADAMW["beta1"], ADAMW["beta2"]),
                            eps=ADAMW["eps"], weight_decay=ADAMW["weight_decay"])
    opt.zero_grad()
    loss.backward()
    opt.step()
    delta = {n: (p.detach().double() - before[n].double()).to(torch.float16).contiguous() for n, p in named}
    save_file(delta, os.path.join(out, f"{task}_delta.safetensors"))
    info.update(loss=float(loss.item()), lr=lr, parameters=[n for n, _ in named])
    with open(os.path.join(out, f"{task}.json"), "w") as f:
        json.dump(info, f, separators=(",", ":"))
    print(f"{task}: loss {loss.item():.6f}, lr {lr}, {len(named)} tensors, "
          f"{sum(p.numel() for _, p in named)} values")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cvnets", required=True, help="ml-cvnets git mirror (needs tag cvnets-v0.1 and "
                    "commit " + mr.CVNETS_COMMIT[:12] + ")")
    ap.add_argument("--out", default=os.path.join(ROOT, "crates/vpipe-train/tests/fixtures"))
    ap.add_argument("--allow-version-mismatch", action="store_true")
    a = ap.parse_args()
    torch.set_num_threads(1)
    mr.check_versions(a.allow_version_mismatch)
    os.makedirs(a.out, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        mr.cvnets_source(a.cvnets, tmp, a.allow_version_mismatch)
        for task in ("cls", "ssd", "seg"):
            run_case(task, a.cvnets, tmp, a.out)
    its = [0, 1, 3, 9, 10, 11, 50, 109, 110, 200]
    with open(os.path.join(a.out, "schedule.json"), "w") as f:
        json.dump({"schedule": SCHEDULE, "iterations": its, "lr": [cosine_lr(i) for i in its]}, f, indent=1)


if __name__ == "__main__":
    main()
