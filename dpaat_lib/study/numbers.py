"""Metrics recomputed from the stored per-image predictions: per-seed tables and the seed plot."""
from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd

from .. import experiment, report
from ..evaluation import CLEAN
from ..methods import LABELS
from ..metrics import balanced_accuracy, macro_f1
from .setup import MAIN_COLUMNS


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
    under ``attack`` is below a constant guess (1 / number of classes), with the attack's radius and their
    clean accuracy. Such a model is weaker under ``attack`` than a classifier that ignores its input (which no
    attack moves), so a difference between two of them compares two failures; a clean accuracy near chance too
    says the model barely learned at all. Whether it gained any robustness is another question, which only an
    undefended model under the same attack answers."""
    if not results:
        return ""
    frame = prediction_frame(results, ("acc",), (CLEAN, attack))
    col, clean = _column("acc", attack), _column("acc", CLEAN)
    chance = 1 / len(results[0].config.data.classes)
    means = frame.groupby(["model", "method"], sort=False)[[col, clean]].mean()
    low = means[means[col] < chance]
    if low.empty:
        return ""
    by_model = {}
    for (model, method), v in low.iterrows():
        by_model.setdefault(model, []).append(f"{method} {100 * v[col]:.1f}% (clean {100 * v[clean]:.1f}%)")
    radii = {a.eps for r in results for a in r.config.eval_attacks if a.name == attack}
    at = f" at radius {radii.pop():.3g}" if len(radii) == 1 else ""  # the page may show the same CNNs at two
    return ("**Below chance.** " + "; ".join(f"On {m}, {', '.join(v)}" for m, v in by_model.items())
            + f" under {attack}{at}, below the {100 * chance:.1f}% of a constant guess, which no attack moves: "
              f"under {attack} these models do worse than one that ignores its input, so a difference between them "
              "under it compares two failures; read their clean accuracy first.")


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


def runs_of(results: Sequence[experiment.RunResult], label: str) -> list[experiment.RunResult]:
    """The runs of one method (by its label: "AT", "DPAAT" ...)."""
    return [r for r in results if _label(r) == label]
