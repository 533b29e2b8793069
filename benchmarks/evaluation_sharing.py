"""Seconds of one run's evaluation (method.md section 4): every attack run on its own vs the shorter attacks
read from the longer ones.

The paper's five attacks take 101 attack steps per test image when each runs alone (FGSM 1, I-FGSM 10 and
20, PGD 20 and 50). 10-step I-FGSM is the first half of 20-step I-FGSM and 20-step PGD the first 20 steps
of 50-step PGD (same radius, step, start and seed), so ``dpaat_lib.evaluation.evaluate`` reads them from
those runs' iterates: 71 steps per image, the same predictions bit for bit (the last column says whether
they were on every repeat: on a GPU a non-deterministic kernel may make two runs of one attack differ).
Both ways alternate in the same process, on the same model and images; the ratio is of the medians.
Example::

    OMP_NUM_THREADS=1 python benchmarks/evaluation_sharing.py                  # CPU, ~3 min a model
    python benchmarks/evaluation_sharing.py --device cuda --models resnet34 --size 224 --images 897
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

from dpaat_lib import data as D
from dpaat_lib.attacks import paper_attacks
from dpaat_lib.evaluation import evaluate
from dpaat_lib.models import build_model, list_models


def seconds(model, test, specs, share: bool, device):
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    frame = evaluate(model, test, specs, ("a", "b", "c"), device=device, share=share)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - t0, frame


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu")
    p.add_argument("--models", nargs="+", default=["smallcnn"], choices=list_models())
    p.add_argument("--size", type=int, default=32, help="image side in pixels (default 32, the cpu-real profile's)")
    p.add_argument("--images", type=int, default=256, help="test images (the paper split has 897)")
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args(argv)
    device = torch.device(args.device)
    g = torch.Generator().manual_seed(0)
    test = D.SplitTensors(x=torch.randint(0, 256, (args.images, 3, args.size, args.size), dtype=torch.uint8,
                                          generator=g),
                          y=torch.randint(0, 3, (args.images,), generator=g),
                          image_ids=[f"i{k}" for k in range(args.images)])
    specs = paper_attacks()
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU ({torch.get_num_threads()} threads)"
    print(f"{name}; {args.images} images at {args.size} px; the paper's five attacks; {args.repeats} repeats")
    print(f"{'model':>16} {'alone s':>9} {'shared s':>9} {'ratio':>6}  identical")
    for model_name in args.models:
        torch.manual_seed(0)
        model = build_model(model_name, 3).to(device).eval()
        seconds(model, test, specs[:1], True, device)  # warm-up: allocator, kernels
        times, identical = {False: [], True: []}, True
        for _ in range(args.repeats):
            frames = {}
            for share in (False, True):
                s, frames[share] = seconds(model, test, specs, share, device)
                times[share].append(s)
            identical &= frames[True].equals(frames[False])
        alone, shared = statistics.median(times[False]), statistics.median(times[True])
        print(f"{model_name:>16} {alone:9.2f} {shared:9.2f} {alone / shared:6.2f}  {'yes' if identical else 'NO'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
