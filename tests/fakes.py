"""Made-up runs for the report tests (no training): a :class:`RunResult` with chosen metrics."""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from dpaat_lib import profiles
from dpaat_lib.experiment import RunResult

ATTACKS = ("FGSM", "10-IFGSM", "20-IFGSM", "20-PGD", "50-PGD")


def fake_result(model: str, method: str, seed: int = 0, acc: float = 0.5, tmp: Path | None = None,
                preds: pd.DataFrame | None = None) -> RunResult:
    """A RunResult with made-up metrics: every RAcc = acc - 0.1, GAcc = acc, Table II scores = acc."""
    prof = profiles.get_profile("quick")
    data = profiles.data_config(prof, digest="0123456789abcdef")
    cfg = profiles.run_config(prof, model, method, seed, data)
    metrics = {"GAcc": acc, "RAcc": {a: acc - 0.1 for a in ATTACKS}, "mAP": acc, "mARP": acc - 0.1,
               "precision": acc, "recall": acc, "f1": acc,
               "confusion": {"clean": [[1, 0, 0], [0, 1, 0], [0, 0, 1]]}}
    history = {"finished": True, "epochs": [{"epoch": 1, "seconds": 1.0, "val_acc": acc}], "best_epoch": 1}
    if preds is None:
        preds = pd.DataFrame({"image_id": ["a"], "label": [0], "pred_clean": [0]})
    return RunResult(cfg, (tmp or Path("/nonexistent")) / cfg.run_id, history, metrics, preds)


MODEL_MODULE = '''"""A user's CNN for the book's pages: named in DPAAT_MODELS, imported by each process needing it."""
import torch.nn as nn

from dpaat_lib.models import register_model


def make(n):
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Sequential(nn.Conv2d(4, 4, 3, padding=1)),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, n))


register_model("plugcnn", make, head="5", gradcam_layer="2", min_size=8)
'''


def write_model_module(folder: Path, module: str = "my_cnns") -> dict[str, str]:
    """Write a module that registers the CNN ``plugcnn`` into ``folder``; returns the environment variables that
    make a new process import it (PYTHONPATH and DPAAT_MODELS)."""
    (folder / f"{module}.py").write_text(MODEL_MODULE)
    return {"PYTHONPATH": str(folder), "DPAAT_MODELS": module}


UNPICKLED: list[str] = []  # what unpickling a RunsCodeWhenUnpickled ran: stays empty where loads are weights-only


def record_unpickling(tag: str) -> None:
    UNPICKLED.append(tag)


class RunsCodeWhenUnpickled:
    """An object whose unpickling calls a function: what ``torch.load(..., weights_only=False)`` of an untrusted
    file would run. ``weights_only=True`` refuses it (UnpicklingError) before calling anything."""

    def __reduce__(self):
        return record_unpickling, ("ran",)
