"""Run folders and atomic writes: nothing already computed is lost.

A run folder ``<results>/<run_id>/`` holds ``config.json``, ``split.json``,
``history.json`` (per-epoch log), ``metrics.json``, ``predictions.csv`` (per
test image, every attack) and ``done`` last; checkpoints go to
``<results>/<run_id>/ckpt/`` (git-ignored). Every file is written to a
temporary name and renamed, so an interruption never leaves half a file.
"""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import pandas as pd
import torch


def _atomic(path: Path, write) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_json(path, obj) -> None:
    def w(tmp):
        with open(tmp, "w") as f:
            json.dump(obj, f, indent=1, sort_keys=True)
            f.write("\n")
    _atomic(path, w)


def read_json(path):
    with open(path) as f:
        return json.load(f)


def write_csv(path, frame: pd.DataFrame) -> None:
    _atomic(path, lambda tmp: frame.to_csv(tmp, index=False, float_format="%.6g"))


def save_torch(path, obj) -> None:
    _atomic(path, lambda tmp: torch.save(obj, tmp))


def load_torch(path, map_location="cpu"):
    return torch.load(path, map_location=map_location, weights_only=True)


class RunDir:
    """The files of one run."""

    def __init__(self, results: str | Path, run_id: str):
        self.path = Path(results) / run_id

    def __truediv__(self, name: str) -> Path:
        return self.path / name

    @property
    def ckpt(self) -> Path:
        return self.path / "ckpt"

    @property
    def trained(self) -> bool:
        return (self.path / "history.json").exists() and read_json(self.path / "history.json").get("finished", False)

    @property
    def done(self) -> bool:
        return (self.path / "done").exists()

    def mark_done(self) -> None:
        _atomic(self.path / "done", lambda tmp: Path(tmp).write_text("ok\n"))


def benchmark_paths(results_dir) -> list[Path]:
    """The stored benchmarks (``benchmark*.json``, benchmarks/train_throughput.py) of a results folder and
    of the stores one level below it: given the results root, every profile's. A benchmark measures
    hardware on random images, so the CPU one stored with cpu-real and the GPU one stored with the paper
    profile speak to every chapter."""
    root = Path(results_dir)
    return sorted(root.glob("benchmark*.json")) + sorted(root.glob("*/benchmark*.json"))


def benchmark_rows(results_dir, key: str) -> list[dict]:
    """The ``key`` rows ("throughput" or "method_cost") of every stored benchmark, in path order."""
    return [r for path in benchmark_paths(results_dir) for r in read_json(path).get(key, [])]
