"""The CNNs of the paper (method.md section 2), built by name.

Every model takes images in [0, 1] and normalises them itself
(:class:`Normalized`), so attacks live in pixel space. torchvision's
definitions are used with a ``num_classes``-way head; ``weights`` is a local
state-dict file (ImageNet weights cannot be downloaded everywhere), from which
all but the head is loaded.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import torch
import torchvision
from torch import nn

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

WIDELY_USED = ("resnet34", "inception_v3", "densenet121")
LIGHTWEIGHT = ("mobilenet_v2", "shufflenet_v2", "squeezenet1_1")
PAPER_MODELS = WIDELY_USED + LIGHTWEIGHT
GROUPS = {"widely_used": WIDELY_USED, "lightweight": LIGHTWEIGHT, "all_six": PAPER_MODELS}


class Normalized(nn.Module):
    """``net((x - mean) / std)``: keeps the normalisation inside the model."""

    def __init__(self, net: nn.Module, mean=IMAGENET_MEAN, std=IMAGENET_STD):
        super().__init__()
        self.net = net
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net((x - self.mean) / self.std)


class SmallCNN(nn.Module):
    """A four-block CNN for tests and the CPU quick profile (not in the paper)."""

    def __init__(self, num_classes: int = 3, width: int = 32):
        super().__init__()
        layers, c_in = [], 3
        for c_out in (width, width * 2, width * 4, width * 4):
            layers += [nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out),
                       nn.ReLU(inplace=True), nn.MaxPool2d(2)]
            c_in = c_out
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c_in, num_classes))

    def forward(self, x):
        return self.classifier(self.features(x))


def _inception(num_classes: int) -> nn.Module:
    # aux_logits off: the auxiliary head only matters for the original ImageNet
    # recipe and would make forward() return a tuple in train mode.
    return torchvision.models.inception_v3(weights=None, num_classes=num_classes, aux_logits=False,
                                           init_weights=True)


# name -> (constructor taking num_classes, attribute path of the classifier head,
#          attribute path of the Grad-CAM target layer, smallest input side)
_REGISTRY: dict[str, tuple[Callable[[int], nn.Module], str, str, int]] = {
    "resnet34": (lambda n: torchvision.models.resnet34(num_classes=n), "fc", "layer4.-1", 32),
    "inception_v3": (_inception, "fc", "Mixed_7c", 75),
    "densenet121": (lambda n: torchvision.models.densenet121(num_classes=n), "classifier", "features", 32),
    "mobilenet_v2": (lambda n: torchvision.models.mobilenet_v2(num_classes=n), "classifier.1", "features.-1", 32),
    "shufflenet_v2": (lambda n: torchvision.models.shufflenet_v2_x1_0(num_classes=n), "fc", "conv5", 32),
    "squeezenet1_1": (lambda n: torchvision.models.squeezenet1_1(num_classes=n), "classifier.1", "features.-1", 32),
    "smallcnn": (lambda n: SmallCNN(n), "classifier.2", "features.-2", 16),  # before the last pool: a finer CAM
}


def list_models() -> list[str]:
    """Names accepted by :func:`build_model`: the paper's six CNNs, then ``smallcnn``."""
    return list(_REGISTRY)


def _check_name(name: str) -> None:
    if name not in _REGISTRY:
        raise ValueError(f"unknown model {name!r}; choose one of {list_models()} "
                         "(dpaat_lib.models.list_models())")


def min_input_size(name: str) -> int:
    """Smallest image side the architecture accepts (InceptionV3 needs 75 px)."""
    _check_name(name)
    return _REGISTRY[name][3]


def check_input_size(name: str, size: int) -> None:
    """Raise ValueError if images of ``size`` px are too small for ``name`` (:func:`min_input_size`):
    called where a run is trained, so the error comes before any data is decoded or epoch run."""
    need = min_input_size(name)
    if int(size) < need:
        raise ValueError(f"{name} needs >= {need} px images; got {size} px. Raise the image size "
                         f"(DataConfig.image_size, --image-size) or choose another model")


def _get(module: nn.Module, path: str) -> nn.Module:
    for part in path.split("."):
        module = module[int(part)] if part.lstrip("-").isdigit() else getattr(module, part)
    return module


def _set(module: nn.Module, path: str, value: nn.Module) -> None:
    *parents, last = path.split(".")
    parent = _get(module, ".".join(parents)) if parents else module
    if last.lstrip("-").isdigit():
        parent[int(last)] = value
    else:
        setattr(parent, last, value)


def head(model: nn.Module, name: str) -> nn.Module:
    """The classifier head of a model built by :func:`build_model`."""
    return _get(model.net, _REGISTRY[name][1])


def gradcam_layer_path(name: str) -> str:
    """The attribute path of ``name``'s Grad-CAM target layer inside the torchvision model."""
    _check_name(name)
    return _REGISTRY[name][2]


def gradcam_target_layer(model: nn.Module, name: str) -> nn.Module:
    """The last convolutional block of the CNN: where Grad-CAM reads activations."""
    path = gradcam_layer_path(name)  # checks the name first
    return _get(model.net, path)


def build_model(name: str, num_classes: int = 3, weights: str | Path | None = None) -> Normalized:
    """Build ``name`` with a ``num_classes``-way head, wrapped in :class:`Normalized`.

    ``weights``: a local state-dict file of the same architecture (any head
    size, e.g. ImageNet's 1000 classes); everything but the head is loaded, the
    head is freshly initialised. ``None`` trains from scratch (the default,
    since ImageNet weights cannot be downloaded on every machine).
    """
    _check_name(name)
    make, head_path, _, _ = _REGISTRY[name]
    net = make(num_classes)
    if weights is not None:
        path = Path(weights)
        if not path.is_file():
            raise FileNotFoundError(f"weights file {path} does not exist; pass a local state-dict "
                                    f"file of torchvision's {name} or weights=None to train from scratch")
        state = torch.load(path, map_location="cpu", weights_only=True)
        fresh_head = _get(net, head_path).state_dict()
        state = {k: v for k, v in state.items() if not k.startswith(head_path.replace(".-1", "") + ".")}
        if getattr(net, "AuxLogits", None) is None:  # torchvision's ImageNet InceptionV3 file has the aux head
            state = {k: v for k, v in state.items() if not k.startswith("AuxLogits.")}
        own = net.state_dict()
        wrong = [k for k, v in state.items() if k in own and own[k].shape != v.shape]
        if wrong:
            raise ValueError(f"weights file {path} does not match {name}: shape of {wrong[0]} is "
                             f"{tuple(state[wrong[0]].shape)}, expected {tuple(own[wrong[0]].shape)}")
        missing, unexpected = net.load_state_dict(state, strict=False)
        bad = [k for k in missing if not k.startswith(head_path + ".")]
        if bad or unexpected:
            raise ValueError(f"weights file {path} does not match {name}: missing {bad[:5]}, "
                             f"unexpected {list(unexpected)[:5]}")
        _get(net, head_path).load_state_dict(fresh_head)
    return Normalized(net)
