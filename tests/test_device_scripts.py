"""scripts/device_grid.sh, the one call of a lent GPU, run end to end on the CPU at a tiny size: the
workers share the book grid, each call packs only what it wrote, and on a last call (FINAL=1) a
finished run whose extras were lost with its checkpoint is trained again. About a minute."""
from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest
import torch

from dpaat_lib import report
from dpaat_lib.training import training_code_digest

ROOT = Path(__file__).resolve().parents[1]
TINY = ("--set n_train=12 --set n_val=4 --set n_test=6 --set epochs=2 --set strong_images=6 "
        "--set apgd_steps=2 --set square_queries=4 --set train_steps=2")


def _grid_env(tmp_path, synthetic_root, out, **env):
    # LIMIT is far above the ~1 minute a call takes here: a call ends when its runs are done, and a slow or busy
    # machine (CI once took four times as long) must not stop it before all seven runs start.
    return {**os.environ, "OUT": str(out), "LIMIT": "900", "WORKERS": "2", "PROFILE": "quick", "DEVICE": "cpu",
            "MPS": "0", "RESULTS": str(tmp_path / "results"), "DATA": str(synthetic_root), "PY": sys.executable,
            "GRID_ARGS": TINY, "DPAAT_CACHE": str(tmp_path / "cache"), "PACK_EVERY": "3",
            # torch sets this in the process that compiles first (here, pytest): never the machine's own cache
            "TORCHINDUCTOR_CACHE_DIR": str(tmp_path / "inductor"), **env}


def _call(tmp_path, synthetic_root, out, **env):
    log = tmp_path / f"{out.name}.log"
    with log.open("w") as sink:  # a file, not a pipe: a process the call leaves behind must not hold it open
        done = subprocess.run(["bash", "scripts/device_grid.sh"], cwd=ROOT, stdout=sink, stderr=subprocess.STDOUT,
                              env=_grid_env(tmp_path, synthetic_root, out, **env), timeout=1000)
    text = log.read_text()
    assert done.returncode == 0, text[-6000:]
    return text


def _running(*argv: str) -> list[int]:
    """The processes whose command line is exactly ``argv`` (read from /proc)."""
    want = ("\0".join(argv) + "\0").encode()
    pids = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            if cmdline.read_bytes() == want:
                pids.append(int(cmdline.parent.name))
        except OSError:  # the process ended meanwhile
            pass
    return pids


def _members(out: Path, pattern: str = "results-quick-*[0-9].tgz") -> list[str]:
    (archive,) = out.glob(pattern)
    with tarfile.open(archive) as tar:
        return tar.getnames()


@pytest.mark.skipif(shutil.which("bash") is None or shutil.which("tar") is None, reason="needs bash and tar")
def test_device_grid_call_packs_what_it_wrote_and_retrains_lost_extras(tmp_path, synthetic_root):
    # A pack interval longer than the call: the packer is stopped while it naps, and its nap must end with it (a
    # sleep left running held the device tool's output open for up to PACK_EVERY seconds of the lent GPU).
    log = _call(tmp_path, synthetic_root, tmp_path / "out1", COMPILE="auto", DECISION=str(tmp_path / "none.txt"),
                PACK_EVERY="317")
    if Path("/proc/self/cmdline").exists():
        assert not _running("sleep", "317"), "the packer's sleep outlived the call"
    assert "COMPILE=auto: eager" in log  # no decision by device_check.sh on this machine: eager
    assert not list((tmp_path / "out1").glob("*partial*"))  # the final archive replaced the partial one
    assert not list((tmp_path / "results" / "logs").glob("call-*"))  # its line is in calls.jsonl instead
    first = _members(tmp_path / "out1")
    runs = {Path(m).parts[1] for m in first if m.endswith("/done")}
    assert len(runs) == 7  # smallcnn x STD, AT, SAT, AMAT, DPAAT, plus D-A and D-B
    assert not any("/ckpt/" in m for m in first) and any(m.startswith("results/logs/") for m in first)

    results = tmp_path / "results"
    std = next(r for r in runs if "-std-" in r)
    shutil.rmtree(results / std / "ckpt")  # as on a fresh machine: the checkpoint is gone ...
    for p in (results / std).glob("robustness-*.json"):  # ... and so is its stronger evaluation
        p.unlink()
    log = _call(tmp_path, synthetic_root, tmp_path / "out2", FINAL="1", WORKERS="auto", NEXT="240")
    # A second call will follow on the warm machine: runs may start that finish within it.
    found = re.search(r"expected to finish within (\d+)s \(this call's (\d+)s \+ (\d+)s of the next call's NEXT=240s\)",
                      log)
    within, this_call, next_call = map(int, found.groups())
    assert next_call == 240 - 65 and within == this_call + next_call  # less that call's preparation and last 25 s
    assert ("training it again (its strong attacks and worst case on every test image are missing and its "
            "checkpoint is gone)") in log
    assert (results / "superseded" / std / "done").exists()
    second = _members(tmp_path / "out2")
    # Only what the second call wrote: the retrained run and the logs, not the six runs left alone.
    assert {Path(m).parts[1] for m in second if m.endswith("/done")} == {std}
    assert any(Path(m).name.startswith("robustness-") for m in second)
    # Each call is on record for the grid's GPU time (chapter 10).
    calls = [json.loads(line) for line in (results / "calls.jsonl").read_text().splitlines()]
    assert [c["runs_trained"] for c in calls] == [7, 1] and [c["final"] for c in calls] == [0, 1]
    assert all(c["seconds"] > 0 and c["card"] == "cpu" for c in calls)
    # WORKERS=auto on a last call: the count `dpaat grid --workers-for` chose (one short run: a full card).
    assert calls[0]["workers"] == 2 and f"WORKERS=auto: {calls[1]['workers']}" in log and calls[1]["workers"] == 8
    assert "results/calls.jsonl" in second


@pytest.mark.skipif(shutil.which("bash") is None or shutil.which("tar") is None, reason="needs bash and tar")
def test_device_grid_call_stopped_early_brings_back_its_finished_runs(tmp_path, synthetic_root):
    """The device tool may stop a call before LIMIT (killing everything): the partial archive, packed every
    PACK_EVERY seconds, then holds the runs finished so far and the logs, and never a run still training."""
    out = tmp_path / "out"
    call = subprocess.Popen(["bash", "scripts/device_grid.sh"], cwd=ROOT, env=_grid_env(tmp_path, synthetic_root, out),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline, members = time.monotonic() + 600, []
    try:
        while not any(m.endswith("/done") for m in members) and call.poll() is None and time.monotonic() < deadline:
            time.sleep(1)
            if list(out.glob("*.partial.tgz")):  # replaced by a rename: never half-written
                members = _members(out, "*.partial.tgz")
    finally:
        os.killpg(call.pid, signal.SIGKILL)  # as the device tool stops a call: everything, at once
        call.wait()
    assert call.returncode == -signal.SIGKILL, "the call ended before a partial archive held a finished run"
    done = {Path(m).parts[1] for m in members if m.endswith("/done")}
    folders = {Path(m).parts[1] for m in members if len(Path(m).parts) > 2 and Path(m).parts[1] != "logs"}
    assert done and folders == done, (done, folders)
    assert any(m.startswith("results/logs/worker") for m in members) and not any("/ckpt/" in m for m in members)
    # The call's record so far, for chapter 10's GPU time: calls.jsonl never got its line.
    unpacked = tmp_path / "unpacked"
    with tarfile.open(next(out.glob("*.partial.tgz"))) as tar:
        tar.extractall(unpacked, filter="data")
    calls = report.grid_calls(unpacked / "results")
    assert len(calls) == 1 and calls["note"][0].startswith(report.STOPPED_EARLY) and calls["seconds"][0] > 0
    assert calls["workers"][0] == 2 and calls["card"][0] == "cpu"
    # The next call on the machine packs what the stopped one finished after its last partial pack (it trains
    # nothing for them again: they are done): between the two archives, every finished run comes back.
    finished = {p.parent.name for p in (tmp_path / "results").glob("*/done")}
    late = tmp_path / "results" / sorted(done)[0] / "written-after-the-last-partial-pack.json"
    late.write_text("{}")  # as an extra written after the last partial pack, before the kill
    _call(tmp_path, synthetic_root, tmp_path / "out2")
    members = _members(tmp_path / "out2")
    second = {Path(m).parts[1] for m in members if m.endswith("/done")}
    assert f"results/{late.parent.name}/{late.name}" in members
    assert finished - done <= second, (finished, done, second)
    assert done | second == {p.parent.name for p in (tmp_path / "results").glob("*/done")}


def test_unpack_results_replaces_each_run_folder_an_archive_holds(tmp_path):
    """A run trained again on the GPU must not keep its old training's files (an old stronger evaluation beside
    the new one): a run folder in an archive replaces the one here; the store's own files are updated; other
    runs are left alone; an archive split into parts is joined in order."""
    import importlib.util
    import io

    spec = importlib.util.spec_from_file_location("unpack_results", ROOT / "scripts" / "unpack_results.py")
    unpack = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(unpack)
    here = tmp_path / "results"
    for run in ("r1", "r2"):
        (here / "paper" / run).mkdir(parents=True)
        (here / "paper" / run / "done").write_text("ok\n")
        (here / "paper" / run / "robustness-old.json").write_text("{}")
    (here / "paper" / "calls.jsonl").write_text("old\n")
    data = io.BytesIO()
    with tarfile.open(fileobj=data, mode="w:gz") as tar:
        for name, text in (("paper/r1/done", "ok\n"), ("paper/r1/robustness-new.json", "{}"),
                           ("paper/calls.jsonl", "old\nnew\n"), ("paper/logs/worker1-1.log", "log")):
            info = tarfile.TarInfo(name)
            info.size = len(text.encode())
            tar.addfile(info, io.BytesIO(text.encode()))
    blob = data.getvalue()
    half = len(blob) // 2
    (tmp_path / "results-paper-1.tgz.part-00").write_bytes(blob[:half])
    (tmp_path / "results-paper-1.tgz.part-01").write_bytes(blob[half:])
    runs = unpack.unpack(sorted(tmp_path.glob("results-paper-1.tgz.part-*"), reverse=True), here)
    assert runs == [str(Path("paper", "r1"))]
    assert sorted(p.name for p in (here / "paper" / "r1").iterdir()) == ["done", "robustness-new.json"]
    assert (here / "paper" / "r2" / "robustness-old.json").exists()  # not in the archive: left alone
    assert (here / "paper" / "calls.jsonl").read_text() == "old\nnew\n" and (here / "paper" / "logs").is_dir()
    # What else a call brings back is refused before anything is unpacked: the check's files, the compile cache.
    (tmp_path / "check.tgz").write_bytes(blob)
    with pytest.raises(ValueError, match=r"not a results archive .*'check.tgz'.*results-paper-\*\.tgz\*"):
        unpack.unpack([tmp_path / "results-paper-1.tgz.part-00", tmp_path / "results-paper-1.tgz.part-01",
                       tmp_path / "check.tgz"], here)
    (tmp_path / "results-quick-2.tgz").write_bytes(blob)  # its members are paper/...: another store's
    with pytest.raises(ValueError, match=r"results-quick-2.tgz: member\(s\) outside its store's folder quick/"):
        unpack.unpack([tmp_path / "results-quick-2.tgz"], here)
    assert not (here / "quick").exists()


@pytest.mark.skipif(shutil.which("bash") is None or shutil.which("tar") is None, reason="needs bash and tar")
def test_device_session_checks_once_then_trusts_the_stored_decision(tmp_path, synthetic_root):
    """scripts/device_session.sh, a GPU session in one call: the check (its files packed into one archive,
    since the device tool brings back 8 files), then the grid; a session whose store holds a decision
    taken under this torch version skips the check."""
    env = {**os.environ, "TOTAL": "900", "WORKERS": "1", "PROFILE": "quick", "DEVICE": "cpu", "MPS": "0",
           "STORE": str(tmp_path / "store"), "DATA": str(synthetic_root), "PY": sys.executable,
           "GRID_ARGS": TINY + " --methods std", "DPAAT_CACHE": str(tmp_path / "cache"), "MODELS": "smallcnn",
           "BENCH_ARGS": "--size 16 --images 16 --batch-size 8 --workers 0 --warmup 1"}
    env.pop("TORCHINDUCTOR_CACHE_DIR", None)  # set by torch in a process that compiled: the session sets its own

    def session(out, **more):
        done = subprocess.run(["bash", "scripts/device_session.sh"], cwd=ROOT, env={**env, "OUT": str(out), **more},
                              capture_output=True, text=True, timeout=1000)
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        return (out / "session.log").read_text()

    log = session(tmp_path / "out1")
    assert "check done" in log and "COMPILE=auto: eager" in log
    with tarfile.open(tmp_path / "out1" / "check.tgz") as tar:
        names = {Path(n).name for n in tar.getnames()}
    assert {"compile-decision.json", "cuda-tests.txt", "benchmark-cpu-eager.json",
            "benchmark-cpu-graphs.json"} <= names
    assert len(list((tmp_path / "out1").glob("results-quick-*.tgz"))) == 1
    # The check's compiled benchmark filled torch.compile's cache: packed for the next session to carry.
    assert "compile cache packed" in log and list((tmp_path / "out1").glob("compile-cache.tgz.part-00"))
    assert len(list((tmp_path / "out1").iterdir())) <= 8  # what the device tool brings back
    # The decision, committed to the store (results/<profile>/compile-decision.json), is trusted next time.
    shutil.copy(tmp_path / "store" / "compile-decision.json", tmp_path / "store" / "quick" / "compile-decision.json")
    log = session(tmp_path / "out2", CACHE_MAX_MB="0")
    assert "check skipped" in log and not (tmp_path / "out2" / "check.tgz").exists()
    # A cache over CACHE_MAX_MB stays behind (the carried paths hold 64 MiB in all).
    assert "compile cache not packed" in log and not list((tmp_path / "out2").glob("compile-cache*"))


def _source_device_env(tmp_path, seed: Path) -> str:
    env = {**os.environ, "PY": sys.executable, "TORCHINDUCTOR_CACHE_DIR": str(tmp_path / "cache"),
           "COMPILE_CACHE_SEED": str(seed)}
    done = subprocess.run(["bash", "-c", "source scripts/device_env.sh"], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


@pytest.mark.skipif(shutil.which("bash") is None or shutil.which("split") is None, reason="needs bash and split")
def test_device_env_seeds_an_empty_compile_cache_from_the_carried_parts(tmp_path):
    """scripts/device_env.sh on a fresh machine: torch.compile's cache is unpacked from the parts an earlier
    session packed (scratch/compile-cache); a cache already there (a warm machine) is left as it is, and an
    unreadable one gives an empty cache and says so."""
    src, seed, cache = tmp_path / "src", tmp_path / "seed", tmp_path / "cache"
    (src / "fxgraph").mkdir(parents=True)
    entry = os.urandom(3000).hex()  # incompressible: the archive splits into several parts
    (src / "fxgraph" / "entry").write_text(entry)
    seed.mkdir()
    subprocess.run(["tar", "czf", str(tmp_path / "c.tgz"), "-C", str(src), "."], check=True)
    subprocess.run(["split", "-b", "1000", "-d", str(tmp_path / "c.tgz"), str(seed / "compile-cache.tgz.part-")],
                   check=True)
    assert len(list(seed.iterdir())) > 1
    assert "compile cache seeded" in _source_device_env(tmp_path, seed)
    assert (cache / "fxgraph" / "entry").read_text() == entry
    (cache / "fxgraph" / "entry").write_text("compiled on this machine")
    assert "seeded" not in _source_device_env(tmp_path, seed)
    assert (cache / "fxgraph" / "entry").read_text() == "compiled on this machine"
    shutil.rmtree(cache)
    (seed / "compile-cache.tgz.part-00").write_bytes(b"not a gzip stream")
    assert "unreadable: starting with an empty one" in _source_device_env(tmp_path, seed)
    assert cache.is_dir() and not any(cache.iterdir())


def _decision_inputs(out: Path, passed=("std", "at", "sat", "amat", "dpaat"), graphs_img_s=900.0, warmups=None):
    lines = [f"PASSED tests/test_training.py::test_cuda_graphs_match_eager_on_a_gpu[{m}]" for m in passed]
    lines += ["FAILED tests/test_training.py::test_cuda_graphs_match_eager_on_a_gpu[amat] - AssertionError"
              ] if "amat" not in passed else []
    (out / "cuda-tests.txt").write_text("\n".join(["....", "=== short test summary info ===", *lines]) + "\n")
    row = {"model": "resnet34", "paper_img_s": 400.0, "library_img_s": 500.0, "concurrent_img_s": 650.0, "procs": 4}
    fast = {**row, "library_img_s": graphs_img_s, "concurrent_img_s": graphs_img_s * 1.3}
    if warmups is not None:  # (eager, graphs): the first warm-up's seconds, compiling included for the graphs
        row["library_warmup_s"], fast["library_warmup_s"] = warmups
    (out / "benchmark-cuda-eager.json").write_text(json.dumps({"throughput": [row]}))
    (out / "benchmark-cuda-graphs.json").write_text(json.dumps({"throughput": [fast]}))


def test_compile_decision_needs_every_method_correct_and_a_faster_path(tmp_path):
    """scripts/compile_decision.py: what device_check.sh leaves for the next call's COMPILE=auto."""
    spec = importlib.util.spec_from_file_location("compile_decision", ROOT / "scripts" / "compile_decision.py")
    decision = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(decision)
    _decision_inputs(tmp_path)
    mode, why = decision.decide(tmp_path)
    assert mode == "reduce-overhead" and "resnet34 x1.80" in why[0]
    stored = tmp_path / "d" / "compile-decision.json"
    assert decision.main([str(tmp_path), "--write", str(stored)]) == 0
    record = json.loads(stored.read_text())
    assert record["mode"] == "reduce-overhead" and record["torch"] == torch.__version__ and record["card"] == "cpu"
    assert record["training_code"] == training_code_digest()
    # COMPILE=auto reads the first usable decision: this machine's, else the one committed to the store.
    assert decision.read([tmp_path / "absent.json", stored]) == "reduce-overhead"
    stale = tmp_path / "stale.json"
    stale.write_text(json.dumps({**record, "torch": "1.0.0"}))
    assert decision.read([stale]) is None  # decided under another torch: not trusted
    assert decision.read([stale, stored]) == "reduce-overhead"
    # ... nor for another training path (its graphs were judged on that code), nor where the code is not on record.
    for other in ({**record, "training_code": "0" * 12}, {k: v for k, v in record.items() if k != "training_code"}):
        (tmp_path / "other.json").write_text(json.dumps(other))
        assert decision.read([tmp_path / "other.json"]) is None
    (tmp_path / "old.txt").write_text("reduce-overhead\n")  # the former plain-text format: ignored
    assert decision.read([tmp_path / "old.txt"]) is None
    assert decision.main(["--read", str(stored), "--usable"]) == 0
    assert decision.main(["--read", str(stale), "--usable"]) == 1
    res = subprocess.run([sys.executable, ROOT / "scripts" / "compile_decision.py", "--read", stale, stored],
                         capture_output=True, text=True)
    assert res.stdout.strip() == "reduce-overhead" and "ignored" in res.stderr
    _decision_inputs(tmp_path, passed=("std", "at", "sat", "dpaat"))
    mode, why = decision.decide(tmp_path)
    assert mode == "" and "not shown correct for amat" in why[0]
    _decision_inputs(tmp_path, graphs_img_s=480.0)
    mode, why = decision.decide(tmp_path)
    assert mode == "" and any("library_img_s 480" in w for w in why)
    # After how many epochs compiling pays for itself: 2160 images an epoch at 500 and 900 img/s save 1.92 s.
    _decision_inputs(tmp_path, warmups=(2.0, 32.0))
    mode, why = decision.decide(tmp_path)
    assert mode == "reduce-overhead" and why[1].endswith("images: resnet34 after 15.6 epochs")
    _decision_inputs(tmp_path, warmups=(2.0, 62.0), graphs_img_s=480.0)
    mode, why = decision.decide(tmp_path)
    assert mode == "" and why[-1].endswith("resnet34 after inf epochs")  # not faster: never paid back
    # A pytest its timeout cut short prints no summary: the -v lines as each test ended are what it leaves.
    _decision_inputs(tmp_path, warmups=(2.0, 32.0))
    verbose = [f"tests/test_training.py::test_cuda_graphs_match_eager_on_a_gpu[{m}] PASSED [ {k}0%]"
               for k, m in enumerate(("std", "at", "sat", "amat", "dpaat"))]
    (tmp_path / "cuda-tests.txt").write_text("\n".join(verbose[:4]) + "\n")  # cut before dpaat's ended
    mode, why = decision.decide(tmp_path)
    assert mode == "" and "not shown correct for dpaat" in why[0]
    (tmp_path / "cuda-tests.txt").write_text("\n".join(verbose) + "\n")
    assert decision.decide(tmp_path)[0] == "reduce-overhead"
    (tmp_path / "cuda-tests.txt").unlink()
    assert decision.decide(tmp_path)[0] == ""  # nothing measured: eager


def test_compile_decision_takes_the_mode_that_trains_a_run_fastest(tmp_path):
    """Where the check measured the library's own CUDA graph too, the decision takes whichever of the two
    qualifying modes costs the card fewer seconds for a 20-epoch run of 2160 images with 4 processes sharing it,
    its warm-up included; one that fails
    its GPU test for a method is out whatever its speed."""
    spec = importlib.util.spec_from_file_location("compile_decision", ROOT / "scripts" / "compile_decision.py")
    decision = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(decision)

    def captured(img_s, warmup_s, passed=("std", "at", "sat", "amat", "dpaat", "d-b")):
        lines = [f"PASSED tests/test_training.py::test_the_library_cuda_graph_matches_eager_on_a_gpu[{m}]"
                 for m in passed]
        with (tmp_path / "cuda-tests.txt").open("a") as f:
            f.write("\n".join(lines) + "\n")
        row = {"model": "resnet34", "library_img_s": img_s, "concurrent_img_s": img_s * 1.3,
               "library_warmup_s": warmup_s, "procs": 4}
        (tmp_path / "benchmark-cuda-captured.json").write_text(json.dumps({"throughput": [row]}))

    # torch.compile: 900 img/s after 62 s of warm-up; the library's graph: 850 img/s after 3 s.
    _decision_inputs(tmp_path, warmups=(2.0, 62.0))
    captured(850.0, 3.0)
    mode, why = decision.decide(tmp_path)
    assert mode == "cuda-graph", why
    assert why[0].startswith("every method correct under the library's CUDA graph; faster: resnet34 x1.70")
    # The card's seconds a run with 4 processes sharing it: 43200 images at 1105 img/s + 3 s / 4, against
    # 43200 at 1170 + 62 s / 4.
    assert why[-1] == ("cuda-graph: a 20-epoch run of 2160 images costs the card 40 s with several processes "
                       "sharing it (warm-up included), reduce-overhead 52 s")
    _decision_inputs(tmp_path, warmups=(2.0, 5.0))  # compiling from a warm cache: torch.compile wins
    captured(850.0, 3.0)
    assert decision.decide(tmp_path)[0] == "reduce-overhead"
    _decision_inputs(tmp_path, passed=("std", "at", "sat", "dpaat"), warmups=(2.0, 62.0))  # amat fails there
    captured(850.0, 3.0, passed=("std", "at", "sat", "dpaat", "d-b"))  # and is not shown here
    mode, why = decision.decide(tmp_path)
    assert mode == "" and any("the library's CUDA graph not shown correct for amat" in w for w in why)
    _decision_inputs(tmp_path, passed=("std", "at", "sat", "dpaat"))
    captured(850.0, 3.0)
    mode, why = decision.decide(tmp_path)  # torch.compile's AMAT fails: the library's graph, and why not the other
    assert mode == "cuda-graph" and why[-1].startswith("reduce-overhead not chosen: CUDA graphs not shown correct")
    # device_check.sh leaves torch.compile out once the library's graph is correct and twice eager (500 img/s).
    assert decision.good_enough(tmp_path, "cuda-graph", 1.5) and not decision.good_enough(tmp_path, "cuda-graph", 2)
    assert decision.main([str(tmp_path), "--good-enough", "cuda-graph", "1.5"]) == 0
    captured(1200.0, 3.0, passed=("std", "at", "sat", "dpaat"))  # fast, but not shown correct for AMAT
    assert not decision.good_enough(tmp_path / "none", "cuda-graph", 1.0)
    (tmp_path / "cuda-tests.txt").write_text("")
    captured(1200.0, 3.0, passed=("std", "at", "sat", "dpaat"))
    assert not decision.good_enough(tmp_path, "cuda-graph", 2)
    assert decision.main([str(tmp_path), "--good-enough", "cuda-graph", "2"]) == 1


def test_compile_decision_judges_the_modes_as_the_grid_uses_the_card(tmp_path):
    """The grid runs several processes on the card: a graph mode that doubles one process but gains nothing
    with four (the library's graph on the H200: 762 against 386 img/s alone, 802 against 810 with 4) is
    neither chosen over one that gains in both (torch.compile's: 1050 and 1194, after 57 s of compiling) nor
    lets the check leave that one out, even where noise puts it a little above eager."""
    spec = importlib.util.spec_from_file_location("compile_decision", ROOT / "scripts" / "compile_decision.py")
    decision = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(decision)
    tests = ("test_the_library_cuda_graph_matches_eager_on_a_gpu", "test_cuda_graphs_match_eager_on_a_gpu")
    passed = [f"PASSED tests/test_training.py::{test}[{m}]" for m in ("std", "at", "sat", "amat", "dpaat")
              for test in tests]
    (tmp_path / "cuda-tests.txt").write_text("\n".join(passed) + "\n")

    def bench(suffix, alone, four, warmup_s):
        row = {"model": "resnet34", "library_img_s": alone, "concurrent_img_s": four, "procs": 4,
               "library_warmup_s": warmup_s}
        (tmp_path / f"benchmark-cuda-{suffix}.json").write_text(json.dumps({"throughput": [row]}))

    bench("eager", 385.6, 809.9, 0.45)
    bench("captured", 762.5, 825.0, 0.81)  # 2% above eager's 4 processes: noise
    assert not decision.good_enough(tmp_path, "cuda-graph", 1.9)  # twice eager alone, not as the grid runs
    bench("graphs", 1050.4, 1194.2, 56.6)
    mode, why = decision.decide(tmp_path)
    assert mode == "reduce-overhead", why
    assert any("concurrent_img_s 825 through the library's CUDA graph, not above eager's 810" in w for w in why)
    bench("captured", 762.5, 1000.0, 0.81)  # both gain: the card's seconds a run decide, not one process's
    mode, why = decision.decide(tmp_path)
    # 43200 images at 1194.2 img/s + 56.6 s / 4 = 50 s; at 1000 + 0.81 / 4 = 43 s.
    assert mode == "cuda-graph" and why[-1].endswith("costs the card 43 s with several processes sharing it "
                                                     "(warm-up included), reduce-overhead 50 s")
    assert decision.card_seconds({"library_img_s": 400.0, "library_warmup_s": 10.0}) == 43200 / 400 + 10
    shared = {"library_img_s": 400.0, "concurrent_img_s": 800.0, "procs": 4, "library_warmup_s": 10.0}
    assert decision.card_seconds(shared) == 43200 / 800 + 10 / 4
    assert decision.card_seconds(shared, shared=False) == 43200 / 400 + 10
    # Twice eager alone and clear of the noise with 4 processes, but not 1.9 times eager as the grid runs.
    bench("captured", 800.0, 1000.0, 0.81)
    assert decision.good_enough(tmp_path, "cuda-graph", 1.2)
    assert not decision.good_enough(tmp_path, "cuda-graph", 1.9)
    # A mode not measured with several processes, where eager was, has no evidence for the grid's way.
    (tmp_path / "benchmark-cuda-captured.json").write_text(json.dumps({"throughput": [
        {"model": "resnet34", "library_img_s": 2000.0, "library_warmup_s": 0.5}]}))
    mode, why = decision.decide(tmp_path)
    assert mode == "reduce-overhead" and any("not measured with several processes through the library's" in w
                                             for w in why)


def _travel_size():
    spec = importlib.util.spec_from_file_location("travel_size", ROOT / "scripts" / "travel_size.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_travel_size_counts_what_the_device_tool_sends(tmp_path, capsys):
    travel = _travel_size()
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    (tmp_path / ".gitignore").write_text("/ignored/\n/carried/\n")
    (tmp_path / "tracked.txt").write_bytes(b"t" * 3000)
    (tmp_path / "untracked.txt").write_bytes(b"u" * 500)
    (tmp_path / "ignored").mkdir()
    (tmp_path / "ignored" / "big.bin").write_bytes(b"i" * 100_000)  # stays behind: not counted
    (tmp_path / "carried" / "sub").mkdir(parents=True)
    (tmp_path / "carried" / "sub" / "data.bin").write_bytes(b"c" * 7000)
    subprocess.run(["git", "add", "tracked.txt", ".gitignore"], cwd=tmp_path, check=True)
    sizes = travel.travel_sizes(tmp_path, ["carried"])
    gitignore = len("/ignored/\n/carried/\n")
    assert sizes == {"tracked": 3000 + gitignore, "untracked": 500, "carry carried": 7000}
    assert travel.main(["--root", str(tmp_path), "--carry", "carried"]) == 0
    assert "MiB under the limit of 64 MiB" in capsys.readouterr().out
    assert travel.main(["--root", str(tmp_path), "--carry", "carried", "--limit-mib", "0.005"]) == 1
    assert "the largest part is carry carried" in capsys.readouterr().err
    assert travel.main(["--root", str(tmp_path), "--carry", "absent"]) == 2
    assert "carried path absent does not exist" in capsys.readouterr().err


# What the repository may hold in tracked files and still travel to a lent GPU with the data copy
# (dpaat slim-copy, 14.5 MB at 200x150), the wheels (0.2 MB) and a compile cache of up to 20 MiB, under 64 MiB.
TRACKED_BUDGET_MIB = 24


def test_the_repository_leaves_room_for_the_data_and_a_compile_cache():
    if not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    tracked = _travel_size().travel_sizes(ROOT)["tracked"] / 2**20
    assert tracked <= TRACKED_BUDGET_MIB, (
        f"the tracked files hold {tracked:.1f} MiB, over the {TRACKED_BUDGET_MIB} MiB that leave a lent GPU's "
        "call room for the data and a compile cache: gzip large result files (dpaat compact-store) or keep "
        "them out of git")


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_a_sessions_second_call_continues_its_store_without_copying_the_committed_results_again(tmp_path):
    """scripts/device_session.sh copies the committed results into the machine's store on its first call only:
    on a second call the store holds runs trained again and not finished, whose old files (done, metrics,
    extras) must not come back from the committed copy."""
    repo = tmp_path / "repo"
    (repo / "scripts").mkdir(parents=True)
    shutil.copy(ROOT / "scripts" / "device_session.sh", repo / "scripts")
    (repo / "scripts" / "device_grid.sh").write_text('echo "grid on $RESULTS"\n')  # the grid itself is tested above
    committed = repo / "results" / "quick" / "run-a"
    committed.mkdir(parents=True)
    (committed / "done").write_text("1\n")
    env = {**os.environ, "STORE": str(tmp_path / "store"), "PROFILE": "quick", "OUT": str(tmp_path / "out"),
           "CHECK": "0", "PY": sys.executable, "TORCHINDUCTOR_CACHE_DIR": str(tmp_path / "inductor")}
    for _ in range(2):
        done = subprocess.run(["bash", "scripts/device_session.sh"], cwd=repo, env=env, capture_output=True, text=True)
        assert done.returncode == 0 and "grid on" in done.stdout, done.stdout + done.stderr
        stored = tmp_path / "store" / "quick" / "run-a"
        assert (stored / "done").exists() == (_ == 0)
        (stored / "done").unlink(missing_ok=True)  # moved aside and training again on the warm machine
    # A store of another name (RESULTS) is seeded itself, not $STORE/<profile> beside it.
    custom = tmp_path / "elsewhere" / "mine"
    done = subprocess.run(["bash", "scripts/device_session.sh"], cwd=repo, env={**env, "RESULTS": str(custom)},
                          capture_output=True, text=True)
    assert done.returncode == 0 and f"grid on {custom}" in done.stdout, done.stdout + done.stderr
    assert (custom / "run-a" / "done").exists()
