"""Unpack what GPU calls brought back (scripts/device_grid.sh's archives) into the results folder.

    python scripts/unpack_results.py /work/.device/.../results-paper-*.tgz* [--into results]

Each archive holds the store's own files (calls.jsonl, benchmarks), the logs and the run folders that finished
in its call, relative to the results folder (``paper/<run id>/...``). A run folder it holds *replaces* the one
here, rather than being unpacked over it: a run trained again on the GPU (its extras were lost with its
checkpoint) must not keep files of its old training beside the new ones. Archives split into parts
(``NAME.part-00``, ``-01`` ...) are joined in order; the archives are unpacked in the order of their names
(their call's start time), so a later call's files win.
"""
from __future__ import annotations

import argparse
import io
import re
import shutil
import tarfile
from pathlib import Path

PART = re.compile(r"^(?P<archive>.+\.tgz)\.part-\d+$")
# What scripts/device_grid.sh writes: results-<profile>-<call start>[.partial].tgz. Anything else a call brings
# back (check.tgz, compile-cache.tgz.part-NN, session.log) is not a store's and must not be unpacked into one.
ARCHIVE = re.compile(r"^results-(?P<profile>.+)-\d+(\.partial)?\.tgz$")


def archives(paths) -> dict[str, list[Path]]:
    """{archive name: its files in order}: a whole archive, or its parts."""
    out: dict[str, list[Path]] = {}
    for p in map(Path, paths):
        m = PART.match(p.name)
        out.setdefault(m["archive"] if m else p.name, []).append(p)
    return {name: sorted(files) for name, files in sorted(out.items())}


def unpack(paths, into) -> list[str]:
    """Unpack the archives ``paths`` into ``into``; returns the run folders replaced or added
    (``<store>/<run id>``)."""
    into = Path(into)
    runs = []
    found = archives(paths)
    other = [name for name in found if not ARCHIVE.match(name)]
    if other:
        raise ValueError(f"not a results archive of scripts/device_grid.sh: {other}; pass only the "
                         "results-<profile>-<time>.tgz files (or their .part-NN), e.g. results-paper-*.tgz*")
    for name, files in found.items():
        profile = ARCHIVE.match(name)["profile"]
        with tarfile.open(fileobj=io.BytesIO(b"".join(f.read_bytes() for f in files)), mode="r:gz") as tar:
            members = tar.getmembers()
            stray = [m.name for m in members if Path(m.name).parts[:1] != (profile,)]
            if stray:
                raise ValueError(f"{name}: member(s) outside its store's folder {profile}/: {stray[:3]}; nothing "
                                 "of it was unpacked")
            done = sorted({Path(*Path(m.name).parts[:2]) for m in members
                           if len(Path(m.name).parts) == 3 and Path(m.name).name == "done"})
            for run in done:
                shutil.rmtree(into / run, ignore_errors=True)
            tar.extractall(into, members=members, filter="data")
        runs += [str(r) for r in done]
        print(f"{name}: {len(members)} files, {len(done)} run folder(s)")
    return runs


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("archives", nargs="+", help="results-<profile>-<time>.tgz files, or their .part-NN files")
    p.add_argument("--into", default="results", help="the results folder (default: results)")
    args = p.parse_args(argv)
    try:
        runs = unpack(args.archives, args.into)
    except ValueError as err:
        p.exit(2, f"unpack_results.py: {err}\n")
    print(f"{len(runs)} run folder(s) in {args.into}: " + (", ".join(runs) or "none"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
