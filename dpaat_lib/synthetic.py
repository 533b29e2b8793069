"""Synthetic stand-in for HAM10000, written in the official folder layout.

Tests and the quick profile must run anywhere, without the real data (which
cannot be shipped with the project). ``make_synthetic_ham`` writes a folder
that ``dpaat_lib.data.read_metadata`` reads exactly like the real one:
``HAM10000_metadata.csv`` with the official seven columns, JPEGs in
``images/``, and a lesion mask per image in ``masks/`` (the file name of the
official HAM10000 segmentations). Everything is drawn procedurally; it is
*not* HAM10000, and the folder says so in ``SYNTHETIC.md``.

The classes differ in shape, border and colour, with enough random
jitter that a small CNN learns them above chance but not perfectly:

- nv: round, smooth border, fairly uniform brown;
- mel: irregular blobby border, several colours (dark brown, black, blue-grey);
- bkl: oval, well demarcated, lighter tan/waxy with a fissured texture;

and, for the 7-class task (classes beyond the paper's three are drawn after
them, so a set's nv/mel/bkl images do not depend on whether the others are
drawn too):

- bcc: pink, translucent ("pearly") with thin red branching vessels;
- akiec: flat, irregular, red-pink with white scale;
- vasc: small, sharply bordered, red to purple with darker lacunae;
- df: small, light brown rim around a pale central patch.

About 20% of lesions have a second image (a slightly shifted, rotated and
rescaled view), so a lesion-aware split is exercised.
"""

from __future__ import annotations

import json
import os
import pathlib
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd
from PIL import Image

from .data import ALL_CLASSES, CLASSES, METADATA_FILE, MASK_SUFFIX, DataError

ARGS_FILE = "synthetic_args.json"
GENERATOR_VERSION = 1
SECOND_VIEW_P = 0.2
JPEG_QUALITY = 90
SUPPORTED = ALL_CLASSES
LOCALIZATIONS = ("back", "lower extremity", "trunk", "upper extremity", "abdomen", "face", "chest")

_README = """# Synthetic data: NOT HAM10000

This folder was written by `dpaat_lib.synthetic.make_synthetic_ham` with the
arguments in `{args}`. Its images are procedurally drawn "lesions" on a
skin-coloured noisy background (classes {classes}); they only imitate the
layout of HAM10000 (`HAM10000_metadata.csv`, `images/`, `masks/`) so the code
can be tested without the real data. Every number computed on this folder is
a synthetic result and must be labelled as such. It says nothing about
dermoscopy or about the paper.
"""


def _smooth_noise(rng: np.random.Generator, h: int, w: int, cells: int) -> np.ndarray:
    """Low-frequency noise in [-1, 1]: a coarse random grid, bilinearly upsampled."""
    ch, cw = max(2, cells * h // max(h, w)), max(2, cells * w // max(h, w))
    grid = rng.uniform(-1.0, 1.0, size=(ch, cw)).astype(np.float32)
    big = Image.fromarray(grid).resize((w, h), Image.Resampling.BICUBIC)
    return np.clip(np.asarray(big, dtype=np.float32), -1.0, 1.0)


def _lesion_params(rng: np.random.Generator, dx: str, size: int) -> dict[str, Any]:
    """Everything that identifies one lesion (shared by its views)."""
    if dx == "nv":
        aspect = rng.uniform(0.82, 1.0)
        amps = rng.uniform(0.0, 0.035, size=3)  # harmonics 2..4
        softness = rng.uniform(0.04, 0.10)
        base = np.array([150, 95, 62]) * rng.uniform(0.55, 1.15)
        radius = rng.uniform(0.17, 0.27)
    elif dx == "mel":
        aspect = rng.uniform(0.7, 1.0)
        amps = rng.uniform(0.01, 0.10, size=7) / np.arange(1, 8) ** 0.4  # harmonics 2..8
        softness = rng.uniform(0.02, 0.08)
        base = np.array([120, 72, 46]) * rng.uniform(0.65, 1.2)
        radius = rng.uniform(0.2, 0.31)
    elif dx == "bkl":
        aspect = rng.uniform(0.5, 0.78)
        amps = rng.uniform(0.0, 0.05, size=3)
        softness = rng.uniform(0.02, 0.06)
        # light tan ... mid brown, overlapping the darker end with nv
        base = (np.array([185, 145, 105]) + rng.uniform(0, 0.7) * np.array([-40, -55, -45])
                ) * rng.uniform(0.85, 1.08)
        radius = rng.uniform(0.18, 0.29)
    elif dx == "bcc":
        aspect = rng.uniform(0.7, 1.0)
        amps = rng.uniform(0.0, 0.06, size=4)
        softness = rng.uniform(0.05, 0.12)
        base = np.array([200, 140, 140]) * rng.uniform(0.85, 1.08)
        radius = rng.uniform(0.16, 0.26)
    elif dx == "akiec":
        aspect = rng.uniform(0.6, 0.95)
        amps = rng.uniform(0.02, 0.09, size=6) / np.arange(1, 7) ** 0.3
        softness = rng.uniform(0.08, 0.16)
        base = np.array([190, 110, 100]) * rng.uniform(0.8, 1.1)
        radius = rng.uniform(0.18, 0.3)
    elif dx == "vasc":
        aspect = rng.uniform(0.8, 1.0)
        amps = rng.uniform(0.0, 0.03, size=3)
        softness = rng.uniform(0.015, 0.04)
        base = np.array([150, 40, 60]) + rng.uniform(0, 1) * np.array([-40, 0, 40])
        radius = rng.uniform(0.11, 0.19)
    elif dx == "df":
        aspect = rng.uniform(0.75, 1.0)
        amps = rng.uniform(0.0, 0.04, size=3)
        softness = rng.uniform(0.06, 0.14)
        base = np.array([165, 115, 85]) * rng.uniform(0.8, 1.1)
        radius = rng.uniform(0.12, 0.2)
    else:  # pragma: no cover - guarded in make_synthetic_ham
        raise ValueError(dx)
    return {
        "dx": dx,
        "aspect": float(aspect),
        "amps": amps,
        "phases": rng.uniform(0, 2 * np.pi, size=len(amps)),
        "softness": float(softness),
        "base": base,
        "radius": float(radius * size),
        "angle": float(rng.uniform(0, 2 * np.pi)),
        "cx": float(rng.uniform(-0.1, 0.1) * size),
        "cy": float(rng.uniform(-0.1, 0.1) * size),
        "skin": np.array([224, 178, 152]) * rng.uniform(0.85, 1.05) + rng.uniform(-12, 12, size=3),
        "texture_seed": int(rng.integers(2**31)),
    }


def _draw(rng: np.random.Generator, p: dict[str, Any], w: int, h: int, second_view: bool
          ) -> tuple[np.ndarray, np.ndarray]:
    """Render one view of a lesion: (uint8 RGB image (h, w, 3), uint8 mask (h, w))."""
    cx, cy, angle, radius = p["cx"], p["cy"], p["angle"], p["radius"]
    gain = 1.0
    if second_view:  # the same lesion photographed again: small pose/light change
        cx += rng.uniform(-0.04, 0.04) * h
        cy += rng.uniform(-0.04, 0.04) * h
        angle += rng.uniform(-0.25, 0.25)
        radius *= rng.uniform(0.93, 1.07)
        gain = rng.uniform(0.94, 1.06)

    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    dx, dy = xx - (w / 2 + cx), yy - (h / 2 + cy)
    u = dx * np.cos(angle) + dy * np.sin(angle)
    v = -dx * np.sin(angle) + dy * np.cos(angle)
    rho = np.hypot(u, v)
    phi = np.arctan2(v, u)
    # border radius r(phi): ellipse times a sum of harmonics (irregularity)
    ellipse = 1.0 / np.sqrt(np.cos(phi) ** 2 + (np.sin(phi) / p["aspect"]) ** 2)
    wobble = 1.0 + sum(a * np.cos((k + 2) * phi + ph)
                       for k, (a, ph) in enumerate(zip(p["amps"], p["phases"])))
    border = radius * ellipse * wobble
    inside = (border - rho) / (p["softness"] * radius)
    alpha = 1.0 / (1.0 + np.exp(-np.clip(inside, -30, 30)))
    mask = (rho <= border).astype(np.uint8) * 255

    tex = np.random.default_rng(p["texture_seed"])
    lesion = np.broadcast_to(p["base"], (h, w, 3)).astype(np.float32).copy()
    rel = np.clip(rho / np.maximum(border, 1e-3), 0, 1)[..., None]
    if p["dx"] == "nv":
        lesion *= 1.0 - 0.12 * (1 - rel)  # slightly darker centre, otherwise uniform
        lesion *= 1.0 + 0.05 * _smooth_noise(tex, h, w, 4)[..., None]
    elif p["dx"] == "mel":
        # soft-edged patches of black and blue-grey over the brown, of varying extent
        black = np.clip((_smooth_noise(tex, h, w, 5) - tex.uniform(0.2, 0.7)) * 4, 0, 1)[..., None]
        blue = np.clip((_smooth_noise(tex, h, w, 4) - tex.uniform(0.2, 0.8)) * 4, 0, 1)[..., None]
        lesion = lesion * (1 - 0.8 * blue) + 0.8 * blue * np.array([90, 95, 110]) * tex.uniform(0.8, 1.2)
        lesion = lesion * (1 - 0.9 * black) + 0.9 * black * np.array([45, 32, 30]) * tex.uniform(0.8, 1.3)
        lesion *= 1.0 + 0.12 * _smooth_noise(tex, h, w, 9)[..., None]
    elif p["dx"] == "bkl":  # waxy, fissured ("brain-like") texture
        freq = tex.uniform(0.25, 0.5)
        ridges = np.sin(freq * (u + 2.0 * _smooth_noise(tex, h, w, 6) * radius * 0.3))
        depth = tex.uniform(0.03, 0.10)
        lesion *= (1.0 + depth * ridges + 0.08 * _smooth_noise(tex, h, w, 10))[..., None]
    elif p["dx"] == "bcc":  # pearly pink, thin red branching vessels
        lesion *= (1.0 + 0.12 * (1 - rel) + 0.05 * _smooth_noise(tex, h, w, 5)[..., None])
        vessels = np.abs(_smooth_noise(tex, h, w, 7)) < tex.uniform(0.04, 0.09)
        lesion[vessels & (rel[..., 0] < 0.9)] = np.array([170, 40, 50]) * tex.uniform(0.8, 1.1)
    elif p["dx"] == "akiec":  # rough red-pink with white scale
        lesion *= 1.0 + 0.15 * _smooth_noise(tex, h, w, 12)[..., None]
        scale = np.clip((_smooth_noise(tex, h, w, 14) - tex.uniform(0.3, 0.6)) * 5, 0, 1)[..., None]
        lesion = lesion * (1 - 0.7 * scale) + 0.7 * scale * np.array([235, 225, 215])
    elif p["dx"] == "vasc":  # red-purple with darker round lacunae
        lac = np.clip((_smooth_noise(tex, h, w, 8) - tex.uniform(0.1, 0.4)) * 4, 0, 1)[..., None]
        lesion = lesion * (1 - 0.6 * lac) + 0.6 * lac * np.array([70, 15, 40])
    else:  # df: light brown rim, pale centre
        centre = np.clip((0.55 - rel) * 5, 0, 1)
        lesion = lesion * (1 - 0.75 * centre) + 0.75 * centre * np.array([230, 210, 195])

    skin = np.broadcast_to(p["skin"], (h, w, 3)).astype(np.float32).copy()
    skin *= 1.0 + 0.05 * _smooth_noise(rng, h, w, 3)[..., None]
    img = alpha[..., None] * lesion + (1 - alpha[..., None]) * skin
    # dermoscope vignette, a few hairs in some images, sensor noise
    r2 = ((xx - w / 2) ** 2 + (yy - h / 2) ** 2) / (0.25 * (w**2 + h**2))
    img *= (1.0 - rng.uniform(0.1, 0.35) * r2 ** 2)[..., None] * gain
    for _ in range(int(rng.integers(0, 4)) if rng.random() < 0.35 else 0):
        x0, y0, a0 = rng.uniform(0, w), rng.uniform(0, h), rng.uniform(0, np.pi)
        curve = rng.uniform(-0.02, 0.02)
        d = np.abs((xx - x0) * np.sin(a0) - (yy - y0) * np.cos(a0)
                   + curve * ((xx - x0) * np.cos(a0) + (yy - y0) * np.sin(a0)) ** 2)
        img[d < 0.6] *= 0.35
    img += rng.normal(0, 6.0, size=img.shape)
    return np.clip(img, 0, 255).astype(np.uint8), mask


def _counts(n_per_class: int | Mapping[str, int], classes: Sequence[str]) -> dict[str, int]:
    if isinstance(n_per_class, Mapping):
        missing = [c for c in classes if c not in n_per_class]
        if missing:
            raise ValueError(f"n_per_class has no count for {missing}")
        return {c: int(n_per_class[c]) for c in classes}
    return {c: int(n_per_class) for c in classes}


def _args_record(n_per_class: int | Mapping[str, int], size: int, seed: int, classes: Sequence[str]
                 ) -> dict[str, Any]:
    return {
        "generator": "dpaat_lib.synthetic.make_synthetic_ham",
        "version": GENERATOR_VERSION,
        "n_per_class": (_counts(n_per_class, classes) if isinstance(n_per_class, Mapping)
                        else int(n_per_class)),
        "size": int(size),
        "seed": int(seed),
        "classes": list(classes),
    }


def _is_complete(root: pathlib.Path, record: dict[str, Any]) -> bool:
    """True if ``root`` holds a finished set made with exactly these arguments
    (the args file is written last, so its presence marks completion)."""
    try:
        if json.loads((root / ARGS_FILE).read_text()) != record:
            return False
        ids = pd.read_csv(root / METADATA_FILE, usecols=["image_id"])["image_id"]
    except (OSError, ValueError):
        return False
    return len(ids) == sum(_counts(record["n_per_class"], record["classes"]).values()) and all(
        (root / "images" / f"{i}.jpg").is_file() and (root / "masks" / f"{i}{MASK_SUFFIX}").is_file()
        for i in ids
    )


def make_synthetic_ham(
    root: str | os.PathLike,
    *,
    n_per_class: int | Mapping[str, int] = 150,
    size: int = 96,
    seed: int = 0,
    classes: Sequence[str] = CLASSES,
) -> pathlib.Path:
    """Write a synthetic HAM10000-layout folder at ``root`` and return its path.

    Images are ``size*4//3`` x ``size`` (4:3 like the real data) JPEGs at
    quality 90; masks are 0/255 PNGs. ``n_per_class``: one count for every
    class, or a count per class (an imbalanced set, like the real seven
    classes). Classes are drawn in the order given from one generator, so the
    images of the first classes do not depend on the ones after them.
    Deterministic in ``seed``. Idempotent:
    a complete folder made with the same arguments is left untouched. A
    folder that already holds a non-synthetic ``HAM10000_metadata.csv`` is
    refused, so real data is never overwritten.
    """
    root = pathlib.Path(root)
    classes = tuple(classes)
    bad = [c for c in classes if c not in SUPPORTED]
    if bad or not classes or len(set(classes)) != len(classes):
        raise ValueError(f"classes must be distinct values from {SUPPORTED}, got {classes}")
    counts = _counts(n_per_class, classes)
    if min(counts.values()) < 1 or size < 8:
        raise ValueError(f"need n_per_class >= 1 and size >= 8, got {n_per_class}, {size}")
    record = _args_record(n_per_class, size, seed, classes)
    if _is_complete(root, record):
        return root
    if (root / METADATA_FILE).exists() and not (root / ARGS_FILE).exists():
        raise DataError(
            f"{root} already holds a {METADATA_FILE} that this generator did not "
            f"write (no {ARGS_FILE}). Choose an empty folder for synthetic data."
        )

    # Start clean: drop a stale or partial earlier synthetic set.
    (root / ARGS_FILE).unlink(missing_ok=True)
    for sub, pattern in (("images", "ISIC_9*.jpg"), ("masks", f"ISIC_9*{MASK_SUFFIX}")):
        (root / sub).mkdir(parents=True, exist_ok=True)
        for old in (root / sub).glob(pattern):
            old.unlink()

    rng = np.random.default_rng(seed)
    w, h = size * 4 // 3, size
    rows: list[dict[str, Any]] = []
    n_image = n_lesion = 0
    for dx in classes:
        count = 0
        while count < counts[dx]:
            params = _lesion_params(rng, dx, size)
            views = 2 if (rng.random() < SECOND_VIEW_P and count + 2 <= counts[dx]) else 1
            lesion_id = f"HAM_{9000000 + n_lesion:07d}"
            n_lesion += 1
            age = f"{float(rng.integers(4, 18) * 5):.1f}"
            sex = ("male", "female")[int(rng.integers(2))]
            loc = LOCALIZATIONS[int(rng.integers(len(LOCALIZATIONS)))]
            for view in range(views):
                image_id = f"ISIC_{9000000 + n_image:07d}"
                n_image += 1
                img, mask = _draw(rng, params, w, h, second_view=view > 0)
                Image.fromarray(img).save(root / "images" / f"{image_id}.jpg", quality=JPEG_QUALITY)
                Image.fromarray(mask).save(root / "masks" / f"{image_id}{MASK_SUFFIX}")
                rows.append({"lesion_id": lesion_id, "image_id": image_id, "dx": dx,
                             "dx_type": "synthetic", "age": age, "sex": sex,
                             "localization": loc})
            count += views

    pd.DataFrame(rows).to_csv(root / METADATA_FILE, index=False)
    (root / "SYNTHETIC.md").write_text(_README.format(args=ARGS_FILE, classes=", ".join(classes)))
    (root / ARGS_FILE).write_text(json.dumps(record, indent=1) + "\n")
    return root
