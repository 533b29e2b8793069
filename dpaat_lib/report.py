"""What the book's chapters need beyond the library: loading a profile's grid,
the paper's tables beside ours, small load-or-compute extras and the figures.

The notebooks under ``notebooks/`` stay thin: every table, figure and number
they show comes from a function here (or from the library), so a notebook
never defines logic of its own. Two chapters have their own module on top of
this one: chapter 11's stronger attacks (:mod:`dpaat_lib.strong_report`) and
chapter 12's seeds, sweeps and seven classes (:mod:`dpaat_lib.study`).

Paths: ``results_root`` and ``data_root`` may be absolute; a relative path (and
the default ``results_root=None``, i.e. ``results``) is taken relative to the
repository root (:func:`repo_root`), not to the working directory, so the same
notebook finds the same results whether papermill, nbval or a person runs it,
from the repository or from a build folder.

Numbers shown in the book are rounded here (:func:`fmt`), so executed
notebooks are identical from one execution to the next.
"""
from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import platform
import time
import warnings
from dataclasses import asdict
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import pandas as pd

with warnings.catch_warnings():
    # tqdm.auto (imported by the training loop) warns inside Jupyter when ipywidgets is missing; the
    # book shows no progress bars, and an executed page must not depend on ipywidgets being there.
    warnings.simplefilter("ignore")
    import tqdm.auto  # noqa: F401

from . import data as D
from . import experiment, grid, pretrained, profiles, store
from .attacks import L2_EPS, AttackSpec
from .config import DataConfig, RunConfig, TrainConfig
from .evaluation import CLEAN, curve_accuracy, robust_accuracy_curve
from .methods import LABELS, MethodConfig
from .metrics import MARP_ATTACK, group_average
from .models import GROUPS, list_models

log = logging.getLogger(__name__)

TABLE1_COLUMNS = ("FGSM", "10-IFGSM", "20-IFGSM", "20-PGD", "50-PGD", "GAcc")
TABLE2_COLUMNS = ("mAP", "mARP", "precision", "recall", "f1")
PAPER_GROUPS = ("widely_used", "lightweight", "all_six")
PAPER_IMAGE_SIZE = 224  # method.md section 2: the paper's CNNs take 224 px inputs (InceptionV3 299)
PAPER_EPS0 = L2_EPS  # method.md section 4: our reading of the paper's L2 radius (training and 20/50-step PGD)
METHOD_ORDER = tuple(LABELS[m] for m in ("std", "at", "sat", "amat", "dpaat", "d-a", "d-b"))
ABLATION_LABELS = {"at": "AT", "d-a": "D-A", "d-b": "D-B", "dpaat": "D-(A+B) = DPAAT"}
DEFAULT_EPS = {"linf": (0.0, 1 / 255, 2 / 255, 4 / 255, 8 / 255), "l2": (0.0, 0.25, 0.5, 1.0, 1.5)}
CURVE_ATTACK = {"linf": "20-IFGSM", "l2": "20-PGD"}
CHAPTERS = ("01_overview", "02_data", "03_methods", "04_robustness", "05_precision", "06_confusion",
            "07_ablation", "08_gradcam", "09_dynamics", "10_reproducibility", "11_strong_attacks", "12_study")


# --------------------------------------------------------------------------
# Paths and the grid
# --------------------------------------------------------------------------

def repo_root() -> Path:
    """The checkout: the folder above this package if it holds pyproject.toml (an
    editable install), else the first folder upwards from the working directory
    that holds pyproject.toml, else the working directory."""
    here = Path(__file__).resolve().parents[1]
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


def results_dir(prof: profiles.Profile, results_root=None) -> Path:
    """Where a profile's runs live: ``<results_root>/<profile name>`` (default ``<repo>/results/<name>``)."""
    return resolve_path(results_root, "results") / prof.name


def make_profile(profile: str = "quick", *, data_root=None, models=None, **overrides) -> profiles.Profile:
    """The profile with its overrides; see :func:`dpaat_lib.profiles.profile_for`. ``models``, a page's CNNs
    (``-p models '[resnet50]'``; one name or a list; empty or None: the profile's), become the profile's models
    and ablation models, so that the banner, the deviations and the figures' choice of CNN name the CNNs the
    page ran."""
    if models:
        models = (models,) if isinstance(models, str) else tuple(models)
        unknown = [m for m in models if m not in list_models()]
        if unknown:
            raise ValueError(f"unknown model(s) {unknown} in models={list(models)}; choose from {list_models()}, "
                             "or register another (dpaat_lib.models.register_model, $DPAAT_MODELS)")
        overrides.update(models=models, ablation_models=models)
    return profiles.profile_for(profile, data_root, **overrides)


def load_grid(profile: str = "quick", *, data_root=None, results_root=None, models=None,
              methods: Sequence[str] | None = profiles.MAIN_METHODS, seeds=None, device: str = "cpu",
              cache_dir=None, stored_only: bool = False, weights=None,
              **overrides) -> tuple[profiles.Profile, list[experiment.RunResult]]:
    """Load (or train and evaluate) a profile's grid; returns (profile, results in config order).

    ``overrides`` are Profile fields (``image_size``, ``epochs`` ...); None
    values are ignored. Results go to ``<results_root>/<profile>``. Nothing is
    printed: the progress of a long run goes to the ``dpaat_lib.report``
    logger, so executed notebooks do not depend on whether a run was trained
    or loaded. ``stored_only``: train nothing; return the finished runs the
    results folder holds (possibly none). On a CPU the process computes with the
    profile's ``cpu_threads`` (:func:`dpaat_lib.profiles.pin_cpu_threads`), so that
    a run trained here reproduces the committed one. ``weights``: None (from scratch), ``"imagenet"`` or a folder
    of ``<model>.pth`` files, the starting weights of two-phase fine-tuning (:func:`dpaat_lib.pretrained.configure`;
    part of each run's identity).
    """
    prof = make_profile(profile, data_root=data_root, seeds=seeds, models=models, **overrides)
    profiles.pin_cpu_threads(prof, device)
    root = resolve_path(data_root)
    out = results_dir(prof, results_root)
    data = experiment.resolve_data(profiles.data_config(prof), root, out, cache_dir)
    cfgs = profiles.configs(prof, data, methods=tuple(methods or profiles.MAIN_METHODS))  # prof.models: the page's
    cfgs, weight_files = pretrained.configure(cfgs, weights)
    if stored_only:
        return prof, [r for r in (experiment.load_result(c, out) for c in cfgs) if r is not None]
    if prof.gpu and str(device) == "cpu":
        absent = [c.run_id for c in cfgs if experiment.load_result(c, out) is None]
        if absent:
            raise RuntimeError(
                f"{len(absent)} run(s) of the GPU-sized profile {prof.name!r} are not in {out} "
                f"({', '.join(absent[:3])}{', ...' if len(absent) > 3 else ''}), and this page would train them "
                "on the CPU. Train them on a GPU (device='cuda', or scripts/device_grid.sh: README, 'On a GPU'), "
                "or, if you mean days of CPU time, with `dpaat grid --profile "
                f"{prof.name} --device cpu`.")
    done = grid.run_grid(cfgs, results=out, data_root=root, device=device, cache_dir=cache_dir, progress=False,
                         log=log.info, weights_path=weight_files or None)
    missing = [c.run_id for c in cfgs if c.run_id not in done]
    if missing:
        raise RuntimeError(f"{len(missing)} run(s) of profile {prof.name!r} did not finish: {missing[:3]}")
    return prof, [done[c.run_id] for c in cfgs]


def stored_book_runs(profile: str = "paper", results_root=None) -> tuple[profiles.Profile, list[RunConfig],
                                                                         list[experiment.RunResult]]:
    """The runs of a profile's book grid (main grid and ablation) that its results folder already holds,
    loaded without data and without training anything: (profile, every configuration, the finished
    runs in configuration order). For a grid that is filled over several GPU calls."""
    prof = make_profile(profile)
    out = results_dir(prof, results_root)
    data = experiment.resolve_data(profiles.data_config(prof), None, out)
    cfgs = profiles.book_configs(prof, data)
    found = [experiment.load_result(c, out) for c in cfgs]
    return prof, cfgs, [r for r in found if r is not None]


STOPPED_EARLY = "stopped early"  # how scripts/device_grid.sh's record of a call stopped early begins its note


def grid_calls(results_dir) -> pd.DataFrame:
    """The GPU calls that filled a results folder, one row each, from its ``calls.jsonl`` (written by
    scripts/device_grid.sh): card, processes, compile mode, last call of a session or not, runs
    trained, seconds of wall time. Empty when no call is recorded. A call stopped before it could append its
    line (the device tool's limit came first) is read from the record its partial archive brought back,
    ``logs/call-<start>.json``, whose seconds are a lower bound (its note says so)."""
    path = Path(results_dir) / "calls.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []
    recorded = {r["start"] for r in rows}
    stopped = [json.loads(p.read_text()) for p in sorted((Path(results_dir) / "logs").glob("call-*.json"))]
    rows = sorted(rows + [r for r in stopped if r["start"] not in recorded], key=lambda r: r["start"])
    cols = ["card", "workers", "compile", "final", "runs_trained", "seconds", "note"]
    out = pd.DataFrame(rows, columns=["start", *cols])
    out["compile"] = out["compile"].fillna("").replace("", "eager")
    out["note"] = out["note"].fillna("")
    return out[cols]


def grid_time_findings(calls: pd.DataFrame, finished: int, total: int, goal_min: float = 30.0,
                       left: int | None = None, expected_card_s: float | None = None) -> str:
    """The grid's GPU time so far against the project's goal (the whole grid in ``goal_min`` minutes of
    one GPU), from :func:`grid_calls`. ``left``: the runs still to train, where it differs from
    ``total - finished`` (a stored run whose extras were lost with its checkpoint is trained again);
    ``expected_card_s``: the seconds of one card the plan expects for them (:func:`dpaat_lib.precompute.plan_table`'s
    process-seconds over its processes), to say whether the goal can still be met."""
    if calls.empty:
        return "No GPU call is recorded yet."
    minutes = calls["seconds"].sum() / 60
    cards = ", ".join(dict.fromkeys(calls["card"]))
    left = total - finished if left is None else left
    early = int(calls["note"].str.startswith(STOPPED_EARLY).sum())
    text = (f"{len(calls)} GPU call(s) ({cards}) have run {minutes:.1f} minutes of wall time in all"
            + (f" ({early} of them stopped early by the device tool, counted up to their last partial pack: a lower "
               "bound)" if early else "") + f"; {finished} of "
            f"the {total} runs are stored"
            + (f", {left - (total - finished)} of them to train again (their stored extras were lost with their "
               "checkpoints)" if left > total - finished else "")
            + f". The project's goal is the whole grid in {goal_min:g} minutes of one GPU")
    if not left:
        return text + (": met." if minutes <= goal_min else f": missed by {minutes - goal_min:.1f} minutes.")
    if minutes > goal_min:
        return text + f": already exceeded by {minutes - goal_min:.1f} minutes, with {left} runs still to train."
    text += f": {goal_min - minutes:.1f} minutes are left for the {left} runs still to train"
    if expected_card_s is not None:
        need = expected_card_s / 60
        text += (f"; the plan expects about {need:.0f} minutes of the card for them, so the goal "
                 + ("can still be met" if need <= goal_min - minutes else
                    f"will be missed by about {need - (goal_min - minutes):.0f} minutes"))
    return text + "."


def grid_window_findings(plan: pd.DataFrame, window_s: float = 500.0, sharing: int = 8) -> str:
    """What is left of a grid against the length of one GPU call, from :func:`dpaat_lib.precompute.plan_table`
    at ``sharing`` processes. A lent machine's checkpoints do not outlive it, so a run must finish within
    one call: ``window_s`` is about what ``TOTAL=570 bash scripts/device_session.sh`` leaves a run (570 s
    less preparing the data and the last 25 s). Runs alone on the card take 1/sqrt(sharing) of the
    time (:func:`dpaat_lib.grid._share_factor`, the grid's own model of sharing)."""
    left = plan[plan["state"] != "done"]
    if left.empty:
        return "Nothing of the grid is left to train."
    known = left[left["seconds"].notna()]
    est = known["seconds"].astype(float)
    model = known["run"].str.split("-").str[0]
    alone = est * grid._share_factor(sharing, 1)
    fits, fits_alone = est <= window_s, (alone <= window_s) & (est > window_s)
    never = alone > window_s

    def models(mask) -> str:
        counts = model[mask].value_counts(sort=False)
        return and_list([f"{m} ({n})" for m, n in counts.items()]) if len(counts) else "none"

    text = (f"**What is left, against one call.** {len(left)} runs are left to train (those whose extras were "
            f"lost with their checkpoint included): {est.sum():,.0f} process-seconds expected at {sharing} "
            f"processes (`dpaat grid --plan --sharing {sharing}`, from the stored runs and the benchmark), about "
            f"{est.sum() / sharing / 60:.0f} minutes of one card with {sharing} runs sharing it. A lent machine's "
            f"checkpoints do not outlive it, so a run must finish within one call, which leaves a run about "
            f"{window_s:.0f} s. At {sharing} processes {int(fits.sum())} of them fit: {models(fits)}.")
    if fits_alone.any():
        text += f" {int(fits_alone.sum())} more would fit alone on the card: {models(fits_alone)}."
    if never.any():
        text += (f" {int(never.sum())} would not even alone: {models(never)}, {alone[never].min():.0f} to "
                 f"{alone[never].max():.0f} s each.")
    if len(known) < len(left):
        text += f" {len(left) - len(known)} have no estimate (no stored run or benchmark of their CNN)."
    if fits_alone.any():
        text += (" The last call of a GPU session gives those fewer processes once the shorter runs are done "
                 "(`WORKERS=auto`, `dpaat grid --workers-for`).")
    if never.any():
        text += (" The others need CUDA graphs (`COMPILE=auto`, decided by `scripts/device_check.sh` in the "
                 "first GPU session) to shorten them enough, a GPU session longer than one call, or a machine "
                 "that keeps its checkpoints.")
    return text


def grid_progress(configs: Sequence[RunConfig], finished: Sequence[experiment.RunResult]) -> pd.DataFrame:
    """Which runs of a grid are finished: rows the models, columns the methods; "done", "—" (still to
    run), or empty where the grid has no such run."""
    done = {r.run_id for r in finished}
    models = list(dict.fromkeys(c.model for c in configs))
    methods = sorted(dict.fromkeys(LABELS[c.method.name] for c in configs), key=method_key)
    table = pd.DataFrame("", index=pd.Index(models, name="model"), columns=methods)
    for c in configs:
        table.loc[c.model, LABELS[c.method.name]] = "done" if c.run_id in done else "—"
    return table


def model_table(model_names: Sequence[str], image_size: int, num_classes: int = 3) -> pd.DataFrame:
    """The CNNs of a profile: whether the paper uses them, their parameters, and the Grad-CAM target layer
    with the size of its map at ``image_size`` (what chapter 8's maps can resolve)."""
    import torch

    from . import models as MD

    rows = []
    for name in model_names:
        model = MD.build_model(name, num_classes).eval()
        layer = MD.gradcam_target_layer(model, name)
        params = sum(p.numel() for p in model.parameters())
        if image_size < MD.min_input_size(name):
            cam = f"needs >= {MD.min_input_size(name)} px"
        else:
            shape = []
            hook = layer.register_forward_hook(lambda m, i, o: shape.append(tuple(o.shape[-2:])))
            with torch.no_grad():
                model(torch.zeros(1, 3, image_size, image_size))
            hook.remove()
            cam = f"{shape[0][0]} x {shape[0][1]}"
        origin = MD.registered_by(name)
        rows.append({"model": name, "in the paper": "yes" if name in MD.PAPER_MODELS else
                     "no (this book's)" if name == "smallcnn" else f"no (from {origin})" if origin else "no",
                     "parameters": f"{params / 1e6:.2f} M", "Grad-CAM layer": MD.gradcam_layer_path(name),
                     f"Grad-CAM map at {image_size} px": cam})
    return pd.DataFrame(rows).set_index("model")


def profile_banner(prof: profiles.Profile, results: Sequence[experiment.RunResult] | None = None):
    """A Markdown box saying which profile produced the page, and whether its data are synthetic."""
    from IPython.display import Markdown

    if prof.synthetic:
        data = ("**SYNTHETIC data**: procedurally drawn stand-in lesions in HAM10000's layout, *not* "
                "HAM10000. Every number on this page is a synthetic result that says nothing about "
                "dermoscopy or about the paper's claims; it only shows that the pipeline runs end to end.")
    else:
        data = f"**real HAM10000** ({len(prof.classes)} classes: {', '.join(prof.classes)})"
    lines = [f"> **Profile `{prof.name}`** | data: {data}",
             ">",
             f"> resolution {prof.image_size} px | models: {', '.join(prof.models)} | "
             f"ablation models: {', '.join(prof.ablation_models)} | up to {prof.epochs} epochs "
             f"(patience {prof.patience}) | seeds: {', '.join(map(str, prof.seeds))} | "
             f"{prof.split_text()} | "
             f"{'lesion-aware' if prof.lesion_aware else 'image-level'} split | "
             f"training attack PGD-L2 eps0 = {radius_text(prof.eps0)}, {prof.train_steps} steps of "
             f"{radius_text(prof.train_step_size)}"]
    if results:
        lines[-1] += f" | {len(results)} run(s) on this page"
        starts = {r.config.train.weights for r in results}
        if starts != {None}:  # the default, from scratch, is said by the deviations list
            lines[-1] += " | " + "; ".join(pretrained.describe(w, results[0].config.train.head_epochs)
                                           for w in sorted(starts, key=str))
    if prof.eps0 != PAPER_EPS0:
        lines[-1] += (f" | eps0 = {radius_text(prof.eps0)} is not the paper's {PAPER_EPS0}: the L2 threat (training "
                      f"and the PGD columns) is {l2_strength_text(prof.eps0, prof.image_size)} (chapter 3)")
    elif prof.image_size != PAPER_IMAGE_SIZE:
        lines[-1] += (f" | at {prof.image_size} px the L2 radius is {PAPER_IMAGE_SIZE / prof.image_size:.1f} times "
                      f"stronger per pixel than at the paper's {PAPER_IMAGE_SIZE} px (chapter 3)")
    return Markdown("\n".join(lines))


def l2_rms_per_value(eps: float, size: int) -> float:
    """Root-mean-square change per value, in 1/255, of an L2 perturbation of norm ``eps`` on a 3 x size x size
    image: the norm spread over all 3 size^2 values."""
    return 255 * eps / math.sqrt(3 * size * size)


def l2_strength(eps: float, size: int) -> float:
    """How many times the paper's L2 threat per pixel (:data:`PAPER_EPS0` at :data:`PAPER_IMAGE_SIZE` px) an L2
    radius ``eps`` is at ``size`` px: the ratio of their root-mean-square changes per value."""
    return l2_rms_per_value(eps, size) / l2_rms_per_value(PAPER_EPS0, PAPER_IMAGE_SIZE)


def l2_strength_text(eps: float, size: int) -> str:
    """:func:`l2_strength` in words: "14 times the paper's per pixel", or "the paper's per pixel" for a radius
    scaled to the resolution (within 5%)."""
    strength = l2_strength(eps, size)
    return ("the paper's per pixel (the radius scaled to this resolution)" if abs(strength - 1) < 0.05 else
            f"{strength:.2g} times the paper's per pixel")


def radius_text(eps: float) -> str:
    """An L2 radius or step as the pages print it: at most 4 decimals (0.0714 for 0.5 x 32 / 224), 1.0 as 1.0."""
    return str(round(float(eps), 4))


def threat_scale_note(cfg: RunConfig, paper_size: int = PAPER_IMAGE_SIZE) -> str:
    """What the configured radii mean at this resolution, against the paper's (Markdown).

    An L2 radius is spread over all 3 x s x s values of an image, so the same eps0 is a larger change per
    value at a smaller size (root-mean-square eps0 / sqrt(3 s^2)), while an Linf radius bounds each value
    alone and so allows a larger L2 distance (eps sqrt(3 s^2)) at a larger size. At 32 px the two threat
    models therefore swap weight against the paper's 224 px, and a level compared with the paper's
    says little; directions and rankings still do."""
    s = cfg.data.image_size
    d, d_paper = 3 * s * s, 3 * paper_size * paper_size
    l2 = sorted({a.eps for a in (cfg.method.attack, *cfg.eval_attacks) if a.norm == "l2"})
    linf = sorted({a.eps for a in cfg.eval_attacks if a.norm == "linf"})
    other = [e for e in l2 if e != PAPER_EPS0]  # a radius given as a parameter (-p eps0)
    if s == paper_size and not other:
        return (f"**The threat at {s} px**, the paper's resolution: each radius means here what it means in the "
                "paper as we read it.")
    parts = [f"**The threat at {s} px.** The paper's CNNs see {paper_size} px images; this profile's see {s} px."
             if s != paper_size else f"**The threat at {s} px**, the paper's resolution."]
    for e in l2:
        rms, rms_paper = l2_rms_per_value(e, s), l2_rms_per_value(PAPER_EPS0, paper_size)
        if e == PAPER_EPS0:
            parts.append(f"An L2 radius of {e:g} is spread over all 3 x {s} x {s} = {d} values: a root-mean-square "
                         f"change of {rms:.2f}/255 per value, against {rms_paper:.2f}/255 at {paper_size} px, "
                         f"so the L2 threat (training and the PGD columns) is {rms / rms_paper:.1f} times stronger "
                         "per pixel here.")
        else:
            parts.append(f"The L2 radius here is {radius_text(e)}, not the paper's {PAPER_EPS0:g} as we read it; "
                         f"spread over all 3 x {s} x {s} = {d} values it is a root-mean-square change of "
                         f"{rms:.2f}/255 per value, against the paper's {rms_paper:.2f}/255, so the L2 threat "
                         f"(training and the PGD columns) is {l2_strength_text(e, s)}.")
    for e in linf:
        parts.append(f"An Linf radius of {255 * e:g}/255 bounds each value alone, so it reaches an L2 distance of at "
                     f"most {e * math.sqrt(d):.2f} here against {e * math.sqrt(d_paper):.2f} at {paper_size} px: the "
                     "FGSM and I-FGSM columns are a weaker threat here than in the paper.")
    parts.append(("The two kinds of columns therefore weigh differently from the paper's: compare our levels with "
                  "the paper's only in direction and ranking. " if s != paper_size else
                  "Compare the FGSM and I-FGSM columns with the paper's; the others only in direction and ranking. ")
                 + "The L2 radius and the resolution are parameters of the chapters (`papermill -p eps0 1.0`; "
                 "`-p image_size 224`, the paper's resolution); chapter 12 (e) trains the five methods again with "
                 "the L2 radius scaled to the paper's change per pixel.")
    return " ".join(parts)


def md(text: str):
    """``IPython.display.Markdown`` (imported late so the module works without IPython)."""
    from IPython.display import Markdown

    return Markdown(text)


# --------------------------------------------------------------------------
# The paper's tables
# --------------------------------------------------------------------------

def _paper_csv(name: str) -> pd.DataFrame:
    return pd.read_csv(Path(__file__).with_name("paper_tables") / name)


def paper_table1() -> pd.DataFrame:
    """The paper's Table I (percent): group, method, FGSM, 10-IFGSM, 20-IFGSM, 20-PGD, 50-PGD, GAcc."""
    return _paper_csv("table1_robustness.csv")


def paper_table2() -> pd.DataFrame:
    """The paper's Table II (fractions): group, method, mAP, mARP, precision, recall, f1 (no STD row)."""
    return _paper_csv("table2_precision.csv")


def paper_value(table: str, group: str, method: str, column: str) -> float:
    """One number of the paper's Table I ("I") or II ("II"); NaN when the paper has none."""
    t = paper_table1() if table == "I" else paper_table2()
    row = t[(t["group"] == group) & (t["method"] == method)]
    return float(row[column].iloc[0]) if len(row) else float("nan")


def paper_consistency(table: str = "I", tolerance: float | None = None) -> pd.DataFrame:
    """Cells of the paper's "all six" row that are not the mean of its two 3-CNN groups.

    Both groups hold three CNNs, so the all-six average of any column must equal the mean of the two
    group averages (up to the paper's rounding), and can never lie outside their range. Returns one row
    per cell off by more than ``tolerance`` (default: 0.05 points for Table I, 0.0005 for Table II, a
    bit over the rounding of the published digits): method, column, the two groups, their mean, the
    paper's all-six value and whether it lies outside the groups' range."""
    t = paper_table1() if table == "I" else paper_table2()
    tol = tolerance if tolerance is not None else (0.05 if table == "I" else 0.0005)
    cols = [c for c in (TABLE1_COLUMNS if table == "I" else TABLE2_COLUMNS) if c in t.columns]
    rows = []
    for method in t["method"].unique():
        sub = t[t["method"] == method].set_index("group")
        if not {"widely_used", "lightweight", "all_six"} <= set(sub.index):
            continue
        for c in cols:
            a, b, six = (float(sub.loc[g, c]) for g in ("widely_used", "lightweight", "all_six"))
            mean = (a + b) / 2
            if abs(six - mean) > tol:
                rows.append({"method": method, "column": c, "widely_used": a, "lightweight": b,
                             "mean of the groups": round(mean, 4), "paper all_six": six,
                             "outside the groups' range": not min(a, b) <= six <= max(a, b)})
    return pd.DataFrame(rows)


def paper_consistency_note(table: str = "I") -> str:
    """:func:`paper_consistency` in words, for the page that compares with the paper's all-six row."""
    off = paper_consistency(table)
    if off.empty:
        return f"Every all-six value of the paper's Table {table} is the mean of its two 3-CNN groups."
    unit = " points" if table == "I" else ""
    fmt_v = (lambda v: f"{v:.2f}") if table == "I" else (lambda v: f"{v:.4f}")
    outside = off[off["outside the groups' range"]]
    items = [f"{r['method']} {r['column']} {fmt_v(r['paper all_six'])} (groups {fmt_v(r['widely_used'])} and "
             f"{fmt_v(r['lightweight'])}, mean {fmt_v(r['mean of the groups'])})" for _, r in off.iterrows()]
    worst = float((off["paper all_six"] - off["mean of the groups"]).abs().max())
    return (f"**A check of the paper's own Table {table}.** Both of its groups hold three CNNs, so each all-six "
            f"value should be the mean of the two group values. {len(off)} are not: " + "; ".join(items)
            + f". The largest gap is {fmt_v(worst)}{unit}"
            + (f", and {len(outside)} of them {'lies' if len(outside) == 1 else 'lie'} outside the range of the "
               "two groups, which no average can do" if len(outside) else "")
            + ". We compare with the paper's values as printed; where a gap above matters, the group columns "
              "are the paper's other reading.")


def paper_table1_findings(group: str = "all_six") -> str:
    """What the paper's Table I says for ``group`` (Markdown), computed from it: STD's fall, whether DPAAT
    leads every attack column, and in how many methods 20- and 50-step PGD agree."""
    t = paper_table1()
    t = t[t["group"] == group].set_index("method")
    attacks = [c for c in TABLE1_COLUMNS if c != "GAcc"]
    lead = [c for c in attacks if t[c].idxmax() == "DPAAT"]
    same = [m for m in t.index if t.loc[m, "20-PGD"] == t.loc[m, "50-PGD"]]
    higher50 = [m for m in t.index if t.loc[m, "50-PGD"] > t.loc[m, "20-PGD"]]
    text = (f"In the paper ({group.replace('_', ' ')}) STD falls from {t.loc['STD', 'GAcc']:.2f}% clean to "
            f"{t.loc['STD', '20-IFGSM']:.2f}% under 20-step I-FGSM; DPAAT has the highest robust accuracy in "
            f"{len(lead)} of its {len(attacks)} attack columns"
            + (f" (not in {', '.join(c for c in attacks if c not in lead)})" if len(lead) < len(attacks) else "")
            + f". Its 20- and 50-step PGD columns are identical for {len(same)} of its {len(t)} methods"
            + (f" ({', '.join(same)})" if same else ""))
    if higher50:
        text += (f", and for {', '.join(higher50)} 50 steps give a *higher* accuracy than 20, which a longer run "
                 "of the same attack should not give (only a different random start can)")
    return text + "."


def pgd_steps_sentence(results: Sequence[experiment.RunResult]) -> str:
    """Ours, seed means per model and method: 20- against 50-step PGD accuracy (percent)."""
    s = summary(results, ["20-PGD", "50-PGD"])["mean"]
    return "; ".join(f"{model} {method} {100 * row['20-PGD']:.1f} vs {100 * row['50-PGD']:.1f}"
                     for (model, method), row in s.iterrows())


# --------------------------------------------------------------------------
# Our numbers
# --------------------------------------------------------------------------

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


def _table_spec(table: str) -> tuple[tuple[str, ...], float, int]:
    if table == "I":
        return TABLE1_COLUMNS, 100.0, 1
    if table == "II":
        return TABLE2_COLUMNS, 1.0, 3
    raise ValueError(f"table must be 'I' or 'II', got {table!r}")


def mean_std_table(runs: pd.DataFrame, columns: Sequence[str], scale: float = 100.0, digits: int = 1) -> pd.DataFrame:
    """The book's one "mean ± std over seeds" table. ``runs``: one row per run with ``model``, ``method``
    (label) and ``columns`` (fractions). Per (model, method): each column as :func:`fmt` writes it (the
    sample std over the seeds, none for one seed) and the number of seeds; the CNNs in the order they
    first appear in ``runs``, the methods in the paper's order."""
    columns = [c for c in columns if c in runs.columns]
    if runs.empty:
        return pd.DataFrame(columns=[*columns, "seeds"])
    s = frame_summary(runs, columns)
    n = s[("n", "")]
    out = pd.DataFrame({c: [fmt(m, sd, k, scale, digits) for m, sd, k in zip(s[("mean", c)], s[("std", c)], n)]
                        for c in columns}, index=s.index)
    out["seeds"] = n
    rank = {m: k for k, m in enumerate(dict.fromkeys(runs["model"]))}
    return out.loc[sorted(out.index, key=lambda k: (rank[k[0]], method_key(k[1])))]


def ours_table(results: Sequence[experiment.RunResult], table: str = "I") -> pd.DataFrame:
    """Our per-model table: rows (model, method), columns the paper's; Table I in percent, Table II as
    fractions (the paper's scales); mean ± std over seeds when there are several (:func:`mean_std_table`)."""
    cols, scale, digits = _table_spec(table)
    return mean_std_table(results_frame(results), cols, scale, digits)


def complete_groups(models: Iterable[str]) -> list[str]:
    """The paper's CNN groups whose every model is in ``models``."""
    have = set(models)
    return [g for g, members in GROUPS.items() if set(members) <= have]


def group_note(models: Iterable[str]) -> str:
    """One sentence on which of the paper's groups our models complete."""
    models = list(dict.fromkeys(models))
    full = complete_groups(models)
    if full:
        return (f"Our group averages cover {', '.join(full)} (all their models are in this profile); "
                "other groups are not averaged.")
    return (f"This profile's models ({', '.join(models)}) complete none of the paper's groups "
            f"(widely used = {', '.join(GROUPS['widely_used'])}; lightweight = "
            f"{', '.join(GROUPS['lightweight'])}), so our numbers are per model and the paper's are "
            "group averages: the columns compare a method's ranking, not the same quantity.")


def ours_group_average(results: Sequence[experiment.RunResult], table: str = "I") -> pd.DataFrame:
    """Our group averages (over models of seed-means), only for complete groups (metrics.group_average)."""
    cols, _, _ = _table_spec(table)
    s = summary(results, cols)["mean"].reset_index()
    return group_average(s, GROUPS)


def side_by_side(results: Sequence[experiment.RunResult], table: str = "I",
                 paper_groups: Sequence[str] = PAPER_GROUPS, metrics: Sequence[str] | None = None) -> pd.DataFrame:
    """Ours beside the paper's: rows (metric, method); columns ``ours: <model>`` (mean ± std over
    seeds), ``ours: <group>`` (complete groups only), ``paper: <group>``. Formatted strings."""
    cols, scale, digits = _table_spec(table)
    cols = [c for c in (metrics or cols) if c in cols]
    paper = paper_table1() if table == "I" else paper_table2()
    s = summary(results, cols)
    models = list(dict.fromkeys(s.index.get_level_values("model")))
    methods = sorted(dict.fromkeys(s.index.get_level_values("method")), key=method_key)
    groups = ours_group_average(results, table)
    rows = {}
    for c in cols:
        if c not in s["mean"].columns:
            continue
        for m in methods:
            row = {}
            for mod in models:
                key = (mod, m)
                row[f"ours: {mod}"] = (fmt(s.loc[key, ("mean", c)], s.loc[key, ("std", c)],
                                           int(s.loc[key, ("n", "")]), scale, digits) if key in s.index else "—")
            for g in complete_groups(models):
                sub = groups[(groups["group"] == g) & (groups["method"] == m)] if len(groups) else groups
                row[f"ours: {g}"] = fmt(float(sub[c].iloc[0]), scale=scale, digits=digits) if len(sub) else "—"
            for g in paper_groups:
                p = paper[(paper["group"] == g) & (paper["method"] == m)]
                # as published: Table I in percent with 2 decimals, Table II as fractions with 4
                row[f"paper: {g}"] = fmt(float(p[c].iloc[0]), scale=1.0, digits=2 if table == "I" else 4) \
                    if len(p) else "—"
            rows[(c, m)] = row
    out = pd.DataFrame.from_dict(rows, orient="index")
    out.index = pd.MultiIndex.from_tuples(out.index, names=["metric", "method"])
    return out


def headline(results: Sequence[experiment.RunResult], group: str = "all_six") -> pd.DataFrame:
    """The one-table summary of chapter 1: GAcc and 20-PGD RAcc per method, ours per model and the
    paper's ``group`` average."""
    return side_by_side(results, "I", paper_groups=(group,), metrics=("GAcc", "20-PGD"))


# --------------------------------------------------------------------------
# Comparing two methods honestly
# --------------------------------------------------------------------------

def _mcnemar_p(b: int, c: int) -> float:
    """Exact two-sided McNemar p-value from the discordant counts b, c."""
    from scipy.stats import binomtest

    n = b + c
    return 1.0 if n == 0 else float(binomtest(min(b, c), n, 0.5).pvalue)


def paired_comparison(results: Sequence[experiment.RunResult], a: str = "DPAAT", b: str = "AT",
                      attacks: Sequence[str] = (CLEAN, "20-PGD")) -> pd.DataFrame:
    """Method ``a`` minus method ``b`` per model, seed and attack, on the same test images.

    Columns: model, seed, attack, acc_a, acc_b, diff (points), a_only / b_only (images that only one of
    them gets right) and the exact McNemar p-value. The test only covers the test-set sampling of
    one training run per method; variation between training seeds is not in it.
    """
    by = {(r.config.model, r.config.method.label, r.config.train.seed): r for r in results}
    rows = []
    for (model, meth, seed), ra in by.items():
        if meth != a or (model, b, seed) not in by:
            continue
        rb = by[(model, b, seed)]
        pa = ra.predictions.set_index("image_id")
        pb = rb.predictions.set_index("image_id").loc[pa.index]
        for att in attacks:
            ca = (pa[f"pred_{att}"] == pa["label"]).to_numpy()
            cb = (pb[f"pred_{att}"] == pb["label"]).to_numpy()
            a_only, b_only = int((ca & ~cb).sum()), int((~ca & cb).sum())
            rows.append({"model": model, "seed": seed, "attack": "GAcc" if att == CLEAN else att,
                         "acc_a": ca.mean(), "acc_b": cb.mean(), "diff": 100 * (ca.mean() - cb.mean()),
                         "a_only": a_only, "b_only": b_only, "p": _mcnemar_p(a_only, b_only),
                         "n_test": len(ca)})
    return pd.DataFrame(rows)


def _p_text(p: float) -> str:
    return "p < 0.001" if p < 0.001 else f"p = {p:.3f}"


def _attack_name(attack: str) -> str:
    return "GAcc" if attack == CLEAN else attack


def comparison_sentence(results: Sequence[experiment.RunResult], a: str = "DPAAT", b: str = "AT",
                        attacks: Sequence[str] = (CLEAN, "20-PGD"), alpha: float = 0.05) -> str:
    """Plain-language comparison of method ``a`` with ``b`` on the same test images, with its caveats:
    one bullet per model and attack, then a paragraph on what the test covers.

    Where both methods have two or more training seeds of a model, the seed-aware test of
    :func:`dpaat_lib.study.significance`: the mean of the per-seed differences ± their standard deviation,
    the paired t-test across seeds (the verdict: does the difference exceed seed-to-seed noise?) and the
    paired bootstrap confidence interval over test images. With one seed, :func:`paired_comparison`'s exact
    McNemar test per seed, which covers the test sample only.
    """
    from . import study

    t = paired_comparison(results, a, b, attacks)
    if t.empty:
        return f"No run pairs of {a} and {b} to compare."
    n_by_model = t.groupby("model", sort=False)["seed"].nunique()
    multi = [m for m, n in n_by_model.items() if n >= 2]
    parts, notes = [], []
    if multi:
        sig = study.significance([r for r in results if r.config.model in multi], a, b, attacks=attacks,
                                 alpha=alpha)
        sig = sig.assign(p_holm=study.holm(sig["p_ttest"].to_numpy()))
        for _, r in sig.iterrows():
            verdict = (f"beyond seed-to-seed noise ({a} {'higher' if r['mean'] > 0 else 'lower'})"
                       if r["p_holm"] < alpha else "within seed-to-seed noise")
            parts.append(f"{r['model']}, {_attack_name(r['attack'])}: {a} {r['mean']:+.1f} ± {r['seed_std']:.1f} "
                         f"points vs {b} over {r['seeds']} seeds (per seed "
                         f"{', '.join(f'{d:+.1f}' for d in r['per_seed'])}); paired t-test across seeds "
                         f"{_p_text(r['p_ttest'])}, Holm {_p_text(r['p_holm'])}, {verdict} at {alpha:g}; "
                         f"95% paired bootstrap CI over test images [{r['ci_low']:+.1f}, {r['ci_high']:+.1f}]")
        n = int(sig["seeds"].min()) if len(sig) else 0
        notes.append(f"{n} seeds per method: the verdict is the paired t-test across seeds ({n - 1} degrees of "
                     f"freedom) of the per-seed accuracy differences (mean ± standard deviation over seeds), "
                     f"Holm-adjusted for the {len(sig)} comparisons of this list: does "
                     "the difference exceed the variation between training runs? The bootstrap interval "
                     "resamples the test images within each seed and covers the test sample only. With few seeds "
                     "the t-test detects only large, consistent differences: *within noise* means not shown, "
                     "not shown equal.")
    for _, r in t[~t["model"].isin(multi)].iterrows():
        sign = "higher" if r["diff"] > 0 else ("lower" if r["diff"] < 0 else "equal")
        verdict = "not significant at 5%" if r["p"] >= 0.05 else "significant at 5% for these two runs"
        parts.append(f"{r['model']} (seed {r['seed']}), {r['attack']}: {a} {r['diff']:+.1f} points vs {b} "
                     f"({sign}; test images right only under {a}: {r['a_only']}, only under {b}: {r['b_only']}; "
                     f"McNemar p = {r['p']:.2f}, {verdict})")
    if len(multi) < len(n_by_model):
        notes.append("Single training seed per method: a difference between two training runs also contains "
                     "the run-to-run variation of training, which one seed cannot measure, so no difference "
                     "here is evidence for or against the paper.")
    return "- " + "\n- ".join(parts) + "\n\n" + " ".join(notes)


def comparison_headline(results: Sequence[experiment.RunResult], a: str = "DPAAT",
                        others: Sequence[str] = ("AT", "SAT", "AMAT"), attacks: Sequence[str] = ("20-PGD", CLEAN),
                        alpha: float = 0.05) -> str:
    """The overview's headline (Markdown): is ``a`` more robust (and more accurate) than each of ``others``
    on this profile's runs? It follows the test, whichever way it goes: the paired t-test across seeds
    where every method has two or more seeds (:func:`dpaat_lib.study.significance`), else the exact
    McNemar test on the test images (one seed, which cannot separate a method from its training run).

    The headline makes several comparisons at once, so each verdict is Holm-adjusted for their number
    (:func:`dpaat_lib.study.holm`); the unadjusted p-values are shown beside the adjusted ones."""
    from . import study

    present = {r.config.method.label for r in results}
    others = [o for o in others if o in present]
    if a not in present or not others:
        return f"No runs of {a} and {', '.join(others) or 'the other methods'} to compare."
    seeds = {}
    for r in results:
        seeds.setdefault((r.config.model, r.config.method.label), set()).add(r.config.train.seed)
    n_min = min(len(v) for (_, m), v in seeds.items() if m in (a, *others))
    multi = n_min >= 2
    what = {"20-PGD": "robust accuracy under 20-step PGD", CLEAN: "clean accuracy"}
    tests = []  # (model, attack, other, difference in points, unadjusted p)
    for model in dict.fromkeys(r.config.model for r in results):
        res = [r for r in results if r.config.model == model]
        for att in attacks:
            for o in others:
                if multi:
                    row = study.significance(res, a, o, attacks=(att,), alpha=alpha)
                    if not row.empty:
                        tests.append((model, att, o, row.iloc[0]["mean"], row.iloc[0]["p_ttest"]))
                else:
                    row = paired_comparison(res, a, o, attacks=(att,))
                    if not row.empty:
                        tests.append((model, att, o, row.iloc[0]["diff"], row.iloc[0]["p"]))
    adjusted = study.holm([t[4] for t in tests]) if tests else []
    out = []
    for model in dict.fromkeys(t[0] for t in tests):
        for att in attacks:
            up, down, flat = [], [], []
            for (m, t_att, o, d, p), p_adj in zip(tests, adjusted):
                if (m, t_att) != (model, att):
                    continue
                item = f"{o} ({d:+.1f} points, {_p_text(p)}, Holm {_p_text(p_adj)})"
                (up if p_adj < alpha and d > 0 else down if p_adj < alpha and d < 0 else flat).append(item)
            if not (up or down or flat):
                continue
            seg = []
            beyond = "beyond seed-to-seed noise" if multi else "significant on these test images"
            if up:
                seg.append(f"higher than {', '.join(up)}, {beyond}")
            if down:
                seg.append(f"lower than {', '.join(down)}, {beyond}")
            if flat:
                seg.append(("within seed-to-seed noise of " if multi else "not significantly different from ")
                           + ", ".join(flat))
            text = f"{a}'s {what.get(att, att + ' accuracy')} is " + "; ".join(seg)
            out.append((model, att, text, up, down, flat))
    test = (f"paired t-test across {n_min} training seeds" if multi else
            "exact McNemar test on the test images, one training seed per method")
    test += f", Holm-adjusted for the {len(tests)} comparisons, at {alpha:g}"
    lines = [f"{'(' + m + ') ' if len({o[0] for o in out}) > 1 else ''}{t}." for m, _, t, *_ in out]
    rob = [o for o in out if o[1] == "20-PGD"]
    if rob and all(len(o[3]) == len(others) for o in rob):
        claim = (f"The paper's headline, that {a} is more robust than {', '.join(others)}, holds "
                 + ("on these runs beyond seed-to-seed noise." if multi else
                    "for these single runs on these test images; with one training run per method it may still "
                    "be that run's luck."))
    elif rob and any(o[3] for o in rob):
        claim = (f"The paper's headline, that {a} is more robust than {', '.join(others)}, holds here only against "
                 + ", ".join(dict.fromkeys(x.split(' (')[0] for o in rob for x in o[3]))
                 + ("." if multi else " on these test images, for one training run per method."))
    elif rob:
        claim = (f"The paper's headline, that {a} is more robust than {', '.join(others)}, is not supported by "
                 "these runs" + (": no difference in its favour exceeds seed-to-seed noise." if multi else
                                 ", and one training run per method could not have shown it beyond the variation "
                                 "between training runs anyway."))
    else:
        claim = ""
    raw = sum(t[4] < alpha for t in tests)
    kept = int((np.asarray(adjusted) < alpha).sum()) if tests else 0
    if raw > kept:
        # Say what the correction removed, so a reader who reads the unadjusted p-values is not misled.
        claim += (f" Unadjusted, {raw} of the {len(tests)} comparisons would pass p < {alpha:g}; with {len(tests)} "
                  f"tests about {alpha * len(tests):.1f} pass by chance alone, and after Holm's correction {kept} "
                  f"remain{'s' if kept == 1 else ''}: the directions of the others are descriptive only.")
    return f"**Headline ({test}).** " + " ".join(lines) + (" " + claim.strip() if claim.strip() else "")


def rank_sentence(results: Sequence[experiment.RunResult], metric: str, scale: float = 100.0, digits: int = 1) -> str:
    """The methods of each model ordered by ``metric``, best first (seed means)."""
    s = summary(results, [metric])["mean"][metric]
    parts = []
    for model in dict.fromkeys(s.index.get_level_values("model")):
        sub = s.xs(model, level="model").sort_values(ascending=False)
        order = ", ".join(f"{m} {scale * v:.{digits}f}" for m, v in sub.items())
        parts.append(f"{model}: {order}")
    return "; ".join(parts)


# --------------------------------------------------------------------------
# Data: split counts and leakage (load or compute, counts only)
# --------------------------------------------------------------------------

def _digest(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:10]


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
    ``<results>/<profile>/split-summary-<hash>.json`` (counts only, no images); None when neither
    the file nor the data is there."""
    out_dir = resolve_path(results_root, "results") / profile_name
    key = _digest(data.identity())  # asdict minus fields added since at their default (config.IDENTITY_OPTIONAL)
    path = out_dir / f"split-summary-{key}.json"
    if path.exists():
        return store.read_json(path)
    root = experiment.data_root_for(data.source, resolve_path(data_root), cache_dir)
    if root is None or not (root / D.METADATA_FILE).exists():
        return None
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
    if root is None or not (root / D.METADATA_FILE).exists():
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


# --------------------------------------------------------------------------
# Robust accuracy against eps (load or compute, stored beside the run)
# --------------------------------------------------------------------------

def curve_attack(config: RunConfig, norm: str) -> AttackSpec:
    """The evaluation attack swept over eps: 20-step I-FGSM for Linf, 20-step PGD for L2."""
    name = CURVE_ATTACK[norm]
    for a in config.eval_attacks:
        if a.name == name:
            return a
    raise ValueError(f"run {config.run_id} has no {name} evaluation attack to sweep")


def eps_curve_path(config: RunConfig, results_dir, norm: str, eps_values) -> Path:
    attack = curve_attack(config, norm)
    key = _digest({"attack": attack.to_dict(), "eps": [float(e) for e in eps_values], "seed": config.train.seed})
    return Path(results_dir) / config.run_id / f"eps_curve-{norm}-{key}.json"


def eps_curve(config: RunConfig, results_dir, data_root=None, norm: str = "l2", eps_values=None,
              device: str = "cpu", *, cache_dir=None, tensors=None) -> dict | None:
    """Robust accuracy of a trained run against the radius: ``{"norm", "attack", "eps", "acc"}``.

    Loads ``<run>/eps_curve-<norm>-<hash>.json`` if present; else computes it with
    :func:`dpaat_lib.evaluation.robust_accuracy_curve` from the run's ``ckpt/best.pt`` and its test
    set, and writes the file atomically. Returns None when neither the file nor the checkpoint is
    there (checkpoints are not committed).
    """
    eps_values = tuple(float(e) for e in (DEFAULT_EPS[norm] if eps_values is None else eps_values))
    path = eps_curve_path(config, results_dir, norm, eps_values)
    if path.exists():
        return store.read_json(path)
    run = store.RunDir(results_dir, config.run_id)
    if not (run.ckpt / "best.pt").exists():
        return None
    from .training import load_trained

    if tensors is None:
        _, tensors = experiment.load_data(config.data, resolve_path(data_root), cache_dir)
    model = load_trained(config, run, device)
    attack = curve_attack(config, norm)
    known = _measured_points(run, attack, tensors["test"])
    t0 = time.perf_counter()
    acc = robust_accuracy_curve(model, tensors["test"], attack, eps_values, device=device, seed=config.train.seed,
                                known=known)
    res = {"norm": norm, "attack": attack.to_dict(), "eps": list(eps_values), "acc": [float(a) for a in acc],
           "run_id": config.run_id, "from_predictions": sorted(e for e in known if e in eps_values),
           "seconds": time.perf_counter() - t0}
    store.write_json(path, res)
    return res


def _measured_points(run: store.RunDir, attack: AttackSpec, test) -> dict[float, float]:
    """The curve's points the run's own evaluation already measured: clean accuracy at radius 0 and
    ``attack`` at its own radius, read from the run's predictions (same model, seed and batches as
    :func:`dpaat_lib.evaluation.robust_accuracy_curve` would use). Empty when the file or its columns
    are missing, or its images differ from ``test``'s."""
    path = run.predictions
    if not path.exists():
        return {}
    pred = store.read_csv(path)
    columns = {0.0: f"pred_{CLEAN}", float(attack.eps): f"pred_{attack.name}"}
    if list(pred.get("image_id", [])) != list(test.image_ids) or any(c not in pred for c in columns.values()):
        return {}
    labels = pred["label"].to_numpy()
    return {eps: curve_accuracy(pred[col].to_numpy(), labels) for eps, col in columns.items()}


def eps_curves(results: Sequence[experiment.RunResult], results_dir, data_root=None, norm: str = "l2",
               eps_values=None, device: str = "cpu", cache_dir=None) -> dict[tuple[str, str], dict]:
    """:func:`eps_curve` for every run, keyed (model, method label, seed); runs without a stored curve or a
    checkpoint are left out. The test set is decoded once per data configuration."""
    out, tensors = {}, {}
    for r in results:
        c = r.config
        path = eps_curve_path(c, results_dir, norm, DEFAULT_EPS[norm] if eps_values is None else eps_values)
        t = None
        if not path.exists() and (Path(r.path) / "ckpt" / "best.pt").exists():
            k = c.data
            if k not in tensors:
                tensors[k] = experiment.load_data(k, resolve_path(data_root), cache_dir)[1]
            t = tensors[k]
        res = eps_curve(c, results_dir, data_root, norm, eps_values, device, cache_dir=cache_dir, tensors=t)
        if res is not None:
            out[(c.model, c.method.label, c.train.seed)] = res
    return out


def eps_curve_frame(curves: dict) -> pd.DataFrame:
    """The curves as a table: rows (model, method, seed), columns eps; accuracy in percent (1 decimal)."""
    rows = {}
    for key, c in curves.items():
        unit = 255 if c["norm"] == "linf" else 1
        rows[key] = {(f"{e * 255:g}/255" if unit == 255 else f"{e:g}"): f"{100 * a:.1f}"
                     for e, a in zip(c["eps"], c["acc"])}
    out = pd.DataFrame.from_dict(rows, orient="index")
    if len(out):
        out.index = pd.MultiIndex.from_tuples(out.index, names=["model", "method", "seed"])
    return out


def eps_curve_findings(curves: dict, eps_ref: float, a: str = "DPAAT", b: str = "AT") -> str:
    """How ``a`` and ``b`` compare along the radius sweep of :func:`eps_curves` (one sentence per norm):
    at how many radii at or above ``eps_ref`` ``a`` is ahead, and by how much at each."""
    if not curves:
        return ""
    norm = next(iter(curves.values()))["norm"]
    unit = (lambda e: f"{e * 255:g}/255") if norm == "linf" else (lambda e: f"{e:g}")
    parts = []
    for model in dict.fromkeys(k[0] for k in curves):
        ca = next((c for k, c in curves.items() if k[0] == model and k[1] == a), None)
        cb = next((c for k, c in curves.items() if k[0] == model and k[1] == b), None)
        if ca is None or cb is None:
            continue
        pts = [(e, 100 * (x - y)) for e, x, y in zip(ca["eps"], ca["acc"], cb["acc"]) if e >= eps_ref - 1e-12]
        if not pts:
            continue
        ahead = sum(d > 0 for _, d in pts)
        parts.append(f"{model}: {a} is ahead of {b} at {ahead} of the {len(pts)} radii from {unit(eps_ref)} up ("
                     + ", ".join(f"{unit(e)}: {d:+.1f}" for e, d in pts) + " points)")
    if not parts:
        return ""
    return f"In {'Linf' if norm == 'linf' else 'L2'}, " + "; ".join(parts) + "."


# --------------------------------------------------------------------------
# Grad-CAM (thin wrapper over dpaat_lib.gradcam)
# --------------------------------------------------------------------------

def figure_models(prof: profiles.Profile, n: int = 2) -> list[str]:
    """The models a per-model figure shows: the paper's two representative CNNs (ResNet34,
    MobileNetV2) where the profile has them, then the profile's other models, ``n`` at most."""
    paper = [m for m in ("resnet34", "mobilenet_v2") if m in prof.models]
    return (paper + [m for m in prof.models if m not in paper])[:n]


def gradcam_selection(results: Sequence[experiment.RunResult], model: str, n_per_class: int = 2,
                      methods: Sequence[str] = ("STD", "AT", "DPAAT"), seed: int = 0,
                      pool: int | None = None, figure: bool = False) -> tuple[list[str], str]:
    """Test images of ``model`` predicted correctly by all ``methods`` (first-seed runs), ``n_per_class``
    per class, among the first ``pool`` candidates of each class (default: the
    ``gradcam.CANDIDATES_PER_CLASS`` whose scores every run stores, or for a ``figure`` the
    ``gradcam.THUMBNAILS_PER_CLASS`` whose thumbnails it stores; ``n_per_class`` if more); if a class
    has too few, images correct under the last method alone. Returns (ids, note)."""
    from . import gradcam

    if pool is None:
        pool = max(gradcam.THUMBNAILS_PER_CLASS if figure else gradcam.CANDIDATES_PER_CLASS, n_per_class)
    runs = {r.config.method.label: r for r in results if r.config.model == model and r.config.train.seed ==
            min(rr.config.train.seed for rr in results)}
    classes = next(iter(runs.values())).config.data.classes
    frames = [runs[m].predictions for m in methods if m in runs]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ids = gradcam.select_correct(frames, n_per_class, classes, seed=seed, pool=pool)
    note = (f"images correctly classified (clean) by all of {', '.join(m for m in methods if m in runs)}, "
            f"chosen at random (seeded) among {pool} candidates per class")
    if caught or len(ids) < n_per_class * len(classes):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ids = gradcam.select_correct(runs[methods[-1]].predictions, n_per_class, classes, seed=seed,
                                         pool=pool) if methods[-1] in runs else ids
        note = (f"images correctly classified (clean) by {methods[-1]}, because too few of the {pool} candidates "
                f"per class are correct under all of {', '.join(methods)}")
    return ids, note


def gradcam_results(results: Sequence[experiment.RunResult], model: str, image_ids: Sequence[str],
                    results_dir, data_root=None, device: str = "cpu", methods=("STD", "AT", "DPAAT"),
                    cache_dir=None) -> dict[str, dict]:
    """``gradcam.cam_result`` of each method's (first-seed) run of ``model`` for ``image_ids``."""
    from . import gradcam

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
            + (f" The paper's Fig. 4 reads DPAAT's maps as the ones that focus on the lesion; by this share "
               + ("DPAAT's do most here." if energy.idxmax() == "DPAAT" else
                  f"{energy.idxmax()}'s do most here, not DPAAT's.") if "DPAAT" in energy.index else ""))


# --------------------------------------------------------------------------
# Training dynamics
# --------------------------------------------------------------------------

def radius_stats(results: Sequence[experiment.RunResult]) -> pd.DataFrame:
    """Per run with per-sample radii (AMAT, DPAAT, D-A, D-B): radius mean, std, 5%/95% quantiles at the
    first and the last epoch (rounded to 3 decimals)."""
    rows = []
    for r in results:
        eps = r.history["epochs"]
        if not eps or "radius_mean" not in eps[0]:
            continue
        first, last = eps[0], eps[-1]
        rows.append({"model": r.config.model, "method": r.config.method.label, "seed": r.config.train.seed,
                     "epochs": len(eps),
                     "mean (epoch 1)": f"{first['radius_mean']:.3f}", "std (epoch 1)": f"{first['radius_std']:.3f}",
                     "mean (last)": f"{last['radius_mean']:.3f}", "std (last)": f"{last['radius_std']:.3f}",
                     "5% (last)": f"{last['radius_quantiles'][0]:.3f}",
                     "95% (last)": f"{last['radius_quantiles'][-1]:.3f}",
                     # the radii the kept checkpoint was trained with, which is the model evaluated
                     "kept epoch": _kept_epoch(r)["epoch"], "mean (kept)": f"{_kept_epoch(r)['radius_mean']:.3f}"})
    return pd.DataFrame(rows)


AMAT_SHORT_RADIUS = 0.9
"""Below this share of eps0, an AMAT run's mean radius at its kept epoch counts as a weaker training
adversary than AT's (:func:`stopping_findings`)."""


def _full_schedule_pointer(results: Sequence[experiment.RunResult]) -> str:
    """Where the book answers a cap shorter than method.md's schedule (TrainConfig's defaults: up to 60
    epochs, patience 5); empty when every run had the full schedule."""
    if max(r.config.train.epochs for r in results) >= TrainConfig.epochs:
        return ""
    # Part (d) retrains the main grid, of the default classes: a page of other classes must not imply its runs.
    sizes = sorted({len(r.config.data.classes) for r in results})
    other = sizes != [len(profiles.CLASSES)]
    return (f"chapter 12 (d) trains the {f'{len(profiles.CLASSES)}-class ' if other else ''}main grid again on "
            f"method.md's schedule, up to {TrainConfig.epochs} epochs with patience {TrainConfig.patience}"
            + (f", not these {'/'.join(map(str, sizes))}-class runs" if other else ""))


def _kept_epoch(r: experiment.RunResult) -> dict:
    """The history record of the epoch whose checkpoint was kept (the last one where none is marked)."""
    eps = r.history["epochs"]
    return eps[(r.history.get("best_epoch") or len(eps)) - 1]


def _cut_by_cap(r: experiment.RunResult) -> bool:
    """The run reached its epoch cap with the last epoch kept: its validation metric still improved."""
    return r.history.get("best_epoch") == len(r.history["epochs"]) == r.config.train.epochs


def stopping_findings(results: Sequence[experiment.RunResult]) -> str:
    """How each run ended (Markdown): early stopping, or the profile's epoch cap with the kept checkpoint
    at the last epoch, i.e. a run the cap cut short while its validation loss still fell; and, for AMAT,
    how far its radii had grown by the kept epoch (they start at eps0/10 and grow by steps of eps0/10)."""
    if not results:
        return "No runs."
    capped, stopped = {}, {}
    for r in results:
        (capped if _cut_by_cap(r) else stopped).setdefault(r.config.method.label, []).append(r)
    cap = ", ".join(sorted({str(r.config.train.epochs) for r in results}))
    labels = sorted({r.config.method.label for r in results}, key=method_key)
    count = {m: sum(1 for r in results if r.config.method.label == m) for m in labels}
    parts = [f"**How the runs ended.** Of {len(results)} runs, "
             f"{sum(map(len, capped.values()))} reached the cap of {cap} epochs with the kept checkpoint at the last "
             "epoch: " + (", ".join(f"{m} {len(capped.get(m, []))} of {count[m]}" for m in labels)) + "."]
    if capped:
        parts.append("Such a run was cut short by the cap while its validation loss still fell, not stopped "
                     "by early stopping; a longer schedule would likely move its numbers"
                     + (f" (the paper profile allows 30 epochs, method.md up to {TrainConfig.epochs}; "
                        f"{_full_schedule_pointer(results)})." if _full_schedule_pointer(results) else "."))
    if stopped:
        parts.append("The others kept an earlier epoch (epochs run / epoch kept): " + "; ".join(
            m + " " + ", ".join(f"{len(r.history['epochs'])}/{r.history.get('best_epoch')}" for r in rs)
            for m, rs in sorted(stopped.items(), key=lambda kv: method_key(kv[0]))) + ".")
    amat = [r for r in results if r.config.method.name == "amat" and r.history["epochs"]
            and "radius_mean" in r.history["epochs"][0]]
    if amat:
        eps0 = amat[0].config.method.eps0
        kept = [_kept_epoch(r)["radius_mean"] for r in amat]
        short = [k for k in kept if k < AMAT_SHORT_RADIUS * eps0]
        text = ("AMAT's radii start at eps0/10 and grow by at most eps0/10 per epoch (at least 9 epochs to reach "
                f"eps0 = {radius_text(eps0)}): at the kept epoch their mean was " + ", ".join(f"{k:.3f}" for k in kept)
                + f" ({', '.join(f'{k / eps0:.0%}' for k in kept)} of eps0).")
        if len(short) == len(kept):
            text += (" Its models were trained against a weaker adversary than AT's, yet are evaluated at eps0, "
                     "which weighs against AMAT in every robustness comparison of this schedule.")
        elif short:
            text += (f" In {len(short)} of {len(kept)} runs that mean was below {AMAT_SHORT_RADIUS:.0%} of eps0: "
                     "those models were trained against a weaker adversary than AT's, yet are evaluated at eps0.")
        else:
            text += f" By the kept epoch every run's mean had reached at least {AMAT_SHORT_RADIUS:.0%} of eps0."
        parts.append(text)
    return " ".join(parts)


NONFINITE_KEYS = {"nonfinite_dL": "DPAAT's dL", "nonfinite_adv": "AMAT's adversarial loss"}  # methods.py's logs


def nonfinite_findings(results: Sequence[experiment.RunResult]) -> str:
    """Whether training met a NaN or an inf (Markdown), from every epoch of every run: its training and
    validation losses, and the per-sample counts DPAAT and AMAT log when a sample's loss was not finite
    (such a sample keeps its radius, so the radius tables above do not show it)."""
    if not results:
        return "No runs."
    hits = []
    for r in results:
        for e in r.history["epochs"]:
            bad = [f"{e[k]} x {what}" for k, what in NONFINITE_KEYS.items() if e.get(k)]
            bad += [k for k in ("train_loss", "val_loss", "radius_mean") if k in e and not math.isfinite(e[k])]
            if bad:
                hits.append(f"{r.config.run_id} epoch {e['epoch']}: " + ", ".join(bad))
    amat = [r for r in results if r.config.method.name == "amat" and r.history["epochs"]]
    uncounted = sum(1 for r in amat if not any("nonfinite_adv" in e for e in r.history["epochs"]))
    caveat = (f" {uncounted} of the {len(amat)} AMAT runs were trained before AMAT counted its non-finite "
              "adversarial losses, so for them only the losses and radii are checked." if uncounted else "")
    if not hits:
        return (f"**Non-finite values.** None in any of the {len(results)} runs: every epoch's training and "
                "validation loss and mean radius is finite, and no epoch logged a DPAAT or AMAT sample whose "
                "adversarial loss was NaN or inf." + caveat)
    shown = "; ".join(hits[:12]) + (f"; and {len(hits) - 12} more" if len(hits) > 12 else "")
    return (f"**Non-finite values.** {len(hits)} epochs met a NaN or an inf ({shown}). A sample whose adversarial "
            "loss was not finite kept its radius for that epoch; a non-finite training loss means the model's "
            "weights may be damaged from that epoch on, so read those runs' numbers with care." + caveat)


def unmoved_radii_note(results: Sequence[experiment.RunResult], method: str = "DPAAT") -> str:
    """A caveat (Markdown, empty when there is none): the ``method`` runs whose median radius at the kept
    epoch is still exactly eps0, so that at least half of the training images' radii never moved (a
    radius moves only when the sampler draws its image; DPAAT's batch-mean update is zero-sum, so a
    moved radius almost never lands back on eps0)."""
    runs = [r for r in results if r.config.method.label == method and r.history["epochs"]
            and "radius_quantiles" in r.history["epochs"][0]]
    still = [r for r in runs if abs(_kept_epoch(r)["radius_quantiles"][2] - r.config.method.eps0) < 1e-6]
    if not still:
        return ""
    q = [_kept_epoch(r)["radius_quantiles"] for r in still]
    return (f"**Radii that never moved.** In {len(still)} of the {len(runs)} {method} runs the median radius at the "
            f"kept epoch is still exactly eps0 = {still[0].config.method.eps0:g} (quartiles "
            + "; ".join(f"{a[1]:.3f}-{a[3]:.3f}" for a in q)
            + "): at least half of the training images' radii were never updated, since a radius moves only when "
              f"the sampler draws its image. Where that is so, {method} is close to AT with its synchronisation term, "
              "and its comparisons say little about the adaptation.")


def training_cost(results: Sequence[experiment.RunResult]) -> pd.DataFrame:
    """Epochs run, best epoch, and mean seconds per epoch relative to the STD run of the same model and
    seed (the wall time itself depends on the machine; both come from the stored history)."""
    rows = []
    std = {(r.config.model, r.config.train.seed): r for r in results if r.config.method.name == "std"}
    for r in results:
        eps = r.history["epochs"]
        spe = float(np.mean([e["seconds"] for e in eps]))
        base = std.get((r.config.model, r.config.train.seed))
        rel = spe / float(np.mean([e["seconds"] for e in base.history["epochs"]])) if base else float("nan")
        rows.append({"model": r.config.model, "method": r.config.method.label, "seed": r.config.train.seed,
                     "epochs run": len(eps), "best epoch": r.history.get("best_epoch"),
                     # fixed width, so the text table keeps its layout when the nbval sanitizer blanks timings
                     "mean s/epoch": f"{spe:8.1f} s/epoch",
                     "relative to STD": f"x{rel:6.1f}" if np.isfinite(rel) else "—"})
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------
# Reproducibility
# --------------------------------------------------------------------------

def environment(device: str = "cpu") -> str:
    """Versions and hardware of the machine that executed the page, as a Markdown list; each line
    reads ``- env `item`: value`` (the book's nbval sanitizer blanks the values, which differ
    from machine to machine)."""
    import matplotlib
    import sklearn
    import torch
    import torchvision

    items = {"python": platform.python_version(), "torch": torch.__version__,
             "torchvision": torchvision.__version__, "numpy": np.__version__, "pandas": pd.__version__,
             "scikit-learn": sklearn.__version__, "matplotlib": matplotlib.__version__,
             "platform": platform.platform(), "processor": platform.processor() or platform.machine(),
             "cpu count": str(os.cpu_count()), "torch threads": str(torch.get_num_threads()),
             "cuda available": str(torch.cuda.is_available()), "device used": device}
    try:
        from importlib.metadata import version

        items["grad-cam"] = version("grad-cam")
    except Exception:  # pragma: no cover - optional
        pass
    if torch.cuda.is_available():
        items["gpu"] = torch.cuda.get_device_name(0)
    return "\n".join(f"- env `{k}`: {v}" for k, v in items.items())


def cpu_threads_note(prof: profiles.Profile, results: Sequence[experiment.RunResult]) -> str:
    """Whether a run trained again on a CPU reproduces the stored one: the profile's pinned torch threads
    (:func:`dpaat_lib.profiles.pin_cpu_threads`), and how many runs record where they were evaluated."""
    recorded = [r.history["evaluated_on"] for r in results if "evaluated_on" in r.history]
    if prof.cpu_threads is None:
        text = (f"**Threads.** Profile `{prof.name}` does not pin torch's CPU threads: on a CPU its runs' numbers "
                "depend on the machine's thread count (the order of float sums) as they depend on the seed, so a "
                "run trained on another machine can differ from the one shown here.")
    else:
        text = (f"**Threads.** On a CPU, profile `{prof.name}` computes with {prof.cpu_threads} torch "
                f"thread{'s' if prof.cpu_threads > 1 else ''} (`cpu_threads`), the count its committed runs were "
                "trained with: the thread count sets the order of float sums, and another count gives other "
                "numbers, as another seed would. With it, a run trained again gives the same predictions byte for "
                "byte (tests/test_committed_results.py retrains one run of cpu-real and of cpu-real-7 from the real "
                "data); `dpaat --threads N` trades that for speed, and "
                "several one-thread processes (`dpaat grid --claim DIR`) use more cores without it.")
    if not results:
        return text
    if recorded:
        threads = sorted({str(e.get("torch_threads")) for e in recorded if str(e.get("device", "")).startswith("cpu")})
        every = len(recorded) == len(results)
        text += ((f" All {len(results)} runs record" if every else f" {len(recorded)} of the {len(results)} runs record")
                 + " the device they were evaluated on"
                 + (f" (on a CPU, torch threads: {' or '.join(threads)})" if threads else "")
                 + ("." if every else f"; {len(results) - len(recorded)} predate that record."))
    else:
        text += f" None of the {len(results)} runs records the device it was evaluated on (they predate that record)."
    return text


def runs_frame(results: Sequence[experiment.RunResult]) -> pd.DataFrame:
    """Every run: id (its configuration hash), model, method, seed, data source and digest, image size,
    epochs run and best epoch."""
    rows = []
    for r in results:
        c = r.config
        rows.append({"run_id": r.run_id, "model": c.model, "method": c.method.label, "seed": c.train.seed,
                     "data": f"{c.data.source} ({c.data.digest})", "size": c.data.image_size,
                     "epochs run": len(r.history["epochs"]), "best epoch": r.history.get("best_epoch")})
    return pd.DataFrame(rows).drop_duplicates("run_id").reset_index(drop=True)


def config_json(result: experiment.RunResult) -> str:
    """The run's full configuration as stored in its folder (``config.json``), as a Markdown code block."""
    return "```json\n" + json.dumps(result.config.to_dict(), indent=1, sort_keys=True) + "\n```"


def papermill_commands(profile: str, chapters: Sequence[str] = CHAPTERS) -> str:
    """Markdown code block with the commands that rebuild the book (all chapters, or one)."""
    lines = [f"python scripts/build_book.py --profile {profile} --out _build/{profile}   # all chapters + HTML",
             "# one chapter, from the repository root:",
             "jupytext --to ipynb --set-kernel python3 notebooks/04_robustness.py -o /tmp/04_robustness.ipynb",
             f"python -m papermill /tmp/04_robustness.ipynb book/04_robustness.ipynb -k python3 --cwd book "
             f"-p profile {profile} -p device cpu   # add -p data_root /path/to/HAM10000 for real data"]
    return "```bash\n" + "\n".join(lines) + "\n```"


def source_block(obj) -> str:
    """The source code of a library function or class as a Markdown code block (what the page
    shows is what runs)."""
    import inspect

    return "```python\n" + inspect.getsource(obj).rstrip() + "\n```"


# --------------------------------------------------------------------------
# Figures: matplotlib figures, closed in pyplot before they are returned, so a
# cell shows one only as its value and nothing is drawn twice
# --------------------------------------------------------------------------

def new_figure(w: float, h: float):
    import matplotlib.pyplot as plt

    return plt.figure(figsize=(w, h), dpi=100, layout="constrained")


def closed(fig):
    """Close the figure in pyplot (so Jupyter does not draw it by itself at the end of the cell)
    and return it: it is shown once, as the cell's value."""
    import matplotlib.pyplot as plt

    plt.close(fig)
    return fig


METHOD_COLORS = {"STD": "#7f7f7f", "AT": "#1f77b4", "SAT": "#2ca02c", "AMAT": "#9467bd", "DPAAT": "#d62728",
                 "D-A": "#ff7f0e", "D-B": "#17becf"}
"""One colour per method, the same in every figure."""


def plot_dpaat_rule(eps0: float = 0.5, eta: float | None = None, eps_max: float | None = None):
    """Eq. 15 as implemented (``methods.DPAAT.step_length`` and its clip): the change of a sample's
    radius against its loss change relative to the batch mean, dL - mu, and the new radius of a
    sample that had eps0, a small and the largest radius."""
    import torch

    from .methods import DPAAT

    cfg = MethodConfig(name="dpaat", eta=eta)
    meth = DPAAT(cfg, n_train=1)
    eps_max = meth.eps_max if eps_max is None else eps_max
    x = torch.linspace(-1.5, 1.5, 301)
    step = meth.step_length(x, 0.0).numpy()
    fig = new_figure(9, 3.4)
    ax1, ax2 = fig.subplots(1, 2)
    ax1.plot(x, step, color="#d62728")
    ax1.axhline(0, color="k", lw=0.6)
    ax1.axvline(0, color="k", lw=0.6)
    ax1.fill_between(x, step, 0, where=x.numpy() > 0, color="#d62728", alpha=0.15, label="fragile: dL > mu, shrink")
    ax1.fill_between(x, step, 0, where=x.numpy() < 0, color="#1f77b4", alpha=0.15, label="stable: dL < mu, grow")
    ax1.set_xlabel("dL_i - mu  (loss increase under attack minus its batch mean, nats)")
    ax1.set_ylabel("change of radius eps_i")
    ax1.set_title(f"eq. 15: -eta (dL_i - mu), eta = {meth.eta:g}")
    ax1.legend(fontsize=8, loc="upper right")
    for start, ls in ((0.1 * eps0, ":"), (eps0, "-"), (eps_max, "--")):
        new = np.clip(start + step, cfg.eps_min, eps_max)
        ax2.plot(x, new, ls=ls, color="k", label=f"eps_i before = {start:g}")
    ax2.axhline(eps0, color="#1f77b4", lw=0.6)
    ax2.set_ylim(-0.05, eps_max + 0.1)
    ax2.set_xlabel("dL_i - mu (nats)")
    ax2.set_ylabel("eps_i after one update")
    ax2.set_title(f"clipped to [{cfg.eps_min:g}, {eps_max:g}] (eps_max = 2 eps0)")
    ax2.legend(fontsize=8)
    return closed(fig)


def plot_split_counts(summary_: dict):
    """Images per class and side (lesion-aware split), and test images whose lesion also has an image
    in training under each split."""
    fig = new_figure(9, 3.2)
    ax1, ax2 = fig.subplots(1, 2, width_ratios=[2, 1])
    s = summary_[summary_["used"]]
    classes = list(summary_["data"]["classes"])
    sides = ("train", "val", "test")
    width = 0.8 / len(sides)
    for j, side in enumerate(sides):
        vals = [s["counts"][side][c] for c in classes]
        bars = ax1.bar(np.arange(len(classes)) + (j - 1) * width, vals, width, label=side)
        ax1.bar_label(bars, fontsize=7)
    ax1.set_xticks(range(len(classes)), classes)
    ax1.set_ylabel("images")
    ax1.set_title(f"split used by the runs ({summary_['used'].replace('_', '-')})")
    ax1.legend(fontsize=8)
    names = ["lesion-aware", "image-level"]
    vals = [summary_["lesion_aware"]["test_images_with_lesion_in_training"],
            summary_["image_level"]["test_images_with_lesion_in_training"]]
    bars = ax2.bar(names, vals, color=["#2ca02c", "#d62728"])
    ax2.bar_label(bars, fontsize=8)
    ax2.set_ylabel("test images")
    ax2.set_title("test images whose lesion\nis also in train/val")
    return closed(fig)


def plot_examples(images: np.ndarray, labels: Sequence[int], classes: Sequence[str], ids: Sequence[str] = ()):
    """A grid of example images, one row per class."""
    per = max(sum(1 for l in labels if l == k) for k in range(len(classes)))
    fig = new_figure(1.6 * per, 1.7 * len(classes))
    axes = np.atleast_2d(fig.subplots(len(classes), per, squeeze=False))
    for ax in axes.ravel():
        ax.axis("off")
    col = {k: 0 for k in range(len(classes))}
    for i, (img, l) in enumerate(zip(images, labels)):
        ax = axes[l, col[l]]
        ax.imshow(img)
        ax.set_title(f"{classes[l]}" + (f"\n{ids[i]}" if ids else ""), fontsize=7)
        col[l] += 1
    return closed(fig)


def plot_metric_bars(results: Sequence[experiment.RunResult], metrics: Sequence[str], scale: float = 100.0,
                     ylabel: str = "accuracy (%)", paper: pd.DataFrame | None = None, paper_group: str = "all_six"):
    """Grouped bars: one group per metric, one bar per method (seed mean, error bar = std when several
    seeds), one panel per model; the paper's ``paper_group`` average as black ticks where given."""
    s = summary(results, metrics)
    models = list(dict.fromkeys(s.index.get_level_values("model")))
    colors = METHOD_COLORS
    fig = new_figure(max(6, 1.3 * len(metrics) + 2), 3.3 * len(models))
    axes = np.atleast_1d(fig.subplots(len(models), 1, squeeze=False).ravel())
    for ax, model in zip(axes, models):
        sub = s.xs(model, level="model")
        meths = sorted(sub.index, key=method_key)
        width = 0.8 / len(meths)
        paper_label = f"paper ({paper_group})"
        for j, m in enumerate(meths):
            xs = np.arange(len(metrics)) + (j - (len(meths) - 1) / 2) * width
            vals = [scale * sub.loc[m, ("mean", c)] for c in metrics]
            err = [scale * sub.loc[m, ("std", c)] for c in metrics] if int(sub.loc[m, ("n", "")]) > 1 else None
            ax.bar(xs, vals, width, yerr=err, label=m, color=colors.get(m))
            if paper is not None:
                p = paper[(paper["group"] == paper_group) & (paper["method"] == m)]
                if len(p):
                    pv = [float(p[c].iloc[0]) for c in metrics]  # same scale as the bars
                    ax.scatter(xs, pv, marker="_", s=120, color="k", zorder=3, label=paper_label)
                    paper_label = None  # one legend entry
        ax.set_xticks(range(len(metrics)), metrics)
        ax.set_ylabel(ylabel)
        ax.set_ylim(0, 1.2 * scale)  # headroom for the legend above the bars
        ax.set_title(f"{model} (ours)")
        ax.legend(fontsize=7, ncol=len(meths) + 1, loc="upper center")
    return closed(fig)


def plot_eps_curves(curves: dict, title: str = ""):
    """Robust accuracy against eps, one line per method (the mean over seeds, with the range of the seeds
    shaded when there are several), one panel per model."""
    models = list(dict.fromkeys(k[0] for k in curves))
    colors = METHOD_COLORS
    fig = new_figure(4.6 * max(1, len(models)), 3.4)
    axes = np.atleast_1d(fig.subplots(1, max(1, len(models)), squeeze=False).ravel())
    for ax, model in zip(axes, models):
        methods = sorted({k[1] for k in curves if k[0] == model}, key=method_key)
        for meth in methods:
            runs = [c for k, c in curves.items() if k[0] == model and k[1] == meth]
            scale = 255 if runs[0]["norm"] == "linf" else 1
            eps = np.array(runs[0]["eps"]) * scale
            acc = 100 * np.array([c["acc"] for c in runs if len(c["acc"]) == len(eps)])
            ax.plot(eps, acc.mean(0), marker="o", color=colors.get(meth),
                    label=meth + (f" ({len(acc)} seeds)" if len(acc) > 1 else ""))
            if len(acc) > 1:
                ax.fill_between(eps, acc.min(0), acc.max(0), color=colors.get(meth), alpha=0.15, lw=0)
        norm = next(c["norm"] for k, c in curves.items() if k[0] == model)
        ax.set_xlabel("eps x 255 (Linf)" if norm == "linf" else "eps (L2)")
        ax.set_ylabel("accuracy (%)")
        ax.set_title(f"{model}: {CURVE_ATTACK[norm]} {title}")
        ax.set_ylim(0, 100)
        ax.legend(fontsize=7)
    return closed(fig)


def plot_confusion_grid(results: Sequence[experiment.RunResult], model: str,
                        attacks: Sequence[str] = (CLEAN, MARP_ATTACK), seed: int | None = None):
    """Confusion matrices of ``model``: rows attacks (clean, 20-PGD), columns methods. Colour = share of
    the true class (row-normalised), text = count."""
    runs = [r for r in results if r.config.model == model and (seed is None or r.config.train.seed == seed)]
    if seed is None and runs:
        s0 = min(r.config.train.seed for r in runs)
        runs = [r for r in runs if r.config.train.seed == s0]
    runs = sorted(runs, key=lambda r: method_key(r.config.method.label))
    classes = runs[0].config.data.classes
    fig = new_figure(2.3 * len(runs), 2.3 * len(attacks) + 0.3)
    axes = fig.subplots(len(attacks), len(runs), squeeze=False)
    for i, att in enumerate(attacks):
        for j, r in enumerate(runs):
            cm = np.asarray(r.metrics["confusion"][att], dtype=float)
            share = cm / np.maximum(cm.sum(1, keepdims=True), 1)
            ax = axes[i, j]
            ax.imshow(share, vmin=0, vmax=1, cmap="Blues")
            for a in range(len(classes)):
                for b in range(len(classes)):
                    ax.text(b, a, f"{int(cm[a, b])}", ha="center", va="center", fontsize=8,
                            color="white" if share[a, b] > 0.6 else "black")
            ax.set_xticks(range(len(classes)), classes, fontsize=7)
            ax.set_yticks(range(len(classes)), classes, fontsize=7)
            acc = np.trace(cm) / max(cm.sum(), 1)
            ax.set_title(f"{r.config.method.label}, {att}\nacc {100 * acc:.1f}%", fontsize=8)
            if j == 0:
                ax.set_ylabel("true")
            if i == len(attacks) - 1:
                ax.set_xlabel("predicted")
    seeds = sorted({r.config.train.seed for r in runs})
    fig.suptitle(f"{model}, seed {', '.join(map(str, seeds))}: confusion matrices (colour: share of the true class)",
                 fontsize=9)
    return closed(fig)


def class_recalls(results: Sequence[experiment.RunResult], model: str,
                  attacks: Sequence[str] = (CLEAN, MARP_ATTACK)) -> pd.DataFrame:
    """One row per (attack, method, seed) of ``model``: the recall of each class (percent), the worst
    class and the spread (best minus worst class, points), from the stored confusion matrices."""
    rows = []
    for r in sorted(results, key=lambda r: (method_key(r.config.method.label), r.config.train.seed)):
        if r.config.model != model:
            continue
        for att in attacks:
            cm = np.asarray(r.metrics["confusion"][att], dtype=float)
            rec = 100 * np.diag(cm) / np.maximum(cm.sum(1), 1)
            rows.append({"attack": att, "method": r.config.method.label, "seed": r.config.train.seed,
                         **{f"recall {c}": v for c, v in zip(r.config.data.classes, rec)},
                         "worst class": rec.min(), "spread (max - min)": rec.max() - rec.min()})
    return pd.DataFrame(rows)


def confusion_balance(results: Sequence[experiment.RunResult], model: str,
                      attacks: Sequence[str] = (CLEAN, MARP_ATTACK)) -> pd.DataFrame:
    """The paper's 'more even diagonal' made a number: per attack and method, each class's recall, the
    worst class and the spread (max - min), as mean ± std over the seeds (percent, points)."""
    t = class_recalls(results, model, attacks)
    if t.empty:
        return t
    cols = [c for c in t.columns if c not in ("attack", "method", "seed")]
    g = t.groupby(["attack", "method"], sort=False)
    mean, std, n = g[cols].mean(), g[cols].std(ddof=1), g.size()
    out = pd.DataFrame({c: [fmt(m, sd, k, scale=1.0) for m, sd, k in zip(mean[c], std[c], n)] for c in cols},
                       index=mean.index)
    out["seeds"] = n
    order = {a: k for k, a in enumerate(attacks)}
    return out.loc[sorted(out.index, key=lambda k: (order[k[0]], method_key(k[1])))]


def confusion_balance_findings(results: Sequence[experiment.RunResult], model: str,
                               attacks: Sequence[str] = (CLEAN, MARP_ATTACK)) -> str:
    """The reading of :func:`confusion_balance` for ``model`` (Markdown): per attack, which method has the
    highest worst-class recall and the smallest spread on the seed means (ties named as ties), and in how
    many seeds DPAAT's spread is the smallest, the paper's claim."""
    t = class_recalls(results, model, attacks)
    if t.empty:
        return f"No runs of {model}."
    parts = []
    for att in attacks:
        sub = t[t["attack"] == att]
        means = sub.groupby("method", sort=False)[["worst class", "spread (max - min)"]].mean()

        def best(col, pick):  # every method within 0.05 points of the best: a tie is named as one
            v = means[col].max() if pick == "max" else means[col].min()
            return " and ".join(means.index[(means[col] - v).abs() < 0.05]), v

        worst_m, worst_v = best("worst class", "max")
        spread_m, spread_v = best("spread (max - min)", "min")
        seeds = sorted(sub["seed"].unique())
        wins = sum(sub[sub["seed"] == k].set_index("method")["spread (max - min)"].idxmin() == "DPAAT"
                   for k in seeds if "DPAAT" in set(sub[sub["seed"] == k]["method"]))
        dp = means.loc["DPAAT"] if "DPAAT" in means.index else None
        text = (f"{'clean' if att == CLEAN else 'under ' + att}: highest worst-class recall {worst_m} "
                f"({worst_v:.1f}%), smallest spread {spread_m} ({spread_v:.1f} points)")
        if dp is not None:
            text += (f"; DPAAT {dp['worst class']:.1f}% and {dp['spread (max - min)']:.1f} points, the smallest spread "
                     f"in {wins} of its {len(seeds)} seed(s)")
        parts.append(text)
    return f"On {model} (seed means): " + "; ".join(parts) + "."


def plot_ablation(results: Sequence[experiment.RunResult], metrics: Sequence[str] = ("GAcc", "20-PGD")):
    """Paper Fig. 3: GAcc and 20-PGD RAcc of AT, D-A, D-B, D-(A+B) = DPAAT, one panel per model."""
    s = summary(results, metrics)
    models = list(dict.fromkeys(s.index.get_level_values("model")))
    labels = [ABLATION_LABELS[m] for m in profiles.ABLATION_METHODS]
    fig = new_figure(4.8 * len(models), 3.4)
    axes = np.atleast_1d(fig.subplots(1, len(models), squeeze=False).ravel())
    colors = ["#1f77b4", "#ff7f0e", "#17becf", "#d62728"]
    for ax, model in zip(axes, models):
        sub = s.xs(model, level="model")
        width = 0.8 / len(labels)
        for j, (m, lab) in enumerate(zip(profiles.ABLATION_METHODS, labels)):
            key = LABELS[m]
            if key not in sub.index:
                continue
            xs = np.arange(len(metrics)) + (j - (len(labels) - 1) / 2) * width
            vals = [100 * sub.loc[key, ("mean", c)] for c in metrics]
            err = [100 * sub.loc[key, ("std", c)] for c in metrics] if int(sub.loc[key, ("n", "")]) > 1 else None
            bars = ax.bar(xs, vals, width, yerr=err, label=lab, color=colors[j])
            ax.bar_label(bars, fmt="%.1f", fontsize=6)
        ax.set_xticks(range(len(metrics)), ["GAcc (clean)" if c == "GAcc" else f"RAcc {c}" for c in metrics])
        ax.set_ylabel("accuracy (%)")
        ax.set_ylim(0, 105)
        ax.set_title(f"{model}: ablation (ours)")
        ax.legend(fontsize=7, loc="lower right")
    return closed(fig)


def plot_radius_heatmaps(results: Sequence[experiment.RunResult]):
    """Per-epoch distribution of the per-sample radii (epoch x radius bin; colour = share of training
    images) for every first-seed run that keeps radii (AMAT, DPAAT, D-A): a row per model, a column per
    method."""
    runs = [r for r in first_seed(results) if r.history["epochs"] and "radius_hist" in r.history["epochs"][0]
            and r.config.method.name != "d-b"]
    models = list(dict.fromkeys(r.config.model for r in runs))
    methods = sorted({r.config.method.label for r in runs}, key=method_key)
    fig = new_figure(4.2 * max(1, len(methods)), 3.2 * max(1, len(models)))
    axes = fig.subplots(max(1, len(models)), max(1, len(methods)), squeeze=False)
    for ax in axes.ravel():
        ax.set_axis_off()
    for r in runs:
        ax = axes[models.index(r.config.model), methods.index(r.config.method.label)]
        ax.set_axis_on()
        ep = r.history["epochs"]
        hist = np.array([e["radius_hist"] for e in ep], dtype=float)
        share = hist / np.maximum(hist.sum(1, keepdims=True), 1)
        top = ep[0]["radius_hist_max"]
        im = ax.imshow(share.T, origin="lower", aspect="auto", cmap="viridis", vmin=0,
                       extent=(0.5, len(ep) + 0.5, 0, top))
        ax.plot(range(1, len(ep) + 1), [e["radius_mean"] for e in ep], color="white", lw=1, label="mean")
        ax.axhline(r.config.method.eps0, color="red", lw=0.8, ls="--", label="eps0")
        ax.set_xlabel("epoch")
        ax.set_ylabel("per-sample radius eps_i (L2)")
        ax.set_title(f"{r.config.model}: {r.config.method.label}", fontsize=9)
        ax.legend(fontsize=7, loc="upper left")
        fig.colorbar(im, ax=ax, label="share of training images")
    return closed(fig)


def plot_training_curves(results: Sequence[experiment.RunResult]):
    """Training loss, clean validation accuracy and clean validation cross-entropy per epoch, one line per
    method, one row per model. The kept checkpoint is starred in both validation panels; its metric
    (the run's ``select_on``, the lowest cross-entropy by default) is named in the titles."""
    models = list(dict.fromkeys(r.config.model for r in results))
    colors = METHOD_COLORS
    fig = new_figure(14, 3.2 * len(models))
    axes = fig.subplots(len(models), 3, squeeze=False)
    chosen = {r.config.train.select_on for r in results}
    by = ("lowest validation CE" if chosen == {"val_loss"} else "highest validation accuracy"
          if chosen == {"val_acc"} else "each run's select_on")
    for i, model in enumerate(models):
        labelled = set()  # one legend entry per method; its seeds share the colour
        for r in sorted((r for r in results if r.config.model == model), key=lambda r: method_key(r.config.method.label)):
            ep = r.history["epochs"]
            e = [x["epoch"] for x in ep]
            method = r.config.method.label
            lab = "_nolegend_" if method in labelled else method
            labelled.add(method)
            c = colors.get(method)
            axes[i, 0].plot(e, [x.get("train_loss", np.nan) for x in ep], color=c, label=lab, lw=1)
            axes[i, 1].plot(e, [100 * x["val_acc"] for x in ep], color=c, label=lab, lw=1)
            axes[i, 2].plot(e, [x.get("val_loss", np.nan) for x in ep], color=c, label=lab, lw=1)
            b = r.history.get("best_epoch")
            if b:
                axes[i, 1].scatter([b], [100 * ep[b - 1]["val_acc"]], color=c, marker="*", s=60, zorder=3)
                axes[i, 2].scatter([b], [ep[b - 1].get("val_loss", np.nan)], color=c, marker="*", s=60, zorder=3)
        n_seeds = len({r.config.train.seed for r in results if r.config.model == model})
        axes[i, 0].set_title(f"{model}: training loss (own objective; one line per seed, {n_seeds})", fontsize=9)
        axes[i, 1].set_title(f"{model}: validation accuracy (clean; * = kept, by {by})", fontsize=9)
        axes[i, 2].set_title(f"{model}: validation cross-entropy (clean; * = kept)", fontsize=9)
        for ax in axes[i]:
            ax.set_xlabel("epoch")
        axes[i, 0].legend(fontsize=7)
        axes[i, 0].set_ylabel("loss")
        axes[i, 1].set_ylabel("%")
        axes[i, 2].set_ylabel("mean CE (nats)")
    return closed(fig)


def plot_gradcam_grid(cams: dict[str, dict], classes: Sequence[str], model: str = ""):
    """Paper Fig. 4: one row per image (grouped by class); columns: the image, then each method's
    Grad-CAM overlay (``gradcam.overlay``); the lesion mask outline where known."""
    from . import gradcam

    methods = list(cams)
    first = cams[methods[0]]
    n = len(first["image_ids"])
    fig = new_figure(1.9 * (len(methods) + 1), 1.9 * n + 0.4)
    axes = fig.subplots(n, len(methods) + 1, squeeze=False)
    for i in range(n):
        img = first["images"][i]
        lab = classes[int(first["labels"][i])]
        axes[i, 0].imshow(img)
        axes[i, 0].set_ylabel(f"{lab}\n{first['image_ids'][i]}", fontsize=7)
        masks = first.get("masks")
        if masks is not None:
            axes[i, 0].contour(np.asarray(masks[i], dtype=float), levels=[0.5], colors="w", linewidths=0.6)
        for j, m in enumerate(methods, start=1):
            c = cams[m]
            axes[i, j].imshow(gradcam.overlay(c["images"][i], c["cams"][i]))
            if c.get("energy_in_mask") is not None:
                axes[i, j].set_xlabel(f"in mask {float(c['energy_in_mask'][i]):.2f}", fontsize=7)
        for ax in axes[i]:
            ax.set_xticks([])
            ax.set_yticks([])
    axes[0, 0].set_title("image", fontsize=9)
    for j, m in enumerate(methods, start=1):
        axes[0, j].set_title(m, fontsize=9)
    fig.suptitle(f"Grad-CAM {model}".strip(), fontsize=10)
    return closed(fig)


# --------------------------------------------------------------------------
# Sentences and small tables for the "what it shows" sections
# --------------------------------------------------------------------------

def method_difference(results: Sequence[experiment.RunResult], a: str = "DPAAT", b: str = "AT",
                      metrics: Sequence[str] = ("GAcc", "20-PGD"), scale: float = 100.0, digits: int = 1) -> pd.DataFrame:
    """Seed means of methods ``a`` and ``b`` and their difference, per model and metric (formatted); with
    two or more common seeds also the paired t-test across seeds of the per-seed differences and its
    Holm adjustment over the table's rows (columns ``t-test p``, ``Holm p``)."""
    from . import study

    runs = results_frame(results)
    rows, ps = [], []
    for model in dict.fromkeys(runs["model"]):
        ra = runs[(runs["model"] == model) & (runs["method"] == a)].set_index("seed")
        rb = runs[(runs["model"] == model) & (runs["method"] == b)].set_index("seed")
        seeds = sorted(set(ra.index) & set(rb.index))
        if not seeds:
            continue
        for c in metrics:
            if c not in runs.columns:
                continue
            d = [scale * (float(ra.loc[k, c]) - float(rb.loc[k, c])) for k in seeds]
            p = study.paired_difference_test(d)
            ps.append(p)
            rows.append({"model": model, "metric": c,
                         a: fmt(float(ra.loc[seeds, c].mean()), scale=scale, digits=digits),
                         b: fmt(float(rb.loc[seeds, c].mean()), scale=scale, digits=digits),
                         f"{a} - {b}": f"{float(np.mean(d)):+.{digits}f}", "seeds": len(seeds),
                         "per seed": ", ".join(f"{x:+.{digits}f}" for x in d)})
    out = pd.DataFrame(rows)
    if len(out) and out["seeds"].max() >= 2:
        out["t-test p"] = [f"{p:.3f}" if np.isfinite(p) else "n/a" for p in ps]
        out["Holm p"] = [f"{p:.3f}" if np.isfinite(p) else "n/a" for p in study.holm(ps)]
    return out


def ablation_claims(results: Sequence[experiment.RunResult], similar: float = 2.0) -> pd.DataFrame:
    """Every statement the paper makes about its Fig. 3, checked on our ablation runs (seed means, per
    model): D-A's GAcc above AT's; D-A's 20-PGD similar to AT's (within ``similar`` points); D-B's GAcc
    the highest of the four; D-B's 20-PGD below D-A's; D-(A+B) = DPAAT's 20-PGD the highest; DPAAT's
    GAcc above AT's; and the paper's conclusion, that the dynamic adaptation matters more for robustness
    than the synchronisation term: DPAAT loses more 20-PGD accuracy without the adaptation (D-B) than
    without the synchronisation term (D-A)."""
    s = summary(results, ("GAcc", "20-PGD"))["mean"]
    rows = []
    for model in dict.fromkeys(s.index.get_level_values("model")):
        sub = s.xs(model, level="model")
        need = {"AT", "D-A", "D-B", "DPAAT"}
        if not need <= set(sub.index):
            continue
        g, r = 100 * sub["GAcc"], 100 * sub["20-PGD"]
        no_adapt, no_sync = r["DPAAT"] - r["D-B"], r["DPAAT"] - r["D-A"]
        checks = [
            ("D-A: higher GAcc than AT", g["D-A"] > g["AT"], f"D-A {g['D-A']:.1f} vs AT {g['AT']:.1f}"),
            (f"D-A: 20-PGD RAcc similar to AT (within {similar:g} points)", abs(r["D-A"] - r["AT"]) <= similar,
             f"D-A {r['D-A']:.1f} vs AT {r['AT']:.1f}"),
            ("D-B: highest GAcc of the four", g.idxmax() == "D-B" and (g == g.max()).sum() == 1,
             ", ".join(f"{k} {v:.1f}" for k, v in g.sort_values(ascending=False).items())),
            ("D-B: lower 20-PGD RAcc than D-A", r["D-B"] < r["D-A"], f"D-B {r['D-B']:.1f} vs D-A {r['D-A']:.1f}"),
            ("D-(A+B) = DPAAT: highest 20-PGD RAcc", r.idxmax() == "DPAAT" and (r == r.max()).sum() == 1,
             ", ".join(f"{k} {v:.1f}" for k, v in r.sort_values(ascending=False).items())),
            ("D-(A+B) = DPAAT: higher GAcc than AT", g["DPAAT"] > g["AT"],
             f"DPAAT {g['DPAAT']:.1f} vs AT {g['AT']:.1f}"),
            ("conclusion: the adaptation matters more for robustness than the synchronisation term",
             no_adapt > no_sync, f"20-PGD lost without the adaptation (DPAAT - D-B) {no_adapt:+.1f}, without the "
             f"synchronisation term (DPAAT - D-A) {no_sync:+.1f}"),
        ]
        rows += [{"model": model, "paper's statement": c, "holds here": "yes" if ok else "no", "ours (%)": txt}
                 for c, ok, txt in checks]
    return pd.DataFrame(rows)


def deviations(prof: profiles.Profile, results: Sequence[experiment.RunResult] = ()) -> str:
    """Markdown list of where this profile's runs differ from the paper (computed from the profile)."""
    from .models import PAPER_MODELS

    c = results[0].config if results else None
    starts = sorted({r.config.train.weights for r in results} - {None})
    head_epochs = results[0].config.train.head_epochs if results else 0
    lines = [
        "- **Threat model**: the paper gives 0.5 for a symbol and a norm lost in extraction, 7 steps of 0.15, and "
        "no evaluation radii. We read 0.5 as the radius and the norm from the step size and its identical 20/50-step "
        f"PGD numbers: training adversary PGD-L2 with eps0 = {radius_text(prof.eps0)}, "
        f"{prof.train_steps} steps of {radius_text(prof.train_step_size)}; FGSM and I-FGSM evaluated in Linf at "
        "eps = 2/255, 20/50-step PGD in L2 at eps0 (chapter 3)."
        + (f" At {prof.image_size} px the same L2 radius is {PAPER_IMAGE_SIZE / prof.image_size:.1f} times stronger "
           "per pixel than at 224 px, and the Linf one weaker in L2 terms: levels compare with the paper's only in "
           "direction (chapter 3); chapter 12 (e) trains the five methods again with the L2 radius scaled to the "
           "paper's change per pixel." if prof.image_size != PAPER_IMAGE_SIZE else "")
        + (f" This page's eps0 = {radius_text(prof.eps0)} is a parameter, not the paper's {PAPER_EPS0:g}: its L2 "
           f"threat is {l2_strength_text(prof.eps0, prof.image_size)}, and its robust columns are not the paper's."
           if prof.eps0 != PAPER_EPS0 else ""),
        "- **Initialisation**: " + ("two-phase, as the paper: " + "; ".join(pretrained.describe(w, head_epochs)
                                                                             for w in starts) + "."
                                    if starts else "training from scratch; the paper fine-tunes ImageNet "
                                    "weights, which cannot be downloaded on the machines that built this book "
                                    "(`-p weights imagenet` fine-tunes them where they can)."),
        "- **Unstated hyper-parameters**: DPAAT's step length eta "
        f"({'eps0 per nat' if prof.eta is None else prof.eta}), radius bounds [0, 2 eps0], "
        f"lambda = {prof.lam}, mu = the {prof.mu} mean; AMAT's threshold from a trained STD model; "
        "flip augmentation; early stopping on a validation set carved from the 800 training images, the "
        "checkpoint kept by the "
        + ("highest clean validation accuracy" if c is not None and c.train.select_on == "val_acc"
           else "lowest clean validation cross-entropy") + " (the paper names no metric).",
        f"- **Split**: {'lesion-aware' if prof.lesion_aware else 'image-level'} (no lesion on two sides); "
        "the paper's split is not described and HAM10000 has several images of one lesion (chapter 2).",
        "- **Data**: " + ("the SYNTHETIC stand-in, not HAM10000" if prof.synthetic else
                          f"HAM10000 at {c.data.source_size} px" if c is not None and c.data.source_size else
                          "HAM10000 as published at 200x150 px (the original is 600x450)") + "; "
        f"{prof.n_train}/{prof.n_test} train/test images per class (paper: 800/299).",
        f"- **Resolution**: {prof.image_size} px (paper: 224 px, InceptionV3 299 px).",
        f"- **Models**: {', '.join(prof.models)}"
        + ("" if set(prof.models) == set(PAPER_MODELS) else f" (paper: {', '.join(PAPER_MODELS)})")
        + f"; up to {prof.epochs} epochs, patience {prof.patience}, batch size {prof.batch_size} "
          "(paper: 50 epochs after 10 head epochs; ablation batch 64, 100 epochs)"
        + (": " + _capped_text(results) if results else "") + ".",
        f"- **Seeds**: {', '.join(map(str, prof.seeds))}; the paper reports single runs without seeds.",
    ]
    if prof.bf16 or prof.channels_last:
        lines.append("- **Numerics**: training forward and backward passes under bf16 autocast"
                     + (" in channels_last memory format" if prof.channels_last else "")
                     + " on the GPU (tested against the fp32 path on CPU); attacks at evaluation in fp32.")
    return "\n".join(lines)


def _capped_text(results: Sequence[experiment.RunResult]) -> str:
    """How many runs the epoch cap ended with their last epoch kept (see :func:`stopping_findings`)."""
    capped = [r for r in results if _cut_by_cap(r)]
    return (f"{len(capped)} of these {len(results)} runs reached the cap with their last epoch kept, cut short "
            "while their validation loss still fell (chapter 4"
            + (f"; {_full_schedule_pointer(results)})" if capped and _full_schedule_pointer(results) else ")"))


def leakage_text(summary_: dict | None, result: experiment.RunResult) -> str:
    """Chapter 2's leakage paragraph (or why it is missing)."""
    if summary_ is None:
        return ("The split summary is not stored with the results and the data are not available: pass "
                "`data_root` to compute it.")
    aware, image = summary_["lesion_aware"], summary_["image_level"]
    share = 100 * image["test_images_with_lesion_in_training"] / max(image["n_test"], 1)
    return (f"With the same per-class counts and seed, a plain image-level split would put "
            f"**{image['test_images_with_lesion_in_training']} of {image['n_test']} test images** ({share:.1f}%) "
            f"beside another image of the same lesion in training or validation ({image['shared_lesions']} "
            f"lesions on both sides). The lesion-aware split used here has "
            f"{aware['test_images_with_lesion_in_training']} such images. The split stored with run "
            f"`{result.run_id}` {'is' if stored_split_matches(result, summary_) else 'is NOT'} the one "
            "recomputed here. Available per class: "
            + ", ".join(f"{c} {summary_['available'][c]['images']} images of {summary_['available'][c]['lesions']} "
                        "lesions" for c in summary_["data"]["classes"])
            + ".")


def and_list(items: Sequence[str]) -> str:
    """``a``, ``a and b``, ``a, b and c``."""
    items = list(items)
    return " and ".join(items) if len(items) < 3 else ", ".join(items[:-1]) + " and " + items[-1]


# --------------------------------------------------------------------------
# Speed and cost: what each method costs to train, the throughput benchmark
# --------------------------------------------------------------------------

def passes_per_batch(method: MethodConfig) -> tuple[str, int]:
    """Forward-backward passes per training batch (attack steps + training passes) and their total, from the
    method's code: STD 1; AT k + 1; SAT, DPAAT, D-A, D-B k + 2; AMAT at most k + 2 (it attacks only the
    correctly classified images), with k the training attack's steps (7)."""
    k = int(method.attack.steps)
    if method.name == "std":
        return "1", 1
    if method.name == "at":
        return f"{k} + 1", k + 1
    if method.name == "amat":
        return f"<= {k} + 2", k + 2
    return f"{k} + 2", k + 2


def _cost_rows(results: Sequence[experiment.RunResult]) -> list[dict]:
    """Per run (sorted): model, method, seed, epochs, median seconds per epoch, its ratio to STD's, passes."""
    med = {r.run_id: float(np.median([e["seconds"] for e in r.history["epochs"]])) for r in results}
    std = {(r.config.model, r.config.train.seed): r for r in results if r.config.method.name == "std"}
    rows = []
    for r in sorted(results, key=lambda r: (r.config.model, method_key(r.config.method.label), r.config.train.seed)):
        base = std.get((r.config.model, r.config.train.seed))
        rel = med[r.run_id] / med[base.run_id] if base is not None and med[base.run_id] > 0 else float("nan")
        text, total = passes_per_batch(r.config.method)
        rows.append({"model": r.config.model, "method": r.config.method.label, "seed": r.config.train.seed,
                     "epochs": len(r.history["epochs"]), "median": med[r.run_id], "rel": rel, "passes": text,
                     "passes_total": f"{'<= ' if '<=' in text else ''}{total}"})
    return rows


def strong_cost_table(results: Sequence[experiment.RunResult]) -> pd.DataFrame:
    """Per run: epochs run, median seconds per training epoch (stored history), its ratio to the median of
    the STD run of the same model and seed, and the forward-backward passes per batch (:func:`passes_per_batch`)
    with their ratio to STD's one."""
    return pd.DataFrame([
        {"model": r["model"], "method": r["method"], "seed": r["seed"], "epochs run": r["epochs"],
         # fixed width, so the text table keeps its layout when the nbval sanitizer blanks timings
         "median s/epoch": f"{r['median']:8.1f} s/epoch",
         "median relative to STD": f"x{r['rel']:6.1f}" if np.isfinite(r["rel"]) else "—",
         "passes per batch": r["passes"], "passes relative to STD": r["passes_total"]}
        for r in _cost_rows(results)])


def benchmark_cost(results_dir) -> pd.DataFrame | None:
    """Each method's cost relative to STD measured by ``benchmarks/train_throughput.py --cost-model``
    (one epoch per method, same process, nothing else running; with ``--repeats`` the median of the
    rounds, their range in brackets), from the stored benchmarks
    (:func:`dpaat_lib.store.benchmark_paths`): rows (card, model), columns the methods. None when no
    benchmark is stored."""
    rows = {}
    for c in store.benchmark_rows(results_dir, "method_cost"):
        key = (c["card"], c["model"], _code_label(c))
        rows.setdefault(key, {})[LABELS[c["method"]]] = _times(c["relative_to_std"], c.get("relative_runs"))
    if not rows:
        return None
    out = pd.DataFrame.from_dict(rows, orient="index")
    out.index = pd.MultiIndex.from_tuples(out.index, names=["hardware", "model", "training code"])
    return out


def compile_time_table(results_dir) -> pd.DataFrame | None:
    """The stored ``compile-time*.json`` of benchmarks/compile_time.py (in ``results_dir`` and the stores
    one level below): per method, the seconds of its first epochs through torch.compile with torch's own
    shape handling, with the library's (the partial last batch eager) and again on the library's warm
    cache, the graphs each compiled, and the two ratios. None when none is stored."""
    root = Path(results_dir)
    rows = []
    for path in sorted(root.glob("compile-time*.json")) + sorted(root.glob("*/compile-time*.json")):
        for r in store.read_json(path)["compile_time"]:
            rows.append({"hardware": r.get("card", r["device"]), "model": r["model"], "method": LABELS[r["method"]],
                         "run": f"{r['images']} images, {r['epochs']} epochs, {r['size']} px",
                         "graphs (torch, library)": f"{r['torch_graphs']}, {r['library_graphs']}",
                         "torch's shapes s": f"{r['torch_s']:.1f}", "library s": f"{r['library_s']:.1f}",
                         "torch / library": f"x{r['torch_over_library']:.2f}",
                         "warm cache s": f"{r['warm_s']:.1f}", "cold / warm": f"x{r['cold_over_warm']:.1f}"})
    return pd.DataFrame(rows).set_index(["hardware", "model", "method"]) if rows else None


def benchmark_throughput(results_dir) -> pd.DataFrame | None:
    """The stored throughput benchmark: images/s of PGD-7 training in the paper-style loop, the library's
    path and several library processes at once, with the ratios, and the seconds of the library's first
    warm-up batches (compiling, on a compiled path) where recorded (None when none is stored;
    :func:`dpaat_lib.store.benchmark_paths`)."""
    rows = []
    for r in store.benchmark_rows(results_dir, "throughput"):
        row = {"hardware": r["card"], "library path": _library_path(r), "model": r["model"],
               "training code": _code_label(r),
               "paper-style img/s": f"{r['paper_img_s']:.0f}",
               "library img/s": f"{r['library_img_s']:.0f}", "ratio": _times(r["ratio"], r.get("ratio_runs"))}
        if "concurrent_img_s" in r:
            row[f"{r['procs']} processes img/s"] = f"{r['concurrent_img_s']:.0f}"
            row[f"ratio ({r['procs']} processes)"] = f"x{r['concurrent_ratio']:.2f}"
        if "library_warmup_s" in r:  # compiling included on a compiled path: what a run pays once
            row["library warm-up s"] = f"{r['library_warmup_s']:.1f}"
        rows.append(row)
    return pd.DataFrame(rows).set_index(["hardware", "library path", "model"]).fillna("–") if rows else None


def _times(value: float, rounds=None) -> str:
    """``x6.32``, or ``x6.32 (6.01-6.80)`` with the range of a benchmark's rounds (``--repeats``)."""
    text = f"x{value:.2f}"
    if rounds and len(rounds) > 1 and min(rounds) != max(rounds):
        text += f" ({min(rounds):.2f}-{max(rounds):.2f})"
    return text


def _code_label(row: dict) -> str:
    """Which training path a benchmark row timed: this book's ("current"), an earlier one, or unrecorded
    (rows stored before benchmarks recorded :func:`dpaat_lib.training.training_code_digest`)."""
    from .training import training_code_digest

    code = row.get("training_code")
    return "unrecorded" if code is None else ("current" if code == training_code_digest() else f"earlier ({code})")


def _library_path(row: dict) -> str:
    """How a benchmark row's library path ran: eager, or through torch.compile in which mode."""
    return f"torch.compile {row['compile']}" if row.get("compile") else "eager"


def _ratio_range(values) -> str:
    lo, hi = min(values), max(values)
    return f"x{lo:.2f}" if f"{lo:.2f}" == f"{hi:.2f}" else f"x{lo:.2f} to x{hi:.2f}"


SPEED_GOAL = 3.0  # issue 4: the library's path at least 3x the paper-style loop, every CNN


def benchmark_findings(results_dir, goal: float = SPEED_GOAL) -> str:
    """What the stored throughput benchmarks show, per card: the range of the library's speed-up over
    the paper-style loop (one process, and several sharing the card), and which CNNs reach ``goal``."""
    cards: dict[tuple[str, str], list[dict]] = {}
    for r in store.benchmark_rows(results_dir, "throughput"):
        cards.setdefault((r["card"], _library_path(r)), []).append(r)
    if not cards:
        return "No throughput benchmark is stored."
    out = []
    for (card, path), rows in cards.items():
        one = [r["ratio"] for r in rows]
        how = "" if path == "eager" else f" through {path}"
        text = (f"On {card} ({len(rows)} CNN{'s' * (len(rows) > 1)}, {rows[0]['size']} px), the library's path{how} "
                f"in one process runs at {_ratio_range(one)} the paper-style loop")
        best = {r["model"]: r["ratio"] for r in rows}
        many = [r for r in rows if "concurrent_ratio" in r]
        if many:
            conc = [r["concurrent_ratio"] for r in many]
            text += f"; {many[0]['procs']} library processes sharing the card together at {_ratio_range(conc)}"
            for r in many:
                best[r["model"]] = max(best[r["model"]], r["concurrent_ratio"])
        text += "."
        rounds = max(int(r.get("repeats", 1)) for r in rows)
        if rounds > 1:
            text += f" Each one-process ratio is the median of {rounds} interleaved rounds (their range in the table)."
        if not card.startswith("CPU"):  # the goal is the GPU's: on a CPU both loops are bound by arithmetic
            reached = [m for m, v in best.items() if v >= goal]
            text += (f" The project's goal of x{goal:g} (the library's path at least {goal:g} times the paper-style "
                     f"loop's images per second, on every CNN) is reached for {len(reached)} of {len(best)} CNNs"
                     + (f" ({', '.join(reached)})" if reached else "") + ".")
        stale = sorted({_code_label(r) for r in rows} - {"current"})
        if stale:
            text += (" These rows do not record which version of the training path (attacks, methods, models, "
                     "training loop) they timed, so they may describe an earlier one than this book's code."
                     if stale == ["unrecorded"] else
                     " Rows here timed an earlier version of the training path (attacks, methods, models, training "
                     "loop): they describe that version, not this book's code.")
        out.append(text)
    return "\n\n".join(out)


def strong_cost_findings(results: Sequence[experiment.RunResult]) -> str:
    """The cost paragraph: measured median ratios beside the pass counts, with the caveat on how they were
    measured."""
    rows = _cost_rows(results)
    if not rows:
        return "No runs."
    by: dict = {}
    for r in rows:
        if r["method"] != "STD":
            by.setdefault((r["model"], r["method"]), []).append(r)
    parts = []
    for (model, meth), rs in by.items():  # one entry per method, its seeds' ratios summarised
        rel = [r["rel"] for r in rs if np.isfinite(r["rel"])]
        text = "—" if not rel else f"x{np.median(rel):.1f}"
        if len(rel) > 1:
            text += f" (x{min(rel):.1f} to x{max(rel):.1f} over {len(rel)} seeds)"
        parts.append(f"{model} {meth}: measured {text}, passes {rs[0]['passes_total']}")
    return ("**Cost relative to STD** (median seconds per training epoch, from each run's stored history, against "
            "the STD run of the same seed; with several seeds the median of their ratios and their range; "
            "forward-backward passes per batch): " + "; ".join(parts) + ". "
            "The runs behind this book were trained on a shared CPU, partly at the same time as other runs, so "
            "the measured ratios are indicative only; the pass counts are what the methods cost on any machine. "
            "AT, SAT, AMAT and DPAAT all pay for the same 7-step attack per batch; DPAAT's radius update and "
            "synchronisation loss add no pass, so its cost equals SAT's and exceeds AT's by one forward-backward "
            "pass of the clean batch.")
