"""The training schedule: does the epoch cap decide the comparison? (d)'s runs under method.md's
schedule against the capped ones, and the verdicts that change between them."""
from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd

from .. import experiment, profiles, report
from ..config import TrainConfig
from ..evaluation import CLEAN
from .setup import COMPARED, TEST_ATTACKS
from .numbers import _label, metric_value
from .significance import _model_prefix, _paired_row, holm, significance_table


SPEC_SCHEDULE = {"epochs": TrainConfig.epochs, "patience": TrainConfig.patience}
"""method.md section 6's schedule from scratch, TrainConfig's defaults: up to 60 epochs, early stopping with
patience 5."""
SPEC_FINE_TUNED_EPOCHS = 50
"""method.md section 6 with pretrained weights: the head alone for ``TrainConfig.head_epochs`` (10), then up to
50 epochs of all layers (a run's ``epochs`` counts the latter), patience 5 as from scratch."""
FULL_SCHEDULE: dict[str, dict] = {"cpu-real": SPEC_SCHEDULE, "quick": {"epochs": 16, "patience": 5}}
"""Section (d)'s schedule per study profile: method.md section 6's (up to 60 epochs from scratch, 50 after the
head epochs when fine-tuning; early stopping with patience 5) on cpu-real, whose main grid stops at 12 epochs
(patience 4) to fit two CPU cores; the quick build doubles its 8 epochs, which is enough to exercise the
section."""


def spec_schedule(weights=None) -> dict:
    """method.md section 6's epochs (of all layers) and patience, from scratch (``weights`` None) or fine-tuned."""
    return {**SPEC_SCHEDULE, "epochs": SPEC_FINE_TUNED_EPOCHS} if weights is not None else dict(SPEC_SCHEDULE)


def schedule_overrides(study_profile: str, *, weights=None, **given) -> dict:
    """The epochs and patience of section (d)'s runs: :data:`FULL_SCHEDULE` (on cpu-real method.md's, which with
    ``weights``, the page's parameter, is the fine-tuned one), then every ``given`` value that is not None (the
    notebook's parameters)."""
    own = FULL_SCHEDULE.get(study_profile, SPEC_SCHEDULE)
    out = spec_schedule(weights) if own is SPEC_SCHEDULE else dict(own)
    out.update({k: v for k, v in given.items() if v is not None})
    return out


def schedule_note(capped: profiles.Profile, full: profiles.Profile, weights=None) -> str:
    """Markdown: the two schedules of section (d), and whether the longer one is method.md's (from scratch, or
    fine-tuned from ``weights``)."""
    spec = spec_schedule(weights)
    start = "from scratch" if weights is None else "when fine-tuning"
    matches = (full.epochs, full.patience) == (spec["epochs"], spec["patience"])
    which = (f"method.md's schedule {start} (its section 6)." if matches else
             f"not method.md's schedule {start} (up to {spec['epochs']} epochs, patience {spec['patience']})"
             + (": the quick build's stand-in for it." if full.synthetic else "."))
    return (f"**Schedules.** Part (a): up to {capped.epochs} epochs, patience {capped.patience}. Here: up to "
            f"{full.epochs} epochs, patience {full.patience}, {which}"
            + (f" Both count the epochs of all layers, after {TrainConfig.head_epochs} of the head alone."
               if weights is not None else ""))


def _schedule_name(results: Sequence[experiment.RunResult]) -> str:
    caps = sorted({(r.config.train.epochs, r.config.train.patience) for r in results})
    return "; ".join(f"up to {e} epochs, patience {p}" for e, p in caps)


def _by_key(results: Sequence[experiment.RunResult]) -> dict:
    return {(r.config.model, _label(r), r.config.train.seed): r for r in results}


def schedule_table(capped: Sequence[experiment.RunResult], full: Sequence[experiment.RunResult]) -> pd.DataFrame:
    """Per (model, method): epochs run / epoch kept of each seed under both schedules, how many runs each
    cap cut short (:func:`dpaat_lib.report.stopping_findings`), and the mean number of epochs."""
    rows = []
    for (model, label), runs in _group(full).items():
        short = [r for r in capped if r.config.model == model and _label(r) == label]
        row = {"model": model, "method": label}
        for name, rs in (("capped", short), ("full", runs)):
            rs = sorted(rs, key=lambda r: r.config.train.seed)
            row[f"epochs run/kept ({name})"] = ", ".join(
                f"{len(r.history['epochs'])}/{r.history.get('best_epoch')}" for r in rs) or "-"
            row[f"cut by the cap ({name})"] = f"{sum(report._cut_by_cap(r) for r in rs)} of {len(rs)}"
            row[f"mean epochs ({name})"] = round(float(np.mean([len(r.history["epochs"]) for r in rs])), 1) \
                if rs else float("nan")
        rows.append(row)
    return pd.DataFrame(rows).set_index(["model", "method"])


def _group(results: Sequence[experiment.RunResult]) -> dict[tuple[str, str], list[experiment.RunResult]]:
    out: dict[tuple[str, str], list] = {}
    for r in sorted(results, key=lambda r: (r.config.model, report.method_key(_label(r)))):
        out.setdefault((r.config.model, _label(r)), []).append(r)
    return out


def variant_change(base: Sequence[experiment.RunResult], variant: Sequence[experiment.RunResult], *,
                   names: tuple[str, str] = ("capped", "full"), attacks: Sequence[str] = TEST_ATTACKS,
                   n_boot: int = 2000, alpha: float = 0.05, seed: int = 0) -> pd.DataFrame:
    """What a variant of the grid (another schedule, another radius) changed, per (model, method) and
    attack: accuracy of the ``variant`` run minus that of the ``base`` run of the same seed (points), with
    :func:`significance`'s columns (paired t-test across seeds, paired bootstrap interval over the test
    images) and Holm over the table. ``names`` are (base, variant) in words: the comparison column reads
    ``"AT: full - capped"``. Only attacks that are the same in both grids compare."""
    short, rows = _by_key(base), []
    for (model, label), runs in _group(variant).items():
        pairs_by_seed = [(r, short[(model, label, r.config.train.seed)]) for r in runs
                         if (model, label, r.config.train.seed) in short]
        if not pairs_by_seed:
            continue
        n_classes = len(runs[0].config.data.classes)
        for att in attacks:
            diffs, pairs = [], []
            for rf, rc in pairs_by_seed:
                pf = rf.predictions.set_index("image_id")
                pc = rc.predictions.set_index("image_id")
                if set(pf.index) != set(pc.index):
                    raise ValueError(f"{model} {label} seed {rf.config.train.seed}: the two grids' runs were "
                                     "tested on different images (a different split or data folder)")
                pc = pc.loc[pf.index]
                diffs.append(100 * (metric_value(rf, "acc", att) - metric_value(rc, "acc", att)))
                pairs.append((pf["label"].to_numpy(), pf[f"pred_{att}"].to_numpy(), pc[f"pred_{att}"].to_numpy()))
            rows.append(_paired_row(model, f"{label}: {names[1]}", names[0], "clean" if att == CLEAN else att, "acc",
                                    diffs, pairs, n_classes, n_boot=n_boot, alpha=alpha, seed=seed))
    out = pd.DataFrame(rows)
    if len(out):
        out["p_holm"] = holm(out["p_ttest"].to_numpy())
    return out


def schedule_change(capped: Sequence[experiment.RunResult], full: Sequence[experiment.RunResult],
                    **kw) -> pd.DataFrame:
    """:func:`variant_change` of section (d): the full schedule's runs against the capped ones."""
    return variant_change(capped, full, names=("capped", "full"), **kw)


def _verdict(row, alpha: float) -> str:
    """A comparison's verdict in words: which side is higher beyond seed noise (Holm), or within it."""
    if row["seeds"] < 2:
        return "higher" if row["mean"] > 0 else ("lower" if row["mean"] < 0 else "equal")  # sign only
    if row["p_holm"] < alpha:
        return "higher beyond noise" if row["mean"] > 0 else "lower beyond noise"
    return "within noise"


def verdict_changes(sig_base: pd.DataFrame, sig_variant: pd.DataFrame, alpha: float = 0.05,
                    names: tuple[str, str] = ("capped", "full")) -> pd.DataFrame:
    """The comparisons both :func:`significance_table` results hold, side by side: the mean difference and
    the verdict in words (:func:`_verdict`) in the base grid and in its variant (``names``: (base, variant),
    which name the columns), and whether the verdict is kept."""
    a, b = names
    if sig_base.empty or sig_variant.empty:
        return pd.DataFrame(columns=["model", "comparison", "attack", f"mean {a}", a, f"mean {b}", b, "kept"])
    rows = []
    variant = sig_variant.set_index(["model", "comparison", "attack"])
    for _, rc in sig_base.iterrows():
        key = (rc["model"], rc["comparison"], rc["attack"])
        if key not in variant.index:
            continue
        rf = variant.loc[key]
        vc, vf = _verdict(rc, alpha), _verdict(rf, alpha)
        rows.append({"model": key[0], "comparison": key[1], "attack": key[2], f"mean {a}": rc["mean"],
                     a: vc, f"mean {b}": rf["mean"], b: vf, "kept": vc == vf})
    return pd.DataFrame(rows)


def _change_sentences(change: pd.DataFrame, title: str, alpha: float) -> list[str]:
    """The reading of :func:`variant_change` (Markdown sentences): how many accuracies moved beyond seed
    noise after Holm, and the largest changes with their per-seed values; with one seed, the signs."""
    n_seeds = int(change["seeds"].max()) if len(change) else 0
    where = _model_prefix(change.get("model", ()))

    def name(r):
        return f"{where(r['model'])}{r['comparison'].split(':')[0]} {r['attack']}"

    if len(change) and n_seeds >= 2:
        moved = change[change["p_holm"] < alpha]
        big = change.reindex(change["mean"].abs().sort_values(ascending=False).index).head(3)
        return [f"**{title}.** Of {len(change)} accuracies (method x attack, paired "
                f"over {n_seeds} seeds), {len(moved)} moved beyond seed noise after Holm's correction"
                + (": " + "; ".join(f"{name(r)} {r['mean']:+.1f}" for _, r in moved.iterrows()) if len(moved) else "")
                + ". The largest changes: " + "; ".join(
                    f"{name(r)} {r['mean']:+.1f} points "
                    f"(per seed {', '.join(f'{d:+.1f}' for d in r['per_seed'])})" for _, r in big.iterrows())
                + "."]
    if len(change):
        return [f"**{title}** (one seed: signs only, no noise measured): "
                + "; ".join(f"{name(r)} {r['mean']:+.1f}" for _, r in change.iterrows()) + "."]
    return []


def _verdict_sentence(verdicts: pd.DataFrame, sig_variant: pd.DataFrame, names: tuple[str, str],
                      words: tuple[str, str], alpha: float, a: str) -> str:
    """The reading of :func:`verdict_changes` (Markdown): how many comparisons of ``a`` keep their verdict,
    and each one under 20-PGD and clean in both grids (``words``: how the text names the base grid and
    the variant, after each mean)."""
    where = _model_prefix(verdicts.get("model", ()))
    lines = [f"{where(r['model'])}{r['comparison']} {r['attack']}: {r['mean ' + names[0]]:+.1f} ({r[names[0]]}) "
             f"{words[0]}, {r['mean ' + names[1]]:+.1f} ({r[names[1]]}) {words[1]}" for _, r in verdicts.iterrows()
             if r["attack"] in ("20-PGD", "clean")]
    return (f"**Does the comparison of {a} with the others change?** {int(verdicts['kept'].sum())} of "
            f"{len(verdicts)} comparisons keep their verdict (higher or lower beyond seed noise after Holm, "
            "or within it" + ("; with one seed, the sign" if int(sig_variant["seeds"].max()) < 2 else "")
            + "). " + "; ".join(lines) + ".")


def schedule_findings(capped: Sequence[experiment.RunResult], full: Sequence[experiment.RunResult],
                      change: pd.DataFrame, sig_capped: pd.DataFrame, sig_full: pd.DataFrame,
                      alpha: float = 0.05, a: str = "DPAAT") -> str:
    """The reading of section (d) (Markdown): how long the runs trained under each schedule, which
    accuracies the full schedule moved beyond seed noise, and whether each comparison of ``a`` with the
    other methods keeps its verdict (Holm-adjusted in both tables; with one seed, its sign)."""
    if not full:
        return "No runs on the full schedule."
    if {r.run_id for r in full} == {r.run_id for r in capped}:
        return ("The full schedule is this chapter's schedule here (the same runs): part (a) already answers it.")
    n_cut = sum(report._cut_by_cap(r) for r in full)
    n_cut_capped = sum(report._cut_by_cap(r) for r in capped)
    ran = {lab: np.mean([len(r.history["epochs"]) for r in rs]) for (_, lab), rs in _group(full).items()}
    parts = [f"**Epochs.** With {_schedule_name(full)}, the runs trained "
             + ", ".join(f"{lab} {v:.1f}" for lab, v in ran.items())
             + f" epochs on average (part (a): {_schedule_name(capped)}; {n_cut_capped} of {len(capped)} runs cut "
               f"short by that cap). Here {n_cut} of {len(full)} runs reached the cap with their last epoch kept"
             + ("." if n_cut == 0 else ": a still longer schedule could move those.")]
    short = _by_key(capped)
    twins = [r for r in full if (k := (r.config.model, _label(r), r.config.train.seed)) in short
             and r.history.get("best_epoch") == short[k].history.get("best_epoch")
             and r.predictions.equals(short[k].predictions)]
    if twins:
        parts.append(f"{len(twins)} of them ({', '.join(f'{_label(r)} seed {r.config.train.seed}' for r in twins)}) "
                     "kept the same epoch under both schedules and reproduce the capped run's predictions exactly: "
                     "a seed's training is deterministic, so there the longer patience changed nothing.")
    parts += _change_sentences(change, "What the longer schedule changed", alpha)
    verdicts = verdict_changes(sig_capped, sig_full, alpha)
    if len(verdicts):
        parts.append(_verdict_sentence(verdicts, sig_full, ("capped", "full"), ("capped", "full"), alpha, a))
    return " ".join(parts)


def schedule_headline(capped: Sequence[experiment.RunResult], full: Sequence[experiment.RunResult],
                      alpha: float = 0.05, a: str = "DPAAT", b: str = "AT",
                      attacks: Sequence[str] = TEST_ATTACKS) -> str:
    """Chapter 1's account of section (d) (Markdown; empty unless ``full`` holds every (model, method, seed)
    of ``capped`` under another schedule): how long the runs trained, how many accuracies the longer
    schedule moved beyond seed noise, ``a`` - ``b`` under both schedules, and how many comparisons of
    ``a`` keep their verdict. The same tests as chapter 12, so the same p-values (the bootstrap intervals,
    not shown here, are skipped)."""
    if not _retrained(capped, full):
        return ""
    change = schedule_change(capped, full, attacks=attacks, alpha=alpha, n_boot=1)
    verdicts = verdict_changes(significance_table(capped, a, COMPARED, attacks=attacks, n_boot=1),
                               significance_table(full, a, COMPARED, attacks=attacks, n_boot=1), alpha)
    epochs = [len(r.history["epochs"]) for r in full]
    n_cut = sum(report._cut_by_cap(r) for r in full)
    n_seeds = int(change["seeds"].max())
    if n_seeds >= 2:
        moved = change[change["p_holm"] < alpha]
        change_text = (f"{len(moved)} of {len(change)} accuracies (method x attack) moved beyond seed noise "
                       "(paired t-test across seeds, Holm)")
    else:
        change_text = "one seed: the change is not set against seed noise"
    top = change.loc[change["mean"].abs().idxmax()]
    return (f"**The epoch cap.** Chapter 12 (d) trains these {len(full)} runs again with {_schedule_name(full)}: "
            f"they ran {min(epochs)} to {max(epochs)} epochs ({n_cut} reached that cap with the last epoch kept), "
            f"and {change_text}; the largest change is {top['comparison'].split(':')[0]} {top['attack']} "
            f"{top['mean']:+.1f} points. "
            + _pair_sentence(verdicts, ("capped", "full"), ("capped", "on the full schedule"), a, b))


def _retrained(base: Sequence[experiment.RunResult], variant: Sequence[experiment.RunResult]) -> bool:
    """Whether ``variant`` holds every (model, method, seed) of ``base``, trained otherwise (other runs):
    what a headline needs before it compares the two grids."""
    def keys(rs):
        return {(r.config.model, _label(r), r.config.train.seed) for r in rs}

    return bool(variant) and keys(variant) == keys(base) and {r.run_id for r in variant} != {r.run_id for r in base}


def _pair_sentence(verdicts: pd.DataFrame, names: tuple[str, str], words: tuple[str, str], a: str, b: str,
                   against: Sequence[str] = COMPARED) -> str:
    """Chapter 1's reading of :func:`verdict_changes`: ``a`` - ``b`` under every tested attack (clean
    first) in both grids (``words``: how the text names each grid, after its mean; each CNN named where there
    are several): the Linf columns too, where the largest differences may be; and how many comparisons of
    ``a`` with ``against`` keep their verdict."""
    pair = verdicts[verdicts["comparison"] == f"{a} - {b}"]
    where = _model_prefix(pair.get("model", ()))
    return (f"{a} - {b}: " + "; ".join(
                f"{where(r['model'])}{r['attack']} {r['mean ' + names[0]]:+.1f} points {words[0]}, "
                f"{r['mean ' + names[1]]:+.1f} {words[1]} ({r[names[1]]})"
                for _, r in pair.iterrows())
            + f". {int(verdicts['kept'].sum())} of {len(verdicts)} comparisons of {a} with "
            + report.and_list(list(against)) + " keep their verdict.")
