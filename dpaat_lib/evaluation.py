"""Predictions of a trained model on the clean test set and under each attack (method.md section 4)."""
from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from .attacks import AttackSpec, restore_training_modes, training_modes
from .training import require_uint8, to_float

CLEAN = "clean"


@torch.no_grad()
def _probs(model, x):
    return torch.softmax(model(x).float(), 1)


def attacked_probs(model, x_uint8: torch.Tensor, y: torch.Tensor, attack: AttackSpec | None, *,
                   device="cpu", batch_size: int = 128, seed: int = 0, eps=None) -> torch.Tensor:
    """Softmax outputs (N, C) on the uint8 images ``x_uint8`` (N, 3, H, W) attacked by ``attack``
    (None: clean), in batches of ``batch_size``, in eval mode; the model's mode is restored.

    ``eps`` overrides the attack's radius (:meth:`dpaat_lib.attacks.AttackSpec.__call__`: the step
    stays the spec's): a float, or one radius per image as an (N,) tensor, which is cut into the
    batches with the images. ``seed`` seeds the random starts, drawn batch after batch.
    """
    return probs_along(model, x_uint8, y, attack, (), device=device, batch_size=batch_size, seed=seed,
                       eps=eps)[attack.steps if attack is not None else 0]


def probs_along(model, x_uint8: torch.Tensor, y: torch.Tensor, attack: AttackSpec | None, steps=(), *,
                device="cpu", batch_size: int = 128, seed: int = 0, eps=None) -> dict[int, torch.Tensor]:
    """:func:`attacked_probs` of ``attack`` and of its shorter versions, from one run of it:
    ``{k: softmax outputs after k steps}`` for ``attack.steps`` (0 for clean) and each k of ``steps``
    (1 to ``attack.steps``). The outputs after k steps are exactly those of the same attack with k steps,
    seeded alike (:func:`dpaat_lib.attacks.perturb`'s ``each_step``)."""
    n = x_uint8.shape[0]
    require_uint8(x_uint8)
    per_image = isinstance(eps, torch.Tensor) and eps.dim() > 0
    if per_image and tuple(eps.shape) != (n,):
        raise ValueError(f"eps must be a float or a tensor of shape (N,) = ({n},), one radius per image; "
                         f"got shape {tuple(eps.shape)}")
    last = attack.steps if attack is not None else 0
    if any(not 0 < k <= last for k in steps):
        raise ValueError(f"steps {tuple(steps)} must lie in 1..{last}, the steps of attack "
                         f"{attack.name if attack is not None else 'clean'!r}")
    out: dict[int, list] = {k: [] for k in (*steps, last)}

    def keep(k, x_k):
        if k in out and k != last:
            out[k].append(_probs(model, x_k).cpu())

    was = training_modes(model)
    model.eval()
    gen = torch.Generator(device=device).manual_seed(seed)
    try:
        for i in range(0, n, batch_size):
            xb = to_float(x_uint8[i:i + batch_size].to(device))
            yb = y[i:i + batch_size].to(device)
            if attack is not None:
                xb = attack(model, xb, yb, eps=eps[i:i + batch_size] if per_image else eps, generator=gen,
                            each_step=keep if len(out) > 1 else None)
            out[last].append(_probs(model, xb).cpu())
    finally:
        restore_training_modes(was)
    return {k: torch.cat(v) for k, v in out.items()}


def shared_runs(attacks: tuple[AttackSpec, ...]) -> dict[AttackSpec, tuple[AttackSpec, ...]]:
    """Which attacks run, each with those read from its iterates (itself among them): an attack that is
    a prefix of a longer one (:meth:`dpaat_lib.attacks.AttackSpec.is_prefix_of`; 10-step I-FGSM of
    20-step, 20-step PGD of 50-step) is read from the longest, in ``attacks``' order otherwise."""
    runs: dict[AttackSpec, tuple[AttackSpec, ...]] = {}
    for spec in attacks:
        longest = max((o for o in attacks if spec.is_prefix_of(o)), key=lambda o: o.steps, default=spec)
        runs[longest] = (*runs.get(longest, ()), spec)
    return runs


SCORE_DIGITS = 6
"""Decimals of the softmax scores in a stored predictions file (:func:`round_scores`)."""


def round_scores(frame: pd.DataFrame, digits: int = SCORE_DIGITS) -> pd.DataFrame:
    """``frame`` with its score columns (``p_<attack>_<class>``) rounded to ``digits`` decimals, as stored.

    Rounding ties a confident model's smallest scores (below 5e-7 they all read 0), and average precision
    depends on their order: the metrics are computed from the scores before rounding (dpaat_lib.experiment)."""
    out = frame.copy()
    for col in [c for c in frame.columns if c.startswith("p_")]:
        out[col] = np.round(frame[col].to_numpy(), digits)
    return out


def evaluate(model, test, attacks: tuple[AttackSpec, ...], classes: tuple[str, ...], *, device="cpu",
             batch_size: int = 128, seed: int = 0, share: bool = True,
             digits: int | None = SCORE_DIGITS) -> pd.DataFrame:
    """Per-image predictions: image_id, label, and for clean and each attack the predicted class and
    the softmax probability of every class (columns ``pred_<attack>``, ``p_<attack>_<class>``), rounded to
    ``digits`` decimals (None: as computed, float32 in float64; :func:`round_scores` rounds them later).

    ``share``: an attack that is a shorter version of another is read from that one's run
    (:func:`shared_runs`); the predictions are the same, bit for bit, as without (``share=False``), and the
    paper's five attacks cost 71 attack steps per image instead of 101."""
    runs = shared_runs(attacks) if share else {spec: (spec,) for spec in attacks}
    probs = {CLEAN: attacked_probs(model, test.x, test.y, None, device=device, batch_size=batch_size, seed=seed)}
    if probs[CLEAN].shape[1] != len(classes):  # else scores would be dropped, or indexed past the output
        raise ValueError(f"the model has {probs[CLEAN].shape[1]} outputs but {len(classes)} classes were given "
                         f"({', '.join(classes)}): pass one class name per output, in the output's order")
    if test.y.numel() and int(test.y.max()) >= len(classes):
        raise ValueError(f"test.y has class index {int(test.y.max())}, outside the {len(classes)} classes "
                         f"{tuple(classes)}: pass the classes the labels index")
    for spec, read in runs.items():
        by_steps = probs_along(model, test.x, test.y, spec, sorted({r.steps for r in read} - {spec.steps}),
                               device=device, batch_size=batch_size, seed=seed)
        probs.update({r.name: by_steps[r.steps] for r in read})
    frame = {"image_id": list(test.image_ids), "label": test.y.cpu().numpy()}
    for name in (CLEAN, *(spec.name for spec in attacks)):
        frame[f"pred_{name}"] = probs[name].argmax(1).numpy()
        for k, c in enumerate(classes):
            frame[f"p_{name}_{c}"] = probs[name][:, k].numpy().astype(np.float64)
    frame = pd.DataFrame(frame)
    return frame if digits is None else round_scores(frame, digits)


def robust_accuracy_curve(model, test, attack: AttackSpec, eps_values, *, device="cpu",
                          batch_size: int = 128, seed: int = 0, known: dict | None = None) -> list[float]:
    """Accuracy under ``attack`` at each radius in ``eps_values`` (the step keeps its ratio to eps).

    ``known``: {radius: accuracy} already measured with the same model, attack, seed and batches (the
    run's own evaluation: clean at 0, the attack at its radius); those radii are not attacked again.
    """
    known = known or {}
    accs = []
    for eps in eps_values:
        if float(eps) in known:
            accs.append(float(known[float(eps)]))
            continue
        spec = attack.with_eps(float(eps)) if eps > 0 else None
        p = attacked_probs(model, test.x, test.y, spec, device=device, batch_size=batch_size, seed=seed)
        accs.append(curve_accuracy(p.argmax(1), test.y.cpu()))
    return accs


def curve_accuracy(pred, labels) -> float:
    """Share of ``pred`` equal to ``labels``, as the curves store it: a float32 mean, so a point read from
    stored predictions equals the same point computed by attacking (:func:`dpaat_lib.metrics.accuracy`,
    a float64 mean over a predictions frame, would differ in the last digits)."""
    pred, labels = (v if torch.is_tensor(v) else torch.tensor(np.asarray(v)) for v in (pred, labels))
    return (pred == labels).float().mean().item()
