"""Data: split counts and leakage (load or compute, counts only), example images."""
from __future__ import annotations

import json
from dataclasses import asdict

import numpy as np
import pandas as pd

from .. import data as D, experiment, store
from ..config import DataConfig
from .common import _digest, resolve_path


def _split_stats(meta: pd.DataFrame, split: dict[str, list[str]], classes) -> dict:
    lesion = dict(zip(meta["image_id"], meta["lesion_id"]))
    label = dict(zip(meta["image_id"], meta["dx"]))
    counts = {s: {c: sum(label[i] == c for i in ids) for c in classes} for s, ids in split.items()}
    lesions = {s: {c: len({lesion[i] for i in ids if label[i] == c}) for c in classes} for s, ids in split.items()}
    fit = set(split["train"]) | set(split["val"])
    fit_lesions = {lesion[i] for i in fit}
    test_lesions = {lesion[i] for i in split["test"]}
    shared = fit_lesions & test_lesions
    return {"counts": counts, "lesions": lesions, "shared_lesions": len(shared),
            "test_images_with_lesion_in_training": sum(lesion[i] in shared for i in split["test"]),
            "n_test": len(split["test"])}


def split_summary(data: DataConfig, data_root=None, results_root=None, profile_name: str = "quick",
                  cache_dir=None) -> dict | None:
    """Counts per class and side of the run's split and of the image-level alternative, and how many
    test images share a lesion with a training image under each. Stored as
    ``<results>/<profile>/split-summary-<hash>.json`` (counts only, no images), so a page re-executes
    without the data; with the data there, both splits are recomputed from the metadata every time and a
    stored file that differs raises ValueError (the metadata or the split changed). None when neither the
    file nor the data is there."""
    out_dir = resolve_path(results_root, "results") / profile_name
    key = _digest(data.identity())  # asdict minus fields added since at their default (config.IDENTITY_OPTIONAL)
    path = out_dir / f"split-summary-{key}.json"
    root = experiment.data_root_for(data.source, resolve_path(data_root), cache_dir)
    if root is None or D.metadata_path(root) is None:
        return store.read_json(path) if path.exists() else None
    meta = D.read_metadata(root, data.classes)
    sizes = dict(seed=data.split_seed, n_train=data.n_train, n_test=data.n_test, n_val=data.n_val)
    aware = D.make_split(meta, lesion_aware=True, **sizes)
    image = D.make_split(meta, lesion_aware=False, **sizes)
    per_class = meta.groupby("dx").agg(images=("image_id", "size"), lesions=("lesion_id", "nunique"))
    res = {"data": asdict(data),
           "available": {c: {"images": int(per_class.loc[c, "images"]), "lesions": int(per_class.loc[c, "lesions"])}
                         for c in data.classes},
           "lesion_aware": _split_stats(meta, aware, data.classes),
           "image_level": _split_stats(meta, image, data.classes),
           "used": "lesion_aware" if data.lesion_aware else "image_level",
           "split_digest": _digest(aware if data.lesion_aware else image)}
    res = json.loads(json.dumps(res))  # as stored: lists, string keys

    def counts(summary_):  # the record of the configuration gains the fields added since; the file's name is its key
        return {k: v for k, v in summary_.items() if k != "data"}

    if path.exists() and counts(store.read_json(path)) != counts(res):
        raise ValueError(f"{path} differs from the split summary recomputed from the metadata in {root}: the "
                         "metadata or the split code changed since it was stored, so the stored runs may have been "
                         "trained on another split. Check the data folder; delete the file to store the new counts")
    if not path.exists():
        store.write_json(path, res)
    return res


def stored_split_matches(result: experiment.RunResult, summary_: dict) -> bool:
    """Whether the split saved with a run is the one ``split_summary`` describes."""
    split = store.read_json(store.run_file(result.path, store.SPLIT))
    return _digest(split) == summary_["split_digest"]


def split_counts_frame(summary_: dict, which: str | None = None) -> pd.DataFrame:
    """Images (and lesions) per class and side of the split (``which``: lesion_aware / image_level)."""
    s = summary_[which or summary_["used"]]
    rows = {}
    for side in ("train", "val", "test"):
        for c, n in s["counts"][side].items():
            rows.setdefault(c, {})[f"{side} images"] = n
            rows[c][f"{side} lesions"] = s["lesions"][side][c]
    for c, a in summary_["available"].items():
        rows[c]["available images"] = a["images"]
        rows[c]["available lesions"] = a["lesions"]
    out = pd.DataFrame.from_dict(rows, orient="index").loc[list(summary_["data"]["classes"])]
    out.index.name = "class"
    return out


def example_images(data: DataConfig, data_root=None, n_per_class: int = 4, seed: int = 0,
                   cache_dir=None) -> tuple[np.ndarray, list[int], list[str]] | None:
    """A few test-split images per class as the models see them (uint8 (N, S, S, 3)), with labels and
    ids; None without the data. Nothing is stored (real images must not enter the results)."""
    root = experiment.data_root_for(data.source, resolve_path(data_root), cache_dir)
    if root is None or D.metadata_path(root) is None:
        return None
    meta = D.read_metadata(root, data.classes)
    split = experiment.make_split_for(data, root)
    test = meta.set_index("image_id").loc[split["test"]]
    rng = np.random.default_rng(seed)
    ids, labels = [], []
    for k, c in enumerate(data.classes):
        pool = sorted(test.index[test["dx"] == c])
        take = sorted(pool[j] for j in rng.choice(len(pool), size=min(n_per_class, len(pool)), replace=False))
        ids += take
        labels += [k] * len(take)
    x = D.load_images(list(test.loc[ids, "path"]), data.image_size)
    return x.permute(0, 2, 3, 1).numpy(), labels, ids
