"""Beyond the paper (issue 5, parts 2, 3 and 5): seeds and significance, DPAAT's free parameters, and
all seven classes. The report-side functions of chapter 12; every number is computed from stored runs.

- **Seeds.** :func:`seed_table` gives mean and spread over training seeds per (model, method);
  :func:`significance` compares two methods on the same test images: the per-seed differences, a
  *paired t-test across seeds* (the verdict: does the difference exceed seed-to-seed noise?) and a
  *paired bootstrap confidence interval* of the mean difference that resamples test images within
  each seed (the same resample for both methods) and averages over seeds (the test-sample
  uncertainty of that mean).
- **Sweeps.** :func:`load_sweeps` trains or loads DPAAT for each value of ``eta`` (adaptive length),
  ``lam`` (synchronisation weight) and ``mu`` (batch or epoch criterion), every other option at its
  default, on the seeds :func:`sweep_seeds_for` gives (:data:`SWEEP_SEEDS`); :func:`sweep_frame`,
  :func:`plot_sweeps` and :func:`sweep_findings` show clean and 20-PGD accuracy beside AT and read each
  point against the default DPAAT's spread over seeds (its range and the 95% prediction interval of a
  mean over as many more seeds as the point has).
- **Seven classes.** The profiles ``quick-7`` and ``cpu-real-7`` (dpaat_lib.profiles): every image,
  a lesion-aware split by fractions, class-balanced sampling of each epoch for every method;
  :func:`imbalance_table` reports accuracy, balanced accuracy and macro F1, clean and attacked.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np
import pandas as pd

from . import experiment, profiles, report
from .config import TrainConfig
from .evaluation import CLEAN
from .metrics import balanced_accuracy, macro_f1
from .methods import LABELS
from .models import list_models

# --------------------------------------------------------------------------
# Which profiles the chapter uses
# --------------------------------------------------------------------------

STUDY_PROFILES = {"quick": ("quick", "quick-7")}
"""Book profile -> (the 3-class study profile, the 7-class profile). Any other book profile (cpu-real,
paper: six CNNs at 224 px cannot afford three seeds and the sweeps) uses cpu-real and cpu-real-7."""

STUDY_SEEDS = (0, 1, 2)
"""The training seeds of the method comparison (section a)."""
SWEEP_SEEDS: dict[str, dict[str, tuple[int, ...]]] = {"cpu-real": {"smallcnn": (0, 1, 2)}}
"""The seeds of each sweep value, per study profile and CNN (:func:`sweep_seeds_for`); seed 0 alone where
none is named (MobileNetV2 and ResNet34 on cpu-real: what the CPU affords). The default DPAAT's spread over
:data:`STUDY_SEEDS` is the yardstick a sweep point is read against."""
SWEEP_MODELS = {"cpu-real": ("smallcnn", "mobilenet_v2", "resnet34"), "quick": ("smallcnn",)}
"""The CNNs each study profile sweeps DPAAT's parameters on. On cpu-real: the small CNN of the main grid,
and MobileNetV2 and ResNet34, the two CNNs method.md names for the sweep, trained from scratch at the
profile's 32 px (ResNet34: about 22 minutes a DPAAT run on one CPU core). For a model outside the main
grid, AT and the default DPAAT are trained on :data:`STUDY_SEEDS` too, as the sweep's yardsticks."""
STUDY_OVERRIDES: dict[str, dict] = {"quick": {"image_size": 16}}
"""Profile overrides of the chapter's own runs per book profile. The quick build trains the study's 53
runs (3 seeds x 5 methods for each of parts (a), (d) and (e), 3 sweep points, 5 on seven classes) at 16 px
instead of 32, which keeps the chapter to about seven minutes (430 s in `make book` on a fresh clone, 2 CPU
cores); on cpu-real the runs are the main grid's, unchanged."""

SWEEP_PARAMS = ("eta", "lam", "mu")
SWEEP_NAMES = {"eta": "adaptive length eta", "lam": "synchronisation weight lambda", "mu": "criterion mu"}
DEFAULT_SWEEPS = {
    # None is eta = eps0, the default: its point is the main grid's DPAAT run.
    # method.md names {0.1, 0.5, 1, 2} for lambda; eta from a tenth of the default to twice it. One seed
    # per point (what the CPU afforded), read against the default's three seeds.
    "cpu-real": {"eta": (0.05, 0.25, None, 1.0), "lam": (0.1, 0.5, 1.0, 2.0), "mu": ("batch", "epoch")},
    "quick": {"eta": (0.05, None), "lam": (0.1, 1.0), "mu": ("batch", "epoch")},
}
COMPARED = ("AT", "SAT", "AMAT")
"""The methods DPAAT is tested against (STD is not an adversarial defence)."""
MAIN_COLUMNS = ("GAcc", "FGSM", "20-IFGSM", "20-PGD", "mAP")
"""The columns of the three-seed table: clean accuracy, three of the paper's attacks, mean average precision."""
TEST_ATTACKS = (CLEAN, "FGSM", "20-IFGSM", "20-PGD")
"""The attacks under which DPAAT is compared with each method (accuracy on the same test images)."""


def study_profiles(profile: str) -> tuple[str, str]:
    """(3-class study profile, 7-class profile) for the book's ``profile``."""
    return STUDY_PROFILES.get(profile, ("cpu-real", "cpu-real-7"))


def study_overrides(profile: str, **given) -> dict:
    """The profile overrides of the chapter's runs for the book's ``profile``: :data:`STUDY_OVERRIDES`,
    then every ``given`` value that is not None (the notebook's parameters)."""
    out = dict(STUDY_OVERRIDES.get(profile, {}))
    out.update({k: v for k, v in given.items() if v is not None})
    return out


def _field_text(field: str, value) -> str:
    """A profile field's value as the note prints it: a radius rounded (:func:`dpaat_lib.profiles.radius_text`),
    an Linf radius in 255ths."""
    if field == "linf_eps":
        return profiles.linf_text(profiles.linf_radius(value))
    if field in ("eps0", "train_step_size"):
        return profiles.radius_text(value)
    return str(value)


def study_note(book_profile: str, study_profile: profiles.Profile, seven_profile: profiles.Profile,
               overrides: dict, sweep_seeds: Sequence[int] | None, sweep_cnns: Sequence[str] = ()) -> str:
    """Markdown: which profiles this chapter's runs use and why, and how they differ from the book's."""
    parts = []
    if study_profile.name != book_profile:
        parts.append(f"The book's profile is `{book_profile}`; three seeds, the sweeps and the seven-class task "
                     f"are affordable only on profile `{study_profile.name}` ({study_profile.image_size} px, "
                     f"{', '.join(study_profile.models)}), so this chapter uses it.")
    base = profiles.get_profile(study_profile.name)
    changed = [f"{k} {_field_text(k, getattr(base, k))} -> {_field_text(k, v)}" for k, v in overrides.items()
               if getattr(base, k, None) != (profiles.linf_radius(v) if k == "linf_eps" else v)]
    if changed:
        parts.append(f"This chapter's runs change the profile's {', '.join(changed)} (for `{study_profile.name}` "
                     f"and `{seven_profile.name}`), so they are not the runs of the other chapters: "
                     + ("the quick build must stay within minutes on one CPU core." if study_profile.synthetic
                        else "given as parameters."))
    seeds = lambda ss: f"{len(ss)} training seed(s) ({', '.join(map(str, ss))})"  # noqa: E731
    if sweep_seeds or not sweep_cnns:
        on = f" on {', '.join(sweep_cnns)}" if sweep_cnns else ""
        sweep = f"each sweep value{on} is trained on {seeds(tuple(sweep_seeds or (0,)))}"
    else:
        per = {m: sweep_seeds_for(study_profile.name, m) for m in sweep_cnns}
        sweep = "each sweep value is trained on " + report.and_list([f"{seeds(ss)} on {m}" for m, ss in per.items()])
    parts.append(f"Seeds: the method comparison uses {seeds(study_profile.seeds)}; {sweep}, and read against the "
                 f"default DPAAT's spread over {seeds(study_profile.seeds)}; the seven-class task uses "
                 f"{seeds(seven_profile.seeds)}.")
    return " ".join(parts)


def runs_of(results: Sequence[experiment.RunResult], label: str) -> list[experiment.RunResult]:
    """The runs of one method (by its label: "AT", "DPAAT" ...)."""
    return [r for r in results if _label(r) == label]


def sweep_models(study_profile: str) -> tuple[str, ...]:
    """The CNNs ``study_profile``'s DPAAT parameters are swept on (:data:`SWEEP_MODELS`)."""
    return SWEEP_MODELS.get(study_profile, tuple(profiles.get_profile(study_profile).models))


def default_sweeps(study_profile: str, **given) -> dict[str, tuple]:
    """The swept values per parameter for ``study_profile`` (the same on every CNN it sweeps);
    a ``given`` sequence (not None) replaces that parameter's values. The profile's own value is always
    included (it is the reference point)."""
    out = dict(DEFAULT_SWEEPS.get(study_profile, DEFAULT_SWEEPS["cpu-real"]))
    prof = profiles.get_profile(study_profile)
    for param, values in given.items():
        if param not in SWEEP_PARAMS:
            raise ValueError(f"cannot sweep {param!r}; choose from {SWEEP_PARAMS}")
        if values is None:
            continue
        values = tuple(values)
        default = getattr(prof, param)
        out[param] = values if default in values else (default, *values)
    return out


def value_label(param: str, value, eps0: float = 0.5) -> str:
    """How a sweep value is written in tables: eta None is eps0."""
    if param == "eta" and value is None:
        return f"eps0 = {eps0:g}"
    return f"{value:g}" if isinstance(value, (int, float)) else str(value)


# --------------------------------------------------------------------------
# Metrics from the stored per-image predictions
# --------------------------------------------------------------------------

METRICS: dict[str, str] = {"acc": "accuracy", "bacc": "balanced accuracy", "f1": "macro F1"}


def _hits(pred: pd.DataFrame, attack: str) -> np.ndarray:
    return (pred[f"pred_{attack}"] == pred["label"]).to_numpy()


def metric_value(result: experiment.RunResult, metric: str = "acc", attack: str = CLEAN) -> float:
    """``acc``, ``bacc`` (balanced accuracy) or ``f1`` (macro F1) of one run under ``attack``."""
    pred = result.predictions
    if metric == "acc":
        return float(_hits(pred, attack).mean())
    if metric == "bacc":
        return balanced_accuracy(pred, attack)
    if metric == "f1":
        return macro_f1(pred, result.config.data.classes, attack)
    raise ValueError(f"unknown metric {metric!r}; choose one of {list(METRICS)}")


def _label(result: experiment.RunResult) -> str:
    return LABELS[result.config.method.name]


def _column(metric: str, attack: str) -> str:
    name = {"acc": "Acc", "bacc": "BAcc", "f1": "F1"}[metric]
    return f"{name} {'clean' if attack == CLEAN else attack}"


def prediction_frame(results: Sequence[experiment.RunResult], metrics: Sequence[str] = ("acc",),
                     attacks: Sequence[str] = (CLEAN, "20-PGD")) -> pd.DataFrame:
    """One row per run: model, method, seed and each metric under each attack (fractions, from the
    stored per-image predictions), named like ``"Acc 20-PGD"``."""
    return pd.DataFrame([{"model": r.config.model, "method": _label(r), "seed": r.config.train.seed,
                          **{_column(m, a): metric_value(r, m, a) for m in metrics for a in attacks}}
                         for r in results])


def seed_table(results: Sequence[experiment.RunResult], metrics: Sequence[str] = ("acc",),
               attacks: Sequence[str] = (CLEAN, "20-PGD"), scale: float = 100.0, digits: int = 1) -> pd.DataFrame:
    """Per (model, method): ``mean ± std`` over the seeds of each metric x attack, in percent, and the
    seeds (:func:`dpaat_lib.report.mean_std_table`). The std is the sample standard deviation over
    training seeds (the seed-to-seed spread); all runs share one test set."""
    columns = [_column(m, a) for m in metrics for a in attacks]
    return report.mean_std_table(prediction_frame(results, metrics, attacks), columns, scale, digits)


def below_chance_note(results: Sequence[experiment.RunResult], attack: str = "20-PGD") -> str:
    """A caveat (Markdown, empty when there is none): the (model, method) pairs whose seed-mean accuracy
    under ``attack`` is below a constant guess (1 / number of classes). Such a model gained no
    robustness to ``attack``, so a difference between two of them compares two failures."""
    if not results:
        return ""
    frame = prediction_frame(results, ("acc",), (attack,))
    col = _column("acc", attack)
    chance = 1 / len(results[0].config.data.classes)
    means = frame.groupby(["model", "method"], sort=False)[col].mean()
    low = means[means < chance]
    if low.empty:
        return ""
    by_model = {}
    for (model, method), v in low.items():
        by_model.setdefault(model, []).append(f"{method} {100 * v:.1f}%")
    return ("**Below chance.** " + "; ".join(f"On {m}, {', '.join(v)}" for m, v in by_model.items())
            + f" under {attack}, below the {100 * chance:.1f}% of a constant guess: these models gained no "
              f"robustness to {attack}, so a difference between them under it compares two failures; read their "
              "clean accuracy only.")


def main_table(results: Sequence[experiment.RunResult], columns: Sequence[str] = MAIN_COLUMNS,
               digits: int = 1) -> pd.DataFrame:
    """Per (model, method): ``mean ± std`` over seeds of each stored metric in percent, and the seeds
    (:func:`dpaat_lib.report.mean_std_table`; ``columns`` are :func:`dpaat_lib.grid.results_table`'s)."""
    return report.mean_std_table(report.results_frame(results), columns, digits=digits)


def plot_seed_points(results: Sequence[experiment.RunResult], columns: Sequence[str] = ("GAcc", "20-PGD")):
    """One panel per column: every seed's value (dots) and the seed mean (bar) per method, so the
    seed-to-seed spread is seen beside the differences between methods."""
    import matplotlib.pyplot as plt

    t = report.results_frame(results)
    models = list(dict.fromkeys(t["model"]))
    fig, axes = plt.subplots(len(models), len(columns), figsize=(4.4 * len(columns), 3.3 * len(models)),
                             squeeze=False)
    order = [m for m in LABELS.values() if m in set(t["method"])]
    for i, model in enumerate(models):
        for j, col in enumerate(columns):
            ax = axes[i][j]
            sub = t[t["model"] == model]
            for k, meth in enumerate(order):
                v = 100 * sub.loc[sub["method"] == meth, col].astype(float).to_numpy()
                if not len(v):
                    continue
                ax.bar(k, v.mean(), color="0.85", edgecolor="0.5", width=0.6)
                ax.scatter(k + np.linspace(-0.12, 0.12, len(v)), v, color="k", s=14, zorder=3)
            ax.set_xticks(range(len(order)), order)
            lo = 100 * sub[col].astype(float).min()
            ax.set_ylim(max(0.0, lo - 10), min(100.0, 100 * sub[col].astype(float).max() + 5))
            ax.set_ylabel(f"{'clean accuracy' if col == 'GAcc' else col + ' accuracy'} (%)")
            n = sub.groupby("method")["seed"].nunique().max()
            ax.set_title(f"{model}: {col}, {n} seed(s) per method", fontsize=9)
            ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    plt.close(fig)
    return fig


# --------------------------------------------------------------------------
# Is the difference larger than seed-to-seed noise?
# --------------------------------------------------------------------------

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
    out["95% bootstrap CI"] = [f"[{lo:+.{digits}f}, {hi:+.{digits}f}]" for lo, hi in
                               zip(table["ci_low"], table["ci_high"])]
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
        ci = f"95% bootstrap CI over test images [{r['ci_low']:+.1f}, {r['ci_high']:+.1f}]"
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
        txt = f"{len(hits)} of {len(tested)} {verb} seed-to-seed noise at p < {alpha}"
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


# --------------------------------------------------------------------------
# Sweeps of DPAAT's free parameters
# --------------------------------------------------------------------------

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


def sweep_seeds_for(study_profile: str, model: str) -> tuple[int, ...]:
    """The training seeds of each sweep value of ``model`` on ``study_profile`` (:data:`SWEEP_SEEDS`)."""
    return SWEEP_SEEDS.get(study_profile, {}).get(model, (0,))


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


def sweep_commands(study_profile: str, sweeps: dict[str, Sequence], seeds: Sequence[int], data: str = "DIR") -> list[str]:
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
    name = lambda r: (f"{SWEEP_NAMES[r['param']]} on {r['model']}, {r['attack']}: {r['slope']:+.2f} points per "  # noqa: E731
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


def sweep_findings(frame: pd.DataFrame, study_profile: profiles.Profile, attacks: Sequence[str] = ("20-PGD", "clean")) -> str:
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
                           + (f", 95% PI of {_more(n_seed)} [{lo:.1f}, {hi:.1f}])" if dd["seeds"] > 1 else ")"))
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
        if d["mean"] < chance:  # a CNN that gained no robustness: its sweep cannot show what changes it
            verdict += (f" On {d['model']} the default DPAAT's {attacks[0]} accuracy ({d['mean']:.1f}%) is below the "
                        f"{chance:.1f}% of a constant guess: it gained no robustness to {attacks[0]} on this profile, "
                        f"so its sweep speaks to clean accuracy only.")
    return "- " + "\n- ".join(lines) + "\n\n" + verdict


# --------------------------------------------------------------------------
# Seven classes
# --------------------------------------------------------------------------

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
        pred = r.predictions
        y = pred["label"].to_numpy()
        for att in attacks:
            hit = _hits(pred, att)
            row = {"model": r.config.model, "method": _label(r), "attack": "clean" if att == CLEAN else att,
                   "seed": r.config.train.seed}
            for k, c in enumerate(r.config.data.classes):
                row[c] = 100 * float(hit[y == k].mean()) if (y == k).any() else float("nan")
            rows.append(row)
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
    from . import data as D
    from . import store

    path = None if results is None else Path(results) / f"class-counts-{_counts_key(data_config)}.json"
    if path is not None and path.exists():
        stored = store.read_json(path)
    else:
        root = experiment.data_root_for(data_config.source, data_root, cache_dir)
        if root is None or not (root / D.METADATA_FILE).exists():
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
    if sig is None:
        sig = significance_table(results, a, COMPARED, metric="bacc", n_boot=n_boot)
    if not sig.empty:
        parts.append(seed_findings(sig, a=a))
        if int(sig["seeds"].max()) < 2:
            for _, r in sig.iterrows():
                parts.append(f"{r['comparison']}, balanced accuracy {r['attack']}: {r['mean']:+.1f} points, 95% "
                             f"bootstrap interval over test images [{r['ci_low']:+.1f}, {r['ci_high']:+.1f}].")
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


# --------------------------------------------------------------------------
# The training schedule: does the epoch cap decide the comparison?
# --------------------------------------------------------------------------

SPEC_SCHEDULE = {"epochs": TrainConfig.epochs, "patience": TrainConfig.patience}
"""method.md section 6's schedule from scratch, TrainConfig's defaults: up to 60 epochs, early stopping with
patience 5."""
FULL_SCHEDULE: dict[str, dict] = {"cpu-real": SPEC_SCHEDULE, "quick": {"epochs": 16, "patience": 5}}
"""Section (d)'s schedule per study profile: method.md section 6's from scratch (up to 60 epochs, early
stopping with patience 5) on cpu-real, whose main grid stops at 12 epochs (patience 4) to fit two CPU
cores; the quick build doubles its 8 epochs, which is enough to exercise the section."""


def schedule_overrides(study_profile: str, **given) -> dict:
    """The epochs and patience of section (d)'s runs: :data:`FULL_SCHEDULE`, then every ``given`` value
    that is not None (the notebook's parameters)."""
    out = dict(FULL_SCHEDULE.get(study_profile, FULL_SCHEDULE["cpu-real"]))
    out.update({k: v for k, v in given.items() if v is not None})
    return out


def schedule_note(capped: profiles.Profile, full: profiles.Profile) -> str:
    """Markdown: the two schedules of section (d), and whether the longer one is method.md's."""
    spec = (full.epochs, full.patience) == (SPEC_SCHEDULE["epochs"], SPEC_SCHEDULE["patience"])
    which = ("method.md's schedule from scratch (its section 6)." if spec else
             f"not method.md's schedule from scratch (up to {SPEC_SCHEDULE['epochs']} epochs, patience "
             f"{SPEC_SCHEDULE['patience']})" + (": the quick build's stand-in for it." if full.synthetic else "."))
    return (f"**Schedules.** Part (a): up to {capped.epochs} epochs, patience {capped.patience}. Here: up to "
            f"{full.epochs} epochs, patience {full.patience}, {which}")


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


def _model_prefix(models: Iterable[str], sep: str = ", ") -> Callable[[str], str]:
    """How a sentence names a CNN: ``"mobilenet_v2" + sep`` where ``models`` holds several, else nothing."""
    several = len(set(models)) > 1
    return lambda model: f"{model}{sep}" if several else ""


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
    """Chapter 1's reading of :func:`verdict_changes`: ``a`` - ``b`` under 20-PGD and clean in both grids
    (``words``: how the text names each grid, after its mean; each CNN named where there are several), and
    how many comparisons of ``a`` with ``against`` keep their verdict."""
    pair = verdicts[verdicts["comparison"] == f"{a} - {b}"]
    where = _model_prefix(pair.get("model", ()))
    return (f"{a} - {b}: " + "; ".join(
                f"{where(r['model'])}{r['attack']} {r['mean ' + names[0]]:+.1f} points {words[0]}, "
                f"{r['mean ' + names[1]]:+.1f} {words[1]} ({r[names[1]]})"
                for _, r in pair.iterrows() if r["attack"] in ("20-PGD", "clean"))
            + f". {int(verdicts['kept'].sum())} of {len(verdicts)} comparisons of {a} with "
            + report.and_list(list(against)) + " keep their verdict.")


# --------------------------------------------------------------------------
# The threat's strength: the paper's radius per pixel
# --------------------------------------------------------------------------

SHARED_ATTACKS = (CLEAN, "FGSM", "20-IFGSM")
"""The columns section (e)'s two grids share: clean, and the Linf attacks, whose radius (2/255, a bound on
each value) does not depend on eps0. The PGD columns attack each grid at its own eps0."""


def threat_overrides(prof: profiles.Profile, eps0: float | None = None) -> dict:
    """Section (e)'s radius: eps0 and the training step, both scaled by image_size / 224, so that the L2
    radius changes each value of an image at the profile's resolution by the root-mean-square amount
    (eps0 / sqrt(3 s^2)) that the paper's eps0 changes a 224 px image by. It is also the largest L2 norm a
    224 px perturbation of norm eps0 keeps once the image is averaged down to s px. ``eps0`` (not None)
    sets the radius instead, the step keeping its ratio to it. Every radius a method derives from eps0
    follows it (DPAAT's eta = eps0 per nat and eps_max = 2 eps0, AMAT's start and step eps0 / 10), and so
    do the 20/50-step PGD of the evaluation; FGSM and I-FGSM keep their Linf 2/255. Empty where the
    profile already runs at the paper's resolution and no ``eps0`` is given."""
    if eps0 is None:
        if prof.image_size == report.PAPER_IMAGE_SIZE:
            return {}
        return {"eps0": prof.eps0 * prof.image_size / report.PAPER_IMAGE_SIZE,
                "train_step_size": prof.train_step_size * prof.image_size / report.PAPER_IMAGE_SIZE}
    return profiles.radius_overrides(prof, eps0, name="threat_eps0")


THREAT_MODELS = {"cpu-real": ("mobilenet_v2", "resnet34")}
"""The CNNs outside the main grid on which section (e) trains AT and DPAAT at its radius too, on
:data:`STUDY_SEEDS`, per study profile: on cpu-real the two sweep CNNs, whose part (a) comparison is DPAAT
against AT (a run on one CPU core: MobileNetV2 about 10 minutes, ResNet34 about 30, evaluation included)."""


def threat_models(study_profile: str, main_models: Sequence[str], given: Sequence[str] | None = None
                  ) -> tuple[str, ...]:
    """Section (e)'s CNNs outside the main grid: ``given`` (the notebook's parameter) or
    :data:`THREAT_MODELS`, less those of ``main_models``. An unknown name is refused with the known ones."""
    if isinstance(given, str):  # a papermill parameter given as one name
        given = (given,)
    chosen = tuple(THREAT_MODELS.get(study_profile, ()) if given is None else given)
    unknown = [m for m in chosen if m not in list_models()]
    if unknown:
        raise ValueError(f"threat_models: unknown CNN(s) {', '.join(map(repr, unknown))}; "
                         f"choose from {', '.join(list_models())}")
    return tuple(m for m in dict.fromkeys(chosen) if m not in main_models)


def threat_names(base: profiles.Profile, matched: profiles.Profile) -> tuple[str, str]:
    """How section (e)'s tables name the two grids: by their eps0."""
    return f"eps0 {base.eps0:.3g}", f"eps0 {matched.eps0:.3g}"


def threat_note(base: profiles.Profile, matched: profiles.Profile) -> str:
    """Markdown: the radii of part (a) and of section (e), each as a change per pixel against the paper's."""
    if matched.eps0 == base.eps0:
        return (f"**Radius.** Part (a) already trains and attacks at eps0 = {base.eps0:g}, the paper's "
                f"at {base.image_size} px: this section repeats it.")
    s, paper = base.image_size, report.PAPER_IMAGE_SIZE
    ref = report.l2_rms_per_value(base.eps0, paper)

    def radius(p):
        rms = report.l2_rms_per_value(p.eps0, s)
        return (f"PGD-L2 eps0 = {p.eps0:.4g}, {p.train_steps} steps of {p.train_step_size:.4g}, a root-mean-square "
                f"change of {rms:.2f}/255 per value at {s} px ({rms / ref:.1f} times the paper's {ref:.2f}/255 "
                f"at {paper} px)")

    return (f"**Radii.** Part (a): {radius(base)}. Here: {radius(matched)}. The training adversary, AMAT's and "
            "DPAAT's radii (which start from and scale with eps0) and the 20-step PGD column follow eps0; FGSM "
            "and I-FGSM keep their Linf 2/255, so their columns, and the clean one, compare the two grids on the "
            "same test, while each grid's PGD column attacks at its own radius.")


def threat_findings(base: Sequence[experiment.RunResult], matched: Sequence[experiment.RunResult],
                    change: pd.DataFrame, sig_base: pd.DataFrame, sig_matched: pd.DataFrame,
                    names: tuple[str, str], alpha: float = 0.05, a: str = "DPAAT") -> str:
    """The reading of section (e) (Markdown): which runs trained alike in both grids, what the smaller
    radius changed on the attacks both grids share (beyond seed noise after Holm), each method's PGD
    accuracy at its grid's own radius, and whether each comparison of ``a`` with the others keeps its
    verdict (Holm-adjusted in both tables; with one seed, its sign)."""
    if not matched:
        return "No runs at the paper's per-pixel radius."
    if {r.run_id for r in matched} == {r.run_id for r in base}:
        return "This grid already runs at the paper's per-pixel radius (the same runs): part (a) answers it."
    parts = []
    short = _by_key(base)
    twins = [r for r in matched if (k := (r.config.model, _label(r), r.config.train.seed)) in short
             and r.predictions[f"pred_{CLEAN}"].equals(short[k].predictions[f"pred_{CLEAN}"])]
    # STD trains without an attack, so the radius cannot enter its training: its runs are the check.
    unlike = [r for r in matched if r.config.method.name == "std" and r not in twins
              and (r.config.model, _label(r), r.config.train.seed) in short]

    def named(rs):
        return ", ".join(f"{_label(r)} seed {r.config.train.seed}" for r in rs)

    if twins or unlike:
        parts.append(f"**Runs trained alike.** {len(twins)} of {len(matched)} runs"
                     + (f" ({named(twins)})" if twins else "")
                     + f" {'gives' if len(twins) == 1 else 'give'} the same clean predictions in both grids, image "
                     "for image; STD trains without an attack, so the radius cannot enter its training"
                     + (f". {named(unlike)} still {'differs' if len(unlike) == 1 else 'differ'}: something other "
                        "than the radius changed between the two trainings (on a CPU, torch's thread count changes a "
                        "run's numbers as another seed would, chapter 10)." if unlike else "."))
    parts += _change_sentences(change, "What the smaller radius changed on the attacks both grids share", alpha)
    if "pred_20-PGD" in matched[0].predictions:
        def means(rs):
            return {key: 100 * np.mean([metric_value(r, "acc", "20-PGD") for r in runs])
                    for key, runs in _group(rs).items()}

        mb, mm = means(base), means(matched)
        where = _model_prefix((m for m, _ in mm), sep=" ")
        parts.append(f"**20-step PGD at each grid's own radius** (seed means, %; {names[0]} -> {names[1]}): "
                     + ", ".join(f"{where(m)}{lab} {mb[(m, lab)]:.1f} -> {mm[(m, lab)]:.1f}"
                                 for m, lab in mm if (m, lab) in mb)
                     + ". The smaller radius is a weaker attack as well as a weaker training adversary, so these "
                       "levels are not a change of one model's robustness.")
        paper_std = report.paper_value("I", "all_six", "STD", "20-PGD")
        std = [(mb[k], mm[k]) for k in mm if k[1] == "STD" and k in mb]
        if len(std) == 1 and not math.isnan(paper_std):
            (std_b, std_m), = std
            closer = names[0] if abs(std_b - paper_std) <= abs(std_m - paper_std) else names[1]
            parts.append(f"**Which radius is the paper's threat?** Against the undefended STD model, 20-step PGD "
                         f"leaves {std_b:.1f}% at {names[0]} and {std_m:.1f}% at {names[1]}; the paper's "
                         f"STD keeps {paper_std:.2f}% (the mean of its six CNNs at 224 px). By that yardstick "
                         f"{closer} is the closer match: the same change per pixel is not the same attack strength, "
                         "which also depends on the model and its input size, so neither grid reproduces the paper's "
                         "threat in both senses.")
    verdicts = verdict_changes(sig_base, sig_matched, alpha, names=names)
    if len(verdicts):
        parts.append(_verdict_sentence(verdicts, sig_matched, names, (f"at {names[0]}", f"at {names[1]}"), alpha, a))
    return " ".join(parts)


def threat_headline(base: Sequence[experiment.RunResult], matched: Sequence[experiment.RunResult],
                    alpha: float = 0.05, a: str = "DPAAT", b: str = "AT",
                    attacks: Sequence[str] = TEST_ATTACKS, other_base: Sequence[experiment.RunResult] = (),
                    other_matched: Sequence[experiment.RunResult] = ()) -> str:
    """Chapter 1's account of section (e) (Markdown; empty unless ``matched`` holds every (model, method,
    seed) of ``base`` at another radius): ``a`` - ``b`` at both radii and how many comparisons of ``a`` keep
    their verdict, from the same tests as chapter 12 (the bootstrap intervals, not shown here, skipped).
    ``other_base`` and ``other_matched``: ``a`` and ``b`` on the CNNs outside the main grid at both radii,
    read the same way where every run is there, with :func:`below_chance_note` at the smaller radius."""
    if not _retrained(base, matched):
        return ""
    e0, e1 = base[0].config.method.attack.eps, matched[0].config.method.attack.eps
    names = (f"eps0 {e0:.3g}", f"eps0 {e1:.3g}")
    words = (f"at {e0:g}", f"at {e1:.3g}")

    def verdicts(rb, rm, against):
        return verdict_changes(significance_table(rb, a, against, attacks=attacks, n_boot=1),
                               significance_table(rm, a, against, attacks=attacks, n_boot=1), alpha, names=names)

    s = base[0].config.data.image_size
    std = [100 * np.mean([metric_value(r, "acc", "20-PGD") for r in rs if _label(r) == "STD"] or [np.nan])
           for rs in (base, matched)]
    paper_std = report.paper_value("I", "all_six", "STD", "20-PGD")
    others = ""
    if _retrained(other_base, other_matched):
        cnns = list(dict.fromkeys(r.config.model for r in other_matched))
        low = below_chance_note(other_matched)  # a 20-PGD difference between two failures is no comparison
        others = (f" On {report.and_list(cnns)} ({a} and {b} only), " + _pair_sentence(
            verdicts(other_base, other_matched, (b,)), names, words, a, b, against=(b,))
            + (f" {low}" if low else ""))
    return (f"**The threat's strength.** Chapter 12 (e) trains these {len(matched)} runs again with the L2 radius "
            f"that changes a {s} px image per pixel as much as the paper's eps0 changes a "
            f"{report.PAPER_IMAGE_SIZE} px one (eps0 = {e1:.3g} instead of {e0:g}; the 20-step PGD column attacks "
            "at that radius too). " + _pair_sentence(verdicts(base, matched, COMPARED), names, words, a, b)
            + others
            + (f" Against the undefended STD, 20-PGD leaves {std[0]:.1f}% at {e0:g} and {std[1]:.1f}% at {e1:.3g}; "
               f"the paper's STD keeps {paper_std:.2f}%."
               if not (math.isnan(std[0]) or math.isnan(std[1]) or math.isnan(paper_std)) else ""))
