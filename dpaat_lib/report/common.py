"""What every page module shares: the book's constants, paths, and the small helpers that order, summarise
and format runs (numbers are rounded here, :func:`fmt`, so executed pages are identical from one execution to
the next)."""
from __future__ import annotations

import hashlib
import json
import logging
import os
import warnings
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

with warnings.catch_warnings():
    # tqdm.auto (imported by the training loop) warns inside Jupyter when ipywidgets is missing; the
    # book shows no progress bars, and an executed page must not depend on ipywidgets being there.
    warnings.simplefilter("ignore")
    import tqdm.auto  # noqa: F401

# The book's tables hold sentences (the ablation's claims, the GPU calls' notes): pandas' default display cuts
# every cell at 50 characters, which printed "the adaptation matters more for ro..." in chapter 7.
pd.set_option("display.max_colwidth", None)

from .. import experiment, grid
from ..attacks import L2_EPS, LINF_EPS
from ..methods import LABELS


log = logging.getLogger(__package__)  # dpaat_lib.report: where a page's long runs log progress

TABLE1_COLUMNS = ("FGSM", "10-IFGSM", "20-IFGSM", "20-PGD", "50-PGD", "GAcc")
TABLE2_COLUMNS = ("mAP", "mARP", "precision", "recall", "f1")
PAPER_GROUPS = ("widely_used", "lightweight", "all_six")
# The paper states no input size: method.md section 2's default (after Margeloiu), the usual input of these
# ImageNet CNNs. An assumption, and the pages say so (threat_scale_note, the deviations list).
PAPER_IMAGE_SIZE = 224
PAPER_SIZE_BASIS = "method.md's default and the usual input of these ImageNet CNNs"  # why 224 (text of the pages)
PAPER_EPS0 = L2_EPS  # method.md section 4: our reading of the paper's L2 radius (training and 20/50-step PGD)
PAPER_LINF_EPS = LINF_EPS  # method.md section 4: our reading of the paper's FGSM and I-FGSM radius
METHOD_ORDER = tuple(LABELS[m] for m in ("std", "at", "sat", "amat", "dpaat", "d-a", "d-b"))
ABLATION_LABELS = {"at": "AT", "d-a": "D-A", "d-b": "D-B", "dpaat": "D-(A+B) = DPAAT"}
DEFAULT_EPS = {"linf": (0.0, 1 / 255, 2 / 255, 4 / 255, 8 / 255), "l2": (0.0, 0.25, 0.5, 1.0, 1.5)}
CURVE_ATTACK = {"linf": "20-IFGSM", "l2": "20-PGD"}
CHAPTERS = ("01_overview", "02_data", "03_methods", "04_robustness", "05_precision", "06_confusion",
            "07_ablation", "08_gradcam", "09_dynamics", "10_reproducibility", "11_strong_attacks", "12_study")


def repo_root() -> Path:
    """The checkout: the folder above dpaat_lib if it holds pyproject.toml (an
    editable install), else the first folder upwards from the working directory
    that holds pyproject.toml, else the working directory."""
    here = Path(__file__).resolve().parents[2]  # dpaat_lib/report/common.py -> the checkout
    if (here / "pyproject.toml").is_file():
        return here
    cwd = Path.cwd().resolve()
    for d in (cwd, *cwd.parents):
        if (d / "pyproject.toml").is_file() and (d / "dpaat_lib").is_dir():
            return d
    return cwd


def resolve_path(path: str | os.PathLike | None, default: str | None = None) -> Path | None:
    """``path`` (or ``default``) as an absolute path; relative ones are relative to :func:`repo_root`."""
    p = default if path is None else path
    if p is None:
        return None
    p = Path(p).expanduser()
    return p if p.is_absolute() else (repo_root() / p).resolve()


def md(text: str):
    """``IPython.display.Markdown`` (imported late so the module works without IPython)."""
    from IPython.display import Markdown

    return Markdown(text)


def method_key(label: str) -> int:
    return METHOD_ORDER.index(label) if label in METHOD_ORDER else len(METHOD_ORDER)


def first_seed(results: Sequence[experiment.RunResult]) -> list[experiment.RunResult]:
    """The runs of the smallest seed: what the costly per-run analyses (stronger attacks, Grad-CAM,
    radius heat maps) use when a profile has several seeds."""
    if not results:
        return []
    s0 = min(r.config.train.seed for r in results)
    return [r for r in results if r.config.train.seed == s0]


def results_frame(results: Sequence[experiment.RunResult]) -> pd.DataFrame:
    """One row per run: model, method (label), seed, run_id and every scalar metric (fractions)."""
    t = grid.results_table(list(results))
    t.insert(3, "run_id", [r.run_id for r in results])
    return t


def summary(results: Sequence[experiment.RunResult], columns: Sequence[str]) -> pd.DataFrame:
    """Mean, std (NaN for one seed) and number of seeds per (model, method) of ``columns`` (fractions)."""
    return frame_summary(results_frame(results), columns)


def frame_summary(runs: pd.DataFrame, columns: Sequence[str]) -> pd.DataFrame:
    """:func:`summary` of a frame with one row per run (``model``, ``method`` and ``columns``): column
    groups ``mean`` and ``std`` (NaN for one seed) and ``n``, the runs, per (model, method)."""
    columns = [c for c in columns if c in runs.columns]
    g = runs.astype({c: float for c in columns}).groupby(["model", "method"], sort=False)[columns]
    out = pd.concat({"mean": g.mean(), "std": g.std(ddof=1)}, axis=1)
    out[("n", "")] = g.size()
    return out


def fmt(mean: float, std: float = float("nan"), n: int = 1, scale: float = 100.0, digits: int = 1) -> str:
    """``"71.2"`` or, over several seeds, ``"71.2 ± 1.3"``; ``"—"`` for a missing value."""
    if mean is None or not np.isfinite(mean):
        return "—"
    s = f"{mean * scale:.{digits}f}"
    if n > 1 and np.isfinite(std):
        s += f" ± {std * scale:.{digits}f}"
    return s


def _digest(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:10]


def and_list(items: Sequence[str]) -> str:
    """``a``, ``a and b``, ``a, b and c``."""
    items = list(items)
    return " and ".join(items) if len(items) < 3 else ", ".join(items[:-1]) + " and " + items[-1]
