#!/usr/bin/env python
"""Check a built book: every chapter page exists and the figure chapters show figures.

    python scripts/check_book.py <built dir>      # the folder that holds _build/html

Jupyter Book 2 (and some misconfigurations) build nothing and still exit 0,
so the build is checked by its output: ``_build/html/book/NN_*.html`` for every
chapter, and at least one ``<img`` whose file exists on each chapter that
should have a figure, no error traceback and no table cell that pandas' display cut short. Exits 1
with a message naming what is missing.
"""
from __future__ import annotations

import re
import sys
from pathlib import Path
from urllib.parse import unquote, urlparse

CHAPTERS = ("01_overview", "02_data", "03_methods", "04_robustness", "05_precision", "06_confusion",
            "07_ablation", "08_gradcam", "09_dynamics", "10_reproducibility", "11_strong_attacks", "12_study")
WITH_FIGURES = ("01_overview", "02_data", "04_robustness", "05_precision", "06_confusion", "07_ablation",
                "08_gradcam", "09_dynamics", "11_strong_attacks", "12_study")
# A table cell that pandas cut short ("the adaptation matters more for ro...") or a row/column it elided ("...").
CUT_CELL = re.compile(r"<td>[^<]*\.\.\.</td>")
IMG = re.compile(r"<img\b[^>]*\bsrc=\"([^\"]+)\"", re.IGNORECASE)


def images(page: Path) -> tuple[list[str], list[str]]:
    """(sources whose file exists or that are inline data, sources whose file is missing)."""
    ok, missing = [], []
    for src in IMG.findall(page.read_text(errors="replace")):
        if src.startswith("data:"):
            ok.append(src[:30])
            continue
        url = urlparse(src)
        if url.scheme in ("http", "https"):
            missing.append(src + " (remote)")
            continue
        (ok if (page.parent / unquote(url.path)).is_file() else missing).append(src)
    return ok, missing


def check(built: Path) -> list[str]:
    html = built / "_build" / "html"
    if not html.is_dir():
        return [f"{html} does not exist: was the book built (jupyter-book>=1,<2)?"]
    problems = []
    if not (html / "index.html").is_file():
        problems.append(f"{html / 'index.html'} is missing")
    for ch in CHAPTERS:
        page = html / "book" / f"{ch}.html"
        if not page.is_file():
            problems.append(f"chapter page {page} is missing")
            continue
        ok, missing = images(page)
        if missing:
            problems.append(f"{page.name}: image file(s) missing: {missing[:3]}")
        if ch in WITH_FIGURES and not ok:
            problems.append(f"{page.name}: no figure (<img> of an existing file); the chapter should show one")
        text = page.read_text(errors="replace")
        if "Traceback (most recent call last)" in text:
            problems.append(f"{page.name}: contains an error traceback")
        cut = CUT_CELL.findall(text)
        if cut:
            problems.append(f"{page.name}: {len(cut)} table cell(s) cut short or elided by pandas' display, e.g. "
                            f"{cut[0]!r}: show the table whole (pandas' display.max_colwidth, max_rows)")
    return problems


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print(__doc__, file=sys.stderr)
        return 2
    built = Path(argv[0])
    problems = check(built)
    if problems:
        print("check_book: FAILED\n  " + "\n  ".join(problems), file=sys.stderr)
        return 1
    n_img = sum(len(images(built / "_build" / "html" / "book" / f"{c}.html")[0]) for c in CHAPTERS)
    print(f"check_book: OK: {len(CHAPTERS)} chapter pages, {n_img} figures, in {built / '_build' / 'html'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
