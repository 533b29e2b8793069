"""Load or compute one run: data -> split -> training -> evaluation -> metrics.

``run(config, ...)`` is what notebooks and the command line call. A run whose
folder is complete is loaded without the dataset or a GPU; otherwise the
missing stages are computed (training resumes from its last epoch).
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass, replace
from pathlib import Path

import pandas as pd
import torch

from . import data as D
from . import pretrained, profiles, store
from .config import DataConfig, RunConfig
from .evaluation import evaluate, round_scores
from .metrics import compute_metrics
from .models import check_input_size
from .synthetic import make_synthetic_ham
from .training import load_trained, train_run

# The synthetic stand-in holds all seven classes, the paper's three first (160 images each, drawn
# exactly as when the set had only those three, so their images and the 3-class digest are unchanged)
# and the other four fewer, so the 7-class task is imbalanced as on the real data.
SYNTHETIC_ARGS = {"n_per_class": {"nv": 160, "mel": 160, "bkl": 160, "bcc": 48, "akiec": 32, "vasc": 20, "df": 20},
                  "size": 64, "seed": 0, "classes": D.ALL_CLASSES}


def default_cache_dir() -> Path:
    """Decoded-image cache: $DPAAT_CACHE, else ~/.cache/dpaat."""
    return Path(os.environ.get("DPAAT_CACHE", Path.home() / ".cache" / "dpaat"))


def synthetic_root(cache_dir: Path | None = None) -> Path:
    """Where the synthetic stand-in is written (made on first use, deterministic)."""
    root = (cache_dir or default_cache_dir()) / "synthetic-ham"
    return make_synthetic_ham(root, **SYNTHETIC_ARGS)


def data_root_for(source: str, data_root: str | Path | None, cache_dir: Path | None = None) -> Path | None:
    if source == "synthetic":
        return synthetic_root(cache_dir)
    if source != "ham10000":
        raise ValueError(f"unknown data source {source!r}; use 'ham10000' or 'synthetic'")
    return None if data_root is None else Path(data_root)


def resolve_data(data: DataConfig, data_root: str | Path | None, results: str | Path | None = None,
                 cache_dir: Path | None = None) -> DataConfig:
    """Fill in ``data.digest`` from the data's content, and for HAM10000 ``data.source_size`` from its images
    (None for the 200x150 copy this book's results come from).

    Without the data folder, both are taken from stored results of the
    same source (so a published book re-executes without the dataset); with
    neither, a :class:`dpaat_lib.data.DataError` says what to pass.
    """
    root = data_root_for(data.source, data_root, cache_dir)
    if root is not None and D.metadata_path(root) is not None:
        meta = D.read_metadata(root, data.classes)
        size = D.source_size(meta) if data.source == "ham10000" else None  # the stand-in: drawn by our code
        resolved = replace(data, digest=D.dataset_digest(meta),
                           source_size=None if size == D.BOOK_COPY_SIZE else size)
        if results is not None:
            check_data_files(resolved, root, meta, results)
        return resolved
    digests = set()
    if results is not None and Path(results).exists():
        for cfg in Path(results).glob("*/config.json"):
            d = store.read_json(cfg)["data"]
            if d["source"] == data.source and tuple(d["classes"]) == tuple(data.classes):
                digests.add((d["digest"], d.get("source_size")))
    if len(digests) == 1:
        digest, size = digests.pop()
        return replace(data, digest=digest, source_size=size)
    where = f"at {root}" if root is not None else "(no data folder was given)"
    stored = (f"results of {len(digests)} different datasets are stored in {results}, so they cannot say which"
              if digests else f"no results stored in {results} say which data to use" if results is not None
              else "no results store was given to identify the data from")
    raise D.DataError(f"no HAM10000 metadata {where}, and {stored}. Pass the folder of your HAM10000 copy "
                      "(command line: --data DIR; Python: data_root=DIR), in the official layout: "
                      "HAM10000_metadata.csv, or Dataverse's HAM10000_metadata.tab, plus "
                      "HAM10000_images_part_1/_part_2 or images/; or use the synthetic stand-in (command line: "
                      "--profile quick; Python: source='synthetic')."
                      + (D._hint_subfolder(Path(root)) if root is not None and Path(root).is_dir() else ""))


def _files_key(data: DataConfig) -> str:
    """Under which resolution a store records its image files (:func:`dpaat_lib.store.read_data_files`)."""
    return data.source_size or D.BOOK_COPY_SIZE


def _edited(results, root: Path, recorded: dict[str, int], here: dict[str, int]) -> None:
    """Raise DataError where a file of ``root`` has another byte size than the one ``results`` recorded."""
    differ = sorted(i for i, b in recorded.items() if b and here.get(i) and here[i] != b)
    if differ:
        first = differ[0]
        raise D.DataError(
            f"{results} holds runs computed from other image files than those in {root}: {len(differ)} image(s) "
            f"differ in byte size from the ones its runs were computed from (first: {first}, {here[first]} bytes "
            f"here, {recorded[first]} recorded). The metadata and the resolution are the same, so the stored runs "
            "would be shown as yours: your images were edited, or come from another copy. Write this copy's runs "
            "to another results folder (--results DIR, or a page's results_root), or restore the original images.")


def check_data_files(data: DataConfig, root: Path, meta: pd.DataFrame, results) -> None:
    """Raise DataError if ``results`` recorded other byte sizes for the image files of the copy ``root`` (as its
    metadata ``meta`` from :func:`dpaat_lib.data.read_metadata` finds them) than they have now
    (:func:`dpaat_lib.store.read_data_files`): a copy whose images were edited in place, or another copy with
    the same metadata and resolution, must not be served the runs of the original. A slim copy's empty files,
    images the store never used and images of classes outside ``meta`` are not compared. HAM10000 only (the
    stand-in is drawn by our code)."""
    if data.source != "ham10000":
        return
    recorded = store.read_data_files(results).get(_files_key(data), {})
    if recorded:
        _edited(results, root, recorded, D.file_bytes(dict(zip(meta["image_id"], meta["path"])), recorded))


def record_data_files(data: DataConfig, root: Path, image_ids, results) -> None:
    """Add the byte sizes of ``image_ids``' files in ``root`` to what ``results`` records (a run is about to be
    computed from them); an image recorded with another size raises, as in :func:`check_data_files`."""
    if data.source != "ham10000":
        return
    files = store.read_data_files(results)
    mine = files.setdefault(_files_key(data), {})
    here = {i: b for i, b in D.file_bytes(D.find_images(root), image_ids).items() if b}  # a slim copy's: 0
    _edited(results, root, mine, here)
    if any(i not in mine for i in here):
        mine.update(here)
        store.write_data_files(results, files)


def make_split_for(data: DataConfig, root: Path) -> dict[str, list[str]]:
    meta = D.read_metadata(root, data.classes)
    return D.make_split(meta, seed=data.split_seed, n_train=data.n_train, n_test=data.n_test,
                        n_val=data.n_val, lesion_aware=data.lesion_aware, test_fraction=data.test_fraction,
                        val_fraction=data.val_fraction)


def load_data(data: DataConfig, data_root, cache_dir: Path | None = None):
    """(split, tensors) for ``data``; images decoded once and cached."""
    cache_dir = cache_dir or default_cache_dir()
    root = data_root_for(data.source, data_root, cache_dir)
    if root is None:
        raise D.DataError("this run is not in the results store and needs the HAM10000 data: pass "
                          "data_root=<folder of your HAM10000 copy> (or --data on the command line)")
    split = make_split_for(data, root)
    tensors = D.load_split(root, split, data.image_size, classes=data.classes, cache_dir=cache_dir / "images")
    return split, tensors


@dataclass
class RunResult:
    """What a run left in its folder."""

    config: RunConfig
    path: Path
    history: dict
    metrics: dict
    predictions: pd.DataFrame

    @property
    def run_id(self) -> str:
        return self.config.run_id


def load_result(config: RunConfig, results) -> RunResult | None:
    run = store.RunDir(results, config.run_id)
    if not run.done:
        return None
    return RunResult(config, run.path, store.read_json(run / "history.json"),
                     store.read_json(run / "metrics.json"), store.read_csv(run.predictions))


def amat_threshold(config: RunConfig, results, **kw) -> float:
    """AMAT's T: mean (+ z std) per-sample validation CE of the STD run of the same architecture.

    The STD run is loaded, or trained with the same ``kw`` as the AMAT run (data folder or
    ``tensors``, device, ...); an error names it.
    """
    std_config = config.std_counterpart()
    try:
        std = run(std_config, results=results, **kw)
    except D.DataError as err:
        raise D.DataError(f"AMAT run {config.run_id} needs the threshold of its STD run {std_config.run_id}, "
                          f"which is not in {results} and cannot be trained: {err}") from err
    if std is None:
        raise RuntimeError(f"the STD run {std_config.run_id} that AMAT run {config.run_id} needs for its threshold "
                           "did not finish: train it first (dpaat_lib.grid orders this), or call again")
    best = std.history["best"]
    return best["val_loss"] + config.method.amat_z * best["val_ce_std"]


def trained_twin(config: RunConfig, results) -> store.RunDir | None:
    """A finished training of ``config`` stored under other evaluation attacks: a run folder of ``results`` whose
    configuration differs from ``config`` only in ``eval_attacks`` (:meth:`RunConfig.training_identity`), trained
    to the end, with its kept checkpoint: the model :func:`run` evaluates instead of training one. None where there
    is none, or where ``config``'s own training has begun (it continues). Training reads no evaluation attack (its
    generators are seeded by the training seed alone), so that model is the one ``config`` would train."""
    root = Path(results)
    own = store.RunDir(root, config.run_id)
    # Begun: its history, or its last checkpoint alone (a call killed between it and the history). A kept checkpoint
    # alone is no training to continue: an adoption killed before its history (then it is the twin's), or a first
    # epoch killed before its last checkpoint (which would train again from scratch).
    if (own / "history.json").exists() or (own.ckpt / "last.pt").exists():
        return None
    want = config.training_identity()
    for path in sorted(root.glob(f"{config.model}-{config.method.name}-s{config.train.seed}-*")):
        twin = store.RunDir(root, path.name)
        if path.name == config.run_id or not (twin.ckpt / "best.pt").exists() or not twin.trained:
            continue
        try:
            other = RunConfig.from_dict(store.read_json(twin / "config.json"))
        except (OSError, KeyError, TypeError, ValueError):  # a folder of an older layout, or not a run
            continue
        if other.training_identity() == want:
            return twin
    return None


def trained_in(run_dir: store.RunDir) -> str:
    """The run id that trained ``run_dir``'s model: its own, or the one it took its model from."""
    return store.read_json(run_dir / "history.json").get("trained_in", run_dir.path.name)


def adopt_training(run_dir: store.RunDir, twin: store.RunDir) -> dict:
    """Make ``twin``'s training ``run_dir``'s: its kept checkpoint (hard-linked where possible) and its history,
    marked ``trained_in`` the run that trained it (the twin, or the run the twin took its model from). Returns
    the history."""
    (run_dir.ckpt / "best.pt").unlink(missing_ok=True)  # one left by a call killed before (trained_twin)
    store.link_or_copy(twin.ckpt / "best.pt", run_dir.ckpt / "best.pt")
    history = {**store.read_json(twin / "history.json"), "trained_in": trained_in(twin)}
    for key in ("eval_seconds", "evaluated_on"):  # the twin's evaluation; this run's writes its own
        history.pop(key, None)
    store.write_json(run_dir / "history.json", history)
    return history


def run(config: RunConfig, *, results, data_root=None, device="cpu", cache_dir: Path | None = None,
        progress: bool = True, time_budget_s: float | None = None, tensors=None,
        weights_path=None, compile_mode: str | None = None) -> RunResult | None:
    """Load the run's results, or compute what is missing. Returns None only when a
    ``time_budget_s`` ran out before training finished (call again to continue).

    ``tensors``: ``{"train", "val", "test"}`` :class:`dpaat_lib.data.SplitTensors` (uint8 images) to
    train and evaluate on instead of the data folder (also for the STD run AMAT needs).
    ``weights_path``: the local state-dict file whose :func:`~dpaat_lib.pretrained.weights_digest` is
    ``config.train.weights``, or ``{model: file}`` for a grid (:func:`dpaat_lib.pretrained.configure`);
    torchvision's weights need none (two-phase fine-tuning, method.md section 6). Only a run to train needs
    its file. ``compile_mode``: train through ``torch.compile`` or the library's CUDA graph
    (:func:`dpaat_lib.training.train_run`); not part of the run's identity.
    """
    entered = time.perf_counter()  # the time budget counts loading the data and the AMAT threshold too
    if not config.data.digest:
        raise ValueError("config.data.digest is empty: build configurations with resolve_data() "
                         "(or the profiles in dpaat_lib.profiles), which identify the data by content")
    done = load_result(config, results)
    if done is not None:
        return done
    if tensors is not None:
        D.check_split_tensors(tensors)
    check_input_size(config.model, config.data.image_size)
    run_dir = store.RunDir(results, config.run_id)
    with run_dir.computing():  # one process per run (store.RunBusy for a second)
        done = load_result(config, results)  # finished by another process between the check above and the lock
        if done is not None:
            return done
        # The model of a run that differs only in its evaluation attacks (-p linf_eps) is this run's: evaluate it,
        # train nothing.
        twin = trained_twin(config, results)
        start_file = None if twin else pretrained.weights_file(config, weights_path)  # the file to fine-tune from
        kw = dict(data_root=data_root, device=device, cache_dir=cache_dir, progress=progress, weights_path=weights_path,
                  compile_mode=compile_mode, tensors=tensors)
        threshold = amat_threshold(config, results, **kw) if config.method.needs_threshold else None
        if tensors is None:
            split, tensors = load_data(config.data, data_root, cache_dir)
            record_data_files(config.data, data_root_for(config.data.source, data_root, cache_dir),
                              [i for ids in split.values() for i in ids], results)
        else:
            split = {k: v.image_ids for k, v in tensors.items()}
        store.write_json(run_dir / "config.json", config.to_dict())
        store.write_json(run_dir / store.SPLIT, split)
        if twin is not None:
            history = adopt_training(run_dir, twin)
        else:
            budget = None if time_budget_s is None else time_budget_s - (time.perf_counter() - entered)
            history = train_run(config, tensors, run_dir, device=device, threshold=threshold, progress=progress,
                                time_budget_s=budget, weights_path=start_file, compile_mode=compile_mode)
        if not history["finished"]:
            return None
        model = load_trained(config, run_dir, device)
        t0 = time.perf_counter()
        # Unrounded for the metrics: average precision ranks the scores, and the stored file's 6 decimals tie a
        # confident model's smallest ones (an undefended CNN's 20-PGD scores at 224 px: hundreds read 0).
        exact = evaluate(model, tensors["test"], config.eval_attacks, config.data.classes, device=device,
                         seed=config.train.seed, digits=None)
        # The evaluation's time beside the epochs' (the grid's estimates read both), and where the evaluation ran:
        # on a CPU the thread count and the kind of CPU change the numbers (dpaat_lib.profiles.pin_cpu_threads,
        # cpu_kind); on a GPU, the card.
        where = {"device": str(device), "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
                 "cpu": profiles.cpu_kind()}
        if str(device).startswith("cuda"):
            where["gpu"] = torch.cuda.get_device_name(torch.device(device))
        store.write_json(run_dir / "history.json", {**history, "eval_seconds": time.perf_counter() - t0,
                                                    "evaluated_on": where})
        metrics = compute_metrics(exact, config.data.classes)
        if threshold is not None:
            metrics["amat_threshold"] = threshold
        store.write_csv(run_dir / store.PREDICTIONS, round_scores(exact))
        store.write_json(run_dir / "metrics.json", metrics)
        run_dir.mark_done()
        return load_result(config, results)
