"""Images per second of PGD-7 adversarial training: a paper-style loop vs the library's path.

Both loops run in the same process on the same card, one epoch each per CNN,
batch 32 (method.md section 6), AT with the training adversary (PGD-L2, 7 steps):

(a) paper-style: fp32, NCHW, a torch DataLoader over decoded images (flips on
    the CPU workers), no compilation;
(b) library: ``dpaat_lib.training.train_epoch``: uint8 data resident on the
    device, flips there, bf16 autocast and channels_last on CUDA
    (``--compile MODE`` adds torch.compile in that mode, e.g. reduce-overhead: CUDA graphs, or
    the library's own CUDA graph of each step with ``--compile cuda-graph``);
(c) with ``--procs N``: the library path in N processes at once on the same
    card, as the grid runs (``dpaat grid --claim``): batch 32 leaves one
    process's GPU mostly idle. Reported as the images/s of all N together.

Prints images/s of each and the ratios (b)/(a), (c)/(a), with the card's name.
The first ``--warmup`` batches of every loop are not timed (cuDNN autotuning,
lazy initialisation). ``--cost-model M`` adds one timed epoch of each method
(STD, AT, SAT, AMAT, DPAAT) on the library path: seconds relative to STD.
``--repeats N`` times every loop N times, interleaved (a, b, a, b ...; the
methods in a rotated order each round), and stores the median of the per-round
ratios with every round's ratio: a shared CPU's speed drifts between one epoch
and the next, and a ratio within one round cancels most of that drift.
Speed is a ratio against a baseline run in the same process, never an absolute
number in a test. Example (GPU)::

    python benchmarks/train_throughput.py --device cuda --size 224 --images 1280 --procs 4
    python benchmarks/train_throughput.py --device cpu --size 32 --images 64 --models smallcnn   # smoke
    OMP_NUM_THREADS=1 python benchmarks/train_throughput.py --device cpu --models smallcnn --size 32 \
        --images 1280 --cost-model smallcnn --repeats 3 --json results/cpu-real/benchmark-cpu.json   # the book's
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Dataset

from dpaat_lib.attacks import training_attack
from dpaat_lib.methods import MethodConfig, build_method
from dpaat_lib.models import PAPER_MODELS, build_model, list_models, min_input_size
from dpaat_lib.profiles import MAIN_METHODS as METHODS, cpu_kind
from dpaat_lib.training import SPEED_MODES, CapturedStep, speed_path, train_epoch, training_code_digest


class DecodedImages(Dataset):
    """Paper-style dataset: decoded uint8 images on the CPU, flipped per sample."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor):
        self.x, self.y = x, y

    def __len__(self):
        return len(self.y)

    def __getitem__(self, i):
        img = self.x[i].float() / 255
        if torch.rand(()) < 0.5:
            img = img.flip(2)
        if torch.rand(()) < 0.5:
            img = img.flip(1)
        return img, self.y[i], i


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def paper_style_epoch(model_name, x, y, device, batch_size, workers, warmup: int = 2) -> float:
    torch.manual_seed(0)
    model = build_model(model_name).to(device)
    # Without the per-batch value checks, as in the library's loop: the two loops differ only in what is timed.
    method = build_method(MethodConfig(name="at", attack=training_attack()), len(y), check_values=False)
    opt = torch.optim.Adam(model.parameters(), lr=3e-4)
    loader = DataLoader(DecodedImages(x, y), batch_size=batch_size, shuffle=True, num_workers=workers,
                        pin_memory=device.type == "cuda", drop_last=False)
    model.train()
    t0, timed, running_loss = None, 0, 0.0
    for b, (xb, yb, idx) in enumerate(loader):
        if b == warmup:
            _sync(device)
            t0 = time.perf_counter()
        xb, yb = xb.to(device, non_blocking=True), yb.to(device, non_blocking=True)
        loss, _ = method.loss(model, xb, yb, idx)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        running_loss += loss.item()  # a per-batch log, as training scripts print it (a host sync)
        timed += len(yb) if t0 is not None else 0
    _sync(device)
    return timed / (time.perf_counter() - t0)


def library_epoch(model_name, x, y, device, batch_size, fast: bool, compile_mode: str | None, warmup: int = 2,
                  method_name: str = "at") -> tuple[float, float]:
    """(images/s after the warm-up, seconds of the warm-up batches: compiling included with ``compile_mode``
    the first time the process meets the model)."""
    torch.manual_seed(0)
    model = build_model(model_name).to(device)
    if fast:
        model = model.to(memory_format=torch.channels_last)
    gen = torch.Generator(device=device).manual_seed(0)
    # AMAT's threshold comes from a trained STD model in a run; any value exercises the same passes here.
    method = build_method(MethodConfig(name=method_name, attack=training_attack()), len(y), generator=gen,
                          threshold=1.0 if method_name == "amat" else None, check_values=False)  # as train_run
    path = speed_path(model, method, compile_mode, batch_size=batch_size, device=device, lr=3e-4, bf16=fast,
                      generators=(gen,))  # as train_run
    if path.captured is not None and warmup:  # the eager warm-up batches and the capture are not timed
        warmup = max(warmup, CapturedStep.WARMUP + 1)
    xd, yd = x.to(device), y.to(device)
    order = torch.randperm(len(y), generator=torch.Generator().manual_seed(0)).to(device)
    kw = dict(batch_size=batch_size, flips=gen, channels_last=fast, autocast=path.autocast, captured=path.captured)
    t0 = time.perf_counter()
    train_epoch(path.net, method, path.optimizer, xd, yd, order[:warmup * batch_size], **kw)  # warm-up, untimed
    _sync(device)
    t1 = time.perf_counter()
    train_epoch(path.net, method, path.optimizer, xd, yd, order[warmup * batch_size:], **kw)
    _sync(device)
    return (len(y) - warmup * batch_size) / (time.perf_counter() - t1), t1 - t0


def _worker(args) -> None:
    """One of --procs processes: warm up, wait for the others at a file barrier, time one epoch."""
    device = torch.device(args.device)
    name = args.models[0]
    size = max(args.size, min_input_size(name))
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (args.images, 3, size, size), dtype=torch.uint8, generator=g)
    y = torch.randint(0, 3, (args.images,), generator=g)
    library_epoch(name, x[:2 * args.batch_size], y[:2 * args.batch_size], device, args.batch_size,
                  device.type == "cuda", args.compile, warmup=0)  # CUDA context, cuDNN plans
    barrier = Path(args.worker)
    (barrier / f"ready-{os.getpid()}").touch()
    while len(list(barrier.glob("ready-*"))) < args.procs:
        time.sleep(0.01)
    print(json.dumps({"img_s": library_epoch(name, x, y, device, args.batch_size, device.type == "cuda", args.compile,
                                             warmup=args.warmup)[0]}), flush=True)


def concurrent_img_s(args, name: str) -> float:
    """Images/s of ``args.procs`` library-path processes training ``name`` at once (their sum)."""
    with tempfile.TemporaryDirectory() as barrier:
        cmd = [sys.executable, __file__, "--worker", barrier, "--models", name, "--device", args.device,
               "--size", str(args.size), "--images", str(args.images), "--batch-size", str(args.batch_size),
               "--warmup", str(args.warmup), "--procs", str(args.procs)]
        cmd += ["--compile", args.compile] if args.compile else []
        procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True) for _ in range(args.procs)]
        outs = [p.communicate()[0] for p in procs]
    if any(p.returncode for p in procs):
        raise RuntimeError(f"a benchmark worker failed: {outs}")
    return sum(json.loads(o.strip().splitlines()[-1])["img_s"] for o in outs)


def method_cost(args, device, fast: bool, card: str, code: str, g: torch.Generator) -> list[dict]:
    """One epoch of each method on ``args.cost_model``, ``args.repeats`` rounds: per method the median
    img/s, and its seconds per epoch relative to STD as the median of the per-round ratios."""
    name = args.cost_model
    size = max(args.size, min_input_size(name))
    x = torch.randint(0, 256, (args.images, 3, size, size), dtype=torch.uint8, generator=g)
    y = torch.randint(0, 3, (args.images,), generator=g)
    speed: dict[str, list[float]] = {m: [] for m in METHODS}
    for r in range(args.repeats):
        for meth in METHODS[r % len(METHODS):] + METHODS[:r % len(METHODS)]:  # no method always runs first
            speed[meth].append(library_epoch(name, x, y, device, args.batch_size, fast, None, args.warmup,
                                             method_name=meth)[0])
    cost = []
    print(f"\nseconds per epoch relative to STD ({name}, library path, {card}, median of {args.repeats}):")
    for meth in METHODS:
        runs = [s / m for s, m in zip(speed["std"], speed[meth])]
        cost.append({"model": name, "method": meth, "card": card, "img_s": statistics.median(speed[meth]),
                     "training_code": code, "repeats": args.repeats, "relative_to_std": statistics.median(runs),
                     "relative_runs": runs})
        spread = f" (rounds {min(runs):.2f} to {max(runs):.2f})" if min(runs) != max(runs) else ""
        print(f"  {meth:<6} {cost[-1]['img_s']:>9.1f} img/s  x{cost[-1]['relative_to_std']:.2f}{spread}", flush=True)
    return cost


def main(argv=None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--models", nargs="+", default=list(PAPER_MODELS), choices=list_models())
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--images", type=int, default=2400, help="images in the epoch (random data: speed only)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--workers", type=int, default=4)
    p.add_argument("--compile", choices=SPEED_MODES, help="torch.compile the library path in this mode (also in "
                                                       "the --procs processes; its warm-up compiles), or "
                                                       "cuda-graph: the library's own graph of each step")
    p.add_argument("--warmup", type=int, default=2, help="untimed batches at the start of every loop")
    p.add_argument("--procs", type=int, default=1, help="also time N library-path processes at once (N > 1)")
    p.add_argument("--cost-model", choices=list_models(), help="also time one epoch of each method on this model")
    p.add_argument("--repeats", type=int, default=1, help="rounds of every timed loop, interleaved; the medians "
                                                          "of the per-round ratios are stored")
    p.add_argument("--json", help="also write the rows to this file")
    p.add_argument("--worker", help=argparse.SUPPRESS)  # internal: barrier folder of a --procs worker
    args = p.parse_args(argv)
    if args.repeats < 1:
        p.error(f"--repeats must be at least 1, got {args.repeats}")
    if args.worker:
        _worker(args)
        return []
    device = torch.device(args.device)
    threads = torch.get_num_threads()
    cpu_card = f"CPU ({threads} thread{'s' * (threads > 1)})"
    card = torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_card
    host = cpu_kind()  # the host's kind of CPU: on a CPU the card itself; on a GPU what feeds the paper-style loop
    code = training_code_digest()  # which version of the training path these numbers describe
    fast = device.type == "cuda"  # bf16 + channels_last only pay off on a GPU
    g = torch.Generator().manual_seed(0)
    rows = []
    print(f"card: {card}; PGD-7 AT, batch {args.batch_size}, {args.images} images, {args.size} px, "
          f"{args.warmup} warm-up batches untimed")
    many = f"x{args.procs} img/s" if args.procs > 1 else ""
    print(f"{'model':<15}{'paper img/s':>12}{'library img/s':>15}{'ratio':>8}" +
          (f"{many:>15}{'ratio':>8}" if many else ""))
    for name in args.models:
        size = max(args.size, min_input_size(name))
        x = torch.randint(0, 256, (args.images, 3, size, size), dtype=torch.uint8, generator=g)
        y = torch.randint(0, 3, (args.images,), generator=g)
        rounds, warmups = [], []
        for _ in range(args.repeats):
            paper = paper_style_epoch(name, x, y, device, args.batch_size, args.workers, args.warmup)
            library, warmup_s = library_epoch(name, x, y, device, args.batch_size, fast, args.compile, args.warmup)
            rounds.append((paper, library))
            warmups.append(warmup_s)
        a = statistics.median(r[0] for r in rounds)
        b = statistics.median(r[1] for r in rounds)
        ratio = statistics.median(rb / ra for ra, rb in rounds)
        row = {"model": name, "card": card, "size": size, "images": args.images, "paper_img_s": a,
               "library_img_s": b, "ratio": ratio, "bf16_channels_last": fast, "compile": args.compile or False,
               "training_code": code, "host_cpu": host, "repeats": args.repeats,
               "ratio_runs": [rb / ra for ra, rb in rounds],
               # The library's first warm-up in this process: where it compiles (--compile), the seconds a run
               # pays once (scripts/compile_decision.py weighs them against the time the graphs save).
               "library_warmup_s": warmups[0], "warmup_batches": args.warmup}
        line = f"{name:<15}{a:>12.1f}{b:>15.1f}{ratio:>8.2f}"
        if args.procs > 1:
            c = concurrent_img_s(args, name)
            # mps: whether the processes ran under NVIDIA's multi-process service (scripts/device_env.sh's
            # mps_start), as the grid's workers do where the machine has it, or took turns on the card.
            row.update(procs=args.procs, concurrent_img_s=c, concurrent_ratio=c / a,
                       mps=bool(os.environ.get("CUDA_MPS_PIPE_DIRECTORY")))
            line += f"{c:>15.1f}{c / a:>8.2f}"
        rows.append(row)
        print(line, flush=True)
    cost = method_cost(args, device, fast, card, code, g) if args.cost_model else []
    for c in cost:
        c["host_cpu"] = host
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"throughput": rows, "method_cost": cost}, f, indent=1)
    return rows


if __name__ == "__main__":
    main()
