"""All seven diagnoses: imbalance-aware metrics, per-class recall, the split's class counts, findings."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from .. import experiment, profiles
from ..evaluation import CLEAN
from ..metrics import per_class_recall as class_recall
from .setup import COMPARED
from .numbers import _label, metric_value, seed_table
from .significance import ci_text, seed_findings, significance_table


def imbalance_table(results: Sequence[experiment.RunResult], attacks: Sequence[str] = (CLEAN, "20-PGD"),
                    metrics: Sequence[str] = ("acc", "bacc", "f1"), digits: int = 1) -> pd.DataFrame:
    """Per (model, method): accuracy, balanced accuracy and macro F1 under each attack, ``mean ± std``
    over seeds in percent (:func:`seed_table` with the imbalance-aware metrics)."""
    return seed_table(results, metrics, attacks, digits=digits)


def per_class_recall(results: Sequence[experiment.RunResult], attacks: Sequence[str] | str = (CLEAN, "20-PGD")
                     ) -> pd.DataFrame:
    """Recall (%) of each class per (model, method, attack), seed means: where the imbalance bites."""
    attacks = (attacks,) if isinstance(attacks, str) else tuple(attacks)
    rows = []
    for r in results:
        for att in attacks:
            recall = class_recall(r.predictions, r.config.data.classes, att)
            rows.append({"model": r.config.model, "method": _label(r), "attack": "clean" if att == CLEAN else att,
                         "seed": r.config.train.seed, **{c: 100 * v for c, v in recall.items()}})
    df = pd.DataFrame(rows)
    if df.empty:
        return df
    out = df.drop(columns="seed").groupby(["model", "attack", "method"], sort=False).mean().round(1)
    return out.reset_index()


def _counts_key(data_config) -> str:
    import hashlib
    import json

    return hashlib.sha256(json.dumps(data_config.identity(), sort_keys=True, default=str).encode()).hexdigest()[:10]


def split_class_counts(data_config, data_root=None, cache_dir=None, results=None, draws: int | None = None
                       ) -> pd.DataFrame:
    """Images per class and side of the split that ``data_config`` describes. Columns: class, train, val,
    test, lesions, each class's share of the training set and how often the balanced sampler draws each
    of its training images per epoch (``draws`` per epoch, default the training-set size).

    Computed from the metadata (the data folder, or the synthetic stand-in) and stored as
    ``<results>/class-counts-<hash>.json`` (counts only) when ``results`` is given, so a page re-executed
    without the data still shows them; an empty frame when neither the file nor the data is there."""
    from .. import data as D
    from .. import store

    path = None if results is None else Path(results) / f"class-counts-{_counts_key(data_config)}.json"
    if path is not None and path.exists():
        stored = store.read_json(path)
    else:
        root = experiment.data_root_for(data_config.source, data_root, cache_dir)
        if root is None or D.metadata_path(root) is None:
            return pd.DataFrame()
        meta = D.read_metadata(root, data_config.classes)
        split = experiment.make_split_for(data_config, root)
        dx = dict(zip(meta["image_id"], meta["dx"]))
        lesion = dict(zip(meta["image_id"], meta["lesion_id"]))
        stored = {"data": data_config.identity(), "classes": list(data_config.classes),
                  "counts": {side: {c: sum(dx[i] == c for i in split[side]) for c in data_config.classes}
                             for side in ("train", "val", "test")},
                  "lesions": {c: len({lesion[i] for ids in split.values() for i in ids if dx[i] == c})
                              for c in data_config.classes}}
        if path is not None:
            store.write_json(path, stored)
    counts = stored["counts"]
    n_train = sum(counts["train"].values())
    k = len(stored["classes"])
    per_epoch = draws or n_train
    rows = []
    for c in stored["classes"]:
        row = {"class": c, **{side: int(counts[side][c]) for side in ("train", "val", "test")},
               "lesions": int(stored["lesions"][c])}
        row["train share (%)"] = round(100 * row["train"] / max(n_train, 1), 1)
        row["balanced draws per image per epoch"] = round(per_epoch / k / max(row["train"], 1), 2)
        rows.append(row)
    return pd.DataFrame(rows)


def seven_class_findings(results: Sequence[experiment.RunResult], sig: pd.DataFrame | None = None,
                         a: str = "DPAAT", n_boot: int = 2000) -> str:
    """The reading of the 7-class runs (Markdown): what a majority-class guess would score, the methods
    ranked by balanced accuracy clean and under 20-PGD, ``a`` against the other adversarial methods in
    balanced accuracy (``sig``, a :func:`significance_table` on ``bacc``; computed when None) and the
    classes the models miss."""
    if not results:
        return "No 7-class runs."
    pred = results[0].predictions
    classes = results[0].config.data.classes
    shares = pred["label"].value_counts(normalize=True)
    major = classes[int(shares.idxmax())]
    parts = [f"The test set holds {len(pred)} images; the largest class, {major}, is "
             f"{100 * shares.max():.1f}% of them: a model that answers {major} for every image scores "
             f"{100 * shares.max():.1f}% accuracy but {100 / len(classes):.1f}% balanced accuracy and "
             f"{100 * shares.max() / (1 + shares.max()) * 2 / len(classes):.1f}% macro F1. Balanced accuracy (the mean "
             "recall over the seven classes) and macro F1 are the numbers to compare."]
    for att, name in ((CLEAN, "clean"), ("20-PGD", "under 20-PGD")):
        vals = {}
        for r in results:
            vals.setdefault(_label(r), []).append(100 * metric_value(r, "bacc", att))
        ranked = sorted(vals.items(), key=lambda kv: -np.mean(kv[1]))
        n = max(len(v) for v in vals.values())
        parts.append(f"Balanced accuracy {name}" + (f" (mean of {n} seeds)" if n > 1 else "") + ": "
                     + ", ".join(f"{m} {np.mean(v):.1f}" for m, v in ranked) + ".")
    first = [r for r in results if r.history.get("best_epoch") == 1]
    if first:  # early stopping kept the first epoch: the run's numbers are those of a barely trained model
        def barely(r):
            n = len(r.history["epochs"])
            return (f"{_label(r)} seed {r.config.train.seed} ({n} epoch{'s' if n != 1 else ''} run, "
                    f"balanced accuracy {100 * metric_value(r, 'bacc'):.1f} clean)")

        parts.append(f"{len(first)} run(s) kept their first epoch (the validation loss never fell after it), so "
                     "they are barely trained, and their method's means above include them: "
                     + ", ".join(map(barely, first)) + ".")
    if sig is None:
        sig = significance_table(results, a, COMPARED, metric="bacc", n_boot=n_boot)
    if not sig.empty:
        parts.append(seed_findings(sig, a=a))
        if int(sig["seeds"].max()) < 2:
            for _, r in sig.iterrows():
                parts.append(f"{r['comparison']}, balanced accuracy {r['attack']}: {r['mean']:+.1f} points, 95% "
                             f"bootstrap interval over test images {ci_text(r['ci_low'], r['ci_high'])}.")
    rec = per_class_recall(results, (CLEAN,))
    cls = [c for c in classes if c in rec.columns]
    worst = rec[cls].mean().sort_values()
    parts.append("Mean clean recall over the methods, lowest first: "
                 + ", ".join(f"{c} {v:.1f}" for c, v in worst.items()) + ".")
    return " ".join(parts)


def seven_class_banner(prof: profiles.Profile, results: Sequence[experiment.RunResult] = ()) -> str:
    """Markdown: which profile and data the 7-class section uses, the split and the imbalance handling."""
    data = ("**SYNTHETIC** stand-in data (seven procedurally drawn classes, *not* HAM10000)" if prof.synthetic
            else "**real HAM10000**, all seven diagnoses")
    return (f"> **Profile `{prof.name}`** | data: {data} | classes: {', '.join(prof.classes)} | "
            f"{prof.image_size} px | models: {', '.join(prof.models)} | up to {prof.epochs} epochs "
            f"(patience {prof.patience}) | seeds: {', '.join(map(str, prof.seeds))} | every image, lesion-aware "
            f"split by fractions per class ({100 * prof.test_fraction:g} % test, {100 * prof.val_fraction:g} % "
            f"of the rest validation) | imbalance: {sampler_text(prof)}, the same for every method"
            + (f" | {len(results)} run(s)" if results else ""))


def sampler_text(prof: profiles.Profile) -> str:
    """How a profile's training handles class imbalance, in words."""
    if prof.sampler == "balanced":
        n = f"{prof.epoch_draws} images" if prof.epoch_draws else "as many images as the training set holds"
        return (f"class-balanced sampling: each epoch draws {n} with replacement, each class equally likely "
                "(plain cross-entropy)")
    return "none (a plain shuffle of each epoch)"
