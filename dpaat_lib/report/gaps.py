"""Our group averages against the paper's Table I and II: each gap, and whether it exceeds the noise of two test
sets (and of training seeds, where the runs have several).

The paper reports one run per CNN, tested on its own 299 images per class; ours are tested on another draw of
the same size. So even two exact replications would differ by the sampling noise of two test sets, plus the
spread between training runs. :func:`paper_gaps` measures the first from our own predictions (a bootstrap of
the test images within each class, the same resample for every CNN, so that the CNNs' shared hard images count
once) and assumes the paper's test set as noisy as one of our seeds'; the second it measures where our CNNs have
several seeds, and otherwise leaves out and says so (:func:`paper_gap_findings`).
"""
from __future__ import annotations

from typing import Iterable, Sequence

import numpy as np
import pandas as pd

from .. import experiment
from ..metrics import CLEAN, MARP_ATTACK
from ..models import GROUPS
from .common import PAPER_GROUPS, TABLE2_COLUMNS, and_list, method_key
from .numbers import _table_spec
from .paper import paper_table1, paper_table2

Z95 = 1.959963984540054  # two-sided 95 % of the normal distribution
BOOTSTRAP_RESAMPLES = 2000


def _ordered(result: experiment.RunResult, order: pd.Index) -> pd.DataFrame:
    """The run's predictions in the image order ``order`` (the group's first run's)."""
    p = result.predictions.set_index("image_id")
    if len(p) != len(order) or not p.index.isin(order).all():
        raise ValueError(f"run {result.run_id} was tested on other images than the first run of its group: "
                         "a gap's noise needs one test set for all (runs of one profile and split)")
    return p.loc[order]


def weighted_average_precision(positive: np.ndarray, score: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Average precision (scikit-learn's: sum over the distinct thresholds of the recall gained times the
    precision there) of ``score`` for the boolean ``positive``, for each row of ``weights`` (B, n): each
    image counted as often as its weight, as in a bootstrap resample."""
    order = np.argsort(-score, kind="stable")
    s, pos, w = score[order], positive[order].astype(float), weights[:, order]
    last = np.r_[np.flatnonzero(np.diff(s)), len(s) - 1]  # the last image of each distinct score
    tp, seen = np.cumsum(w * pos, axis=1)[:, last], np.cumsum(w, axis=1)[:, last]
    precision = np.divide(tp, seen, out=np.zeros_like(tp), where=seen > 0)
    recall = np.diff(tp, axis=1, prepend=0.0) / np.maximum(tp[:, -1:], 1e-300)
    return (recall * precision).sum(axis=1)


def weighted_macro_scores(label: np.ndarray, pred: np.ndarray, classes: int,
                          weights: np.ndarray) -> dict[str, np.ndarray]:
    """Macro precision, recall and F1 (scikit-learn's, ``zero_division=0``: the unweighted mean over the
    classes of each class's score) of the predictions ``pred``, for each row of ``weights`` (B, n)."""
    k = np.arange(classes)
    truth, said = (label[:, None] == k).astype(float), (pred[:, None] == k).astype(float)
    tp, n_said, n_true = weights @ (truth * said), weights @ said, weights @ truth
    p = np.divide(tp, n_said, out=np.zeros_like(tp), where=n_said > 0)
    r = np.divide(tp, n_true, out=np.zeros_like(tp), where=n_true > 0)
    f1 = np.divide(2 * p * r, p + r, out=np.zeros_like(tp), where=(p + r) > 0)
    return {"precision": p.mean(1), "recall": r.mean(1), "f1": f1.mean(1)}


def _metric(p: pd.DataFrame, classes: Sequence[str], column: str, weights: np.ndarray) -> np.ndarray | None:
    """A Table I or II ``column`` of one run's ordered predictions ``p`` for each row of ``weights`` (None
    where the predictions lack what it needs): accuracy clean (GAcc) or under an attack; mAP, mARP (the
    mean one-vs-rest AP of the clean and the 20-step PGD softmax scores); macro precision, recall, F1."""
    if column in TABLE2_COLUMNS:
        attack = MARP_ATTACK if column == "mARP" else CLEAN
    else:
        attack = CLEAN if column == "GAcc" else column
    if f"pred_{attack}" not in p.columns:
        return None
    label = p["label"].to_numpy()
    if column in ("mAP", "mARP"):
        scores = [f"p_{attack}_{c}" for c in classes]
        if any(c not in p.columns for c in scores):
            return None
        return np.mean([weighted_average_precision(label == k, p[c].to_numpy(), weights)
                        for k, c in enumerate(scores)], axis=0)
    if column in ("precision", "recall", "f1"):
        return weighted_macro_scores(label, p[f"pred_{attack}"].to_numpy(), len(classes), weights)[column]
    return weights @ (p[f"pred_{attack}"].to_numpy() == label).astype(float)


def bootstrap_weights(labels: np.ndarray, n_boot: int = BOOTSTRAP_RESAMPLES, seed: int = 0) -> np.ndarray:
    """(n_boot, n) weights of the test images in each resample: each class's images drawn with replacement,
    as many as it has (the protocol fixes the images per class), divided by n so that ``correct @ w.T``
    is an accuracy."""
    rng = np.random.default_rng(seed)
    w = np.zeros((n_boot, len(labels)))
    for c in np.unique(labels):
        at = np.flatnonzero(labels == c)
        w[:, at] = rng.multinomial(len(at), np.full(len(at), 1.0 / len(at)), size=n_boot)
    return w / len(labels)


def paper_gaps(results: Sequence[experiment.RunResult], table: str = "I", *, n_boot: int = BOOTSTRAP_RESAMPLES,
               seed: int = 0) -> pd.DataFrame:
    """One row per (group, method, column of the paper's Table ``table``) where our runs hold every CNN of
    the paper's group for the method and the paper has a value: ``ours`` (the mean over CNNs of each CNN's
    mean over seeds, as :func:`side_by_side`), ``paper``, ``gap`` = ours - paper (Table I in points,
    Table II in fractions, the paper's scales), ``noise``: 1.96 standard errors of the gap, ``beyond``:
    abs(gap) > noise, ``seeds``: the fewest seeds of a CNN, and ``seed_noise``: whether the noise includes
    the spread between training seeds (every CNN of the group has two or more).

    The gap's variance adds (1) the test-sampling variance of our average, from ``n_boot`` bootstrap
    resamples (``seed``) of the test images within each class, the same resample for every run (each
    metric recomputed on each resample: accuracies, APs, macro scores); (2) the paper's, taken as that of
    an average of one run per CNN (our first seed's runs); and, with several seeds, (3) the seed-to-seed
    variance of each CNN's value over our seeds, divided by its seeds for ours and whole for the paper's
    single runs. Empty when no group is complete for any method."""
    columns, scale, _ = _table_spec(table)
    paper = (paper_table1() if table == "I" else paper_table2()).set_index(["group", "method"])
    by_key: dict[tuple[str, str], list[experiment.RunResult]] = {}
    for r in results:
        by_key.setdefault((r.config.model, r.config.method.label), []).append(r)
    rows, weights, order, measured = [], None, None, {}

    def measure(r: experiment.RunResult, column: str) -> tuple[float, np.ndarray] | None:
        """(the value on the test set, the values on the resamples) of one run, once per run and column
        (the all-six group reuses the two others' runs)."""
        key = (r.run_id, column)
        if key not in measured:
            p = _ordered(r, order)
            boot = _metric(p, r.config.data.classes, column, weights)
            measured[key] = None if boot is None else (
                float(_metric(p, r.config.data.classes, column, np.full((1, len(p)), 1.0 / len(p)))[0]), boot)
        return measured[key]

    for group in PAPER_GROUPS:
        members = GROUPS[group]
        for method in sorted({m for (_, m) in by_key}, key=method_key):
            if (group, method) not in paper.index or any((cnn, method) not in by_key for cnn in members):
                continue
            runs = {cnn: sorted(by_key[(cnn, method)], key=lambda r: r.config.train.seed) for cnn in members}
            if weights is None:
                first = next(iter(runs.values()))[0].predictions
                order = pd.Index(first["image_id"])
                weights = bootstrap_weights(first["label"].to_numpy(), n_boot, seed)
            for column in columns:
                value = float(paper.loc[(group, method), column])
                got = {cnn: [measure(r, column) for r in rs] for cnn, rs in runs.items()}
                if not np.isfinite(value) or any(g is None for gs in got.values() for g in gs):
                    continue
                point = {cnn: np.array([g[0] for g in gs]) for cnn, gs in got.items()}
                boot = {cnn: np.stack([g[1] for g in gs]) for cnn, gs in got.items()}  # (seeds, n_boot)
                k = len(members)
                ours = np.mean([a.mean() for a in point.values()])
                var_ours = np.mean([b.mean(0) for b in boot.values()], axis=0).var(ddof=1)
                var_paper = np.mean([b[0] for b in boot.values()], axis=0).var(ddof=1)
                seeds = min(len(a) for a in point.values())
                if seeds >= 2:
                    spread = [a.var(ddof=1) for a in point.values()]
                    var_ours += sum(s / len(a) for s, a in zip(spread, point.values())) / k ** 2
                    var_paper += sum(spread) / k ** 2
                noise = Z95 * float(np.sqrt(var_ours + var_paper)) * scale
                gap = scale * ours - value
                rows.append({"table": table, "group": group, "method": method, "column": column,
                             "ours": scale * ours, "paper": value, "gap": gap, "noise": noise,
                             "beyond": abs(gap) > noise, "seeds": seeds, "seed_noise": seeds >= 2})
    return pd.DataFrame(rows, columns=["table", "group", "method", "column", "ours", "paper", "gap", "noise",
                                       "beyond", "seeds", "seed_noise"])


def _digits(table: str) -> tuple[int, int]:
    """Digits of ours and of the paper's values: Table I in percent (ours 1, the paper's 2), Table II as
    fractions (3 and 4), as the side-by-side tables print them."""
    return (1, 2) if table == "I" else (3, 4)


def paper_gap_table(gaps: pd.DataFrame) -> pd.DataFrame:
    """:func:`paper_gaps` as the book shows it: rows (group, method), one column per column of the paper's
    table, each cell ``ours - paper = gap ± noise`` (Table I in points, Table II in fractions), marked
    ``*`` where the gap is beyond the noise."""
    if gaps.empty:
        return pd.DataFrame()
    table = gaps["table"].iloc[0]
    d, dp = _digits(table)
    cell = {(r.group, r.method, r.column): f"{r.ours:.{d}f} - {r.paper:.{dp}f} = {r.gap:+.{d}f} ± {r.noise:.{d}f}"
            + (" *" if r.beyond else "") for r in gaps.itertuples()}
    index = list(dict.fromkeys(zip(gaps["group"], gaps["method"])))
    columns = [c for c in _table_spec(table)[0] if c in set(gaps["column"])]
    return pd.DataFrame([[cell.get((g, m, c), "—") for c in columns] for g, m in index], columns=columns,
                        index=pd.MultiIndex.from_tuples(index, names=["group", "method"]))


def paper_gap_findings(gaps: pd.DataFrame, models: Iterable[str] = ()) -> str:
    """:func:`paper_gaps` in words (Markdown): how many gaps exceed the noise against how many would by
    chance, the largest of them, and what the noise leaves out."""
    if gaps.empty:
        return ("**Our group averages against the paper's.** No group of the paper is complete for any method "
                f"in these runs ({', '.join(models) or 'none'}): a gap to the paper's tables needs every CNN "
                "of a group (widely used, lightweight, all six), as the paper profile's grid trains them.")
    n, beyond, table = len(gaps), gaps[gaps["beyond"]], gaps["table"].iloc[0]
    d = _digits(table)[0]
    largest = beyond.reindex(beyond["gap"].abs().sort_values(ascending=False).index).head(4)
    items = [f"{r.group.replace('_', ' ')} {r.method} {r.column} {r.gap:+.{d}f} ± {r.noise:.{d}f}"
             for r in largest.itertuples()]
    unit = "in points" if table == "I" else "as fractions, the paper's scale"
    text = (f"**Our group averages against the paper's ({n} cells of Table {table}: group x method x column; "
            f"{unit}).** "
            f"{len(beyond)} of them differ from the paper's by more than the noise (95 %, marked * in the table), "
            f"where about {0.05 * n:.1f} would by chance alone"
            + (f"; the largest: {and_list(items)}" if items else "") + ". ")
    within = gaps[~gaps["beyond"]]
    if len(within):
        text += (f"{len(within)} {'is' if len(within) == 1 else 'are'} within it: these runs cannot tell "
                 f"{'it' if len(within) == 1 else 'them'} from the paper's, which does not make "
                 f"{'it' if len(within) == 1 else 'them'} equal. ")
    text += ("The noise adds the test-sampling variance of our average (a bootstrap of our test images within "
             "each class, the same resample for every CNN) and the same for the paper's own test set of one run "
             "per CNN. ")
    if gaps["seed_noise"].all():
        text += ("It also adds the spread between our training seeds, for our mean over seeds and for the paper's "
                 "single runs.")
    elif gaps["seed_noise"].any():
        text += ("Where every CNN of a group has several seeds, it also adds the spread between them; elsewhere "
                 "(one seed) that spread cannot be measured, so a gap beyond the noise there may still be one of "
                 "training runs.")
    else:
        text += ("With one training seed per CNN the spread between training runs cannot be measured and is left "
                 "out, so a gap beyond this noise may still be one of training runs (at 32 px, chapter 12 "
                 "measures that spread over three seeds).")
    return text + (" A gap beyond noise says that the numbers differ, not why: chapter 10 lists where our "
                   "protocol differs from the paper's.")


def paper_gap_headline(gaps: pd.DataFrame, group: str = "all_six", columns: Sequence[str] = ("GAcc", "20-PGD")) -> str:
    """One sentence for the overview (Markdown): for each method, our ``group`` average minus the paper's in
    ``columns``, each marked beyond or within the noise of :func:`paper_gaps`; empty when the runs do not
    complete ``group`` (the overview then says nothing)."""
    sub = gaps[(gaps["group"] == group) & gaps["column"].isin(columns)] if len(gaps) else gaps
    if sub.empty:
        return ""
    d = _digits(sub["table"].iloc[0])[0]
    def cell(r) -> str:
        return f"{r.column} {r.gap:+.{d}f} ± {r.noise:.{d}f}" + (" *" if r.beyond else "")

    rank = {c: k for k, c in enumerate(columns)}
    items = [f"{m} " + ", ".join(cell(r) for r in sorted(rs.itertuples(), key=lambda r: rank[r.column]))
             for m, rs in sub.groupby("method", sort=False)]
    return (f"**Our {group.replace('_', ' ')} average minus the paper's** (points; * beyond the noise of two test "
            f"sets, chapter 4): {'; '.join(items)}. {int(sub['beyond'].sum())} of {len(sub)} differ beyond it.")
