"""Many runs in dependency order: every STD run before the AMAT run that needs its threshold.

:func:`run_grid` runs them in one process; :func:`run_claimed` lets several
processes share one grid (and one GPU). On a lent GPU a checkpoint does not
outlive the machine, so :func:`run_claimed` can also start only the runs that
are expected to finish before it goes back (:func:`estimate_seconds`) and
train again a finished run whose checkpoint-derived results were lost
(:func:`supersede`; :func:`dpaat_lib.precompute.plan_table` lists both).
"""
from __future__ import annotations

import dataclasses
import os
import shutil
import statistics
import time
import traceback
from pathlib import Path
from typing import Callable

import pandas as pd

from . import experiment, gradcam, store
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


def _stored_runs(results) -> list[dict]:
    """Model, method, seconds per epoch, epochs (and the cap on them) and extras seconds of every finished run
    in ``results``."""
    rows = []
    for hist_path in sorted(Path(results).glob("*/history.json")):
        run = hist_path.parent
        hist = store.read_json(hist_path)
        if not hist.get("finished") or not hist.get("epochs") or not (run / "config.json").exists():
            continue
        if hist.get("trained_in"):  # another evaluation of a stored run's model: its training is counted there
            continue
        cfg = store.read_json(run / "config.json")
        strong = [store.read_json(p).get("seconds", 0.0) for p in run.glob("robustness-*.json")]
        curves = [store.read_json(p).get("seconds") or 0.0 for p in run.glob("eps_curve-*.json")]
        cams = [t for t in map(gradcam.stored_seconds, run.glob("gradcam-*.npz")) if t is not None]
        rows.append({"model": cfg["model"], "method": cfg["method"]["name"], "epochs": len(hist["epochs"]),
                     "cap": cfg["train"]["epochs"],
                     # A compiled or captured run's first epoch also compiled: the median leaves it out.
                     "s_per_epoch": (statistics.median if hist.get("compile_mode") else statistics.fmean)(
                         e["seconds"] for e in hist["epochs"]),
                     "eval_s": hist.get("eval_seconds"),
                     "extras_s": max(strong) + sum(curves) if strong else None, "cam_s": max(cams, default=None),
                     "sharing": hist.get("sharing"),
                     "mode": hist.get("compile_mode")})
    return rows


def _benchmarks_by_mode(results) -> dict[tuple, dict[str | None, list[dict]]]:
    """The throughput benchmarks stored in ``results``: ``{(card, CNN): {speed mode (None: eager): rows}}``."""
    out: dict[tuple, dict[str | None, list[dict]]] = {}
    for row in store.benchmark_rows(results, "throughput"):
        out.setdefault((row.get("card"), row["model"]), {}).setdefault(row.get("compile") or None, []).append(row)
    return out


def mode_speedups(results) -> dict[tuple[str | None, str | None], float]:
    """How many times faster the library's path trains in one speed mode than in another, from the
    throughput benchmarks stored in ``results`` (benchmarks/train_throughput.py, ``--compile MODE``;
    None is eager): for each pair of modes that one card measured on one CNN, the ratio of their
    images/s in one process and, where both measured it, of several processes sharing the card (the
    grid's way), the smaller of the two (the longer estimate: a card that several eager processes already
    keep busier gains less); the median over cards and CNNs. ``{(from, to): factor}``, both ways."""
    ratios: dict[tuple[str | None, str | None], list[float]] = {}
    for modes in _benchmarks_by_mode(results).values():
        rate = {m: {k: statistics.median(r[k] for r in rows if k in r) for k in ("library_img_s", "concurrent_img_s")
                    if any(k in r for r in rows)} for m, rows in modes.items()}
        for a in rate:
            for b in rate:
                both = [rate[b][k] / rate[a][k] for k in rate[a].keys() & rate[b].keys()]
                if a != b and both:
                    ratios.setdefault((a, b), []).append(min(both))  # the longer estimate either way
    return {pair: statistics.median(v) for pair, v in ratios.items()}


def mode_warmup_s(results, mode: str | None) -> float:
    """Seconds a run's first batches take in ``mode`` beyond eager's (compiling, capturing), from the
    throughput benchmarks stored in ``results`` (``library_warmup_s``, empty compile cache): the median over
    the card and CNN pairs that measured both; for a torch.compile mode none measured (AMAT's mode without
    CUDA graphs), that of the torch.compile modes that were; 0 for eager or where nothing was measured. A
    last call starts a run only if it ends in time, and on the H200 compiling ResNet34's AT took 57 s."""
    from .training import COMPILE_MODES

    if mode is None:
        return 0.0
    warm = [{m: statistics.median(t) for m, rows in modes.items()
             for t in [[r["library_warmup_s"] for r in rows if "library_warmup_s" in r]] if t}
            for modes in _benchmarks_by_mode(results).values()]

    def extra(modes) -> list[float]:
        return [max(w[m] - w[None], 0.0) for w in warm if None in w for m in modes if m in w]

    found = extra([mode]) or (extra(COMPILE_MODES) if mode in COMPILE_MODES else [])
    return statistics.median(found) if found else 0.0


def _share_factor(then: int | None, now: int | None) -> float:
    """How much longer a run takes with ``now`` processes on the device than it took with ``then``.

    A card's total throughput grows about as the square root of the processes sharing it (the H200
    benchmark: 4 processes together ran x1.4 to x2.2 one), so one run's time grows as sqrt(processes).
    1 when either count is unknown."""
    return (now / then) ** 0.5 if then and now else 1.0


def record_sharing(results, run_id: str, sharing: int) -> None:
    """Note in a run's history how many processes shared the device while it trained (for estimates)."""
    path = store.RunDir(results, run_id) / "history.json"
    store.write_json(path, {**store.read_json(path), "sharing": int(sharing)})


def _method_cost(results, method: str) -> float | None:
    """The method's cost relative to STD measured by benchmarks/train_throughput.py into ``results``
    (median over its files and CNNs), None if not measured. D-A and D-B cost what DPAAT does."""
    method = "dpaat" if method in ("d-a", "d-b") else method
    ratios = [row["relative_to_std"] for row in store.benchmark_rows(results, "method_cost")
              if row.get("method") == method]
    return statistics.median(ratios) if ratios else None


def estimate_seconds(config: RunConfig, results, sharing: int | None = None,
                     compile_mode: str | None = None, *, _warmup: bool = True) -> float | None:
    """Expected seconds to train ``config`` and compute its extras, from the finished runs in ``results``
    (on the hardware they ran on), with ``sharing`` processes on the device (stored runs that recorded
    theirs are scaled by :func:`_share_factor`); for a model with no stored run, the estimates of the
    models that have one scaled by their benchmarked speeds (:func:`_from_other_models`); None when
    neither is possible.

    Seconds per epoch: the median of the stored runs of the same model and method; else the model's
    STD runs times the method's cost relative to STD as benchmarked into ``results``, or without a
    benchmark 1 + the attack's steps (the forward-backward passes of one adversarial batch).
    Epochs: :func:`expected_epochs` (the stored runs of the same method, else the cap). Evaluation: the
    slowest stored evaluation of the model (runs stored before it was timed count 0). Extras: the slowest
    stored stronger evaluation of the model (else of any model) with its run's eps curves where they were
    timed, plus a fifth (for the curves where they were not, Grad-CAM where no run of the model has a timed
    one, and a margin); for the methods of chapter 8 (:data:`gradcam.FIGURE_METHODS`), the slowest timed
    Grad-CAM of the model's stored runs (only the figure models have one). A run whose model is stored
    under other evaluation attacks (:func:`dpaat_lib.experiment.trained_twin`) trains nothing: evaluation
    and extras only.

    ``compile_mode``: the speed mode the run will train in (``--compile``). A stored run trained in
    another mode has its seconds per epoch divided by how much faster the new mode trains
    (:func:`mode_speedups`, where the store holds a benchmark of both; else unchanged): so the first
    call that trains through CUDA graphs does not judge its runs by the eager ones' epochs; the mode's
    warm-up is added once (:func:`mode_warmup_s`), unscaled by the sharing (compiling runs on the host's
    cores, one per process, not on the shared card). Evaluation and extras run eagerly in every mode.
    """
    from .training import effective_mode

    rows = _stored_runs(results)
    mode, speedups = effective_mode(compile_mode, config.method.name), mode_speedups(results)
    for r in rows:
        f = _share_factor(r["sharing"], sharing)
        r["s_per_epoch"] *= f / speedups.get((r["mode"], mode), 1.0)
        for key in ("extras_s", "eval_s", "cam_s"):
            r[key] = r[key] * f if r[key] else r[key]
    mine = [r for r in rows if r["model"] == config.model]
    evals = [r["eval_s"] for r in mine if r["eval_s"]]
    extras = [r["extras_s"] for r in mine if r["extras_s"]] or [r["extras_s"] for r in rows if r["extras_s"]]
    cams = [r["cam_s"] for r in mine if r["cam_s"]]
    evaluation = (max(evals) if evals else 0.0) + 1.2 * (max(extras) if extras else 0.0)
    if cams and config.method.name in gradcam.FIGURE_METHODS:
        evaluation += max(cams)
    if experiment.trained_twin(config, results) is not None:
        return evaluation
    warmup = mode_warmup_s(results, mode) if _warmup else 0.0
    if not mine:
        scaled = _from_other_models(config, results, sharing, {r["model"] for r in rows}, compile_mode)
        return None if scaled is None else scaled + warmup
    same = [r["s_per_epoch"] for r in mine if r["method"] == config.method.name]
    std = [r["s_per_epoch"] for r in mine if r["method"] == "std"]
    if same:
        spe = statistics.median(same)
    elif std:
        name = config.method.name
        cost = 1.0 if name == "std" else (_method_cost(results, name) or 1 + config.method.attack.steps)
        spe = statistics.median(std) * cost
    else:
        return None
    return spe * expected_epochs(config, rows) + evaluation + warmup


def remaining_seconds(config: RunConfig, results, sharing: int | None = None,
                      compile_mode: str | None = None) -> float | None:
    """:func:`estimate_seconds` less what the run's stored epochs took, where an unfinished run resumes
    from them (a warm machine's second call; at least a fifth of the estimate: its evaluation and extras
    remain); None where there is no estimate. What ``--finish-by`` and ``--workers-for`` judge a run by."""
    from .training import effective_mode

    est = estimate_seconds(config, results, sharing, compile_mode)
    run = store.RunDir(results, config.run_id)
    history = store.read_json(run / "history.json") if (run / "history.json").exists() else {}
    if (est is None or history.get("finished") or not history.get("epochs")  # a finished run trains again whole
            or not (run.ckpt / "last.pt").exists()):  # nothing to resume from: it trains whole
        return est
    # The stored epochs' seconds include the first call's compiling; the resuming process compiles again.
    warmup = mode_warmup_s(results, effective_mode(compile_mode, config.method.name))
    return max(est - sum(e["seconds"] for e in history["epochs"]) + warmup, 0.2 * est)


def expected_epochs(config: RunConfig, rows: list[dict]) -> float:
    """How many epochs a run of ``config`` is expected to train, from the stored runs ``rows``
    (:func:`_stored_runs`) with the same epoch cap: the median of those of its model and method; else the
    most that its method's runs of other models trained; else the cap itself.

    Early stopping ends STD runs far sooner than adversarial ones (cpu-real's 60-epoch runs of chapter 12:
    STD 7 to 18 epochs, AT 35 to 49, DPAAT 26 to 34), so the epochs of another method's runs would make an
    adversarial run look two or three times shorter than it is, and ``--finish-by`` would start it in a
    call it cannot finish (a lent machine's checkpoints do not outlive it). The cap is the bound early
    stopping can only shorten."""
    cap = config.train.epochs
    method = [r for r in rows if r["method"] == config.method.name and r["cap"] == cap]
    mine = [r["epochs"] for r in method if r["model"] == config.model]
    if mine:
        return statistics.median(mine)
    return max((r["epochs"] for r in method), default=cap)


def _from_other_models(config: RunConfig, results, sharing: int | None, stored: set[str],
                       compile_mode: str | None = None) -> float | None:
    """The estimate for ``config`` on each model with stored runs, times how much slower ``config.model``
    trained than that model in the benchmarks stored in ``results`` (library path, not compiled; the
    median over files): the median over those models, or None where a speed is missing. So the first run
    of a model (DenseNet121's STD on a fresh grid) is not started blind by ``--finish-by``."""
    speeds: dict[str, list[float]] = {}
    for row in store.benchmark_rows(results, "throughput"):
        if not row.get("compile"):
            speeds.setdefault(row["model"], []).append(row["library_img_s"])
    speed = {m: statistics.median(v) for m, v in speeds.items()}
    if config.model not in speed:
        return None
    scaled = [est * speed[m] / speed[config.model] for m in sorted(stored & speed.keys())
              for est in [estimate_seconds(dataclasses.replace(config, model=m), results, sharing, compile_mode,
                                           _warmup=False)]  # added once, not scaled by the CNNs' speeds
              if est is not None]
    return statistics.median(scaled) if scaled else None


def workers_for(estimates: list[float], estimated_at: int, window_s: float,
                choices: tuple[int, ...] = (8, 4, 2, 1)) -> tuple[int, dict[int, float]]:
    """How many processes should share the device in a call that leaves each run ``window_s`` seconds, for
    the runs left with these ``estimates`` (seconds at ``estimated_at`` processes, :func:`estimate_seconds`).

    A lent machine's checkpoints do not outlive it, so only a run that finishes within the call counts.
    For each count k of ``choices``, the runs are scaled to k processes (:func:`_share_factor`) and
    packed shortest first into k lanes of ``window_s``; the work done is the packed runs' seconds alone
    on the device. Fewer processes make each run faster, so runs too long for a full card can fit; more
    processes do more at once. Returns the count that does the most work (ties: more processes) and the
    work of each count."""
    work = {}
    for k in choices:
        lanes = [0.0] * k
        work[k] = 0.0
        for est in sorted(e * _share_factor(estimated_at, k) for e in estimates):
            lane = min(range(k), key=lanes.__getitem__)
            if lanes[lane] + est <= window_s:
                lanes[lane] += est
                work[k] += est * _share_factor(k, 1)
    return max(choices, key=lambda k: (work[k], k)), work


def supersede(results, run_id: str) -> Path:
    """Move a run's folder to ``<results>/superseded/<run_id>``, so the run is trained again from scratch.
    One copy is kept per run: a run superseded twice replaces its older copy there (the only thing deleted).
    Returns the new place."""
    dest = Path(results) / "superseded" / run_id
    if dest.exists():
        shutil.rmtree(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.move(str(Path(results) / run_id), dest)
    return dest


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


def _will_not_finish(claim_dir, run_id: str) -> bool:
    """Whether run ``run_id`` will not finish in this call (its AMAT run then stops waiting for it): it failed,
    --finish-by left it unstarted and no process claimed it, or the process that claimed it has ended."""
    d = Path(claim_dir)
    if (d / f"{run_id}.failed").exists():
        return True
    if not (d / run_id).exists():
        return (d / f"{run_id}.skipped").exists()
    return _process_ended(d / run_id)


def claimed_by_ended_processes(configs: list[RunConfig], results, claim_dir) -> list[str]:
    """The runs of ``configs`` left unfinished under a claim in ``claim_dir`` whose process has ended (killed,
    or stopped by its time budget): no process of that claim folder takes them again (a claim is never
    released), so the call that finds them must say so."""
    return [c.run_id for c in ordered(configs) if (Path(claim_dir) / c.run_id).exists()
            and experiment.load_result(c, results) is None and _process_ended(Path(claim_dir) / c.run_id)]


def _process_ended(claim_file: Path) -> bool:
    try:
        pid = int(claim_file.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return False  # claimed this instant: its process id is being written
    try:
        os.kill(pid, 0)  # signal 0: only asks whether the process exists (all of a call's run on one machine)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def run_claimed(configs: list[RunConfig], *, results, claim_dir, time_budget_s: float | None = None, log=print,
                after_run: Callable[[experiment.RunResult], None] | None = None, poll_s: float = 5.0,
                finish_by_s: float | None = None, redo: Callable[[RunConfig], str | None] | None = None,
                sharing: int | None = None, **kw) -> dict[str, experiment.RunResult]:
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

    ``finish_by_s``: start a run only if :func:`estimate_seconds` (less what its stored epochs took)
    says it ends within that many seconds of the start; the others are left for a later call (for the
    last call on a lent GPU, whose unfinished runs are lost with the machine). Of a model with no
    stored run to estimate from, only the STD run starts. ``redo(config)``: for a
    finished run, a reason to train it again (e.g. its extras were lost with its checkpoint) or None;
    the claiming process then moves it aside (:func:`supersede`) and trains it. ``sharing``: how many
    processes share the device (recorded in the history of each run trained here; scales estimates).
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
                if _will_not_finish(claim_dir, c.std_counterpart().run_id):
                    log(f"{c.run_id}: skipped, its STD run failed, was not started or lost its process")
                else:
                    waiting.append(c)  # its STD run is another process's, still training
                continue
            finished = experiment.load_result(c, results)
            reason = redo(c) if (redo is not None and finished is not None) else None
            if (finished is None or reason) and finish_by_s is not None:
                est = remaining_seconds(c, results, sharing, kw.get("compile_mode"))
                room = finish_by_s - (time.perf_counter() - start)
                if est is None and c.method.name != "std":
                    # Nothing of this model is stored: its STD run, the cheapest, goes first and sets the pace.
                    log(f"{c.run_id}: not started, no stored run of {c.model} to estimate it from (--finish-by)")
                    continue
                if est is not None and est > room:
                    log(f"{c.run_id}: not started, expected {est:.0f}s > {room:.0f}s left (--finish-by)")
                    claim(claim_dir, f"{c.run_id}.skipped")  # an AMAT run waiting for it stops waiting
                    continue
            if not claim(claim_dir, c.run_id):
                continue
            if reason:
                log(f"{c.run_id}: training it again ({reason}); the old folder is now {supersede(results, c.run_id)}")
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
            if sharing is not None and (finished is None or reason):  # trained by this call
                record_sharing(results, c.run_id, sharing)
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
