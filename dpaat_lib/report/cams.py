"""Grad-CAM pages (thin wrapper over :mod:`dpaat_lib.gradcam`): which images, which runs, the scores."""
from __future__ import annotations

import warnings
from typing import Sequence

import numpy as np
import pandas as pd

from .. import experiment, profiles
from .common import resolve_path


def figure_models(prof: profiles.Profile, n: int = 2) -> list[str]:
    """The models a per-model figure shows: the paper's two representative CNNs (ResNet34,
    MobileNetV2) where the profile has them, then the profile's other models, ``n`` at most."""
    paper = [m for m in ("resnet34", "mobilenet_v2") if m in prof.models]
    return (paper + [m for m in prof.models if m not in paper])[:n]


def check_gradcam_resolution(prof: profiles.Profile) -> None:
    """Refuse, before anything trains, a figure CNN (:func:`figure_models`) whose Grad-CAM layer gives a 1 x 1
    map at the profile's image size (ResNet18 at 32 px): each of its maps is then constant, the figure shows
    nothing and every score compares nothing. The error names the smallest size (doubling) that gives 2 x 2."""
    from ..models import gradcam_map_shape

    for name in figure_models(prof):
        if max(gradcam_map_shape(name, prof.image_size)) < 2:
            size = prof.image_size
            while max(gradcam_map_shape(name, size)) < 2:
                size *= 2
            raise ValueError(f"at {prof.image_size} px the Grad-CAM layer of {name} gives a 1 x 1 map: every map "
                             f"would be constant. Run this chapter at {size} px or more (-p image_size {size}), or "
                             "with another CNN")


def gradcam_selection(results: Sequence[experiment.RunResult], model: str, n_per_class: int = 2,
                      methods: Sequence[str] = ("STD", "AT", "DPAAT"), seed: int = 0,
                      pool: int | None = None, figure: bool = False) -> tuple[list[str], str]:
    """Test images of ``model`` predicted correctly by all ``methods`` (first-seed runs), ``n_per_class``
    per class, among the first ``pool`` candidates of each class (default: the
    ``gradcam.CANDIDATES_PER_CLASS`` whose scores every run stores, or for a ``figure`` the
    ``gradcam.THUMBNAILS_PER_CLASS`` whose thumbnails it stores; ``n_per_class`` if more); if a class
    has too few, fewer images (the note says how many), and if none is correct under all of them, the first
    candidates whatever the predictions. Never chosen by one method's predictions alone, which would score
    the others on images they misclassify. Returns (ids, note)."""
    from .. import gradcam

    if pool is None:
        pool = max(gradcam.THUMBNAILS_PER_CLASS if figure else gradcam.CANDIDATES_PER_CLASS, n_per_class)
    runs = {r.config.method.label: r for r in results if r.config.model == model and r.config.train.seed ==
            min(rr.config.train.seed for rr in results)}
    classes = next(iter(runs.values())).config.data.classes
    frames = [runs[m].predictions for m in methods if m in runs]
    shown = ", ".join(m for m in methods if m in runs)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a class short of images: counted below, said in the note
        ids = gradcam.select_correct(frames, n_per_class, classes, seed=seed, pool=pool)
    note = (f"images correctly classified (clean) by all of {shown}, chosen at random (seeded) among {pool} "
            "candidates per class")
    asked = n_per_class * len(classes)
    if ids and len(ids) < asked:
        # Fewer images, never images chosen by one method: the others would be scored on images they misclassify.
        note += (f"; {len(ids)} of the {asked} asked for, because too few of the candidates are correct under all "
                 "of them")
    elif not ids:  # none at all: the candidates themselves, chosen by no run's predictions
        order = gradcam.candidate_order(frames[0], classes, seed)
        ids = [i for per_class in order for i in sorted(per_class[:min(n_per_class, pool)])]  # by class, as above
        note = (f"the first {n_per_class} of the {pool} candidates per class (seeded), correct or not: none is "
                f"classified correctly by all of {shown}")
    return ids, note


def gradcam_results(results: Sequence[experiment.RunResult], model: str, image_ids: Sequence[str],
                    results_dir, data_root=None, device: str = "cpu", methods=("STD", "AT", "DPAAT"),
                    cache_dir=None) -> dict[str, dict]:
    """``gradcam.cam_result`` of each method's (first-seed) run of ``model`` for ``image_ids``."""
    from .. import gradcam

    seed = min(r.config.train.seed for r in results)
    runs = {r.config.method.label: r for r in results if r.config.model == model and r.config.train.seed == seed}
    return {m: gradcam.cam_result(runs[m].config, results=results_dir, image_ids=image_ids,
                                  data_root=resolve_path(data_root), device=device, cache_dir=cache_dir)
            for m in methods if m in runs}


def gradcam_scores(cams: dict[str, dict]) -> pd.DataFrame:
    """Mean faithfulness scores per method: deletion AUC (lower better), insertion AUC, their difference
    insertion - deletion (higher better), ROAD (higher better), share of CAM energy in the lesion mask
    (synthetic only). Rounded to 3 decimals.

    Both AUCs are areas under the model's raw probability of the true class, so a less confident model
    has lower values of both; the difference cancels much of that, which is why the book reads it
    rather than the deletion AUC alone."""
    rows = {}
    for m, c in cams.items():
        ins, dele = np.asarray(c["insertion_auc"], float), np.asarray(c["deletion_auc"], float)
        row = {"images": len(c["image_ids"]),
               "deletion AUC (lower = better)": np.nanmean(dele),
               "insertion AUC (higher = better)": np.nanmean(ins),
               "insertion - deletion (higher = better)": np.nanmean(ins - dele),
               "ROAD (higher = better)": np.nanmean(c["road"])}
        if c.get("energy_in_mask") is not None:
            row["energy in lesion mask"] = np.nanmean(c["energy_in_mask"])
            masks = c.get("masks")
            if masks is not None:
                row["lesion area share (uniform map)"] = float(np.mean(np.asarray(masks, dtype=float)))
        rows[m] = row
    out = pd.DataFrame.from_dict(rows, orient="index")
    for col in out.columns:
        if col != "images":
            out[col] = out[col].map(lambda v: f"{v:.3f}")
    out.index.name = "method"
    return out


def lesion_energy_sentence(scores: pd.DataFrame) -> str:
    """What :func:`gradcam_scores` of runs on data with lesion masks says about where the maps lie."""
    if "energy in lesion mask" not in scores.columns:
        return "No lesion masks: the share of map energy inside the lesion cannot be measured."
    energy = scores["energy in lesion mask"].astype(float)
    uniform = float(scores["lesion area share (uniform map)"].astype(float).iloc[0])
    ranked = ", ".join(f"{m} {v:.3f}" for m, v in energy.sort_values(ascending=False).items())
    above = [m for m, v in energy.items() if v > uniform]
    return (f"**Where the lesion is known** (synthetic data): share of map energy inside the lesion {ranked}, "
            f"against {uniform:.3f} for a uniform map; "
            + (f"{', '.join(above)} concentrate{'s' * (len(above) == 1)} on the lesion more than a uniform map would"
               if above else "no method's maps concentrate on the lesion more than a uniform map")
            + ". One training run per method on stand-in data drawn for this book: it shows whether a method's "
              "maps find a lesion that is there to be found, not how they behave on dermoscopy."
            + (" The paper's Fig. 4 reads DPAAT's maps as the ones that focus on the lesion; by this share "
               + ("DPAAT's do most here." if energy.idxmax() == "DPAAT" else
                  f"{energy.idxmax()}'s do most here, not DPAAT's.") if "DPAAT" in energy.index else ""))
