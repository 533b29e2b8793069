"""A stronger robustness evaluation and gradient-masking checks (method.md section 7, "beyond the paper").

The paper evaluates with FGSM, I-FGSM and PGD only. A defence can look robust
to those because its gradients are useless (masked, shattered, saturated)
rather than because no nearby adversarial example exists. This module adds

- :class:`StrongAttack`: AutoPGD with the cross-entropy and the DLR loss
  (Croce & Hein, ICML 2020, torchattacks' ``APGD``), the black-box Square
  attack (Andriushchenko et al., ECCV 2020, torchattacks' ``Square``, with
  fewer kernel launches per query: :func:`square_class`) and
  PGD with restarts (our loop, :func:`dpaat_lib.attacks.perturb`). Every
  result is projected onto the eps-ball and [0, 1] and then *checked*, so a
  robust accuracy computed from it can be trusted whatever the third-party
  code returned;
- :func:`strong_suite`: APGD-CE, APGD-DLR and Square in Linf and L2;
- :func:`per_image_correct` / :func:`worst_case`: per-image correctness under
  each attack, and the per-image worst case (correct under all of them);
- four checks after Carlini et al. 2019 ("On Evaluating Adversarial
  Robustness", arXiv 1902.06705), each returning ``{"check", "passed",
  "detail"}``: more steps (:func:`check_more_steps`), more restarts
  (:func:`check_restarts`), a growing radius (:func:`check_eps_to_zero`) and
  black-box versus white-box (:func:`check_blackbox_not_stronger`), run
  together by :func:`masking_report`;
- :func:`robust_eval_result`: load-or-compute of all this for one trained run,
  stored as ``<run>/robustness-<hash>.json``.

APGD-T (the targeted DLR variant of AutoAttack) is not offered: its loss
reads the fourth-largest logit and the paper's problem has three classes.

Example::

    suite = strong_suite(linf_eps=2 / 255, l2_eps=0.5, apgd_steps=100)
    frame = per_image_correct(model, test.x, test.y, suite, device="cuda")
    worst_case(frame).mean()               # robust accuracy under all of them
    masking_report(model, x, y, device="cuda")
"""
from __future__ import annotations

import functools
import hashlib
import json
import math
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Callable, Sequence

import pandas as pd
import torch
from torch import nn

from . import store
from .attacks import (L2_EPS, LINF_EPS, NORMS, L2, Linf, _check_inputs, distance, perturb, restore_training_modes,
                      training_modes)
from .evaluation import CLEAN

KINDS = ("apgd-ce", "apgd-dlr", "square", "pgd")
WHITE_BOX = ("apgd-ce", "apgd-dlr", "pgd")
BOUND_TOLERANCE = 1e-5  # ||x' - x|| may exceed eps by this much (float rounding), no more
_TA_NORM = {"linf": "Linf", "l2": "L2"}
_NORM_LABEL = {"linf": "Linf", "l2": "L2"}


def project(norm: str, x_adv: torch.Tensor, x: torch.Tensor, eps: float) -> torch.Tensor:
    """x' moved back into the ``norm`` ball of radius ``eps`` around x, then into [0, 1].

    Clipping to [0, 1] after the projection cannot leave the ball: x itself
    lies in [0, 1], so clipping only moves a coordinate of x' towards x.
    """
    radius = torch.full((x.shape[0], 1, 1, 1), float(eps), dtype=x.dtype, device=x.device)
    threat = Linf if norm == "linf" else L2
    return (x + threat.project(x_adv - x, radius)).clamp(0, 1)


def check_adversarial(norm: str, x_adv: torch.Tensor, x: torch.Tensor, eps: float, name: str = "attack") -> None:
    """Raise AssertionError unless x' is finite, in [0, 1] and ||x'_i - x_i|| <= eps + 1e-5 for every i."""
    if x_adv.shape != x.shape:
        raise AssertionError(f"{name} returned shape {tuple(x_adv.shape)} for inputs {tuple(x.shape)}")
    if not torch.isfinite(x_adv).all():
        raise AssertionError(f"{name} returned non-finite pixels")
    if x_adv.numel() and (x_adv.min() < 0 or x_adv.max() > 1):
        raise AssertionError(f"{name} left [0, 1]: values in [{x_adv.min().item():.6g}, {x_adv.max().item():.6g}]")
    d = distance(norm, x_adv, x)
    if d.numel() and d.max() > eps + BOUND_TOLERANCE:
        raise AssertionError(f"{name} left the {norm} ball of radius {eps:.6g}: largest distance {d.max().item():.6g}")


@dataclass(frozen=True)
class StrongAttack:
    """One attack of the stronger evaluation, as configuration.

    - ``kind``: "apgd-ce" / "apgd-dlr" (AutoPGD, Croce & Hein 2020, with the
      cross-entropy or the difference-of-logits-ratio loss; step size set by
      the algorithm), "square" (Square attack, Andriushchenko et al. 2020:
      random search using only the model's outputs, loss "margin",
      ``p_init`` 0.8) or "pgd" (Madry et al. 2018, our loop, random start,
      step ``step_size`` or 2.5 eps / steps);
    - ``norm``: "linf" or "l2"; ``eps``: radius in [0, 1] pixel space;
    - ``steps``: iterations (for Square: queries per restart);
    - ``restarts``: random restarts; a sample counts as broken if any
      restart breaks it; ``seed``: every run is seeded.

    Calling it returns x' (N, C, H, W) with ||x'_i - x_i|| <= eps and x' in
    [0, 1] (projected, then checked: an AssertionError is raised otherwise).
    The model's train/eval mode, the inputs and the global random state are
    left as they were.

    Example::

        apgd = StrongAttack("APGD-CE-Linf", "apgd-ce", "linf", 2 / 255, steps=100)
        x_adv = apgd(model, x, y)
    """

    name: str
    kind: str
    norm: str
    eps: float
    steps: int = 100
    restarts: int = 1
    seed: int = 0
    step_size: float | None = None  # "pgd" only; None: 2.5 * eps / steps (Madry et al.)

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"unknown attack kind {self.kind!r} in {self.name!r}; use one of {KINDS}")
        if self.norm not in NORMS:
            raise ValueError(f"unknown norm {self.norm!r} in {self.name!r}; use one of {NORMS}")
        if not (math.isfinite(self.eps) and self.eps >= 0):
            raise ValueError(f"eps of {self.name!r} must be finite and >= 0, got {self.eps}")
        if self.steps < 1 or self.restarts < 1:
            raise ValueError(f"{self.name!r}: steps and restarts must be >= 1, got {self.steps}, {self.restarts}")
        if self.step_size is not None and self.kind != "pgd":
            raise ValueError(f"{self.name!r}: step_size only applies to kind 'pgd' (APGD sets its own)")

    @property
    def white_box(self) -> bool:
        return self.kind in WHITE_BOX

    def to_dict(self) -> dict:
        return asdict(self)

    def with_eps(self, eps: float) -> "StrongAttack":
        return replace(self, eps=float(eps))

    def with_steps(self, steps: int) -> "StrongAttack":
        return replace(self, steps=int(steps))

    def with_restarts(self, restarts: int) -> "StrongAttack":
        return replace(self, restarts=int(restarts))

    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        _check_inputs(x, y, self.norm)
        x, y = x.detach(), y.detach()
        if self.eps == 0 or x.shape[0] == 0:
            return x.clone()
        was_training = training_modes(model)
        model.eval()
        devices = [x.device] if x.device.type == "cuda" else []
        try:
            # torchattacks seeds the global generator (torch.manual_seed): keep that inside.
            with torch.random.fork_rng(devices=devices):
                x_adv = self._run(model, x, y)
        finally:
            restore_training_modes(was_training)
        x_adv = project(self.norm, x_adv.detach().to(x.dtype), x, self.eps)
        check_adversarial(self.norm, x_adv, x, self.eps, self.name)
        return x_adv

    def _run(self, model, x, y) -> torch.Tensor:
        if self.kind == "pgd":
            return self._pgd(model, x, y)
        import torchattacks

        if self.kind == "square":
            if self.norm == "l2" and min(x.shape[2:]) < 5:
                raise ValueError(f"{self.name}: torchattacks' L2 Square attack needs images of at least 5 px")
            attack = square_class()(model, norm=_TA_NORM[self.norm], eps=self.eps, n_queries=self.steps,
                                    n_restarts=self.restarts, p_init=0.8, loss="margin", resc_schedule=True,
                                    seed=self.seed)
        else:
            loss = self.kind.split("-")[1]
            if loss == "dlr":
                with torch.no_grad():
                    n_classes = model(x[:1]).shape[1]
                if n_classes < 3:
                    raise ValueError(f"{self.name}: the DLR loss needs at least 3 classes, the model has {n_classes}")
            attack = torchattacks.APGD(model, norm=_TA_NORM[self.norm], eps=self.eps, steps=self.steps,
                                       n_restarts=self.restarts, seed=self.seed, loss=loss, rho=0.75)
        attack.set_device(x.device)
        return attack(x, y)

    def _pgd(self, model, x, y) -> torch.Tensor:
        step = self.step_size if self.step_size is not None else 2.5 * self.eps / self.steps
        gen = torch.Generator(device=x.device).manual_seed(self.seed)
        best = x.clone()
        broken = torch.zeros(x.shape[0], dtype=torch.bool, device=x.device)
        for _ in range(self.restarts):
            x_adv = perturb(model, x, y, eps=self.eps, step_size=step, steps=self.steps, norm=self.norm,
                            random_start=True, generator=gen)
            with torch.no_grad():
                wrong = model(x_adv).argmax(1) != y
            take = ~broken  # keep the first restart that breaks a sample; otherwise the latest attempt
            best[take] = x_adv[take]
            broken |= wrong
            if broken.all():
                break
        return best


@functools.cache
def square_class():
    """torchattacks' ``Square`` with two of its per-query costs removed, returning the same images bit for bit.

    Square is a random search: each query changes one window of the image and asks the model once. On a
    GPU a query is a few hundred tiny kernels, so their launches and the host's waits set its pace, and
    two parts of torchattacks' loop add most of them without need:

    - the L2 attack's window pattern (``eta``) is rebuilt at every query by a Python loop over the
      window's rings, each ring a few kernels and a host-to-device copy: a few hundred launches per query
      for a pattern that depends on the window size alone. Here it is built once per size (by
      torchattacks' own ``eta_rectangles``) and kept; the random transposition still draws per query;
    - the window's corners are drawn on the host, copied to the device, then read back at every slice
      they bound (a device sync each, several per query): here they stay on the host. Same draws from the same
      generator, same arithmetic (IEEE float32 multiply then add, on either side).

    ``tests/test_robustness.py`` checks the images against torchattacks' class, bit for bit, in both
    norms; ``benchmarks/square_overhead.py`` counts the operations each dispatches.
    """
    import torchattacks

    class Square(torchattacks.Square):
        def random_int(self, low=0, high=1, shape=[1]):  # noqa: B006 (torchattacks' signature)
            return (low + (high - low) * torch.rand(shape)).long()

        def eta(self, s):
            cache = self.__dict__.setdefault("_eta_by_size", {})
            if s not in cache:
                delta = torch.zeros([s, s]).to(self.device)
                delta[: s // 2] = self.eta_rectangles(s // 2, s)
                delta[s // 2:] = -1.0 * self.eta_rectangles(s - s // 2, s)
                delta /= (delta ** 2).sum(dim=(0, 1), keepdim=True).sqrt()
                cache[s] = delta
            delta = cache[s]
            return delta.permute([1, 0]) if torch.rand([1]) > 0.5 else delta

    return Square


def _label(norm: str) -> str:
    return _NORM_LABEL[norm]


def strong_suite(linf_eps: float = LINF_EPS, l2_eps: float = L2_EPS, *, apgd_steps: int = 100, restarts: int = 1,
                 square_queries: int = 1000, seed: int = 0, norms: Sequence[str] = NORMS) -> tuple[StrongAttack, ...]:
    """APGD-CE, APGD-DLR (white-box) and Square (black-box) in each norm, at the paper's radii.

    Names: "APGD-CE-Linf", "APGD-DLR-Linf", "Square-Linf", then the same in L2.
    AutoAttack's own defaults are 100 APGD steps and 5000 Square queries; the
    CPU profiles use fewer (pass them here; they are part of the result's name).
    """
    eps = {"linf": linf_eps, "l2": l2_eps}
    out = []
    for norm in norms:
        if norm not in NORMS:
            raise ValueError(f"unknown norm {norm!r}; use one of {NORMS}")
        n = _label(norm)
        out += [StrongAttack(f"APGD-CE-{n}", "apgd-ce", norm, eps[norm], apgd_steps, restarts, seed),
                StrongAttack(f"APGD-DLR-{n}", "apgd-dlr", norm, eps[norm], apgd_steps, restarts, seed),
                StrongAttack(f"Square-{n}", "square", norm, eps[norm], square_queries, restarts, seed)]
    return tuple(out)


# --------------------------------------------------------------------------
# Per-image correctness and the worst case
# --------------------------------------------------------------------------


def _as_float(x: torch.Tensor) -> torch.Tensor:
    return x.float().div(255) if x.dtype == torch.uint8 else x


def per_image_correct(model: nn.Module, x: torch.Tensor, y: torch.Tensor, attacks: Sequence[Callable], *,
                      device="cpu", batch_size: int = 128) -> pd.DataFrame:
    """Whether the model classifies each image correctly, clean and under each attack.

    ``x``: uint8 images (N, 3, H, W) as stored, or floats in [0, 1]. Returns a
    DataFrame with one row per image (index 0..N-1, named "image") and bool
    columns "clean" and one per attack (its ``name``). A column is the
    attacked accuracy as the paper reports it (it is not combined with the
    clean column; :func:`worst_case` does that). Attacks run in batches of
    ``batch_size``; APGD and Square draw their random starts per batch, so
    the batch size is part of the result.
    """
    names = [getattr(a, "name", None) or repr(a) for a in attacks]
    if len(set(names)) != len(names) or CLEAN in names:
        raise ValueError(f"attack names must be unique and not {CLEAN!r}: {names}")
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"{x.shape[0]} images but {y.shape[0]} labels")
    was_training = training_modes(model)
    model.eval()
    cols = {name: [] for name in [CLEAN, *names]}
    try:
        for i in range(0, x.shape[0], batch_size):
            xb = _as_float(x[i:i + batch_size].to(device))
            yb = y[i:i + batch_size].to(device)
            with torch.no_grad():
                cols[CLEAN].append((model(xb).argmax(1) == yb).cpu())
            for name, attack in zip(names, attacks):
                xa = attack(model, xb, yb)
                with torch.no_grad():
                    cols[name].append((model(xa).argmax(1) == yb).cpu())
    finally:
        restore_training_modes(was_training)
    data = {k: (torch.cat(v) if v else torch.zeros(0, dtype=torch.bool)).numpy() for k, v in cols.items()}
    return pd.DataFrame(data, index=pd.RangeIndex(x.shape[0], name="image"))


def worst_case(frame: pd.DataFrame, columns: Sequence[str] | None = None) -> pd.Series:
    """Per image: correct under every one of ``columns`` (default: all columns), i.e. their AND.

    Include "clean" among the columns for the usual worst-case robust
    accuracy: an adversary may also leave the image unchanged.
    """
    columns = list(frame.columns if columns is None else columns)
    if not columns:
        raise ValueError("worst_case needs at least one column")
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise KeyError(f"columns {missing} not in the frame (it has {list(frame.columns)})")
    return frame[columns].astype(bool).all(axis=1).rename("worst_case")


# --------------------------------------------------------------------------
# Gradient-masking checks (Carlini et al. 2019)
# --------------------------------------------------------------------------


class _Correct:
    """Per-image correctness under an attack, computed once per attack (a cache shared by the checks)."""

    def __init__(self, model, x, y, *, device="cpu", batch_size: int = 128, cache: dict | None = None):
        self.model, self.x, self.y, self.device, self.batch_size = model, x, y, device, batch_size
        self.cache = {} if cache is None else cache

    def __call__(self, attack) -> torch.Tensor:
        if attack not in self.cache:
            frame = per_image_correct(self.model, self.x, self.y, [attack], device=self.device,
                                      batch_size=self.batch_size)
            self.cache[attack] = torch.from_numpy(frame.iloc[:, 1].to_numpy().copy())
        return self.cache[attack]

    def clean(self) -> torch.Tensor:
        if CLEAN not in self.cache:
            frame = per_image_correct(self.model, self.x, self.y, [], device=self.device,
                                      batch_size=self.batch_size)
            self.cache[CLEAN] = torch.from_numpy(frame[CLEAN].to_numpy().copy())
        return self.cache[CLEAN]


def _never_rises(counts: Sequence[int], tolerance: int) -> bool:
    return all(b <= a + tolerance for a, b in zip(counts, counts[1:]))


def _result(check: str, passed: bool, **detail) -> dict:
    return {"check": check, "passed": bool(passed), "detail": detail}


def _sweep(check: str, model, x, y, attack_factory, values, key: str, *, device, batch_size, tolerance,
           cache) -> dict:
    correct = _Correct(model, x, y, device=device, batch_size=batch_size, cache=cache)
    attacks = [attack_factory(v) for v in values]
    counts = [int(correct(a).sum()) for a in attacks]
    n = int(x.shape[0])
    converged = len(counts) < 2 or counts[-2] - counts[-1] <= tolerance
    return _result(check, _never_rises(counts, tolerance), attack=attacks[-1].name if attacks else "",
                   **{key: [int(v) for v in values]}, correct=counts,
                   accuracy=[c / max(n, 1) for c in counts], n_images=n, tolerance_images=tolerance,
                   converged=bool(converged))


def check_more_steps(model, x, y, attack_factory: Callable[[int], Callable], steps: Sequence[int] = (10, 50, 200), *,
                     device="cpu", batch_size: int = 128, tolerance: int = 1, cache: dict | None = None) -> dict:
    """Robust accuracy must not rise as the attack runs more steps (Carlini et al. 2019, sec. 5).

    ``attack_factory(steps)`` returns the attack (e.g. APGD-CE) with that many
    steps. Passes when no step count leaves more than ``tolerance`` images
    more correct than the previous one. ``detail["converged"]`` says whether
    the last increase in steps changed the count by at most ``tolerance``; if
    not, the evaluation has not converged and its number is an upper bound.
    """
    return _sweep("more_steps", model, x, y, attack_factory, steps, "steps", device=device,
                  batch_size=batch_size, tolerance=tolerance, cache=cache)


def check_restarts(model, x, y, attack_factory: Callable[[int], Callable], restarts: Sequence[int] = (1, 2, 4), *,
                   device="cpu", batch_size: int = 128, tolerance: int = 1, cache: dict | None = None) -> dict:
    """Robust accuracy must not rise with more random restarts (Carlini et al. 2019, sec. 5).

    ``attack_factory(restarts)`` returns the attack with that many restarts.
    torchattacks' APGD and Square, and our PGD, run the first restart
    identically whatever the count, so a rise means a bug or a
    non-deterministic model. A large drop (``detail["converged"]`` False)
    means single-start results depend on the start: report more restarts.
    """
    return _sweep("restarts", model, x, y, attack_factory, restarts, "restarts", device=device,
                  batch_size=batch_size, tolerance=tolerance, cache=cache)


LARGE_LINF_EPS = 0.3  # every pixel may move by 0.3: enough to turn any image into grey


def default_eps_values(norm: str, x: torch.Tensor) -> tuple[float, ...]:
    """Radii for :func:`check_eps_to_zero`: 0, the paper's radius and beyond, up to a "large" one.

    Linf ends at 0.3. L2 ends at 0.3 * sqrt(C*H*W), the L2 length of a
    perturbation of 0.3 in every pixel, so "large" means the same for any
    image size (8.3 at 16 px, 116 at 224 px).
    """
    if norm == "linf":
        return (0.0, LINF_EPS, 8 / 255, 0.1, LARGE_LINF_EPS)
    if norm == "l2":
        large = LARGE_LINF_EPS * math.sqrt(x[0].numel())
        return (0.0, L2_EPS / 2, L2_EPS, 4 * L2_EPS, large)
    raise ValueError(f"unknown norm {norm!r}; use one of {NORMS}")


def pgd_attack(norm: str, eps: float, steps: int = 20, restarts: int = 1, seed: int = 0) -> StrongAttack:
    """PGD with random start and step 2.5 eps / steps (Madry et al.), named like "PGD-20-Linf"."""
    return StrongAttack(f"PGD-{steps}-{_label(norm)}", "pgd", norm, float(eps), steps, restarts, seed)


def check_eps_to_zero(model, x, y, norm: str, eps_values: Sequence[float] | None = None, *,
                      attack_factory: Callable[[float], Callable] | None = None, steps: int = 20, seed: int = 0,
                      max_final_accuracy: float = 0.1, device="cpu", batch_size: int = 128, tolerance: int = 1,
                      cache: dict | None = None) -> dict:
    """Robust accuracy must fall as eps grows, and reach about zero at a large eps (Carlini et al. 2019).

    ``attack_factory(eps)`` defaults to :func:`pgd_attack` with ``steps``.
    Passes when (1) accuracy never rises by more than ``tolerance`` images
    from one radius to the next and (2) at the largest radius at most
    ``max(max_final_accuracy * N, tolerance)`` images stay correct.

    Threshold: an untargeted attack with an unbounded budget can reach 0 %;
    Carlini et al. ask for "random guessing" at most. We require 10 %, under a
    third of chance level for three classes (1/3), which leaves room for a few
    images on which a finite PGD has not finished but not for a model whose
    gradients lead nowhere.
    """
    eps_values = tuple(float(e) for e in (default_eps_values(norm, x) if eps_values is None else eps_values))
    if any(b < a for a, b in zip(eps_values, eps_values[1:])):
        raise ValueError(f"eps_values must be increasing, got {eps_values}")
    factory = attack_factory or (lambda e: pgd_attack(norm, e, steps, seed=seed))
    correct = _Correct(model, x, y, device=device, batch_size=batch_size, cache=cache)
    counts = [int((correct.clean() if e == 0 else correct(factory(e))).sum()) for e in eps_values]
    n = int(x.shape[0])
    monotone = _never_rises(counts, tolerance)
    allowed = max(math.floor(max_final_accuracy * n), tolerance)
    reaches_zero = bool(counts) and counts[-1] <= allowed
    return _result("eps_to_zero", monotone and reaches_zero, norm=norm, eps=list(eps_values), correct=counts,
                   accuracy=[c / max(n, 1) for c in counts], n_images=n, monotone=bool(monotone),
                   final_accuracy=counts[-1] / max(n, 1) if counts else float("nan"),
                   max_final_correct=int(allowed), max_final_accuracy=max_final_accuracy,
                   attack=factory(eps_values[-1]).name if eps_values else "", tolerance_images=tolerance)


def check_blackbox_not_stronger(white_acc: float, black_acc: float, *, n_images: int, tolerance: int = 1) -> dict:
    """A black-box attack must not beat the white-box worst case (Carlini et al. 2019, sec. 4.3).

    ``white_acc``: accuracy correct under all white-box attacks (clean
    included); ``black_acc``: under the black-box (Square) attack. A
    gradient-free search that only sees outputs finding more adversarial
    examples than gradient attacks is the signature of masked gradients.
    Passes when black_acc >= white_acc - tolerance / n_images.
    """
    if n_images < 1:
        raise ValueError("n_images must be >= 1")
    margin = tolerance / n_images
    return _result("blackbox_not_stronger", black_acc >= white_acc - margin - 1e-12, white_acc=float(white_acc),
                   black_acc=float(black_acc), n_images=int(n_images), tolerance_images=tolerance)


def masking_report(model, x, y, *, device="cpu", norms: Sequence[str] = NORMS, eps: dict | None = None,
                   steps: Sequence[int] = (10, 50, 200), restarts: Sequence[int] = (1, 2, 4),
                   restart_steps: int | None = None, eps_values: dict | None = None, pgd_steps: int = 20,
                   square_queries: int = 1000, seed: int = 0, batch_size: int = 128, tolerance: int = 1,
                   max_final_accuracy: float = 0.1, suite: Sequence[StrongAttack] | None = None,
                   frame: pd.DataFrame | None = None) -> list[dict]:
    """Run the four checks for each norm; returns their dicts (``detail["norm"]`` says which norm).

    Per norm, at radius ``eps[norm]`` (default: the paper's 2/255 and 0.5):
    more steps of APGD-CE (``steps``); more restarts of APGD-CE with
    ``restart_steps`` (default: the fewest of ``steps``); PGD-``pgd_steps``
    over ``eps_values[norm]`` (default :func:`default_eps_values`); Square
    (``square_queries``) against the worst case of every white-box attack run
    at that radius (APGD-CE at each step count, APGD-DLR at the most steps,
    and the white-box attacks of ``suite``). With ``suite`` and its
    :func:`per_image_correct` ``frame``, those results are reused, and the
    suite's Square attack is the black-box one.
    """
    eps = {"linf": LINF_EPS, "l2": L2_EPS, **(eps or {})}
    eps_values = eps_values or {}
    restart_steps = restart_steps or min(steps)
    cache: dict = {}
    if frame is not None:
        cache[CLEAN] = torch.from_numpy(frame[CLEAN].to_numpy().copy())
        for a in suite or ():
            cache[a] = torch.from_numpy(frame[a.name].to_numpy().copy())
    correct = _Correct(model, x, y, device=device, batch_size=batch_size, cache=cache)
    kw = dict(device=device, batch_size=batch_size, tolerance=tolerance, cache=cache)
    n = int(x.shape[0])
    report = []
    for norm in norms:
        e, lab = float(eps[norm]), _label(norm)
        ce = StrongAttack(f"APGD-CE-{lab}", "apgd-ce", norm, e, max(steps), 1, seed)
        r = check_more_steps(model, x, y, lambda s: ce.with_steps(s), steps, **kw)
        report.append({**r, "detail": {"norm": norm, "eps": e, **r["detail"]}})
        r = check_restarts(model, x, y, lambda k: ce.with_steps(restart_steps).with_restarts(k), restarts, **kw)
        report.append({**r, "detail": {"norm": norm, "eps": e, **r["detail"]}})
        report.append(check_eps_to_zero(model, x, y, norm, eps_values.get(norm), steps=pgd_steps, seed=seed,
                                        max_final_accuracy=max_final_accuracy, **kw))
        # Black box versus the worst case of everything white-box at this radius.
        dlr = StrongAttack(f"APGD-DLR-{lab}", "apgd-dlr", norm, e, max(steps), 1, seed)
        correct(dlr)
        squares = [a for a in (suite or ()) if a.kind == "square" and a.norm == norm and a.eps == e]
        square = squares[0] if squares else StrongAttack(f"Square-{lab}", "square", norm, e, square_queries, 1, seed)
        white = [a for a in cache if isinstance(a, StrongAttack) and a.white_box and a.norm == norm and a.eps == e]
        white_ok = correct.clean().clone()
        for a in white:
            white_ok &= correct(a)
        black_ok = correct.clean() & correct(square)
        r = check_blackbox_not_stronger(white_ok.float().mean().item(), black_ok.float().mean().item(),
                                        n_images=n, tolerance=tolerance)
        report.append({**r, "detail": {"norm": norm, "eps": e, **r["detail"],
                                       "white_attacks": sorted({a.name + f"@{a.steps}x{a.restarts}" for a in white}),
                                       "black_attack": square.name,
                                       "fooled_only_by_black_box": int((white_ok & ~black_ok).sum())}})
    return report


# --------------------------------------------------------------------------
# Load or compute for one run
# --------------------------------------------------------------------------


def balanced_subset(y: torch.Tensor, n: int | None) -> torch.Tensor:
    """Indices of the first images of each class, in test order: n // K per class, the remainder to the
    first classes (K = number of classes present). ``None`` or n >= N: all images."""
    y = y.cpu()
    if n is None or n >= y.shape[0]:
        return torch.arange(y.shape[0])
    if n < 1:
        raise ValueError(f"n_images must be >= 1, got {n}")
    classes = torch.unique(y).tolist()
    per = [n // len(classes) + (1 if k < n % len(classes) else 0) for k in range(len(classes))]
    picked = []
    for c, m in zip(classes, per):
        idx = (y == c).nonzero().flatten()
        if idx.numel() < m:
            raise ValueError(f"class {c} has {idx.numel()} test images, fewer than the {m} asked for")
        picked.append(idx[:m])
    return torch.cat(picked).sort().values


def _spec_digest(spec: dict) -> str:
    text = json.dumps(spec, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:8]


def _paper_eps(config) -> tuple[float, float]:
    linf = next((a.eps for a in config.eval_attacks if a.norm == "linf"), LINF_EPS)
    l2 = next((a.eps for a in config.eval_attacks if a.norm == "l2"), L2_EPS)
    return float(linf), float(l2)


def _masking_args(masking, config) -> dict | None:
    if masking is False or masking is None:
        return None
    linf, l2 = _paper_eps(config)
    args = dict(eps={"linf": linf, "l2": l2}, steps=[10, 50, 200], restarts=[1, 2, 4], pgd_steps=20, tolerance=1,
                max_final_accuracy=0.1)
    if isinstance(masking, dict):
        unknown = set(masking) - set(args) - {"norms", "restart_steps", "eps_values"}
        if unknown:
            raise ValueError(f"unknown masking option(s) {sorted(unknown)}")
        args.update(masking)
    return json.loads(json.dumps(args))  # lists, plain floats: what the digest and the file record


def robust_eval_path(config, results, suite: Sequence[StrongAttack] | None = None, n_images: int | None = None,
                     *, masking: bool | dict = True, batch_size: int = 128) -> Path:
    """Where :func:`robust_eval_result` stores its result for these arguments."""
    spec = _spec(config, suite, n_images, masking, batch_size)
    return store.RunDir(results, config.run_id) / f"robustness-{_spec_digest(spec)}.json"


def _spec(config, suite, n_images, masking, batch_size) -> dict:
    suite = tuple(suite) if suite is not None else strong_suite(*_paper_eps(config), seed=config.train.seed)
    return {"suite": [a.to_dict() for a in suite], "n_images": n_images, "masking": _masking_args(masking, config),
            "batch_size": batch_size}


def robust_eval_result(config, *, results, data_root=None, device="cpu", cache_dir=None,
                       suite: Sequence[StrongAttack] | None = None, n_images: int | None = None,
                       masking: bool | dict = True, batch_size: int = 128, tensors=None) -> dict:
    """The stronger evaluation of one finished run: load ``<run>/robustness-<hash>.json`` or compute it.

    ``suite`` defaults to :func:`strong_suite` at the run's own Linf and L2
    radii (seeded with the run's seed); ``n_images`` evaluates only the first
    test images of each class (:func:`balanced_subset`), to fit a CPU;
    ``masking``: True runs :func:`masking_report` with its defaults, a dict
    overrides them (e.g. ``{"steps": [5, 20], "norms": ["linf"]}``), False
    skips it. The hash covers the suite, n_images, the masking options and
    the batch size.

    Returned (and stored): ``robust_accuracy`` per attack, the paper's five
    (from the run's stored predictions, on the same images) and the strong
    suite's; ``worst_case`` accuracy over clean + the paper's attacks
    ("paper"), clean + the suite ("strong"), both ("all") and per norm;
    ``masking`` (the checks); ``per_image`` (0/1 per image and column);
    ``image_ids``, ``spec``, ``seconds``.

    Computing needs the checkpoint ``<run>/ckpt/best.pt`` (not committed) and
    the test images; a FileNotFoundError says so when neither it nor the
    stored file exists.
    """
    spec = _spec(config, suite, n_images, masking, batch_size)
    suite = tuple(StrongAttack(**a) for a in spec["suite"])
    run = store.RunDir(results, config.run_id)
    path = run / f"robustness-{_spec_digest(spec)}.json"
    if path.exists():
        return store.read_json(path)
    ckpt = run.ckpt / "best.pt"
    if not ckpt.exists():
        raise FileNotFoundError(f"no stored robustness result {path.name} and no checkpoint {ckpt} to compute it: "
                                f"checkpoints are not committed; train run {config.run_id} here "
                                "(dpaat_lib.experiment.run in an empty results folder) or copy its ckpt/ folder")
    pred_path = run.predictions
    if not pred_path.exists():
        raise FileNotFoundError(f"{pred_path} is missing: run {config.run_id} has not finished its evaluation "
                                "(call dpaat_lib.experiment.run first)")
    from .experiment import load_data
    from .training import load_trained

    t0 = time.perf_counter()
    if tensors is None:
        _, tensors = load_data(config.data, data_root, cache_dir)
    test = tensors["test"]
    idx = balanced_subset(test.y, n_images)
    x, y = test.x[idx], test.y[idx]
    ids = [test.image_ids[i] for i in idx.tolist()]

    predictions = store.read_csv(pred_path).set_index("image_id")
    missing = [i for i in ids if i not in predictions.index]
    if missing:
        raise ValueError(f"{pred_path.name} of {config.run_id} lacks test images {missing[:3]}: the test split "
                         "differs from the one the run was evaluated on")
    pred = predictions.loc[ids]
    if (pred["label"].to_numpy() != y.numpy()).any():
        raise ValueError(f"labels in {pred_path.name} of {config.run_id} disagree with the test split")
    paper = [a.name for a in config.eval_attacks]
    paper_frame = pd.DataFrame({a: pred[f"pred_{a}"].to_numpy() == y.numpy() for a in paper},
                               index=pd.RangeIndex(len(ids), name="image"))

    model = load_trained(config, run, device)
    frame = per_image_correct(model, x, y, suite, device=device, batch_size=batch_size)
    clean_agreement = float((frame[CLEAN].to_numpy() == (pred[f"pred_{CLEAN}"].to_numpy() == y.numpy())).mean())
    frame = pd.concat([frame, paper_frame], axis=1)
    strong = [a.name for a in suite]

    def acc(columns):
        return float(worst_case(frame, [CLEAN, *columns]).mean())

    norm_of = {**{a.name: a.norm for a in config.eval_attacks}, **{a.name: a.norm for a in suite}}
    report = None
    if spec["masking"] is not None:
        m = dict(spec["masking"])
        m["eps"] = {k: float(v) for k, v in m["eps"].items()}
        report = masking_report(model, x, y, device=device, batch_size=batch_size, suite=suite, frame=frame,
                                seed=config.train.seed, **m)
    result = {
        "run_id": config.run_id,
        "spec": spec,
        "n_images": len(ids),
        "image_ids": ids,
        "clean_accuracy": float(frame[CLEAN].mean()),
        "clean_agrees_with_predictions": clean_agreement,
        "robust_accuracy": {c: float(frame[c].mean()) for c in [*paper, *strong]},
        "worst_case": {"paper": acc(paper), "strong": acc(strong), "all": acc([*paper, *strong]),
                       **{f"all_{norm}": acc([c for c in [*paper, *strong] if norm_of[c] == norm])
                          for norm in NORMS if any(norm_of[c] == norm for c in [*paper, *strong])}},
        "masking": report,
        "masking_passed": None if report is None else all(r["passed"] for r in report),
        "per_image": {c: frame[c].astype(int).tolist() for c in frame.columns},
        "seconds": time.perf_counter() - t0,
    }
    store.write_json(path, result)
    return result
