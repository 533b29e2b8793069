"""Named experiment grids: ``quick`` (synthetic, CPU, minutes), ``cpu-real`` (real HAM10000 at
low resolution, lightweight CNNs, what a CPU affords) and ``paper`` (method.md's full protocol, GPU).

A profile is a frozen dataclass; :func:`configs` expands it, with any field
overridden (papermill parameters map one to one onto these names), into the
list of :class:`~dpaat_lib.config.RunConfig` of the grid.
"""
from __future__ import annotations

from dataclasses import dataclass, fields, replace

from .attacks import paper_attacks, training_attack
from .config import DataConfig, RunConfig, TrainConfig
from .methods import MethodConfig
from .models import PAPER_MODELS

MAIN_METHODS = ("std", "at", "sat", "amat", "dpaat")
ABLATION_METHODS = ("at", "d-a", "d-b", "dpaat")


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

    @property
    def synthetic(self) -> bool:
        return self.source == "synthetic"

    def describe(self) -> str:
        data = "SYNTHETIC stand-in data (not HAM10000)" if self.synthetic else "real HAM10000"
        return (f"profile '{self.name}': {data}, {self.image_size} px, models {', '.join(self.models)}, "
                f"{self.n_train}/{self.n_test} train/test images per class ({self.n_val} of the train "
                f"held out for validation), up to {self.epochs} epochs (patience {self.patience}), "
                f"seeds {list(self.seeds)}")


PROFILES = {
    "quick": Profile("quick", "synthetic", ("smallcnn",), ("smallcnn",), image_size=32, n_train=100, n_val=20,
                     n_test=40, epochs=8, patience=3, strong_images=60, apgd_steps=20, square_queries=200),
    # What two CPU cores afford in well under an hour: the paper's split of real HAM10000, a small CNN at
    # 32 px (the torchvision CNNs' last feature map is 1x1 at that size, which makes Grad-CAM meaningless).
    "cpu-real": Profile("cpu-real", "ham10000", ("smallcnn",), ("smallcnn",), image_size=32,
                        n_train=800, n_val=80, n_test=299, epochs=12, patience=4, strong_images=90,
                        apgd_steps=50, square_queries=300),
    "paper": Profile("paper", "ham10000", PAPER_MODELS, ("resnet34", "mobilenet_v2"), image_size=224,
                     n_train=800, n_val=80, n_test=299, epochs=60, patience=5, bf16=True, channels_last=True),
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


PAPER_SPLIT = {"n_train": 800, "n_val": 80, "n_test": 299}


def profile_for(name: str, data_root=None, **overrides) -> Profile:
    """The profile ``name`` with its overrides (None values ignored, as papermill parameters are).

    A synthetic profile given a ``data_root`` runs on that HAM10000 copy with
    the paper's split sizes (800/299 per class) unless they are overridden:
    ``dpaat quick --data DIR`` is the quick run on real data.
    """
    over = {k: v for k, v in overrides.items() if v is not None}
    if data_root is not None and PROFILES[name].synthetic and "source" not in over:
        over["source"] = "ham10000"
        for k, v in PAPER_SPLIT.items():
            over.setdefault(k, v)
    return get_profile(name, **over)


def data_config(p: Profile, digest: str = "") -> DataConfig:
    return DataConfig(source=p.source, digest=digest, image_size=p.image_size, n_train=p.n_train, n_val=p.n_val,
                      n_test=p.n_test, lesion_aware=p.lesion_aware)


def run_config(p: Profile, model: str, method: str, seed: int, data: DataConfig) -> RunConfig:
    attack = training_attack(p.eps0, p.train_step_size, p.train_steps)
    # DPAAT's options only enter DPAAT's configurations, so that a sweep of them
    # shares one STD (and AT, SAT, AMAT) run instead of retraining it.
    extra = dict(lam=p.lam, eta=p.eta, mu=p.mu) if method in ("dpaat", "d-a", "d-b") else {}
    return RunConfig(model=model,
                     method=MethodConfig(name=method, attack=attack, **extra),
                     data=data,
                     train=TrainConfig(epochs=p.epochs, patience=p.patience, seed=seed, batch_size=p.batch_size,
                                       bf16=p.bf16, channels_last=p.channels_last),
                     eval_attacks=paper_attacks(l2_eps=p.eps0, l2_step=p.train_step_size))


def configs(p: Profile, data: DataConfig, *, models=None, methods=MAIN_METHODS, seeds=None) -> list[RunConfig]:
    """Every (model, method, seed) of the grid, in a stable order."""
    return [run_config(p, m, meth, s, data) for m in (models or p.models) for meth in methods
            for s in (seeds or p.seeds)]
