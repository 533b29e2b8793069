"""Images per second of PGD-7 adversarial training: a paper-style loop vs the library's path.

Both loops run in the same process on the same card, one epoch each per CNN,
batch 32 (method.md section 6), AT with the training adversary (PGD-L2, 7 steps):

(a) paper-style: fp32, NCHW, a torch DataLoader over decoded images (flips on
    the CPU workers), no compilation;
(b) library: ``dpaat_lib.training.train_epoch``: uint8 data resident on the
    device, flips there, bf16 autocast and channels_last on CUDA
    (``--compile`` adds torch.compile).

Prints images/s of each and the ratio (b)/(a), with the card's name. Speed is
a ratio against a baseline run in the same process, never an absolute number
in a test. Example (GPU)::

    python benchmarks/train_throughput.py --device cuda --size 224 --images 2400
    python benchmarks/train_throughput.py --device cpu --size 32 --images 64 --models smallcnn   # smoke
"""
from __future__ import annotations

import argparse
import contextlib
import json
import time

import torch
from torch.utils.data import DataLoader, Dataset

from dpaat_lib.attacks import training_attack
from dpaat_lib.methods import MethodConfig, build_method
from dpaat_lib.models import PAPER_MODELS, build_model, list_models, min_input_size
from dpaat_lib.training import train_epoch


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


def paper_style_epoch(model_name, x, y, device, batch_size, workers) -> float:
    torch.manual_seed(0)
    model = build_model(model_name).to(device)
    method = build_method(MethodConfig(name="at", attack=training_attack()), len(y))
    opt = torch.optim.Adam(model.parameters(), lr=3e-4)
    loader = DataLoader(DecodedImages(x, y), batch_size=batch_size, shuffle=True, num_workers=workers,
                        pin_memory=device.type == "cuda", drop_last=False)
    model.train()
    _sync(device)
    t0 = time.perf_counter()
    for xb, yb, idx in loader:
        xb, yb = xb.to(device, non_blocking=True), yb.to(device, non_blocking=True)
        loss, _ = method.loss(model, xb, yb, idx)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    _sync(device)
    return len(y) / (time.perf_counter() - t0)


def library_epoch(model_name, x, y, device, batch_size, fast: bool, compile_model: bool) -> float:
    torch.manual_seed(0)
    model = build_model(model_name).to(device)
    if fast:
        model = model.to(memory_format=torch.channels_last)
    net = torch.compile(model) if compile_model else model
    gen = torch.Generator(device=device).manual_seed(0)
    method = build_method(MethodConfig(name="at", attack=training_attack()), len(y), generator=gen)
    opt = torch.optim.Adam(model.parameters(), lr=3e-4)
    xd, yd = x.to(device), y.to(device)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16) if fast else contextlib.nullcontext()
    order = torch.randperm(len(y), generator=torch.Generator().manual_seed(0)).to(device)
    _sync(device)
    t0 = time.perf_counter()
    train_epoch(net, method, opt, xd, yd, order, batch_size=batch_size, flips=gen, channels_last=fast,
                autocast=autocast)
    _sync(device)
    return len(y) / (time.perf_counter() - t0)


def main(argv=None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--models", nargs="+", default=list(PAPER_MODELS), choices=list_models())
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--images", type=int, default=2400, help="images in the epoch (random data: speed only)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--workers", type=int, default=4)
    p.add_argument("--compile", action="store_true", help="torch.compile the library path")
    p.add_argument("--json", help="also write the rows to this file")
    args = p.parse_args(argv)
    device = torch.device(args.device)
    card = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU ({torch.get_num_threads()} threads)"
    fast = device.type == "cuda"  # bf16 + channels_last only pay off on a GPU
    g = torch.Generator().manual_seed(0)
    rows = []
    print(f"card: {card}; PGD-7 AT, batch {args.batch_size}, {args.images} images, {args.size} px")
    print(f"{'model':<15}{'paper img/s':>12}{'library img/s':>15}{'ratio':>8}")
    for name in args.models:
        size = max(args.size, min_input_size(name))
        x = torch.randint(0, 256, (args.images, 3, size, size), dtype=torch.uint8, generator=g)
        y = torch.randint(0, 3, (args.images,), generator=g)
        a = paper_style_epoch(name, x, y, device, args.batch_size, args.workers)
        b = library_epoch(name, x, y, device, args.batch_size, fast, args.compile)
        rows.append({"model": name, "card": card, "size": size, "paper_img_s": a, "library_img_s": b,
                     "ratio": b / a, "bf16_channels_last": fast, "compile": args.compile})
        print(f"{name:<15}{a:>12.1f}{b:>15.1f}{b / a:>8.2f}", flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)
    return rows


if __name__ == "__main__":
    main()
