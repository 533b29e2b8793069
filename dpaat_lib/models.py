"""The CNNs of the paper (method.md section 2), built by name, and others to run the book on.

Every model takes images in [0, 1] and normalises them itself
(:class:`Normalized`), so attacks live in pixel space. torchvision's
definitions are used with a ``num_classes``-way head; ``weights`` is a local
state-dict file (:mod:`dpaat_lib.pretrained` says where it comes from), from which
all but the head is loaded. Beyond the paper's six and the book's ``smallcnn``,
:data:`OTHER_MODELS` are common torchvision CNNs for re-running a page on another
architecture (``-p models '[resnet50]'``), and :func:`register_model` adds any other. A registration lives in
its process; to reach the pages (each runs in its own kernel) and the ``dpaat`` command, put the calls in a module
and name it in the environment variable ``DPAAT_MODELS`` (:func:`load_model_modules`).
"""
from __future__ import annotations

import importlib
import os
import sys
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
OTHER_MODELS = ("resnet18", "resnet50", "efficientnet_b0")  # not in the paper: for another CNN than its six
GROUPS = {"widely_used": WIDELY_USED, "lightweight": LIGHTWEIGHT, "all_six": PAPER_MODELS}
# The input statistics a CNN's ImageNet weights were trained with, where not ImageNet's: torchvision's InceptionV3
# weights (Google's port) expect images scaled to [-1, 1], which torchvision reaches with transform_input and
# Normalized reaches here. Its mean and std are buffers, saved with every checkpoint, so the kept model reloads so.
PRETRAINED_INPUT = {"inception_v3": ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))}


class Normalized(nn.Module):
    """``net((x - mean) / std)``: keeps the normalisation inside the model."""

    def __init__(self, net: nn.Module, mean=IMAGENET_MEAN, std=IMAGENET_STD):
        super().__init__()
        self.net = net
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or x.shape[1] != self.mean.shape[1]:
            # (N, 1, H, W) would broadcast to three channels: an L2 radius measured on one channel reaches the
            # model sqrt(3) times larger.
            raise ValueError(f"the model takes images (N, {self.mean.shape[1]}, H, W), got shape {tuple(x.shape)}; "
                             "repeat a grey image to three channels first (x.expand(-1, 3, -1, -1))")
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
    "resnet18": (lambda n: torchvision.models.resnet18(num_classes=n), "fc", "layer4.-1", 32),
    "resnet50": (lambda n: torchvision.models.resnet50(num_classes=n), "fc", "layer4.-1", 32),
    "efficientnet_b0": (lambda n: torchvision.models.efficientnet_b0(num_classes=n), "classifier.1", "features.-1", 32),
}


MODULES_ENV = "DPAAT_MODELS"  # comma-separated modules whose import registers CNNs (register_model)
_REGISTERED_BY: dict[str, str] = {}  # model name -> the DPAAT_MODELS module that registered it
_LOADED_MODULES: set[str] = set()


def load_model_modules() -> dict[str, str]:
    """Import each module named in ``$DPAAT_MODELS`` (comma-separated, importable from ``sys.path``), once per
    process; each calls :func:`register_model` for its CNNs. Called by :func:`list_models` and on an unknown name,
    so a papermill page, ``scripts/build_book.py`` and the ``dpaat`` command (whose processes inherit the
    variable) know the same CNNs as the library. Returns ``{model name: module}`` of what such modules added."""
    for module in filter(None, (m.strip() for m in os.environ.get(MODULES_ENV, "").split(","))):
        if module in _LOADED_MODULES:
            continue
        before, imported_already = set(_REGISTRY), module in sys.modules  # e.g. by a notebook cell: no new names
        try:
            importlib.import_module(module)
        except ImportError as e:
            raise ImportError(f"{MODULES_ENV} names module {module!r}, which cannot be imported ({e}); put its "
                              "folder on PYTHONPATH, or correct the variable") from e
        _LOADED_MODULES.add(module)
        added = [name for name in _REGISTRY if name not in before]
        if not added and not imported_already:
            raise ValueError(f"{MODULES_ENV} names module {module!r}, whose import registered no model; it should "
                             "call dpaat_lib.models.register_model(name, make, head, gradcam_layer)")
        _REGISTERED_BY.update(dict.fromkeys(added, module))
    return dict(_REGISTERED_BY)


def list_models() -> list[str]:
    """Names accepted by :func:`build_model`: the paper's six CNNs, ``smallcnn``, :data:`OTHER_MODELS`, then
    those added by :func:`register_model` (including the modules of ``$DPAAT_MODELS``)."""
    load_model_modules()
    return list(_REGISTRY)


def registered_by(name: str) -> str | None:
    """The ``$DPAAT_MODELS`` module that registered ``name`` (None: built in, or registered in this process)."""
    load_model_modules()
    return _REGISTERED_BY.get(name)


def register_model(name: str, make: Callable[[int], nn.Module], head: str, gradcam_layer: str,
                   min_size: int = 32) -> None:
    """Add a CNN under ``name`` for this process: ``make(num_classes)`` returns the network (on images
    normalised with ImageNet's statistics, as :class:`Normalized` feeds it), ``head`` and ``gradcam_layer`` are
    attribute paths inside it (``"fc"``, ``"layer4.-1"``: the ``num_classes``-way output layer, which a weights
    file does not load, and the last convolutional block, where Grad-CAM reads), ``min_size`` its smallest image
    side. Both paths are checked on a 3-class instance, so a wrong one fails here rather than mid-run. A run's
    identity is its name, so a name is registered once (a registered or built-in name is refused)."""
    if not isinstance(name, str) or not name or name in _REGISTRY:
        raise ValueError(f"cannot register model {name!r}: give a new name (taken: {list_models()})")
    net = make(3)
    try:
        out, cam = _get(net, head), _get(net, gradcam_layer)
    except (AttributeError, IndexError, TypeError) as e:
        raise ValueError(f"model {name!r}: {e}; head and gradcam_layer are attribute paths inside the network "
                         "make(num_classes) returns, such as 'fc' and 'layer4.-1'") from None
    weight = getattr(out, "weight", None)  # a Linear or a 1x1 Conv2d head has one row per class
    if not isinstance(weight, torch.Tensor) or weight.shape[0] != 3:
        raise ValueError(f"model {name!r}: head {head!r} is {type(out).__name__}, not the layer with num_classes "
                         "outputs (built with num_classes=3)")
    if cam is net:
        raise ValueError(f"model {name!r}: gradcam_layer must be a block inside the network, not the network")
    _REGISTRY[name] = (make, head, gradcam_layer, int(min_size))


def _check_name(name: str) -> None:
    if name not in _REGISTRY and name not in list_models():
        raise ValueError(f"unknown model {name!r}; choose one of {list_models()}, or register it: "
                         f"dpaat_lib.models.register_model in this process, or in a module named in ${MODULES_ENV} "
                         "for the pages and the dpaat command")


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


def gradcam_map_shape(name: str, image_size: int) -> tuple[int, int]:
    """(height, width) of the Grad-CAM target layer's feature map of ``name`` at ``image_size`` px: what a map
    can resolve before it is upsampled to the image (1 x 1: every map is constant). Builds the CNN once."""
    check_input_size(name, image_size)
    model = build_model(name).eval()
    shape = []
    hook = gradcam_target_layer(model, name).register_forward_hook(lambda m, i, o: shape.append(tuple(o.shape[-2:])))
    with torch.no_grad():
        model(torch.zeros(1, 3, image_size, image_size))
    hook.remove()
    return shape[0]


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
    head is freshly initialised, and the inputs are normalised as torchvision's
    ImageNet weights expect (:data:`PRETRAINED_INPUT`). ``None`` trains from scratch
    (the default, since ImageNet weights cannot be downloaded on every machine;
    :mod:`dpaat_lib.pretrained` finds or downloads torchvision's).
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
        return Normalized(net, *PRETRAINED_INPUT.get(name, (IMAGENET_MEAN, IMAGENET_STD)))
    return Normalized(net)
