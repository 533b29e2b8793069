"""The library's fast training path must not change the numbers (beyond bf16 noise on a GPU).

On CPU/float32, channels_last and the plain layout must give the same losses
and parameters; the benchmark script runs end to end at a tiny size.
"""
import importlib
import importlib.util
import json
import sys
from pathlib import Path

import pytest
import torch

from dpaat_lib.attacks import training_attack
from dpaat_lib.methods import MethodConfig, build_method
from dpaat_lib.models import build_model
from dpaat_lib.training import CapturedStep, captured_step_for, compiled_for, effective_mode, train_epoch

ROOT = Path(__file__).resolve().parents[1]


def _one_step(method_name: str, channels_last: bool, flips: bool):
    """One training step (the 16 images in one batch) with plain SGD: the step's difference between layouts is
    float rounding (measured: at most 1.2e-7 over every method, flips or none, four seeds). Over several steps
    it is not a fixed size: the next batch's attack takes each sample's gradient direction, which for a tiny
    gradient turns with rounding, and Adam's first steps move every weight by about lr whatever the gradient's
    size; two steps already differed by up to 3e-4 in some seeds."""
    torch.manual_seed(0)
    model = build_model("smallcnn")
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    gen = torch.Generator().manual_seed(1)
    method = build_method(MethodConfig(name=method_name, attack=training_attack(steps=2)), 16, generator=gen,
                          threshold=1.0)
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    x = torch.randint(0, 256, (16, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(2))
    y = torch.arange(16) % 3
    logs = train_epoch(model, method, opt, x, y, torch.arange(16), batch_size=16, flips=gen if flips else None,
                       channels_last=channels_last)
    return logs, [p.detach().clone() for p in model.parameters()]


@pytest.mark.parametrize("flips", [True, False], ids=["flips", "no-flips"])
@pytest.mark.parametrize("method_name", ["std", "at", "sat", "amat", "dpaat"])
def test_channels_last_matches_plain_layout(method_name, flips):
    logs_a, params_a = _one_step(method_name, False, flips)
    logs_b, params_b = _one_step(method_name, True, flips)
    assert logs_a.keys() == logs_b.keys()
    for k in logs_a:
        assert logs_a[k] == pytest.approx(logs_b[k], abs=1e-6), k
    rerun = max((a - b).abs().max().item() for a, b in zip(params_a, _one_step(method_name, False, flips)[1]))
    assert rerun == 0, "the plain layout is not deterministic: the comparison would mean nothing"
    for a, b in zip(params_a, params_b):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5)


def test_evaluation_benchmark_runs_both_ways_and_finds_the_same_predictions(capsys):
    spec = importlib.util.spec_from_file_location("evaluation_sharing",
                                                  ROOT / "benchmarks" / "evaluation_sharing.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    assert bench.main(["--size", "16", "--images", "6", "--repeats", "1"]) == 0
    row = capsys.readouterr().out.splitlines()[-1].split()
    assert row[0] == "smallcnn" and float(row[1]) > 0 and float(row[2]) > 0 and row[-1] == "yes"


def test_benchmark_script_runs_and_reports_a_ratio(tmp_path):
    spec = importlib.util.spec_from_file_location("train_throughput", ROOT / "benchmarks" / "train_throughput.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    rows = bench.main(["--device", "cpu", "--models", "smallcnn", "--size", "16", "--images", "48",
                       "--batch-size", "8", "--workers", "0", "--procs", "2", "--cost-model", "smallcnn",
                       "--repeats", "3", "--json", str(tmp_path / "benchmark-cpu.json")])
    assert len(rows) == 1 and rows[0]["ratio"] > 0 and rows[0]["paper_img_s"] > 0
    assert rows[0]["procs"] == 2 and rows[0]["concurrent_img_s"] > 0
    stored = json.loads((tmp_path / "benchmark-cpu.json").read_text())
    assert [c["method"] for c in stored["method_cost"]] == ["std", "at", "sat", "amat", "dpaat"]
    # STD is one forward-backward per batch, AT eight: on any hardware AT costs more.
    at = next(c for c in stored["method_cost"] if c["method"] == "at")
    assert at["relative_to_std"] > 1.5
    # Three interleaved rounds: the stored ratio is the median of the per-round ratios.
    assert len(at["relative_runs"]) == 3 and at["relative_to_std"] == sorted(at["relative_runs"])[1]
    assert len(rows[0]["ratio_runs"]) == 3 and rows[0]["ratio"] == sorted(rows[0]["ratio_runs"])[1]
    # The book's chapters 10 and 11 read the stored file from the results folder.
    from dpaat_lib import report
    cost = report.benchmark_cost(tmp_path)
    assert list(cost.columns) == ["STD", "AT", "SAT", "AMAT", "DPAAT"] and cost.iloc[0]["STD"] == "x1.00"
    speed = report.benchmark_throughput(tmp_path)
    assert "ratio (2 processes)" in speed.columns and len(speed) == 1
    assert rows[0]["warmup_batches"] == 2 and float(speed.iloc[0]["library warm-up s"]) > 0
    # Each row names the training code it timed: this checkout's, so "current" and no caveat.
    from dpaat_lib.training import training_code_digest
    assert {c["training_code"] for c in stored["method_cost"] + stored["throughput"]} == {training_code_digest()}
    assert list(speed["training code"]) == ["current"] and cost.index[0][2] == "current"
    assert "version" not in report.benchmark_findings(tmp_path)
    assert "median of 3 interleaved rounds" in report.benchmark_findings(tmp_path)
    # The kind of CPU is recorded and named: two kinds can time one code differently.
    from dpaat_lib.profiles import cpu_kind
    assert {c["host_cpu"] for c in stored["method_cost"] + stored["throughput"]} == {cpu_kind()}
    assert f"Host CPU: {cpu_kind()}." in report.benchmark_findings(tmp_path)
    assert rows[0]["card"] == f"CPU ({torch.get_num_threads()} thread{'s' * (torch.get_num_threads() > 1)})"
    assert report.benchmark_cost(tmp_path / "nothing") is None
    # The table shows the rounds' range beside the median.
    lo, hi = min(at["relative_runs"]), max(at["relative_runs"])
    assert cost.iloc[0]["AT"] == f"x{at['relative_to_std']:.2f} ({lo:.2f}-{hi:.2f})"
    with pytest.raises(SystemExit):
        bench.main(["--device", "cpu", "--models", "smallcnn", "--repeats", "0"])


def test_compile_time_benchmark_counts_the_graphs_each_way_compiles(tmp_path):
    """benchmarks/compile_time.py end to end (three child processes, about 40 s): with a partial last batch
    torch's own shape handling compiles STD's training graph twice, the library's once, and the warm run
    reuses the library's cache. Seconds are printed, never asserted."""
    spec = importlib.util.spec_from_file_location("compile_time", ROOT / "benchmarks" / "compile_time.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    out = tmp_path / "compile-time.json"
    assert bench.main(["--device", "cpu", "--methods", "std", "--size", "16", "--images", "12", "--batch-size", "8",
                       "--epochs", "1", "--json", str(out)]) == 0
    (row,) = json.loads(out.read_text())["compile_time"]
    assert (row["torch_graphs"], row["library_graphs"], row["warm_graphs"]) == (2, 1, 1)
    assert row["torch_s"] > 0 and row["cold_over_warm"] > 0 and row["card"].startswith("CPU")
    from dpaat_lib import report  # chapter 10's table of the stored file
    table = report.compile_time_table(tmp_path)
    assert table.loc[(row["card"], "smallcnn", "STD"), "graphs (torch, library)"] == "2, 1"
    assert report.compile_time_table(tmp_path / "nothing") is None


def _bench_rows(card, ratio, concurrent=None):
    row = {"model": "resnet34", "card": card, "size": 224, "images": 64, "paper_img_s": 100.0,
           "library_img_s": 100.0 * ratio, "ratio": ratio}
    if concurrent is not None:
        row.update(procs=4, concurrent_img_s=100.0 * concurrent, concurrent_ratio=concurrent)
    return {"throughput": [row], "method_cost": []}


def test_benchmark_findings_read_every_store_and_judge_the_goal_on_a_gpu(tmp_path):
    from dpaat_lib import report, store
    (tmp_path / "cpu-real").mkdir()
    (tmp_path / "paper").mkdir()
    (tmp_path / "cpu-real" / "benchmark-cpu.json").write_text(json.dumps(_bench_rows("CPU (1 threads)", 1.05)))
    (tmp_path / "paper" / "benchmark-cuda.json").write_text(json.dumps(_bench_rows("NVIDIA H200", 1.2, 3.4)))
    assert [p.parent.name for p in store.benchmark_paths(tmp_path)] == ["cpu-real", "paper"]
    assert len(report.benchmark_throughput(tmp_path)) == 2
    text = report.benchmark_findings(tmp_path)
    cpu, gpu = text.split("\n\n")
    assert "x1.05 the paper-style loop" in cpu and "goal" not in cpu
    assert "x1.20" in gpu and "4 library processes" in gpu and "x3.40" in gpu
    assert "reached for 1 of 1 CNNs (resnet34)" in gpu
    (tmp_path / "paper" / "benchmark-cuda.json").write_text(json.dumps(_bench_rows("NVIDIA H200", 1.2, 2.0)))
    assert "reached for 0 of 1 CNNs." in report.benchmark_findings(tmp_path)
    # A compiled library path (benchmarks/ --compile) is its own row and its own finding.
    graphs = _bench_rows("NVIDIA H200", 2.5, 3.1)
    graphs["throughput"][0]["compile"] = "reduce-overhead"
    (tmp_path / "paper" / "benchmark-cuda-graphs.json").write_text(json.dumps(graphs))
    table = report.benchmark_throughput(tmp_path)
    assert ("NVIDIA H200", "torch.compile reduce-overhead", "resnet34") in table.index and len(table) == 3
    found = report.benchmark_findings(tmp_path).split("\n\n")
    compiled = [f for f in found if "through torch.compile reduce-overhead" in f]
    assert len(found) == 3 and len(compiled) == 1 and "x2.50" in compiled[0]
    assert "reached for 1 of 1 CNNs (resnet34)" in compiled[0]
    captured = _bench_rows("NVIDIA H200", 4.0, 4.5)  # and the library's own graph (--compile cuda-graph)
    captured["throughput"][0]["compile"] = "cuda-graph"
    (tmp_path / "paper" / "benchmark-cuda-captured.json").write_text(json.dumps(captured))
    assert ("NVIDIA H200", "the library's CUDA graph", "resnet34") in report.benchmark_throughput(tmp_path).index
    assert any("through the library's CUDA graph in one process runs at x4.00" in f
               for f in report.benchmark_findings(tmp_path).split("\n\n"))
    (tmp_path / "paper" / "benchmark-cuda-captured.json").unlink()
    assert report.benchmark_findings(tmp_path / "nothing") == "No throughput benchmark is stored."
    # Rows stored without the training code's digest, or with another one, say so.
    assert set(table["training code"]) == {"unrecorded"}
    assert all("do not record which version of the training path" in f for f in found)
    graphs["throughput"][0]["training_code"] = "0123456789ab"
    (tmp_path / "paper" / "benchmark-cuda-graphs.json").write_text(json.dumps(graphs))
    assert "earlier (0123456789ab)" in set(report.benchmark_throughput(tmp_path)["training code"])
    compiled = [f for f in report.benchmark_findings(tmp_path).split("\n\n") if "torch.compile" in f][0]
    assert "timed an earlier version of the training path" in compiled
    # Two versions' eager rows of one CNN: one finding each, each of 1 CNN (the H200's resnet34 read "7 CNNs").
    again = _bench_rows("NVIDIA H200", 1.22, 2.56)
    again["throughput"][0]["training_code"] = "0123456789ab"
    (tmp_path / "paper" / "benchmark-cuda-eager.json").write_text(json.dumps(again))
    eager = [f for f in report.benchmark_findings(tmp_path).split("\n\n") if "NVIDIA H200 (1 CNN" in f
             and "through" not in f]
    assert len(eager) == 2 and sum("x1.22 the paper-style loop" in f for f in eager) == 1, eager
    assert sum("earlier version" in f for f in eager) == 1 and sum("do not record" in f for f in eager) == 1


# --------------------------------------------------------------------------
# Host syncs: a batch must not make the host wait for the device
# --------------------------------------------------------------------------

HOST_READS = ("item", "tolist", "cpu", "numpy", "nonzero", "__bool__", "__float__", "__int__")


def _epoch_of(batches: int, method_name: str, device="cpu"):
    """(model, method, optimiser, x, y, order) for one epoch of ``batches`` batches of 4 on ``device``."""
    torch.manual_seed(0)
    model = build_model("smallcnn").to(device)
    gen = torch.Generator(device=device).manual_seed(1)
    method = build_method(MethodConfig(name=method_name, attack=training_attack(steps=2)), 4 * batches,
                          generator=gen, threshold=5.0, device=device, check_values=False)  # as train_run
    opt = torch.optim.Adam(model.parameters(), lr=3e-4)
    x = torch.randint(0, 256, (4 * batches, 3, 16, 16), dtype=torch.uint8,
                      generator=torch.Generator().manual_seed(2)).to(device)
    y = (torch.arange(4 * batches) % 3).to(device)
    return model, method, opt, x, y, torch.arange(4 * batches, device=device), gen


def _host_reads(monkeypatch, batches: int, method_name: str) -> int:
    """How often the library's code reads a tensor's value on the host during one epoch (each one a
    device sync on a GPU). Reads inside torch are not counted: Adam reads its step counters, which
    live on the CPU whatever the device."""
    model, method, opt, x, y, order, gen = _epoch_of(batches, method_name)
    count = [0]
    for name in HOST_READS:
        original = getattr(torch.Tensor, name)

        def counted(self, *a, _original=original, **kw):
            caller = sys._getframe(1).f_code.co_filename
            count[0] += "dpaat_lib" in caller
            return _original(self, *a, **kw)
        monkeypatch.setattr(torch.Tensor, name, counted)
    train_epoch(model, method, opt, x, y, order, batch_size=4, flips=gen)
    monkeypatch.undo()
    return count[0]


@pytest.mark.parametrize("method_name", ["std", "at", "sat", "amat", "dpaat", "d-b"])
def test_batches_do_not_read_values_on_the_host(monkeypatch, method_name):
    """The reads of an epoch (its logs, once) do not grow with its batches; AMAT reads one per batch
    (the size of the sub-batch it attacks)."""
    extra = _host_reads(monkeypatch, 6, method_name) - _host_reads(monkeypatch, 2, method_name)
    assert extra == (4 if method_name == "amat" else 0), extra


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("method_name", ["std", "at", "sat", "amat", "dpaat"])
def test_batches_do_not_sync_a_cuda_device(method_name):
    """The same on a GPU, counted by CUDA's own sync detector (which also sees boolean indexing)."""
    import warnings

    def syncs(batches):
        model, method, opt, x, y, order, gen = _epoch_of(batches, method_name, "cuda")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                train_epoch(model, method, opt, x, y, order, batch_size=4, flips=gen)
        finally:
            torch.cuda.set_sync_debug_mode("default")
        return sum("synchroniz" in str(w.message) for w in caught)
    extra = syncs(6) - syncs(2)
    assert extra <= (4 * 2 if method_name == "amat" else 0), extra


def test_compiled_pair_is_two_forwards_with_batchnorm_apart():
    """CompiledNet.forward_pair (SAT's and DPAAT's clean and adversarial batches in one compiled graph)
    gives what two eager calls give, BatchNorm's running statistics included: each batch is
    normalised with its own statistics, not with those of both together."""
    import copy

    from dpaat_lib.training import CompiledNet

    torch.manual_seed(0)
    eager = build_model("smallcnn").train()
    net = CompiledNet(copy.deepcopy(eager), mode="default").train()
    assert len(list(net.parameters())) == len(list(eager.parameters()))  # compiled wrappers not registered
    a, b = torch.rand(8, 3, 16, 16), 0.5 * torch.rand(8, 3, 16, 16)
    want = (eager(a), eager(b))
    got = net.forward_pair(a, b)
    for w, g in zip(want, got):
        torch.testing.assert_close(g, w, atol=1e-5, rtol=1e-5)
    for k, v in eager.state_dict().items():
        torch.testing.assert_close(net.model.state_dict()[k], v, atol=1e-6, rtol=1e-5, msg=k)
    joint = copy.deepcopy(eager)(torch.cat([a, b]))  # one batch of both: other statistics
    assert not torch.allclose(joint[:8], want[0], atol=1e-3)


@pytest.mark.parametrize("method_name", ["at", "dpaat"])
def test_partial_last_batch_runs_eager_and_compiles_nothing_more(method_name):
    """CompiledNet(batch_size=B): an epoch of 8 + 8 + 4 images compiles the full batch's graphs once (AT: the
    attack's and the training step's; DPAAT: the attack's and the pair's) and runs the last batch eagerly,
    where torch alone would recompile them all with a dynamic batch size (benchmarks/compile_time.py).
    The numbers are the eager epoch's."""
    import copy

    from torch._dynamo.utils import counters

    from dpaat_lib.training import CompiledNet

    torch.manual_seed(0)
    tiny = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.ReLU(),
                               torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(4, 3))
    x = torch.randint(0, 256, (20, 3, 8, 8), dtype=torch.uint8, generator=torch.Generator().manual_seed(2))
    y = torch.arange(20) % 3

    def epoch(model, net):
        method = build_method(MethodConfig(name=method_name, attack=training_attack(steps=2)), 20,
                              generator=torch.Generator().manual_seed(1))
        assert not method.varying_batch
        opt = torch.optim.SGD(model.parameters(), lr=0.1)  # Adam's first steps would magnify rounding
        return train_epoch(net, method, opt, x, y, torch.arange(20), batch_size=8), model

    eager_logs, eager = epoch(*(2 * [copy.deepcopy(tiny)]))
    torch._dynamo.reset()  # graphs another test compiled for the same module code would be reused
    before = counters["stats"]["unique_graphs"]
    model = copy.deepcopy(tiny)
    logs, model = epoch(model, CompiledNet(model, "default", batch_size=8))
    assert counters["stats"]["unique_graphs"] - before == 2
    assert logs["loss"] == pytest.approx(eager_logs["loss"], abs=1e-4)
    for (k, v), w in zip(model.state_dict().items(), eager.state_dict().values()):
        torch.testing.assert_close(v, w, atol=1e-5, rtol=1e-4, msg=k)


class TracedStep(CapturedStep):
    """A closer CPU stand-in for a CUDA graph: capturing traces the step into its aten operations
    (``make_fx``, which runs them once as it traces, so that batch needs no replay), and a replay runs
    those operations alone, on the same tensors: no Python of the step runs again, as in a graph's
    replay. A step that keeps state in a Python number, or rebinds a tensor instead of updating it in
    place, replays its captured value and parts from the eager epochs."""

    def __init__(self, *args, **kw):
        super().__init__(*args, **kw)
        self.calls = []

    def _warm_up(self, step):
        self.calls.append("warm")
        step(self.idx)

    def _capture(self, step):
        from torch.fx.experimental.proxy_tensor import make_fx

        self.calls.append("capture")
        self.traced_batch = True
        return make_fx(step)(self.idx)

    def _replay(self):
        if self.traced_batch:
            self.traced_batch = False
            return
        self.calls.append("replay")
        with torch.no_grad():  # the traced graph holds the backward's operations itself
            self.graph(self.idx)


@pytest.mark.parametrize("method_name", ["std", "at", "sat", "dpaat", "d-a", "d-b"])
def test_replaying_only_the_steps_tensor_operations_gives_the_eager_epochs(method_name):
    """Two shuffled epochs of 4 + 4 + 4 + 4 + 2 images (the previous epoch's mu in the second) through
    TracedStep: 3 full batches warm up, the 4th is captured, every later full batch is replayed (4 of them),
    the partial batches run eagerly, and every replay in the second epoch is of the step captured in the
    first. Parameters, radii, batch logs and the epochs' logs equal the eager epochs bit for bit. With SGD:
    Adam reads its step count on the host unless capturable, which torch allows on a GPU only. (DPAAT's
    former Python counters and rebound sums fail this test.)"""
    x = torch.randint(0, 256, (18, 3, 16, 16), dtype=torch.uint8, generator=torch.Generator().manual_seed(2))
    y = torch.arange(18) % 3
    orders = [torch.randperm(18, generator=torch.Generator().manual_seed(e)) for e in range(2)]

    def two_epochs(captured):
        torch.manual_seed(0)
        model = build_model("smallcnn")
        gen = torch.Generator().manual_seed(1)
        method = build_method(MethodConfig(name=method_name, attack=training_attack(steps=2), mu="epoch"), 18,
                              generator=gen, check_values=False)
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        logs = [(train_epoch(model, method, opt, x, y, order, batch_size=4, flips=gen, captured=captured),
                 method.end_epoch()) for order in orders]
        return logs, model, method

    captured = TracedStep(4, "cpu")
    logs, model, method = two_epochs(captured)
    want_logs, want_model, want_method = two_epochs(None)
    assert captured.calls == 3 * ["warm"] + ["capture"] + 4 * ["replay"]
    assert logs == want_logs and logs[0] != logs[1]
    for a, b in zip(model.state_dict().values(), want_model.state_dict().values()):
        assert torch.equal(a, b)
    if method.radii() is not None:
        assert torch.equal(method.radii(), want_method.radii())


def test_a_captured_step_needs_its_logs_as_tensors():
    """A replay would add the captured number again every batch: a method logging a Python number fails
    at once under a captured step (and trains as before without one)."""
    model, method, opt, x, y, order, gen = _epoch_of(2, "std")
    plain = method.batch_loss
    method.batch_loss = lambda *a: (lambda loss, logs: (loss, {**logs, "count": 4}))(*plain(*a))
    assert train_epoch(model, method, opt, x, y, order, batch_size=4)["count"] == 4
    with pytest.raises(TypeError, match="'count' as a int.*every batch log as a tensor"):
        train_epoch(model, method, opt, x, y, order, batch_size=4, captured=TracedStep(4, "cpu"))


def test_the_library_graph_needs_cuda_and_leaves_amat_eager():
    amat = build_method(MethodConfig(name="amat"), 4, threshold=1.0)
    assert captured_step_for(None, amat, 32, "cpu") is None
    assert captured_step_for("reduce-overhead", amat, 32, "cpu") is None
    with pytest.raises(ValueError, match="cuda-graph.*needs a CUDA device"):
        captured_step_for("cuda-graph", build_method(MethodConfig(name="at"), 4), 32, "cpu")
    if torch.cuda.is_available():
        assert captured_step_for("cuda-graph", amat, 32, "cuda") is None  # trains eagerly
        with pytest.raises(ValueError, match="check_values=False"):
            captured_step_for("cuda-graph", build_method(MethodConfig(name="at"), 4), 32, "cuda")
        at = build_method(MethodConfig(name="at"), 4, check_values=False)
        assert isinstance(captured_step_for("cuda-graph", at, 32, "cuda"), CapturedStep)


@pytest.mark.parametrize("mode", ["default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"])
@pytest.mark.parametrize("name", ["at", "amat"])
def test_amat_is_compiled_without_cuda_graphs(monkeypatch, mode, name):
    """AMAT's clean forward precedes the attack that sizes its sub-batch: two compiled forwards of different
    sizes before one backward, whose CUDA graphs overwrote each other's saved tensors on an H200 (torch
    2.11). It is compiled in the same mode without CUDA graphs, and its history says so."""
    modes = []
    monkeypatch.setattr(torch, "compile", lambda module, mode=None, dynamic=None: modes.append(mode) or module)
    method = build_method(MethodConfig(name=name), 4, threshold=1.0 if name == "amat" else None)
    compiled_for(build_model("smallcnn", 3), mode, method, 32)
    want = {"reduce-overhead": "default", "max-autotune": "max-autotune-no-cudagraphs"}.get(mode, mode)
    assert modes == [want if name == "amat" else mode] * 2
    assert effective_mode(mode, name) == modes[0]
    assert effective_mode("cuda-graph", name) == (None if name == "amat" else "cuda-graph")
