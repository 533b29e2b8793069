"""Our numbers in the paper's layout: mean and spread over seeds, per model and per group of CNNs."""
from __future__ import annotations

from typing import Iterable, Sequence

import pandas as pd

from .. import experiment
from ..metrics import group_average
from ..models import GROUPS
from .common import PAPER_GROUPS, TABLE1_COLUMNS, TABLE2_COLUMNS, fmt, frame_summary, method_key, results_frame, summary
from .paper import paper_table1, paper_table2


def _table_spec(table: str) -> tuple[tuple[str, ...], float, int]:
    if table == "I":
        return TABLE1_COLUMNS, 100.0, 1
    if table == "II":
        return TABLE2_COLUMNS, 1.0, 3
    raise ValueError(f"table must be 'I' or 'II', got {table!r}")


def mean_std_table(runs: pd.DataFrame, columns: Sequence[str], scale: float = 100.0, digits: int = 1) -> pd.DataFrame:
    """The book's one "mean ± std over seeds" table. ``runs``: one row per run with ``model``, ``method``
    (label) and ``columns`` (fractions). Per (model, method): each column as :func:`fmt` writes it (the
    sample std over the seeds, none for one seed) and the number of seeds; the CNNs in the order they
    first appear in ``runs``, the methods in the paper's order."""
    columns = [c for c in columns if c in runs.columns]
    if runs.empty:
        return pd.DataFrame(columns=[*columns, "seeds"])
    s = frame_summary(runs, columns)
    n = s[("n", "")]
    out = pd.DataFrame({c: [fmt(m, sd, k, scale, digits) for m, sd, k in zip(s[("mean", c)], s[("std", c)], n)]
                        for c in columns}, index=s.index)
    out["seeds"] = n
    rank = {m: k for k, m in enumerate(dict.fromkeys(runs["model"]))}
    return out.loc[sorted(out.index, key=lambda k: (rank[k[0]], method_key(k[1])))]


def ours_table(results: Sequence[experiment.RunResult], table: str = "I") -> pd.DataFrame:
    """Our per-model table: rows (model, method), columns the paper's; Table I in percent, Table II as
    fractions (the paper's scales); mean ± std over seeds when there are several (:func:`mean_std_table`)."""
    cols, scale, digits = _table_spec(table)
    return mean_std_table(results_frame(results), cols, scale, digits)


def complete_groups(models: Iterable[str]) -> list[str]:
    """The paper's CNN groups whose every model is in ``models``."""
    have = set(models)
    return [g for g, members in GROUPS.items() if set(members) <= have]


def group_note(models: Iterable[str]) -> str:
    """One sentence on which of the paper's groups our models complete."""
    models = list(dict.fromkeys(models))
    full = complete_groups(models)
    if full:
        return (f"Our group averages cover {', '.join(full)} (all their models are in this profile); "
                "other groups are not averaged.")
    return (f"This profile's models ({', '.join(models)}) complete none of the paper's groups "
            f"(widely used = {', '.join(GROUPS['widely_used'])}; lightweight = "
            f"{', '.join(GROUPS['lightweight'])}), so our numbers are per model and the paper's are "
            "group averages: the columns compare a method's ranking, not the same quantity.")


def ours_group_average(results: Sequence[experiment.RunResult], table: str = "I") -> pd.DataFrame:
    """Our group averages (over models of seed-means), only for complete groups (metrics.group_average)."""
    cols, _, _ = _table_spec(table)
    s = summary(results, cols)["mean"].reset_index()
    return group_average(s, GROUPS)


def side_by_side(results: Sequence[experiment.RunResult], table: str = "I",
                 paper_groups: Sequence[str] = PAPER_GROUPS, metrics: Sequence[str] | None = None) -> pd.DataFrame:
    """Ours beside the paper's: rows (metric, method); columns ``ours: <model>`` (mean ± std over
    seeds), ``ours: <group>`` (complete groups only), ``paper: <group>``. Formatted strings."""
    cols, scale, digits = _table_spec(table)
    cols = [c for c in (metrics or cols) if c in cols]
    paper = paper_table1() if table == "I" else paper_table2()
    s = summary(results, cols)
    models = list(dict.fromkeys(s.index.get_level_values("model")))
    methods = sorted(dict.fromkeys(s.index.get_level_values("method")), key=method_key)
    groups = ours_group_average(results, table)
    rows = {}
    for c in cols:
        if c not in s["mean"].columns:
            continue
        for m in methods:
            row = {}
            for mod in models:
                key = (mod, m)
                row[f"ours: {mod}"] = (fmt(s.loc[key, ("mean", c)], s.loc[key, ("std", c)],
                                           int(s.loc[key, ("n", "")]), scale, digits) if key in s.index else "—")
            for g in complete_groups(models):
                sub = groups[(groups["group"] == g) & (groups["method"] == m)] if len(groups) else groups
                row[f"ours: {g}"] = fmt(float(sub[c].iloc[0]), scale=scale, digits=digits) if len(sub) else "—"
            for g in paper_groups:
                p = paper[(paper["group"] == g) & (paper["method"] == m)]
                # as published: Table I in percent with 2 decimals, Table II as fractions with 4
                row[f"paper: {g}"] = fmt(float(p[c].iloc[0]), scale=1.0, digits=2 if table == "I" else 4) \
                    if len(p) else "—"
            rows[(c, m)] = row
    out = pd.DataFrame.from_dict(rows, orient="index")
    out.index = pd.MultiIndex.from_tuples(out.index, names=["metric", "method"])
    return out


def headline(results: Sequence[experiment.RunResult], group: str = "all_six") -> pd.DataFrame:
    """The one-table summary of chapter 1: GAcc and 20-PGD RAcc per method, ours per model and the
    paper's ``group`` average."""
    return side_by_side(results, "I", paper_groups=(group,), metrics=("GAcc", "20-PGD"))
