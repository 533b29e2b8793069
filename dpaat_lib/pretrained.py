"""Where a CNN's starting weights come from (method.md sections 2 and 6).

``None`` trains from scratch (this book's default: ImageNet weights cannot be downloaded on the machines that
build it). ``"imagenet"`` fine-tunes torchvision's ImageNet weights of each CNN, as the paper does, downloaded
once into torch's hub cache (``$TORCH_HOME``, where torchvision keeps them too). A folder holds local
state-dict files named ``<model>.pth``; a single file serves every CNN of the call.

A run records its weights in ``TrainConfig.weights``, so they are part of its identity: torchvision's by name
(``"torchvision:ResNet34_Weights.IMAGENET1K_V1"``: the file behind a name is fixed by the hash in its address,
checked on download, so a stored run loads without the file), a local file by the digest of its content
(:func:`weights_digest`). A run with weights trains in two phases: the head alone for ``head_epochs``, then
all layers (:func:`dpaat_lib.training.train_run`).
"""
from __future__ import annotations

import functools
import hashlib
import re
from dataclasses import replace
from pathlib import Path
from typing import Mapping, Sequence

import torch
import torchvision

from .config import RunConfig

IMAGENET = "imagenet"
TORCHVISION = "torchvision:"
TORCHVISION_ARCH = {"shufflenet_v2": "shufflenet_v2_x1_0"}  # our names that torchvision spells otherwise
SUFFIXES = (".pth", ".pt")  # of the files in a weights folder: <model>.pth


def weights_digest(path) -> str:
    """Content digest of a local weights file: what a configuration records instead of its path."""
    p = Path(path).resolve()
    st = p.stat()
    return _digest(str(p), st.st_size, st.st_mtime_ns)


@functools.lru_cache(maxsize=64)
def _digest(path: str, size: int, mtime_ns: int) -> str:  # size and time in the key: a rewritten file is read again
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return "sha256:" + h.hexdigest()[:16]


def imagenet_weights(model: str) -> str:
    """The name of torchvision's default ImageNet weights of ``model`` (``ResNet34_Weights.IMAGENET1K_V1``)."""
    try:
        return str(torchvision.models.get_model_weights(TORCHVISION_ARCH.get(model, model)).DEFAULT)
    except (ValueError, KeyError):
        raise ValueError(f"{model} has no ImageNet weights in torchvision: train it from scratch (weights=None), or "
                         "give a folder of local state-dict files named <model>.pth") from None


def torchvision_file(identity: str, folder=None) -> Path:
    """The local file of the torchvision weights ``identity`` names (``"torchvision:<enum member>"``), downloaded
    into ``folder`` (default: torch's hub cache, where torchvision keeps them) the first time, its SHA-256
    prefix checked as torchvision checks it; written whole or not at all."""
    name = identity.removeprefix(TORCHVISION)
    try:
        url = torchvision.models.get_weight(name).url
    except (ValueError, KeyError, AttributeError):
        raise ValueError(f"unknown torchvision weights {name!r} (a run's TrainConfig.weights)") from None
    path = Path(folder or Path(torch.hub.get_dir()) / "checkpoints") / url.rsplit("/", 1)[-1]
    if path.is_file():
        return path
    prefix = re.search(r"-([a-f0-9]+)\.", path.name)  # torchvision's files end in -<sha256 prefix>.pth
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.hub.download_url_to_file(url, str(path), hash_prefix=prefix.group(1) if prefix else None,
                                       progress=False)
    except Exception as err:  # no network, a refused address, a hash mismatch: say where the file must go
        raise FileNotFoundError(f"{name}: could not download {url} ({type(err).__name__}: {err}). Without "
                                f"internet here, fetch that file elsewhere and put it at {path}, or give "
                                "weights=<a folder of <model>.pth state-dict files>") from None
    return path


def _folder_file(folder: Path, model: str) -> Path:
    for suffix in SUFFIXES:
        if (folder / f"{model}{suffix}").is_file():
            return folder / f"{model}{suffix}"
    raise FileNotFoundError(f"weights folder {folder} has no {model}.pth: put the state dict of {model} there "
                            f"(any head size; found {sorted(p.name for p in folder.glob('*.pt*'))[:8]})")


def configure(configs: Sequence[RunConfig], weights=None) -> tuple[list[RunConfig], dict[str, Path]]:
    """``configs`` with ``weights`` recorded in their identity, and the local files their training needs, by
    model (empty for torchvision's, which :func:`weights_file` finds or downloads when a run is trained).

    ``weights``: None (from scratch: ``configs`` unchanged), ``"imagenet"``, a folder of ``<model>.pth``
    files, or one state-dict file for every model. An unknown value, a model without ImageNet weights in
    torchvision, or a folder without a model's file is refused before anything runs."""
    if weights is None:
        return list(configs), {}
    models = list(dict.fromkeys(c.model for c in configs))
    files: dict[str, Path] = {}
    if weights == IMAGENET:
        names = {m: TORCHVISION + imagenet_weights(m) for m in models}
    else:
        path = Path(weights).expanduser()
        if path.is_dir():
            files = {m: _folder_file(path, m) for m in models}
        elif path.is_file():
            files = dict.fromkeys(models, path)
        else:
            raise FileNotFoundError(f"weights={weights!r} is neither 'imagenet', nor a folder of <model>.pth "
                                    "state-dict files, nor a state-dict file")
        names = {m: weights_digest(f) for m, f in files.items()}
    return [replace(c, train=replace(c.train, weights=names[c.model])) for c in configs], files


def weights_file(config: RunConfig, weights_path: str | Path | Mapping[str, Path] | None = None) -> Path | None:
    """The state-dict file ``config`` fine-tunes from; None for a run from scratch. ``weights_path``: the local
    file of a run whose weights are a digest (or ``{model: file}``, as :func:`configure` returns); torchvision's
    are found in, or downloaded to, torch's hub cache."""
    if isinstance(weights_path, Mapping):
        weights_path = weights_path.get(config.model)
    name = config.train.weights
    if not name:
        if weights_path is not None:
            raise ValueError("weights_path given but config.train.weights is None: set "
                             "train.weights=weights_digest(path) (pretrained.configure) so the run's identity "
                             "records the weights")
        return None
    if name.startswith(TORCHVISION):
        return torchvision_file(name)
    if weights_path is None or weights_digest(weights_path) != name:
        raise ValueError(f"run {config.run_id} fine-tunes from weights {name}: pass weights_path=<that "
                         "state-dict file> (its digest must match)")
    return Path(weights_path)


def describe(name: str | None, head_epochs: int) -> str:
    """A run's initialisation in words, for the pages."""
    if not name:
        return "from scratch"
    source = (f"torchvision's ImageNet weights ({name.removeprefix(TORCHVISION)})" if name.startswith(TORCHVISION)
              else f"a local weights file ({name})")
    return f"fine-tuned from {source}: {head_epochs} epochs of the head alone, then all layers"
