"""Frozen configuration dataclasses. A run is a :class:`RunConfig`; its hash names its folder.

Nothing here depends on where the checkout or the dataset lies: the data is
identified by the digest of its content (:func:`dpaat_lib.data.dataset_digest`),
so committed results are found again in any clone and for any copy of the data.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field, replace

from .attacks import AttackSpec, paper_attacks
from .methods import MethodConfig


SAMPLERS = ("shuffle", "balanced")

# Fields added after results were published. A run's identity (the hash that names its folder) leaves
# each of them out while it holds its default, so every configuration that existed before them keeps
# its run_id and its stored results are still found. Section -> {field: default}.
IDENTITY_OPTIONAL: dict[str, dict[str, object]] = {
    "data": {"test_fraction": None, "val_fraction": None, "source_size": None},
    "train": {"sampler": "shuffle", "epoch_draws": None},
    "method": {},
}


def drop_optional_defaults(section: str, d: dict) -> dict:
    """``d`` (the asdict of one section of a RunConfig) without the fields of
    :data:`IDENTITY_OPTIONAL` that hold their default: what identifies it."""
    optional = IDENTITY_OPTIONAL[section]
    return {k: v for k, v in d.items() if not (k in optional and v == optional[k])}


@dataclass(frozen=True)
class DataConfig:
    """Which images, how they are split and at what size.

    ``source`` is "ham10000" or "synthetic" (shown on every page that uses it);
    ``digest`` is the content digest of the metadata (filled in by
    :func:`dpaat_lib.experiment.resolve_data`). Counts are per class, as in the
    paper: n_train images for training of which n_val are held out for early
    stopping, n_test for testing.
    """

    source: str = "ham10000"
    digest: str = ""
    classes: tuple[str, ...] = ("nv", "mel", "bkl")
    image_size: int = 224
    n_train: int = 800
    n_val: int = 80
    n_test: int = 299
    lesion_aware: bool = True
    split_seed: int = 0
    # Split by fractions instead of counts (the 7-class task, whose classes differ 60-fold in size):
    # per class, ``test_fraction`` of the images go to test, ``val_fraction`` of the rest to
    # validation, all others to training; n_train/n_val/n_test are then unused (0 by convention).
    test_fraction: float | None = None
    val_fraction: float | None = None
    # The images' own size ("600x450", the official release) where it is not that of the copy this book's
    # results come from (None: dpaat_lib.data.BOOK_COPY_SIZE, 200x150): the same metadata at another
    # resolution decodes to other pixels, so its runs are other runs. Filled in by resolve_data.
    source_size: str | None = None

    def __post_init__(self):
        if (self.test_fraction is None) != (self.val_fraction is None):
            raise ValueError("give both test_fraction and val_fraction, or neither")
        for f in (self.test_fraction, self.val_fraction):
            if f is not None and not 0.0 < f < 1.0:
                raise ValueError(f"split fractions must lie in (0, 1), got {f}")

    @property
    def by_fraction(self) -> bool:
        return self.test_fraction is not None

    def identity(self) -> dict:
        """asdict without the optional fields at their default: a hash of it names caches and stored
        summaries of this data configuration, and stays what it was before those fields existed."""
        return drop_optional_defaults("data", asdict(self))


@dataclass(frozen=True)
class TrainConfig:
    """The schedule of method.md section 6.

    ``weights``: None trains from scratch; otherwise the digest-named local
    state dict used for two-phase fine-tuning (``head_epochs`` of the head
    alone, then up to ``epochs`` of all layers: method.md's 50 with weights
    is ``epochs=50``; the default 60 is its from-scratch count).
    ``select_on``: the validation metric that picks the kept checkpoint and
    drives early stopping: the clean validation cross-entropy by default,
    because validation accuracy on 80 images per class moves in steps of
    0.4 % and stopped runs after their first epoch.
    """

    epochs: int = 60
    head_epochs: int = 10
    lr: float = 3e-4
    batch_size: int = 32
    patience: int = 5
    seed: int = 0
    flips: bool = True
    weights: str | None = None
    select_on: str = "val_loss"
    bf16: bool = False
    channels_last: bool = False
    # Each epoch's order: "shuffle" (a permutation of the training set, the paper's) or "balanced"
    # (n draws with replacement, each class equally likely, so every class gets about n / K draws
    # per epoch: the 7-class task's imbalance handling, the same for every method; the indices stay
    # training-set indices, so per-sample radii work unchanged).
    sampler: str = "shuffle"
    # Draws per epoch of the "balanced" sampler (None: the training-set size). Draws with replacement
    # make an epoch's length a choice: the 7-class CPU profile uses the 3-class training-set size, so
    # that an epoch costs the same in both tasks.
    epoch_draws: int | None = None

    def __post_init__(self):
        for name, least in (("epochs", 1), ("batch_size", 1), ("patience", 1), ("head_epochs", 0)):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < least:
                raise ValueError(f"{name} must be a whole number >= {least}, got {v!r}")
        if self.select_on not in ("val_acc", "val_loss"):
            raise ValueError(f"select_on must be 'val_acc' or 'val_loss', got {self.select_on!r}")
        if self.sampler not in SAMPLERS:
            raise ValueError(f"sampler must be one of {SAMPLERS}, got {self.sampler!r}")
        if self.epoch_draws is not None and (self.sampler != "balanced" or self.epoch_draws < 1):
            raise ValueError(f"epoch_draws={self.epoch_draws!r} needs sampler='balanced' and a positive count "
                             "(a permutation always has the training-set size)")


@dataclass(frozen=True)
class RunConfig:
    """One training run and its evaluation."""

    model: str
    method: MethodConfig = field(default_factory=MethodConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval_attacks: tuple[AttackSpec, ...] = paper_attacks()

    def to_dict(self) -> dict:
        """Every field (what ``config.json`` records)."""
        return asdict(self)

    def identity_dict(self) -> dict:
        """:meth:`to_dict` without the fields of :data:`IDENTITY_OPTIONAL` that hold their default."""
        d = self.to_dict()
        for section in IDENTITY_OPTIONAL:
            d[section] = drop_optional_defaults(section, d[section])
        return d

    def digest(self) -> str:
        text = json.dumps(self.identity_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()[:12]

    def training_identity(self) -> dict:
        """:meth:`identity_dict` without the evaluation attacks: what the trained model depends on. Two runs
        that differ only in how they are evaluated (``-p linf_eps 8/255``) train the same model, so the second
        evaluates the first's (:func:`dpaat_lib.experiment.trained_twin`)."""
        return {k: v for k, v in self.identity_dict().items() if k != "eval_attacks"}

    @property
    def run_id(self) -> str:
        """Folder name: readable prefix plus the configuration hash."""
        return f"{self.model}-{self.method.name}-s{self.train.seed}-{self.digest()}"

    def std_counterpart(self) -> "RunConfig":
        """The STD run of the same architecture, data and schedule (AMAT's threshold source)."""
        return replace(self, method=MethodConfig(name="std", attack=self.method.attack))

    @classmethod
    def from_dict(cls, d: dict) -> "RunConfig":
        m = dict(d["method"])
        m["attack"] = AttackSpec(**m["attack"])
        data = dict(d["data"])
        data["classes"] = tuple(data["classes"])
        return cls(model=d["model"], method=MethodConfig(**m), data=DataConfig(**data),
                   train=TrainConfig(**d["train"]),
                   eval_attacks=tuple(AttackSpec(**a) for a in d["eval_attacks"]))
