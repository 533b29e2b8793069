"""Is a difference between two methods larger than seed-to-seed noise? Paired t-tests across
seeds, paired bootstrap intervals over test images, Holm's correction, and their sentences."""
from __future__ import annotations

import math
from typing import Callable, Iterable, Sequence

import numpy as np
import pandas as pd

from .. import experiment
from ..evaluation import CLEAN
from .setup import COMPARED
from .numbers import _label, metric_value, METRICS


def ci_text(low: float, high: float, digits: int = 1) -> str:
    """A confidence interval "[low, high]" in points: ``digits`` decimals, more for a bound that would read
    +0.0 or -0.0 while not zero, so that whether the interval excludes zero can be read off it."""
    def bound(v: float) -> str:
        d = digits
        while d < 4 and v != 0 and round(abs(v), d) == 0:
            d += 1
        return f"{v:+.{d}f}"
    return f"[{bound(low)}, {bound(high)}]"


def _metric_fn(metric: str, n_classes: int) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    """Vectorised metric over bootstrap replicates: (labels (B, n), predictions (B, n)) -> (B,)."""
    if metric == "acc":
        return lambda y, p: (y == p).mean(axis=1)
    if metric == "bacc":
        def bacc(y, p):
            hit = (y == p)
            per = []
            for k in range(n_classes):
                m = y == k
                cnt = m.sum(axis=1)
                per.append(np.where(cnt > 0, (hit & m).sum(axis=1) / np.maximum(cnt, 1), np.nan))
            return np.nanmean(np.stack(per, 1), axis=1)
        return bacc
    if metric == "f1":
        def f1(y, p):
            out = []
            for k in range(n_classes):
                tp = ((p == k) & (y == k)).sum(axis=1)
                fp = ((p == k) & (y != k)).sum(axis=1)
                fn = ((p != k) & (y == k)).sum(axis=1)
                denom = 2 * tp + fp + fn
                out.append(np.where(denom > 0, 2 * tp / np.maximum(denom, 1), 0.0))
            return np.mean(np.stack(out, 1), axis=1)
        return f1
    raise ValueError(f"unknown metric {metric!r}; choose one of {list(METRICS)}")


def paired_difference_test(diffs: Sequence[float]) -> float:
    """Two-sided p-value of the paired t-test across seeds (H0: mean difference 0); NaN below two
    seeds, 1.0 when every difference is 0, 0.0 when they are all equal and non-zero."""
    from scipy.stats import ttest_1samp

    d = np.asarray(diffs, dtype=float)
    if d.size < 2:
        return float("nan")
    if np.allclose(d, d[0]):
        return 1.0 if np.isclose(d[0], 0.0) else 0.0
    return float(ttest_1samp(d, 0.0).pvalue)


def bootstrap_ci(pairs: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray]], metric: str = "acc",
                 n_classes: int = 3, n_boot: int = 2000, level: float = 0.95, seed: int = 0) -> tuple[float, float]:
    """Paired bootstrap CI of the seed-mean of (metric of a - metric of b).

    ``pairs``: one (labels, predictions of a, predictions of b) per seed, on the same test images.
    Each replicate resamples the test images of every seed with replacement (one resample used for
    both methods, so the comparison stays paired) and averages the per-seed differences.
    """
    rng = np.random.default_rng(seed)
    fn = _metric_fn(metric, n_classes)
    total = np.zeros(n_boot)
    for y, pa, pb in pairs:
        idx = rng.integers(0, len(y), size=(n_boot, len(y)))
        total += fn(y[idx], pa[idx]) - fn(y[idx], pb[idx])
    total /= max(len(pairs), 1)
    lo, hi = np.quantile(total, [(1 - level) / 2, 1 - (1 - level) / 2])
    return float(lo), float(hi)


def significance(results: Sequence[experiment.RunResult], a: str = "DPAAT", b: str = "AT", *,
                 metric: str = "acc", attacks: Sequence[str] = (CLEAN, "20-PGD"), n_boot: int = 2000,
                 alpha: float = 0.05, seed: int = 0) -> pd.DataFrame:
    """Method ``a`` minus method ``b`` per model and attack, over the seeds both have.

    Columns: model, attack, metric, seeds, per_seed (differences in points, seed order), mean (points),
    seed_std (points), p_ttest (paired t-test across seeds), ci_low / ci_high (points, paired
    bootstrap over test images within each seed, averaged over seeds) and ``exceeds_noise``: True when
    the t-test rejects a zero mean difference at ``alpha`` (which needs at least two seeds).
    """
    by = {(r.config.model, _label(r), r.config.train.seed): r for r in results}
    rows = []
    for model, seeds in _paired_seeds(by, a, b):
        n_classes = len(by[(model, a, seeds[0])].config.data.classes)
        for att in attacks:
            diffs, pairs = [], []
            for s in seeds:
                ra, rb = by[(model, a, s)], by[(model, b, s)]
                pa = ra.predictions.set_index("image_id")
                pb = rb.predictions.set_index("image_id").loc[pa.index]
                diffs.append(100 * (metric_value(ra, metric, att) - metric_value(rb, metric, att)))
                pairs.append((pa["label"].to_numpy(), pa[f"pred_{att}"].to_numpy(), pb[f"pred_{att}"].to_numpy()))
            rows.append(_paired_row(model, a, b, "clean" if att == CLEAN else att, metric, diffs, pairs, n_classes,
                                    n_boot=n_boot, alpha=alpha, seed=seed))
    return pd.DataFrame(rows)


def correct_significance(correct: dict[tuple[str, str, int], pd.DataFrame], a: str = "DPAAT",
                         others: Sequence[str] = COMPARED, columns: Sequence[str] | None = None, *,
                         n_boot: int = 2000, alpha: float = 0.05, seed: int = 0) -> pd.DataFrame:
    """:func:`significance_table` from per-image correctness instead of predictions: ``correct`` maps
    (model, method label, seed) to a bool DataFrame indexed by image id, one column per attack or worst
    case (e.g. :func:`dpaat_lib.strong_report.worst_case_frame`). Accuracy of ``a`` minus each of ``others`` in
    each of ``columns`` (default: all), on the images both runs of a seed have; Holm over the table."""
    rows = []
    for b in others:
        for model, seeds in _paired_seeds(correct, a, b):
            first = correct[(model, a, seeds[0])]
            for col in (columns if columns is not None else list(first.columns)):
                diffs, pairs = [], []
                for s in seeds:
                    ca = correct[(model, a, s)][col]
                    cb = correct[(model, b, s)][col]
                    ids = ca.index.intersection(cb.index)
                    if not len(ids):
                        raise ValueError(f"{model} seed {s}: {a} and {b} were evaluated on no common test image")
                    hit_a, hit_b = ca.loc[ids].to_numpy(bool), cb.loc[ids].to_numpy(bool)
                    diffs.append(100 * (hit_a.mean() - hit_b.mean()))
                    # accuracy is the share of "predictions" equal to the "labels": all-ones labels, hits as predictions
                    pairs.append((np.ones(len(ids), bool), hit_a, hit_b))
                rows.append(_paired_row(model, a, b, col, "acc", diffs, pairs, 2, n_boot=n_boot, alpha=alpha,
                                        seed=seed))
    out = pd.DataFrame(rows)
    if len(out):
        out["p_holm"] = holm(out["p_ttest"].to_numpy())
    return out


def _paired_seeds(by: dict, a: str, b: str) -> list[tuple[str, list[int]]]:
    """(model, the seeds both ``a`` and ``b`` have) for every model of ``by`` (keys (model, label, seed))."""
    out = []
    for model in sorted({k[0] for k in by}):
        seeds = sorted(s for (m, meth, s) in by if m == model and meth == a and (m, b, s) in by)
        if seeds:
            out.append((model, seeds))
    return out


def _paired_row(model: str, a: str, b: str, attack: str, metric: str, diffs: list[float], pairs: list, n_classes: int,
                *, n_boot: int, alpha: float, seed: int) -> dict:
    """One row of :func:`significance`: the per-seed differences (points), their t-test and bootstrap CI."""
    lo, hi = bootstrap_ci(pairs, metric, n_classes, n_boot=n_boot, level=1 - alpha, seed=seed)
    p = paired_difference_test(diffs)
    return {"model": model, "comparison": f"{a} - {b}", "attack": attack, "metric": metric, "seeds": len(diffs),
            "per_seed": [round(d, 2) for d in diffs], "mean": float(np.mean(diffs)),
            "seed_std": float(np.std(diffs, ddof=1)) if len(diffs) > 1 else float("nan"),
            "p_ttest": p, "ci_low": 100 * lo, "ci_high": 100 * hi, "exceeds_noise": bool(len(diffs) > 1 and p < alpha)}


def significance_table(results: Sequence[experiment.RunResult], a: str = "DPAAT", others: Sequence[str] = COMPARED,
                       **kw) -> pd.DataFrame:
    """:func:`significance` of ``a`` against each of ``others`` that is present, stacked."""
    present = {_label(r) for r in results}
    parts = [significance(results, a, b, **kw) for b in others if b in present]
    parts = [p for p in parts if not p.empty]
    if not parts:
        return pd.DataFrame()
    out = pd.concat(parts, ignore_index=True)
    out["p_holm"] = holm(out["p_ttest"].to_numpy())
    return out


def holm(pvalues: Sequence[float]) -> np.ndarray:
    """Holm's step-down adjustment of a family of p-values (NaN entries are left out of the family and
    stay NaN): controls the chance of any false "beyond noise" among the family at the nominal level."""
    p = np.asarray(pvalues, dtype=float)
    out = np.full_like(p, np.nan)
    ok = np.flatnonzero(~np.isnan(p))
    if not ok.size:
        return out
    order = ok[np.argsort(p[ok], kind="stable")]
    m = len(order)
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p[i]))
        out[i] = running
    return out


def significance_display(table: pd.DataFrame, digits: int = 1, alpha: float = 0.05) -> pd.DataFrame:
    """The table for the page: rounded, the CI as one column, the verdict in words (Holm-adjusted
    where the table carries ``p_holm``)."""
    if table.empty:
        return table
    keep = ["model", "comparison", "attack", "metric", "seeds"]
    if table["metric"].nunique() == 1:
        keep.remove("metric")  # one metric for the whole table: the page says which
    out = table[keep].copy()
    out["per-seed differences"] = [", ".join(f"{d:+.{digits}f}" for d in v) for v in table["per_seed"]]
    out["mean"] = [f"{m:+.{digits}f}" for m in table["mean"]]

    def shown(v, fmt):  # one seed has no spread and no test: "n/a", never "nan"
        return format(v, fmt) if not math.isnan(v) else "n/a"

    out["seed std"] = [shown(s, f".{digits}f") for s in table["seed_std"]]
    out["t-test p"] = [shown(p, ".3f") for p in table["p_ttest"]]
    if "p_holm" in table:
        out["Holm p"] = [shown(p, ".3f") for p in table["p_holm"]]
    out["95% bootstrap CI"] = [ci_text(lo, hi, digits) for lo, hi in zip(table["ci_low"], table["ci_high"])]
    # The verdict column follows the Holm-adjusted p where the table has it: a reader scanning the
    # column must not see "yes" for a difference that the correction for the table's tests removes.
    held = table["p_holm"] < alpha if "p_holm" in table else table["exceeds_noise"]
    column = "beyond seed noise (Holm)" if "p_holm" in table else "beyond seed noise"
    out[column] = ["yes" if e else ("n/a (one seed)" if n < 2 else "no") for e, n in zip(held, table["seeds"])]
    return out


def significance_sentence(table: pd.DataFrame, alpha: float = 0.05) -> str:
    """Plain-language verdict per comparison and attack (mean difference, t-test, bootstrap CI)."""
    if table.empty:
        return "No pairs of runs to compare."
    parts = []
    for _, r in table.iterrows():
        what = f"{r['model']}, {r['comparison']}, {METRICS[r['metric']]} {r['attack']}"
        ci = f"95% bootstrap CI over test images {ci_text(r['ci_low'], r['ci_high'])}"
        if r["seeds"] < 2:
            verdict = "one seed only: the seed-to-seed noise is not measured"
        elif r["exceeds_noise"]:
            verdict = f"beyond seed-to-seed noise (paired t-test across seeds p = {r['p_ttest']:.3f} < {alpha})"
        else:
            verdict = f"within seed-to-seed noise (paired t-test across seeds p = {r['p_ttest']:.3f})"
        parts.append(f"{what}: {r['mean']:+.1f} points over {r['seeds']} seed(s) "
                     f"(per seed {', '.join(f'{d:+.1f}' for d in r['per_seed'])}); {verdict}; {ci}")
    return "- " + "\n- ".join(parts)


def seed_findings(table: pd.DataFrame, alpha: float = 0.05, a: str = "DPAAT") -> str:
    """The reading of :func:`significance_table` for the page (Markdown): how many differences exceed
    seed-to-seed noise (before and after Holm's correction), and which, per comparison under 20-PGD
    and clean."""
    if table.empty:
        return f"No pairs of runs of {a} and the other methods to compare."
    n_seeds = int(table["seeds"].max())
    if n_seeds < 2:
        return ("One seed per method: the seed-to-seed noise is not measured, so no difference here can be "
                "judged against it. The bootstrap intervals cover the test images only.")
    tested = table[table["seeds"] >= 2]
    hits = tested[tested["p_ttest"] < alpha]
    holm_hits = tested[tested["p_holm"] < alpha] if "p_holm" in tested else hits.iloc[0:0]
    ci_excl = tested[(tested["ci_low"] > 0) | (tested["ci_high"] < 0)]

    metric = METRICS.get(str(table["metric"].iloc[0]), "accuracy") if "metric" in table else "accuracy"
    models = list(dict.fromkeys(tested["model"]))
    against = ", ".join(dict.fromkeys(c.split(" - ")[1] for c in tested["comparison"]))

    where = _model_prefix(models)

    def name(r):  # a flagged difference, with its CNN where the table holds several
        return (f"{where(r['model'])}{r['comparison'].split(' - ')[1]} {r['attack']} ({r['mean']:+.1f}, "
                f"p = {r['p_ttest']:.3f})")

    parts = [f"**{len(tested)} comparisons** ({a} against {against}, "
             f"under {', '.join(dict.fromkeys(tested['attack']))}"
             + (f", on {', '.join(models)}" if len(models) > 1 else "")
             + f"), each a paired t-test across {n_seeds} seeds ({n_seeds - 1} degrees of freedom) of the per-seed "
             f"{metric} differences on the same test images."]
    if len(hits):
        ups = hits[hits["mean"] > 0]
        downs = hits[hits["mean"] < 0]
        verb = "exceeds" if len(hits) == 1 else "exceed"
        txt = f"{len(hits)} of {len(tested)} {verb} seed-to-seed noise at unadjusted p < {alpha}"
        if len(ups):
            txt += f"; {a} higher: " + "; ".join(name(r) for _, r in ups.iterrows())
        if len(downs):
            txt += f"; {a} lower: " + "; ".join(name(r) for _, r in downs.iterrows())
        txt += (f". With {len(tested)} tests about {alpha * len(tested):.1f} would pass by chance alone; after "
                f"Holm's correction for the {len(tested)} tests, {len(holm_hits)} remain"
                + (": " + "; ".join(name(r) for _, r in holm_hits.iterrows()) if len(holm_hits) else "") + ".")
    else:
        txt = (f"None of the {len(tested)} differences exceeds seed-to-seed noise at p < {alpha}: on this "
               f"profile {a}'s differences from {against} are within the variation between training seeds.")
    parts.append(txt)
    parts.append(f"The 95% bootstrap intervals over test images exclude zero for {len(ci_excl)} of the "
                 f"{len(tested)} comparisons; they measure the test sample only (how precisely the "
                 f"{n_seeds}-seed mean is known on these images), not whether another training run would "
                 "agree, which is what the t-test asks.")
    if n_seeds < 5:
        parts.append(f"With {n_seeds} seeds the t-test has little power: a difference of a few points that "
                     "varies between seeds by as much stays undetected, so *within noise* means *not shown "
                     "here*, not *shown equal*.")
    return " ".join(parts)


def _model_prefix(models: Iterable[str], sep: str = ", ") -> Callable[[str], str]:
    """How a sentence names a CNN: ``"mobilenet_v2" + sep`` where ``models`` holds several, else nothing."""
    several = len(set(models)) > 1
    return lambda model: f"{model}{sep}" if several else ""


def direction_summary(grids: dict[str, Sequence[experiment.RunResult]], a: str = "DPAAT", b: str = "AT",
                      attacks: Sequence[str] = ("20-PGD", CLEAN)) -> str:
    """Which way ``a`` - ``b`` leans over every grid of a page (Markdown; empty without a pair of runs).

    One paired difference per (grid, CNN, seed) and attack, each pair of runs counted once even where two
    grids hold it. Each grid's verdict tests its own few seeds, and with three seeds and Holm over many tests
    no single grid may show anything beyond noise, while the differences still point the same way in grid
    after grid: this says how often they do. The grids share their seeds, split and test images, so the
    differences are not independent trials and no test is made over them. A (grid, CNN) whose ``a`` and
    ``b`` are both below chance under an attack (:func:`below_chance_note`) is counted apart for it."""
    seen, rows = set(), []
    for grid, results in grids.items():
        by = {(r.config.model, _label(r), r.config.train.seed): r for r in results}
        pairs = _paired_seeds(by, a, b)
        several = len(pairs) > 1
        for model, seeds in pairs:
            chance = 1 / len(by[(model, a, seeds[0])].config.data.classes)
            for att in attacks:
                key = CLEAN if att in (CLEAN, "clean") else att
                ra = [by[(model, a, s)] for s in seeds]
                rb = [by[(model, b, s)] for s in seeds]
                acc_a = [metric_value(r, "acc", key) for r in ra]
                acc_b = [metric_value(r, "acc", key) for r in rb]
                for s, x, y, run_a, run_b in zip(seeds, acc_a, acc_b, ra, rb):
                    if (run_a.run_id, run_b.run_id, key) in seen:
                        continue
                    seen.add((run_a.run_id, run_b.run_id, key))
                    rows.append({"grid": f"{grid}, {model}" if several else grid, "attack": key, "seed": s,
                                 "diff": 100 * (x - y),
                                 "below_chance": np.mean(acc_a) < chance and np.mean(acc_b) < chance})
    if not rows:
        return ""
    frame = pd.DataFrame(rows)
    parts = []
    for att in dict.fromkeys(frame["attack"]):
        f = frame[frame["attack"] == att]
        name = "clean" if att == CLEAN else f"under {att}"
        below = f[f["diff"] < 0]
        grids_text = "; ".join(
            f"{g}{' (both below chance)' if grp['below_chance'].all() else ''}: "
            + ", ".join(f"{d:+.1f}" for d in grp["diff"]) for g, grp in f.groupby("grid", sort=False))
        fair = f[~f["below_chance"]]
        apart = (f" ({int((fair['diff'] < 0).sum())} of {len(fair)} where neither is below chance)"
                 if len(fair) < len(f) else "")
        parts.append(f"{name}, {a} is below {b} in {len(below)} of {len(f)} paired runs{apart} and above in "
                     f"{int((f['diff'] > 0).sum())} ({grids_text})")
    n_grids = frame["grid"].nunique()
    return (f"**Which way {a} - {b} leans, over the {n_grids} groups of runs on this page** (one difference in "
            "points per training seed): " + "; ".join(parts) + ". Each group's own test above has only its few "
            "seeds, so a consistent direction can stay within noise in every one of them; these groups share their "
            "seeds, split and test images, so the differences are not independent trials and no test is made over "
            "them: the count says which way they lean, not that the lean exceeds noise.")
