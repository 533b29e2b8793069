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

Which images: each class's test images in a seeded order (:func:`candidate_order`);
a figure takes the first ones that every compared run classifies correctly
(:func:`select_correct`), among the first ``CANDIDATES_PER_CLASS`` of each
class. Those candidates do not depend on any run, so each run stores their
maps right after it is trained (:func:`candidate_ids`; on a lent GPU the
checkpoint is gone before the other runs of the figure finish), and any later
selection among them is read from that file.
"""
from __future__ import annotations

import hashlib
import math
import time
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
from .attacks import check_unit_range, restore_training_modes, training_modes
from .models import _get, gradcam_layer_path
from .training import load_trained, to_float


def _as_float(x: torch.Tensor) -> torch.Tensor:
    """Images in [0, 1]: uint8 tensors are scaled, float tensors passed through."""
    return to_float(x) if x.dtype == torch.uint8 else x


def _target_layer(model, model_name: str | None) -> torch.nn.Module:
    """``model_name``'s Grad-CAM layer in ``model``: a :func:`dpaat_lib.models.build_model` model (torchvision's
    inside :class:`dpaat_lib.models.Normalized`) or the bare torchvision model; a clear error otherwise."""
    if model_name is None:
        raise ValueError("give model_name (a registered CNN, `dpaat models`) or target_layer=<the layer whose "
                         "activations Grad-CAM reads, usually the last convolutional block of your model>")
    path = gradcam_layer_path(model_name)  # checks the name
    try:
        return _get(getattr(model, "net", model), path)  # build_model's Normalized wraps torchvision's as .net
    except (AttributeError, IndexError, TypeError):
        raise ValueError(f"{type(model).__name__} has no layer {path!r}, the Grad-CAM layer of {model_name}: pass "
                         "the model built by dpaat_lib.models.build_model(model_name), or your model's layer as "
                         "target_layer=... (usually its last convolutional block)") from None


def _device(model) -> torch.device:
    return next(model.parameters()).device


def cams(model, model_name: str | None, x: torch.Tensor, targets: torch.Tensor, *, batch_size: int = 64,
         target_layer: torch.nn.Module | None = None) -> np.ndarray:
    """Grad-CAM maps (N, H, W) float32 in [0, 1] at the input resolution.

    ``x``: images (N, 3, H, W) in [0, 1] (or uint8); ``targets``: the class
    each map explains (usually the true label). The target layer is the last
    convolutional block of the registered CNN ``model_name``
    (:func:`dpaat_lib.models.gradcam_target_layer`), found in a model of
    :func:`dpaat_lib.models.build_model` or in the bare torchvision model; for a
    model of your own, pass its layer as ``target_layer`` (``model_name`` may
    then be None), e.g. ``cams(net, None, x, y, target_layer=net.layer4)``. Maps
    are taken in eval mode; the model's modes, its parameters' ``.grad`` (None or
    accumulated) and its hooks are as before afterwards; frozen weights are fine. Each map is scaled to
    [0, 1] on its own (pytorch-grad-cam's convention), so maps compare in
    shape, not in magnitude. A map needs a target-layer feature map larger
    than 1x1 (e.g. 64 px for resnet34, mobilenet_v2; more for inception_v3);
    otherwise it is zero and a warning says so.

    Works under ``torch.no_grad()`` too (the maps need gradients, so they are taken with them on);
    a float ``x`` must be finite and in [0, 1] (ValueError otherwise, as in the attacks), and a
    caller's ``x`` that requires grad gets no gradient from the maps.
    """
    layer = target_layer if target_layer is not None else _target_layer(model, model_name)
    if not isinstance(x, torch.Tensor) or x.dim() != 4:
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"x must be a batch of images (N, 3, H, W), got {shape}; for one image pass x[None]")
    if x.dtype != torch.uint8:
        if not x.is_floating_point():
            raise TypeError(f"x must be uint8 (0-255) or float in [0, 1], got {x.dtype}")
        check_unit_range(x.detach())
    if target_layer is not None and not any(m is layer for m in model.modules()):
        raise ValueError(f"target_layer ({type(layer).__name__}) is not a module of this model: pass one of its own "
                         "layers, e.g. target_layer=net.layer4 for the net given")
    targets = torch.as_tensor(targets).view(-1)
    if targets.is_floating_point() and not bool((targets == targets.round()).all()):
        raise ValueError(f"targets must be class indices (integers), got {targets.tolist()}")
    if bool((targets < 0).any()):
        raise ValueError(f"targets must be class indices >= 0, got {targets.tolist()} (a negative index would "
                         "explain a class counted from the end)")
    targets = targets.long().tolist()
    if len(targets) != x.shape[0]:
        raise ValueError(f"got {x.shape[0]} images but {len(targets)} targets")
    was, device = training_modes(model), _device(model)
    grads = [(p, p.grad) for p in model.parameters()]  # pytorch-grad-cam zeroes them: the caller's come back
    out = []
    try:
        # The clone: pytorch-grad-cam keeps the layer's output as `.cpu()`, which on a CPU is the tensor itself, so
        # an in-place op after the layer (DenseNet121's ReLU after `features`) would overwrite the kept activation
        # there but not on a GPU: one checkpoint would give two maps.
        with GradCAM(model=model, target_layers=[layer], reshape_transform=torch.clone) as cam, torch.enable_grad():
            for i in range(0, x.shape[0], batch_size):
                # detach: the maps' backward must not reach a caller's tensor that requires grad. requires_grad:
                # the target layer's output then has a gradient even where every weight is frozen.
                xb = _as_float(x[i:i + batch_size].detach().to(device)).requires_grad_(True)
                try:
                    out.append(cam(xb, [ClassifierOutputTarget(int(t)) for t in targets[i:i + batch_size]]))
                except IndexError as err:
                    # GradCAM.__exit__ swallows IndexError; re-raise as what it is
                    raise ValueError(f"a target class is out of range for the model's output: {err}") from err
    finally:
        for p, g in grads:
            p.grad = g
        restore_training_modes(was)
    if not out:
        return np.zeros((0, *x.shape[-2:]), np.float32)
    maps = np.concatenate(out).astype(np.float32)
    if not maps.any():
        warnings.warn(f"every Grad-CAM map of {model_name or type(model).__name__} is zero: at "
                      f"{tuple(x.shape[-2:])} px its target layer's feature map is probably 1x1, which has no "
                      "spatial detail; use larger images",
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
    "deletion_curves" (N, steps+1), "insertion_curves" (N, steps+1),
    "deletion_curve" (steps+1,), "insertion_curve" (steps+1,)}``: the curves
    of each image and their means. The model's mode is restored.
    """
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    device, was = _device(model), training_modes(model)
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
        restore_training_modes(was)
    return {"fractions": fractions.tolist(), "deletion_auc": _auc(fractions, dele).astype(np.float32),
            "insertion_auc": _auc(fractions, ins).astype(np.float32),
            "deletion_curves": dele, "insertion_curves": ins,
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
    device, was = _device(model), training_modes(model)
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
        restore_training_modes(was)
    return np.concatenate(out) if out else np.zeros(0, np.float32)


CANDIDATES_PER_CLASS = 30
"""Images per class whose scores a run stores after training: room for chapter 8's 10 per class that
all three compared runs must classify correctly (about half of the candidates at 65-70 % accuracy)."""
FIGURE_METHODS = ("std", "at", "dpaat")
"""The methods whose maps chapter 8 compares (paper Fig. 4), on the profile's figure models."""
THUMBNAILS_PER_CLASS = 10
"""The first candidates per class whose thumbnails and maps are stored too, for the figure's 2 per class
(with 1 in 2 candidates correct under all three runs, 10 fall short of 2 about once in a hundred)."""


def candidate_order(pred_frame: pd.DataFrame, classes: Sequence[str], seed: int = 0) -> list[list[str]]:
    """Per class, every test image of the class (``pred_frame``'s image_id and label) in a seeded random
    order; the order depends only on the test set, the class and ``seed``, not on any prediction."""
    labels = pred_frame.set_index("image_id")["label"]
    out = []
    for k in range(len(classes)):
        ids = sorted(str(i) for i in labels.index[labels == k])
        out.append([ids[j] for j in np.random.default_rng([seed, k]).permutation(len(ids))])
    return out


def candidate_ids(pred_frame: pd.DataFrame, classes: Sequence[str], per_class: int = CANDIDATES_PER_CLASS,
                  seed: int = 0) -> list[str]:
    """The first ``per_class`` images of each class in :func:`candidate_order`: what a run stores maps of,
    so that :func:`select_correct` with ``pool=per_class`` never needs its checkpoint again."""
    return [i for order in candidate_order(pred_frame, classes, seed) for i in order[:per_class]]


def select_correct(pred_frame: pd.DataFrame | Sequence[pd.DataFrame], n_per_class: int, classes: Sequence[str],
                   attack: str = "clean", seed: int = 0, pool: int | None = None) -> list[str]:
    """image_ids of ``n_per_class`` correctly predicted test images per class, deterministic in ``seed``.

    ``pred_frame`` is a run's ``RunResult.predictions`` (columns image_id,
    label, pred_<attack>, ...), or a list of them: then an image must be right
    in every one (e.g. the STD, AT and DPAAT runs of one CNN, so a figure shows
    the same images for each). Each class's images are walked in
    :func:`candidate_order` (only its first ``pool``, if given) and the first
    correct ones are taken: a uniformly random choice among the correct
    images, and the choice of n is the start of the choice of more. Ids are
    ordered by class, then image_id. A class with fewer correct images gives
    what it has, with a warning.
    """
    frames = [pred_frame] if isinstance(pred_frame, pd.DataFrame) else list(pred_frame)
    col = f"pred_{attack}"
    correct = None
    for f in frames:
        if col not in f.columns:
            raise ValueError(f"predictions have no column {col!r}; attacks present: "
                             f"{[c[5:] for c in f.columns if c.startswith('pred_')]}")
        ok = set(f.loc[f[col] == f["label"], "image_id"].astype(str))
        correct = ok if correct is None else correct & ok
    chosen = []
    for name, order in zip(classes, candidate_order(frames[0], classes, seed)):
        walked = order if pool is None else order[:pool]
        take = [i for i in walked if i in correct][:n_per_class]
        if len(take) < n_per_class:
            where = "" if pool is None else f" among its first {len(walked)} candidates"
            warnings.warn(f"class {name!r}: only {len(take)} correctly predicted images{where}, "
                          f"{n_per_class} asked for", stacklevel=2)
        chosen += sorted(take)
    return chosen


DISPLAY_PX = 96  # stored thumbnails and maps: enough for a figure, small enough to commit at 224 px


def _display(images: torch.Tensor, cam: torch.Tensor, masks: torch.Tensor | None) -> dict:
    """uint8 thumbnails (N,h,w,3), maps (N,h,w) in [0, 1] quantised to uint8 (1/255 is far below what a
    colour map shows) and bool masks, area-downsampled so the longer side is at most DISPLAY_PX
    (unchanged when already that small)."""
    h, w = images.shape[-2:]
    if max(h, w) > DISPLAY_PX:
        size = (max(1, round(h * DISPLAY_PX / max(h, w))), max(1, round(w * DISPLAY_PX / max(h, w))))
        images = F.interpolate(images.float(), size=size, mode="area").round().clamp(0, 255).to(torch.uint8)
        cam = F.interpolate(cam[:, None].float(), size=size, mode="area")[:, 0]
        if masks is not None:
            masks = F.interpolate(masks[:, None].float(), size=size, mode="nearest")[:, 0] > 0.5
    out = {"images": images.permute(0, 2, 3, 1).numpy(),
           "cams": (cam.float().clamp(0, 1) * 255).round().to(torch.uint8).numpy()}
    if masks is not None:
        out["masks"] = masks.numpy()
    return out


def cam_file(run_dir: Path, image_ids: Sequence[str]) -> Path:
    """``<run>/gradcam-<sha8 of the ids>.npz``: one file per image selection (order matters)."""
    key = hashlib.sha256("\n".join(image_ids).encode()).hexdigest()[:8]
    return Path(run_dir) / f"gradcam-{key}.npz"


PER_IMAGE = ("labels", "masks", "energy_in_mask", "deletion_auc", "insertion_auc", "deletion_curves",
             "insertion_curves", "road")
THUMBNAILS = ("images", "cams")  # stored for the images of "thumbnail_ids" only


def _stored_ids(path: Path) -> list[str]:
    with np.load(path) as z:
        return [str(i) for i in z["image_ids"]]


def stored_file(run_dir, image_ids: Sequence[str]) -> Path | None:
    """The run's stored Grad-CAM file that holds every one of ``image_ids``: the one made for exactly
    these images, else any superset (e.g. the run's :func:`candidate_ids`); None if there is none."""
    exact = cam_file(run_dir, image_ids)
    if exact.exists():
        return exact
    wanted = set(image_ids)
    return next((p for p in sorted(Path(run_dir).glob("gradcam-*.npz")) if wanted <= set(_stored_ids(p))), None)


def _subset(result: dict, image_ids: Sequence[str]) -> dict:
    """The images ``image_ids`` of a stored result that holds them all, in that order; thumbnails and
    maps where every one of them has its thumbnail, else None."""
    where = {i: k for k, i in enumerate(result["image_ids"])}
    idx = np.array([where[i] for i in image_ids], dtype=np.int64)
    out = {**result, "image_ids": list(image_ids)}
    for k in PER_IMAGE:
        if out.get(k) is not None:
            out[k] = out[k][idx]
    for k in ("deletion", "insertion"):
        if out[f"{k}_curves"] is not None:
            out[f"{k}_curve"] = out[f"{k}_curves"].mean(axis=0)
    thumb = {i: k for k, i in enumerate(result["thumbnail_ids"])}
    shown = all(i in thumb for i in image_ids)
    tidx = np.array([thumb[i] for i in image_ids] if shown else [], dtype=np.int64)
    for k in THUMBNAILS:
        out[k] = result[k][tidx] if shown else None
    out["thumbnail_ids"] = list(image_ids) if shown else [i for i in image_ids if i in thumb]
    return out


def stored_seconds(path: Path) -> float | None:
    """The seconds a stored result took to compute (:func:`cam_result`), None where it was not timed."""
    with np.load(path) as z:
        return float(z["seconds"]) if "seconds" in z.files else None


def _load(path: Path) -> dict:
    """A stored result, every per-image array in the order of its "image_ids"."""
    with np.load(path) as z:
        d = {k: z[k] for k in z.files}
    ids = [str(i) for i in d["image_ids"]]
    cams = d["cams"]
    out = {"image_ids": ids, "images": d["images"],
           "cams": cams.astype(np.float32) / (255 if cams.dtype == np.uint8 else 1),
           "thumbnail_ids": [str(i) for i in d["thumbnail_ids"]] if "thumbnail_ids" in d else ids,
           "labels": d["labels"].astype(np.int64), "masks": d.get("masks"),
           "energy_in_mask": d.get("energy_in_mask"), "fractions": d["fractions"].tolist(),
           "seconds": float(d["seconds"]) if "seconds" in d else None}  # files before it was timed: None
    for k in ("deletion_auc", "insertion_auc", "road"):
        out[k] = d[k]
    for k in ("deletion", "insertion"):  # files written before the per-image curves hold only the means
        out[f"{k}_curves"] = d.get(f"{k}_curves")
        out[f"{k}_curve"] = d[f"{k}_curve"]
    return out


def cam_result(config: RunConfig, *, results, image_ids: Sequence[str], data_root=None, device="cpu",
               cache_dir: Path | None = None, thumbnails: Sequence[str] | None = None) -> dict:
    """Load or compute the Grad-CAM maps of a run for the test images ``image_ids``.

    Stored as ``<results>/<run_id>/gradcam-<hash>.npz`` (:func:`cam_file`,
    atomic write) with the ids, uint8 thumbnails at the run's image size and,
    where the data has lesion masks, the masks, so later calls need neither
    the data nor the checkpoint; above ``DISPLAY_PX`` a side the stored thumbnails, maps and masks are
    downsampled (the scores are computed at full size). ``thumbnails``: the ids (among ``image_ids``)
    whose thumbnails and maps are stored (default: all); every image's scores are. A stored file that
    holds every one of ``image_ids`` (the run's :func:`candidate_ids`) serves them too, sliced; its
    thumbnails and maps come with them when it has them for all, else "images" and "cams" are None.
    Computing needs the run's checkpoint (``ckpt/best.pt``) and its data.

    Returns ``{"image_ids", "thumbnail_ids", "images" (N,H,W,3 uint8), "cams" (N,H,W float32),
    "labels", "masks" (N,H,W bool or None), "energy_in_mask" (N, or None
    without masks), "deletion_auc", "insertion_auc", "fractions",
    "deletion_curves" / "insertion_curves" (N, steps+1), their means "deletion_curve" /
    "insertion_curve", "road"}``; maps explain the true label.
    """
    image_ids = [str(i) for i in image_ids]
    run_dir = store.RunDir(results, config.run_id)
    thumbnails = image_ids if thumbnails is None else [str(i) for i in thumbnails]
    if not set(thumbnails) <= set(image_ids):
        raise ValueError("thumbnails must be among image_ids")
    stored = stored_file(run_dir.path, image_ids)
    if stored is not None:
        return _subset(_load(stored), image_ids)
    path = cam_file(run_dir.path, image_ids)
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
    started = time.perf_counter()
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
    display = _display(test.x[idx], torch.from_numpy(cam), masks)
    shown = np.array([image_ids.index(i) for i in thumbnails], dtype=np.int64)
    arrays.update(display, images=display["images"][shown], cams=display["cams"][shown],
                  thumbnail_ids=np.array(thumbnails))
    # What computing it took, for the grid's estimates (a GPU call starts a run only if its extras fit too).
    arrays["seconds"] = np.float64(time.perf_counter() - started)

    def write(tmp):
        with open(tmp, "wb") as f:  # a file object: np.savez would append .npz to a name
            np.savez_compressed(f, **arrays)
    store._atomic(path, write)
    return _subset(_load(path), image_ids)


def overlay(image_uint8_hwc: np.ndarray, cam: np.ndarray, image_weight: float = 0.5) -> np.ndarray:
    """The map as a jet heat map over the image: RGB float32 (H, W, 3) in [0, 1] for ``plt.imshow``."""
    img = np.asarray(image_uint8_hwc, dtype=np.float32) / 255
    out = show_cam_on_image(img, np.asarray(cam, dtype=np.float32), use_rgb=True, image_weight=image_weight)
    return out.astype(np.float32) / 255
