"""Speed and cost: what each method costs to train, the throughput benchmark and the compile times."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from .. import experiment, store
from ..methods import LABELS, MethodConfig
from .common import method_key


def passes_per_batch(method: MethodConfig) -> tuple[str, int]:
    """Forward-backward passes per training batch (attack steps + training passes) and their total, from the
    method's code: STD 1; AT k + 1; SAT, DPAAT, D-A, D-B k + 2; AMAT at most k + 2 (it attacks only the
    correctly classified images), with k the training attack's steps (7)."""
    k = int(method.attack.steps)
    if method.name == "std":
        return "1", 1
    if method.name == "at":
        return f"{k} + 1", k + 1
    if method.name == "amat":
        return f"<= {k} + 2", k + 2
    return f"{k} + 2", k + 2


def _cost_rows(results: Sequence[experiment.RunResult]) -> list[dict]:
    """Per run (sorted): model, method, seed, epochs, median seconds per epoch, its ratio to STD's, passes."""
    med = {r.run_id: float(np.median([e["seconds"] for e in r.history["epochs"]])) for r in results}
    std = {(r.config.model, r.config.train.seed): r for r in results if r.config.method.name == "std"}
    rows = []
    for r in sorted(results, key=lambda r: (r.config.model, method_key(r.config.method.label), r.config.train.seed)):
        base = std.get((r.config.model, r.config.train.seed))
        rel = med[r.run_id] / med[base.run_id] if base is not None and med[base.run_id] > 0 else float("nan")
        text, total = passes_per_batch(r.config.method)
        rows.append({"model": r.config.model, "method": r.config.method.label, "seed": r.config.train.seed,
                     "epochs": len(r.history["epochs"]), "median": med[r.run_id], "rel": rel, "passes": text,
                     "passes_total": f"{'<= ' if '<=' in text else ''}{total}"})
    return rows


def strong_cost_table(results: Sequence[experiment.RunResult]) -> pd.DataFrame:
    """Per run: epochs run, median seconds per training epoch (stored history), its ratio to the median of
    the STD run of the same model and seed, and the forward-backward passes per batch (:func:`passes_per_batch`)
    with their ratio to STD's one."""
    return pd.DataFrame([
        {"model": r["model"], "method": r["method"], "seed": r["seed"], "epochs run": r["epochs"],
         # fixed width, so the text table keeps its layout when the nbval sanitizer blanks timings
         "median s/epoch": f"{r['median']:8.1f} s/epoch",
         "median relative to STD": f"x{r['rel']:6.1f}" if np.isfinite(r["rel"]) else "—",
         "passes per batch": r["passes"], "passes relative to STD": r["passes_total"]}
        for r in _cost_rows(results)])


def benchmark_cost(results_dir) -> pd.DataFrame | None:
    """Each method's cost relative to STD measured by ``benchmarks/train_throughput.py --cost-model``
    (one epoch per method, same process, nothing else running; with ``--repeats`` the median of the
    rounds, their range in brackets), from the stored benchmarks
    (:func:`dpaat_lib.store.benchmark_paths`): rows (card, model), columns the methods. None when no
    benchmark is stored."""
    rows = {}
    for c in store.benchmark_rows(results_dir, "method_cost"):
        key = (c["card"], c["model"], _code_label(c))
        rows.setdefault(key, {})[LABELS[c["method"]]] = _times(c["relative_to_std"], c.get("relative_runs"))
    if not rows:
        return None
    out = pd.DataFrame.from_dict(rows, orient="index")
    out.index = pd.MultiIndex.from_tuples(out.index, names=["hardware", "model", "training code"])
    return out


def compile_time_table(results_dir) -> pd.DataFrame | None:
    """The stored ``compile-time*.json`` of benchmarks/compile_time.py (in ``results_dir`` and the stores
    one level below): per method, the seconds of its first epochs through torch.compile with torch's own
    shape handling, with the library's (the partial last batch eager) and again on the library's warm
    cache, the graphs each compiled, and the two ratios. None when none is stored."""
    root = Path(results_dir)
    rows = []
    for path in sorted(root.glob("compile-time*.json")) + sorted(root.glob("*/compile-time*.json")):
        for r in store.read_json(path)["compile_time"]:
            rows.append({"hardware": r.get("card", r["device"]), "model": r["model"], "method": LABELS[r["method"]],
                         "run": f"{r['images']} images, {r['epochs']} epochs, {r['size']} px",
                         "graphs (torch, library)": f"{r['torch_graphs']}, {r['library_graphs']}",
                         "torch's shapes s": f"{r['torch_s']:.1f}", "library s": f"{r['library_s']:.1f}",
                         "torch / library": f"x{r['torch_over_library']:.2f}",
                         "warm cache s": f"{r['warm_s']:.1f}", "cold / warm": f"x{r['cold_over_warm']:.1f}"})
    return pd.DataFrame(rows).set_index(["hardware", "model", "method"]) if rows else None


def benchmark_throughput(results_dir) -> pd.DataFrame | None:
    """The stored throughput benchmark: images/s of PGD-7 training in the paper-style loop, the library's
    path and several library processes at once, with the ratios, and the seconds of the library's first
    warm-up batches (compiling, on a compiled path) where recorded (None when none is stored;
    :func:`dpaat_lib.store.benchmark_paths`)."""
    rows = []
    for r in store.benchmark_rows(results_dir, "throughput"):
        row = {"hardware": r["card"], "library path": _library_path(r), "model": r["model"],
               "training code": _code_label(r),
               "paper-style img/s": f"{r['paper_img_s']:.0f}",
               "library img/s": f"{r['library_img_s']:.0f}", "ratio": _times(r["ratio"], r.get("ratio_runs"))}
        if "concurrent_img_s" in r:
            row[f"{r['procs']} processes img/s"] = f"{r['concurrent_img_s']:.0f}"
            row[f"ratio ({r['procs']} processes)"] = f"x{r['concurrent_ratio']:.2f}"
        if "library_warmup_s" in r:  # compiling included on a compiled path: what a run pays once
            row["library warm-up s"] = f"{r['library_warmup_s']:.1f}"
        rows.append(row)
    return pd.DataFrame(rows).set_index(["hardware", "library path", "model"]).fillna("–") if rows else None


def _times(value: float, rounds=None) -> str:
    """``x6.32``, or ``x6.32 (6.01-6.80)`` with the range of a benchmark's rounds (``--repeats``)."""
    text = f"x{value:.2f}"
    if rounds and len(rounds) > 1 and min(rounds) != max(rounds):
        text += f" ({min(rounds):.2f}-{max(rounds):.2f})"
    return text


def _code_label(row: dict) -> str:
    """Which training path a benchmark row timed: this book's ("current"), an earlier one, or unrecorded
    (rows stored before benchmarks recorded :func:`dpaat_lib.training.training_code_digest`)."""
    from ..training import training_code_digest

    code = row.get("training_code")
    return "unrecorded" if code is None else ("current" if code == training_code_digest() else f"earlier ({code})")


def _library_path(row: dict) -> str:
    """How a benchmark row's library path ran: eager, through torch.compile in which mode, or through the
    library's own CUDA graph of each step (:class:`dpaat_lib.training.CapturedStep`)."""
    from ..training import GRAPH_MODE

    mode = row.get("compile")
    return "eager" if not mode else ("the library's CUDA graph" if mode == GRAPH_MODE else f"torch.compile {mode}")


def _ratio_range(values) -> str:
    lo, hi = min(values), max(values)
    return f"x{lo:.2f}" if f"{lo:.2f}" == f"{hi:.2f}" else f"x{lo:.2f} to x{hi:.2f}"


SPEED_GOAL = 3.0  # issue 4: the library's path at least 3x the paper-style loop, every CNN


def benchmark_findings(results_dir, goal: float = SPEED_GOAL) -> str:
    """What the stored throughput benchmarks show, per card, library path and version of the training path
    (two versions' rows of one CNN are two measurements, not two CNNs): the range of the library's speed-up
    over the paper-style loop (one process, and several sharing the card), and which CNNs reach ``goal``."""
    cards: dict[tuple[str, str, str], list[dict]] = {}
    for r in store.benchmark_rows(results_dir, "throughput"):
        cards.setdefault((r["card"], _library_path(r), _code_label(r)), []).append(r)
    if not cards:
        return "No throughput benchmark is stored."
    out = []
    for (card, path, _), rows in cards.items():
        one = [r["ratio"] for r in rows]
        how = "" if path == "eager" else f" through {path}"
        cnns = len({r["model"] for r in rows})
        text = (f"On {card} ({cnns} CNN{'s' * (cnns > 1)}, {rows[0]['size']} px), the library's path{how} "
                f"in one process runs at {_ratio_range(one)} the paper-style loop")
        best = {r["model"]: r["ratio"] for r in rows}
        many = [r for r in rows if "concurrent_ratio" in r]
        if many:
            conc = [r["concurrent_ratio"] for r in many]
            text += f"; {many[0]['procs']} library processes sharing the card together at {_ratio_range(conc)}"
            for r in many:
                best[r["model"]] = max(best[r["model"]], r["concurrent_ratio"])
        text += "."
        rounds = max(int(r.get("repeats", 1)) for r in rows)
        if rounds > 1:
            text += f" Each one-process ratio is the median of {rounds} interleaved rounds (their range in the table)."
        if not card.startswith("CPU"):  # the goal is the GPU's: on a CPU both loops are bound by arithmetic
            reached = [m for m, v in best.items() if v >= goal]
            text += (f" The project's goal of x{goal:g} (the library's path at least {goal:g} times the paper-style "
                     f"loop's images per second, on every CNN) is reached for {len(reached)} of {len(best)} CNNs"
                     + (f" ({', '.join(reached)})" if reached else "") + ".")
        hosts = sorted({r["host_cpu"] for r in rows if r.get("host_cpu")})  # recorded since session 22
        if hosts:
            text += f" Host CPU: {'; '.join(hosts)}."
        stale = sorted({_code_label(r) for r in rows} - {"current"})
        if stale:
            text += (" These rows do not record which version of the training path (attacks, methods, models, "
                     "training loop) they timed, so they may describe an earlier one than this book's code."
                     if stale == ["unrecorded"] else
                     " Rows here timed an earlier version of the training path (attacks, methods, models, training "
                     "loop): they describe that version, not this book's code.")
        out.append(text)
    return "\n\n".join(out)


def strong_cost_findings(results: Sequence[experiment.RunResult]) -> str:
    """The cost paragraph: measured median ratios beside the pass counts, with the caveat on how they were
    measured."""
    rows = _cost_rows(results)
    if not rows:
        return "No runs."
    by: dict = {}
    for r in rows:
        if r["method"] != "STD":
            by.setdefault((r["model"], r["method"]), []).append(r)
    parts = []
    for (model, meth), rs in by.items():  # one entry per method, its seeds' ratios summarised
        rel = [r["rel"] for r in rs if np.isfinite(r["rel"])]
        text = "—" if not rel else f"x{np.median(rel):.1f}"
        if len(rel) > 1:
            text += f" (x{min(rel):.1f} to x{max(rel):.1f} over {len(rel)} seeds)"
        parts.append(f"{model} {meth}: measured {text}, passes {rs[0]['passes_total']}")
    return ("**Cost relative to STD** (median seconds per training epoch, from each run's stored history, against "
            "the STD run of the same seed; with several seeds the median of their ratios and their range; "
            "forward-backward passes per batch): " + "; ".join(parts) + ". "
            "The runs behind this book were trained on a shared CPU, partly at the same time as other runs, so "
            "the measured ratios are indicative only; the pass counts are what the methods cost on any machine. "
            "AT, SAT, AMAT and DPAAT all pay for the same 7-step attack per batch; DPAAT's radius update and "
            "synchronisation loss add no pass, so its cost equals SAT's and exceeds AT's by one forward-backward "
            "pass of the clean batch.")
