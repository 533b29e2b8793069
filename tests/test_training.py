"""End-to-end tests of dpaat_lib.training, experiment, grid and store (method.md sections 6 and 7).

Tiny runs on the synthetic stand-in in HAM10000 layout: smallcnn at 16 px,
12 training images per class (4 held out for validation), 4 test images per
class, 3 epochs, a 2-step training PGD and two cheap evaluation attacks. One
run takes about a second on one CPU thread.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import pickle
import re
import shutil
import subprocess
import sys
import time

from pathlib import Path

import pandas as pd
import pytest
import torch
from torch._dynamo.utils import counters

from dpaat_lib import data as D, experiment, grid, profiles, store, training
from dpaat_lib.attacks import AttackSpec
from dpaat_lib.config import RunConfig
from dpaat_lib.models import build_model

EVAL_ATTACKS = (AttackSpec("FGSM", "linf", 2 / 255, 2 / 255, 1, False),
                AttackSpec("2-PGD", "l2", 0.5, 0.15, 2, True))


def tiny_profile(**overrides) -> profiles.Profile:
    args = dict(source="ham10000", n_train=12, n_val=4, n_test=4, image_size=16, epochs=3, patience=3,
                train_steps=2, batch_size=8)
    return profiles.get_profile("quick", **{**args, **overrides})


def tiny_config(data, method="dpaat", seed=0, prof=None) -> RunConfig:
    cfg = profiles.run_config(prof or tiny_profile(), "smallcnn", method, seed, data)
    return dataclasses.replace(cfg, eval_attacks=EVAL_ATTACKS)


@pytest.fixture(scope="module")
def data(synthetic_root):
    """The tiny profile's DataConfig, its digest taken from the synthetic folder's content."""
    return experiment.resolve_data(profiles.data_config(tiny_profile()), synthetic_root)


@pytest.fixture(scope="module")
def run_kw(synthetic_root, cache_dir):
    return dict(data_root=synthetic_root, cache_dir=cache_dir, progress=False)


@pytest.fixture(scope="module")
def reference(tmp_path_factory, data, run_kw):
    """One uninterrupted DPAAT run: (config, results folder, RunResult)."""
    results = tmp_path_factory.mktemp("results_reference")
    cfg = tiny_config(data)
    return cfg, results, experiment.run(cfg, results=results, **run_kw)


def per_epoch(history: dict, key: str) -> list[float]:
    return [e[key] for e in history["epochs"]]


def assert_same_run(a: experiment.RunResult, b: experiment.RunResult):
    """Same history (timings aside), metrics and predictions."""
    assert len(a.history["epochs"]) == len(b.history["epochs"])
    for ea, eb in zip(a.history["epochs"], b.history["epochs"]):
        assert ea.keys() == eb.keys()
        for k in ea:
            if k == "seconds":
                continue
            if isinstance(ea[k], float):
                assert ea[k] == pytest.approx(eb[k], abs=1e-6), (ea["epoch"], k)
            else:
                assert ea[k] == eb[k], (ea["epoch"], k)
    assert a.history["best_epoch"] == b.history["best_epoch"]
    assert_close_nested(a.metrics, b.metrics)
    pd.testing.assert_frame_equal(a.predictions, b.predictions, atol=1e-6)


def assert_close_nested(a, b, where="metrics"):
    """Equal structure, floats equal to 1e-6 (metrics hold dicts, lists and confusion matrices)."""
    if isinstance(a, dict):
        assert isinstance(b, dict) and a.keys() == b.keys(), where
        for k in a:
            assert_close_nested(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, (list, tuple)):
        assert isinstance(b, (list, tuple)) and len(a) == len(b), where
        for i, (u, v) in enumerate(zip(a, b)):
            assert_close_nested(u, v, f"{where}[{i}]")
    elif isinstance(a, float):
        assert a == pytest.approx(b, abs=1e-6, nan_ok=True), where
    else:
        assert a == b, where


# --------------------------------------------------------------------------
# Training
# --------------------------------------------------------------------------


def test_dpaat_run_lowers_its_training_loss(reference):
    cfg, results, res = reference
    h = res.history
    assert h["finished"] and len(h["epochs"]) == 3
    losses = per_epoch(h, "train_loss")
    assert losses[-1] < losses[0], losses
    assert all(torch.isfinite(torch.tensor(losses)))
    # DPAAT's per-sample radii moved away from eps0 and stayed in [eps_min, eps_max].
    last = h["epochs"][-1]
    assert last["radius_std"] > 0
    assert 0.0 <= last["radius_min"] <= last["radius_max"] <= 2 * cfg.method.eps0
    assert 1 <= h["best_epoch"] <= 3
    # select_on (val_loss by default) keeps the best epoch
    assert cfg.train.select_on == "val_loss"
    assert h["best"]["val_loss"] == pytest.approx(min(per_epoch(h, "val_loss")), abs=1e-6)
    # The result is complete: metrics for clean and each attack, one prediction row per test image.
    assert set(res.metrics["RAcc"]) == {a.name for a in EVAL_ATTACKS}
    assert len(res.predictions) == 3 * cfg.data.n_test
    assert 0.0 <= res.metrics["GAcc"] <= 1.0


def test_select_on_val_acc_keeps_the_most_accurate_epoch_not_the_lowest_loss(tmp_path, data, run_kw, monkeypatch):
    """``select_on="val_acc"``: the kept checkpoint and ``best_epoch`` follow validation accuracy, here made
    to disagree with the loss (accuracy best at epoch 2, loss lowest at epoch 4)."""
    cfg = tiny_config(data, method="std", prof=tiny_profile(epochs=4, patience=4))
    cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, select_on="val_acc"))
    measured, real = training.validation_stats, []
    made_up = {"val_acc": [0.5, 0.9, 0.6, 0.7], "val_loss": [1.0, 0.9, 0.8, 0.7]}

    def disagreeing(*args, **kwargs):
        stats = measured(*args, **kwargs)
        real.append(stats)
        k = len(real) - 1
        return stats if k >= 4 else {**stats, **{key: values[k] for key, values in made_up.items()}}

    monkeypatch.setattr(training, "validation_stats", disagreeing)
    res = experiment.run(cfg, results=tmp_path, **run_kw)
    assert res.history["select_on"] == "val_acc" and res.history["best_epoch"] == 2
    assert len(real) == 5, "four epochs, then the kept checkpoint validated once more"
    assert res.history["best"] == real[1], "best.pt holds epoch 2's weights"


def test_a_runs_average_precision_comes_from_its_scores_before_rounding(reference, run_kw):
    """metrics.json's mAP is that of the unrounded scores; the stored file holds them rounded to 6 decimals
    (rounding ties a confident model's smallest scores, and average precision depends on their order)."""
    from dpaat_lib.evaluation import evaluate, round_scores
    from dpaat_lib.metrics import mean_average_precision

    cfg, results, result = reference
    _, tensors = experiment.load_data(cfg.data, run_kw["data_root"], run_kw["cache_dir"])
    model = training.load_trained(cfg, store.RunDir(results, cfg.run_id))
    exact = evaluate(model, tensors["test"], cfg.eval_attacks, cfg.data.classes, seed=cfg.train.seed, digits=None)
    assert result.metrics["mAP"] == mean_average_precision(exact, cfg.data.classes)
    stored = result.predictions
    pd.testing.assert_frame_equal(stored, round_scores(exact), check_dtype=False)
    assert not stored.equals(exact)  # the rounding is real


def test_resume_after_time_budget_equals_uninterrupted_run(tmp_path, reference, run_kw, capsys):
    cfg, _, uninterrupted = reference
    results = tmp_path / "results"
    # A zero budget stops after the first epoch; the run is resumable, not done.
    assert experiment.run(cfg, results=results, time_budget_s=0, **run_kw) is None
    run_dir = store.RunDir(results, cfg.run_id)
    h = store.read_json(run_dir / "history.json")
    assert not h["finished"] and len(h["epochs"]) == 1
    assert (run_dir.ckpt / "last.pt").exists() and not run_dir.done
    assert experiment.load_result(cfg, results) is None
    # A second call continues from epoch 2 and finishes, and says so where it shows its progress.
    capsys.readouterr()
    resumed = experiment.run(cfg, results=results, **{**run_kw, "progress": True})
    assert f"{cfg.run_id}: resuming after epoch 1 of 3" in capsys.readouterr().out
    assert resumed is not None and resumed.history["finished"] and run_dir.done
    assert [e["epoch"] for e in resumed.history["epochs"]] == [1, 2, 3]
    assert per_epoch(resumed.history, "train_loss") == pytest.approx(
        per_epoch(uninterrupted.history, "train_loss"), abs=1e-6)
    assert_same_run(resumed, uninterrupted)


def test_a_resumed_run_draws_the_dropout_masks_of_the_uninterrupted_one(tmp_path, data, run_kw, monkeypatch):
    """MobileNetV2, SqueezeNet and Inception-v3 drop out, from torch's global generator: a resumed run restores it
    (last.pt), so its epochs after the break are those of the run that never stopped."""
    from torch import nn

    from dpaat_lib import models

    def dropping(n):
        return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Sequential(nn.Conv2d(8, 8, 3, padding=1)),
                             nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(0.5), nn.Linear(8, n))

    monkeypatch.setattr(models, "_REGISTRY", dict(models._REGISTRY))  # this test's registration only
    models.register_model("dropcnn", dropping, head="6", gradcam_layer="2", min_size=8)
    cfg = dataclasses.replace(tiny_config(data, method="at"), model="dropcnn")
    whole = experiment.run(cfg, results=tmp_path / "whole", **run_kw)
    assert experiment.run(cfg, results=tmp_path / "cut", time_budget_s=0, **run_kw) is None  # stops after epoch 1
    resumed = experiment.run(cfg, results=tmp_path / "cut", **run_kw)
    assert len(resumed.history["epochs"]) == len(whole.history["epochs"]) > 1
    assert per_epoch(resumed.history, "train_loss") == per_epoch(whole.history, "train_loss")
    assert_same_run(resumed, whole)


def test_a_run_stopped_early_but_killed_before_its_history_said_so_trains_no_further(tmp_path, reference, run_kw,
                                                                                     monkeypatch):
    """last.pt is written before the finished history: a run that early stopping ended, killed in between,
    finishes on the next call without training past its stopping epoch."""
    cfg = tiny_config(reference[0].data, prof=tiny_profile(patience=1, epochs=6))
    calls = []
    measured = training.validation_stats

    def worse_each_epoch(*args, **kwargs):  # early stopping ends the run after epoch 2, whatever it learns
        stats = measured(*args, **kwargs)
        calls.append(1)
        return {**stats, "val_loss": stats["val_loss"] + 10.0 * len(calls)}

    monkeypatch.setattr(training, "validation_stats", worse_each_epoch)
    results = tmp_path / "results"
    done = experiment.run(cfg, results=results, **run_kw)
    epochs = len(done.history["epochs"])
    assert (epochs, done.history["best_epoch"]) == (2, 1), "patience 1 stops the run one epoch after its best"
    run = store.RunDir(results, cfg.run_id)
    store.write_json(run / "history.json", {"finished": False, "epochs": done.history["epochs"]})  # the kill
    (run / "done").unlink()
    again = experiment.run(cfg, results=results, **run_kw)
    assert again.history["finished"] and len(again.history["epochs"]) == epochs
    assert again.history["best_epoch"] == done.history["best_epoch"]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.usefixtures("deterministic_cuda")
@pytest.mark.parametrize("method", ["std", "dpaat"])
def test_resume_on_cuda_continues_the_run(tmp_path, data, run_kw, method):
    """On a GPU the checkpoint is mapped to the device; the generators' states must still restore
    (the first paper grid on an H200 failed here on every resumed run)."""
    cfg = tiny_config(data, method=method)
    kw = dict(run_kw, device="cuda")
    uninterrupted = experiment.run(cfg, results=tmp_path / "once", **kw)
    assert experiment.run(cfg, results=tmp_path / "twice", time_budget_s=0, **kw) is None
    resumed = experiment.run(cfg, results=tmp_path / "twice", **kw)
    assert resumed is not None and resumed.history["finished"]
    # Deterministic kernels: what the checkpoint missed (a generator, a table, Adam's state) shows at once.
    assert per_epoch(resumed.history, "train_loss") == pytest.approx(
        per_epoch(uninterrupted.history, "train_loss"), abs=1e-6)


def test_compiled_training_matches_eager(tmp_path, reference, run_kw):
    """torch.compile is a speed option: the same run id, the same numbers up to float rounding, plain
    checkpoints (the eager model's keys, loadable without compiling)."""
    cfg, _, eager = reference
    compiled = experiment.run(cfg, results=tmp_path, compile_mode="default", **run_kw)
    assert compiled.run_id == eager.run_id and compiled.history["compile_mode"] == "default"
    assert per_epoch(compiled.history, "train_loss") == pytest.approx(per_epoch(eager.history, "train_loss"),
                                                                      abs=1e-4)
    assert compiled.metrics["GAcc"] == pytest.approx(eager.metrics["GAcc"], abs=0.02)
    best = torch.load(store.RunDir(tmp_path, cfg.run_id).ckpt / "best.pt", weights_only=True)
    assert not any(k.startswith("_orig_mod") for k in best)


def test_compiled_amat_matches_eager(tmp_path, data, run_kw):
    """AMAT attacks a sub-batch of varying size (the correctly classified images): the compiled model
    meets new shapes every batch and must still give the eager numbers."""
    cfg = tiny_config(data, method="amat")
    eager = experiment.run(cfg, results=tmp_path / "eager", **run_kw)
    compiled = experiment.run(cfg, results=tmp_path / "compiled", compile_mode="default", **run_kw)
    assert [e["train_attacked"] for e in compiled.history["epochs"]] == pytest.approx(
        [e["train_attacked"] for e in eager.history["epochs"]])
    assert per_epoch(compiled.history, "train_loss") == pytest.approx(per_epoch(eager.history, "train_loss"),
                                                                      abs=1e-4)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.usefixtures("deterministic_cuda")
@pytest.mark.parametrize("method", ["std", "at", "sat", "amat", "dpaat"])
def test_cuda_graphs_match_eager_on_a_gpu(tmp_path, data, run_kw, method):
    """compile_mode="reduce-overhead" (CUDA graphs) on a GPU: every method trains and gives the eager
    numbers up to float rounding (the attack's input gradients, eval and train modes, AMAT's shapes, and
    batches of 10, 10 and 4: the partial last batch runs eagerly between graph replays). AMAT trains
    compiled without CUDA graphs (training.effective_mode)."""
    cfg = tiny_config(data, method=method, prof=tiny_profile(batch_size=10))
    kw = dict(run_kw, device="cuda")
    eager = experiment.run(cfg, results=tmp_path / "eager", **kw)
    counters.clear()
    graphs = experiment.run(cfg, results=tmp_path / "graphs", compile_mode="reduce-overhead", **kw)
    assert graphs.history["finished"]
    assert graphs.history["compile_mode"] == training.effective_mode("reduce-overhead", method)
    # The graphs really ran: Inductor falls back to its compiled code without them where it cannot capture
    # (it logs why), which would pass the comparison below and leave the benchmark's speed unexplained.
    assert counters["inductor"]["cudagraph_skips"] == 0
    # Kernels differ (Triton's fusions vs cuDNN, in fp32), so the runs drift apart slowly; a wrong gradient
    # (a graph's output overwritten before it is read) shows at once and far beyond these bounds.
    got, want = per_epoch(graphs.history, "train_loss"), per_epoch(eager.history, "train_loss")
    assert got[0] == pytest.approx(want[0], abs=1e-3) and got == pytest.approx(want, abs=2e-2), (got, want)


def test_the_library_graph_mode_refuses_a_cpu_and_unknown_modes_are_named(tmp_path, data, run_kw):
    cfg = tiny_config(data, method="at")
    with pytest.raises(ValueError, match="needs a CUDA device"):
        experiment.run(cfg, results=tmp_path, compile_mode="cuda-graph", **run_kw)
    with pytest.raises(ValueError, match="unknown compile mode 'fast'"):
        experiment.run(cfg, results=tmp_path, compile_mode="fast", **run_kw)
    assert not list(tmp_path.glob("*/done"))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.usefixtures("deterministic_cuda")
@pytest.mark.parametrize("method", ["std", "at", "sat", "amat", "dpaat", "d-b"])
def test_the_library_cuda_graph_matches_eager_on_a_gpu(tmp_path, data, run_kw, method, monkeypatch):
    """compile_mode="cuda-graph" (training.CapturedStep) on a GPU: one warm-up batch, then every full batch
    of 10 replayed from the graph and the partial batch of 4 eager, over 3 epochs; the eager numbers up to
    float rounding (Adam's capturable update rounds differently). AMAT is not captured: it trains eagerly,
    the same run as without the mode."""
    monkeypatch.setattr(training.CapturedStep, "WARMUP", 1)
    cfg = tiny_config(data, method=method, prof=tiny_profile(batch_size=10))
    kw = dict(run_kw, device="cuda")
    eager = experiment.run(cfg, results=tmp_path / "eager", **kw)
    graphs = experiment.run(cfg, results=tmp_path / "graphs", compile_mode="cuda-graph", **kw)
    assert graphs.history["finished"]
    got, want = per_epoch(graphs.history, "train_loss"), per_epoch(eager.history, "train_loss")
    if method == "amat":
        assert "compile_mode" not in graphs.history and got == pytest.approx(want, abs=1e-6), (got, want)
        return
    assert graphs.history["compile_mode"] == "cuda-graph"
    # A replay that read a stale batch, missed the generators' draws or the log sums would be far off at once.
    assert got[0] == pytest.approx(want[0], abs=1e-3) and got == pytest.approx(want, abs=2e-2), (got, want)
    if method == "dpaat":
        radii = per_epoch(graphs.history, "radius_mean"), per_epoch(eager.history, "radius_mean")
        assert radii[0] == pytest.approx(radii[1], abs=2e-2), radii


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.usefixtures("deterministic_cuda")
def test_the_library_cuda_graph_resumes_a_run_on_a_gpu(tmp_path, data, run_kw, monkeypatch):
    """Adam's capturable state and the registered generators go through a checkpoint and back."""
    monkeypatch.setattr(training.CapturedStep, "WARMUP", 1)
    cfg = tiny_config(data, method="dpaat", prof=tiny_profile(batch_size=10))
    kw = dict(run_kw, device="cuda", compile_mode="cuda-graph")
    uninterrupted = experiment.run(cfg, results=tmp_path / "once", **kw)
    assert experiment.run(cfg, results=tmp_path / "twice", time_budget_s=0, **kw) is None
    resumed = experiment.run(cfg, results=tmp_path / "twice", **kw)
    assert per_epoch(resumed.history, "train_loss") == pytest.approx(
        per_epoch(uninterrupted.history, "train_loss"), abs=1e-5)


def test_no_epoch_is_started_that_would_end_past_the_time_budget(tmp_path, data, run_kw, monkeypatch):
    """A GPU call kills its workers a few seconds after their budget: an epoch running then is lost. With
    epochs of 10 s (a clock that moves only while an epoch trains) and 25 s of budget, the run stops after
    its second epoch (20 s + another 10 s would end past 25 s), not after the third (30 s)."""
    clock = [0.0]
    monkeypatch.setattr(training.time, "perf_counter", lambda: clock[0])
    train_epoch = training.train_epoch

    def ten_seconds(*a, **k):
        clock[0] += 10.0
        return train_epoch(*a, **k)

    monkeypatch.setattr(training, "train_epoch", ten_seconds)
    cfg = tiny_config(data, method="std", prof=tiny_profile(epochs=5, patience=5))
    assert experiment.run(cfg, results=tmp_path, time_budget_s=25, **run_kw) is None
    h = store.read_json(store.RunDir(tmp_path, cfg.run_id) / "history.json")
    assert [e["seconds"] for e in h["epochs"]] == [10.0, 10.0] and not h["finished"]
    # The budget runs from the call, not from the training loop: 20 s of loading the data leave room for one epoch.
    load_data = experiment.load_data

    def slow_load(*a, **k):
        clock[0] += 20.0
        return load_data(*a, **k)

    monkeypatch.setattr(experiment, "load_data", slow_load)
    assert experiment.run(cfg, results=tmp_path / "slow", time_budget_s=25, **run_kw) is None
    assert len(store.read_json(store.RunDir(tmp_path / "slow", cfg.run_id) / "history.json")["epochs"]) == 1


@pytest.mark.parametrize("mode, epochs", [(None, 1), ("default", 3)])
def test_a_compiled_runs_first_epoch_does_not_stop_it_early(tmp_path, data, run_kw, monkeypatch, mode, epochs):
    """The first epoch of a call in a compiled or captured mode also compiles (57 s for ResNet34 on an H200): it
    does not count as the length of the next. With a first epoch of 60 s, later ones of 10 s and 85 s of budget,
    an eager run stops after the first (60 + 60 > 85), a compiled one after the third (80 + 10 > 85)."""
    clock = [0.0]
    monkeypatch.setattr(training.time, "perf_counter", lambda: clock[0])
    monkeypatch.setattr(training, "compiled_for", lambda model, *a, **k: model)  # the mode, not its compile time
    train_epoch = training.train_epoch

    def timed(*a, **k):
        clock[0] += 60.0 if clock[0] == 0 else 10.0
        return train_epoch(*a, **k)

    monkeypatch.setattr(training, "train_epoch", timed)
    cfg = tiny_config(data, method="std", prof=tiny_profile(epochs=5, patience=5))
    assert experiment.run(cfg, results=tmp_path, time_budget_s=85, compile_mode=mode, **run_kw) is None
    h = store.read_json(store.RunDir(tmp_path, cfg.run_id) / "history.json")
    assert len(h["epochs"]) == epochs


def test_time_budget_resume_one_epoch_at_a_time(tmp_path, data, run_kw):
    cfg = tiny_config(data, method="std")
    results = tmp_path / "results"
    epochs = []
    for _ in range(3):
        r = experiment.run(cfg, results=results, time_budget_s=0, **run_kw)
        h = store.read_json(store.RunDir(results, cfg.run_id) / "history.json")
        epochs.append(len(h["epochs"]))
    assert epochs == [1, 2, 3]
    assert r is not None and r.history["finished"]  # the third epoch is the last: the run completes


def test_same_config_in_two_folders_is_identical(tmp_path, reference, run_kw):
    cfg, _, first = reference
    second = experiment.run(cfg, results=tmp_path / "elsewhere", **run_kw)
    assert_same_run(first, second)
    assert torch.equal(
        torch.tensor(second.predictions.filter(like="p_").to_numpy()),
        torch.tensor(first.predictions.filter(like="p_").to_numpy()))


def test_another_seed_gives_another_run(tmp_path, data, reference, run_kw):
    cfg, _, first = reference
    other_cfg = tiny_config(data, seed=1)
    assert other_cfg.run_id != cfg.run_id and other_cfg.run_id.startswith("smallcnn-dpaat-s1-")
    other = experiment.run(other_cfg, results=tmp_path, **run_kw)
    assert per_epoch(other.history, "train_loss") != pytest.approx(per_epoch(first.history, "train_loss"),
                                                                   abs=1e-6)


def test_second_call_loads_instead_of_training(monkeypatch, reference):
    cfg, results, first = reference
    run_dir = store.RunDir(results, cfg.run_id)
    files = sorted(p for p in run_dir.path.rglob("*") if p.is_file())
    stamps = {p: p.stat().st_mtime_ns for p in files}

    def forbidden(*args, **kwargs):
        raise AssertionError("a finished run must be loaded, not recomputed")

    for target in (training, experiment):
        monkeypatch.setattr(target, "train_run", forbidden)
    monkeypatch.setattr(experiment, "load_data", forbidden)
    monkeypatch.setattr(experiment, "evaluate", forbidden)
    again = experiment.run(cfg, results=results, data_root=None)  # no data needed either
    assert again.run_id == first.run_id and again.history == first.history and again.metrics == first.metrics
    pd.testing.assert_frame_equal(again.predictions, first.predictions)
    assert sorted(p for p in run_dir.path.rglob("*") if p.is_file()) == files
    assert {p: p.stat().st_mtime_ns for p in files} == stamps


def test_train_run_on_a_trained_folder_returns_its_history(reference, data, synthetic_root, cache_dir, monkeypatch):
    cfg, results, first = reference
    run_dir = store.RunDir(results, cfg.run_id)
    stamp = (run_dir.ckpt / "best.pt").stat().st_mtime_ns
    _, tensors = experiment.load_data(cfg.data, synthetic_root, cache_dir)

    def forbidden(*a, **k):
        raise AssertionError("a trained folder must not build or train a model")

    # Not a timing: on a busy machine a wall-clock bound fails for no fault of the code.
    monkeypatch.setattr(training, "build_model", forbidden)
    monkeypatch.setattr(training, "train_epoch", forbidden)
    h = training.train_run(cfg, tensors, run_dir, progress=False)
    assert h == first.history
    assert (run_dir.ckpt / "best.pt").stat().st_mtime_ns == stamp


def _at_another_linf_radius(cfg: RunConfig, eps: float = 8 / 255) -> RunConfig:
    attacks = tuple(dataclasses.replace(a, eps=eps, step_size=eps) if a.norm == "linf" else a
                    for a in cfg.eval_attacks)
    return dataclasses.replace(cfg, eval_attacks=attacks)


def test_another_evaluation_radius_evaluates_the_stored_model_and_trains_nothing(tmp_path, reference, run_kw,
                                                                               monkeypatch):
    """-p linf_eps 8/255 on a stored grid: a new run (its own id and folder) whose model is the stored run's,
    evaluated at the new radius; no epoch is trained, and the clean column is the stored run's."""
    cfg, reference_results, first = reference
    results = tmp_path / "results"
    shutil.copytree(reference_results / cfg.run_id, results / cfg.run_id)
    other = _at_another_linf_radius(cfg)
    assert other.run_id != cfg.run_id and other.training_identity() == cfg.training_identity()
    assert experiment.trained_twin(other, results).path.name == cfg.run_id

    def forbidden(*args, **kwargs):
        raise AssertionError("the model is stored: nothing may be trained")

    for target in (training, experiment):
        monkeypatch.setattr(target, "train_run", forbidden)
    res = experiment.run(other, results=results, **run_kw)
    assert res.history["trained_in"] == cfg.run_id
    assert res.history["epochs"] == first.history["epochs"] and res.history["best"] == first.history["best"]
    assert res.history["evaluated_on"]["device"] == "cpu" and res.history["eval_seconds"] >= 0
    own, twin = store.RunDir(results, other.run_id).ckpt / "best.pt", store.RunDir(results, cfg.run_id).ckpt / "best.pt"
    assert own.read_bytes() == twin.read_bytes()
    for column in ("pred_clean", "p_clean_mel", "pred_2-PGD", "p_2-PGD_nv"):
        pd.testing.assert_series_equal(res.predictions[column], first.predictions[column])
    assert json.loads((results / other.run_id / "config.json").read_text())["eval_attacks"][0]["eps"] == 8 / 255
    # The Linf column was measured again, at 8/255: the same model's probabilities under it moved further.
    moved = [(p.filter(like="p_FGSM_").to_numpy() - p.filter(like="p_clean_").to_numpy()) for p in (res.predictions,
                                                                                                    first.predictions)]
    assert abs(moved[0]).sum() > abs(moved[1]).sum()
    assert experiment.run(other, results=results, **run_kw).history == res.history  # loaded, not redone
    # A third radius may take the model from either: it names the run that trained it.
    third = _at_another_linf_radius(cfg, 4 / 255)
    assert experiment.run(third, results=results, **run_kw).history["trained_in"] == cfg.run_id


def test_adopting_a_stored_model_equals_training_it_again(tmp_path, reference, run_kw):
    """Training reads no evaluation attack, so the run trained anew under other evaluation attacks is the run
    that adopted the stored model: same epochs, checkpoint and predictions."""
    cfg, reference_results, first = reference
    other = _at_another_linf_radius(cfg)
    adopted = experiment.run(other, results=reference_results, **run_kw)
    trained = experiment.run(other, results=tmp_path / "fresh", **run_kw)
    assert "trained_in" in adopted.history and "trained_in" not in trained.history
    assert_same_run(adopted, trained)
    a = store.load_torch(store.RunDir(reference_results, other.run_id).ckpt / "best.pt")
    b = store.load_torch(store.RunDir(tmp_path / "fresh", other.run_id).ckpt / "best.pt")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("change", ["eps0", "seed", "no checkpoint", "unfinished", "own training begun",
                                    "own checkpoints only"])
def test_a_stored_model_is_adopted_only_when_it_is_this_runs_training(tmp_path, reference, data, change):
    """Another training radius or seed, a stored run without its checkpoint or its last epoch, or a run whose
    own training began: no twin (the run trains, or resumes, its own model)."""
    cfg, reference_results, _ = reference
    results = tmp_path / "results"
    shutil.copytree(reference_results / cfg.run_id, results / cfg.run_id)
    other = _at_another_linf_radius(cfg)
    twin = store.RunDir(results, cfg.run_id)
    if change == "eps0":
        other = _at_another_linf_radius(tiny_config(data, prof=tiny_profile(eps0=1.0)))
    elif change == "seed":
        other = _at_another_linf_radius(tiny_config(data, seed=1))
    elif change == "no checkpoint":
        shutil.rmtree(twin.ckpt)
    elif change == "unfinished":
        store.write_json(twin / "history.json", {**store.read_json(twin / "history.json"), "finished": False})
    elif change == "own training begun":
        store.write_json(store.RunDir(results, other.run_id) / "history.json", {"finished": False, "epochs": []})
    elif change == "own checkpoints only":  # killed in its first epoch, after its checkpoints, before its history
        own = store.RunDir(results, other.run_id).ckpt
        own.mkdir(parents=True)
        for name in ("best.pt", "last.pt"):
            shutil.copy(twin.ckpt / "best.pt", own / name)
    assert experiment.trained_twin(other, results) is None


def test_an_adoption_killed_before_its_history_is_finished_not_trained_again(tmp_path, reference, run_kw, monkeypatch):
    """A call killed between linking the stored model's checkpoint and writing the history leaves a kept
    checkpoint alone: the next call adopts the model (replacing whatever that file holds), and trains nothing."""
    cfg, reference_results, first = reference
    results = tmp_path / "results"
    shutil.copytree(reference_results / cfg.run_id, results / cfg.run_id)
    other = _at_another_linf_radius(cfg)
    own = store.RunDir(results, other.run_id).ckpt
    own.mkdir(parents=True)
    torch.manual_seed(5)
    store.save_torch(own / "best.pt", build_model("smallcnn", 3).state_dict())  # not the stored model
    assert experiment.trained_twin(other, results).path.name == cfg.run_id

    def forbidden(*args, **kwargs):
        raise AssertionError("the model is stored: nothing may be trained")

    monkeypatch.setattr(experiment, "train_run", forbidden)
    res = experiment.run(other, results=results, **run_kw)
    assert res.history["trained_in"] == cfg.run_id
    assert (own / "best.pt").read_bytes() == (store.RunDir(results, cfg.run_id).ckpt / "best.pt").read_bytes()
    pd.testing.assert_series_equal(res.predictions["pred_clean"], first.predictions["pred_clean"])


def test_the_plan_says_a_stored_model_is_only_evaluated(tmp_path, reference):
    from dpaat_lib import precompute

    cfg, reference_results, first = reference
    results = tmp_path / "results"
    shutil.copytree(reference_results / cfg.run_id, results / cfg.run_id)
    store.write_json(results / cfg.run_id / "history.json", {**first.history, "eval_seconds": 3.0})
    other = _at_another_linf_radius(cfg)
    plan = precompute.plan_table([other], results, tiny_profile())
    assert plan["state"].tolist() == [f"to evaluate (the model of {cfg.run_id})"]
    assert grid.estimate_seconds(other, results) == pytest.approx(3.0)  # its evaluation, no epoch
    assert grid.estimate_seconds(cfg, tmp_path / "empty") is None


def test_kept_model_is_the_best_epoch(reference, run_kw):
    cfg, results, res = reference
    run_dir = store.RunDir(results, cfg.run_id)
    model = training.load_trained(cfg, run_dir)
    assert not model.training
    _, tensors = experiment.load_data(cfg.data, run_kw["data_root"], run_kw["cache_dir"])
    stats = training.validation_stats(model, tensors["val"].x, tensors["val"].y, device="cpu")
    assert stats["val_acc"] == pytest.approx(res.history["best"]["val_acc"])
    assert stats["val_loss"] == pytest.approx(res.history["best"]["val_loss"], abs=1e-6)


# --------------------------------------------------------------------------
# Grid order and AMAT's threshold
# --------------------------------------------------------------------------


def test_ordered_puts_std_first_and_adds_amat_counterpart(data):
    prof = tiny_profile()
    amat, at, dpaat = (tiny_config(data, m) for m in ("amat", "at", "dpaat"))
    std = tiny_config(data, "std")
    order = grid.ordered([at, amat, dpaat])
    assert [c.method.name for c in order] == ["std", "at", "amat", "dpaat"]
    # The added STD run is the grid's own STD run (same id), so it is trained once.
    assert order[0].run_id == std.run_id == amat.std_counterpart().run_id
    order = grid.ordered([amat, std, amat, dpaat, std])
    assert [c.method.name for c in order] == ["std", "amat", "dpaat"]
    assert len({c.run_id for c in order}) == len(order)
    assert [c.method.name for c in grid.ordered([at, dpaat])] == ["at", "dpaat"]  # no AMAT: no STD added
    # Every STD run comes before every other run, whatever the order it was listed in.
    std1, amat1 = tiny_config(data, "std", seed=1), tiny_config(data, "amat", seed=1)
    order = grid.ordered([at, amat1, std1, amat])
    assert [(c.method.name, c.train.seed) for c in order] == [("std", 1), ("std", 0), ("at", 0), ("amat", 1),
                                                               ("amat", 0)]
    assert [c.method.name for c in grid.ordered([at, dpaat, std])] == ["std", "at", "dpaat"]
    full = grid.ordered(profiles.configs(prof, data))
    names = [c.method.name for c in full]
    assert names.index("std") < names.index("amat") and names.count("std") == 1


@pytest.mark.parametrize("override", [{"lam": 0.5}, {"mu": "epoch"}])
def test_one_std_run_per_grid_whatever_dpaat_options(data, override):
    prof = tiny_profile(**override)
    order = grid.ordered(profiles.configs(prof, data))
    assert [c.method.name for c in order].count("std") == 1


def test_amat_threshold_comes_from_the_std_run(tmp_path, data, run_kw):
    amat = tiny_config(data, "amat")
    std = amat.std_counterpart()
    logs = []
    done = grid.run_grid([amat], results=tmp_path, log=logs.append, **run_kw)
    assert list(done) == [std.run_id, amat.run_id]
    assert len(logs) == 2
    std_res = experiment.load_result(std, tmp_path)
    assert std_res is not None
    threshold = done[amat.run_id].metrics["amat_threshold"]
    assert threshold == pytest.approx(std_res.history["best"]["val_loss"], abs=1e-9)
    assert threshold > 0
    assert "amat_threshold" not in std_res.metrics
    # AMAT's per-sample radii stay in [0, 2 eps0].
    last = done[amat.run_id].history["epochs"][-1]
    assert 0.0 <= last["radius_min"] <= last["radius_max"] <= 2 * amat.method.eps0 + 1e-9
    # With z != 0 the threshold moves by z standard deviations of the STD model's validation CE.
    z = dataclasses.replace(amat, method=dataclasses.replace(amat.method, amat_z=1.0))
    assert experiment.amat_threshold(z, tmp_path, **run_kw) == pytest.approx(
        std_res.history["best"]["val_loss"] + std_res.history["best"]["val_ce_std"])


# --------------------------------------------------------------------------
# Identity of a run, store
# --------------------------------------------------------------------------


def test_run_id_does_not_depend_on_the_data_folder(tmp_path, synthetic_root, data):
    copy = shutil.copytree(synthetic_root, tmp_path / "somewhere" / "else")
    moved = experiment.resolve_data(profiles.data_config(tiny_profile()), copy)
    assert moved.digest == data.digest and moved.digest
    assert tiny_config(moved).run_id == tiny_config(data).run_id
    assert str(synthetic_root) not in json.dumps(tiny_config(data).to_dict())
    # Content does count: drop one image from the metadata and the digest changes.
    meta = pd.read_csv(copy / "HAM10000_metadata.csv")
    meta.iloc[1:].to_csv(copy / "HAM10000_metadata.csv", index=False)
    changed = experiment.resolve_data(profiles.data_config(tiny_profile()), copy)
    assert changed.digest != data.digest


def test_resolve_data_without_data_uses_stored_results(reference):
    cfg, results, _ = reference
    found = experiment.resolve_data(profiles.data_config(tiny_profile()), None, results=results)
    assert found.digest == cfg.data.digest


def test_resolve_data_names_the_subfolder_when_given_the_parent_of_a_copy(tmp_path, synthetic_root):
    """--data at the folder above a HAM10000 copy, with nothing stored: the error names the copy inside it."""
    (tmp_path / "datasets").mkdir()
    shutil.copytree(synthetic_root, tmp_path / "datasets" / "ham", ignore=shutil.ignore_patterns("*.jpg"))
    with pytest.raises(D.DataError, match=r"no HAM10000 metadata at .*datasets.*Did you mean .*datasets/ham\?"):
        experiment.resolve_data(profiles.data_config(tiny_profile()), tmp_path / "datasets", results=tmp_path / "r")


def test_run_needs_a_data_digest(tmp_path):
    cfg = RunConfig(model="smallcnn")
    with pytest.raises(ValueError, match="digest"):
        experiment.run(cfg, results=tmp_path)


def test_run_folder_is_complete_and_checkpoints_load_weights_only(reference):
    cfg, results, _ = reference
    run_dir = store.RunDir(results, cfg.run_id)
    for name in ("config.json", store.SPLIT, "history.json", "metrics.json", store.PREDICTIONS, "done"):
        assert (run_dir / name).is_file(), name
    assert not list(results.rglob("*.tmp")), "an atomic write left a temporary file behind"
    assert RunConfig.from_dict(store.read_json(run_dir / "config.json")) == cfg
    split = store.read_json(run_dir.split)
    assert {len(split[k]) for k in split} and not set(split["train"]) & set(split["test"])
    evaluated_on = store.read_json(run_dir / "history.json")["evaluated_on"]
    assert evaluated_on["device"] == "cpu" and evaluated_on["torch"] == torch.__version__
    assert isinstance(evaluated_on["torch_threads"], int) and evaluated_on["torch_threads"] >= 1
    # the kind of CPU: two kinds can round the same run differently even on one thread
    assert evaluated_on["cpu"] == profiles.cpu_kind() and torch.backends.cpu.get_cpu_capability() in evaluated_on["cpu"]
    assert "gpu" not in evaluated_on
    best = torch.load(run_dir.ckpt / "best.pt", weights_only=True)
    build_model("smallcnn").load_state_dict(best)
    last = torch.load(run_dir.ckpt / "last.pt", weights_only=True)
    assert {"model", "optimizer", "method", "state"} <= set(last)
    assert last["state"]["epoch"] == 3
    assert torch.equal(last["method"]["eps"].float(), last["method"]["eps"])


def test_a_run_another_process_computes_is_refused_until_that_process_ends(tmp_path, data, run_kw):
    """Two processes on one run would overwrite each other's checkpoints (one could evaluate the other's model
    as its own): the second is refused, naming the first; a killed holder leaves no lock, and the temporary
    files a killed writer left are removed."""
    cfg = tiny_config(data, method="std")
    run = store.RunDir(tmp_path, cfg.run_id)
    hold = ("import sys, time; from dpaat_lib import store\n"
            "with store.RunDir(sys.argv[1], sys.argv[2]).computing():\n    print('held', flush=True); time.sleep(120)")
    holder = subprocess.Popen([sys.executable, "-c", hold, str(tmp_path), cfg.run_id], stdout=subprocess.PIPE,
                              text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(store.RunBusy, match=rf"run {cfg.run_id} is being computed by another process "
                                                rf"\(process {holder.pid} on .*\).*wait for it to finish"):
            experiment.run(cfg, results=tmp_path, **run_kw)
        assert not run.path.exists()
    finally:
        holder.kill()
        holder.wait()
    run.path.mkdir(parents=True)  # nothing computed yet: the refused call wrote nothing in it
    (run / ".history.json.k1ll3d.tmp").write_text("half a file")
    res = experiment.run(cfg, results=tmp_path, **run_kw)
    assert res is not None and res.history["finished"] and not list(run.path.glob(".*.tmp"))


def test_atomic_writes_keep_the_old_file_on_failure(tmp_path):
    path = tmp_path / "a" / "x.json"
    store.write_json(path, {"v": 1})
    with pytest.raises(TypeError):
        store.write_json(path, {"v": 2, "bad": object()})  # json.dump fails half-way
    assert store.read_json(path) == {"v": 1}
    store.save_torch(tmp_path / "t.pt", {"w": torch.ones(2)})
    with pytest.raises((pickle.PicklingError, AttributeError)):  # as pickle names a lambda it cannot save
        store.save_torch(tmp_path / "t.pt", {"w": torch.zeros(2), "f": lambda: 0})  # lambdas do not pickle
    assert torch.equal(store.load_torch(tmp_path / "t.pt")["w"], torch.ones(2))
    store.write_csv(tmp_path / "p.csv", pd.DataFrame({"a": [1.0, 2.0]}))
    assert pd.read_csv(tmp_path / "p.csv")["a"].tolist() == [1.0, 2.0]
    leftovers = [p for p in tmp_path.rglob("*") if p.name.endswith(".tmp")]
    assert not leftovers, leftovers
    assert sorted(os.listdir(tmp_path / "a")) == ["x.json"]


@pytest.mark.parametrize("links", [True, False], ids=["hard-link", "copy"])
def test_link_or_copy_gives_the_bytes_and_keeps_an_existing_target(tmp_path, monkeypatch, links):
    """How a twin run adopts a checkpoint: a hard link, or an atomic copy where the file system has none."""
    source = tmp_path / "a" / "best.pt"
    store.save_torch(source, {"w": torch.arange(3.0)})
    if not links:
        def no_links(*args):
            raise OSError("links not allowed here")
        monkeypatch.setattr(os, "link", no_links)
    target = tmp_path / "b" / "ckpt" / "best.pt"
    store.link_or_copy(source, target)
    assert target.read_bytes() == source.read_bytes()
    assert (os.stat(target).st_ino == os.stat(source).st_ino) == links
    assert not [p for p in tmp_path.rglob("*.tmp")]
    store.save_torch(tmp_path / "c.pt", {"w": torch.zeros(1)})
    store.link_or_copy(tmp_path / "c.pt", target)  # an existing target is left as it is
    assert torch.equal(store.load_torch(target)["w"], torch.arange(3.0))


def test_random_flips_draw_each_flip_half_the_time_from_the_seed():
    """Each image flipped left-right and up-down independently with probability 1/2 (dermoscopy has no
    'up'): the four views about equally often, each image's pixels moved whole, the same seed the same flips."""
    x = torch.arange(4, dtype=torch.uint8).view(1, 1, 2, 2).repeat(400, 3, 1, 1)
    out = training.random_flips(x, torch.Generator().manual_seed(0))
    views = [x, x.flip(3), x.flip(2), x.flip(2).flip(3)]
    kind = [next(k for k, v in enumerate(views) if torch.equal(out[i], v[i])) for i in range(len(x))]
    counts = torch.bincount(torch.tensor(kind), minlength=4)
    assert ((counts > 70) & (counts < 130)).all(), counts  # 100 each expected; 70 is 3.5 standard deviations off
    assert torch.equal(out, training.random_flips(x, torch.Generator().manual_seed(0)))
    assert not torch.equal(out, training.random_flips(x, torch.Generator().manual_seed(1)))


@pytest.mark.parametrize("failure", [OSError(28, "No space left on device"),
                                     RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos")])
def test_a_write_that_fails_names_the_file_and_the_free_space_and_keeps_the_old_one(tmp_path, monkeypatch, failure):
    """A full disk (torch.save says so as a RuntimeError) or an unwritable folder: an OSError that names the file,
    the free space and what to do, which the command line prints as its error; the stored file is intact."""
    store.save_torch(tmp_path / "last.pt", {"w": torch.ones(2)})

    def full_disk(obj, f, *args, **kwargs):
        Path(f).write_bytes(b"part of a checkpoint")
        raise failure

    monkeypatch.setattr(torch, "save", full_disk)
    with pytest.raises(OSError, match=rf"could not write {re.escape(str(tmp_path / 'last.pt'))} \("
                                      rf"{type(failure).__name__}: .*\); \d+ MiB free on its file system\. Free "
                                      r"space or make the folder writable.*the next call continues from it"):
        store.save_torch(tmp_path / "last.pt", {"w": torch.zeros(2)})
    monkeypatch.undo()
    assert torch.equal(store.load_torch(tmp_path / "last.pt")["w"], torch.ones(2))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt"], "the temporary file is removed"


def test_gzipped_files_hold_the_plain_text_and_are_the_same_bytes_each_time(tmp_path):
    frame = pd.DataFrame({"image_id": ["a", "b"], "p": [1 / 3, 2.5e-7]})
    store.write_csv(tmp_path / "p.csv", frame)
    store.write_csv(tmp_path / "p.csv.gz", frame)
    packed = (tmp_path / "p.csv.gz").read_bytes()
    assert packed[:2] == b"\x1f\x8b" and store.read_text(tmp_path / "p.csv.gz") == (tmp_path / "p.csv").read_text()
    time.sleep(1.1)  # gzip's header would carry the time: the bytes must not depend on it
    store.write_csv(tmp_path / "p.csv.gz", frame)
    assert (tmp_path / "p.csv.gz").read_bytes() == packed
    pd.testing.assert_frame_equal(store.read_csv(tmp_path / "p.csv.gz"), store.read_csv(tmp_path / "p.csv"))
    store.write_json(tmp_path / "s.json.gz", {"test": ["x", "y"]})
    assert store.read_json(tmp_path / "s.json.gz") == {"test": ["x", "y"]}


def _as_older_store(results, run_id, to):
    """A copy of a run folder as versions before compression wrote it: plain predictions.csv and split.json."""
    folder = shutil.copytree(results / run_id, to / run_id, ignore=shutil.ignore_patterns("ckpt"))
    for name, legacy in store.LEGACY_NAMES.items():
        (folder / legacy).write_text(store.read_text(folder / name))
        (folder / name).unlink()
    return folder


def test_an_older_store_reads_as_it_is_and_compacts_to_the_same_files(tmp_path, reference):
    cfg, results, result = reference
    older = tmp_path / "older"
    folder = _as_older_store(results, cfg.run_id, older)
    assert store.RunDir(older, cfg.run_id).predictions.name == "predictions.csv"
    assert_same_run(experiment.load_result(cfg, older), result)

    assert store.compact_store(older)["folders"] == 1
    assert sorted(p.name for p in folder.iterdir() if "json" in p.name or "csv" in p.name) == sorted(
        p.name for p in (results / cfg.run_id).iterdir() if "json" in p.name or "csv" in p.name)
    for name in store.LEGACY_NAMES:  # byte for byte what this version writes itself
        assert (folder / name).read_bytes() == (results / cfg.run_id / name).read_bytes(), name
    assert_same_run(experiment.load_result(cfg, older), result)
    assert store.compact_store(older) == {"folders": 0, "bytes_before": 0, "bytes_after": 0}


def test_compacting_refuses_two_different_copies_and_a_missing_folder(tmp_path, reference, capsys):
    from dpaat_lib import cli

    cfg, results, _ = reference
    folder = _as_older_store(results, cfg.run_id, tmp_path)
    store.write_json(folder / store.SPLIT, {"test": ["another split"]})
    with pytest.raises(ValueError, match="both split.json and split.json.gz"):
        store.compact_run(folder)
    assert (folder / "split.json").exists(), "the plain copy must be kept when the two differ"
    with pytest.raises(FileNotFoundError, match="no results folder"):
        store.compact_store(tmp_path / "nowhere")
    assert cli.main(["compact-store", str(tmp_path / "nowhere")]) == 2
    assert "no results folder" in capsys.readouterr().err


def test_balanced_epoch_draws_set_the_epoch_length_and_keep_the_classes_even():
    y = torch.tensor([0] * 90 + [1] * 9 + [2] * 1)
    g = torch.Generator().manual_seed(0)
    order = training.epoch_order(y, g, "balanced", draws=3000)
    assert order.shape == (3000,) and order.max() < len(y)
    share = torch.bincount(y[order], minlength=3).float() / 3000
    assert torch.all((share - 1 / 3).abs() < 0.05), share
    assert training.epoch_order(y, g, "balanced").shape == (100,)  # default: the training-set size
    with pytest.raises(ValueError, match="epoch_draws"):
        dataclasses.replace(profiles.run_config(tiny_profile(), "smallcnn", "std", 0, None).train, epoch_draws=10)


def test_epoch_draws_leave_existing_run_ids_alone(data):
    cfg = tiny_config(data, "at")
    assert cfg.train.epoch_draws is None
    other = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, sampler="balanced", epoch_draws=50))
    assert other.run_id != cfg.run_id
    assert "epoch_draws" not in json.dumps(cfg.identity_dict())


CODE = '''"""A module ±."""
import math  # why


def f(a):  # on the line
    """What f does —
    over two lines."""  # a comment after it
    s = "# not a comment"
    return a; "kept: it shares its line"
'''


@pytest.mark.parametrize("edit, same", [
    (lambda s: s.replace("# why", "# another reason"), True),
    (lambda s: s.replace("over two lines", "over three lines"), True),
    (lambda s: s.replace("A module ±.", "A module, renamed."), True),
    (lambda s: s.replace("\n\n\n", "\n\n\n\n"), True),
    (lambda s: s.replace("# not a comment", "# not one"), False),
    (lambda s: s.replace("return a;", "return a + 1;"), False),
    (lambda s: s.replace('"kept: it shares its line"', '"changed"'), False),
])
def test_training_code_digest_ignores_prose_but_not_code(edit, same):
    # A benchmark is labelled "earlier" when the training path's code changed since it ran
    # (report._code_label); an edited comment or docstring must not do that, an edited statement must.
    assert (training.code_text(edit(CODE)) == training.code_text(CODE)) is same
    assert training.code_text(CODE).splitlines() == [
        "import math", "def f(a):", '    s = "# not a comment"', '    return a; "kept: it shares its line"']


@pytest.fixture
def restore_threads():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize("name, device, pinned", [("cpu-real", "cpu", 1), ("cpu-real-7", "cpu", 1),
                                                  ("cpu-real", "cuda", None), ("quick", "cpu", None),
                                                  ("paper", "cpu", None)])
def test_a_profile_whose_runs_are_committed_pins_the_cpu_threads(restore_threads, name, device, pinned):
    torch.set_num_threads(2)
    assert profiles.pin_cpu_threads(profiles.get_profile(name), device) == pinned
    assert torch.get_num_threads() == (pinned or 2)


def test_pinning_refuses_a_thread_count_below_one(restore_threads):
    with pytest.raises(ValueError, match="cpu_threads must be a whole number >= 1"):
        profiles.pin_cpu_threads(profiles.get_profile("cpu-real", cpu_threads=0))


def test_the_command_pins_the_profiles_threads_unless_told_and_then_warns(restore_threads, capsys):
    from dpaat_lib import cli

    results = str(Path(__file__).resolve().parents[1] / "results" / "cpu-real")
    plan = ["grid", "--profile", "cpu-real", "--plan", "--results", results, "--no-progress"]
    torch.set_num_threads(2)
    assert cli.main(plan) == 0
    assert torch.get_num_threads() == 1 and "note:" not in capsys.readouterr().err
    assert cli.main(plan + ["--threads", "2"]) == 0
    assert torch.get_num_threads() == 2
    assert "will not reproduce the store's" in capsys.readouterr().err


@pytest.mark.parametrize("method, device, noted", [("dpaat", "cpu", True), ("std", "cpu", False),
                                                   ("dpaat", "cuda", False)])
def test_the_command_notes_a_gpu_sized_run_about_to_train_on_the_cpu(capsys, tmp_path, monkeypatch, method, device,
                                                                    noted):
    """``dpaat train`` defaults to the paper profile and the CPU: a run it would train there (ResNet34 DPAAT,
    not stored) gets a note naming the way out before anything starts; a stored run (ResNet34 STD, loaded)
    or a GPU gets none. ``--time-budget 0`` stops before training."""
    from dpaat_lib import cli

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # a GPU, as far as the device check asks

    results = tmp_path / "paper"
    shutil.copytree(Path(__file__).resolve().parents[1] / "results" / "paper", results)
    rc = cli.main(["train", "--model", "resnet34", "--method", method, "--results", str(results), "--device", device,
                   "--time-budget", "0", "--no-progress"])
    err = capsys.readouterr().err
    assert ("is sized for a GPU (224 px" in err and "--device cuda" in err and "--profile cpu-real" in err) == noted
    assert rc == (0 if method == "std" else 3)  # the stored run loads; the other is not trained (budget 0)
    assert sorted(p.name for p in results.iterdir()) == sorted(
        p.name for p in (Path(__file__).resolve().parents[1] / "results" / "paper").iterdir())


def test_a_last_batch_of_one_image_joins_the_batch_before():
    """ResNet18 at 32 px: one image alone in train mode has one value per channel at layer4's BatchNorm, which
    it refuses; 33 images at batch 32 train as one batch of 33. Other remainders keep their own last batch."""
    from dpaat_lib.methods import MethodConfig, build_method

    torch.manual_seed(0)
    model = build_model("resnet18", 3)
    seen = []
    method = build_method(MethodConfig("std"), 34)
    loss = method.loss

    def recording(m, x, y, idx):
        seen.append(idx.shape[0])
        return loss(m, x, y, idx)

    method.loss = recording
    x = torch.randint(0, 256, (34, 3, 32, 32), dtype=torch.uint8)
    y = torch.randint(0, 3, (34,))
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    logs = training.train_epoch(model, method, opt, x, y, torch.randperm(33), batch_size=32)
    assert seen == [33] and math.isfinite(logs["loss"])
    seen.clear()
    training.train_epoch(model, method, opt, x, y, torch.randperm(34), batch_size=32)
    assert seen == [32, 2]
