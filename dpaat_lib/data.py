"""HAM10000 reader, lesion-aware split and image tensor cache (method.md section 1).

The whole data path of the project goes through this module:

1. ``read_metadata`` reads the official ``HAM10000_metadata.csv`` and finds the
   image files in any of the official layouts (``find_images``); every problem
   with the folder is reported as a ``DataError`` that names the file or column
   and says what to do, because a wrong data folder is the most common way a
   run fails on a new machine.
2. ``make_split`` draws the paper's protocol (800 train incl. validation, 299
   test per class) as a pure function of (metadata, seed); by default it keeps
   every lesion on one side so images of one lesion cannot leak from training
   into the test set. ``make_fraction_split`` is the split by fractions that
   uses every image (the 7-class task, whose classes differ 60-fold in size).
3. ``load_images`` / ``load_split`` decode, centre-crop and resize the images
   once into a uint8 tensor and cache it on disk, keyed by data *content*
   (``dataset_digest``, the images' size, each file's byte size), never by
   path, so a checkout in another folder finds the same cache and results.
"""

from __future__ import annotations

import hashlib
import os
import pathlib
import shutil
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Iterable, Mapping, Sequence

import numpy as np
import pandas as pd
import torch
from PIL import Image

CLASSES: tuple[str, ...] = ("nv", "mel", "bkl")
"""The paper's three classes; a label is the position of its dx in this tuple."""

ALL_CLASSES: tuple[str, ...] = ("nv", "mel", "bkl", "bcc", "akiec", "vasc", "df")
"""Every diagnosis (dx) that occurs in HAM10000."""

REQUIRED_COLUMNS: tuple[str, ...] = ("lesion_id", "image_id", "dx")
"""Metadata columns this module needs (the official file has seven)."""

METADATA_FILE = "HAM10000_metadata.csv"
METADATA_TAB = "HAM10000_metadata.tab"
"""Harvard Dataverse's default download of the metadata (its tab-separated conversion of the CSV); read when
:data:`METADATA_FILE` is absent."""
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
IMAGE_DIRS = ("HAM10000_images_part_1", "HAM10000_images_part_2", "images")
MASK_DIR = "masks"
MASK_SUFFIX = "_segmentation.png"
DECODE_THREADS = 2

_EXPECTED_LAYOUT = (
    "Expected a HAM10000 folder holding HAM10000_metadata.csv (columns "
    "lesion_id,image_id,dx,...; or Harvard Dataverse's HAM10000_metadata.tab) and the JPEGs either in "
    "HAM10000_images_part_1/ + HAM10000_images_part_2/ (the official release) "
    "or in one images/ folder."
)


class DataError(ValueError):
    """Any problem with the input data; the message names the file or column
    and says how to fix it."""


# --------------------------------------------------------------------------
# Reading the folder
# --------------------------------------------------------------------------

def _is_image_file(path: pathlib.Path) -> bool:
    """Image files only; lesion masks (``*_segmentation.png``) are not images."""
    name = path.name.lower()
    return (
        path.is_file()
        and path.suffix.lower() in IMAGE_SUFFIXES
        and not name.endswith(MASK_SUFFIX)
        and not name.startswith(".")
    )


def _hint_subfolder(root: pathlib.Path) -> str:
    """If the user pointed at the parent of a HAM10000 folder, say which one."""
    try:
        hits = sorted({p.parent for name in (METADATA_FILE, METADATA_TAB) for p in root.glob(f"*/{name}")})
    except OSError:
        hits = []
    if hits:
        return f" Did you mean {hits[0]}?"
    return ""


def _hint_zips(root: pathlib.Path) -> str:
    """If zip archives (the official release's images) lie in ``root`` still packed, say how to unpack them."""
    try:
        zips = sorted(p.name for p in root.glob("*.zip") if p.is_file())
    except OSError:
        zips = []
    if not zips:
        return ""
    return (f" {root} holds {', '.join(zips[:4])}{' ...' if len(zips) > 4 else ''}: unpack the image archives "
            f"first (cd {root} && unzip -n HAM10000_images_part_1.zip && unzip -n HAM10000_images_part_2.zip; "
            "images lying directly in the folder are found too).")


def metadata_path(root: str | os.PathLike) -> pathlib.Path | None:
    """The metadata file of the HAM10000 folder ``root``: ``HAM10000_metadata.csv``, else the
    ``HAM10000_metadata.tab`` that Harvard Dataverse hands out by default (the same table, tab-separated),
    else None."""
    root = pathlib.Path(root)
    for name in (METADATA_FILE, METADATA_TAB):
        if (root / name).is_file():
            return root / name
    return None


def find_images(root: str | os.PathLike) -> dict[str, pathlib.Path]:
    """Map image_id -> image file for every image under ``root``.

    Accepts the official layouts: ``HAM10000_images_part_1/`` and
    ``HAM10000_images_part_2/``, or one ``images/`` folder, and tolerates
    images lying directly in ``root``. Suffixes .jpg/.jpeg/.png (any case). If
    an image_id occurs twice, the first folder in that order wins, so the
    result does not depend on directory listing order.

    Raises DataError if ``root`` is not a folder or holds no images.
    """
    root = pathlib.Path(root)
    if not root.is_dir():
        raise DataError(
            f"Data folder {root} does not exist or is not a folder. "
            f"{_EXPECTED_LAYOUT} Pass the folder that holds {METADATA_FILE}."
        )
    found: dict[str, pathlib.Path] = {}
    for folder in [root / d for d in IMAGE_DIRS] + [root]:
        if not folder.is_dir():
            continue
        for path in sorted(folder.iterdir()):
            if _is_image_file(path):
                found.setdefault(path.stem, path)
    if not found:
        raise DataError(
            f"No images (.jpg/.jpeg/.png) found in data folder {root}. "
            f"{_EXPECTED_LAYOUT}{_hint_subfolder(root)}{_hint_zips(root)}"
        )
    return found


def slim_copy(root: str | os.PathLike, keep: Sequence[str], out: str | os.PathLike) -> dict[str, int]:
    """Write a copy of the HAM10000 folder ``root`` to ``out`` that holds only the images ``keep``.

    For a machine that the data must travel to (a lent GPU takes at most 64 MiB with the repository):
    the metadata file is copied unchanged, so the dataset digest and every split stay the same; the kept
    images are copied byte for byte into ``out/images/``; every other image becomes an empty file of the
    same name, so the metadata check (every row has a file) passes, and decoding one of them fails with
    the corrupt-image error. Returns the counts ``{"kept": ..., "empty": ...}``.
    """
    root, out = pathlib.Path(root), pathlib.Path(out)
    found = find_images(root)
    keep = set(keep)
    missing = sorted(keep - set(found))
    if missing:
        raise DataError(f"{len(missing)} image(s) to keep have no file under {root} (first: {missing[:5]}).")
    if out.resolve() == root.resolve():
        raise ValueError(f"the slim copy must go to another folder than {root}")
    (out / "images").mkdir(parents=True, exist_ok=True)
    meta_file = metadata_path(root)
    if meta_file is None:
        raise DataError(f"Data folder {root} has no {METADATA_FILE}. {_EXPECTED_LAYOUT}")
    shutil.copyfile(meta_file, out / meta_file.name)
    counts = {"kept": 0, "empty": 0}
    for image_id, path in found.items():
        target = out / "images" / path.name
        if image_id in keep:
            shutil.copyfile(path, target)
            counts["kept"] += 1
        else:
            target.write_bytes(b"")
            counts["empty"] += 1
    return counts


def read_metadata(root: str | os.PathLike, classes: Sequence[str] = CLASSES) -> pd.DataFrame:
    """Read ``root/HAM10000_metadata.csv`` and keep the rows of ``classes``.

    Checks, each failing with a DataError that says what to fix: the file
    exists, the required columns are there, every dx is a known HAM10000
    diagnosis, image_ids are unique, and every kept image has a file.

    Returns the kept rows (all original columns) sorted by (label, image_id),
    with added columns ``path`` (str) and ``label`` (int, index into
    ``classes``). An empty lesion_id is replaced by the image_id, i.e. the
    image is treated as its own lesion, so lesion-aware splitting still works.
    """
    root = pathlib.Path(root)
    classes = tuple(classes)
    unknown = [c for c in classes if c not in ALL_CLASSES]
    if unknown or not classes or len(set(classes)) != len(classes):
        raise DataError(
            f"classes={classes!r} is invalid: give distinct HAM10000 diagnoses "
            f"from {ALL_CLASSES}."
        )
    csv = metadata_path(root)
    if csv is None:
        where = "does not exist" if not root.is_dir() else "has no " + METADATA_FILE
        raise DataError(
            f"Data folder {root} {where}. {_EXPECTED_LAYOUT}{_hint_subfolder(root)}"
        )
    try:
        with open(csv, encoding="utf-8", errors="replace") as f:
            header = f.readline()
        # The separator from the header: Dataverse's .tab is tab-separated (its strings quoted, which the
        # reader unquotes), though a renamed CSV may carry the .tab name too.
        meta = pd.read_csv(csv, dtype=str, keep_default_na=False, sep="\t" if "\t" in header else ",")
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise DataError(
            f"Cannot parse {csv}: {err}. Re-download the metadata file."
        ) from err
    meta.columns = [str(c).strip() for c in meta.columns]
    for col in REQUIRED_COLUMNS:
        if col not in meta.columns:
            raise DataError(
                f"{csv} has no column '{col}' (columns found: {list(meta.columns)}). "
                f"The file needs the columns {REQUIRED_COLUMNS}; use the official "
                f"HAM10000_metadata.csv."
            )
    for col in REQUIRED_COLUMNS:
        meta[col] = meta[col].str.strip()
    if (meta["image_id"] == "").any():
        row = int(np.flatnonzero(meta["image_id"].to_numpy() == "")[0])
        raise DataError(
            f"{csv} has an empty image_id (data row {row + 1}). Fill it in or "
            f"remove the row."
        )
    bad_dx = ~meta["dx"].isin(ALL_CLASSES)
    if bad_dx.any():
        first = meta[bad_dx].iloc[0]
        values = sorted(set(meta.loc[bad_dx, "dx"]))
        raise DataError(
            f"{csv}: column 'dx' has unknown value {first['dx']!r} (e.g. image_id "
            f"{first['image_id']}; all unknown values: {values[:10]}). Known "
            f"diagnoses are {ALL_CLASSES}; fix or remove these rows."
        )
    dup = meta["image_id"].duplicated()
    if dup.any():
        ids = sorted(set(meta.loc[dup, "image_id"]))
        raise DataError(
            f"{csv}: image_id {ids[0]} appears more than once ({len(ids)} "
            f"duplicated ids). Each image must have one row; remove the duplicates."
        )
    if meta.empty:
        raise DataError(
            f"{csv} has a header but no data rows. Re-download the metadata file "
            f"(the official one has 10015 rows)."
        )
    counts = meta["dx"].value_counts()
    absent = [c for c in classes if counts.get(c, 0) == 0]
    if absent:
        found = {str(k): int(v) for k, v in counts.items()}
        raise DataError(
            f"{csv}: no rows with dx {' or '.join(repr(c) for c in absent)}, so "
            f"{'these classes' if len(absent) > 1 else 'this class'} would have 0 images "
            f"(rows per dx in the file: {found}). Check the dx column, or pass classes= "
            f"without {absent}."
        )
    meta = meta[meta["dx"].isin(classes)].copy()
    empty_lesion = meta["lesion_id"] == ""
    meta.loc[empty_lesion, "lesion_id"] = meta.loc[empty_lesion, "image_id"]

    files = find_images(root)
    missing = sorted(set(meta["image_id"]) - set(files))
    if missing:
        raise DataError(
            f"{len(missing)} image(s) listed in {csv} have no file in {root} "
            f"(first: {missing[:5]}). Re-download the images or remove these rows. "
            f"{_EXPECTED_LAYOUT}{_hint_zips(root)}"
        )
    meta["path"] = [str(files[i]) for i in meta["image_id"]]
    meta["label"] = meta["dx"].map({c: k for k, c in enumerate(classes)}).astype(int)
    meta = meta.sort_values(["label", "image_id"], kind="stable").reset_index(drop=True)
    return meta


def dataset_digest(meta: pd.DataFrame) -> str:
    """Content digest of the metadata rows: sha256 (first 16 hex digits) over
    the sorted (image_id, lesion_id, dx) triples.

    Paths are deliberately left out: the same data in another folder (a CI
    clone, a user's download) must give the same digest, because the digest
    names caches and results.
    """
    rows = sorted(zip(meta["image_id"], meta["lesion_id"], meta["dx"]))
    h = hashlib.sha256()
    for image_id, lesion_id, dx in rows:
        h.update(f"{image_id}\t{lesion_id}\t{dx}\n".encode())
    return h.hexdigest()[:16]


# --------------------------------------------------------------------------
# Split
# --------------------------------------------------------------------------

def _take_whole_lesions(lesions: list[list[str]], n: int) -> tuple[list[str], list[list[str]]]:
    """Walk the lesions in order, taking each whole lesion that still fits into ``n`` images; returns
    (taken image ids, lesions not taken)."""
    taken: list[str] = []
    rest: list[list[str]] = []
    for lesion in lesions:
        if len(taken) + len(lesion) <= n:
            taken.extend(lesion)
        else:
            rest.append(lesion)
    return taken, rest


def _exact_fill(lesions: list[list[str]], n: int) -> tuple[list[str], list[list[str]]] | None:
    """Greedy exact-count fill: walk the (shuffled) lesions and take a whole
    lesion whenever it still fits into the remaining count.

    Returns (taken image ids, lesions not taken), or None if no combination
    reached exactly ``n`` on this pass.
    """
    taken, rest = _take_whole_lesions(lesions, n)
    if len(taken) != n:
        return None
    return taken, rest


def make_split(
    meta: pd.DataFrame,
    *,
    seed: int,
    n_train: int = 800,
    n_test: int = 299,
    n_val: int = 80,
    lesion_aware: bool = True,
    test_fraction: float | None = None,
    val_fraction: float | None = None,
) -> dict[str, list[str]]:
    """Per-class train/validation/test split, a pure function of (meta, seed).

    With ``test_fraction`` and ``val_fraction`` the split is by fractions and
    uses every image (:func:`make_fraction_split`; the counts are ignored).

    Per class: exactly ``n_test`` test images, ``n_val`` validation images and
    ``n_train - n_val`` training images (the paper has 800 training images per
    class and bkl has only 1099 = 800 + 299, so validation must come out of the
    800).

    ``lesion_aware=True`` (default): no lesion_id appears on two sides. Each
    class's lesions are shuffled, test is filled first with whole lesions
    (greedy exact fill), then validation, then training; training may take
    part of its last lesion, the leftover images of that lesion go unused.
    ``lesion_aware=False``: plain image-level shuffle (for measuring leakage).

    Classes are processed in label order with one ``np.random.default_rng(seed)``;
    rows are sorted first, so the CSV row order does not matter. Returns
    ``{"train", "val", "test"}`` lists of image_ids sorted by (label, image_id).
    Raises DataError if a class is too small.
    """
    if test_fraction is not None or val_fraction is not None:
        return make_fraction_split(meta, seed=seed, test_fraction=test_fraction, val_fraction=val_fraction,
                                   lesion_aware=lesion_aware)
    if not (0 <= n_val <= n_train) or n_test < 0:
        raise DataError(
            f"Invalid split sizes n_train={n_train}, n_val={n_val}, n_test={n_test}: "
            f"need n_test >= 0 and 0 <= n_val <= n_train (validation is carved out "
            f"of the training images)."
        )
    for col in ("image_id", "lesion_id", "dx", "label"):
        if col not in meta.columns:
            raise DataError(
                f"make_split needs a metadata table with column '{col}'; pass the "
                f"result of read_metadata()."
            )
    _check_labels_present(meta, "make_split")
    if lesion_aware:
        dx_per_lesion = meta.groupby("lesion_id")["dx"].nunique()
        if (dx_per_lesion > 1).any():
            lesion = dx_per_lesion[dx_per_lesion > 1].index[0]
            raise DataError(
                f"lesion_id {lesion} has images of several classes, so a lesion-aware "
                f"per-class split cannot keep it on one side. Fix the metadata or use "
                f"lesion_aware=False."
            )

    rng = np.random.default_rng(seed)
    n_fit = n_train - n_val
    sides: dict[str, list[str]] = {"train": [], "val": [], "test": []}
    table = meta.sort_values(["label", "image_id"], kind="stable")
    for label, group in table.groupby("label", sort=True):
        dx = group["dx"].iloc[0]
        need = n_test + n_train
        if len(group) < need:
            raise DataError(
                f"Class '{dx}' has {len(group)} images but the split needs {need} "
                f"(n_test={n_test} + n_train={n_train}). Lower n_train/n_test (command line: --set n_train=N "
                f"--set n_val=M --set n_test=K, the M validation images taken from the N) or add data; a book "
                f"page runs its profile's split, so it needs a copy with at least {need} images of each class."
            )
        if not lesion_aware:
            ids = list(group["image_id"])
            order = rng.permutation(len(ids))
            shuffled = [ids[i] for i in order]
            sides["test"] += shuffled[:n_test]
            sides["val"] += shuffled[n_test:n_test + n_val]
            sides["train"] += shuffled[n_test + n_val:n_test + n_train]
            continue

        by_lesion = group.groupby("lesion_id", sort=True)["image_id"].apply(sorted)
        lesions = [by_lesion.iloc[i] for i in rng.permutation(len(by_lesion))]
        parts: dict[str, list[str]] = {}
        for side, n in (("test", n_test), ("val", n_val)):
            filled = _exact_fill(lesions, n)
            if filled is None:
                raise DataError(
                    f"Class '{dx}': cannot fill exactly {n} {side} images with whole "
                    f"lesions ({len(group)} images in {len(by_lesion)} lesions). "
                    f"Lower n_test/n_val, try another seed, or use lesion_aware=False."
                )
            parts[side], lesions = filled
        pool = [image_id for lesion in lesions for image_id in lesion]
        if len(pool) < n_fit:
            raise DataError(
                f"Class '{dx}': only {len(pool)} images remain for training after "
                f"{n_test} test and {n_val} validation images, but n_train - n_val = "
                f"{n_fit} are needed ({len(group)} images in {len(by_lesion)} lesions). "
                f"Lower n_train/n_test or use lesion_aware=False."
            )
        parts["train"] = pool[:n_fit]
        for side in sides:
            sides[side] += parts[side]

    label_of = dict(zip(meta["image_id"], meta["label"]))
    return {side: sorted(ids, key=lambda i: (int(label_of[i]), i)) for side, ids in sides.items()}


def _check_labels_present(meta: pd.DataFrame, who: str) -> None:
    """Every label 0..max must have rows: a class with none would silently leave the split."""
    if meta.empty:
        raise DataError(f"{who} got a metadata table with no rows; pass the result of read_metadata() "
                        f"on a folder whose metadata lists images of the requested classes.")
    labels = set(int(v) for v in meta["label"])
    absent = sorted(set(range(max(labels) + 1)) - labels)
    if absent:
        raise DataError(f"{who}: label(s) {absent} have no rows, so those classes would have 0 images in "
                        f"every side. Check the dx column, or read the metadata with classes= without them.")


def _greedy_fill(lesions: list[list[str]], n: int) -> tuple[list[str], list[list[str]]]:
    """Take whole lesions, in order, while they still fit into ``n`` images; if none fits, the
    smallest. Returns (taken image ids, lesions left). Reaches ``n`` exactly when enough
    single-image lesions remain, otherwise comes as close from below as the walk allows."""
    taken, rest = _take_whole_lesions(lesions, n)
    if not taken and rest and n > 0:
        k = min(range(len(rest)), key=lambda j: len(rest[j]))
        taken = list(rest.pop(k))
    return taken, rest


def _check_fractions(test_fraction, val_fraction) -> None:
    for name, f in (("test_fraction", test_fraction), ("val_fraction", val_fraction)):
        if f is None or not 0.0 < float(f) < 1.0:
            raise DataError(f"{name}={f!r}: a fraction split needs both test_fraction and val_fraction in (0, 1).")


def make_fraction_split(
    meta: pd.DataFrame,
    *,
    seed: int,
    test_fraction: float = 0.2,
    val_fraction: float = 0.1,
    lesion_aware: bool = True,
) -> dict[str, list[str]]:
    """Per-class split by fractions that uses every image: a pure function of (meta, seed).

    For the task whose classes differ widely in size (all seven HAM10000 diagnoses: nv has 6705
    images, df 115), counts per class cannot be equal. Per class with n images:
    ``round(test_fraction * n)`` go to test, ``round(val_fraction * rest)`` of the rest to
    validation, all others to training, so every side keeps the class proportions.

    ``lesion_aware=True`` (default): each class's lesions are shuffled and test, then validation
    are filled with whole lesions (a lesion is taken while it still fits; the count is exact
    whenever enough single-image lesions remain, within a few images otherwise); no lesion_id is
    on two sides and no image is dropped. ``lesion_aware=False``: an image-level shuffle.

    Classes are processed in label order with one ``np.random.default_rng(seed)``. Returns
    ``{"train", "val", "test"}`` lists of image_ids sorted by (label, image_id). Raises DataError
    if a class is too small to give every side at least one image.
    """
    _check_fractions(test_fraction, val_fraction)
    for col in ("image_id", "lesion_id", "dx", "label"):
        if col not in meta.columns:
            raise DataError(f"make_fraction_split needs a metadata table with column '{col}'; pass the "
                            f"result of read_metadata().")
    _check_labels_present(meta, "make_fraction_split")
    if lesion_aware and (meta.groupby("lesion_id")["dx"].nunique() > 1).any():
        raise DataError("a lesion_id has images of several classes, so a lesion-aware per-class split cannot "
                        "keep it on one side. Fix the metadata or use lesion_aware=False.")
    rng = np.random.default_rng(seed)
    sides: dict[str, list[str]] = {"train": [], "val": [], "test": []}
    table = meta.sort_values(["label", "image_id"], kind="stable")
    for _, group in table.groupby("label", sort=True):
        dx, n = group["dx"].iloc[0], len(group)
        n_test = int(round(test_fraction * n))
        n_val = int(round(val_fraction * (n - n_test)))
        if lesion_aware:
            by_lesion = group.groupby("lesion_id", sort=True)["image_id"].apply(sorted)
            lesions = [by_lesion.iloc[i] for i in rng.permutation(len(by_lesion))]
        else:
            ids = list(group["image_id"])
            lesions = [[ids[i]] for i in rng.permutation(n)]
        test, lesions = _greedy_fill(lesions, n_test)
        val, lesions = _greedy_fill(lesions, n_val)
        train = [i for lesion in lesions for i in lesion]
        if not (test and val and train):
            raise DataError(f"Class '{dx}' ({n} images) is too small for a split with test_fraction="
                            f"{test_fraction} and val_fraction={val_fraction}: a side would be empty. "
                            f"Raise the fractions or drop the class.")
        for side, part in (("train", train), ("val", val), ("test", test)):
            sides[side] += part
    label_of = dict(zip(meta["image_id"], meta["label"]))
    return {side: sorted(ids, key=lambda i: (int(label_of[i]), i)) for side, ids in sides.items()}


def class_counts(labels, n_classes: int | None = None) -> np.ndarray:
    """Images per class of an integer label vector (length ``n_classes``, zeros where absent)."""
    y = np.asarray(labels, dtype=int)
    return np.bincount(y, minlength=n_classes or (int(y.max()) + 1 if y.size else 0))


# --------------------------------------------------------------------------
# Decoding and caching
# --------------------------------------------------------------------------

def _centre_box(width: int, height: int) -> tuple[int, int, int, int]:
    """Centre square of the short side. Proportional in the image size, so a
    mask at the original 600x450 gets the same framing as a 200x150 image."""
    side = min(width, height)
    left = (width - side) // 2
    top = (height - side) // 2
    return left, top, left + side, top + side


BOOK_COPY_SIZE = "200x150"  # the images of the HAM10000 copy this book's results were computed from


def source_size(meta: pd.DataFrame) -> str:
    """``"WxH"`` of a copy's images (the official release: 600x450; this book's copy: :data:`BOOK_COPY_SIZE`),
    read from the header of its first non-empty image in image_id order. Decoding a copy at another resolution
    gives other pixels at any ``image_size``, so the size is part of the data's identity
    (:attr:`dpaat_lib.config.DataConfig.source_size`) and of the decoded-image cache's key."""
    for path in meta.sort_values("image_id")["path"]:
        if os.path.getsize(path) == 0:  # a slim copy's placeholder (slim_copy)
            continue
        try:
            with Image.open(path) as img:
                return f"{img.size[0]}x{img.size[1]}"
        except (OSError, SyntaxError, ValueError) as err:
            raise DataError(f"Cannot read image {path}: {err}. The file is missing or corrupt; re-download it, or "
                            "remove it and its row from the metadata CSV.") from err
    raise DataError("every image file of the metadata's rows is empty: give the folder of a complete copy")


def file_bytes(files: Mapping[str, str | os.PathLike], image_ids: Iterable[str]) -> dict[str, int]:
    """``{image_id: byte size of its file}`` for the ``image_ids`` that have a file in ``files`` (image_id ->
    path: :func:`find_images`, or a metadata frame's ``path`` column); a stat each, no read. A slim copy's
    placeholders give 0."""
    ids = [i for i in image_ids if i in files]
    return dict(zip(ids, _file_sizes([str(files[i]) for i in ids])))


def _file_sizes(paths: Sequence[str]) -> list[int]:
    """The byte size of each file (a stat each, no read): part of the decoded-image cache's key."""
    sizes = []
    for path in paths:
        try:
            sizes.append(os.path.getsize(path))
        except OSError as err:
            raise DataError(f"Cannot read image {path}: {err}. The file is missing; re-download it, or remove it "
                            "and its row from the metadata CSV.") from err
    return sizes


def _decode(path: str, size: int) -> np.ndarray:
    """One image -> uint8 array (size, size, 3): RGB, centre crop, bilinear
    resize (Pillow's resize is antialiased when it shrinks)."""
    try:
        with Image.open(path) as img:
            img.load()
            rgb = img.convert("RGB")
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
        raise DataError(
            f"Cannot read image {path}: {err}. The file is missing or corrupt; "
            f"re-download it, or remove it and its row from the metadata CSV."
        ) from err
    # crop first: resize(box=...) would let the filter read pixels outside the box
    out = rgb.crop(_centre_box(*rgb.size)).resize((size, size), Image.Resampling.BILINEAR)
    return np.array(out, dtype=np.uint8)  # writable copy for torch.from_numpy


def _check_key(key: str) -> None:
    """A cache key becomes a file name: keep it to safe characters."""
    if not key or not all(c.isalnum() or c in "-_." for c in key):
        raise ValueError(f"cache key {key!r} must be non-empty and use only [A-Za-z0-9._-]")


def _atomic_save(obj: object, path: pathlib.Path) -> None:
    """Write to a temporary file in the same folder, then rename: a run killed
    mid-write never leaves a half-written cache that a later run would trust."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        torch.save(obj, tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def load_images(
    paths: Sequence[str],
    size: int,
    *,
    cache_dir: str | os.PathLike | None = None,
    key: str | None = None,
    progress: bool = False,
) -> torch.Tensor:
    """Decode images into a uint8 tensor (N, 3, size, size).

    Each image is converted to RGB, centre-cropped to its short side and
    resized to size x size (Pillow, bilinear with antialiasing). Decoding runs
    in a small thread pool (Pillow releases the GIL while decoding).

    If ``cache_dir`` and ``key`` are both given, the tensor is stored as
    ``cache_dir/{key}_{size}.pt`` (atomic write) and later calls load it
    instead of decoding; the key must identify the content (see
    ``load_split``), since the cache is trusted if its shape matches.
    An unreadable or corrupt image raises DataError naming the file.
    """
    if size < 1:
        raise ValueError(f"size must be positive, got {size}")
    paths = [str(p) for p in paths]
    cache: pathlib.Path | None = None
    if cache_dir is not None and key is not None:
        _check_key(key)
        cache = pathlib.Path(cache_dir) / f"{key}_{size}.pt"
        if cache.is_file():
            try:
                cached = torch.load(cache, weights_only=True)
            except Exception:  # unreadable cache: rebuild it below
                cached = None
            if (
                isinstance(cached, torch.Tensor)
                and cached.dtype == torch.uint8
                and tuple(cached.shape) == (len(paths), 3, size, size)
            ):
                return cached

    out = torch.empty((len(paths), 3, size, size), dtype=torch.uint8)

    def work(i: int) -> None:
        out[i] = torch.from_numpy(_decode(paths[i], size)).permute(2, 0, 1)

    with ThreadPoolExecutor(max_workers=DECODE_THREADS) as pool:
        jobs: Iterable[None] = pool.map(work, range(len(paths)))
        if progress:
            from tqdm.auto import tqdm

            jobs = tqdm(jobs, total=len(paths), desc=f"decode {size}px", unit="img")
        for _ in jobs:  # iterating re-raises the first error from a worker
            pass

    if cache is not None:
        _atomic_save(out, cache)
    return out


@dataclass
class SplitTensors:
    """One side of a split in memory: images, labels and their image_ids.

    ``x`` must be uint8 (0-255), as :func:`load_split` decodes it: training and evaluation
    scale it to [0, 1] themselves (:func:`dpaat_lib.training.to_float`), so a float tensor
    raises a TypeError here, when it is built, not epochs later.
    """

    x: torch.Tensor  # uint8 (N, 3, S, S)
    y: torch.Tensor  # long (N,)
    image_ids: list[str]

    def __post_init__(self):
        self.check()

    def check(self, side: str = "") -> None:
        """Raise TypeError / ValueError unless x is uint8 (N, C, H, W) and y, image_ids have N entries."""
        what = f"SplitTensors{f' {side!r}' if side else ''}"
        if not isinstance(self.x, torch.Tensor) or self.x.dtype != torch.uint8:
            got = self.x.dtype if isinstance(self.x, torch.Tensor) else type(self.x).__name__
            raise TypeError(f"{what}.x must be uint8 images (0-255), got {got}; the library scales them to "
                            "[0, 1] itself. Convert float images in [0, 1] with (x * 255).round().to(torch.uint8)")
        if self.x.dim() != 4:
            raise ValueError(f"{what}.x must have shape (N, C, H, W), got {tuple(self.x.shape)}")
        n = self.x.shape[0]
        if not isinstance(self.y, torch.Tensor) or tuple(self.y.shape) != (n,):
            got = tuple(self.y.shape) if isinstance(self.y, torch.Tensor) else type(self.y).__name__
            raise ValueError(f"{what}.y must be a tensor of shape (N,) = ({n},) of class indices, got {got}")
        if self.y.dtype != torch.long:
            raise TypeError(f"{what}.y must be int64 class indices, got {self.y.dtype}; pass y.long()")
        if n and int(self.y.min()) < 0:
            raise ValueError(f"{what}.y must be class indices >= 0, got {int(self.y.min())}")
        if len(self.image_ids) != n:
            raise ValueError(f"{what} has {n} images but {len(self.image_ids)} image_ids")


def check_split_tensors(tensors: dict, sides: Sequence[str] = ("train", "val", "test")) -> None:
    """Raise a clear error unless ``tensors`` has each of ``sides`` as a valid :class:`SplitTensors`
    (uint8 images; checked again because a dataclass's fields can be replaced after it was built)."""
    if not isinstance(tensors, dict):
        raise TypeError(f"tensors must be a dict {{side: SplitTensors}} with sides {tuple(sides)}, "
                        f"got {type(tensors).__name__}")
    missing = [s for s in sides if s not in tensors]
    if missing:
        raise ValueError(f"tensors lacks the side(s) {missing}; give {tuple(sides)} (as load_split returns)")
    for s in sides:
        t = tensors[s]
        if not all(hasattr(t, a) for a in ("x", "y", "image_ids")):
            raise TypeError(f"tensors[{s!r}] must be a SplitTensors, got {type(t).__name__}")
        SplitTensors.check(t, s)


def load_split(
    root: str | os.PathLike,
    split: dict[str, list[str]],
    size: int,
    *,
    classes: Sequence[str] = CLASSES,
    cache_dir: str | os.PathLike | None = None,
) -> dict[str, SplitTensors]:
    """Read the metadata and decode every side of ``split`` (as from
    ``make_split``) at ``size`` pixels.

    The cache key of a side is the dataset digest, the images' own size
    (:func:`source_size`) and a hash of its id list, classes and the byte size of
    each of its files, so it is independent of where the data lies and changes
    whenever the content does (an image edited in place changes its file's size;
    an edit that keeps the exact byte count would go unseen: clear the cache then).
    Returns ``{side: SplitTensors}`` in the split's own order of ids.
    """
    meta = read_metadata(root, classes).set_index("image_id")
    digest = dataset_digest(meta.reset_index())
    pixels = source_size(meta.reset_index())  # same metadata at another resolution: other pixels
    result: dict[str, SplitTensors] = {}
    for side, ids in split.items():
        ids = list(ids)
        unknown = [i for i in ids if i not in meta.index]
        if unknown:
            raise DataError(
                f"Split side '{side}' names {len(unknown)} image_id(s) that are not "
                f"{list(classes)} rows of {metadata_path(root)} (first: "
                f"{unknown[:5]}). The split was made from other data: rebuild it with "
                f"make_split(read_metadata(root), seed=...)."
            )
        paths = list(meta.loc[ids, "path"])
        # The files' byte sizes too: an image edited in place (re-encoded, hair removed, colour-corrected) keeps
        # its metadata row but not its size, and must not be served the pixels decoded before the edit.
        id_hash = hashlib.sha256(
            ("\n".join(ids) + "|" + ",".join(classes) + "|" + ",".join(map(str, _file_sizes(paths)))).encode()
        ).hexdigest()[:12]
        x = load_images(
            paths,
            size,
            cache_dir=cache_dir,
            key=f"ham_{digest}_{pixels}_{id_hash}",
        )
        y = torch.tensor(meta.loc[ids, "label"].tolist(), dtype=torch.long)
        result[side] = SplitTensors(x=x, y=y, image_ids=ids)
    return result


def load_masks(
    root: str | os.PathLike, image_ids: Sequence[str], size: int
) -> torch.Tensor | None:
    """Lesion masks as bool (N, size, size), or None when any is missing.

    Reads ``root/masks/{image_id}_segmentation.png`` (the name of the official
    HAM10000 lesion segmentations), with the same centre crop as the images and
    nearest-neighbour resizing so the mask stays binary. Masks are optional
    extras (used e.g. to score saliency maps), hence None rather than an error.
    """
    folder = pathlib.Path(root) / MASK_DIR
    files = [folder / f"{i}{MASK_SUFFIX}" for i in image_ids]
    if not files or not all(f.is_file() for f in files):
        return None
    out = torch.empty((len(files), size, size), dtype=torch.bool)
    for k, f in enumerate(files):
        try:
            with Image.open(f) as img:
                grey = img.convert("L")
        except (OSError, SyntaxError, ValueError) as err:
            raise DataError(
                f"Cannot read mask {f}: {err}. Re-download or remove the file."
            ) from err
        small = grey.crop(_centre_box(*grey.size)).resize((size, size), Image.Resampling.NEAREST)
        out[k] = torch.from_numpy(np.asarray(small) > 127)
    return out
