"""Sweeps of DPAAT's free parameters (eta, lambda, mu): loading, tables, plots, trends and findings."""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import pandas as pd

from .. import experiment, profiles, report
from ..evaluation import CLEAN
from .setup import default_sweeps, STUDY_SEEDS, SWEEP_NAMES, SWEEP_PARAMS, sweep_seeds_for, value_label
from .numbers import metric_value, runs_of
from .significance import holm


def load_sweeps(profile: str, sweeps: dict[str, Sequence], *, data_root=None, results_root=None, models=None,
                seeds=None, device: str = "cpu", cache_dir=None, **overrides) -> dict[str, dict]:
    """DPAAT on the study profile for every value of every swept parameter (the others at the
    profile's values). Returns ``{param: {value: [RunResult per model x seed]}}``. A value equal to the
    profile's own (e.g. eta None) is the main grid's DPAAT run, loaded, not retrained."""
    out: dict[str, dict] = {}
    for param, values in sweeps.items():
        if param not in SWEEP_PARAMS:
            raise ValueError(f"cannot sweep {param!r}; choose from {SWEEP_PARAMS}")
        out[param] = {}
        for v in values:
            if param in ("eta", "lam") and v is not None:
                v = float(v)  # 2 and 2.0 must name the same run (the CLI's --set gives floats)
            _, res = report.load_grid(profile, data_root=data_root, results_root=results_root, models=models,
                                      methods=("dpaat",), seeds=seeds, device=device, cache_dir=cache_dir,
                                      **{**overrides, param: v})
            out[param][v] = res
    return out


def _value_key(param: str, value, eps0: float):
    """Sort key of a swept value: eta None is eps0; mu keeps batch before epoch."""
    if param == "mu":
        return ("batch", "epoch").index(value) if value in ("batch", "epoch") else 2
    return eps0 if value is None else float(value)


def load_sweep_study(profile: str, models: Sequence[str], *, seeds: Sequence[int] = STUDY_SEEDS,
                     sweep_seeds: Sequence[int] | None = None, given: dict | None = None,
                     **kw) -> tuple[dict[str, dict], list, list]:
    """The sweeps of every model in ``models`` and their yardsticks: ``(sweeps, at_runs, default_runs)``.

    ``sweeps`` is :func:`load_sweeps`'s ``{param: {value: runs}}`` over all models (the values of
    :func:`default_sweeps`, ``given`` the notebook's overrides), the values in ascending order;
    ``at_runs`` and ``default_runs`` are AT and the default DPAAT of every model on ``seeds``. The sweep
    values run on ``sweep_seeds``, or where None on each model's :func:`sweep_seeds_for`. ``kw`` goes
    to :func:`load_sweeps` and :func:`dpaat_lib.report.load_grid` (data_root, results_root, device ...)."""
    eps0 = kw.get("eps0") or profiles.get_profile(profile).eps0  # where eta = None sorts among the etas
    merged: dict[str, dict] = {}
    at_runs, default_runs = [], []
    for model in models:
        sw = load_sweeps(profile, default_sweeps(profile, **(given or {})), models=(model,),
                         seeds=tuple(sweep_seeds or sweep_seeds_for(profile, model)), **kw)
        for param, by_value in sw.items():
            for v, runs in by_value.items():
                merged.setdefault(param, {}).setdefault(v, []).extend(runs)
        _, ref = report.load_grid(profile, models=(model,), methods=("at", "dpaat"), seeds=seeds, **kw)
        at_runs += runs_of(ref, "AT")
        default_runs += runs_of(ref, "DPAAT")
    merged = {p: dict(sorted(by.items(), key=lambda kv: _value_key(p, kv[0], eps0))) for p, by in merged.items()}
    return merged, at_runs, default_runs


def sweep_commands(study_profile: str, sweeps: dict[str, Sequence], seeds: Sequence[int],
                   data: str = "DIR") -> list[str]:
    """The command lines that train every run of :func:`load_sweeps` (a GPU's job)."""
    base = f"python -m dpaat_lib grid --profile {study_profile} --data {data} --seeds {' '.join(map(str, seeds))}"
    cmds = [base]
    prof = profiles.get_profile(study_profile)
    for param, values in sweeps.items():
        for v in values:
            if v == getattr(prof, param):
                continue
            cmds.append(f"{base} --methods dpaat --set {param}={'none' if v is None else v}")
    return cmds


def prediction_interval(values: Sequence[float], level: float = 0.95, m: int = 1) -> tuple[float, float]:
    """Where the mean of ``m`` more training seeds' values falls with probability ``level``, from ``values``
    over seeds (normal model: mean ± t(n-1) s sqrt(1/m + 1/n)); (NaN, NaN) below two values. The
    yardstick for a sweep point of m seeds: with three seeds a fourth falls outside their min-max range
    half the time by chance, so the range alone would flag noise as an effect."""
    v = np.asarray(values, dtype=float)
    if v.size < 2:
        return float("nan"), float("nan")
    return _interval(float(v.mean()), float(v.std(ddof=1)), v.size, m, level)


def _interval(mean: float, std: float, n: int, m: int = 1, level: float = 0.95) -> tuple[float, float]:
    from scipy.stats import t as student_t

    if n < 2:
        return float("nan"), float("nan")
    half = student_t.ppf(0.5 + level / 2, n - 1) * std * math.sqrt(1 / m + 1 / n)
    return mean - half, mean + half


def _more(m: int) -> str:
    return "one more run" if m == 1 else f"a mean of {m} more runs"


def default_interval(default_row, m: int = 1, level: float = 0.95) -> tuple[float, float]:
    """:func:`prediction_interval` of a :func:`sweep_frame` reference row (its mean, std and seeds) for the
    mean of ``m`` more seeds, clipped to accuracy's 0-100 %."""
    lo, hi = _interval(float(default_row["mean"]), float(default_row["std"]), int(default_row["seeds"]), m, level)
    return (lo, hi) if math.isnan(lo) else (max(lo, 0.0), min(hi, 100.0))


def _stat_row(vals: Sequence[float]) -> dict:
    """Mean, std, range and the prediction interval (clipped to accuracy's 0-100 %) of ``vals`` (percent)."""
    lo, hi = prediction_interval(vals)
    lo, hi = (lo, hi) if math.isnan(lo) else (max(lo, 0.0), min(hi, 100.0))
    return {"mean": float(np.mean(vals)), "std": float(np.std(vals, ddof=1)) if len(vals) > 1 else float("nan"),
            "min": float(np.min(vals)), "max": float(np.max(vals)), "pi_low": lo, "pi_high": hi, "seeds": len(vals)}


REFERENCE_LABELS = {"AT": "AT", "default": "DPAAT default"}


def sweep_frame(sweeps: dict[str, dict], reference: Sequence[experiment.RunResult] = (),
                default: Sequence[experiment.RunResult] = (), attacks: Sequence[str] = (CLEAN, "20-PGD"),
                metric: str = "acc", eps0: float = 0.5) -> pd.DataFrame:
    """Long table of the sweeps: param, value, order, label, model, attack, mean, std, min, max, pi_low,
    pi_high (95% prediction interval of one more seed; :func:`default_interval` gives it for a mean of
    several), seeds; accuracies in percent. ``reference`` runs
    (AT) and ``default`` runs (DPAAT at its default options, every seed) add rows with param "AT" and
    "default": the yardsticks a sweep point is read against."""
    rows = []
    for param, by_value in sweeps.items():
        for k, (v, res) in enumerate(by_value.items()):
            for model in dict.fromkeys(r.config.model for r in res):
                rs = [r for r in res if r.config.model == model]
                for att in attacks:
                    rows.append({"param": param, "value": v, "order": k, "label": value_label(param, v, eps0),
                                 "model": model, "attack": "clean" if att == CLEAN else att,
                                 **_stat_row([100 * metric_value(r, metric, att) for r in rs])})
    for name, runs in (("AT", reference), ("default", default)):
        for model in dict.fromkeys(r.config.model for r in runs):
            rs = [r for r in runs if r.config.model == model]
            for att in attacks:
                rows.append({"param": name, "value": None, "order": -1, "label": REFERENCE_LABELS[name],
                             "model": model, "attack": "clean" if att == CLEAN else att,
                             **_stat_row([100 * metric_value(r, metric, att) for r in rs])})
    return pd.DataFrame(rows)


def sweep_table(frame: pd.DataFrame, digits: int = 1) -> pd.DataFrame:
    """One row per (param, value, model), columns per attack, in percent: a sweep point's value (``mean ±
    std`` if it has several seeds); the reference rows (AT, the default DPAAT over its seeds) as ``mean ±
    std (min-max)``."""
    if frame.empty:
        return frame
    f = frame.copy()
    f["text"] = [f"{m:.{digits}f}" + (f" ± {s:.{digits}f}" if n > 1 else "")
                 + (f" ({lo:.{digits}f}-{hi:.{digits}f})" if n > 1 and p in REFERENCE_LABELS else "")
                 for m, s, lo, hi, n, p in zip(f["mean"], f["std"], f["min"], f["max"], f["seeds"], f["param"])]
    f["parameter"] = [SWEEP_NAMES.get(p, "reference") for p in f["param"]]
    f["sort"] = [SWEEP_PARAMS.index(p) if p in SWEEP_PARAMS else len(SWEEP_PARAMS) for p in f["param"]]
    wide = f.pivot_table(index=["sort", "parameter", "order", "label", "model", "seeds"], columns="attack",
                         values="text", aggfunc="first", sort=False).reset_index()
    rank = {m: k for k, m in enumerate(dict.fromkeys(frame["model"]))}  # the CNNs in the frame's order
    wide = wide.sort_values(["sort", "model", "order"], key=lambda c: c.map(rank) if c.name == "model" else c,
                            kind="stable").drop(columns=["order", "sort"])
    wide.columns.name = None
    return wide.rename(columns={"label": "value", "clean": "clean acc (%)", "20-PGD": "20-PGD acc (%)"}
                       ).reset_index(drop=True)


def plot_sweeps(frame: pd.DataFrame, attacks: Sequence[str] = ("clean", "20-PGD")):
    """One row of panels per model, one panel per swept parameter: accuracy against the value (one line
    per attack, mean ± std where a value has several seeds). Beside them, per attack: the default DPAAT's
    seed mean (dashed), its min-max over seeds (dark band) and the 95% prediction interval of a mean over
    as many more seeds as the sweep values have (light band), and AT's seed mean (dotted)."""
    import matplotlib.pyplot as plt

    params = [p for p in SWEEP_PARAMS if p in set(frame["param"])]
    models = list(dict.fromkeys(frame.loc[frame["param"].isin(SWEEP_PARAMS), "model"])) or [None]
    ncol, nrow = max(len(params), 1), len(models)
    fig, axes = plt.subplots(nrow, ncol, figsize=(4.4 * ncol, 3.3 * nrow + 0.6), squeeze=False)
    colors = dict(zip(attacks, ("tab:blue", "tab:red", "tab:green", "tab:purple")))
    for row, model in zip(axes, models):
        for ax, param in zip(row, params):
            sub = frame[(frame["param"] == param) & (frame["model"] == model)]
            labels = list(dict.fromkeys(sub.sort_values("order")["label"]))
            x = {lab: k for k, lab in enumerate(labels)}
            span = (-0.3, len(labels) - 0.7)
            for att in attacks:
                g = sub[sub["attack"] == att].sort_values("order")
                if g.empty:
                    continue
                n = int(g["seeds"].max())
                ax.errorbar([x[lab] for lab in g["label"]], g["mean"], yerr=g["std"].fillna(0), fmt="-o",
                            color=colors[att], capsize=3, zorder=3, label=f"DPAAT {att} (mean ± std over seeds)")
                d = frame[(frame["param"] == "default") & (frame["model"] == model) & (frame["attack"] == att)]
                if not d.empty:
                    d = d.iloc[0]
                    ax.axhline(d["mean"], color=colors[att], ls="--", lw=0.9)
                    if d["seeds"] > 1:
                        ax.fill_between(span, *default_interval(d, n), color=colors[att], alpha=0.08, lw=0)
                        ax.fill_between(span, d["min"], d["max"], color=colors[att], alpha=0.22, lw=0,
                                        label=f"default DPAAT {att}: mean, range, 95% PI")
                r = frame[(frame["param"] == "AT") & (frame["model"] == model) & (frame["attack"] == att)]
                if not r.empty:
                    ax.axhline(float(r["mean"].iloc[0]), color=colors[att], ls=":", lw=1.4,
                               label=f"AT {att} (seed mean)")
            n_seeds = int(sub["seeds"].max()) if len(sub) else 1
            ax.set_title(f"{model}, {n_seeds} seed{'s' * (n_seeds > 1)} per value", fontsize=9)
            ax.set_xticks(range(len(labels)), labels)
            ax.set_xlim(*span)
            ax.set_ylim(0, 100)
            ax.set_xlabel(SWEEP_NAMES[param])
            ax.set_ylabel(f"{model}: accuracy (%)" if model else "accuracy (%)")
            ax.grid(alpha=0.3)
    handles, labs = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labs, fontsize=7, loc="lower center", ncol=3, bbox_to_anchor=(0.5, 0.0))
    fig.tight_layout(rect=(0, 0.55 / (3.3 * nrow + 0.6), 1, 1))  # the legend's two lines below the panels
    plt.close(fig)
    return fig


TREND_PARAMS = ("eta", "lam")
"""The numeric sweep parameters, whose values span a factor of 20: a trend is fitted on their log2."""


def sweep_trends(sweeps: dict[str, dict], attacks: Sequence[str] = (CLEAN, "20-PGD"), metric: str = "acc",
                 eps0: float = 0.5) -> pd.DataFrame:
    """Does accuracy move steadily with a numeric swept value? Per (param, model, attack): the least-squares
    slope of every run's accuracy (percent, each seed of each value one point) on log2 of the value, i.e.
    points per doubling, its p-value (two-sided t-test of a zero slope) and Holm's adjustment over all
    rows. The point-by-point reading (:func:`sweep_findings`) misses a steady drift that no single value
    carries beyond seed noise; this reads the whole sweep at once. Needs at least three runs per row. Runs
    of the same seed share their initialisation and data order; the fit treats every run as independent."""
    from scipy.stats import linregress

    rows = []
    for param in [p for p in TREND_PARAMS if p in sweeps]:
        runs = [(v, r) for v, rs in sweeps[param].items() for r in rs]
        for model in dict.fromkeys(r.config.model for _, r in runs):
            mine = [(v, r) for v, r in runs if r.config.model == model]
            x = np.log2([eps0 if v is None else float(v) for v, _ in mine])
            for att in attacks:
                y = np.array([100 * metric_value(r, metric, att) for _, r in mine])
                if len(y) < 3 or np.ptp(x) == 0:
                    continue
                fit = linregress(x, y)
                rows.append({"param": param, "model": model, "attack": "clean" if att == CLEAN else att,
                             "runs": len(y), "values": len(set(x)), "slope": float(fit.slope),
                             "p": float(fit.pvalue)})
    out = pd.DataFrame(rows, columns=["param", "model", "attack", "runs", "values", "slope", "p"])
    out["p (Holm)"] = holm(out["p"].to_numpy()) if len(out) else []
    return out


def trend_table(trends: pd.DataFrame, digits: int = 2) -> pd.DataFrame:
    """:func:`sweep_trends` for display: the parameter named, slope in points per doubling, p-values."""
    t = trends.copy()
    t["parameter"] = [SWEEP_NAMES[p] for p in t["param"]]
    t["points per doubling"] = [f"{v:+.{digits}f}" for v in t["slope"]]
    t["p"] = [f"{v:.3f}" for v in t["p"]]
    t["p (Holm)"] = [f"{v:.3f}" for v in t["p (Holm)"]]
    return t[["parameter", "model", "attack", "runs", "points per doubling", "p", "p (Holm)"]]


def trend_findings(trends: pd.DataFrame, alpha: float = 0.05) -> str:
    """One paragraph on :func:`sweep_trends`: which drifts are at p < alpha, and which survive Holm."""
    if trends.empty:
        return "No numeric sweep with three or more runs: no trend fitted."
    hit = trends[trends["p"] < alpha]
    kept = trends[trends["p (Holm)"] < alpha]
    name = lambda r: (  # noqa: E731
        f"{SWEEP_NAMES[r['param']]} on {r['model']}, {r['attack']}: {r['slope']:+.2f} points per "
        f"doubling (p = {r['p']:.3f}, Holm {r['p (Holm)']:.3f})")
    text = (f"Trends (accuracy against log2 of the value, every run a point): {len(hit)} of {len(trends)} slopes "
            f"are at p < {alpha:g}")
    if hit.empty:
        return text + "; no swept value moves accuracy steadily beyond seed noise."
    text += ": " + "; ".join(name(r) for _, r in hit.iterrows()) + ". "
    if kept.empty:
        return text + (f"None survives Holm's adjustment over the {len(trends)} slopes: a direction to test with "
                       "more seeds, not an established effect.")
    return text + f"{len(kept)} survive{'s' * (len(kept) == 1)} Holm's adjustment over the {len(trends)} slopes."


def sweep_findings(frame: pd.DataFrame, study_profile: profiles.Profile,
                   attacks: Sequence[str] = ("20-PGD", "clean")) -> str:
    """The reading of the sweeps (Markdown): each non-default value's accuracy (its mean over m seeds) beside
    the default DPAAT's seed mean and its 95% prediction interval for the mean of m more seeds, and AT."""
    if frame.empty or not set(frame["param"]) & set(SWEEP_PARAMS):
        return "No sweep runs."
    lines, outside, n_points, seeds_of_point, widths = [], [], 0, {}, []
    for param in [p for p in SWEEP_PARAMS if p in set(frame["param"])]:
        default = value_label(param, getattr(study_profile, param), study_profile.eps0)
        for model in dict.fromkeys(frame.loc[frame["param"] == param, "model"]):
            n_seed = int(frame.loc[(frame["param"] == param) & (frame["model"] == model), "seeds"].max())
            parts = []
            for att in attacks:
                sub = frame[(frame["param"] == param) & (frame["model"] == model) & (frame["attack"] == att)]
                d = frame[(frame["param"] == "default") & (frame["model"] == model) & (frame["attack"] == att)]
                r = frame[(frame["param"] == "AT") & (frame["model"] == model) & (frame["attack"] == att)]
                pts = []
                for _, row in sub.sort_values("order").iterrows():
                    txt = f"{row['mean']:.1f} at {row['label']}" + (" (default)" if row["label"] == default else "")
                    if row["label"] != default and not d.empty and d.iloc[0]["seeds"] > 1:
                        n_points += 1
                        lo, hi = default_interval(d.iloc[0], int(row["seeds"]))
                        widths.append(hi - lo)
                        seeds_of_point[int(row["seeds"])] = seeds_of_point.get(int(row["seeds"]), 0) + 1
                        if not lo <= row["mean"] <= hi:
                            txt += " **outside**"
                            outside.append(f"{SWEEP_NAMES[param]} = {row['label']} ({att}, {row['mean']:.1f} vs "
                                           f"[{lo:.1f}, {hi:.1f}])")
                    pts.append(txt)
                ref = ""
                if not d.empty:
                    dd = d.iloc[0]
                    lo, hi = default_interval(dd, n_seed)
                    ref = (f"; default DPAAT over {int(dd['seeds'])} seeds {dd['mean']:.1f} (range "
                           f"{dd['min']:.1f} to {dd['max']:.1f}"
                           + (f", 95% prediction interval of {_more(n_seed)} [{lo:.1f}, {hi:.1f}])" if dd["seeds"] > 1 else ")"))
                if not r.empty:
                    ref += f"; AT {r.iloc[0]['mean']:.1f}"
                parts.append(f"{att}: {', '.join(pts)}{ref}")
            lines.append(f"**{SWEEP_NAMES[param]}** ({model}, {n_seed} seed{'s' * (n_seed > 1)} per value): "
                         + ". ".join(parts) + ".")
    interval = "the 95% prediction interval of the default DPAAT over as many more seeds as the point has"
    if outside:
        verdict = (f"{len(outside)} of {n_points} sweep points fall outside {interval}: {'; '.join(outside)}. "
                   + ("Each rests on one training seed, so this marks a value worth repeating over seeds, not an "
                      "established effect" if set(seeds_of_point) == {1} else "This is evidence of an effect, to "
                      "be weighed against the number of points tested")
                   + " (about one point in twenty falls outside by chance).")
    elif n_points:
        verdict = (f"All {n_points} sweep points fall inside {interval} ("
                   + ", ".join(f"{k} with {m} seed{'s' * (m > 1)}" for m, k in sorted(seeds_of_point.items()))
                   + "): on this evidence no swept value changes DPAAT's clean or robust accuracy by more than "
                     "the variation between training seeds."
                   + (f" That evidence is weak: the intervals are {min(widths):.1f} to {max(widths):.1f} points wide, "
                      "so only a change of about half its interval's width could have shown." if widths else ""))
    else:
        verdict = "The default DPAAT has one seed here, so the sweep points cannot be set against seed noise."
    chance = 100 / len(study_profile.classes)
    for _, d in frame[(frame["param"] == "default") & (frame["attack"] == attacks[0])].iterrows():
        if d["mean"] < chance:  # worse than ignoring the input: its sweep cannot show what changes robustness
            verdict += (f" On {d['model']} the default DPAAT's {attacks[0]} accuracy ({d['mean']:.1f}%) is below the "
                        f"{chance:.1f}% of a constant guess, which no attack moves: it does worse under "
                        f"{attacks[0]} than a classifier that ignores its input on this profile, "
                        f"so its sweep speaks to clean accuracy only.")
    return "- " + "\n- ".join(lines) + "\n\n" + verdict
