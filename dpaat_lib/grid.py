"""Many runs in dependency order: every STD run before the AMAT run that needs its threshold."""
from __future__ import annotations

import os
import time
import traceback
from pathlib import Path
from typing import Callable

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


def claim(claim_dir, name: str) -> bool:
    """Take ``name`` for this process: atomically create ``claim_dir/name`` (O_EXCL); False if another
    process of the same call took it first."""
    path = Path(claim_dir) / name
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        return False
    os.write(fd, f"{os.getpid()}\n".encode())
    os.close(fd)
    return True


def run_claimed(configs: list[RunConfig], *, results, claim_dir, time_budget_s: float | None = None, log=print,
                after_run: Callable[[experiment.RunResult], None] | None = None, poll_s: float = 5.0,
                **kw) -> dict[str, experiment.RunResult]:
    """Several processes share one grid: each calls this with the same ``configs`` and ``claim_dir``
    and runs the configurations it claims first (:func:`claim`), in :func:`ordered` order.

    Batch 32 leaves a GPU mostly idle, so N processes on one card finish a grid about N times sooner
    until the card is busy. An AMAT run is claimed only once its STD run is done (its threshold);
    until then the process takes other runs or waits. A failing run is logged and left (its claim
    stays, so no other process repeats the failure in this call). With a time budget no run is
    started after it is spent and a running one stops after its current epoch (resumable).
    ``after_run(result)`` runs in the claiming process after each finished run (e.g. the extras of
    :mod:`dpaat_lib.precompute`, while the checkpoint is there). ``claim_dir`` must be fresh for
    each call: a claim is never released. Returns the runs this process finished.
    """
    start = time.perf_counter()
    pending = ordered(configs)
    done: dict[str, experiment.RunResult] = {}

    def left():
        return None if time_budget_s is None else time_budget_s - (time.perf_counter() - start)

    while pending:
        waiting = []
        for c in pending:
            if left() is not None and left() <= 0:
                log(f"time budget spent; {len(pending)} run(s) left to other processes or the next call")
                return done
            if c.method.needs_threshold and experiment.load_result(c.std_counterpart(), results) is None:
                if (Path(claim_dir) / f"{c.std_counterpart().run_id}.failed").exists():
                    log(f"{c.run_id}: skipped, its STD run failed")
                else:
                    waiting.append(c)  # its STD run is another process's, still training
                continue
            if not claim(claim_dir, c.run_id):
                continue
            t0 = time.perf_counter()
            try:
                r = experiment.run(c, results=results, time_budget_s=left(), **kw)
            except Exception:  # noqa: BLE001 - one broken run must not stop the others
                log(f"{c.run_id}: FAILED\n{traceback.format_exc()}")
                claim(claim_dir, f"{c.run_id}.failed")
                continue
            if r is None:
                log(f"{c.run_id}: interrupted by the time budget (resumable) after {time.perf_counter() - t0:.0f}s")
                return done
            log(f"{c.run_id}: done in {time.perf_counter() - t0:.1f}s")
            done[c.run_id] = r
            if after_run is not None:
                try:
                    after_run(r)
                except Exception:  # noqa: BLE001
                    log(f"{c.run_id}: extras FAILED\n{traceback.format_exc()}")
        if waiting and len(waiting) == len(pending):
            time.sleep(poll_s)
        pending = waiting
    return done


def results_table(results: dict[str, experiment.RunResult] | list[experiment.RunResult]) -> pd.DataFrame:
    """One row per run: model, method, seed, then GAcc, RAcc per attack, mAP, mARP, P/R/F1."""
    rs = results.values() if isinstance(results, dict) else results
    rows = [{"model": r.config.model, "method": r.config.method.label, "seed": r.config.train.seed,
             **metrics_row(r.metrics, [a.name for a in r.config.eval_attacks])} for r in rs]
    return pd.DataFrame(rows)
