"""Many runs in dependency order: every STD run before the AMAT run that needs its threshold."""
from __future__ import annotations

import time

import pandas as pd

from . import experiment
from .config import RunConfig
from .metrics import metrics_row


def ordered(configs: list[RunConfig]) -> list[RunConfig]:
    """Unique configurations, AMAT's STD counterparts added and placed first."""
    out: dict[str, RunConfig] = {}
    for c in configs:
        if c.method.needs_threshold:
            out.setdefault(c.std_counterpart().run_id, c.std_counterpart())
    for c in configs:
        out.setdefault(c.run_id, c)
    first = [c for c in out.values() if c.method.name == "std"]
    return first + [c for c in out.values() if c.method.name != "std"]


def shard(configs: list[RunConfig], spec: str) -> list[RunConfig]:
    """The configurations of shard "K/N": models are dealt round-robin, so a model's runs
    (its AMAT and the STD run AMAT needs) all land in one shard and shards never wait on each other."""
    try:
        k, n = (int(v) for v in spec.split("/"))
        assert 0 <= k < n
    except (ValueError, AssertionError):
        raise ValueError(f"shard must be K/N with 0 <= K < N, got {spec!r}") from None
    models = list(dict.fromkeys(c.model for c in configs))
    mine = set(models[k::n])
    return [c for c in configs if c.model in mine]


def run_grid(configs: list[RunConfig], *, results, time_budget_s: float | None = None, log=print,
             **kw) -> dict[str, experiment.RunResult]:
    """Run (or load) every configuration; with a time budget, stop cleanly when it is spent
    (finished runs and finished epochs are kept; the next call continues)."""
    start = time.perf_counter()
    done: dict[str, experiment.RunResult] = {}
    order = ordered(configs)
    for i, c in enumerate(order):
        left = None if time_budget_s is None else time_budget_s - (time.perf_counter() - start)
        if left is not None and left <= 0 and experiment.load_result(c, results) is None:
            log(f"[{i + 1}/{len(order)}] time budget spent; call again to continue")
            break
        t0 = time.perf_counter()
        r = experiment.run(c, results=results, time_budget_s=left, **kw)
        status = "interrupted (resumable)" if r is None else "done"
        log(f"[{i + 1}/{len(order)}] {c.run_id}: {status} in {time.perf_counter() - t0:.1f}s")
        if r is None:
            break
        done[c.run_id] = r
    return done


def results_table(results: dict[str, experiment.RunResult] | list[experiment.RunResult]) -> pd.DataFrame:
    """One row per run: model, method, seed, then GAcc, RAcc per attack, mAP, mARP, P/R/F1."""
    rs = results.values() if isinstance(results, dict) else results
    rows = [{"model": r.config.model, "method": r.config.method.label, "seed": r.config.train.seed,
             **metrics_row(r.metrics, [a.name for a in r.config.eval_attacks])} for r in rs]
    return pd.DataFrame(rows)
