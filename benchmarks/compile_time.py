"""Seconds that torch.compile adds to a run: torch's own shape handling vs the library's, cold and warm cache.

A run's epoch ends on a partial batch whenever the training set is not a multiple of the batch size
(the paper profile: 2160 images, batch 32, a last batch of 16). Three ways to train the same epochs of
each method through ``dpaat_lib.training.CompiledNet``:

(a) torch: ``torch.compile``'s own shape handling (the library before it fixed one batch size): the
    partial batch recompiles every graph with a dynamic batch size, and the run goes on with those;
(b) library (``training.compiled_for``): the graphs compiled for the full batch, the partial batch run
    eagerly (AMAT, whose attacked sub-batch varies, with a dynamic batch size from the first call);
(c) library, warm: (b) again on the compile cache (b) left behind (TORCHINDUCTOR_CACHE_DIR), as a GPU
    session that carries the cache of an earlier one (scripts/device_session.sh, README "On a GPU").

Compile state lives in the process, so each is a fresh child process with its own cache folder; the
ratios (a)/(b) and (b)/(c) are of the seconds to train ``--epochs`` epochs, compiling included, in the
same invocation. Also printed: the graphs each compiled (``torch._dynamo``'s counter). Example::

    OMP_NUM_THREADS=2 python benchmarks/compile_time.py --methods at amat --images 72    # CPU, ~4 min
    python benchmarks/compile_time.py --device cuda --model resnet34 --size 224 --images 2160 --epochs 2
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from dpaat_lib.methods import MethodConfig, build_method
from dpaat_lib.models import build_model, list_models
from dpaat_lib.profiles import MAIN_METHODS
from dpaat_lib.training import COMPILE_MODES, CompiledNet, compiled_for, train_epoch

WAYS = ("torch", "library", "warm")  # (a), (b), (c)


class TorchShapes(CompiledNet):
    """The baseline: every batch through the compiled graphs, nothing marked (torch's automatic dynamic
    shapes decide when to recompile), as CompiledNet compiled before it fixed the batch size."""

    def __init__(self, model, mode):
        super().__init__(model, mode, batch_size=None)

    def _compiles(self, *batches):
        return True


def child(args) -> dict:
    """Train ``args.epochs`` epochs of one method one way in this (fresh) process; seconds and graphs."""
    from torch._dynamo.utils import counters

    device = torch.device(args.device)
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (args.images, 3, args.size, args.size), dtype=torch.uint8, generator=g).to(device)
    y = torch.randint(0, 3, (args.images,), generator=g).to(device)
    torch.manual_seed(0)
    model = build_model(args.model).to(device)
    gen = torch.Generator(device=device).manual_seed(1)
    method = build_method(MethodConfig(name=args.child), args.images, generator=gen,
                          threshold=1.0 if args.child == "amat" else None,  # any threshold: the same passes
                          check_values=False)  # as train_run
    net = (TorchShapes(model, args.compile) if args.way == "torch"  # library and warm alike: as train_run
           else compiled_for(model, args.compile, method, args.batch_size))
    opt = torch.optim.Adam(model.parameters(), lr=3e-4)
    fast = device.type == "cuda"
    autocast = torch.autocast(device.type, dtype=torch.bfloat16) if fast else None
    epochs = []
    for _ in range(args.epochs):
        t0 = time.perf_counter()
        train_epoch(net, method, opt, x, y, torch.randperm(args.images, generator=g).to(device),
                    batch_size=args.batch_size, flips=gen, autocast=autocast)
        torch.cuda.synchronize() if fast else None
        epochs.append(time.perf_counter() - t0)
    return {"method": args.child, "way": args.way, "seconds": sum(epochs), "epochs": epochs,
            "graphs": int(counters["stats"]["unique_graphs"])}


def run_child(args, method: str, way: str, cache: Path) -> dict:
    cmd = [sys.executable, __file__, "--child", method, "--way", way, "--device", args.device, "--model",
           args.model, "--size", str(args.size), "--images", str(args.images), "--batch-size",
           str(args.batch_size), "--epochs", str(args.epochs), "--compile", args.compile]
    env = {**os.environ, "TORCHINDUCTOR_CACHE_DIR": str(cache)}
    done = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(f"{method} ({way}) failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--model", default="smallcnn", choices=list_models())
    p.add_argument("--methods", nargs="+", default=list(MAIN_METHODS), choices=list(MAIN_METHODS))
    p.add_argument("--size", type=int, default=32)
    p.add_argument("--images", type=int, default=72, help="training images; not a multiple of the batch size, "
                                                          "so every epoch ends on a partial batch")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--compile", default="default", choices=COMPILE_MODES)
    p.add_argument("--json", help="also write the rows to this file")
    p.add_argument("--child", help=argparse.SUPPRESS)  # internal: the method one child process trains
    p.add_argument("--way", choices=WAYS, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        print(json.dumps(child(args)), flush=True)
        return 0
    if args.images % args.batch_size == 0:
        print(f"note: {args.images} images are {args.images // args.batch_size} full batches: no partial batch")
    rows = []
    card = (torch.cuda.get_device_name(args.device) if args.device.startswith("cuda")
            else f"CPU ({torch.get_num_threads()} threads)")
    print(f"{args.model}, {args.size} px, {args.images} images, batch {args.batch_size}, {args.epochs} epochs, "
          f"torch.compile mode {args.compile}, {args.device}, torch {torch.__version__}")
    print(f"{'method':8s} {'torch s':>8s} {'library s':>10s} {'warm s':>7s} {'torch/lib':>10s} {'cold/warm':>10s}"
          f"  graphs (torch, library, warm)")
    with tempfile.TemporaryDirectory() as tmp:
        for method in args.methods:
            caches = {"torch": Path(tmp) / f"{method}-torch", "library": Path(tmp) / f"{method}-library"}
            caches["warm"] = caches["library"]  # the cache the cold library run left
            r = {way: run_child(args, method, way, caches[way]) for way in WAYS}
            row = {"method": method, "model": args.model, "device": args.device, "card": card, "size": args.size,
                   "images": args.images, "epochs": args.epochs, "compile": args.compile,
                   "torch_version": torch.__version__, **{f"{w}_s": r[w]["seconds"] for w in WAYS},
                   **{f"{w}_graphs": r[w]["graphs"] for w in WAYS},
                   "torch_over_library": r["torch"]["seconds"] / r["library"]["seconds"],
                   "cold_over_warm": r["library"]["seconds"] / r["warm"]["seconds"]}
            rows.append(row)
            print(f"{method:8s} {row['torch_s']:8.1f} {row['library_s']:10.1f} {row['warm_s']:7.1f} "
                  f"{row['torch_over_library']:10.2f} {row['cold_over_warm']:10.2f}  "
                  f"{row['torch_graphs']}, {row['library_graphs']}, {row['warm_graphs']}", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps({"compile_time": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
