"""Training dynamics: per-sample radii, how runs stopped, non-finite values, training cost."""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import pandas as pd

from .. import experiment, profiles
from ..profiles import radius_text
from ..config import TrainConfig
from .common import method_key


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
                     + (f" (the paper profile allows {profiles.get_profile('paper').epochs} epochs, method.md up to "
                        f"{TrainConfig.epochs}; "
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
    epoch is still exactly eps0, so that a large share of the training images' radii never moved (a
    radius moves only when the sampler draws its image; DPAAT's batch-mean update is zero-sum, so a
    moved radius almost never lands back on eps0). Where the epoch logged its histogram, the share of the
    bin that holds eps0 bounds that share from above (:func:`eps0_bin_share`)."""
    runs = [r for r in results if r.config.method.label == method and r.history["epochs"]
            and "radius_quantiles" in r.history["epochs"][0]]
    still = [r for r in runs if abs(_kept_epoch(r)["radius_quantiles"][2] - r.config.method.eps0) < 1e-6]
    if not still:
        return ""
    q = [_kept_epoch(r)["radius_quantiles"] for r in still]
    shares = [eps0_bin_share(_kept_epoch(r), r.config.method.eps0) for r in still]
    bound = (" (the histogram's bin that holds eps0 has " + ", ".join(f"{100 * v:.1f}%" for v in shares)
             + " of them, an upper bound on the unmoved)" if all(v is not None for v in shares) else "")
    return (f"**Radii that never moved.** In {len(still)} of the {len(runs)} {method} runs the median radius at the "
            f"kept epoch is still exactly eps0 = {still[0].config.method.eps0:g} (quartiles "
            + "; ".join(f"{a[1]:.3f}-{a[3]:.3f}" for a in q)
            + f"): a large share of the training images' radii were never updated, since a radius moves only "
              f"when the sampler draws its image{bound}. Those images train at the fixed radius eps0, as in the "
              f"ablation D-B (SAT's mixed loss plus the synchronisation term), so {method}'s comparisons there say "
              "less about the adaptation.")


def eps0_bin_share(epoch: dict, eps0: float) -> float | None:
    """The share of the training images whose radius falls in the logged histogram's bin that holds
    ``eps0`` (``radius_hist`` over [0, ``radius_hist_max``]); None when the epoch logged no histogram."""
    hist, top = epoch.get("radius_hist"), epoch.get("radius_hist_max")
    if not hist or not top or not sum(hist):
        return None
    # torch.histc's equal bins; a value on an inner edge counts in the bin above it
    i = min(int(eps0 / (top / len(hist)) + 1e-9), len(hist) - 1)
    return hist[i] / sum(hist)


def radius_bounds_note(results: Sequence[experiment.RunResult], method: str = "DPAAT") -> str:
    """How many training images sit at the ends of ``method``'s radius range at the kept epoch (Markdown,
    empty where no run logged its histogram): the share in the logged histogram's lowest bin (radii near 0,
    images trained almost clean) and in its highest (up to the clip at ``radius_hist_max``, 2 eps0), per
    run. A spread alone does not say whether the radii pile up at the bounds."""
    kept = sorted(((r, _kept_epoch(r)) for r in results if r.config.method.label == method and r.history["epochs"]),
                  key=lambda rk: (rk[0].config.model, rk[0].config.train.seed))
    kept = [(r, e) for r, e in kept if sum(e.get("radius_hist") or [])]
    if not kept:
        return ""
    top = kept[0][1]["radius_hist_max"]
    width = top / len(kept[0][1]["radius_hist"])
    lows, highs = ([f"{100 * e['radius_hist'][i] / sum(e['radius_hist']):.1f}%" for _, e in kept] for i in (0, -1))
    return (f"**At the bounds.** At the kept epoch, the histogram's lowest bin (radius below {width:.3g}: images "
            f"trained almost clean) holds {', '.join(lows)} of {method}'s training images, and its highest (from "
            f"{top - width:.3g} to the clip at {top:g}) {', '.join(highs)} ("
            + ", ".join(f"{r.config.model} seed {r.config.train.seed}" for r, _ in kept) + ").")


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
