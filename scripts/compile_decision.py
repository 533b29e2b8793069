"""Whether the grid should train through CUDA graphs, from what scripts/device_check.sh measured.

    python scripts/compile_decision.py OUT_DIR [--write FILE]     (device_check.sh, on the GPU)
    python scripts/compile_decision.py --read FILE [FILE ...]     (device_grid.sh with COMPILE=auto)

A mode only if its GPU test passed for every method (cuda-tests.txt, pytest -rA) and its library
path was faster than the eager one by more than run-to-run noise (MARGIN) for every benchmarked CNN, in
one process and (where measured) in several: "reduce-overhead" (torch.compile's CUDA graphs) or
"cuda-graph" (the library's own graph of each training step, nothing compiled); where both qualify, the
one that costs the card fewer seconds a typical run in the grid's way of using it, several processes
sharing it (:func:`card_seconds`), its warm-up included. The reasons also say after how many epochs of the paper
profile (2160 images) the faster epochs pay for compiling (the benchmark's first warm-up through the
graphs, less eager's, in one process). That is reported, not a veto: it is measured on an empty
compile cache, and the cache a session carries from an earlier one (device_session.sh) makes later
compiles far cheaper; the models that gain most (the lightweight group's many small kernels) are
not the one benchmarked (resnet34). Prints the reasons; --write FILE stores the decision as JSON
(mode, reasons, torch version, card), for `COMPILE=auto bash scripts/device_grid.sh`: on the same
machine, so the session's next call can start at once (a lent machine goes back after 30 idle
seconds), and committed as results/<profile>/compile-decision.json, so that a later GPU session with
the same torch version skips the check and spends its minutes on the grid.

--good-enough MODE FACTOR (device_check.sh): exit 0 if MODE already qualifies and trains at least
FACTOR times eager's images/s on every benchmarked CNN, with several processes sharing the card where
that was measured (the grid's way), so the check can leave out the other mode.

--read prints the mode of the first FILE that exists and was decided under this machine's torch
version for this training path ("" for eager), and says on stderr which file it took or why none; with
--usable it prints nothing and exits 0 if there is such a FILE, 1 if not (scripts/device_session.sh:
check or not). The training path's code digest (dpaat_lib.training.training_code_digest) is part of a
decision: the GPU tests judged that code's CUDA graphs, and an edit of the attacks, the methods or the
loop can make a graph wrong or a method capturable, so a later session checks again.
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

METHODS = ("std", "at", "sat", "amat", "dpaat")
EPOCH_IMAGES = 2160  # the paper profile's training set: (800 - 80) images x 3 classes
RUN_EPOCHS = 20  # a typical paper-profile run (early stopping): what the modes are compared on
# How much faster than eager a mode must be to count as faster: two benchmarks of one path differ by a few per
# cent, and a graph mode that gains less is not worth its risk (on the H200 the library's graph did 802 img/s with
# 4 processes against eager's 810: a second check could have measured it a little above).
MARGIN = 1.05
TEST = "test_cuda_graphs_match_eager_on_a_gpu"
MODE = "reduce-overhead"
# Each mode that can replace eager: the GPU test that shows it correct for every method, the suffix of its
# benchmark files (benchmark-<device>-<suffix>.json) and its name in the reasons.
CANDIDATES = {
    MODE: (TEST, "graphs", "CUDA graphs"),
    "cuda-graph": ("test_the_library_cuda_graph_matches_eager_on_a_gpu", "captured", "the library's CUDA graph"),
}


def _rows(out_dir: Path, suffix: str) -> dict[str, dict]:
    paths = sorted(out_dir.glob(f"benchmark-*-{suffix}.json"))
    return {r["model"]: r for p in paths for r in json.loads(p.read_text()).get("throughput", [])}


def _rate_key(eager_row: dict) -> str:
    """The images/s a mode is judged by against ``eager_row``: several processes sharing the card (the grid's
    way) where eager measured them (a qualifying mode then did too, :func:`_judge`), else one process."""
    return "concurrent_img_s" if "concurrent_img_s" in eager_row else "library_img_s"


def card_seconds(row: dict, shared: bool = True) -> float:
    """Seconds of the card that one RUN_EPOCHS-epoch run of EPOCH_IMAGES images costs on the path of benchmark
    ``row``, its warm-up included, as the grid uses the card: several processes share it
    (``concurrent_img_s``, measured with ``procs`` of them), each warming up while the others train, so that a
    run's warm-up leaves the card idle for about its share of the processes (an approximation: a call's first
    workers start within seconds of each other and compile together; later runs start as others end). With
    ``shared`` False, or where several processes were not measured, one process alone: its images/s and its
    whole warm-up (:func:`decide` compares every mode on one basis: several processes only where eager and
    each mode measured them).

    The grid's rule: the library's graph doubled one process on the H200 but four processes gained nothing
    over four eager ones (802 against 810 img/s), while torch.compile's gained x1.47 there; judged by one
    process and its warm-up (0.8 s against 57), the library's graph would have looked the faster."""
    warmup = row.get("library_warmup_s", 0.0)
    if shared and "concurrent_img_s" in row:
        return RUN_EPOCHS * EPOCH_IMAGES / row["concurrent_img_s"] + warmup / row["procs"]
    return RUN_EPOCHS * EPOCH_IMAGES / row["library_img_s"] + warmup


def _judge(mode: str, tests: str, eager: dict, rows: dict) -> tuple[bool, list[str], float]:
    """(correct and faster, reasons, :func:`card_seconds` summed over the benchmarked CNNs)."""
    test, _, label = CANDIDATES[mode]
    reasons = []
    # -rA's summary ("PASSED tests/x.py::test[at]") or -v's line as each test ends ("tests/x.py::test[at] PASSED"),
    # which is all a pytest cut short by its timeout leaves
    passed = (set(re.findall(rf"PASSED \S*{test}\[(\S+?)\]", tests))
              | set(re.findall(rf"\S*{test}\[(\S+?)\] PASSED", tests)))
    missing = [m for m in METHODS if m not in passed]
    if missing:
        reasons.append(f"{label} not shown correct for {', '.join(missing)} ({test})")
    if not eager or not rows:
        reasons.append(f"no benchmark of both paths ({label} and eager)")
    for model, g in rows.items():
        e = eager.get(model)
        if e is None:
            continue
        if "concurrent_img_s" in e and "concurrent_img_s" not in g:  # no evidence for the grid's way
            reasons.append(f"{model}: not measured with several processes through {label}, as eager was")
        for key in ("library_img_s", "concurrent_img_s"):
            if key in g and key in e and g[key] < MARGIN * e[key]:
                reasons.append(f"{model}: {key} {g[key]:.0f} through {label}, not above eager's {e[key]:.0f} "
                               f"by more than noise (x{MARGIN:g})")
    paid = [f"{m} after {n:.1f}" for m, g in rows.items() if m in eager
            for n in [break_even_epochs(eager[m], g)] if n is not None]
    payback = (f"{mode}: its warm-up (compiling or capturing, empty cache) paid back by the faster epochs of "
               f"{EPOCH_IMAGES} images: {', '.join(paid)} epochs") if paid else ""
    run_s = sum(card_seconds(g, shared=_rate_key(eager[m]) == "concurrent_img_s")
                for m, g in rows.items() if m in eager)
    if reasons:
        return False, reasons + ([payback] if payback else []), run_s
    speedups = ", ".join(f"{m} x{g['library_img_s'] / eager[m]['library_img_s']:.2f}"
                         for m, g in rows.items() if m in eager)
    return True, [f"every method correct under {label}; faster: {speedups}"] + ([payback] if payback else []), run_s


def decide(out_dir: Path) -> tuple[str, list[str]]:
    """(mode or "", reasons) from ``out_dir``'s cuda-tests.txt and benchmark-*-eager/graphs/captured.json.

    A mode qualifies if its GPU test passed for every method and its benchmark beat eager's by more than
    MARGIN in one process and in several; of those that do, the one whose RUN_EPOCHS-epoch run of
    EPOCH_IMAGES images costs the card the fewest seconds (:func:`card_seconds`: several processes
    sharing it, the first warm-up, compiling or capturing, included). The library's graph is judged only
    where the check measured it (an older check did not)."""
    tests = (out_dir / "cuda-tests.txt").read_text() if (out_dir / "cuda-tests.txt").exists() else ""
    eager = _rows(out_dir, "eager")
    verdicts = {}
    for mode, (test, suffix, _) in CANDIDATES.items():
        rows = _rows(out_dir, suffix)
        if mode != MODE and not rows and test not in tests:
            continue
        verdicts[mode] = _judge(mode, tests, eager, rows)
    good = sorted((v[2], mode) for mode, v in verdicts.items() if v[0])
    if not good:
        return "", [r for v in verdicts.values() for r in v[1]]
    (best_s, best), others = good[0], good[1:]
    how = ("with several processes sharing it" if any("concurrent_img_s" in e for e in eager.values())
           else "in one process")
    return best, verdicts[best][1] + [
        f"{best}: a {RUN_EPOCHS}-epoch run of {EPOCH_IMAGES} images costs the card {best_s:.0f} s {how} "
        f"(warm-up included), {mode} {s_:.0f} s" for s_, mode in others] + [
        f"{mode} not chosen: {v[1][0]}" for mode, v in verdicts.items() if not v[0]]


def good_enough(out_dir: Path, mode: str, factor: float) -> bool:
    """Whether ``mode`` already qualifies (:func:`decide`'s test and benchmark) and trains at least ``factor``
    times eager's images/s on every benchmarked CNN, in the grid's way (several processes sharing the card)
    where both measured it, else in one process: device_check.sh then spends no minutes on the other."""
    tests = (out_dir / "cuda-tests.txt").read_text() if (out_dir / "cuda-tests.txt").exists() else ""
    eager, rows = _rows(out_dir, "eager"), _rows(out_dir, CANDIDATES[mode][1])
    ok, reasons, _ = _judge(mode, tests, eager, rows)
    fast = [m for m, g in rows.items() if m in eager and _rate_key(eager[m]) in g
            and g[_rate_key(eager[m])] >= factor * eager[m][_rate_key(eager[m])]]
    return ok and bool(fast) and len(fast) == len([m for m in rows if m in eager])


def break_even_epochs(eager: dict, graphs: dict) -> float | None:
    """Epochs of EPOCH_IMAGES after which the graphs' faster epochs have paid for their compiling (their
    first warm-up's extra seconds over eager's), in one process; None where the benchmark row has no
    warm-up seconds (before it recorded them), inf where the graphs save nothing."""
    if "library_warmup_s" not in eager or "library_warmup_s" not in graphs:
        return None
    extra = max(graphs["library_warmup_s"] - eager["library_warmup_s"], 0.0)
    saved = EPOCH_IMAGES / eager["library_img_s"] - EPOCH_IMAGES / graphs["library_img_s"]
    return extra / saved if saved > 0 else float("inf")


def _training_code() -> str:
    """The digest of the training path this checkout holds ("" where dpaat_lib cannot be imported)."""
    root = str(Path(__file__).resolve().parents[1])  # the checkout's dpaat_lib, installed or not (a lent GPU)
    if root not in sys.path:
        sys.path.insert(0, root)
    try:
        from dpaat_lib.training import training_code_digest
    except ImportError:
        return ""
    return training_code_digest()


def _torch_and_card() -> tuple[str, str]:
    try:
        import torch
    except ImportError:
        return "", ""
    card = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"
    return torch.__version__, card


def read(paths: list[Path]) -> str | None:
    """The mode stored in the first of ``paths`` that exists and matches this torch version ("" for eager);
    None when there is none."""
    version, _ = _torch_and_card()
    for path in paths:
        if not path.exists():
            continue
        try:
            stored = json.loads(path.read_text())
        except json.JSONDecodeError:
            print(f"{path}: not a decision written by --write; ignored", file=sys.stderr)
            continue
        if stored.get("torch") != version:
            print(f"{path}: decided under torch {stored.get('torch')}, this is {version}; ignored", file=sys.stderr)
            continue
        if stored.get("training_code") != _training_code():
            print(f"{path}: decided for the training path {stored.get('training_code') or '(not recorded)'}, this "
                  f"checkout's is {_training_code()}; ignored", file=sys.stderr)
            continue
        print(f"{path}: {stored.get('mode') or 'eager'} (decided on {stored.get('card')}, torch {version})",
              file=sys.stderr)
        return stored.get("mode", "")
    print("no compile decision for this torch version and training path: eager", file=sys.stderr)
    return None


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("out_dir", type=Path, nargs="?")
    p.add_argument("--write", type=Path, help="store the decision here (JSON) for COMPILE=auto")
    p.add_argument("--read", type=Path, nargs="+", help="print the mode of the first usable stored decision")
    p.add_argument("--usable", action="store_true", help="with --read: print nothing; exit 0 if a stored "
                                                         "decision is usable here, 1 if not")
    p.add_argument("--good-enough", nargs=2, metavar=("MODE", "FACTOR"),
                   help="with OUT_DIR: exit 0 if MODE qualifies and is at least FACTOR times eager on every CNN")
    args = p.parse_args(argv)
    if args.good_enough:
        mode, factor = args.good_enough[0], float(args.good_enough[1])
        enough = args.out_dir is not None and good_enough(args.out_dir, mode, factor)
        print(f"{mode}: {'correct and at least' if enough else 'not shown correct and'} x{factor:g} eager")
        return 0 if enough else 1
    if args.read:
        mode = read(args.read)
        if args.usable:
            return 0 if mode is not None else 1
        print(mode or "")
        return 0
    if args.out_dir is None:
        p.error("give OUT_DIR (what device_check.sh measured) or --read FILE")
    mode, reasons = decide(args.out_dir)
    print(f"compile decision: {mode or 'eager'}")
    for r in reasons:
        print(f"  - {r}")
    if args.write:
        version, card = _torch_and_card()
        args.write.parent.mkdir(parents=True, exist_ok=True)
        args.write.write_text(json.dumps({"mode": mode, "reasons": reasons, "torch": version, "card": card,
                                          "training_code": _training_code()}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
