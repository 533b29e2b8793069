"""Command line: ``python -m dpaat_lib`` (or ``dpaat``).

    dpaat quick [--data DIR]                 STD, AT, SAT, AMAT, DPAAT on a small CNN, CPU, minutes
    dpaat grid --profile paper --data DIR    a whole profile's grid, resumable
    dpaat train --model resnet34 --method dpaat --data DIR [--profile ...]   one run
    dpaat synthetic DIR                      write the synthetic stand-in folder
    dpaat models                             list the model names
"""
from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path

import pandas as pd

from . import experiment, grid, profiles
from .data import DataError
from .methods import METHODS
from .models import list_models


def _common(p: argparse.ArgumentParser, default_profile: str) -> None:
    p.add_argument("--profile", default=default_profile, choices=list(profiles.PROFILES))
    p.add_argument("--data", help="folder of a HAM10000 copy (official layout); without it the quick profile "
                                  "uses the synthetic stand-in")
    p.add_argument("--results", help="results store (default: ./results/<profile>, as the book)")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:0 ...")
    p.add_argument("--models", nargs="+", choices=list_models())
    p.add_argument("--methods", nargs="+", choices=METHODS)
    p.add_argument("--seeds", nargs="+", type=int)
    p.add_argument("--image-size", type=int)
    p.add_argument("--epochs", type=int)
    p.add_argument("--time-budget", type=float, help="seconds; stop cleanly after it, resumable")
    p.add_argument("--weights", help="local state-dict file (e.g. ImageNet weights of the model): two-phase "
                                     "fine-tuning as in the paper instead of training from scratch")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--shard", help="K/N: run only the models with index %% N == K, so N processes can share "
                                   "one GPU (a model's AMAT and STD runs stay in one shard)")


def _grid(args, models, methods) -> int:
    prof = profiles.profile_for(args.profile, args.data, image_size=args.image_size, epochs=args.epochs,
                                seeds=args.seeds)
    results = args.results or str(Path("results") / prof.name)  # as the book: results/<profile>
    data = experiment.resolve_data(profiles.data_config(prof), args.data, results)
    print(prof.describe(), flush=True)
    cfgs = profiles.configs(prof, data, models=models, methods=methods)
    if args.shard:
        cfgs = grid.shard(cfgs, args.shard)
    if args.weights:
        digest = experiment.weights_digest(args.weights)
        cfgs = [replace(c, train=replace(c.train, weights=digest)) for c in cfgs]
    print(f"results: {results}", flush=True)
    done = grid.run_grid(cfgs, results=results, data_root=args.data, device=args.device,
                         progress=not args.no_progress, time_budget_s=args.time_budget, weights_path=args.weights)
    if done:
        table = grid.results_table(done)
        with pd.option_context("display.width", 200, "display.max_columns", 20, "display.precision", 3):
            print(table.to_string(index=False))
    return 0 if len(done) == len(grid.ordered(cfgs)) else 3


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="dpaat", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    _common(sub.add_parser("quick", help="the quick profile: five methods, small CNN, CPU"), "quick")
    _common(sub.add_parser("grid", help="a profile's whole grid"), "paper")
    t = sub.add_parser("train", help="one run (trained and evaluated, or loaded)")
    _common(t, "paper")
    t.add_argument("--model", required=True, choices=list_models())
    t.add_argument("--method", required=True, choices=METHODS)
    s = sub.add_parser("synthetic", help="write the synthetic stand-in in HAM10000's layout")
    s.add_argument("folder")
    s.add_argument("--n-per-class", type=int, default=150)
    s.add_argument("--size", type=int, default=96)
    s.add_argument("--seed", type=int, default=0)
    sub.add_parser("models", help="list model names")
    args = parser.parse_args(argv)
    if getattr(args, "threads", None):
        import torch
        torch.set_num_threads(args.threads)
    try:
        if args.command == "models":
            print("\n".join(list_models()))
            return 0
        if args.command == "synthetic":
            from .synthetic import make_synthetic_ham
            print(make_synthetic_ham(args.folder, n_per_class=args.n_per_class, size=args.size, seed=args.seed))
            return 0
        if args.command == "train":
            return _grid(args, [args.model], [args.method])
        return _grid(args, args.models, args.methods or profiles.MAIN_METHODS)
    except (DataError, ValueError, FileNotFoundError) as err:
        print(f"dpaat: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
