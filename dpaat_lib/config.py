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


@dataclass(frozen=True)
class TrainConfig:
    """The schedule of method.md section 6.

    ``weights``: None trains from scratch; otherwise the digest-named local
    state dict used for two-phase fine-tuning (``head_epochs`` of the head
    alone, then all layers). ``select_on``: the validation metric that picks
    the kept checkpoint and drives early stopping: the clean validation
    cross-entropy by default, because validation accuracy on 80 images per
    class moves in steps of 0.4 % and stopped runs after their first epoch.
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

    def __post_init__(self):
        if self.select_on not in ("val_acc", "val_loss"):
            raise ValueError(f"select_on must be 'val_acc' or 'val_loss', got {self.select_on!r}")


@dataclass(frozen=True)
class RunConfig:
    """One training run and its evaluation."""

    model: str
    method: MethodConfig = field(default_factory=MethodConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval_attacks: tuple[AttackSpec, ...] = paper_attacks()

    def to_dict(self) -> dict:
        return asdict(self)

    def digest(self) -> str:
        text = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()[:12]

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
