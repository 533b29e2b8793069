"""Loading a page's grid (or training what is missing), the profile banner and what the threat means at the
page's resolution."""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Sequence

import pandas as pd

from .. import experiment, grid, pretrained, profiles
from ..profiles import linf_text, radius_text
from ..config import RunConfig
from ..methods import CLASSES, LABELS
from ..training import check_device
from ..training import GRAPH_MODE, effective_mode, training_code_digest
from ..models import list_models
from .common import (PAPER_EPS0, PAPER_IMAGE_SIZE, PAPER_LINF_EPS, PAPER_SIZE_BASIS, and_list, log, method_key,
                     resolve_path)


def results_dir(prof: profiles.Profile, results_root=None) -> Path:
    """Where a profile's runs live: ``<results_root>/<profile name>`` (default ``<repo>/results/<name>``)."""
    return resolve_path(results_root, "results") / prof.name


def make_profile(profile: str = "quick", *, data_root=None, models=None, **overrides) -> profiles.Profile:
    """The profile with its overrides; see :func:`dpaat_lib.profiles.profile_for`. ``models``, a page's CNNs
    (``-p models '[resnet50]'``; one name or a list; empty or None: the profile's), become the profile's models
    and ablation models, so that the banner, the deviations and the figures' choice of CNN name the CNNs the
    page ran."""
    if models:
        models = profiles.list_parameter(models)  # papermill's -p passes "[resnet50]" as that string
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
    check_device(device)  # "gpu", or cuda on a machine without one: said before anything loads or trains
    prof = make_profile(profile, data_root=data_root, seeds=seeds, models=models, **overrides)
    profiles.pin_cpu_threads(prof, device)
    root = resolve_path(data_root)
    out = results_dir(prof, results_root)
    data = experiment.resolve_data(profiles.data_config(prof), root, out, cache_dir)
    methods = profiles.list_parameter(methods) if methods else profiles.MAIN_METHODS  # papermill: "[std, at]" too
    cfgs = profiles.configs(prof, data, methods=methods)  # prof.models: the page's
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


# How calls.jsonl's note begins on a line typed by hand (the first calls, before device_grid.sh wrote the file).
RECORDED_BY_HAND = "recorded by hand"


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
    by_hand = calls[calls["note"].str.startswith(RECORDED_BY_HAND)]
    text = (f"{len(calls)} GPU call(s) ({cards}) have run {minutes:.1f} minutes of wall time in all"
            + (f" ({early} of them stopped early by the device tool, counted up to their last partial pack: a lower "
               "bound)" if early else "")
            + (f" ({by_hand['seconds'].sum():.0f} s of them, {len(by_hand)} call(s), typed into calls.jsonl by hand "
               "from the device tool's wall time: those calls ran before scripts/device_grid.sh kept the file)"
               if len(by_hand) else "") + f"; {finished} of "
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


def grid_window_findings(plan: pd.DataFrame, window_s: float = 640.0, sharing: int = 8,
                         decision: dict | None = None) -> str:
    """What is left of a grid against the length of one GPU session, from
    :func:`dpaat_lib.precompute.plan_table` at ``sharing`` processes. A lent machine's checkpoints do not
    outlive it, so a run must finish within the calls of one session on one warm machine: ``window_s`` is
    about what ``NEXT=200 TOTAL=570 bash scripts/device_session.sh`` and, right after it, ``TOTAL=200`` leave a run
    (770 s less preparing the data and choosing the processes in each call, about 40 s, and each call's
    last 25 s). Runs alone on the card take 1/sqrt(sharing) of the time
    (:func:`dpaat_lib.grid._share_factor`, the grid's own model of sharing). ``decision``: the store's
    ``compile-decision.json`` (scripts/compile_decision.py), what the runs too long even alone could hope from
    CUDA graphs."""
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

    text = (f"**What is left, against one GPU session.** {len(left)} runs are left to train (those whose extras "
            f"were lost with their checkpoint included): {est.sum():,.0f} process-seconds expected at {sharing} "
            f"processes (`dpaat grid --plan --sharing {sharing}`, from the stored runs and the benchmark; a "
            f"method none of whose runs is stored counts its epoch cap, which early stopping can only shorten), about "
            f"{est.sum() / sharing / 60:.0f} minutes of one card with {sharing} runs sharing it. A lent machine's "
            f"checkpoints do not outlive it, so a run must finish within the calls of one session, which leave a "
            f"run about {window_s:.0f} s (two calls, the second sent as the first returns: README, \"On a GPU\"). "
            f"At {sharing} processes "
            f"{int(fits.sum())} of them fit: {models(fits)}.")
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
        if decision is None:
            text += (" The others need CUDA graphs (`COMPILE=auto`, decided by `scripts/device_check.sh` on the "
                     "first lent GPU) to shorten them enough, a longer GPU session, or a machine that keeps its "
                     "checkpoints.")
        else:
            mode = decision.get("mode") or "eager"
            text += (f" The check on {decision.get('card', 'a GPU')} (torch {decision.get('torch', '?')}) chose "
                     f"{mode} training for the grid (`compile-decision.json`: "
                     f"{'; '.join(decision.get('reasons') or ['no reason recorded'])}).")
            if decision.get("training_code") != training_code_digest():
                text += (" That check judged an earlier version of the training path (attacks, methods, models, "
                         "training loop): the next lent GPU checks again (`scripts/device_session.sh`).")
            text += (" So nothing shortens the others enough but a longer GPU session, a machine that keeps its "
                     "checkpoints, or fewer epochs than the profile's cap." if mode == "eager" else
                     " The grid trains in that mode, faster than the eager estimates above; what it cannot shorten "
                     "enough needs a longer GPU session, a machine that keeps its checkpoints, or fewer epochs than "
                     "the profile's cap.")
        # Run ids are <model>-<method>-s<seed>-<hash>; a method no CUDA graph captures is not shortened by one
        # (training.effective_mode, from Method.graph_safe).
        method = known["run"].str.extract(r"^[^-]+-(.+)-s\d+-[0-9a-f]+$")[0]
        eager = never & method.map(lambda m: m in CLASSES and effective_mode(GRAPH_MODE, m) is None)
        if eager.any():
            names = and_list(sorted({CLASSES[m].__name__ for m in method[eager]}))
            text += (f" Of those, {int(eager.sum())} train {names}, which no CUDA graph captures (its attacked "
                     "sub-batch changes size every batch, `Method.graph_safe`): the library's graph trains it "
                     "eagerly, torch.compile's modes without their graphs.")
    return text


def grid_progress(configs: Sequence[RunConfig], finished: Sequence[experiment.RunResult],
                  plan: pd.DataFrame | None = None) -> pd.DataFrame:
    """Which runs of a grid are finished: rows the models, columns the methods; "done", "—" (still to
    run), or empty where the grid has no such run. With ``plan`` (:func:`dpaat_lib.precompute.plan_table`), a
    finished run whose missing extras need its lost checkpoint, so that it trains again, reads "done, to train
    again"."""
    done = {r.run_id for r in finished}
    again = set() if plan is None else set(plan.loc[plan["state"].str.contains("no checkpoint"), "run"])
    models = list(dict.fromkeys(c.model for c in configs))
    methods = sorted(dict.fromkeys(LABELS[c.method.name] for c in configs), key=method_key)
    table = pd.DataFrame("", index=pd.Index(models, name="model"), columns=methods)
    for c in configs:
        table.loc[c.model, LABELS[c.method.name]] = (("done, to train again" if c.run_id in again else "done")
                                                     if c.run_id in done else "—")
    return table


def model_table(model_names: Sequence[str], image_size: int, num_classes: int = 3) -> pd.DataFrame:
    """The CNNs of a profile: whether the paper uses them, their parameters, and the Grad-CAM target layer
    with the size of its map at ``image_size`` (what chapter 8's maps can resolve)."""
    from .. import models as MD

    rows = []
    for name in model_names:
        model = MD.build_model(name, num_classes).eval()
        params = sum(p.numel() for p in model.parameters())
        if image_size < MD.min_input_size(name):
            cam = f"needs >= {MD.min_input_size(name)} px"
        else:
            h, w = MD.gradcam_map_shape(name, image_size)
            cam = f"{h} x {w}"
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
                      f"stronger per pixel than at the {PAPER_IMAGE_SIZE} px we assume for the paper (chapter 3)")
    if prof.linf_eps != PAPER_LINF_EPS:
        lines[-1] += (f" | FGSM and I-FGSM at Linf {linf_text(prof.linf_eps)}, not the paper's "
                      f"{linf_text(PAPER_LINF_EPS)}: their columns are not the paper's")
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
    # A radius given as a parameter (-p eps0, -p linf_eps)
    l2_other, linf_other = any(e != PAPER_EPS0 for e in l2), any(e != PAPER_LINF_EPS for e in linf)
    if s == paper_size and not (l2_other or linf_other):
        return (f"**The threat at {s} px**, the resolution we assume for the paper (it states none): each radius "
                "means here what it means in the "
                "paper as we read it.")
    parts = [f"**The threat at {s} px.** The paper does not state its input size; we take {paper_size} px, "
             f"{PAPER_SIZE_BASIS}, as the paper's; this profile's CNNs see {s} px." if s != paper_size
             else f"**The threat at {s} px**, the resolution we assume for the paper (it states none)."]
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
        if e != PAPER_LINF_EPS:
            parts.append(f"The Linf radius here is {linf_text(e)}, not the paper's {linf_text(PAPER_LINF_EPS)} as we "
                         f"read it: each value may move {e / PAPER_LINF_EPS:.2g} times as far, so the FGSM and "
                         "I-FGSM columns measure another threat than the paper's.")
        if s != paper_size:
            parts.append(f"An Linf radius of {linf_text(e)} bounds each value alone, so it reaches an L2 distance of "
                         f"at most {e * math.sqrt(d):.2f} here against {e * math.sqrt(d_paper):.2f} at {paper_size} "
                         "px: the FGSM and I-FGSM columns are a weaker threat here than "
                         + ("in the paper." if e == PAPER_LINF_EPS else "at the paper's resolution."))
    if s != paper_size:
        compare = ("The two kinds of columns therefore weigh differently from the paper's: compare our levels with "
                   "the paper's only in direction and ranking. ")
    elif l2_other and linf_other:
        compare = "Compare the robust columns with the paper's only in direction and ranking. "
    elif l2_other:
        compare = "Compare the FGSM and I-FGSM columns with the paper's; the others only in direction and ranking. "
    else:
        compare = "Compare the PGD columns with the paper's; FGSM and I-FGSM only in direction and ranking. "
    parts.append(compare
                 + "The radii and the resolution are parameters of the chapters (`papermill -p eps0 1.0`; "
                 "`-p linf_eps 8/255`; `-p image_size 224`, the resolution assumed for the paper); chapter 12 (e) "
                 "trains the five "
                 "methods again with the L2 radius scaled to the paper's change per pixel.")
    return " ".join(parts)
