"""The paper's Table I and II (``paper_tables/``) and the checks of their own consistency."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import pandas as pd

from .. import experiment
from .common import TABLE1_COLUMNS, TABLE2_COLUMNS, summary


def _paper_csv(name: str) -> pd.DataFrame:
    return pd.read_csv(Path(__file__).resolve().parents[1] / "paper_tables" / name)  # dpaat_lib/paper_tables


def paper_table1() -> pd.DataFrame:
    """The paper's Table I (percent): group, method, FGSM, 10-IFGSM, 20-IFGSM, 20-PGD, 50-PGD, GAcc."""
    return _paper_csv("table1_robustness.csv")


def paper_table2() -> pd.DataFrame:
    """The paper's Table II (fractions): group, method, mAP, mARP, precision, recall, f1 (no STD row)."""
    return _paper_csv("table2_precision.csv")


def paper_value(table: str, group: str, method: str, column: str) -> float:
    """One number of the paper's Table I ("I") or II ("II"); NaN when the paper has none."""
    t = paper_table1() if table == "I" else paper_table2()
    row = t[(t["group"] == group) & (t["method"] == method)]
    return float(row[column].iloc[0]) if len(row) else float("nan")


def paper_consistency(table: str = "I", tolerance: float | None = None) -> pd.DataFrame:
    """Cells of the paper's "all six" row that are not the mean of its two 3-CNN groups.

    Both groups hold three CNNs, so the all-six average of any column must equal the mean of the two
    group averages (up to the paper's rounding), and can never lie outside their range. Returns one row
    per cell off by more than ``tolerance`` (default: what the published digits' rounding allows, a half
    unit of the last digit in the all-six value and in the mean of the groups, so 0.01 points for Table I's
    two decimals and 0.0001 for Table II's four, with a little room for float error): method, column, the
    two groups, their mean, the paper's all-six value and whether it lies outside the groups' range."""
    t = paper_table1() if table == "I" else paper_table2()
    tol = tolerance if tolerance is not None else (0.011 if table == "I" else 0.00011)
    cols = [c for c in (TABLE1_COLUMNS if table == "I" else TABLE2_COLUMNS) if c in t.columns]
    rows = []
    for method in t["method"].unique():
        sub = t[t["method"] == method].set_index("group")
        if not {"widely_used", "lightweight", "all_six"} <= set(sub.index):
            continue
        for c in cols:
            a, b, six = (float(sub.loc[g, c]) for g in ("widely_used", "lightweight", "all_six"))
            mean = (a + b) / 2
            if abs(six - mean) > tol:
                rows.append({"method": method, "column": c, "widely_used": a, "lightweight": b,
                             "mean of the groups": round(mean, 4), "paper all_six": six,
                             "outside the groups' range": not min(a, b) <= six <= max(a, b)})
    return pd.DataFrame(rows)


def paper_consistency_note(table: str = "I") -> str:
    """:func:`paper_consistency` in words, for the page that compares with the paper's all-six row."""
    off = paper_consistency(table)
    if off.empty:
        return f"Every all-six value of the paper's Table {table} is the mean of its two 3-CNN groups."
    unit = " points" if table == "I" else ""
    fmt_v = (lambda v: f"{v:.2f}") if table == "I" else (lambda v: f"{v:.4f}")
    outside = off[off["outside the groups' range"]]
    items = [f"{r['method']} {r['column']} {fmt_v(r['paper all_six'])} (groups {fmt_v(r['widely_used'])} and "
             f"{fmt_v(r['lightweight'])}, mean {fmt_v(r['mean of the groups'])})" for _, r in off.iterrows()]
    worst = float((off["paper all_six"] - off["mean of the groups"]).abs().max())
    return (f"**A check of the paper's own Table {table}.** Both of its groups hold three CNNs, so each all-six "
            f"value should be the mean of the two group values. {len(off)} are not: " + "; ".join(items)
            + f". The largest gap is {fmt_v(worst)}{unit}"
            + (f", and {len(outside)} of them {'lies' if len(outside) == 1 else 'lie'} outside the range of the "
               "two groups, which no average can do" if len(outside) else "")
            + ". We compare with the paper's values as printed; where a gap above matters, the group columns "
              "are the paper's other reading.")


def paper_recall_gaps() -> pd.DataFrame:
    """Table II's recall against Table I's GAcc, per group and method (points).

    The paper tests on 299 images of each class. On a test set with as many images of every class, recall
    averaged over the classes is the accuracy (and so is recall weighted by class size, or pooled over
    images): Table II's recall should be Table I's GAcc up to the rounding. Columns: group, method, recall
    (x 100), GAcc, gap (recall - GAcc)."""
    t1 = paper_table1().set_index(["group", "method"])
    t2 = paper_table2().set_index(["group", "method"])
    rows = [{"group": g, "method": m, "recall": 100 * float(t2.loc[(g, m), "recall"]),
             "GAcc": float(t1.loc[(g, m), "GAcc"])} for g, m in t2.index if (g, m) in t1.index]
    out = pd.DataFrame(rows)
    out["gap"] = out["recall"] - out["GAcc"]
    return out


def paper_recall_note(tolerance: float = 0.011) -> str:
    """:func:`paper_recall_gaps` in words (Markdown): which of Table II's recalls differ from Table I's
    GAcc by more than the rounding (``tolerance`` points: GAcc's two decimals, recall's four)."""
    gaps = paper_recall_gaps()
    off = gaps[gaps["gap"].abs() > tolerance]
    if off.empty:
        return ("Table II's recall equals Table I's GAcc for every method, as it must on a test set with as many "
                "images of each class.")
    six = off[off["group"] == "all_six"]
    shown = six if len(six) else off
    higher = int((off["gap"] > 0).sum())
    return (f"**Recall against GAcc.** The paper tests on 299 images of each class, where recall averaged over the "
            f"classes is the accuracy, so Table II's recall should equal Table I's GAcc. It differs in "
            f"{len(off)} of the {len(gaps)} rows of groups and methods, by {off['gap'].abs().min():.2f} to "
            f"{off['gap'].abs().max():.2f} points, recall the higher in {higher} of them ("
            + ", ".join(f"{r['method']} {r['recall']:.2f} against {r['GAcc']:.2f}" for _, r in shown.iterrows())
            + (" in the all-six row" if len(six) else "") + "). So the two tables do not come from the same "
              "predictions on such a test set, as the paper describes them; we compare with each as printed.")


def paper_table1_findings(group: str = "all_six") -> str:
    """What the paper's Table I says for ``group`` (Markdown), computed from it: STD's fall, whether DPAAT
    leads every attack column, and in how many methods 20- and 50-step PGD agree."""
    t = paper_table1()
    t = t[t["group"] == group].set_index("method")
    attacks = [c for c in TABLE1_COLUMNS if c != "GAcc"]
    lead = [c for c in attacks if t[c].idxmax() == "DPAAT"]
    same = [m for m in t.index if t.loc[m, "20-PGD"] == t.loc[m, "50-PGD"]]
    higher50 = [m for m in t.index if t.loc[m, "50-PGD"] > t.loc[m, "20-PGD"]]
    text = (f"In the paper ({group.replace('_', ' ')}) STD falls from {t.loc['STD', 'GAcc']:.2f}% clean to "
            f"{t.loc['STD', '20-IFGSM']:.2f}% under 20-step I-FGSM; DPAAT has the highest robust accuracy in "
            f"{len(lead)} of its {len(attacks)} attack columns"
            + (f" (not in {', '.join(c for c in attacks if c not in lead)})" if len(lead) < len(attacks) else "")
            + f". Its 20- and 50-step PGD columns are identical for {len(same)} of its {len(t)} methods"
            + (f" ({', '.join(same)})" if same else ""))
    if higher50:
        text += (f", and for {', '.join(higher50)} 50 steps give a *higher* accuracy than 20, which a longer run "
                 "of the same attack should not give (only a different random start can)")
    return text + "."


def pgd_steps_sentence(results: Sequence[experiment.RunResult]) -> str:
    """Ours, seed means per model and method: 20- against 50-step PGD accuracy (percent)."""
    s = summary(results, ["20-PGD", "50-PGD"])["mean"]
    return "; ".join(f"{model} {method} {100 * row['20-PGD']:.1f} vs {100 * row['50-PGD']:.1f}"
                     for (model, method), row in s.iterrows())
