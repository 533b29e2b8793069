"""The GPU grid's machinery, tested on CPU at a tiny size: cooperative workers (dpaat grid --claim),
the extras computed right after training (dpaat_lib.precompute) so that the book needs no checkpoint,
profile overrides from the command line, and the small stored Grad-CAM thumbnails."""
from __future__ import annotations

import dataclasses
import os
import re
import shutil
import subprocess
import sys
import threading

import numpy as np
import pytest
import torch

from dpaat_lib import cli, experiment, grid, gradcam, precompute, profiles, report, store, strong_report
from dpaat_lib.attacks import AttackSpec

EVAL_ATTACKS = (AttackSpec("20-IFGSM", "linf", 2 / 255, 0.5 / 255, 2, False),
                AttackSpec("20-PGD", "l2", 0.5, 0.15, 2, True))


def tiny_profile(**overrides) -> profiles.Profile:
    args = dict(source="ham10000", n_train=12, n_val=4, n_test=4, image_size=16, epochs=2, patience=3,
                train_steps=2, batch_size=8, strong_images=6, apgd_steps=2, square_queries=4)
    return profiles.get_profile("quick", **{**args, **overrides})


@pytest.fixture(scope="module")
def prof():
    return tiny_profile()


@pytest.fixture(scope="module")
def data(prof, synthetic_root):
    return experiment.resolve_data(profiles.data_config(prof), synthetic_root)


@pytest.fixture(scope="module")
def run_kw(synthetic_root, cache_dir):
    return dict(data_root=synthetic_root, cache_dir=cache_dir, progress=False)


def configs(prof, data, methods=("std", "at", "amat", "dpaat")):
    return [dataclasses.replace(profiles.run_config(prof, "smallcnn", m, 0, data), eval_attacks=EVAL_ATTACKS)
            for m in methods]


def test_a_claim_is_taken_once(tmp_path):
    assert grid.claim(tmp_path / "claims", "run-a")
    assert not grid.claim(tmp_path / "claims", "run-a")
    assert grid.claim(tmp_path / "claims", "run-b")


def test_two_workers_share_a_grid_each_run_trained_once(tmp_path, prof, data, run_kw):
    cfgs = configs(prof, data)
    outs, logs = [{}, {}], [[], []]

    def worker(k):
        outs[k] = grid.run_claimed(cfgs, results=tmp_path / "r", claim_dir=tmp_path / "claims",
                                   log=logs[k].append, poll_s=0.05, **run_kw)

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert set(outs[0]) | set(outs[1]) == {c.run_id for c in cfgs}
    assert not set(outs[0]) & set(outs[1]), "a run was trained by both workers"
    assert not any("FAILED" in line for lines in logs for line in lines), logs
    # AMAT ran after its STD run, whichever worker had it, and took its threshold from it.
    std = experiment.load_result(cfgs[0], tmp_path / "r")
    amat = experiment.load_result(cfgs[2], tmp_path / "r")
    assert amat.metrics["amat_threshold"] == pytest.approx(std.history["best"]["val_loss"], abs=1e-9)


def test_amat_is_skipped_when_its_std_run_failed(tmp_path, prof, data, run_kw):
    amat = configs(prof, data, ("amat",))[0]
    grid.claim(tmp_path / "claims", amat.std_counterpart().run_id)
    grid.claim(tmp_path / "claims", f"{amat.std_counterpart().run_id}.failed")
    logs = []
    done = grid.run_claimed([amat], results=tmp_path / "r", claim_dir=tmp_path / "claims", log=logs.append,
                            poll_s=0.01, **run_kw)
    assert done == {}
    assert any("its STD run failed" in line for line in logs)


def test_amat_stops_waiting_for_an_std_run_that_will_not_finish(tmp_path, prof, data, run_kw, monkeypatch):
    """An AMAT run waits for its STD run only while that run may still finish in this call: not when --finish-by
    left it unstarted (no process would ever train it), nor when the process that claimed it has ended. The time
    budget is only a guard here: without these rules the AMAT run waited until it was spent."""
    import subprocess
    import sys

    std, amat = configs(prof, data, ("std", "amat"))
    monkeypatch.setattr(grid, "estimate_seconds", lambda c, *a, **k: 1e6 if c.method.name == "std" else 1.0)
    logs = []
    done = grid.run_claimed([std, amat], results=tmp_path / "r", claim_dir=tmp_path / "c1", log=logs.append,
                            poll_s=0.01, finish_by_s=100, time_budget_s=60, **run_kw)
    assert done == {} and not any("time budget spent" in line for line in logs), logs
    assert any(f"{std.run_id}: not started" in line for line in logs)
    assert any(f"{amat.run_id}: skipped, its STD run failed, was not started or lost its process" in line
               for line in logs)
    ended = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    (tmp_path / "c2").mkdir()
    (tmp_path / "c2" / std.run_id).write_text(ended.stdout)  # claimed by a process that is gone
    logs.clear()
    assert grid.run_claimed([amat], results=tmp_path / "r", claim_dir=tmp_path / "c2", log=logs.append, poll_s=0.01,
                            time_budget_s=60, **run_kw) == {}
    assert any("skipped, its STD run" in line for line in logs) and not any("budget" in line for line in logs)
    (tmp_path / "c3").mkdir()
    (tmp_path / "c3" / std.run_id).write_text(f"{os.getpid()}\n")  # claimed by a live process: it waits
    logs.clear()
    assert grid.run_claimed([amat], results=tmp_path / "r", claim_dir=tmp_path / "c3", log=logs.append, poll_s=0.01,
                            time_budget_s=0.2, **run_kw) == {}
    assert any("time budget spent" in line for line in logs)


def test_a_spent_budget_starts_nothing(tmp_path, prof, data, run_kw):
    logs = []
    done = grid.run_claimed(configs(prof, data, ("std",)), results=tmp_path / "r", claim_dir=tmp_path / "c",
                            time_budget_s=0, log=logs.append, **run_kw)
    assert done == {} and not (tmp_path / "r").exists()
    assert "time budget spent" in logs[0]


def test_extras_let_the_book_load_everything_without_checkpoints(tmp_path, prof, data, run_kw, synthetic_root,
                                                                 cache_dir):
    """What the GPU workers do after each run (--extras), then the checkpoints are gone (a fresh machine):
    chapters 4, 8 and 11 still find every curve, Grad-CAM map and stronger evaluation."""
    results = tmp_path / "r"
    cfgs = configs(prof, data, ("std", "at", "dpaat", "d-a"))
    extras = []
    grid.run_claimed(cfgs, results=results, claim_dir=tmp_path / "c", log=lambda m: None,
                     after_run=lambda r: extras.append(precompute.run_extras(r, prof, results, synthetic_root,
                                                                             cache_dir=cache_dir)), **run_kw)
    assert extras[-1] == []  # D-A is shown by no chapter that needs a checkpoint
    # Each of STD, AT and DPAAT stores its Grad-CAM candidates itself: no run needs another's checkpoint.
    assert all(e == ["eps curve l2", "eps curve linf", "strong attacks", "Grad-CAM", precompute.WHOLE_TEST_SET]
               for e in extras[:3]), extras
    for c in cfgs:
        shutil.rmtree(results / c.run_id / "ckpt")
    main = [experiment.load_result(c, results) for c in cfgs[:3]]
    assert all(precompute.missing_extras(r, prof, results) == [] for r in main)
    for norm in ("l2", "linf"):
        assert len(report.eps_curves(main, results, norm=norm)) == 3
    evals, missing = strong_report.strong_evaluations(main, prof, results)
    assert len(evals) == 3 and missing == []
    frames, missing = strong_report.seed_worst_case(main, prof, results)
    assert len(frames) == 3 and missing == [] and all(len(f) == 4 * 3 for f in frames.values())  # every test image
    for n in (1, 2):  # chapter 8's figure and scores, at this tiny test set's size
        ids, _ = report.gradcam_selection(main, "smallcnn", n_per_class=n)
        cams = report.gradcam_results(main, "smallcnn", ids, results)
        assert set(cams) == {"STD", "AT", "DPAAT"} and all(c["image_ids"] == ids for c in cams.values())
    # What a lost extra looks like to the grid (--retrain-lost-extras): named, without computing anything.
    for p in (results / cfgs[0].run_id).glob("robustness-*.json"):
        p.unlink()
    assert precompute.missing_extras(main[0], prof, results) == ["strong attacks", precompute.WHOLE_TEST_SET]
    assert precompute.missing_extras(main[0], dataclasses.replace(prof, strong_all_seeds=False), results) == \
        ["strong attacks"]


@pytest.mark.parametrize("method", ["std", "dpaat"])
def test_eps_curve_reads_the_runs_own_points_and_equals_attacking_every_radius(tmp_path, prof, data, run_kw, method):
    """The curve takes radius 0 and the attack's own radius from the stored predictions instead of attacking
    again: the stored curve must equal one attacked at every radius (same model, seed and batches)."""
    from dpaat_lib.evaluation import robust_accuracy_curve
    from dpaat_lib.training import load_trained

    c = configs(prof, data, (method,))[0]
    r = experiment.run(c, results=tmp_path, **run_kw)
    _, tensors = experiment.load_data(c.data, run_kw["data_root"], run_kw["cache_dir"])
    model = load_trained(c, store.RunDir(tmp_path, c.run_id))
    for norm in ("linf", "l2"):
        curve = report.eps_curve(c, tmp_path, run_kw["data_root"], norm=norm, cache_dir=run_kw["cache_dir"])
        attack = report.curve_attack(c, norm)
        assert curve["from_predictions"] == [0.0, attack.eps] and curve["seconds"] >= 0
        every = robust_accuracy_curve(model, tensors["test"], attack, report.DEFAULT_EPS[norm], seed=c.train.seed)
        assert curve["acc"] == every
    # A predictions file of other images is not read: every radius is attacked.
    pred = r.predictions.iloc[::-1]
    store.write_csv(tmp_path / c.run_id / store.PREDICTIONS, pred)
    assert report._measured_points(store.RunDir(tmp_path, c.run_id), attack, tensors["test"]) == {}


def _fake_run(results, config, seconds: list[float], extras_s: float | None = None):
    """A finished run folder as the grid's estimate reads it (config, history, stronger evaluation)."""
    run = results / config.run_id
    store.write_json(run / "config.json", config.to_dict())
    store.write_json(run / "history.json", {"finished": True, "epochs": [{"seconds": s} for s in seconds]})
    if extras_s is not None:
        store.write_json(run / "robustness-0.json", {"seconds": extras_s})


def test_estimate_comes_from_stored_runs_of_the_model(tmp_path, data):
    std, at, dpaat = configs(tiny_profile(epochs=8), data, ("std", "at", "dpaat"))
    assert grid.estimate_seconds(at, tmp_path) is None  # nothing of this model is stored
    _fake_run(tmp_path, std, [2.0] * 4, extras_s=10.0)
    # AT from STD: 2 s/epoch x (1 + 2 attack steps) x the cap of 8 epochs (no AT run says how many it
    # trains: STD's 4 would not), plus 1.2 x the extras' 10 s
    assert grid.estimate_seconds(at, tmp_path) == pytest.approx(2 * 3 * 8 + 12)
    assert grid.estimate_seconds(std, tmp_path) == pytest.approx(2 * 4 + 12)
    _fake_run(tmp_path, at, [5.0] * 6)  # a stored AT run: its own speed and epochs
    assert grid.estimate_seconds(at, tmp_path) == pytest.approx(5 * 6 + 12)
    assert grid.estimate_seconds(dpaat, tmp_path) == pytest.approx(2 * 3 * 8 + 12)
    # A benchmark of the methods' cost in the store replaces the count of passes.
    store.write_json(tmp_path / "benchmark-cuda.json", {"method_cost": [{"method": "dpaat", "relative_to_std": 2.5}]})
    assert grid.estimate_seconds(dpaat, tmp_path) == pytest.approx(2 * 2.5 * 8 + 12)
    # Runs that recorded how many processes shared the device are scaled to the sharing asked about.
    grid.record_sharing(tmp_path, std.run_id, 4)
    grid.record_sharing(tmp_path, at.run_id, 4)
    assert grid.estimate_seconds(at, tmp_path, sharing=4) == pytest.approx(5 * 6 + 12)
    assert grid.estimate_seconds(at, tmp_path, sharing=1) == pytest.approx((5 * 6 + 12) / 2)
    assert grid.estimate_seconds(at, tmp_path) == pytest.approx(5 * 6 + 12)  # sharing unknown: as stored
    # Timed evaluations count once (the model's slowest); timed eps curves join their run's extras.
    hist = store.read_json(tmp_path / at.run_id / "history.json")
    store.write_json(tmp_path / at.run_id / "history.json", {**hist, "eval_seconds": 7.0})
    store.write_json(tmp_path / std.run_id / "eps_curve-l2-0.json", {"seconds": 3.0})
    store.write_json(tmp_path / std.run_id / "eps_curve-linf-0.json", {})  # stored before curves were timed
    assert grid.estimate_seconds(at, tmp_path) == pytest.approx(5 * 6 + 7 + 1.2 * 13)
    # A model with no stored run: the stored model's estimate, scaled by the benchmarked speeds (library path,
    # not compiled), so --finish-by does not start its first run blind.
    other = dataclasses.replace(at, model="resnet34")
    assert grid.estimate_seconds(other, tmp_path) is None  # no benchmark of its speed
    rows = [{"model": "smallcnn", "library_img_s": 400.0}, {"model": "resnet34", "library_img_s": 100.0},
            {"model": "resnet34", "library_img_s": 10.0, "compile": "reduce-overhead"}]
    store.write_json(tmp_path / "benchmark-cuda.json", {"throughput": rows, "method_cost": []})
    assert grid.estimate_seconds(other, tmp_path) == pytest.approx(4 * grid.estimate_seconds(at, tmp_path))
    assert grid.estimate_seconds(dataclasses.replace(at, model="densenet121"), tmp_path) is None


def test_estimate_adds_the_models_timed_grad_cam_for_the_figure_methods(tmp_path, data):
    """A figure model's STD, AT and DPAAT runs compute chapter 8's Grad-CAM after their other extras: a GPU call
    that left it out of the estimate started ResNet34's STD run 20 s short of it, and the run, packed without
    its maps and without its checkpoint, must be trained again. Where no run of the model timed one, the fifth
    added to the extras stands for it."""
    std, at, sat = configs(tiny_profile(epochs=8), data, ("std", "at", "sat"))
    _fake_run(tmp_path, std, [2.0] * 4, extras_s=10.0)
    before = {c.method.name: grid.estimate_seconds(c, tmp_path) for c in (std, at, sat)}
    np.savez(tmp_path / std.run_id / "gradcam-old.npz", image_ids=np.array(["a"]))  # stored before it was timed
    assert {c.method.name: grid.estimate_seconds(c, tmp_path) for c in (std, at, sat)} == before
    np.savez(tmp_path / std.run_id / "gradcam-0.npz", seconds=np.float64(25.0))
    after = {c.method.name: grid.estimate_seconds(c, tmp_path) for c in (std, at, sat)}
    assert after == pytest.approx({"std": before["std"] + 25, "at": before["at"] + 25, "sat": before["sat"]})
    grid.record_sharing(tmp_path, std.run_id, 4)  # scaled with the rest to the processes sharing the device
    assert grid.estimate_seconds(at, tmp_path, sharing=1) == pytest.approx(after["at"] / 2)


def test_a_resumed_run_is_judged_by_what_is_left_of_it(tmp_path, data):
    """A warm machine's second call continues the runs its first left: --finish-by and --workers-for (through
    the plan) count what is left of them, not their whole estimate, else the second call's choice of processes
    could leave them unfinished again."""
    std, at = configs(tiny_profile(epochs=8), data, ("std", "at"))
    _fake_run(tmp_path, std, [2.0] * 4, extras_s=10.0)
    whole = grid.estimate_seconds(at, tmp_path)
    assert whole == pytest.approx(2 * 3 * 8 + 12) and grid.remaining_seconds(at, tmp_path) == pytest.approx(whole)
    store.write_json(tmp_path / at.run_id / "history.json", {"finished": False, "epochs": [{"seconds": 5.0}] * 2})
    assert grid.remaining_seconds(at, tmp_path) == pytest.approx(whole)  # no checkpoint to resume from: whole
    (tmp_path / at.run_id / "ckpt").mkdir()
    (tmp_path / at.run_id / "ckpt" / "last.pt").write_bytes(b"")
    assert grid.remaining_seconds(at, tmp_path) == pytest.approx(whole - 10)
    # In a compiled mode the resuming process compiles again: its warm-up, counted in the stored epochs, is not
    # subtracted (the estimate itself counts one warm-up too).
    rows = [{"card": "H100", "model": "smallcnn", "library_img_s": 100.0, "library_warmup_s": 1.0},
            {"card": "H100", "model": "smallcnn", "library_img_s": 100.0, "library_warmup_s": 6.0,
             "compile": "reduce-overhead"}]
    store.write_json(tmp_path / "benchmark-cuda-graphs.json", {"throughput": rows})
    assert grid.remaining_seconds(at, tmp_path, compile_mode="reduce-overhead") == pytest.approx(whole + 5 - 10 + 5)
    assert grid.remaining_seconds(std, tmp_path) == pytest.approx(grid.estimate_seconds(std, tmp_path))  # finished
    store.write_json(tmp_path / at.run_id / "history.json", {"finished": False, "epochs": [{"seconds": 50.0}] * 2})
    assert grid.remaining_seconds(at, tmp_path) == pytest.approx(0.2 * whole)  # evaluation and extras remain


def test_expected_epochs_come_from_runs_of_the_same_method_and_cap(data):
    """Early stopping ends STD runs far sooner than adversarial ones, so an adversarial run is never judged by
    STD's epochs: its own method's runs (its model's median, else the most of any model), else the cap."""
    def row(model, method, epochs, cap=8):
        return {"model": model, "method": method, "epochs": epochs, "cap": cap}

    prof = tiny_profile(epochs=8)
    std, at, dpaat = configs(prof, data, ("std", "at", "dpaat"))
    rows = [row("smallcnn", "std", 3), row("smallcnn", "std", 5), row("smallcnn", "std", 4)]
    assert grid.expected_epochs(std, rows) == 4
    assert grid.expected_epochs(at, rows) == 8  # no AT run: the cap, not STD's 4
    rows += [row("resnet34", "at", 7), row("mobilenet_v2", "at", 5), row("smallcnn", "at", 2, cap=60)]
    assert grid.expected_epochs(at, rows) == 7  # other models' AT runs under this cap: the most of them
    rows += [row("smallcnn", "at", 6)]
    assert grid.expected_epochs(at, rows) == 6  # its own model's
    assert grid.expected_epochs(dpaat, rows) == 8
    long_at = configs(tiny_profile(epochs=60), data, ("at",))[0]
    assert grid.expected_epochs(long_at, rows) == 2  # only the runs under the same cap


def test_estimates_in_a_faster_mode_divide_the_stored_epochs_by_its_benchmarked_speedup(tmp_path, prof, data,
                                                                                       capsys):
    """A call that trains through a CUDA graph judges its runs by the eager runs' epochs divided by how much
    faster the check's benchmark found the graph on the same card (--finish-by, --workers-for, --plan);
    evaluation and extras stay eager, AMAT trains eagerly under the library's graph, and without a
    benchmark of the mode nothing changes."""
    std, at, amat = configs(prof, data, ("std", "at", "amat"))
    _fake_run(tmp_path, std, [2.0] * 4, extras_s=10.0)
    _fake_run(tmp_path, at, [6.0] * 4)
    eager = grid.estimate_seconds(at, tmp_path)
    assert eager == pytest.approx(6 * 4 + 12)
    assert grid.estimate_seconds(at, tmp_path, compile_mode="cuda-graph") == pytest.approx(eager)  # not measured
    rows = [{"card": "H100", "model": "smallcnn", "library_img_s": 100.0},
            {"card": "H100", "model": "smallcnn", "library_img_s": 300.0, "compile": "cuda-graph"},
            {"card": "H200", "model": "smallcnn", "library_img_s": 200.0}]  # another card: no pair
    store.write_json(tmp_path / "benchmark-cuda-captured.json", {"throughput": rows})
    assert grid.mode_speedups(tmp_path) == {(None, "cuda-graph"): 3.0, ("cuda-graph", None): pytest.approx(1 / 3)}
    # Where both measured several processes sharing the card (the grid's way), the smaller gain counts, each way.
    rows[0]["concurrent_img_s"], rows[1]["concurrent_img_s"] = 250.0, 500.0
    store.write_json(tmp_path / "benchmark-cuda-captured.json", {"throughput": rows})
    assert grid.mode_speedups(tmp_path) == {(None, "cuda-graph"): 2.0, ("cuda-graph", None): pytest.approx(1 / 3)}
    rows[0]["concurrent_img_s"], rows[1]["concurrent_img_s"] = 100.0, 1000.0
    store.write_json(tmp_path / "benchmark-cuda-captured.json", {"throughput": rows})
    assert grid.mode_speedups(tmp_path) == {(None, "cuda-graph"): 3.0, ("cuda-graph", None): pytest.approx(1 / 10)}
    for row in rows:
        row.pop("concurrent_img_s", None)
    store.write_json(tmp_path / "benchmark-cuda-captured.json", {"throughput": rows})
    assert grid.estimate_seconds(at, tmp_path, compile_mode="cuda-graph") == pytest.approx(6 / 3 * 4 + 12)
    assert grid.estimate_seconds(amat, tmp_path, compile_mode="cuda-graph") == pytest.approx(
        grid.estimate_seconds(amat, tmp_path))
    # A run stored from the graph, estimated for an eager call: three times its epochs.
    store.write_json(tmp_path / at.run_id / "history.json",
                     {"finished": True, "epochs": [{"seconds": 2.0}] * 4, "compile_mode": "cuda-graph"})
    assert grid.estimate_seconds(at, tmp_path) == pytest.approx(6 * 4 + 12)
    assert grid.estimate_seconds(at, tmp_path, compile_mode="cuda-graph") == pytest.approx(2 * 4 + 12)
    # A mode's warm-up (compiling, capturing) beyond eager's counts once per run, where the benchmark timed it;
    # AMAT's torch.compile mode without CUDA graphs, never benchmarked itself, takes the compiled modes' warm-up.
    rows = [{"card": "H100", "model": "smallcnn", "library_img_s": 100.0, "library_warmup_s": 1.0},
            {"card": "H100", "model": "smallcnn", "library_img_s": 300.0, "library_warmup_s": 31.0,
             "compile": "reduce-overhead"}]
    store.write_json(tmp_path / "benchmark-cuda-captured.json", {"throughput": rows})
    assert grid.mode_warmup_s(tmp_path, None) == 0 and grid.mode_warmup_s(tmp_path, "cuda-graph") == 0
    assert grid.mode_warmup_s(tmp_path, "reduce-overhead") == grid.mode_warmup_s(tmp_path, "default") == 30
    assert grid.estimate_seconds(at, tmp_path, compile_mode="reduce-overhead") == pytest.approx(
        2 * 4 + 12 + 30)  # the stored run's epochs (from the library's graph: no benchmark relates the two modes)
    assert grid.estimate_seconds(amat, tmp_path, compile_mode="reduce-overhead") == pytest.approx(
        grid.estimate_seconds(amat, tmp_path) + 30)
    # The plan prints the estimates of the mode asked for.
    assert cli.main(["grid", "--profile", "quick", "--book", "--results", str(tmp_path), "--plan",
                     "--compile", "cuda-graph", "--methods", "at"]) == 0
    assert capsys.readouterr().out.count("to train") >= 1


def test_workers_for_a_call_do_the_most_work_that_finishes(tmp_path, capsys):
    """A lent machine keeps no checkpoint: only runs that finish within the call count. Estimates at 8
    processes; a run alone on the card takes 1/sqrt(8) of the time (grid._share_factor)."""
    # Short runs: all fit at 8 processes, which does the most at once.
    k, work = grid.workers_for([100.0] * 10, 8, 500)
    assert k == 8 and work[8] == pytest.approx(1000 / 8 ** 0.5)
    # Runs of 1000 s at 8 processes fit no lane of 500 s; at 2 processes they take 500 s, alone 354 s.
    k, work = grid.workers_for([1000.0] * 4, 8, 500)
    assert work[8] == work[4] == 0 and k == 2 and work[2] == pytest.approx(2 * 1000 / 8 ** 0.5)
    # Shortest first, into the emptiest lane, only while the lane has room.
    k, work = grid.workers_for([100.0, 300.0, 300.0], 1, 500, choices=(1,))
    assert work[1] == pytest.approx(400)
    assert grid.workers_for([], 8, 500) == (8, {8: 0.0, 4: 0.0, 2: 0.0, 1: 0.0})
    # The command line device_grid.sh reads (WORKERS=auto): the count on the last line; nothing trained.
    assert cli.main(["grid", "--profile", "quick", "--book", "--results", str(tmp_path), "--workers-for", "60"]) == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert last == "8" and not any(tmp_path.iterdir())  # nothing stored: no estimate, nothing to pack


def test_finish_by_starts_only_runs_that_fit(tmp_path, prof, data, run_kw):
    std, at = configs(prof, data, ("std", "at"))
    results = tmp_path / "r"
    logs = []  # nothing of the model is stored: only its STD run may start, and it sets the pace
    done = grid.run_claimed([at], results=results, claim_dir=tmp_path / "c00", log=logs.append,
                            finish_by_s=1e6, **run_kw)
    assert done == {} and any("no stored run of smallcnn" in line for line in logs), logs
    grid.run_claimed([std], results=results, claim_dir=tmp_path / "c0", log=lambda m: None, **run_kw)
    logs = []
    done = grid.run_claimed([std, at], results=results, claim_dir=tmp_path / "c1", log=logs.append,
                            finish_by_s=1e-3, **run_kw)
    assert set(done) == {std.run_id}  # finished runs load whatever the time
    assert any(at.run_id in line and "not started" in line for line in logs), logs
    assert not (results / at.run_id).exists()
    done = grid.run_claimed([at], results=results, claim_dir=tmp_path / "c2", log=logs.append,
                            finish_by_s=1e6, sharing=3, **run_kw)
    assert set(done) == {at.run_id}
    assert store.read_json(results / at.run_id / "history.json")["sharing"] == 3  # trained here: recorded
    assert "sharing" not in store.read_json(results / std.run_id / "history.json")


def test_redo_trains_a_finished_run_again_and_keeps_the_old_folder(tmp_path, prof, data, run_kw):
    std = configs(prof, data, ("std",))[0]
    results = tmp_path / "r"
    first = grid.run_claimed([std], results=results, claim_dir=tmp_path / "c0", log=lambda m: None, **run_kw)
    logs = []
    again = grid.run_claimed([std], results=results, claim_dir=tmp_path / "c1", log=logs.append,
                             redo=lambda c: "its extras are missing", **run_kw)
    assert any("training it again (its extras are missing)" in line for line in logs), logs
    old = results / "superseded" / std.run_id
    assert (old / "done").exists() and (results / std.run_id / "done").exists()
    assert again[std.run_id].metrics == first[std.run_id].metrics  # seeded: the same run again (on a CPU)
    none = grid.run_claimed([std], results=results, claim_dir=tmp_path / "c2", log=logs.append,
                            redo=lambda c: None, **run_kw)
    assert none[std.run_id].history == again[std.run_id].history


def test_plan_says_what_each_run_lacks_without_training(tmp_path, prof, data, run_kw, synthetic_root, cache_dir):
    std, at, dpaat = configs(prof, data, ("std", "at", "dpaat"))
    std1 = dataclasses.replace(std, train=dataclasses.replace(std.train, seed=1))
    results = tmp_path / "r"
    grid.run_claimed([std, std1], results=results, claim_dir=tmp_path / "c", log=lambda m: None, **run_kw)
    plan = precompute.plan_table([std, std1, at, dpaat], results, prof, sharing=2).set_index("run")
    assert plan.loc[std.run_id, "state"] == ("extras missing: eps curve l2, eps curve linf, strong attacks, "
                                             "Grad-CAM, worst case on every test image")
    # a later seed needs only the every-seed suite (the profile's strong_all_seeds)
    assert plan.loc[std1.run_id, "state"] == "extras missing: worst case on every test image"
    assert precompute.run_extras(experiment.load_result(std1, results), prof, results, synthetic_root,
                                 cache_dir=cache_dir) == [precompute.WHOLE_TEST_SET]
    assert plan.loc[at.run_id, "state"] == "to train" and plan.loc[at.run_id, "expected s"].isdigit()
    precompute.run_extras(experiment.load_result(std, results), prof, results, synthetic_root, cache_dir=cache_dir)
    shutil.rmtree(results / std.run_id / "ckpt")
    plan = precompute.plan_table([std, at], results, prof).set_index("run")
    assert plan.loc[std.run_id, "state"] == "done" and not (results / at.run_id).exists()


@pytest.mark.parametrize("flags,message", [(["--finish-by", "60"], "add --claim"),
                                           (["--claim", "c", "--retrain-lost-extras"], "add --extras")])
def test_cli_grid_options_that_need_others(flags, message, capsys):
    assert cli.main(["grid", "--profile", "quick", *flags]) == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize("flags,message", [
    (["--epochs", "0"], "epochs must be a whole number >= 1, got 0"),
    (["--set", "batch_size=0"], "batch_size must be a whole number >= 1, got 0"),
    (["--set", "patience=0"], "patience must be a whole number >= 1, got 0"),
    (["--device", "gpu"], "unknown device 'gpu': use cpu, cuda or cuda:N"),
    (["--device", "cpu:5"], "device 'cpu:5': the CPU has no index; use cpu"),
    (["--set", "seeds=", "--plan"], "no runs selected"),
    (["--set", "train_steps=0", "--methods", "at"], "at trains on attacked images: its attack needs steps >= 1"),
])
def test_cli_refuses_values_that_cannot_run_before_anything_trains(tmp_path, flags, message, capsys):
    assert cli.main(["quick", "--results", str(tmp_path), "--no-progress", *flags]) == 2
    assert message in capsys.readouterr().err
    assert not any(p.name != ".locks" for p in tmp_path.iterdir())  # no half-written run folder


def test_cli_threads_must_be_positive(capsys):
    with pytest.raises(SystemExit):
        cli.main(["quick", "--threads", "0", "--plan"])
    assert "--threads must be >= 1, got 0" in capsys.readouterr().err


def test_cli_book_grid_honours_methods_and_names_the_models_given(tmp_path, capsys):
    assert cli.main(["grid", "--profile", "quick", "--book", "--methods", "std", "--plan", "--results",
                     str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "-std-" in out and not any(f"-{m}-" in out for m in ("at", "sat", "amat", "dpaat", "d-a", "d-b"))
    assert cli.main(["grid", "--profile", "quick", "--models", "resnet18", "--plan", "--results", str(tmp_path)]) == 0
    assert "models given: resnet18 (not the profile's)" in capsys.readouterr().out


def test_set_overrides_are_typed_as_the_profile_fields():
    over = cli._overrides(["eta=0.25", "mu=epoch", "seeds=0,1,2", "strong_images=none", "bf16=true",
                           "epochs=7", "models=resnet34,mobilenet_v2"])
    assert over == {"eta": 0.25, "mu": "epoch", "seeds": (0, 1, 2), "strong_images": None, "bf16": True,
                    "epochs": 7, "models": ("resnet34", "mobilenet_v2")}
    p = profiles.get_profile("paper", **over)
    assert p.eta == 0.25 and p.seeds == (0, 1, 2)
    for bad in ("etta=1", "eta"):
        with pytest.raises(ValueError, match="FIELD=VALUE"):
            cli._overrides([bad])
    # A radius may be written as a fraction (--set linf_eps=8/255); a division by zero is refused by field.
    assert cli._overrides(["linf_eps=8/255", "eps0=1/2"]) == {"linf_eps": pytest.approx(8 / 255), "eps0": 0.5}
    with pytest.raises(ValueError, match="field 'linf_eps' takes float; '8/0' is not one"):
        cli._overrides(["linf_eps=8/0"])


def test_book_configs_hold_the_main_grid_and_the_ablation(data):
    p = profiles.get_profile("paper")
    cfgs = profiles.book_configs(p, data)
    assert len(cfgs) == len({c.run_id for c in cfgs}) == 6 * 5 + 2 * 2
    assert {(c.model, c.method.name) for c in cfgs if c.method.name in ("d-a", "d-b")} == {
        (m, x) for m in ("resnet34", "mobilenet_v2") for x in ("d-a", "d-b")}


def test_cli_prepare_and_extras_run(tmp_path, synthetic_root, capsys):
    args = ["--profile", "quick", "--data", str(synthetic_root), "--results", str(tmp_path),
            "--set", "n_train=12", "--set", "n_val=4", "--set", "n_test=4", "--set", "image_size=16"]
    assert cli.main(["prepare", *args]) == 0
    assert "train: (24, 3, 16, 16)" in capsys.readouterr().out
    assert cli.main(["extras", *args]) == 0  # nothing trained yet: nothing to do, no error
    assert "extras: 0 of " in capsys.readouterr().out


def test_runs_claimed_by_an_ended_process_are_named_and_fail_the_call(tmp_path, synthetic_root, capsys):
    """A claim is never released: a run whose claiming process was killed stays unfinished for every process of
    that claim folder. The call says so and exits 3, instead of training nothing and exiting 0."""
    args = ["grid", "--profile", "quick", "--data", str(synthetic_root), "--results", str(tmp_path / "r"),
            "--models", "smallcnn", "--methods", "std", "--no-progress", "--set", "n_train=12", "--set", "n_val=4",
            "--set", "n_test=4", "--set", "image_size=16"]
    assert cli.main([*args, "--plan"]) == 0
    run_ids = sorted(set(re.findall(r"smallcnn-std-s\d+-[0-9a-f]{12}", capsys.readouterr().out)))
    ended = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    claims = tmp_path / "claims"
    claims.mkdir()
    for run_id in run_ids:
        (claims / run_id).write_text(ended.stdout)
    assert run_ids and cli.main([*args, "--claim", str(claims)]) == 3
    err = capsys.readouterr().err
    assert (f"{len(run_ids)} run(s) are unfinished and claimed in {claims} by processes that have ended "
            f"({', '.join(run_ids)})") in err and "with a new --claim folder" in err
    for run_id in run_ids:  # a live process (this one): still its runs, nothing to say, nothing trained here
        (claims / run_id).write_text(f"{os.getpid()}\n")
    assert cli.main([*args, "--claim", str(claims)]) == 0
    assert "processes that have ended" not in capsys.readouterr().err
    assert not list((tmp_path / "r").glob("smallcnn-*/done"))


@pytest.mark.parametrize("size,stored", [(224, 96), (32, 32)])
def test_stored_gradcam_thumbnails_are_small(size, stored):
    x = torch.randint(0, 256, (2, 3, size, size), dtype=torch.uint8)
    cam = torch.rand(2, size, size)
    masks = torch.rand(2, size, size) > 0.5
    out = gradcam._display(x, cam, masks)
    assert out["images"].shape == (2, stored, stored, 3) and out["images"].dtype == np.uint8
    assert out["cams"].shape == (2, stored, stored) and out["cams"].dtype == np.uint8
    assert out["masks"].shape == (2, stored, stored) and out["masks"].dtype == bool
    if size == stored:
        assert np.array_equal(out["images"], x.permute(0, 2, 3, 1).numpy())
    else:  # area averaging keeps the mean intensity
        assert abs(out["images"].astype(float).mean() - x.float().mean().item()) < 1.0
