"""The metrics of method.md section 7, computed from a run's per-image predictions.

GAcc is the clean test accuracy (eq. 17), RAcc the accuracy under an attack;
mAP (eq. 18) is the mean over classes of one-vs-rest average precision of the
clean softmax scores, mARP the same under 20-step PGD. For imbalanced test sets (the 7-class task) balanced
accuracy (mean per-class recall) and macro F1 per attack stand beside accuracy. scikit-learn computes
average precision and the macro scores (well tested, and the definitions
readers know).
"""
from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.metrics import average_precision_score, confusion_matrix, precision_recall_fscore_support

from .evaluation import CLEAN

MARP_ATTACK = "20-PGD"


def attack_names(pred: pd.DataFrame) -> list[str]:
    """The attacks of a predictions frame (:func:`dpaat_lib.evaluation.evaluate`), clean included,
    in column order: the ``<attack>`` of every ``pred_<attack>`` column."""
    return [c[len("pred_"):] for c in pred.columns if c.startswith("pred_")]


def check_predictions(pred: pd.DataFrame, classes, attacks=None, probabilities: bool = True) -> None:
    """Raise ValueError unless ``pred`` is a predictions frame for ``classes``: a ``label`` column of
    class indices in range(len(classes)), ``pred_<attack>`` columns for ``attacks`` (default: clean)
    and, with ``probabilities``, the ``p_<attack>_<class>`` columns of every class."""
    k = len(classes)
    if len(pred) == 0:
        raise ValueError("the predictions frame has no rows: there is nothing to score (was the test set empty?)")
    attacks = [CLEAN] if attacks is None else list(attacks)
    expected = ["label", *(f"pred_{a}" for a in attacks)]
    if probabilities:
        expected += [f"p_{a}_{c}" for a in attacks for c in classes]
    missing = [c for c in expected if c not in pred.columns]
    if missing:
        raise ValueError(f"the predictions frame lacks the column(s) {missing}; for classes {tuple(classes)} it "
                         f"needs {expected} (as dpaat_lib.evaluation.evaluate writes them)")
    for col in ["label", *(f"pred_{a}" for a in attacks)]:
        v = pred[col]
        if not pd.api.types.is_integer_dtype(v):
            raise ValueError(f"column {col!r} must hold class indices (integers 0..{k - 1} for {tuple(classes)}), "
                             f"got dtype {v.dtype}; map class names to their position in classes")
        bad = v[(v < 0) | (v >= k)]
        if len(bad):
            raise ValueError(f"column {col!r} has value(s) {sorted(set(bad.tolist()))[:5]} outside range({k}) "
                             f"= the {k} classes {tuple(classes)}: pass the classes the model was trained on")


def accuracy(pred: pd.DataFrame, attack: str = CLEAN) -> float:
    """Share of images whose ``pred_<attack>`` equals their ``label`` (GAcc for clean, eq. 17; RAcc
    under an attack)."""
    return float((pred[f"pred_{attack}"] == pred["label"]).mean())


def balanced_accuracy(pred: pd.DataFrame, attack: str = CLEAN) -> float:
    """Mean over the classes present in the test set of the recall of each (sklearn's balanced
    accuracy): what accuracy means when classes differ in size; equal to accuracy on a balanced set."""
    y = pred["label"].to_numpy()
    hit = pred[f"pred_{attack}"].to_numpy() == y
    return float(np.mean([hit[y == k].mean() for k in np.unique(y)]))


def macro_f1(pred: pd.DataFrame, classes, attack: str = CLEAN) -> float:
    """Unweighted mean over ``classes`` of the per-class F1 (a class never predicted scores 0)."""
    check_predictions(pred, classes, [attack], probabilities=False)
    _, _, f1, _ = precision_recall_fscore_support(pred["label"], pred[f"pred_{attack}"],
                                                  labels=list(range(len(classes))), average="macro",
                                                  zero_division=0)
    return float(f1)


def per_class_recall(pred: pd.DataFrame, classes, attack: str = CLEAN) -> dict[str, float]:
    """Recall (sensitivity) of each class under ``attack``; NaN for a class absent from the test set."""
    check_predictions(pred, classes, [attack], probabilities=False)
    y = pred["label"].to_numpy()
    hit = pred[f"pred_{attack}"].to_numpy() == y
    return {c: (float(hit[y == k].mean()) if (y == k).any() else float("nan")) for k, c in enumerate(classes)}


def imbalance_metrics(pred: pd.DataFrame, classes) -> dict[str, dict[str, float]]:
    """Per attack (clean included): accuracy, balanced accuracy and macro F1, the metrics that
    respect class imbalance beside the plain one."""
    return {a: {"acc": accuracy(pred, a), "bacc": balanced_accuracy(pred, a), "f1": macro_f1(pred, classes, a)}
            for a in attack_names(pred)}


def mean_average_precision(pred: pd.DataFrame, classes, attack: str = CLEAN) -> float:
    """Eq. 18: the mean over ``classes`` of the one-vs-rest average precision of the softmax scores
    ``p_<attack>_<class>`` (mAP on clean images, mARP under 20-PGD). A class absent from the test
    set has no positives: scikit-learn warns and scores its AP 0 (pulling the mean down). A run's
    metrics.json holds it for the scores before rounding; from a stored predictions file (6 decimals)
    tied scores can move it (committed CPU runs: by under 5e-5; a confident undefended CNN's 20-PGD
    scores at 224 px, hundreds of which read 0: by several hundredths)."""
    check_predictions(pred, classes, [attack])
    y = pred["label"].to_numpy()
    aps = [average_precision_score(y == k, pred[f"p_{attack}_{c}"].to_numpy()) for k, c in enumerate(classes)]
    return float(np.mean(aps))


def confusion(pred: pd.DataFrame, classes, attack: str = CLEAN) -> np.ndarray:
    """Rows: true class, columns: predicted class (counts); a label outside ``classes`` raises (scikit-learn
    would drop its row)."""
    check_predictions(pred, classes, [attack], probabilities=False)
    return confusion_matrix(pred["label"], pred[f"pred_{attack}"], labels=list(range(len(classes))))


def compute_metrics(pred: pd.DataFrame, classes, marp_attack: str | None = None) -> dict:
    """All scalar metrics of one run, plus confusion matrices (lists, JSON-ready).

    ``pred``: the per-image predictions of :func:`dpaat_lib.evaluation.evaluate` (``label``,
    ``pred_<attack>`` and ``p_<attack>_<class>`` columns); ``classes``: the class names in label
    order. Raises ValueError when a column is missing or a label lies outside range(len(classes)).
    mARP is the mAP under the attack named ``marp_attack``: by default the paper's 20-step PGD
    (:data:`MARP_ATTACK`), left out where no attack of that name was evaluated; an attack named
    here must be among the predictions (ValueError otherwise).
    """
    names = attack_names(pred)
    check_predictions(pred, classes, names, probabilities=False)  # mean_average_precision checks its scores
    p, r, f1, _ = precision_recall_fscore_support(pred["label"], pred[f"pred_{CLEAN}"],
                                                  labels=list(range(len(classes))), average="macro",
                                                  zero_division=0)
    out = {"GAcc": accuracy(pred, CLEAN), "RAcc": {a: accuracy(pred, a) for a in names if a != CLEAN},
           "mAP": mean_average_precision(pred, classes, CLEAN),
           "precision": float(p), "recall": float(r), "f1": float(f1),
           "confusion": {a: confusion(pred, classes, a).tolist() for a in names},
           "BAcc": {a: balanced_accuracy(pred, a) for a in names},
           "macroF1": {a: macro_f1(pred, classes, a) for a in names}}
    attack = marp_attack or MARP_ATTACK
    if attack in names:
        out["mARP"] = mean_average_precision(pred, classes, attack)
    elif marp_attack is not None:
        raise ValueError(f"marp_attack={marp_attack!r}: no predictions under that attack; the predictions hold "
                         f"{', '.join(n for n in names if n != CLEAN) or 'no attack'}")
    return out


def metrics_row(metrics: dict, attacks: list[str] | None = None) -> dict:
    """A flat row for tables: each RAcc (in ``attacks`` order, the paper's), GAcc, mAP, mARP, P/R/F1."""
    attacks = attacks or list(metrics["RAcc"])
    row = {**{a: metrics["RAcc"][a] for a in attacks}, "GAcc": metrics["GAcc"]}
    for k in ("mAP", "mARP", "precision", "recall", "f1"):
        if k in metrics:
            row[k] = metrics[k]
    return row


def group_average(table: pd.DataFrame, groups: dict[str, tuple[str, ...]], by: str = "method") -> pd.DataFrame:
    """Average a per-model table (columns: model, method, metrics...) over the paper's CNN groups.

    Only the ``by`` values (methods) that every model of a group has are averaged for that group, so a
    partial grid (a GPU grid filled over several calls) never shows an average that the paper's group
    does not mean: a method with runs of two of a group's three CNNs gets no row for it.
    """
    rows = []
    for g, members in groups.items():
        sub = table[table["model"].isin(members)]
        whole = sub.groupby(by, sort=False)["model"].agg(lambda m: set(members) <= set(m))
        sub = sub[sub[by].map(whole)]
        if sub.empty:
            continue
        mean = sub.drop(columns=["model"]).groupby(by, sort=False).mean(numeric_only=True).reset_index()
        mean.insert(0, "group", g)
        rows.append(mean)
    return pd.concat(rows, ignore_index=True) if rows else pd.DataFrame()
