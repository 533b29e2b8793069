"""Run folders and atomic writes: nothing already computed is lost.

A store (a results folder) also records the byte size of each image file its
runs were computed from (:data:`DATA_FILES`), so that a copy whose images were
edited is not served the runs of the original.

A run folder ``<results>/<run_id>/`` holds ``config.json``, ``split.json.gz``,
``history.json`` (per-epoch log), ``metrics.json``, ``predictions.csv.gz`` (per
test image, every attack) and ``done`` last; checkpoints go to
``<results>/<run_id>/ckpt/`` (git-ignored). Every file is written to a
temporary name and renamed, so an interruption never leaves half a file.

The two large files are gzipped (a name ending in ``.gz`` is enough): the
committed results travel to a lent GPU with the repository, under a size limit.
Stores written before that hold ``split.json`` and ``predictions.csv``: they
are read as they are (:func:`run_file`), and :func:`compact_run` converts them.
"""
from __future__ import annotations

import contextlib
import gzip
import json
import os
import shutil
import socket
import tempfile
from pathlib import Path

try:
    import fcntl
except ImportError:  # not POSIX: runs are not locked
    fcntl = None

import pandas as pd
import torch


# mkstemp creates its file readable by its owner alone; a result is given the mode any new file gets.
_UMASK = os.umask(0o022)
os.umask(_UMASK)


TEMPORARY_SUFFIX = ".tmp"  # what _atomic writes to before the rename: ".<name>.<random>.tmp" beside the file


def _atomic(path: Path, write) -> None:
    path = Path(path)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=TEMPORARY_SUFFIX)
        os.close(fd)
        write(tmp)
        os.chmod(tmp, 0o666 & ~_UMASK)
        os.replace(tmp, path)
    except (OSError, RuntimeError) as err:  # torch.save on a full disk raises RuntimeError ("unexpected pos")
        raise OSError(f"could not write {path} ({type(err).__name__}: {err}); {_free_space(path)}. Free space "
                      "or make the folder writable, or write the results elsewhere (--results DIR); what is "
                      "already stored is intact, and the next call continues from it") from err
    finally:
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)


def _free_space(path: Path) -> str:
    for folder in (path.parent, *path.parents):
        if folder.exists():
            try:
                return f"{shutil.disk_usage(folder).free / 2**20:.0f} MiB free on its file system"
            except OSError:
                break
    return "its file system's free space unknown"


PREDICTIONS = "predictions.csv.gz"
SPLIT = "split.json.gz"
LEGACY_NAMES = {PREDICTIONS: "predictions.csv", SPLIT: "split.json"}


def _write_bytes(path, data: bytes) -> None:
    """``data`` to ``path`` atomically, gzipped when the name ends in ``.gz``."""
    if str(path).endswith(".gz"):
        # mtime=0 (and gzip.compress writes no file name): the same content gives the same bytes, so a
        # re-written file is no change to git and the migration can be checked byte for byte.
        data = gzip.compress(data, compresslevel=9, mtime=0)
    _atomic(path, lambda tmp: Path(tmp).write_bytes(data))


def read_text(path) -> str:
    data = Path(path).read_bytes()
    return (gzip.decompress(data) if str(path).endswith(".gz") else data).decode()


def write_json(path, obj) -> None:
    _write_bytes(path, (json.dumps(obj, indent=1, sort_keys=True) + "\n").encode())


def read_json(path):
    return json.loads(read_text(path))


def write_csv(path, frame: pd.DataFrame) -> None:
    _write_bytes(path, frame.to_csv(index=False, float_format="%.6g", lineterminator="\n").encode())


def read_csv(path) -> pd.DataFrame:
    """A table :func:`write_csv` wrote (pandas reads ``.gz`` by its name)."""
    return pd.read_csv(path)


def run_file(folder, name: str) -> Path:
    """``folder/name``, or the file under its name from before compression (``LEGACY_NAMES``) where
    only that one exists: a store written by an older version reads as it is."""
    path = Path(folder) / name
    legacy = Path(folder) / LEGACY_NAMES.get(name, name)
    return legacy if not path.exists() and legacy.exists() else path


def compact_run(folder) -> tuple[int, int]:
    """Gzip a run folder's uncompressed ``predictions.csv`` and ``split.json`` in place (the new file
    written atomically and checked against the old bytes before the old one is removed); returns the
    bytes of the files converted, before and after. Idempotent: a compact folder is left as it is."""
    folder = Path(folder)
    before = after = 0
    for name, legacy_name in LEGACY_NAMES.items():
        legacy = folder / legacy_name
        if not legacy.exists():
            continue
        data = legacy.read_bytes()
        target = folder / name
        if target.exists() and gzip.decompress(target.read_bytes()) != data:
            raise ValueError(f"{folder} holds both {legacy_name} and {name} with different contents: "
                             "keep the one the run's done file belongs to and remove the other")
        _write_bytes(target, data)
        if gzip.decompress(target.read_bytes()) != data:  # never remove the only good copy
            raise OSError(f"{target} does not read back as {legacy}: {legacy} is kept")
        legacy.unlink()
        before, after = before + len(data), after + target.stat().st_size
    return before, after


def compact_store(root) -> dict:
    """:func:`compact_run` on every run folder under ``root`` (a profile's store, its ``superseded/``
    folder too); returns the folders converted and the bytes before and after."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"no results folder {root}: name a store such as results/cpu-real")
    folders = sorted({p.parent for name in LEGACY_NAMES.values() for p in root.rglob(name)})
    sizes = [compact_run(folder) for folder in folders]
    return {"folders": len(folders), "bytes_before": sum(b for b, _ in sizes), "bytes_after": sum(a for _, a in sizes)}


def link_or_copy(source, target) -> None:
    """``target`` with ``source``'s bytes: a hard link where the file system allows one (no second copy of a
    checkpoint), else an atomic copy. An existing ``target`` is left as it is."""
    source, target = Path(source), Path(target)
    if target.exists():
        return
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(source, target)
    except OSError:  # another file system, or links not allowed: copy
        _atomic(target, lambda tmp: shutil.copyfile(source, tmp))


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
    def predictions(self) -> Path:
        return run_file(self.path, PREDICTIONS)

    @property
    def split(self) -> Path:
        return run_file(self.path, SPLIT)

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

    @contextlib.contextmanager
    def computing(self):
        """Hold the run's lock while computing it (training, evaluation, ``done``): two processes on one run would
        overwrite each other's checkpoints, and one could evaluate the other's model as its own. A second process
        gets :class:`RunBusy` at once, naming the holder; the lock ends with its process (a killed one leaves
        none). The lock file is ``<results>/.locks/<run_id>`` (git-ignored, never packed), outside the run folder,
        which a run refused before it computed anything must not create. Temporary files a killed process left in
        the run folder (``.<name>.<random>.tmp``) are removed here: no other process writes to the run while it
        is held."""
        if fcntl is None:
            yield
            return
        locks = self.path.parent / ".locks"
        locks.mkdir(parents=True, exist_ok=True)
        with open(locks / self.path.name, "a+") as f:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
                locked = True
            except BlockingIOError:
                f.seek(0)
                holder = f.read().strip() or "a process"
                raise RunBusy(f"run {self.path.name} is being computed by another process ({holder}) in "
                              f"{self.path.parent}: wait for it to finish, or stop it and call again (the run "
                              "continues from its last epoch)") from None
            except OSError:  # a file system without locks (some network mounts): computed unguarded, as before
                locked = False
            if not locked:
                yield
                return
            f.seek(0)
            f.truncate()
            f.write(f"process {os.getpid()} on {socket.gethostname()}\n")
            f.flush()
            for folder in (self.path, self.ckpt):  # (none where the folder does not exist yet)
                for stale in folder.glob(f".*{TEMPORARY_SUFFIX}"):
                    stale.unlink(missing_ok=True)
            try:
                yield
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)


class RunBusy(RuntimeError):
    """Another process is computing this run (:meth:`RunDir.computing`)."""


DATA_FILES = "data-files.json.gz"


def read_data_files(results) -> dict[str, dict[str, int]]:
    """The byte size of each image file a store's runs were computed from (:data:`DATA_FILES` in the store's
    folder): ``{source size "WxH": {image_id: bytes}}``; empty where none is recorded."""
    path = Path(results) / DATA_FILES
    return read_json(path) if path.exists() else {}


def write_data_files(results, files: dict[str, dict[str, int]]) -> None:
    write_json(Path(results) / DATA_FILES, files)


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
