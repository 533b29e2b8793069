#!/usr/bin/env python
"""Execute the book's notebooks for one profile and build the HTML.

    python scripts/build_book.py --profile quick --out _build/quick [--data DIR] [--device cpu]
                                 [--skip-execute] [--chapters 04 05] [-p NAME VALUE ...]
    python scripts/build_book.py --profile quick --out _build/eps1 -p eps0 1.0 -p seeds "[0, 1, 2]"
    python scripts/build_book.py --profile quick --out .      # the published book/ and _build/html

Steps: convert ``notebooks/NN_*.py`` (jupytext percent format) to notebooks
with the ``python3`` kernel; execute each with papermill (parameters
``profile``, ``device`` and ``data_root``, and every ``-p NAME VALUE``, the value read as YAML, for the
chapters that declare NAME; the kernel's working directory is
``<out>/book``) into ``<out>/book/NN_*.ipynb``; copy ``_config.yml``,
``_toc.yml``, ``book/intro.md`` and ``book/specification.md`` to ``<out>``; run
``jupyter-book build <out> -W -n --keep-going``; then ``scripts/check_book.py``.

Results always go to ``results/<profile>/`` of the repository, whatever
``--out`` is (``dpaat_lib.report`` resolves paths against the repository).
Run it with the project's environment (``.venv/bin/python``): the kernel is
that interpreter (its folder is put first on PATH for papermill).
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BOOK_FILES = ("_config.yml", "_toc.yml", "book/intro.md", "book/specification.md")


def tool(name: str) -> str:
    """An executable of this interpreter's environment (a venv's bin/), else from PATH."""
    here = Path(sys.executable).parent / name
    if here.exists():
        return str(here)
    found = shutil.which(name)
    if not found:
        sys.exit(f"build_book: cannot find {name!r} beside {sys.executable} or on PATH; "
                 "install the project's book requirements (jupyter-book>=1,<2, jupytext, papermill)")
    return found


def kernel_env() -> dict:
    """papermill starts the 'python3' kernel with the command 'python': make it this interpreter."""
    env = dict(os.environ)
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    env.setdefault("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    env["PYTHONHASHSEED"] = "0"
    return env


def clean_metadata(path: Path) -> None:
    """Drop papermill's timings and timestamps so a re-execution changes only what changed."""
    nb = json.loads(path.read_text())
    for cell in nb["cells"]:
        cell.get("metadata", {}).pop("papermill", None)
        cell.get("metadata", {}).pop("execution", None)
    pm = nb.get("metadata", {}).get("papermill")
    if pm is not None:
        nb["metadata"]["papermill"] = {"parameters": pm.get("parameters", {})}
    path.write_text(json.dumps(nb, indent=1, ensure_ascii=False) + "\n")


OWN_OPTIONS = {"profile": "--profile", "device": "--device", "data_root": "--data"}


def chapter_parameters(src: Path) -> set[str]:
    """The names a chapter's ``parameters`` cell assigns (jupytext percent source); none without that cell."""
    _, found, rest = src.read_text().partition('# %% tags=["parameters"]\n')
    return set(re.findall(r"^([A-Za-z_]\w*) = ", rest.split("\n# %%", 1)[0], flags=re.M)) if found else set()


def parse_params(pairs: list[list[str]], sources: list[Path]) -> dict[str, dict]:
    """``-p NAME VALUE`` pairs -> {chapter stem: {name: value}}, each VALUE read as YAML (1.0 a float,
    "[0, 1, 2]" a list, null None) and given to the chapters whose parameters cell has NAME. A name no
    chapter declares, or one with its own option, exits with the names the chapters take."""
    import yaml

    declared = {src.stem: chapter_parameters(src) for src in sources}
    known = set().union(*declared.values()) - set(OWN_OPTIONS)
    values = {}
    for name, text in pairs:
        if name in OWN_OPTIONS:
            sys.exit(f"build_book: give {name} with {OWN_OPTIONS[name]}, not -p")
        if name not in known:
            sys.exit(f"build_book: no chapter takes a parameter {name!r}; they take {', '.join(sorted(known))}")
        try:
            values[name] = yaml.safe_load(text)
        except yaml.YAMLError as e:
            sys.exit(f"build_book: -p {name} {text!r} is not a YAML value ({e})")
    return {stem: {k: v for k, v in values.items() if k in names} for stem, names in declared.items()}


def select_chapters(sources: list[Path], chapters: list[str]) -> list[Path]:
    """The chapters named by number (4, 04) or name (04_robustness), exactly: "1" must not select 10, 11 and 12.
    A name that is no chapter exits with the chapters there are."""
    wanted = {c.zfill(2) if c.isdigit() else c for c in chapters}
    unknown = sorted(wanted - {s.stem[:2] for s in sources} - {s.stem for s in sources})
    if unknown:
        sys.exit(f"build_book: no chapter {', '.join(unknown)}; the chapters are {', '.join(s.stem for s in sources)}")
    return [s for s in sources if s.stem[:2] in wanted or s.stem in wanted]


def run(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    return subprocess.run([str(c) for c in cmd], **kw)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--profile", default="quick", help="quick | cpu-real | paper (default quick)")
    p.add_argument("--out", default=None, help="build folder (default _build/<profile>); '.' builds the "
                                               "published book/ in place")
    p.add_argument("--data", help="HAM10000 folder (official layout), passed as data_root")
    p.add_argument("--device", default="cpu")
    p.add_argument("--skip-execute", action="store_true", help="use the executed notebooks already in <out>/book")
    p.add_argument("--chapters", nargs="+", help="execute only these chapters (e.g. 04 08, or 4 8); others are "
                                                 "kept")
    p.add_argument("--no-html", action="store_true", help="execute only; no jupyter-book build or check")
    p.add_argument("-p", "--param", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"),
                   help="a papermill parameter for every chapter that declares it, VALUE read as YAML "
                        "(e.g. -p eps0 1.0 -p seeds '[0, 1, 2, 3]' -p models '[resnet34]'); repeatable")
    args = p.parse_args(argv)

    out = Path(args.out or f"_build/{args.profile}").resolve()
    book = out / "book"
    book.mkdir(parents=True, exist_ok=True)
    sources = sorted((REPO / "notebooks").glob("[0-9][0-9]_*.py"))
    if args.chapters:
        sources = select_chapters(sources, args.chapters)
    params = parse_params(args.param, sources)
    env = kernel_env()
    print(f"build_book: profile {args.profile}, output {out}, kernel python {sys.executable}", flush=True)

    if not args.skip_execute:
        total = time.perf_counter()
        with tempfile.TemporaryDirectory() as tmp:
            for src in sources:
                plain = Path(tmp) / (src.stem + ".ipynb")
                conv = run([sys.executable, "-m", "jupytext", "--to", "ipynb", "--set-kernel", "python3",
                            "--quiet", src, "-o", plain], capture_output=True, text=True)
                if conv.returncode:
                    print(conv.stdout + conv.stderr, file=sys.stderr)
                    return 1
                target = book / plain.name
                cmd = [sys.executable, "-m", "papermill", plain, target, "-k", "python3", "--cwd", book,
                       "--no-progress-bar", "-p", "profile", args.profile, "-p", "device", args.device]
                if args.data:
                    # Relative to the checkout (report resolves it so), so the executed notebooks
                    # stay valid in another clone with the data at the same place beside it.
                    cmd += ["-p", "data_root", os.path.relpath(Path(args.data).resolve(), REPO)]
                if params[src.stem]:
                    cmd += ["-y", json.dumps(params[src.stem])]  # JSON is YAML: papermill keeps the types
                print(f"  {src.stem:22s} executing ...", end="", flush=True)
                t0 = time.perf_counter()
                res = run(cmd, env=env, capture_output=True, text=True, cwd=book)
                dt = time.perf_counter() - t0
                if res.returncode:
                    print(f" FAILED after {dt:.1f}s\n{res.stderr[-6000:]}", file=sys.stderr)
                    print(f"build_book: the failed notebook (with its error) is {target}", file=sys.stderr)
                    return 1
                clean_metadata(target)
                print(f" done in {dt:.1f}s", flush=True)
        print(f"build_book: executed {len(sources)} notebook(s) in {time.perf_counter() - total:.1f}s", flush=True)

    if args.no_html:
        return 0
    if out != REPO:
        for f in BOOK_FILES:
            (out / f).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / f, out / f)
    t0 = time.perf_counter()
    jb = run([tool("jupyter-book"), "build", out, "-W", "-n", "--keep-going"], env=env,
             capture_output=True, text=True)
    if jb.returncode:
        print(jb.stdout[-3000:] + "\n" + jb.stderr[-6000:], file=sys.stderr)
        print(f"build_book: jupyter-book build failed (exit {jb.returncode})", file=sys.stderr)
        return jb.returncode
    print(f"build_book: HTML built in {time.perf_counter() - t0:.1f}s: {out / '_build' / 'html' / 'index.html'}")
    return run([sys.executable, REPO / "scripts" / "check_book.py", out]).returncode


if __name__ == "__main__":
    sys.exit(main())
