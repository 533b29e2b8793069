"""Our group averages against the paper's Table I: each gap, and whether it exceeds the noise of two test sets
(and of training seeds, where the runs have several).

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
from ..metrics import CLEAN
from ..models import GROUPS
from .common import PAPER_GROUPS, TABLE1_COLUMNS, and_list, method_key
from .paper import paper_table1

Z95 = 1.959963984540054  # two-sided 95 % of the normal distribution
BOOTSTRAP_RESAMPLES = 2000


def _correct(result: experiment.RunResult, column: str, order: pd.Index) -> np.ndarray | None:
    """Whether each test image (in ``order``) was classified correctly under ``column``'s attack (GAcc: clean),
    or None when the run's predictions lack that attack."""
    name = f"pred_{CLEAN if column == 'GAcc' else column}"
    p = result.predictions
    if name not in p.columns:
        return None
    p = p.set_index("image_id")
    if len(p) != len(order) or not p.index.isin(order).all():
        raise ValueError(f"run {result.run_id} was tested on other images than the first run of its group: "
                         "a gap's noise needs one test set for all (runs of one profile and split)")
    p = p.loc[order]
    return (p[name].to_numpy() == p["label"].to_numpy()).astype(float)


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


def paper_gaps(results: Sequence[experiment.RunResult], *, n_boot: int = BOOTSTRAP_RESAMPLES,
               seed: int = 0) -> pd.DataFrame:
    """One row per (group, method, Table I column) where our runs hold every CNN of the paper's group for
    the method and the paper has a value: ``ours`` (the mean over CNNs of each CNN's mean over seeds, as
    :func:`side_by_side`), ``paper``, ``gap`` = ours - paper (all in points), ``noise``: 1.96 standard
    errors of the gap, ``beyond``: \\|gap\\| > noise, ``seeds``: the fewest seeds of a CNN, and
    ``seed_noise``: whether the noise includes the spread between training seeds (every CNN of the group
    has two or more).

    The gap's variance adds (1) the test-sampling variance of our average, from ``n_boot`` bootstrap
    resamples (``seed``) of the test images within each class, the same resample for every run; (2) the
    paper's, taken as that of an average of one run per CNN (our first seed's runs); and, with several
    seeds, (3) the seed-to-seed variance of each CNN's accuracy over our seeds, divided by its seeds for
    ours and whole for the paper's single runs. Empty when no group is complete for any method."""
    by_key: dict[tuple[str, str], list[experiment.RunResult]] = {}
    for r in results:
        by_key.setdefault((r.config.model, r.config.method.label), []).append(r)
    paper = paper_table1().set_index(["group", "method"])
    rows, weights, order = [], None, None
    for group in PAPER_GROUPS:
        members = GROUPS[group]
        methods = sorted({m for (_, m) in by_key}, key=method_key)
        for method in methods:
            if (group, method) not in paper.index or any((cnn, method) not in by_key for cnn in members):
                continue
            runs = {cnn: sorted(by_key[(cnn, method)], key=lambda r: r.config.train.seed) for cnn in members}
            if weights is None:
                first = next(iter(runs.values()))[0].predictions
                order = pd.Index(first["image_id"])
                weights = bootstrap_weights(first["label"].to_numpy(), n_boot, seed)
            for column in TABLE1_COLUMNS:
                value = float(paper.loc[(group, method), column])
                correct = {cnn: [_correct(r, column, order) for r in rs] for cnn, rs in runs.items()}
                if not np.isfinite(value) or any(c is None for cs in correct.values() for c in cs):
                    continue
                acc = {cnn: np.array([c.mean() for c in cs]) for cnn, cs in correct.items()}
                boot = {cnn: np.stack(cs) @ weights.T for cnn, cs in correct.items()}  # (seeds, n_boot)
                k = len(members)
                ours = np.mean([a.mean() for a in acc.values()])
                var_ours = np.mean([b.mean(0) for b in boot.values()], axis=0).var(ddof=1)
                var_paper = np.mean([b[0] for b in boot.values()], axis=0).var(ddof=1)
                seeds = min(len(a) for a in acc.values())
                if seeds >= 2:
                    spread = [a.var(ddof=1) for a in acc.values()]
                    var_ours += sum(s / len(a) for s, a in zip(spread, acc.values())) / k ** 2
                    var_paper += sum(spread) / k ** 2
                noise = Z95 * float(np.sqrt(var_ours + var_paper)) * 100
                gap = 100 * ours - value
                rows.append({"group": group, "method": method, "column": column, "ours": 100 * ours,
                             "paper": value, "gap": gap, "noise": noise, "beyond": abs(gap) > noise,
                             "seeds": seeds, "seed_noise": seeds >= 2})
    return pd.DataFrame(rows, columns=["group", "method", "column", "ours", "paper", "gap", "noise", "beyond",
                                       "seeds", "seed_noise"])


def paper_gap_table(gaps: pd.DataFrame) -> pd.DataFrame:
    """:func:`paper_gaps` as the book shows it: rows (group, method), one column per Table I column, each
    cell ``ours - paper = gap ± noise`` in points, marked ``*`` where the gap is beyond the noise."""
    if gaps.empty:
        return pd.DataFrame()
    cell = {(r.group, r.method, r.column): f"{r.ours:.1f} - {r.paper:.2f} = {r.gap:+.1f} ± {r.noise:.1f}"
            + (" *" if r.beyond else "") for r in gaps.itertuples()}
    index = list(dict.fromkeys(zip(gaps["group"], gaps["method"])))
    columns = [c for c in TABLE1_COLUMNS if c in set(gaps["column"])]
    out = pd.DataFrame([[cell.get((g, m, c), "—") for c in columns] for g, m in index], columns=columns,
                       index=pd.MultiIndex.from_tuples(index, names=["group", "method"]))
    return out


def paper_gap_findings(gaps: pd.DataFrame, models: Iterable[str] = ()) -> str:
    """:func:`paper_gaps` in words (Markdown): how many gaps exceed the noise against how many would by
    chance, the largest of them, and what the noise leaves out."""
    if gaps.empty:
        return ("**Our group averages against the paper's.** No group of the paper is complete for any method "
                f"in these runs ({', '.join(models) or 'none'}): a gap to the paper's Table I needs every CNN "
                "of a group (widely used, lightweight, all six), as the paper profile's grid trains them.")
    n, beyond = len(gaps), gaps[gaps["beyond"]]
    largest = beyond.reindex(beyond["gap"].abs().sort_values(ascending=False).index).head(4)
    items = [f"{r.group.replace('_', ' ')} {r.method} {r.column} {r.gap:+.1f} ± {r.noise:.1f}"
             for r in largest.itertuples()]
    text = (f"**Our group averages against the paper's ({n} cells of Table I: group x method x column).** "
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
