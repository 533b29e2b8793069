"""The Square attack of the stronger evaluation (chapter 11): torchattacks' class against
``dpaat_lib.robustness.square_class()``, which returns the same images bit for bit.

Square is a random search, one model query per iteration; what it does around each query is a few hundred
tiny tensor operations, and on a GPU their launches and the host's waits for the device set its pace. This
counts, per norm, the operations each class's search dispatches (about one kernel launch each on a GPU), the host
syncs (on a GPU, by CUDA's sync detector) and the seconds (median of ``--repeats``, both classes
alternating in this process), and checks the images are identical.

The default model is a probe that no query can fool: it classifies an image by its mean colour, on images
whose class raises one channel's mean by 0.2, far beyond the radii. So every image stays in the search for
every query, as on an adversarially trained model, and the model's own forward (the same in both classes)
costs next to nothing: the times are the attack's own overhead. ``--model NAME`` uses a library model
instead (labels: its own predictions; images it flips leave the search early in both classes).

Example::

    OMP_NUM_THREADS=1 python benchmarks/square_overhead.py --size 96 --images 32    # CPU, about 2 minutes
    python benchmarks/square_overhead.py --device cuda                        # the paper profile's 150 x 500
"""
from __future__ import annotations

import argparse
import statistics
import time
import warnings

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

from dpaat_lib.models import build_model, list_models
from dpaat_lib.robustness import _TA_NORM, square_class

EPS = {"linf": 2 / 255, "l2": 0.5}  # the paper's radii


class MeanColour(nn.Module):
    """Logits = each channel's mean: unbreakable on :func:`images` at the paper's radii."""

    def __init__(self):
        super().__init__()
        self.scale = nn.Parameter(torch.ones(()))  # torchattacks looks for the device in a parameter

    def forward(self, x):
        return self.scale * x.mean(dim=(2, 3))


def images(n: int, size: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 3
    x = 0.4 + 0.2 * torch.rand(n, 3, size, size, generator=g)
    x[torch.arange(n), y] += 0.2
    return x, y


class DispatchCount(TorchDispatchMode):
    """Counts the tensor operations dispatched (on a GPU, about one kernel launch each)."""

    def __init__(self):
        super().__init__()
        self.n = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.n += 1
        return func(*args, **(kwargs or {}))


def attack(cls, model, x, y, norm, queries):
    """The search's best image for every image, fooled or not (the attack's call returns the clean image
    where it failed, which would hide a difference): its one restart, seeded as the call seeds it."""
    with torch.random.fork_rng(devices=[x.device] if x.device.type == "cuda" else []):
        square = cls(model, norm=_TA_NORM[norm], eps=EPS[norm], n_queries=queries, n_restarts=1, p_init=0.8,
                     loss="margin", resc_schedule=True, seed=0)
        square.set_device(x.device)
        square.init_hyperparam(x)
        torch.manual_seed(0)
        return square.attack_single_run(x, y)[1]


def timed(fn, device):
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    out = fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - t0, out


def syncs(fn, device) -> int | None:
    if device.type != "cuda":
        return None
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            fn()
        finally:
            torch.cuda.set_sync_debug_mode("default")
    return sum("synchroniz" in str(w.message) for w in caught)


def main(argv=None) -> int:
    import torchattacks

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu")
    p.add_argument("--model", default="probe", choices=["probe", *list_models()])
    p.add_argument("--size", type=int, default=224, help="image side in pixels (default 224, the paper's)")
    p.add_argument("--images", type=int, default=150, help="images (default 150, the paper profile's)")
    p.add_argument("--queries", type=int, default=500, help="queries (default 500, the paper profile's)")
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args(argv)
    device = torch.device(args.device)
    x, y = (t.to(device) for t in images(args.images, args.size))
    torch.manual_seed(0)
    model = (MeanColour() if args.model == "probe" else build_model(args.model, 3)).to(device).eval()
    if args.model != "probe":
        with torch.no_grad():
            y = model(x).argmax(1)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU ({torch.get_num_threads()} threads)"
    print(f"{name}; model {args.model}; {args.images} images at {args.size} px; {args.queries} queries; "
          f"median of {args.repeats}")
    print(f"{'norm':>5} {'class':>12} {'operations':>11} {'syncs':>7} {'seconds':>8} {'ratio':>6}  identical")
    classes = {"torchattacks": torchattacks.Square, "ours": square_class()}
    for norm in EPS:
        runs = {k: (lambda cls=cls: attack(cls, model, x, y, norm, args.queries)) for k, cls in classes.items()}
        ops = {}
        for k, run in runs.items():
            with DispatchCount() as count:
                run()
            ops[k] = count.n
        n_syncs = {k: syncs(run, device) for k, run in runs.items()}
        times, identical, out = {k: [] for k in runs}, True, {}
        for _ in range(args.repeats):
            for k, run in runs.items():
                s, out[k] = timed(run, device)
                times[k].append(s)
            identical &= torch.equal(out["ours"], out["torchattacks"])
        base = statistics.median(times["torchattacks"])
        for k in runs:
            med = statistics.median(times[k])
            sync = "-" if n_syncs[k] is None else str(n_syncs[k])
            print(f"{norm:>5} {k:>12} {ops[k]:>11} {sync:>7} {med:>8.2f} {base / med:>6.2f}  "
                  f"{'yes' if identical else 'NO'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
