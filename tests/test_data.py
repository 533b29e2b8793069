"""Tests for dpaat_lib.data and dpaat_lib.synthetic (method.md section 1)."""

from __future__ import annotations

import collections
import pathlib
import re
import shutil

import numpy as np
import pandas as pd
import pytest
import torch

from dpaat_lib.data import (
    ALL_CLASSES,
    CLASSES,
    DataError,
    SplitTensors,
    dataset_digest,
    find_images,
    load_images,
    load_masks,
    load_split,
    make_split,
    read_metadata,
)
from dpaat_lib.synthetic import make_synthetic_ham

from fakes import UNPICKLED, RunsCodeWhenUnpickled

SMALL = dict(n_train=60, n_test=20, n_val=10)
OFFICIAL_COLUMNS = ["lesion_id", "image_id", "dx", "dx_type", "age", "sex", "localization"]
# Content digest of the real 3-class metadata: a change here silently orphans
# every cached tensor and stored result, so it is pinned.
HAM10000_DIGEST = "ec41ab353aae7a39"


def _copy(src: pathlib.Path, dst: pathlib.Path) -> pathlib.Path:
    shutil.copytree(src, dst)
    return dst


def _sides_of_lesions(meta: pd.DataFrame, split: dict[str, list[str]]) -> dict[str, set[str]]:
    lesion = dict(zip(meta["image_id"], meta["lesion_id"]))
    return {side: {lesion[i] for i in ids} for side, ids in split.items()}


def _check_split(meta: pd.DataFrame, split: dict[str, list[str]], n_train: int, n_test: int,
                 n_val: int, lesion_aware: bool = True) -> None:
    dx = dict(zip(meta["image_id"], meta["dx"]))
    classes = sorted(set(meta["dx"]))
    expected = {"train": n_train - n_val, "val": n_val, "test": n_test}
    for side, n in expected.items():
        counts = collections.Counter(dx[i] for i in split[side])
        assert counts == {c: n for c in classes}, (side, counts)
    all_ids = split["train"] + split["val"] + split["test"]
    assert len(all_ids) == len(set(all_ids)), "an image is on two sides"
    label = dict(zip(meta["image_id"], meta["label"]))
    for ids in split.values():
        assert ids == sorted(ids, key=lambda i: (label[i], i))
    if lesion_aware:
        les = _sides_of_lesions(meta, split)
        assert not les["train"] & les["val"]
        assert not les["train"] & les["test"]
        assert not les["val"] & les["test"]


# --------------------------------------------------------------------------
# Synthetic generator
# --------------------------------------------------------------------------

def test_synthetic_layout_is_readable(synthetic_root: pathlib.Path) -> None:
    meta = read_metadata(synthetic_root)
    assert list(meta.columns[:7]) == OFFICIAL_COLUMNS
    assert meta["dx"].value_counts().to_dict() == {c: 150 for c in CLASSES}
    assert set(meta["dx_type"]) == {"synthetic"}
    assert [meta.loc[meta["dx"] == c, "label"].iloc[0] for c in CLASSES] == [0, 1, 2]
    assert "not ham10000" in (synthetic_root / "SYNTHETIC.md").read_text().lower()
    # about 20% of lesions have two images, so lesion-aware splitting matters
    sizes = meta.groupby("lesion_id").size()
    assert set(sizes) == {1, 2}
    assert 0.1 < (sizes == 2).mean() < 0.3
    # the same lesion never carries two diagnoses
    assert (meta.groupby("lesion_id")["dx"].nunique() == 1).all()


def test_synthetic_is_deterministic_and_idempotent(tmp_path: pathlib.Path) -> None:
    args = dict(n_per_class=12, size=32)
    a = make_synthetic_ham(tmp_path / "a", seed=3, **args)
    b = make_synthetic_ham(tmp_path / "b", seed=3, **args)
    c = make_synthetic_ham(tmp_path / "c", seed=4, **args)
    csv = "HAM10000_metadata.csv"
    assert (a / csv).read_bytes() == (b / csv).read_bytes()
    ma, mb, mc = read_metadata(a), read_metadata(b), read_metadata(c)
    xa, xb, xc = (load_images(m["path"].tolist(), 32) for m in (ma, mb, mc))
    assert torch.equal(xa, xb)
    assert not torch.equal(xa, xc)
    # images are 4:3 like the real data
    from PIL import Image

    with Image.open(ma["path"].iloc[0]) as img:
        assert img.size == (32 * 4 // 3, 32)
    # a second call with the same arguments rewrites nothing
    stamp = {p: p.stat().st_mtime_ns for p in a.rglob("*")}
    make_synthetic_ham(a, seed=3, **args)
    assert {p: p.stat().st_mtime_ns for p in a.rglob("*")} == stamp
    # other arguments regenerate cleanly (no stale images left behind)
    make_synthetic_ham(a, seed=3, n_per_class=5, size=32)
    assert len(find_images(a)) == 15
    assert len(read_metadata(a)) == 15


def test_synthetic_masks(synthetic_root: pathlib.Path) -> None:
    meta = read_metadata(synthetic_root)
    ids = meta["image_id"].tolist()
    masks = load_masks(synthetic_root, ids, 48)
    assert masks is not None and masks.dtype == torch.bool and masks.shape == (len(ids), 48, 48)
    frac = masks.float().mean(dim=(1, 2))
    assert (frac > 0.01).all() and (frac < 0.9).all()
    # masks line up with the lesion: darker inside than outside
    x = load_images(meta["path"].tolist()[:30], 48).float().mean(1)
    m = masks[:30]
    assert ((x * m).sum((1, 2)) / m.sum((1, 2)) < (x * ~m).sum((1, 2)) / (~m).sum((1, 2))).all()


def test_masks_absent_gives_none(synthetic_without_masks: pathlib.Path) -> None:
    meta = read_metadata(synthetic_without_masks)
    assert load_masks(synthetic_without_masks, meta["image_id"].tolist()[:3], 32) is None


@pytest.fixture
def synthetic_without_masks(synthetic_root: pathlib.Path, tmp_path: pathlib.Path) -> pathlib.Path:
    root = _copy(synthetic_root, tmp_path / "nomasks")
    shutil.rmtree(root / "masks")
    return root


def test_synthetic_refuses_to_overwrite_other_data(tmp_path: pathlib.Path) -> None:
    (tmp_path / "HAM10000_metadata.csv").write_text("lesion_id,image_id,dx\n")
    with pytest.raises(DataError, match="did not\\s+write"):
        make_synthetic_ham(tmp_path, n_per_class=3, size=16)


# --------------------------------------------------------------------------
# Split
# --------------------------------------------------------------------------

def test_split_counts_and_lesions(synthetic_root: pathlib.Path) -> None:
    meta = read_metadata(synthetic_root)
    split = make_split(meta, seed=0, **SMALL)
    _check_split(meta, split, **SMALL)
    assert make_split(meta, seed=0, **SMALL) == split
    assert make_split(meta, seed=1, **SMALL) != split
    # pure function of the content: row order of the table does not matter
    shuffled = meta.sample(frac=1.0, random_state=7)
    assert make_split(shuffled, seed=0, **SMALL) == split


def test_split_uses_all_images_when_class_is_exactly_big_enough(synthetic_root: pathlib.Path) -> None:
    # like bkl in HAM10000: 1099 = 800 + 299 images, every image is used
    meta = read_metadata(synthetic_root)
    split = make_split(meta, seed=5, n_train=110, n_test=40, n_val=12)
    _check_split(meta, split, n_train=110, n_test=40, n_val=12)
    assert sum(len(v) for v in split.values()) == len(meta)


def test_split_image_level(synthetic_root: pathlib.Path) -> None:
    meta = read_metadata(synthetic_root)
    split = make_split(meta, seed=0, lesion_aware=False, **SMALL)
    _check_split(meta, split, lesion_aware=False, **SMALL)
    assert split == make_split(meta, seed=0, lesion_aware=False, **SMALL)
    assert split != make_split(meta, seed=0, lesion_aware=True, **SMALL)
    # with the whole class in play, an image-level split does put lesions on two sides
    full = make_split(meta, seed=0, lesion_aware=False, n_train=110, n_test=40, n_val=12)
    les = _sides_of_lesions(meta, full)
    assert les["train"] & (les["test"] | les["val"])


def test_split_class_too_small(synthetic_root: pathlib.Path) -> None:
    meta = read_metadata(synthetic_root)
    with pytest.raises(DataError, match=r"Class 'nv' has 150 images but the split needs 200.*"
                                         r"command line: --set n_train=N --set n_val=M --set n_test=K"):
        make_split(meta, seed=0, n_train=150, n_test=50, n_val=10)
    with pytest.raises(DataError, match="n_val"):
        make_split(meta, seed=0, n_train=10, n_test=5, n_val=20)


# --------------------------------------------------------------------------
# Bad inputs
# --------------------------------------------------------------------------

def test_wrong_folder(tmp_path: pathlib.Path, synthetic_root: pathlib.Path) -> None:
    with pytest.raises(DataError, match=f"{re.escape(str(tmp_path))}.*HAM10000_metadata.csv.*images/"):
        read_metadata(tmp_path)
    with pytest.raises(DataError, match="does not exist"):
        read_metadata(tmp_path / "nowhere")
    with pytest.raises(DataError, match=f"No images.*{re.escape(str(tmp_path))}"):
        find_images(tmp_path)
    # pointing at the parent of the data folder: the message suggests the right one
    parent = tmp_path / "parent"
    _copy(synthetic_root, parent / "ham")
    with pytest.raises(DataError, match="Did you mean .*ham"):
        read_metadata(parent)


def _as_dataverse_tab(root: pathlib.Path, sep: str = "\t") -> pathlib.Path:
    """``root`` with its metadata as Harvard Dataverse hands it out by default: ``HAM10000_metadata.tab``,
    tab-separated with quoted strings, and no ``.csv``."""
    import csv

    table = pd.read_csv(root / "HAM10000_metadata.csv", dtype=str, keep_default_na=False)
    table.to_csv(root / "HAM10000_metadata.tab", sep=sep, index=False, quoting=csv.QUOTE_NONNUMERIC)
    (root / "HAM10000_metadata.csv").unlink()
    return root


@pytest.mark.parametrize("sep", ["\t", ","])  # Dataverse's conversion; a CSV saved under the .tab name
def test_dataverses_tab_metadata_reads_as_the_csv_does(synthetic_root, tmp_path, sep):
    """Harvard Dataverse, the official host, serves the metadata as HAM10000_metadata.tab unless asked for the
    original format: the same rows, so the same digest, split and images."""
    from dpaat_lib.data import metadata_path, slim_copy

    tab = _as_dataverse_tab(_copy(synthetic_root, tmp_path / "tab"), sep)
    assert metadata_path(tab) == tab / "HAM10000_metadata.tab" and metadata_path(synthetic_root).suffix == ".csv"
    ours, theirs = read_metadata(synthetic_root), read_metadata(tab)
    assert theirs.drop(columns="path").equals(ours.drop(columns="path"))
    assert dataset_digest(theirs) == dataset_digest(ours)
    split = make_split(theirs, seed=0, **SMALL)
    assert split == make_split(ours, seed=0, **SMALL)
    assert torch.equal(load_split(tab, split, 16)["test"].x, load_split(synthetic_root, split, 16)["test"].x)
    slim_copy(tab, split["test"], tmp_path / "slim")  # the slim copy keeps the file as it is
    assert metadata_path(tmp_path / "slim") == tmp_path / "slim" / "HAM10000_metadata.tab"
    parent = tmp_path / "parent"  # pointing at the parent folder: the message names the right one
    shutil.move(tab, parent / "ham")
    with pytest.raises(DataError, match="Did you mean .*ham"):
        read_metadata(parent)


def test_unpacked_image_archives_are_named_with_the_command_that_unpacks_them(synthetic_root, tmp_path):
    """The official release is two zip archives of JPEGs beside the metadata: a folder holding them still packed
    gets the command, not only 'no images'."""
    root = tmp_path / "release"
    root.mkdir()
    shutil.copy(synthetic_root / "HAM10000_metadata.csv", root)
    for part in (1, 2):
        shutil.make_archive(str(root / f"HAM10000_images_part_{part}"), "zip", synthetic_root / "images")
    for reader in (read_metadata, find_images):
        with pytest.raises(DataError, match=r"holds HAM10000_images_part_1.zip, HAM10000_images_part_2.zip: "
                                            r"unpack.*unzip -n HAM10000_images_part_1.zip"):
            reader(root)
    shutil.copy(next((synthetic_root / "images").glob("*.jpg")), root)  # one image unpacked: the rest missing
    with pytest.raises(DataError, match=r"have no file.*unzip -n"):
        read_metadata(root)
    shutil.unpack_archive(root / "HAM10000_images_part_1.zip", root)  # as the message says: found now
    assert len(read_metadata(root)) == len(read_metadata(synthetic_root))


def _edit_csv(root: pathlib.Path, edit) -> None:
    path = root / "HAM10000_metadata.csv"
    meta = pd.read_csv(path, dtype=str, keep_default_na=False)
    edit(meta).to_csv(path, index=False)


def test_missing_column(synthetic_root: pathlib.Path, tmp_path: pathlib.Path) -> None:
    root = _copy(synthetic_root, tmp_path / "d")
    _edit_csv(root, lambda m: m.drop(columns=["dx"]))
    with pytest.raises(DataError, match=r"HAM10000_metadata.csv has no column 'dx'"):
        read_metadata(root)


def test_unknown_dx(synthetic_root: pathlib.Path, tmp_path: pathlib.Path) -> None:
    root = _copy(synthetic_root, tmp_path / "d")

    def edit(m: pd.DataFrame) -> pd.DataFrame:
        m.loc[7, "dx"] = "melanoma"
        return m

    _edit_csv(root, edit)
    image_id = pd.read_csv(root / "HAM10000_metadata.csv")["image_id"][7]
    with pytest.raises(DataError, match=f"unknown value 'melanoma'.*{image_id}"):
        read_metadata(root)


def _set(row: int, col: str, value: str):
    def edit(m: pd.DataFrame) -> pd.DataFrame:
        m.loc[row, col] = value
        return m
    return edit


def _duplicate_row(m: pd.DataFrame) -> pd.DataFrame:
    return pd.concat([m, m.iloc[[3]]], ignore_index=True)


@pytest.mark.parametrize("edit, message", [
    (_set(4, "image_id", "  "), r"empty image_id \(data row 5\).*Fill it in or remove the row"),
    (_duplicate_row, r"image_id ISIC_\d+ appears more than once \(1 duplicated ids\).*remove the duplicates"),
])
def test_bad_metadata_rows_are_named_with_the_fix(synthetic_root, tmp_path, edit, message) -> None:
    root = _copy(synthetic_root, tmp_path / "d")
    _edit_csv(root, edit)
    with pytest.raises(DataError, match=message):
        read_metadata(root)


@pytest.mark.parametrize("content", [b"", b'image_id,dx\n"ISIC_1,nv\n'], ids=["empty", "unclosed-quote"])
def test_unparseable_metadata_says_to_download_it_again(synthetic_root, tmp_path, content) -> None:
    root = _copy(synthetic_root, tmp_path / "d")
    (root / "HAM10000_metadata.csv").write_bytes(content)
    with pytest.raises(DataError, match=r"Cannot parse .*HAM10000_metadata.csv.*Re-download the metadata file"):
        read_metadata(root)


def test_make_split_refuses_a_table_it_cannot_split(synthetic_root) -> None:
    meta = read_metadata(synthetic_root)
    with pytest.raises(DataError, match=r"make_split needs a metadata table with column 'lesion_id'"):
        make_split(meta.drop(columns=["lesion_id"]), seed=0, **SMALL)
    mixed = meta.copy()
    other = mixed.index[mixed["dx"] != mixed.loc[0, "dx"]][0]
    mixed.loc[other, "lesion_id"] = mixed.loc[0, "lesion_id"]  # one lesion, two diagnoses
    with pytest.raises(DataError, match=rf"lesion_id {mixed.loc[0, 'lesion_id']} has images of several classes"):
        make_split(mixed, seed=0, **SMALL)
    fit = SMALL["n_train"] - SMALL["n_val"]  # training images per class, validation carved out
    assert len(make_split(mixed, seed=0, lesion_aware=False, **SMALL)["train"]) == 3 * fit


def test_missing_image_file(synthetic_root: pathlib.Path, tmp_path: pathlib.Path) -> None:
    root = _copy(synthetic_root, tmp_path / "d")
    victims = sorted((root / "images").glob("*.jpg"))[:2]
    for v in victims:
        v.unlink()
    with pytest.raises(DataError, match=f"2 image\\(s\\).*{victims[0].stem}.*Re-download"):
        read_metadata(root)
    # only the kept classes need their files
    meta = pd.read_csv(root / "HAM10000_metadata.csv")
    other = [c for c in CLASSES if c not in set(meta.loc[meta.image_id.isin([v.stem for v in victims]), "dx"])]
    assert len(read_metadata(root, classes=other)) == 150 * len(other)


def test_corrupt_image(tmp_path: pathlib.Path, synthetic_root: pathlib.Path) -> None:
    garbage = tmp_path / "ISIC_0000001.jpg"
    garbage.write_bytes(b"this is not a jpeg" * 10)
    good = str(sorted((synthetic_root / "images").glob("*.jpg"))[0])
    with pytest.raises(DataError, match="ISIC_0000001.jpg.*re-download"):
        load_images([good, str(garbage)], 32)
    truncated = tmp_path / "ISIC_0000002.jpg"
    truncated.write_bytes(pathlib.Path(good).read_bytes()[:300])
    with pytest.raises(DataError, match="ISIC_0000002.jpg"):
        load_images([str(truncated)], 32)


def test_bad_classes_argument(synthetic_root: pathlib.Path) -> None:
    with pytest.raises(DataError, match="classes"):
        read_metadata(synthetic_root, classes=("nv", "melanoma"))


# --------------------------------------------------------------------------
# Layouts, resolutions, digest, cache
# --------------------------------------------------------------------------

def test_official_two_part_layout(synthetic_root: pathlib.Path, tmp_path: pathlib.Path) -> None:
    root = tmp_path / "official"
    root.mkdir()
    shutil.copy(synthetic_root / "HAM10000_metadata.csv", root)
    files = sorted((synthetic_root / "images").glob("*.jpg"))
    for k, f in enumerate(files):
        part = root / ("HAM10000_images_part_1" if k % 2 else "HAM10000_images_part_2")
        part.mkdir(exist_ok=True)
        shutil.copy(f, part)
    flat = tmp_path / "flat"  # jpgs directly in the folder are tolerated too
    shutil.copytree(synthetic_root / "images", flat)
    shutil.copy(synthetic_root / "HAM10000_metadata.csv", flat)

    ref = read_metadata(synthetic_root)
    for other in (root, flat):
        meta = read_metadata(other)
        pd.testing.assert_frame_equal(meta.drop(columns="path"), ref.drop(columns="path"))
        assert dataset_digest(meta) == dataset_digest(ref)
        assert torch.equal(load_images(meta["path"][:5].tolist(), 24),
                           load_images(ref["path"][:5].tolist(), 24))


@pytest.mark.parametrize("size", [32, 48])
def test_any_resolution(synthetic_root: pathlib.Path, size: int) -> None:
    paths = read_metadata(synthetic_root)["path"].tolist()[:8]
    x = load_images(paths, size)
    assert x.dtype == torch.uint8 and x.shape == (8, 3, size, size)
    assert x.float().std() > 5  # not blank


def test_centre_crop(tmp_path: pathlib.Path) -> None:
    from PIL import Image

    # 40x20 image: left and right quarters red, centre square green
    arr = np.zeros((20, 40, 3), dtype=np.uint8)
    arr[:, :10, 0] = arr[:, 30:, 0] = 255
    arr[:, 10:30, 1] = 255
    Image.fromarray(arr).save(tmp_path / "a.png")
    x = load_images([str(tmp_path / "a.png")], 10)
    assert x[0, 0].max() == 0 and x[0, 1].min() == 255


def test_digest_independent_of_location(synthetic_root: pathlib.Path, tmp_path: pathlib.Path) -> None:
    moved = _copy(synthetic_root, tmp_path / "elsewhere" / "ham")
    a, b = read_metadata(synthetic_root), read_metadata(moved)
    assert dataset_digest(a) == dataset_digest(b)
    assert len(dataset_digest(a)) == 16
    changed = b.copy()
    changed.loc[0, "lesion_id"] = "HAM_other"
    assert dataset_digest(changed) != dataset_digest(a)


def test_cache_roundtrip(synthetic_root: pathlib.Path, tmp_path: pathlib.Path) -> None:
    root = _copy(synthetic_root, tmp_path / "d")
    paths = read_metadata(root)["path"].tolist()[:10]
    cache = tmp_path / "cache"
    first = load_images(paths, 32, cache_dir=cache, key="abc")
    assert (cache / "abc_32.pt").is_file()
    assert not list(cache.glob("*.tmp"))
    shutil.rmtree(root / "images")  # the second call must not touch the sources
    second = load_images(paths, 32, cache_dir=cache, key="abc", progress=True)
    assert torch.equal(first, second)
    with pytest.raises(DataError):  # another size is not cached: it needs the files
        load_images(paths, 24, cache_dir=cache, key="abc")


@pytest.mark.parametrize("garbage", [b"not a torch file", None], ids=["corrupt", "pickled-object"])
def test_a_corrupt_cache_file_is_decoded_again_never_unpickled(synthetic_root, tmp_path, garbage) -> None:
    """The cache file is data, not code: loading it runs nothing it holds (weights_only), and a file that is
    not the expected tensor is rebuilt from the images instead of failing the run."""
    paths = read_metadata(synthetic_root)["path"].tolist()[:6]
    fresh = load_images(paths, 24)
    cache = tmp_path / "cache"
    cache.mkdir()
    if garbage is None:
        torch.save({"x": RunsCodeWhenUnpickled()}, cache / "abc_24.pt")
    else:
        (cache / "abc_24.pt").write_bytes(garbage)
    assert torch.equal(load_images(paths, 24, cache_dir=cache, key="abc"), fresh)
    assert not UNPICKLED, "loading the cache ran code from the file"
    assert torch.equal(torch.load(cache / "abc_24.pt", weights_only=True), fresh), "the cache was rewritten"


def test_load_split(synthetic_root: pathlib.Path, tmp_path: pathlib.Path) -> None:
    meta = read_metadata(synthetic_root)
    split = make_split(meta, seed=0, **SMALL)
    cache = tmp_path / "cache"
    parts = load_split(synthetic_root, split, 32, cache_dir=cache)
    assert set(parts) == {"train", "val", "test"}
    for side, part in parts.items():
        assert isinstance(part, SplitTensors)
        assert part.image_ids == split[side]
        assert part.x.shape == (len(split[side]), 3, 32, 32) and part.x.dtype == torch.uint8
        assert part.y.dtype == torch.long
        assert part.y.tolist() == [int(meta.set_index("image_id").loc[i, "label"]) for i in split[side]]
    assert len(list(cache.glob("*_32.pt"))) == 3
    again = load_split(synthetic_root, split, 32, cache_dir=cache)
    assert torch.equal(again["test"].x, parts["test"].x)
    with pytest.raises(DataError, match="not .*rows"):
        load_split(synthetic_root, {"test": ["ISIC_0000000"]}, 32)


# --------------------------------------------------------------------------
# Real HAM10000 (skipped when absent)
# --------------------------------------------------------------------------

def test_real_metadata(ham10000_root: pathlib.Path) -> None:
    meta = read_metadata(ham10000_root)
    assert meta["dx"].value_counts().to_dict() == {"nv": 6705, "mel": 1113, "bkl": 1099}
    assert meta.groupby("dx")["lesion_id"].nunique().to_dict() == {"nv": 5403, "mel": 614, "bkl": 727}
    assert dataset_digest(meta) == HAM10000_DIGEST
    assert len(read_metadata(ham10000_root, classes=ALL_CLASSES)) == 10015
    from dpaat_lib.data import BOOK_COPY_SIZE, source_size
    assert source_size(meta) == BOOK_COPY_SIZE  # so the committed runs keep their identities


def test_real_split(ham10000_root: pathlib.Path) -> None:
    meta = read_metadata(ham10000_root)
    split = make_split(meta, seed=0)
    _check_split(meta, split, n_train=800, n_test=299, n_val=80)
    assert make_split(meta, seed=0) == split
    assert make_split(meta, seed=1) != split
    # bkl has exactly 800 + 299 images: all of them are used
    dx = dict(zip(meta["image_id"], meta["dx"]))
    assert sum(dx[i] == "bkl" for ids in split.values() for i in ids) == 1099
    # the image-level option leaks lesions across sides (what it exists to measure)
    leaky = make_split(meta, seed=0, lesion_aware=False)
    _check_split(meta, leaky, n_train=800, n_test=299, n_val=80, lesion_aware=False)
    les = _sides_of_lesions(meta, leaky)
    assert les["train"] & les["test"]


def test_real_decode_sample(ham10000_root: pathlib.Path) -> None:
    meta = read_metadata(ham10000_root)
    sample = meta.groupby("dx").head(7)
    x = load_images(sample["path"].tolist(), 64)
    assert x.shape == (21, 3, 64, 64)
    assert 20 < x.float().mean() < 235 and x.float().std() > 10


# --------------------------------------------------------------------------
# Split by fractions (the 7-class task) and the synthetic seven classes
# --------------------------------------------------------------------------

from dpaat_lib.data import make_fraction_split  # noqa: E402

SEVEN = {"nv": 60, "mel": 30, "bkl": 30, "bcc": 20, "akiec": 16, "vasc": 12, "df": 12}


@pytest.fixture(scope="module")
def synthetic_seven(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    """A small imbalanced synthetic folder with all seven classes."""
    return make_synthetic_ham(tmp_path_factory.mktemp("synthetic_seven"), n_per_class=SEVEN, size=24, seed=1,
                              classes=ALL_CLASSES)


def _check_fraction_split(meta: pd.DataFrame, split: dict[str, list[str]], test_fraction: float,
                          val_fraction: float, lesion_aware: bool = True, slack: int = 2) -> None:
    all_ids = split["train"] + split["val"] + split["test"]
    assert sorted(all_ids) == sorted(meta["image_id"]), "every image on exactly one side"
    dx = dict(zip(meta["image_id"], meta["dx"]))
    for c, n in meta["dx"].value_counts().items():
        got = {side: sum(dx[i] == c for i in ids) for side, ids in split.items()}
        assert min(got.values()) > 0, (c, got)  # every class on every side
        assert abs(got["test"] - round(test_fraction * n)) <= slack, (c, got)
        assert abs(got["val"] - round(val_fraction * (n - got["test"]))) <= slack, (c, got)
    if lesion_aware:
        les = _sides_of_lesions(meta, split)
        assert not les["train"] & les["val"] and not les["train"] & les["test"] and not les["val"] & les["test"]


def test_fraction_split_is_lesion_aware_and_covers_all_classes(synthetic_seven: pathlib.Path) -> None:
    meta = read_metadata(synthetic_seven, ALL_CLASSES)
    assert meta.groupby("lesion_id").size().max() > 1  # lesions with two images exist
    split = make_split(meta, seed=0, test_fraction=0.2, val_fraction=0.1)
    _check_fraction_split(meta, split, 0.2, 0.1)
    assert split == make_fraction_split(meta, seed=0, test_fraction=0.2, val_fraction=0.1)
    assert split == make_split(meta.sample(frac=1, random_state=3), seed=0, test_fraction=0.2, val_fraction=0.1)
    assert split != make_split(meta, seed=1, test_fraction=0.2, val_fraction=0.1)


def test_fraction_split_image_level(synthetic_seven: pathlib.Path) -> None:
    meta = read_metadata(synthetic_seven, ALL_CLASSES)
    split = make_fraction_split(meta, seed=0, test_fraction=0.25, val_fraction=0.2, lesion_aware=False)
    _check_fraction_split(meta, split, 0.25, 0.2, lesion_aware=False, slack=0)


def test_fraction_split_errors(synthetic_seven: pathlib.Path) -> None:
    meta = read_metadata(synthetic_seven, ALL_CLASSES)
    with pytest.raises(DataError, match="fraction"):
        make_fraction_split(meta, seed=0, test_fraction=0.0, val_fraction=0.1)
    with pytest.raises(DataError, match="too small"):
        make_fraction_split(meta[meta["dx"] != "df"].iloc[:2].assign(dx="nv"), seed=0, test_fraction=0.2,
                            val_fraction=0.1)


def test_synthetic_seven_classes_keep_the_first_three(synthetic_seven: pathlib.Path, tmp_path: pathlib.Path) -> None:
    meta = read_metadata(synthetic_seven, ALL_CLASSES)
    assert meta["dx"].value_counts().to_dict() == SEVEN
    three = make_synthetic_ham(tmp_path / "three", n_per_class={c: SEVEN[c] for c in CLASSES}, size=24, seed=1)
    m3 = read_metadata(three)
    assert dataset_digest(m3) == dataset_digest(read_metadata(synthetic_seven))
    for i in m3["image_id"][::25]:
        assert (three / "images" / f"{i}.jpg").read_bytes() == (synthetic_seven / "images" / f"{i}.jpg").read_bytes()


def test_real_seven_class_fraction_split(ham10000_root: pathlib.Path) -> None:
    meta = read_metadata(ham10000_root, ALL_CLASSES)
    assert len(meta) == 10015
    split = make_fraction_split(meta, seed=0, test_fraction=0.2, val_fraction=0.1)
    _check_fraction_split(meta, split, 0.2, 0.1)


# --------------------------------------------------------------------------
# Slim copy (what travels to a lent GPU)
# --------------------------------------------------------------------------


def test_slim_copy_keeps_digest_split_and_the_split_images(tmp_path, synthetic_root):
    from dpaat_lib import cli, data as D, experiment, profiles
    out = tmp_path / "slim"
    sizes = ["--set", "n_train=60", "--set", "n_val=10", "--set", "n_test=30"]
    assert cli.main(["slim-copy", "--profile", "quick", "--data", str(synthetic_root), "--out", str(out)] + sizes) == 0
    dc = profiles.data_config(profiles.profile_for("quick", synthetic_root, n_train=60, n_val=10, n_test=30))
    split = experiment.make_split_for(dc, synthetic_root)
    kept = {i for ids in split.values() for i in ids}
    assert experiment.make_split_for(dc, out) == split
    assert D.dataset_digest(D.read_metadata(out)) == D.dataset_digest(D.read_metadata(synthetic_root))
    original, slim = D.find_images(synthetic_root), D.find_images(out)
    assert set(slim) == set(original) and len(kept) < len(original)
    for image_id, path in slim.items():
        if image_id in kept:
            assert path.read_bytes() == original[image_id].read_bytes()
        else:
            assert path.stat().st_size == 0
    a = D.load_split(synthetic_root, split, 32)
    b = D.load_split(out, split, 32)
    assert all(torch.equal(a[k].x, b[k].x) for k in split)
    # An image left out fails to decode with the corrupt-image error, not silently.
    left_out = sorted(set(slim) - kept)[:1]
    with pytest.raises(D.DataError, match="missing or corrupt"):
        D.load_images([str(slim[left_out[0]])], 32)


def test_slim_copy_refuses_a_missing_image_and_its_own_folder(tmp_path, synthetic_root):
    from dpaat_lib import data as D
    with pytest.raises(D.DataError, match="no file"):
        D.slim_copy(synthetic_root, ["ISIC_does_not_exist"], tmp_path / "slim")
    copy = tmp_path / "copy"
    shutil.copytree(synthetic_root, copy)
    with pytest.raises(ValueError, match="another folder"):
        D.slim_copy(copy, [], copy)


def _resized_copy(src: pathlib.Path, dst: pathlib.Path, size: tuple[int, int]) -> pathlib.Path:
    """``src`` with every image resized to ``size`` (W, H): the same metadata at another resolution."""
    from PIL import Image

    shutil.copytree(src, dst)
    for f in (dst / "images").glob("*.jpg"):
        with Image.open(f) as img:
            img.convert("RGB").resize(size).save(f, quality=95)
    return dst


def test_a_copy_at_another_resolution_is_other_data_with_its_own_cache(synthetic_root, tmp_path):
    """The official release (600x450) and this book's copy (200x150) share their metadata, so its digest alone
    would give their runs one identity and one decoded-image cache: the images' size tells them apart."""
    from dpaat_lib import experiment, profiles
    from dpaat_lib.data import BOOK_COPY_SIZE, source_size

    book_copy = _resized_copy(synthetic_root, tmp_path / "book", (200, 150))
    larger = _resized_copy(synthetic_root, tmp_path / "larger", (240, 180))
    assert (source_size(read_metadata(book_copy)), source_size(read_metadata(larger))) == (BOOK_COPY_SIZE, "240x180")
    prof = profiles.get_profile("quick", source="ham10000", **SMALL)
    data = [experiment.resolve_data(profiles.data_config(prof), root) for root in (book_copy, larger)]
    assert data[0].digest == data[1].digest and (data[0].source_size, data[1].source_size) == (None, "240x180")
    ids = [profiles.run_config(prof, "smallcnn", "std", 0, d).run_id for d in data]
    assert ids[0] != ids[1]
    assert "source_size" not in data[0].identity()  # the book's copy keeps the run ids it always had
    split = make_split(read_metadata(book_copy), seed=0, **SMALL)
    cache = tmp_path / "cache"
    first, second = (load_split(root, split, 32, cache_dir=cache)["test"].x for root in (book_copy, larger))
    assert len(list(cache.glob("*.pt"))) == 6 and not torch.equal(first, second)


def test_an_image_edited_in_place_is_decoded_again_not_served_from_the_cache(synthetic_root, tmp_path):
    """A user's copy whose images were processed in place (re-encoded, hair removed, colour-corrected) keeps its
    metadata, so the dataset digest alone would serve the pixels decoded before the edit."""
    from PIL import Image

    root = _copy(synthetic_root, tmp_path / "d")
    split = make_split(read_metadata(root), seed=0, **SMALL)
    cache = tmp_path / "cache"
    before = load_split(root, split, 32, cache_dir=cache)["test"]
    edited = pathlib.Path(read_metadata(root).set_index("image_id").loc[before.image_ids[0], "path"])
    size = edited.stat().st_size
    with Image.open(edited) as img:
        img.convert("RGB").transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(edited, quality=60)
    assert edited.stat().st_size != size
    after = load_split(root, split, 32, cache_dir=cache)["test"]
    fresh = load_split(root, split, 32)["test"]  # no cache: decoded from the files as they are now
    assert torch.equal(after.x, fresh.x)
    assert not torch.equal(after.x[0], before.x[0]) and torch.equal(after.x[1:], before.x[1:])
    assert len(list(cache.glob("*_32.pt"))) == 4  # the test side's new entry beside the three first ones


def test_a_store_refuses_a_copy_whose_images_were_edited(synthetic_root, tmp_path, cache_dir):
    """Same metadata and resolution, other image files: the store's runs would be loaded and shown as the copy's
    own. The store records each file's byte size when it computes a run, and a copy that differs is refused
    with the fix; an identical copy elsewhere and a slim copy are the same data."""
    import dataclasses

    from PIL import Image, ImageFilter

    from dpaat_lib import attacks, experiment, profiles, store
    from dpaat_lib.data import slim_copy

    original = _copy(synthetic_root, tmp_path / "original")
    prof = profiles.get_profile("quick", source="ham10000", epochs=1, **SMALL)
    results = tmp_path / "results"
    data = experiment.resolve_data(profiles.data_config(prof), original, results)
    fgsm = (attacks.AttackSpec("FGSM", "linf", 2 / 255, 2 / 255, 1, False),)

    def config(seed: int):
        return dataclasses.replace(profiles.run_config(prof, "smallcnn", "std", seed, data), eval_attacks=fgsm)

    experiment.run(config(0), results=results, data_root=original, cache_dir=cache_dir, progress=False)
    split = store.read_json(store.RunDir(results, config(0).run_id).split)
    recorded = store.read_data_files(results)["128x96"]  # the stand-in's resolution
    assert set(recorded) == {i for ids in split.values() for i in ids} and all(recorded.values())

    same = _copy(original, tmp_path / "same")
    assert experiment.resolve_data(profiles.data_config(prof), same, results) == data
    slim_copy(original, split["test"], tmp_path / "slim")  # the others are empty placeholders: not compared
    assert experiment.resolve_data(profiles.data_config(prof), tmp_path / "slim", results) == data

    edited = pathlib.Path(read_metadata(same).set_index("image_id").loc[split["train"][0], "path"])
    with Image.open(edited) as img:
        img.convert("RGB").filter(ImageFilter.GaussianBlur(2)).save(edited, quality=60)
    assert edited.stat().st_size != recorded[split["train"][0]]
    with pytest.raises(DataError, match=rf"{re.escape(str(results))} holds runs computed from other image files.*"
                                        rf"1 image\(s\).*first: {split['train'][0]}.*another results folder"):
        experiment.resolve_data(profiles.data_config(prof), same, results)
    with pytest.raises(DataError, match="other image files"):  # a new run of the store from it: refused before training
        experiment.run(config(1), results=results, data_root=same, cache_dir=cache_dir, progress=False)
    assert not (results / config(1).run_id / "history.json").exists()
    assert experiment.resolve_data(profiles.data_config(prof), same, tmp_path / "elsewhere") == data  # its own store


def test_the_image_size_is_read_past_a_slim_copys_empty_files_and_an_all_empty_copy_is_refused(synthetic_root,
                                                                                            tmp_path):
    from dpaat_lib.data import source_size

    root = _copy(synthetic_root, tmp_path / "d")
    meta = read_metadata(root).sort_values("image_id")
    pathlib.Path(meta["path"].iloc[0]).write_bytes(b"")
    assert source_size(meta) == "128x96"  # the stand-in is drawn at 4:3, as HAM10000
    for p in meta["path"]:
        pathlib.Path(p).write_bytes(b"")
    with pytest.raises(DataError, match="every image file of the metadata's rows is empty"):
        source_size(meta)


def test_without_the_data_the_stored_runs_give_the_digest_and_the_image_size(synthetic_root, tmp_path):
    from dpaat_lib import experiment, profiles, store

    larger = _resized_copy(synthetic_root, tmp_path / "larger", (240, 180))
    prof = profiles.get_profile("quick", source="ham10000", **SMALL)
    data = experiment.resolve_data(profiles.data_config(prof), larger)
    cfg = profiles.run_config(prof, "smallcnn", "std", 0, data)
    store.write_json(tmp_path / "results" / cfg.run_id / "config.json", cfg.to_dict())
    again = experiment.resolve_data(profiles.data_config(prof), None, tmp_path / "results")
    assert again == data and profiles.run_config(prof, "smallcnn", "std", 0, again).run_id == cfg.run_id
