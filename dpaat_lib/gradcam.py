"""Grad-CAM maps of a trained model and how faithful they are (method.md section 8).

The paper shows Grad-CAM (pytorch-grad-cam) on the last convolutional block of
each CNN for correctly predicted test images and judges it by eye. This module
also measures the maps:

- ``energy_in_mask``: the share of CAM energy inside the lesion, where the
  lesion masks are known (the synthetic data);
- ``deletion_insertion``: the class probability as the most relevant pixels
  are removed (deletion, lower area = more faithful) or restored (insertion,
  higher area = more faithful);
- ``road_scores``: pytorch-grad-cam's ROAD score (Rong et al. 2022), which
  fills removed pixels by noisy linear imputation instead of a blur.

``cam_result`` computes all of it once per run and image selection and keeps
it beside the run's results (``gradcam-<hash>.npz``), with small thumbnails of
the images, so the book draws its figures without the data or the checkpoint.
"""
from __future__ import annotations

import hashlib
import math
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from pytorch_grad_cam import GradCAM
from pytorch_grad_cam.metrics.road import ROADCombined
from pytorch_grad_cam.utils.image import show_cam_on_image
from pytorch_grad_cam.utils.model_targets import ClassifierOutputSoftmaxTarget, ClassifierOutputTarget
from torchvision.transforms.functional import gaussian_blur

from . import data as D
from . import experiment, store
from .config import RunConfig
from .models import gradcam_target_layer
from .training import load_trained, to_float


def _as_float(x: torch.Tensor) -> torch.Tensor:
    """Images in [0, 1]: uint8 tensors are scaled, float tensors passed through."""
    return to_float(x) if x.dtype == torch.uint8 else x


def _device(model) -> torch.device:
    return next(model.parameters()).device


def cams(model, model_name: str, x: torch.Tensor, targets: torch.Tensor, *, batch_size: int = 64) -> np.ndarray:
    """Grad-CAM maps (N, H, W) float32 in [0, 1] at the input resolution.

    ``x``: images (N, 3, H, W) in [0, 1] (or uint8); ``targets``: the class
    each map explains (usually the true label). The target layer is the last
    convolutional block (:func:`dpaat_lib.models.gradcam_target_layer`). Maps
    are taken in eval mode; the model's mode is restored, its parameter
    gradients cleared and the hooks removed afterwards. Each map is scaled to
    [0, 1] on its own (pytorch-grad-cam's convention), so maps compare in
    shape, not in magnitude. A map needs a target-layer feature map larger
    than 1x1 (e.g. 64 px for resnet34, mobilenet_v2; more for inception_v3);
    otherwise it is zero and a warning says so.
    """
    layer = gradcam_target_layer(model, model_name)
    targets = torch.as_tensor(targets).view(-1).tolist()
    if len(targets) != x.shape[0]:
        raise ValueError(f"got {x.shape[0]} images but {len(targets)} targets")
    was, device = model.training, _device(model)
    out = []
    try:
        with GradCAM(model=model, target_layers=[layer]) as cam:
            for i in range(0, x.shape[0], batch_size):
                xb = _as_float(x[i:i + batch_size].to(device))
                try:
                    out.append(cam(xb, [ClassifierOutputTarget(int(t)) for t in targets[i:i + batch_size]]))
                except IndexError as err:
                    # GradCAM.__exit__ swallows IndexError; re-raise as what it is
                    raise ValueError(f"a target class is out of range for the model's output: {err}") from err
    finally:
        model.zero_grad(set_to_none=True)
        model.train(was)
    if not out:
        return np.zeros((0, *x.shape[-2:]), np.float32)
    maps = np.concatenate(out).astype(np.float32)
    if not maps.any():
        warnings.warn(f"every Grad-CAM map of {model_name} is zero: at {tuple(x.shape[-2:])} px its target "
                      "layer's feature map is probably 1x1, which has no spatial detail; use larger images",
                      stacklevel=2)
    return maps


def energy_in_mask(cam: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Per image, ``sum(cam * mask) / sum(cam)``: the share of CAM energy inside the lesion.

    ``cam`` and ``mask`` are (N, H, W) (or (H, W)); 1 means the map lies wholly
    on the lesion, the lesion's area fraction is what a uniform map scores. A
    map that is zero everywhere gives NaN.
    """
    cam = np.asarray(cam, dtype=np.float64)
    mask = np.asarray(mask, dtype=np.float64)
    total = cam.sum(axis=(-2, -1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return ((cam * mask).sum(axis=(-2, -1)) / total).astype(np.float32)


def _baseline(x: torch.Tensor, kind: str) -> torch.Tensor:
    """What a removed pixel becomes: a strong Gaussian blur of the image
    (sigma = side / 16) or the image's per-channel mean."""
    if kind == "mean":
        return x.mean(dim=(2, 3), keepdim=True).expand_as(x)
    if kind == "blur":
        sigma = max(x.shape[-1], x.shape[-2]) / 16
        k = min(2 * math.ceil(2 * sigma) + 1, 2 * (min(x.shape[-2:]) // 2) - 1)
        return gaussian_blur(x, [k, k], [sigma, sigma])
    raise ValueError(f"baseline must be 'blur' or 'mean', got {kind!r}")


def _ranks(cam: np.ndarray, seed: int) -> torch.Tensor:
    """Rank of every pixel by relevance (0 = most relevant), (N, H*W); ties are
    broken at random (seeded) rather than in raster order."""
    n, h, w = cam.shape
    rng = np.random.default_rng(seed)
    ranks = np.empty((n, h * w), dtype=np.int64)
    for i in range(n):
        order = np.lexsort((rng.random(h * w), -cam[i].reshape(-1)))
        ranks[i, order] = np.arange(h * w)
    return torch.from_numpy(ranks)


def _auc(fractions: np.ndarray, curves: np.ndarray) -> np.ndarray:
    """Trapezoid area under each row of ``curves`` over ``fractions``."""
    return ((curves[:, 1:] + curves[:, :-1]) / 2 * np.diff(fractions)).sum(axis=1)


@torch.no_grad()
def deletion_insertion(model, x: torch.Tensor, targets: torch.Tensor, cam: np.ndarray, steps: int = 10, *,
                       baseline: str = "blur", batch_size: int = 64, seed: int = 0) -> dict:
    """Deletion and insertion curves of the maps ``cam`` (N, H, W) for images ``x`` (N, 3, H, W).

    The pixels are ranked by ``cam``; at fraction k/steps (k = 0..steps) the
    top-ranked pixels are replaced by the ``baseline`` image (deletion) or are
    the only ones kept from the original over the baseline (insertion), and the
    softmax probability of ``targets`` is recorded (RISE, Petsiuk et al. 2018).
    A faithful map makes the probability fall fast (low ``deletion_auc``) and
    rise fast (high ``insertion_auc``). Areas are over fractions in [0, 1].

    Returns ``{"fractions", "deletion_auc" (N,), "insertion_auc" (N,),
    "deletion_curve" (steps+1,), "insertion_curve" (steps+1,)}``; the curves
    are means over the images. The model's mode is restored.
    """
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    device, was = _device(model), model.training
    model.eval()
    cam = np.asarray(cam, dtype=np.float32)
    n, _, h, w = x.shape
    if cam.shape != (n, h, w):
        raise ValueError(f"cam has shape {cam.shape}, expected {(n, h, w)} to match the images")
    targets = torch.as_tensor(targets).view(-1)
    fractions = np.linspace(0.0, 1.0, steps + 1)
    counts = [round(f * h * w) for f in fractions]
    ranks = _ranks(cam, seed)
    dele = np.zeros((n, steps + 1), np.float32)
    ins = np.zeros((n, steps + 1), np.float32)
    try:
        for i in range(0, n, batch_size):
            xb = _as_float(x[i:i + batch_size].to(device))
            yb = targets[i:i + batch_size].to(device)
            base = _baseline(xb, baseline)
            rb = ranks[i:i + batch_size].to(device).view(-1, 1, h, w)
            for k, c in enumerate(counts):
                top = rb < c  # the c most relevant pixels
                batch = torch.cat([torch.where(top, base, xb), torch.where(top, xb, base)])
                p = F.softmax(model(batch).float(), dim=1)
                p = p.gather(1, torch.cat([yb, yb]).view(-1, 1)).view(-1).cpu().numpy()
                m = xb.shape[0]
                dele[i:i + m, k], ins[i:i + m, k] = p[:m], p[m:]
    finally:
        model.train(was)
    return {"fractions": fractions.tolist(), "deletion_auc": _auc(fractions, dele).astype(np.float32),
            "insertion_auc": _auc(fractions, ins).astype(np.float32),
            "deletion_curve": dele.mean(axis=0), "insertion_curve": ins.mean(axis=0)}


def road_scores(model, x: torch.Tensor, targets: torch.Tensor, cam: np.ndarray,
                percentiles: Sequence[int] = (10, 20, 30, 40, 50, 60, 70, 80, 90), *,
                batch_size: int = 64, seed: int = 0) -> np.ndarray:
    """Per-image ROADCombined score (pytorch_grad_cam.metrics.road; Rong et al. 2022).

    For each percentile p, the pixels above the map's p-th percentile (MoRF) or
    below its (100 - p)-th (LeRF) are filled by noisy linear imputation; the score is
    ``(LeRF change - MoRF change) / 2`` of the target's softmax probability,
    averaged over ``percentiles``. Higher = more faithful map. Only the order
    of the map's values matters (ties broken at random). The imputation noise
    is seeded (the global random state is left alone); the model's mode is
    restored.
    """
    device, was = _device(model), model.training
    model.eval()
    metric = ROADCombined(percentiles=list(percentiles))
    # ROAD thresholds the map at percentiles; Grad-CAM maps are often zero over
    # large areas, and ties would make a threshold remove all pixels or none
    # (and leave the imputation without known pixels). Ranks, ties broken at
    # random, keep the order and make every percentile exact.
    cam = np.asarray(cam, dtype=np.float32)
    n, h, w = cam.shape
    cam = (1.0 - _ranks(cam, seed).numpy().reshape(n, h, w) / (h * w)).astype(np.float32)
    targets = torch.as_tensor(targets).view(-1).tolist()
    out = []
    try:
        with torch.random.fork_rng(devices=[]), warnings.catch_warnings():
            # pytorch-grad-cam 1.5.7 calls np.float32 on a torch tensor (a NumPy 2 deprecation)
            warnings.filterwarnings("ignore", message="__array_wrap__", category=DeprecationWarning)
            torch.manual_seed(seed)
            for i in range(0, x.shape[0], batch_size):
                xb = _as_float(x[i:i + batch_size].to(device))
                tb = [ClassifierOutputSoftmaxTarget(int(t)) for t in targets[i:i + batch_size]]
                out.append(np.asarray(metric(xb, cam[i:i + batch_size], tb, model), np.float32).reshape(-1))
    finally:
        model.train(was)
    return np.concatenate(out) if out else np.zeros(0, np.float32)


def select_correct(pred_frame: pd.DataFrame | Sequence[pd.DataFrame], n_per_class: int, classes: Sequence[str],
                   attack: str = "clean", seed: int = 0) -> list[str]:
    """image_ids of ``n_per_class`` correctly predicted test images per class, deterministic in ``seed``.

    ``pred_frame`` is a run's ``RunResult.predictions`` (columns image_id,
    label, pred_<attack>, ...), or a list of them: then an image must be right
    in every one (e.g. the STD, AT and DPAAT runs of one CNN, so a figure shows
    the same images for each). Ids are ordered by class, then image_id. A class
    with fewer correct images gives what it has, with a warning.
    """
    frames = [pred_frame] if isinstance(pred_frame, pd.DataFrame) else list(pred_frame)
    col = f"pred_{attack}"
    correct = None
    for f in frames:
        if col not in f.columns:
            raise ValueError(f"predictions have no column {col!r}; attacks present: "
                             f"{[c[5:] for c in f.columns if c.startswith('pred_')]}")
        ok = set(f.loc[f[col] == f["label"], "image_id"])
        correct = ok if correct is None else correct & ok
    labels = frames[0].set_index("image_id")["label"]
    rng = np.random.default_rng(seed)
    chosen = []
    for k, name in enumerate(classes):
        pool = sorted(i for i in correct if labels[i] == k)
        if len(pool) < n_per_class:
            warnings.warn(f"class {name!r}: only {len(pool)} correctly predicted images, "
                          f"{n_per_class} asked for", stacklevel=2)
        take = rng.choice(len(pool), size=min(n_per_class, len(pool)), replace=False)
        chosen += sorted(pool[j] for j in take)
    return chosen


DISPLAY_PX = 96  # stored thumbnails and maps: enough for a figure, small enough to commit at 224 px


def _display(images: torch.Tensor, cam: torch.Tensor, masks: torch.Tensor | None) -> dict:
    """uint8 thumbnails (N,h,w,3), float16 maps (N,h,w) and bool masks, area-downsampled so the longer
    side is at most DISPLAY_PX (unchanged when already that small)."""
    h, w = images.shape[-2:]
    if max(h, w) > DISPLAY_PX:
        size = (max(1, round(h * DISPLAY_PX / max(h, w))), max(1, round(w * DISPLAY_PX / max(h, w))))
        images = F.interpolate(images.float(), size=size, mode="area").round().clamp(0, 255).to(torch.uint8)
        cam = F.interpolate(cam[:, None].float(), size=size, mode="area")[:, 0]
        if masks is not None:
            masks = F.interpolate(masks[:, None].float(), size=size, mode="nearest")[:, 0] > 0.5
    out = {"images": images.permute(0, 2, 3, 1).numpy(), "cams": cam.numpy().astype(np.float16)}
    if masks is not None:
        out["masks"] = masks.numpy()
    return out


def cam_file(run_dir: Path, image_ids: Sequence[str]) -> Path:
    """``<run>/gradcam-<sha8 of the ids>.npz``: one file per image selection (order matters)."""
    key = hashlib.sha256("\n".join(image_ids).encode()).hexdigest()[:8]
    return Path(run_dir) / f"gradcam-{key}.npz"


def _load(path: Path) -> dict:
    with np.load(path) as z:
        d = {k: z[k] for k in z.files}
    out = {"image_ids": [str(i) for i in d["image_ids"]], "images": d["images"],
           "cams": d["cams"].astype(np.float32), "labels": d["labels"].astype(np.int64),
           "masks": d.get("masks"), "energy_in_mask": d.get("energy_in_mask"),
           "fractions": d["fractions"].tolist()}
    for k in ("deletion_auc", "insertion_auc", "deletion_curve", "insertion_curve", "road"):
        out[k] = d[k]
    return out


def cam_result(config: RunConfig, *, results, image_ids: Sequence[str], data_root=None, device="cpu",
               cache_dir: Path | None = None) -> dict:
    """Load or compute the Grad-CAM maps of a run for the test images ``image_ids``.

    Stored as ``<results>/<run_id>/gradcam-<hash>.npz`` (:func:`cam_file`,
    atomic write) with the ids, uint8 thumbnails at the run's image size and,
    where the data has lesion masks, the masks, so later calls need neither
    the data nor the checkpoint; above ``DISPLAY_PX`` a side the stored thumbnails, maps and masks are
    downsampled (the scores are computed at full size). Computing needs the run's checkpoint
    (``ckpt/best.pt``) and its data.

    Returns ``{"image_ids", "images" (N,H,W,3 uint8), "cams" (N,H,W float32),
    "labels", "masks" (N,H,W bool or None), "energy_in_mask" (N, or None
    without masks), "deletion_auc", "insertion_auc", "fractions",
    "deletion_curve", "insertion_curve", "road"}``; maps explain the true label.
    """
    image_ids = [str(i) for i in image_ids]
    run_dir = store.RunDir(results, config.run_id)
    path = cam_file(run_dir.path, image_ids)
    if path.exists():
        return _load(path)
    ckpt = run_dir.ckpt / "best.pt"
    if not ckpt.exists():
        if not run_dir.done:
            raise FileNotFoundError(f"run {config.run_id} is not in {results}: train it first with "
                                    "dpaat_lib.experiment.run(config, results=...), then call cam_result")
        raise FileNotFoundError(
            f"the Grad-CAM maps of run {config.run_id} for these {len(image_ids)} images are not stored "
            f"({path.name}) and computing them needs the checkpoint {ckpt}, which is missing (checkpoints "
            f"are not committed with the results). Re-run training: remove the run folder {run_dir.path} "
            "and call experiment.run again, or pass a results store that holds the checkpoints.")
    _, tensors = experiment.load_data(config.data, data_root, cache_dir)
    test = tensors["test"]
    where = {i: k for k, i in enumerate(test.image_ids)}
    missing = [i for i in image_ids if i not in where]
    if missing:
        raise ValueError(f"{len(missing)} image_id(s) are not in run {config.run_id}'s test set "
                         f"(first: {missing[:5]}); pick them with select_correct(result.predictions, ...)")
    idx = torch.tensor([where[i] for i in image_ids], dtype=torch.long)
    x, y = to_float(test.x[idx]), test.y[idx]
    model = load_trained(config, run_dir, device)
    cam = cams(model, config.model, x, y)
    di = deletion_insertion(model, x, y, cam)
    arrays = {"image_ids": np.array(image_ids), "labels": y.numpy(),
              "road": road_scores(model, x, y, cam), **{k: np.asarray(v) for k, v in di.items()}}
    root = experiment.data_root_for(config.data.source, data_root, cache_dir or experiment.default_cache_dir())
    masks = D.load_masks(root, image_ids, config.data.image_size) if root is not None else None
    if masks is not None:
        arrays["energy_in_mask"] = energy_in_mask(cam, masks.numpy())
    # Scores above are computed at full size; what is stored for the figures is at most DISPLAY_PX a side.
    arrays.update(_display(test.x[idx], torch.from_numpy(cam), masks))

    def write(tmp):
        with open(tmp, "wb") as f:  # a file object: np.savez would append .npz to a name
            np.savez_compressed(f, **arrays)
    store._atomic(path, write)
    return _load(path)


def overlay(image_uint8_hwc: np.ndarray, cam: np.ndarray, image_weight: float = 0.5) -> np.ndarray:
    """The map as a jet heat map over the image: RGB float32 (H, W, 3) in [0, 1] for ``plt.imshow``."""
    img = np.asarray(image_uint8_hwc, dtype=np.float32) / 255
    out = show_cam_on_image(img, np.asarray(cam, dtype=np.float32), use_rgb=True, image_weight=image_weight)
    return out.astype(np.float32) / 255
