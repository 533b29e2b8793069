"""Command line: ``python -m dpaat_lib`` (or ``dpaat``).

    dpaat quick [--data DIR]                 STD, AT, SAT, AMAT, DPAAT on a small CNN, CPU, minutes
    dpaat grid --profile paper --data DIR    a whole profile's grid, resumable
    dpaat train --model resnet34 --method dpaat --data DIR [--profile ...]   one run
    dpaat prepare --profile paper --data DIR decode the profile's images once into the cache
    dpaat extras --profile paper --data DIR  eps curves, stronger attacks, Grad-CAM from the checkpoints
    dpaat slim-copy --profile paper --data DIR --out DIR2   a copy with only the images the profile uses
    dpaat compact-store results/cpu-real     gzip the large run files of an older store (same content)
    dpaat synthetic DIR                      write the synthetic stand-in folder
    dpaat models                             list the model names
"""
from __future__ import annotations

import argparse
import sys
from dataclasses import fields
from pathlib import Path

import pandas as pd

from . import data, experiment, grid, precompute, pretrained, profiles, report, store
from .data import DataError
from .methods import METHODS
from .models import list_models
from .training import SPEED_MODES


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """``--help`` shows each option's default where it has one (not for unset options, whose help
    says what they fall back to)."""

    def _get_help_string(self, action):
        if action.default is None or action.default is False or action.default is argparse.SUPPRESS \
                or action.default == []:
            return action.help
        return super()._get_help_string(action)


def _common(p: argparse.ArgumentParser, default_profile: str, one_run: bool = False) -> None:
    """The options every command shares; ``one_run`` (``train``): the grid's lists hidden from its help (and
    refused by :func:`main`)."""
    lists = argparse.SUPPRESS if one_run else None
    p.add_argument("--profile", default=default_profile, choices=list(profiles.PROFILES),
                   help="the profile: data, models, image size, epochs, seeds (README, 'Profiles')")
    p.add_argument("--data", help="folder of a HAM10000 copy (official layout); without it the quick profile "
                                  "uses the synthetic stand-in")
    p.add_argument("--results", help="results store (default: ./results/<profile>, as the book)")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:0 ...")
    p.add_argument("--models", nargs="+", choices=list_models(),
                   help=lists or "models to run (default: the profile's)")
    p.add_argument("--methods", nargs="+", choices=METHODS,
                   help=lists or f"methods to run (default: {' '.join(profiles.MAIN_METHODS)})")
    p.add_argument("--seeds", nargs="+", type=int, help="training seeds (default: the profile's)")
    p.add_argument("--image-size", type=int, help="image side in px (default: the profile's)")
    p.add_argument("--epochs", type=int, help="epoch limit (default: the profile's)")
    p.add_argument("--time-budget", type=float, help="seconds; stop cleanly after it, resumable")
    p.add_argument("--weights", help="'imagenet' (torchvision's ImageNet weights of each CNN, downloaded once), a "
                                     "folder of <model>.pth state-dict files, or one such file: two-phase "
                                     "fine-tuning as in the paper instead of training from scratch")
    p.add_argument("--compile", dest="compile_mode", choices=SPEED_MODES,
                   help="train through torch.compile in this mode (reduce-overhead: CUDA graphs), or cuda-graph: "
                        "the library's own CUDA graph of each training step, nothing compiled (CUDA only; AMAT "
                        "trains eagerly); a speed option that leaves the runs' identities unchanged")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--threads", type=int, help="torch CPU threads (default: the profile's cpu_threads, else "
                                               "torch's choice)")
    p.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                   help="override a profile field (repeatable), e.g. --set eta=0.25 --set mu=epoch; --set eps0=1.0 "
                        "scales the PGD step with the radius unless train_step_size is set too; --set linf_eps=8/255 "
                        "evaluates FGSM and I-FGSM at another Linf radius (the model of a stored run with its "
                        "checkpoint is evaluated, not trained again)")
    p.add_argument("--book", action="store_true",
                   help="every run the book loads: the main grid plus the ablation (D-A, D-B) on the ablation models")
    p.add_argument("--claim", metavar="DIR",
                   help="cooperative mode: processes given the same fresh DIR share the runs (each takes the next "
                        "unclaimed one), so several can share one GPU")
    p.add_argument("--extras", action="store_true",
                   help="after each run, compute what the book derives from its checkpoint (eps curves, stronger "
                        "attacks, Grad-CAM), as on a GPU whose checkpoints do not outlive the call")
    p.add_argument("--finish-by", type=float, metavar="SECONDS",
                   help="with --claim: start a run only if it is expected (from the runs stored in --results) to "
                        "finish, extras included, within SECONDS; for the last call on a lent GPU")
    p.add_argument("--sharing", type=int, metavar="N",
                   help="with --claim: N processes share the device (recorded in each run's history; --finish-by "
                        "scales the stored runs' times by it)")
    p.add_argument("--plan", action="store_true",
                   help="train nothing: list the grid's runs, what each lacks and its expected seconds (--sharing)")
    p.add_argument("--workers-for", type=float, metavar="SECONDS",
                   help="train nothing: how many processes (8, 4, 2 or 1) should share the device in a call that "
                        "leaves each run SECONDS, so that the runs that finish do the most of the grid; the count "
                        "is the last line printed (scripts/device_grid.sh WORKERS=auto)")
    p.add_argument("--retrain-lost-extras", action="store_true",
                   help="with --claim --extras: train again a finished run whose extras are missing and whose "
                        "checkpoint is gone (its folder moves to <results>/superseded/)")


_TRUE, _FALSE = ("1", "true", "yes"), ("0", "false", "no")


def _overrides(pairs) -> dict:
    """``["eta=0.25", "models=resnet34,mobilenet_v2"]`` -> Profile overrides, typed as the profile's fields.
    A value that does not fit its field's type raises a ValueError naming the field and the type."""
    types = {f.name: f.type for f in fields(profiles.Profile)}
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or key not in types:
            raise ValueError(f"--set expects FIELD=VALUE with FIELD one of {sorted(types)}, got {pair!r}")
        t = str(types[key])
        try:
            if t.startswith("tuple"):
                items = [v for v in value.split(",") if v]
                out[key] = tuple(int(v) for v in items) if "int" in t else tuple(items)
            elif value.lower() == "none" and "None" in t:
                out[key] = None
            elif t.startswith("bool"):
                if value.lower() not in _TRUE + _FALSE:
                    raise ValueError(value)
                out[key] = value.lower() in _TRUE
            elif t.startswith("int"):
                out[key] = int(value)
            elif t.startswith("float"):  # a fraction too: --set linf_eps=8/255
                out[key] = profiles.number(value)
            else:
                out[key] = value
        except ValueError:
            hint = {"bool": f" (one of {', '.join(_TRUE + _FALSE)})"}.get(t, "")
            raise ValueError(f"--set {pair}: field {key!r} takes {t}{hint}; {value!r} is not one") from None
    return out


def _check_data_folder(folder) -> None:
    """``--data`` must name an existing folder (say so before any profile or store is read)."""
    if folder is None:
        return
    path = Path(folder)
    if not path.exists():
        raise DataError(f"--data {folder}: the folder does not exist. Pass the folder of your HAM10000 copy "
                        f"(the one that holds {data.METADATA_FILE})")
    if not path.is_dir():
        raise DataError(f"--data {folder} is a file, not a folder. Pass the folder that holds "
                        f"{data.METADATA_FILE}")


def _profile(args):
    over = {**dict(image_size=args.image_size, epochs=args.epochs, seeds=args.seeds), **_overrides(args.set)}
    prof = profiles.profile_for(args.profile, args.data, **over)
    if args.threads is None:
        profiles.pin_cpu_threads(prof, args.device)
    elif prof.cpu_threads is not None and args.threads != prof.cpu_threads and str(args.device).startswith("cpu"):
        print(f"dpaat: note: --threads {args.threads}, but profile {prof.name!r} computes with {prof.cpu_threads} "
              "(its committed runs were trained so): the thread count changes a CPU run's numbers as a seed "
              "would, so runs trained now will not reproduce the store's", file=sys.stderr, flush=True)
    return prof


def _gpu_profile_note(prof, device, cfgs, results) -> str | None:
    """A note when a GPU-sized profile (the paper's: six CNNs at 224 px) is about to train on the CPU, which
    is where ``dpaat train`` and ``dpaat grid`` go without ``--device``: days of computing, not a mistake
    the command may refuse (a book page does refuse), but one to say before the first epoch."""
    if not prof.gpu or not str(device).startswith("cpu"):
        return None
    absent = sum(experiment.load_result(c, results) is None for c in cfgs)
    if not absent:
        return None
    return (f"dpaat: note: profile {prof.name!r} is sized for a GPU ({prof.image_size} px, up to {prof.epochs} "
            f"epochs) and {absent} run(s) will train on the CPU: hours to days each. Add --device cuda on a "
            "GPU, or use --profile cpu-real on a CPU (a small CNN at 32 px: seconds to a minute and a half an epoch)")


def _grid(args, models, methods) -> int:
    if (args.finish_by is not None or args.retrain_lost_extras) and not args.claim and not args.plan:
        raise ValueError("--finish-by and --retrain-lost-extras work in the cooperative mode: add --claim DIR")
    if args.retrain_lost_extras and not args.extras:
        raise ValueError("--retrain-lost-extras trains runs again for their extras: add --extras")
    prof = _profile(args)
    results = args.results or str(Path("results") / prof.name)  # as the book: results/<profile>
    data = experiment.resolve_data(profiles.data_config(prof), args.data, results)
    print(prof.describe(), flush=True)
    if models and set(models) != set(prof.models):
        print(f"models given: {', '.join(models)} (not the profile's)", flush=True)
    if args.book:  # --methods, where given, selects among the book's runs too
        cfgs = [c for c in profiles.book_configs(prof, data) if (models is None or c.model in models)
                and (not args.methods or c.method.name in args.methods)]
    else:
        cfgs = profiles.configs(prof, data, models=models, methods=methods)
    if not cfgs:
        raise ValueError("no runs selected: the models, methods and seeds given leave none (seeds "
                         f"{list(prof.seeds)}, models {list(models or prof.models)}); give at least one of each")
    cfgs, weight_files = pretrained.configure(cfgs, args.weights)  # unchanged without --weights
    print(f"results: {results}", flush=True)
    if args.plan:
        print(precompute.plan_table(cfgs, results, prof, sharing=args.sharing, compile_mode=args.compile_mode)
              .drop(columns="seconds")
              .to_string(index=False))
        return 0
    if args.workers_for is not None:
        plan = precompute.plan_table(cfgs, results, prof, sharing=8, compile_mode=args.compile_mode)
        left = plan[(plan["state"] != "done") & plan["seconds"].notna()]
        best, work = grid.workers_for(list(left["seconds"]), 8, args.workers_for)
        print(f"{len(left)} runs left with an estimate; work done within {args.workers_for:.0f} s per run, in seconds "
              f"alone on the device: " + ", ".join(f"{k} processes {w:.0f}" for k, w in work.items()))
        print(best)
        return 0
    note = _gpu_profile_note(prof, args.device, cfgs, results)
    if note:
        print(note, file=sys.stderr, flush=True)
    kw = dict(results=results, data_root=args.data, device=args.device, progress=not args.no_progress,
              time_budget_s=args.time_budget, weights_path=weight_files or None, compile_mode=args.compile_mode)
    if args.claim:
        after = None
        if args.extras:
            def after(r):
                got = precompute.run_extras(r, prof, results, args.data, args.device)
                print(f"{r.run_id}: extras: {', '.join(got) or 'none'}", flush=True)
        redo = None
        if args.extras and args.retrain_lost_extras:
            def redo(c):
                r = experiment.load_result(c, results)
                lost = precompute.missing_extras(r, prof, results)
                if lost and not (store.RunDir(results, c.run_id).ckpt / "best.pt").exists():
                    verb = "is" if len(lost) == 1 else "are"
                    return f"its {report.and_list(lost)} {verb} missing and its checkpoint is gone"
                return None
        grid.run_claimed(cfgs, claim_dir=args.claim, after_run=after, finish_by_s=args.finish_by, redo=redo,
                         sharing=args.sharing, log=lambda m: print(m, flush=True), **kw)
        lost = grid.claimed_by_ended_processes(cfgs, results, args.claim)
        if lost:
            print(f"dpaat: {len(lost)} run(s) are unfinished and claimed in {args.claim} by processes that have ended "
                  f"({', '.join(lost)}): no process of this claim folder will train them; call again with a new "
                  "--claim folder to continue them", file=sys.stderr, flush=True)
        failed = sorted(p.name[:-len(".failed")] for p in Path(args.claim).glob("*.failed"))
        if failed:
            print(f"dpaat: {len(failed)} run(s) of this claim folder failed (each traceback is in the output of the "
                  f"process that ran it): {', '.join(failed)}", file=sys.stderr, flush=True)
        return 3 if lost or failed else 0
    done = grid.run_grid(cfgs, **kw)
    if args.extras:
        precompute.precompute_all(prof, cfgs, results, args.data, args.device)
    if done:
        table = grid.results_table(done)
        with pd.option_context("display.width", 200, "display.max_columns", 20, "display.precision", 3):
            print(table.to_string(index=False))
    return 0 if len(done) == len(grid.ordered(cfgs)) else 3


def _prepare_or_extras(args) -> int:
    prof = _profile(args)
    results = args.results or str(Path("results") / prof.name)
    data = experiment.resolve_data(profiles.data_config(prof), args.data, results)
    if args.command == "prepare":
        split, tensors = experiment.load_data(data, args.data)
        print(", ".join(f"{k}: {tuple(v.x.shape)}" for k, v in tensors.items()), flush=True)
        return 0
    cfgs = profiles.book_configs(prof, data)
    precompute.precompute_all(prof, cfgs, results, args.data, args.device, log=lambda m: print(m, flush=True))
    return 0


def _slim_copy(args) -> int:
    if not args.data:
        raise ValueError("slim-copy needs --data, the folder of the HAM10000 copy to slim")
    prof = _profile(args)
    split = experiment.make_split_for(profiles.data_config(prof), Path(args.data))
    counts = data.slim_copy(args.data, [i for ids in split.values() for i in ids], args.out)
    print(f"{args.out}: {counts['kept']} images of the {prof.name} split copied, {counts['empty']} left as "
          f"empty files; the metadata, its digest and the split are unchanged", flush=True)
    return 0


def main(argv=None) -> int:
    try:
        list_models()  # imports the modules of $DPAAT_MODELS: their CNNs become choices below
    except (ImportError, ValueError) as err:
        print(f"dpaat: error: {err}", file=sys.stderr)
        return 2
    parser = argparse.ArgumentParser(prog="dpaat", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)

    def add(name, **kw):
        return sub.add_parser(name, formatter_class=_HelpFormatter, **kw)
    _common(add("quick", help="the quick profile: five methods, small CNN, CPU"), "quick")
    _common(add("grid", help="a profile's whole grid"), "paper")
    t = add("train", help="one run (trained and evaluated, or loaded)")
    _common(t, "paper", one_run=True)
    t.add_argument("--model", required=True, choices=list_models(), help="the model")
    t.add_argument("--method", required=True, choices=METHODS, help="the training method")
    _common(add("prepare", help="decode the profile's images once into the cache (before several "
                                "processes start)"), "paper")
    _common(add("extras", help="eps curves, stronger attacks and Grad-CAM of the finished runs that "
                               "have checkpoints"), "paper")
    c = add("slim-copy", help="copy a HAM10000 folder with only the images a profile's split uses "
                              "(the others as empty files), to carry the data to a lent GPU")
    _common(c, "paper")
    c.add_argument("--out", required=True, help="the new folder")
    k = add("compact-store", help="gzip predictions.csv and split.json of every run under a results folder "
                                  "written by an older version (the book reads both; the content is unchanged)")
    k.add_argument("results", nargs="+", help="results folders, e.g. results/cpu-real")
    s = add("synthetic", help="write the synthetic stand-in in HAM10000's layout")
    s.add_argument("folder", help="where to write it")
    s.add_argument("--n-per-class", type=int, default=150, help="images per class")
    s.add_argument("--size", type=int, default=96, help="image side in px")
    s.add_argument("--seed", type=int, default=0, help="random seed")
    add("models", help="list model names (with those of the modules named in $DPAAT_MODELS)")
    args = parser.parse_args(argv)
    if args.command == "train" and (args.models or args.methods or args.book):  # the grid's, which one run ignores
        parser.error("train runs one --model with one --method; --models, --methods and --book are for `dpaat grid`")
    if getattr(args, "threads", None) is not None:
        if args.threads < 1:
            parser.error(f"--threads must be >= 1, got {args.threads}")
        import torch
        torch.set_num_threads(args.threads)
    try:
        if getattr(args, "device", None) is not None:
            from .training import check_device
            check_device(args.device)
        _check_data_folder(getattr(args, "data", None))
        if args.command == "models":
            print("\n".join(list_models()))
            return 0
        if args.command == "synthetic":
            from .synthetic import make_synthetic_ham
            print(make_synthetic_ham(args.folder, n_per_class=args.n_per_class, size=args.size, seed=args.seed))
            return 0
        if args.command == "train":
            return _grid(args, [args.model], [args.method])
        if args.command == "slim-copy":
            return _slim_copy(args)
        if args.command == "compact-store":
            for folder in args.results:
                got = store.compact_store(folder)
                print(f"{folder}: {got['folders']} run folders compacted, {got['bytes_before'] / 2**20:.1f} MiB -> "
                      f"{got['bytes_after'] / 2**20:.1f} MiB", flush=True)
            return 0
        if args.command in ("prepare", "extras"):
            return _prepare_or_extras(args)
        return _grid(args, args.models, args.methods or profiles.MAIN_METHODS)
    except (DataError, ValueError, OSError, store.RunBusy) as err:  # OSError: a missing file, a full disk
        print(f"dpaat: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
