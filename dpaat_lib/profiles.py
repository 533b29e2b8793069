"""Named experiment grids: ``quick`` (synthetic, CPU, minutes), ``cpu-real`` (real HAM10000 at
low resolution, lightweight CNNs, what a CPU affords) and ``paper`` (method.md's full protocol, GPU).

A profile is a frozen dataclass; :func:`configs` expands it, with any field
overridden (papermill parameters map one to one onto these names), into the
list of :class:`~dpaat_lib.config.RunConfig` of the grid.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, fields, replace

from .attacks import LINF_EPS, paper_attacks, training_attack
from .config import DataConfig, RunConfig, TrainConfig
from .data import ALL_CLASSES, CLASSES
from .methods import MethodConfig
from .models import PAPER_MODELS

MAIN_METHODS = ("std", "at", "sat", "amat", "dpaat")
ABLATION_METHODS = ("at", "d-a", "d-b", "dpaat")


def radius_text(eps: float) -> str:
    """An L2 radius or step as the pages and the command print it: at most 4 decimals (0.0714 for 0.5 x 32 / 224),
    1.0 as 1.0."""
    return str(round(float(eps), 4))


def linf_text(eps: float) -> str:
    """An Linf radius in 255ths, as the literature gives them: 2/255, 8/255, 7.65/255 for 0.03, 1.9992/255 for
    0.00784 (six significant digits, so a radius near the paper's never prints as the paper's)."""
    return f"{round(255 * float(eps), 9):.6g}/255"


def number(text: str) -> float:
    """A number written as a decimal ("0.5") or a fraction ("8/255"), as a command line or papermill passes a
    radius; a ValueError for anything else, a zero denominator included."""
    top, slash, bottom = text.partition("/")
    if not slash:
        return float(text)
    if float(bottom) == 0:
        raise ValueError(f"{text!r} divides by zero")
    return float(top) / float(bottom)


def linf_radius(value, name: str = "linf_eps") -> float:
    """An Linf radius from a number (0.0314) or a fraction such as "8/255" (how a command line or papermill
    passes it); in (0, 1], since an image's values lie in [0, 1]. ``name``: the caller's parameter, for the
    error."""
    eps = value
    if isinstance(value, str):
        try:
            eps = number(value)
        except ValueError:
            eps = None
    if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not math.isfinite(eps) or not 0 < eps <= 1:
        raise ValueError(f"{name} must be an Linf radius in (0, 1] such as 8/255 or 0.0314 (the paper's: 2/255), "
                         f"got {value!r}")
    return float(eps)


@dataclass(frozen=True)
class Profile:
    name: str
    source: str
    models: tuple[str, ...]
    ablation_models: tuple[str, ...]
    image_size: int
    n_train: int
    n_val: int
    n_test: int
    epochs: int
    patience: int
    seeds: tuple[int, ...] = (0,)
    batch_size: int = 32
    eps0: float = 0.5
    train_steps: int = 7
    train_step_size: float = 0.15
    # FGSM's and I-FGSM's Linf radius (evaluation only; I-FGSM steps a quarter of it). The paper's, as we
    # read it, is 2/255; another trains nothing where the models are stored with their checkpoints
    # (dpaat_lib.experiment.trained_twin).
    linf_eps: float = LINF_EPS
    lam: float = 1.0
    eta: float | None = None
    mu: str = "batch"
    lesion_aware: bool = True
    bf16: bool = False
    channels_last: bool = False
    # The stronger evaluation of chapter 11 (dpaat_lib.robustness); evaluation only, never part of a
    # RunConfig or a run's identity. strong_images: balanced test subset (None: the whole test set);
    # apgd_steps: APGD-CE/DLR iterations (AutoAttack: 100); square_queries: Square's query budget.
    strong_images: int | None = None
    apgd_steps: int = 100
    square_queries: int = 1000
    # Images per attack batch of that evaluation (part of its stored result's name: APGD and Square draw
    # their random starts per batch). On a GPU at batch 32-150 a pass costs mostly kernel launches, so the
    # paper profile takes its 150-image subset in one batch instead of 128 + 22 (two passes per step).
    strong_batch: int = 128
    # The suite alone (no masking checks) on every test image of every seed's run as well, so the worst
    # case can be compared between methods against seed-to-seed noise (chapter 11). Off for the paper
    # profile: a GPU's time goes to the grid.
    strong_all_seeds: bool = False
    # The 7-class task (issue 5, part 5): which diagnoses; a split by fractions that uses every image
    # (test_fraction of each class to test, val_fraction of the rest to validation; n_train, n_val
    # and n_test are then unused and 0); how each epoch's order handles class imbalance ("shuffle":
    # the paper's permutation; "balanced": each class drawn equally often, dpaat_lib.training.epoch_order).
    classes: tuple[str, ...] = CLASSES
    test_fraction: float | None = None
    val_fraction: float | None = None
    sampler: str = "shuffle"
    epoch_draws: int | None = None  # the balanced sampler's draws per epoch (None: the training-set size)
    # Sized for a GPU: a page that would train a missing run of it on a CPU stops instead (days of CPU time,
    # report.load_grid); `dpaat grid --device cpu` still trains it for whoever means it.
    gpu: bool = False
    # torch's CPU threads for computing this profile's runs on a CPU (pin_cpu_threads); None: torch's choice.
    # The thread count sets the order of float sums, so it changes a CPU run's numbers as a seed would:
    # a profile whose runs are committed pins the count they were trained with, so that they reproduce.
    cpu_threads: int | None = None

    @property
    def synthetic(self) -> bool:
        return self.source == "synthetic"

    def describe(self) -> str:
        data = "SYNTHETIC stand-in data (not HAM10000)" if self.synthetic else "real HAM10000"
        return (f"profile '{self.name}': {data}, {len(self.classes)} classes, {self.image_size} px, models "
                f"{', '.join(self.models)}, {self.split_text()}, up to {self.epochs} epochs (patience "
                f"{self.patience}), seeds {list(self.seeds)}, training PGD-L2 eps0 {radius_text(self.eps0)} in "
                f"{self.train_steps} steps of {radius_text(self.train_step_size)}"
                + (f", FGSM and I-FGSM at Linf {linf_text(self.linf_eps)}" if self.linf_eps != LINF_EPS else ""))

    def split_text(self) -> str:
        """The split in words: counts per class, or fractions of every image (the 7-class task)."""
        if self.test_fraction is not None:
            text = (f"every image, {100 * self.test_fraction:g}% of each class for test and "
                    f"{100 * self.val_fraction:g}% of the rest for validation")
            if self.sampler == "balanced":
                text += (", class-balanced sampling of each epoch (" +
                         (f"{self.epoch_draws} draws)" if self.epoch_draws else "training-set size draws)"))
            return text
        return (f"{self.n_train} train (incl. {self.n_val} validation) / {self.n_test} test images per class")


PROFILES = {
    "quick": Profile("quick", "synthetic", ("smallcnn",), ("smallcnn",), image_size=32, n_train=100, n_val=20,
                     n_test=40, epochs=8, patience=3, strong_images=60, apgd_steps=20, square_queries=200,
                     strong_all_seeds=True),
    # What two CPU cores afford in well under an hour: the paper's split of real HAM10000, a small CNN at
    # 32 px (the torchvision CNNs' last feature map is 1x1 at that size, which makes Grad-CAM meaningless).
    # Three training seeds, so that every comparison of methods can be set against seed-to-seed noise.
    # One torch thread, as its committed runs were trained (two processes at a time on two cores).
    "cpu-real": Profile("cpu-real", "ham10000", ("smallcnn",), ("smallcnn",), image_size=32,
                        n_train=800, n_val=80, n_test=299, epochs=12, patience=4, seeds=(0, 1, 2), strong_images=90,
                        apgd_steps=50, square_queries=300, strong_all_seeds=True, cpu_threads=1),
    # method.md's protocol at 224 px on one GPU. From scratch method.md allows up to 60 epochs with
    # patience 5; the cap of 30 was set for issue 4's aim, the book's 34 runs in 30 minutes of one GPU, at
    # the training speed-up that issue asks for. Eager, the stored runs' times say about three times that:
    # chapter 10 and `dpaat grid --profile paper --book --plan` give today's estimate (a papermill parameter
    # epochs=60 re-runs the full schedule). The stronger evaluation uses a balanced 150-image subset and
    # half AutoAttack's APGD budget for the same reason.
    "paper": Profile("paper", "ham10000", PAPER_MODELS, ("resnet34", "mobilenet_v2"), image_size=224,
                     n_train=800, n_val=80, n_test=299, epochs=30, patience=5, bf16=True, channels_last=True,
                     strong_images=150, apgd_steps=50, square_queries=500, strong_batch=150, gpu=True),
    # All seven diagnoses of HAM10000 (issue 5, part 5): every image, a lesion-aware split by fractions
    # (20 % test, 10 % of the rest validation, per class), class-balanced sampling of each epoch's order
    # for every method, 2160 draws per epoch (the 3-class training-set size, so an epoch costs what
    # cpu-real's does); otherwise cpu-real's schedule and three seeds, so the 7-class comparison of the
    # methods is set against seed-to-seed noise as the 3-class one is. Results in results/cpu-real-7.
    "cpu-real-7": Profile("cpu-real-7", "ham10000", ("smallcnn",), ("smallcnn",), image_size=32,
                          n_train=0, n_val=0, n_test=0, epochs=12, patience=4, seeds=(0, 1, 2), strong_images=140,
                          apgd_steps=50, square_queries=300, classes=ALL_CLASSES, test_fraction=0.2,
                          val_fraction=0.1, sampler="balanced", epoch_draws=2160, cpu_threads=1),
    # The same on the synthetic stand-in's seven classes (dpaat_lib.experiment.SYNTHETIC_ARGS: 160 images
    # of nv, mel, bkl, 48 to 20 of the others), sized for the book's quick build.
    "quick-7": Profile("quick-7", "synthetic", ("smallcnn",), ("smallcnn",), image_size=32, n_train=0, n_val=0,
                       n_test=0, epochs=4, patience=2, strong_images=70, apgd_steps=20, square_queries=200,
                       classes=ALL_CLASSES, test_fraction=0.2, val_fraction=0.1, sampler="balanced"),
}


def get_profile(name: str, **overrides) -> Profile:
    if name not in PROFILES:
        raise ValueError(f"unknown profile {name!r}; choose one of {list(PROFILES)}")
    known = {f.name for f in fields(Profile)}
    bad = set(overrides) - known
    if bad:
        raise ValueError(f"unknown profile field(s) {sorted(bad)}; known: {sorted(known)}")
    clean = {k: (tuple(v) if isinstance(v, list) else v) for k, v in overrides.items() if v is not None}
    return replace(PROFILES[name], **clean)


def pin_cpu_threads(p: Profile, device="cpu") -> int | None:
    """Set torch's CPU threads to ``p.cpu_threads`` when computing on a CPU; returns the count set, or None
    where nothing was set (no pinned count, or a GPU device). Process-wide, as torch's setting is: the
    entry points call it (report.load_grid for a page, the ``dpaat`` command unless ``--threads``)."""
    if p.cpu_threads is None or not str(device).startswith("cpu"):
        return None
    if p.cpu_threads < 1:
        raise ValueError(f"cpu_threads must be a whole number >= 1 (or None: torch's choice), got {p.cpu_threads!r}")
    import torch

    torch.set_num_threads(p.cpu_threads)
    return p.cpu_threads


def cpu_kind() -> str:
    """This machine's CPU as /proc/cpuinfo and torch name it, e.g. "Intel(R) Xeon(R) Processor (family 6,
    model 207), torch CPU capability AVX512". Even on one thread two kinds of CPU can round a run's floats
    differently (oneDNN, MKL and torch pick their kernels by instruction set and cache size), so each run
    records the kind it was evaluated on (``history.json``, ``evaluated_on``)."""
    import platform
    from pathlib import Path

    import torch

    info: dict[str, str] = {}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            info.setdefault(key.strip(), value.strip())
    except OSError:  # not Linux
        pass
    name = info.get("model name") or platform.processor() or platform.machine() or "unknown CPU"
    where = f" (family {info['cpu family']}, model {info['model']})" if "cpu family" in info and "model" in info else ""
    return f"{name}{where}, torch CPU capability {torch.backends.cpu.get_cpu_capability()}"


PAPER_SPLIT = {"n_train": 800, "n_val": 80, "n_test": 299}


def profile_for(name: str, data_root=None, **overrides) -> Profile:
    """The profile ``name`` with its overrides (None values ignored, as papermill parameters are).

    An ``eps0`` given without a ``train_step_size`` brings the step with it (:func:`radius_overrides`), so
    that ``-p eps0 1.0`` trains and evaluates with the profile's step-to-radius ratio, as the paper's 0.15
    for 0.5. A synthetic profile given a ``data_root`` runs on that HAM10000 copy with
    the paper's split sizes (800/299 per class) unless they are overridden:
    ``dpaat quick --data DIR`` is the quick run on real data. A ``linf_eps`` may be a fraction such as "8/255"
    (:func:`linf_radius`).
    """
    base = get_profile(name)  # an unknown name is refused here, with the known ones
    over = {k: v for k, v in overrides.items() if v is not None}
    if "seeds" in over:
        over["seeds"] = seed_list(over["seeds"])
    for k, v in over.items():  # papermill's -p passes "false" and "3" as text: read them as the field's type
        if hasattr(base, k) and k != "linf_eps":  # linf_eps may be a fraction, "8/255" (below)
            over[k] = typed_parameter(k, v, getattr(base, k))
    if "eps0" in over and "train_step_size" not in over:
        over.update(radius_overrides(base, over["eps0"]))
    if "linf_eps" in over:
        over["linf_eps"] = linf_radius(over["linf_eps"])
    if data_root is not None and base.synthetic and "source" not in over:
        over["source"] = "ham10000"
        for k, v in PAPER_SPLIT.items():
            over.setdefault(k, v)
    return get_profile(name, **over)


def seed_list(value, name: str = "seeds") -> tuple[int, ...]:
    """Training seeds from a page parameter (a list, one value, or its text, :func:`list_parameter`) as ints."""
    try:
        return tuple(int(s) for s in list_parameter(value))
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be whole numbers, e.g. [0, 1, 2], got {value!r}") from None


_TRUE, _FALSE = ("true", "yes", "on", "1"), ("false", "no", "off", "0")


def typed_parameter(name: str, value, current):
    """``value`` read as the type of the field's ``current`` value (bool, int or float) where it came as text:
    papermill's ``-p`` passes ``-p strong_all_seeds false`` as the text "false", which as it is would count as
    true. Text that is not of that type is refused with the field's name, and so is a non-bool for a bool field.
    A number passes as it is (an int stays an int: 1 and 1.0 name different runs), other fields unchanged."""
    if isinstance(current, bool):
        if isinstance(value, str) and value.strip().lower() in _TRUE + _FALSE:
            return value.strip().lower() in _TRUE
        if isinstance(value, int) and value in (0, 1):  # bool is an int too
            return bool(value)
        raise ValueError(f"{name} must be true or false, got {value!r}")
    if isinstance(current, (int, float)) and isinstance(value, str):
        try:
            number = float(value)
        except ValueError:
            raise ValueError(f"{name} must be a number like {current!r}, got {value!r}") from None
        if isinstance(current, int):
            if number != int(number):
                raise ValueError(f"{name} must be a whole number like {current!r}, got {value!r}")
            return int(number)
        return number
    return value


def list_parameter(value) -> tuple:
    """A page's list parameter as a tuple, however it came: a list, one value, or the text of a list.

    Papermill's ``-p models "[resnet50]"`` passes the string "[resnet50]" (only ``-y`` and build_book.py's
    ``-p`` read values as YAML), so a string in brackets is split at its commas, each item stripped of
    blanks and quotes: "[resnet50]" -> ("resnet50",), "[0, 1, 2]" -> ("0", "1", "2")."""
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("[") and text.endswith("]"):
            return tuple(item.strip().strip("'\"") for item in text[1:-1].split(",") if item.strip())
        return (value,)
    if isinstance(value, (list, tuple)):
        return tuple(value)
    return (value,)


def radius_overrides(p: Profile, eps0, name: str = "eps0") -> dict:
    """Another L2 radius for ``p``'s runs: ``eps0`` and the step of the training PGD (and of the 20/50-step PGD
    evaluation, which uses the same step) scaled with it, so the attack reaches the radius in the same number of
    steps (the paper: 7 steps of 0.15 for 0.5, 0.3 eps0 each). Every radius a method derives from eps0 follows
    it (DPAAT's eta = eps0 per nat and its bound 2 eps0, AMAT's start and step eps0 / 10); FGSM and I-FGSM keep
    their Linf 2/255. ``name``: how the caller's parameter is called, for the error."""
    if isinstance(eps0, bool) or not isinstance(eps0, (int, float)) or not math.isfinite(eps0) or eps0 <= 0:
        raise ValueError(f"{name} must be a positive L2 radius such as 0.5 (the paper's) or 1.0, got {eps0!r}")
    return {"eps0": float(eps0), "train_step_size": p.train_step_size * float(eps0) / p.eps0}


def data_config(p: Profile, digest: str = "") -> DataConfig:
    if p.test_fraction is not None:  # split by fractions: the counts are unused, recorded as 0
        return DataConfig(source=p.source, digest=digest, classes=tuple(p.classes), image_size=p.image_size,
                          n_train=0, n_val=0, n_test=0, lesion_aware=p.lesion_aware,
                          test_fraction=p.test_fraction, val_fraction=p.val_fraction)
    return DataConfig(source=p.source, digest=digest, classes=tuple(p.classes), image_size=p.image_size,
                      n_train=p.n_train, n_val=p.n_val, n_test=p.n_test, lesion_aware=p.lesion_aware)


def run_config(p: Profile, model: str, method: str, seed: int, data: DataConfig) -> RunConfig:
    attack = training_attack(p.eps0, p.train_step_size, p.train_steps)
    # DPAAT's options only enter DPAAT's configurations, so that a sweep of them
    # shares one STD (and AT, SAT, AMAT) run instead of retraining it.
    extra = dict(lam=p.lam, eta=p.eta, mu=p.mu) if method in ("dpaat", "d-a", "d-b") else {}
    return RunConfig(model=model,
                     method=MethodConfig(name=method, attack=attack, **extra),
                     data=data,
                     train=TrainConfig(epochs=p.epochs, patience=p.patience, seed=seed, batch_size=p.batch_size,
                                       bf16=p.bf16, channels_last=p.channels_last, sampler=p.sampler,
                                       epoch_draws=p.epoch_draws),
                     eval_attacks=paper_attacks(linf_eps=p.linf_eps, l2_eps=p.eps0, l2_step=p.train_step_size))


def configs(p: Profile, data: DataConfig, *, models=None, methods=MAIN_METHODS, seeds=None) -> list[RunConfig]:
    """Every (model, method, seed) of the grid, in a stable order."""
    return [run_config(p, m, meth, s, data) for m in (models or p.models) for meth in methods
            for s in (seeds or p.seeds)]


def book_configs(p: Profile, data: DataConfig, *, seeds=None) -> list[RunConfig]:
    """Every run the book's chapters load for profile ``p``: the main grid (every model x STD, AT, SAT,
    AMAT, DPAAT) and the ablation (AT, D-A, D-B, DPAAT on the ablation models), without duplicates."""
    runs = configs(p, data, seeds=seeds) + configs(p, data, models=p.ablation_models, methods=ABLATION_METHODS,
                                                   seeds=seeds)
    return list({c.run_id: c for c in runs}.values())
