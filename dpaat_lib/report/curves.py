"""Robust accuracy against eps (load or compute, stored beside the run)."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Sequence

import pandas as pd

from .. import experiment, store
from ..attacks import AttackSpec
from ..config import RunConfig
from ..evaluation import CLEAN, curve_accuracy, robust_accuracy_curve
from .common import CURVE_ATTACK, DEFAULT_EPS, _digest, resolve_path


def curve_attack(config: RunConfig, norm: str) -> AttackSpec:
    """The evaluation attack swept over eps: 20-step I-FGSM for Linf, 20-step PGD for L2."""
    name = CURVE_ATTACK[norm]
    for a in config.eval_attacks:
        if a.name == name:
            return a
    raise ValueError(f"run {config.run_id} has no {name} evaluation attack to sweep")


def curve_eps(config: RunConfig, norm: str, eps_values=None) -> tuple[float, ...]:
    """The radii of a run's curve: ``eps_values``, or by default :data:`DEFAULT_EPS` with the run's own radius
    among them (a page's ``-p eps0 0.7`` or ``-p linf_eps 16/255``, whose point the curve then shows)."""
    if eps_values is not None:
        return tuple(float(e) for e in eps_values)
    own = float(curve_attack(config, norm).eps)
    return tuple(sorted({*map(float, DEFAULT_EPS[norm]), own}))


def eps_curve_path(config: RunConfig, results_dir, norm: str, eps_values=None) -> Path:
    """Where a run's curve over ``eps_values`` (None: :func:`curve_eps`'s) is stored."""
    attack = curve_attack(config, norm)
    eps_values = curve_eps(config, norm, eps_values)
    key = _digest({"attack": attack.to_dict(), "eps": [float(e) for e in eps_values], "seed": config.train.seed})
    return Path(results_dir) / config.run_id / f"eps_curve-{norm}-{key}.json"


def eps_curve(config: RunConfig, results_dir, data_root=None, norm: str = "l2", eps_values=None,
              device: str = "cpu", *, cache_dir=None, tensors=None) -> dict | None:
    """Robust accuracy of a trained run against the radius: ``{"norm", "attack", "eps", "acc"}``.

    Loads ``<run>/eps_curve-<norm>-<hash>.json`` if present; else computes it with
    :func:`dpaat_lib.evaluation.robust_accuracy_curve` from the run's ``ckpt/best.pt`` and its test
    set, and writes the file atomically. Returns None when neither the file nor the checkpoint is
    there (checkpoints are not committed).
    """
    eps_values = curve_eps(config, norm, eps_values)
    path = eps_curve_path(config, results_dir, norm, eps_values)
    if path.exists():
        return store.read_json(path)
    run = store.RunDir(results_dir, config.run_id)
    if not (run.ckpt / "best.pt").exists():
        return None
    from ..training import load_trained

    if tensors is None:
        _, tensors = experiment.load_data(config.data, resolve_path(data_root), cache_dir)
    model = load_trained(config, run, device)
    attack = curve_attack(config, norm)
    known = _measured_points(run, attack, tensors["test"])
    t0 = time.perf_counter()
    acc = robust_accuracy_curve(model, tensors["test"], attack, eps_values, device=device, seed=config.train.seed,
                                known=known)
    res = {"norm": norm, "attack": attack.to_dict(), "eps": list(eps_values), "acc": [float(a) for a in acc],
           "run_id": config.run_id, "from_predictions": sorted(e for e in known if e in eps_values),
           "seconds": time.perf_counter() - t0}
    store.write_json(path, res)
    return res


def _measured_points(run: store.RunDir, attack: AttackSpec, test) -> dict[float, float]:
    """The curve's points the run's own evaluation already measured: clean accuracy at radius 0 and
    ``attack`` at its own radius, read from the run's predictions (same model, seed and batches as
    :func:`dpaat_lib.evaluation.robust_accuracy_curve` would use). Empty when the file or its columns
    are missing, or its images differ from ``test``'s."""
    path = run.predictions
    if not path.exists():
        return {}
    pred = store.read_csv(path)
    columns = {0.0: f"pred_{CLEAN}", float(attack.eps): f"pred_{attack.name}"}
    if list(pred.get("image_id", [])) != list(test.image_ids) or any(c not in pred for c in columns.values()):
        return {}
    labels = pred["label"].to_numpy()
    return {eps: curve_accuracy(pred[col].to_numpy(), labels) for eps, col in columns.items()}


def eps_curves(results: Sequence[experiment.RunResult], results_dir, data_root=None, norm: str = "l2",
               eps_values=None, device: str = "cpu", cache_dir=None) -> dict[tuple[str, str], dict]:
    """:func:`eps_curve` for every run, keyed (model, method label, seed); runs without a stored curve or a
    checkpoint are left out. The test set is decoded once per data configuration."""
    out, tensors = {}, {}
    for r in results:
        c = r.config
        path = eps_curve_path(c, results_dir, norm, eps_values)
        t = None
        if not path.exists() and (Path(r.path) / "ckpt" / "best.pt").exists():
            k = c.data
            if k not in tensors:
                tensors[k] = experiment.load_data(k, resolve_path(data_root), cache_dir)[1]
            t = tensors[k]
        res = eps_curve(c, results_dir, data_root, norm, eps_values, device, cache_dir=cache_dir, tensors=t)
        if res is not None:
            out[(c.model, c.method.label, c.train.seed)] = res
    return out


def eps_curve_frame(curves: dict) -> pd.DataFrame:
    """The curves as a table: rows (model, method, seed), columns eps; accuracy in percent (1 decimal)."""
    rows = {}
    for key, c in curves.items():
        unit = 255 if c["norm"] == "linf" else 1
        rows[key] = {(f"{e * 255:g}/255" if unit == 255 else f"{e:g}"): f"{100 * a:.1f}"
                     for e, a in zip(c["eps"], c["acc"])}
    out = pd.DataFrame.from_dict(rows, orient="index")
    if len(out):
        out.index = pd.MultiIndex.from_tuples(out.index, names=["model", "method", "seed"])
    return out


def eps_curve_findings(curves: dict, eps_ref: float, a: str = "DPAAT", b: str = "AT") -> str:
    """How ``a`` and ``b`` compare along the radius sweep of :func:`eps_curves` (one sentence per norm):
    at how many radii at or above ``eps_ref`` ``a`` is ahead, and by how much at each."""
    if not curves:
        return ""
    norm = next(iter(curves.values()))["norm"]
    unit = (lambda e: f"{e * 255:g}/255") if norm == "linf" else (lambda e: f"{e:g}")
    parts = []
    for model in dict.fromkeys(k[0] for k in curves):
        ca = next((c for k, c in curves.items() if k[0] == model and k[1] == a), None)
        cb = next((c for k, c in curves.items() if k[0] == model and k[1] == b), None)
        if ca is None or cb is None:
            continue
        pts = [(e, 100 * (x - y)) for e, x, y in zip(ca["eps"], ca["acc"], cb["acc"]) if e >= eps_ref - 1e-12]
        if not pts:
            continue
        ahead = sum(d > 0 for _, d in pts)
        parts.append(f"{model}: {a} is ahead of {b} at {ahead} of the {len(pts)} radii from {unit(eps_ref)} up ("
                     + ", ".join(f"{unit(e)}: {d:+.1f}" for e, d in pts) + " points)")
    if not parts:
        return ""
    return f"In {'Linf' if norm == 'linf' else 'L2'}, " + "; ".join(parts) + "."
