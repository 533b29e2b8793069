"""FGSM, I-FGSM and PGD in Linf and L2 from one iterative loop (method.md section 3).

The threat model is a small strategy object (:class:`Linf`, :class:`L2`) that
knows how to start, step and project, as in MadryLab/robustness; a single loop,
:func:`perturb`, serves every attack:

=========  ===========================  ============  ============
attack     step                          steps         random start
=========  ===========================  ============  ============
FGSM       eps                           1             no
I-FGSM     step_size                     k             no
PGD        step_size                     k             yes
=========  ===========================  ============  ============

The radius ``eps`` is a float or a tensor of shape ``(N,)`` (or a list or NumPy
array of N values): one radius per sample, which is what AMAT and DPAAT need.
Inputs live in [0, 1]; the model runs in eval mode during the attack (a compiled model also with its weights'
requires_grad off) and gets both back; the inputs are never modified.

Example::

    x_adv = pgd(model, x, y, eps=0.5, step_size=0.15, steps=7, norm="l2")
    x_adv = pgd(model, x, y, eps=radii, step_size=0.15, steps=7, norm="l2")  # radii.shape == (N,)
"""
from __future__ import annotations

import math
import numbers
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

NORMS = ("linf", "l2")


def _flat_norm(t: torch.Tensor) -> torch.Tensor:
    """Per-sample L2 norm as an (N,1,1,1) tensor."""
    return t.flatten(1).norm(p=2, dim=1).view(-1, 1, 1, 1)


class Linf:
    """Linf ball: signed-gradient steps, coordinate-wise clipping."""

    @staticmethod
    def random_init(x: torch.Tensor, eps: torch.Tensor, generator) -> torch.Tensor:
        u = torch.rand(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        return (2 * u - 1) * eps

    @staticmethod
    def step(grad: torch.Tensor, size: torch.Tensor) -> torch.Tensor:
        return size * grad.sign()

    @staticmethod
    def project(delta: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        return torch.maximum(torch.minimum(delta, eps), -eps)


class L2:
    """L2 ball: normalised-gradient steps, projection by each sample's own norm ratio."""

    DIVISION_EPS = 1e-10  # as torchattacks, so the two agree to float precision

    @staticmethod
    def random_init(x: torch.Tensor, eps: torch.Tensor, generator) -> torch.Tensor:
        # Uniform radius fraction times a random direction (torchattacks' PGDL2 start).
        d = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        r = torch.rand((x.shape[0], 1, 1, 1), generator=generator, device=x.device, dtype=x.dtype)
        return d / _flat_norm(d) * r * eps

    @classmethod
    def step(cls, grad: torch.Tensor, size: torch.Tensor) -> torch.Tensor:
        return size * grad / (_flat_norm(grad) + cls.DIVISION_EPS)

    @staticmethod
    def project(delta: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        norm = _flat_norm(delta)
        # where(): eps = 0 must give delta = 0, not 0/0.
        factor = torch.where(norm > eps, eps / norm.clamp_min(1e-30), torch.ones_like(norm))
        return delta * factor


_THREATS = {"linf": Linf, "l2": L2}


def distance(norm: str, x_adv: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Per-sample distance ||x' - x|| in ``norm``, shape (N,): the length a radius of that norm bounds."""
    d = (x_adv - x).flatten(1)
    return d.abs().amax(1) if norm == "linf" else d.norm(dim=1)


def as_radius(eps, x: torch.Tensor, *, check_values: bool = True, name: str = "eps") -> torch.Tensor:
    """``eps`` (float or (N,) tensor; a list or NumPy array of N values is taken as one) as an (N,1,1,1)
    tensor on x's device, checked.

    A float is checked on the host; a tensor's values cost one device sync to check, which
    ``check_values=False`` skips (the training methods, whose radii are clamped by construction).
    ``name``: the argument's name in the error messages (``"eps"``, ``"step_size"``).
    """
    n = x.shape[0]
    given = type(eps).__name__
    if isinstance(eps, bool) or (isinstance(eps, torch.Tensor) and eps.dtype == torch.bool):
        raise TypeError(f"{name} must be a float or a tensor of shape (N,) = ({n},), one value per sample; got a "
                        "bool (True would be a radius of 1)")
    if not isinstance(eps, (torch.Tensor, numbers.Real)):  # a list or a NumPy array: one value per sample
        try:
            eps = torch.as_tensor(eps)
        except (TypeError, ValueError, RuntimeError):
            eps = None
        if eps is None or not (eps.is_floating_point() or eps.dtype in (torch.int32, torch.int64)):
            raise TypeError(f"{name} must be a float or a tensor of shape (N,) = ({n},), one value per sample; "
                            f"got {given}" + ("" if eps is None else f" of {eps.dtype}")) from None
        eps = eps.to(x.dtype if x.is_floating_point() else torch.float32)
    if isinstance(eps, torch.Tensor):
        if eps.dim() == 0:
            eps = eps.expand(n)
        if eps.shape != (n,):
            fix = f"Pass {name}.flatten() or a float" if given == "Tensor" else f"Pass {n} values or a float"
            raise ValueError(f"{name} must be a float or a tensor of shape (N,) = ({n},), one value per "
                             f"sample; got shape {tuple(eps.shape)}. {fix}.")
        eps = eps.detach().to(device=x.device, dtype=x.dtype)  # the attack differentiates the input only
        if check_values and not bool(((eps >= 0) & torch.isfinite(eps)).all()):
            raise ValueError(f"{name} must be finite and >= 0 for every sample")
    else:
        if not (math.isfinite(float(eps)) and float(eps) >= 0):
            raise ValueError(f"{name} must be finite and >= 0, got {eps}")
        eps = torch.full((n,), float(eps), device=x.device, dtype=x.dtype)
    return eps.view(n, 1, 1, 1)


def check_unit_range(x: torch.Tensor, what: str = "x") -> None:
    """Raise ValueError unless every value of ``x`` is finite and in [0, 1] (one device sync).

    NaN fails too (a plain ``lo < 0 or hi > 1`` is False for NaN), with a message that names the
    non-finite values.
    """
    if not x.numel():
        return
    lo, hi = torch.stack(torch.aminmax(x)).tolist()  # one device sync, not two; NaN propagates
    if not (math.isfinite(lo) and math.isfinite(hi)):
        raise ValueError(f"{what} has non-finite values (NaN or inf; range [{lo:.3g}, {hi:.3g}]): images must be "
                         "finite and in [0, 1]. Find where the NaN or inf comes from, or drop those images")
    if not (0 <= lo and hi <= 1):
        raise ValueError(f"{what} must lie in [0, 1] (the models normalise inside); got values in "
                         f"[{lo:.3g}, {hi:.3g}]. Pass unnormalised images scaled by 1/255")


def _check_inputs(x: torch.Tensor, y: torch.Tensor, norm: str, *, check_values: bool = True) -> None:
    if norm not in _THREATS:
        raise ValueError(f"unknown norm {norm!r}; use one of {NORMS}")
    if x.dim() != 4:
        raise ValueError(f"x must be a batch of images (N, C, H, W); got shape {tuple(x.shape)}")
    if not x.is_floating_point():
        raise TypeError(f"x must be a float tensor in [0, 1], got {x.dtype}; scale uint8 images with "
                        "dpaat_lib.training.to_float(x)")
    if x.dtype in (torch.float16, torch.bfloat16):
        # In half precision x + delta rounds past the radius (bf16: an Linf radius of 2/255 by 25%) and L2's
        # division guard of 1e-10 rounds to 0 in fp16, so a zero gradient gives NaN images.
        raise TypeError(f"x must be float32 (or float64), got {x.dtype}: the attack's steps and projection would "
                        "not keep the radius in half precision. Pass x.float() and run a half-precision model "
                        "under torch.autocast")
    if y.shape != (x.shape[0],):
        raise ValueError(f"y must have shape (N,) = ({x.shape[0]},); got {tuple(y.shape)}")
    if y.dtype != torch.long:  # cross-entropy takes class indices as int64 only
        raise TypeError(f"y must be a long tensor of class indices, got {y.dtype}; pass y.long()")
    if check_values:
        check_unit_range(x)


def _check_linf_radius(eps, where: str = "", name: str = "eps") -> None:
    """An Linf radius (or step, ``name``) above 1 on images in [0, 1] is one in 0-255 units (a tensor: one
    device sync). ``where`` prefixes the message (e.g. the attack's name)."""
    if isinstance(eps, torch.Tensor):
        big = float(eps.max()) if eps.numel() else 0.0
    else:
        big = float(eps)
    if big > 1:
        raise ValueError(f"{where}Linf {name} = {big:.4g} is above 1, but images and {name} are in [0, 1] pixel "
                         f"units: did you mean {name}={big:.4g}/255 = {big / 255:.4g}?")


def training_modes(model: nn.Module) -> list[tuple[nn.Module, bool]]:
    """Every submodule's train/eval flag, for :func:`restore_training_modes` after an eval-mode pass.
    ``model.train(was)`` would set every submodule to the top module's mode: a BatchNorm the caller froze in
    a training model (``bn.eval()``) would come back training and update its running statistics."""
    return [(m, m.training) for m in model.modules()]


def restore_training_modes(modes: list[tuple[nn.Module, bool]]) -> None:
    """Put back the flags :func:`training_modes` saved, module by module."""
    for module, mode in modes:
        module.training = mode


def is_compiled(model: nn.Module) -> bool:
    """Whether ``model`` runs through ``torch.compile``: a compiled module, or a wrapper that says so
    (:class:`dpaat_lib.training.CompiledNet`) by ``compiled = True``."""
    return bool(getattr(model, "compiled", False)) or hasattr(model, "_orig_mod")


def perturb(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps, step_size, steps: int,
            norm: str = "linf", random_start: bool = False, generator: torch.Generator | None = None,
            loss_fn=None, check_values: bool = True, each_step=None) -> torch.Tensor:
    """The one attack loop: ``steps`` steps of ``step_size`` inside the ``norm`` ball of ``eps``.

    ``loss_fn(logits, y)`` returns one loss per sample (default cross-entropy);
    the attack ascends its sum, so every sample gets its own gradient. Returns
    a new tensor x' with ||x' - x|| <= eps_i and x' in [0, 1].

    ``check_values=False`` skips the checks that read tensor values (x finite and in [0, 1], every
    radius finite and >= 0, an Linf radius <= 1): each costs the device a host sync, and the
    training loop, which calls this for every batch, builds valid inputs by construction. Shapes,
    dtypes and names are always checked, and so is a float ``eps`` or ``step_size``.

    ``each_step(k, x_k)``, where given, is called after step k (1 to ``steps``) with the iterate x_k, the
    model in eval mode. x_k is exactly what the same call with ``steps=k`` returns (nothing after the loop
    changes the iterate, and the random start is drawn first), so one run of a long attack also gives the
    shorter ones of the same radius, step and start (:func:`dpaat_lib.evaluation.evaluate` reads 10-step
    I-FGSM from 20-step, 20-step PGD from 50-step).
    """
    _check_inputs(x, y, norm, check_values=check_values)
    if isinstance(steps, bool) or not isinstance(steps, numbers.Integral) or steps < 0:
        raise ValueError(f"steps must be an integer >= 0, got {steps!r}")
    threat = _THREATS[norm]
    radius = as_radius(eps, x, check_values=check_values)
    size = as_radius(step_size, x, check_values=check_values, name="step_size")
    if norm == "linf" and (check_values or not isinstance(eps, torch.Tensor)):
        _check_linf_radius(eps if isinstance(eps, numbers.Real) else radius)  # a list's values: the tensor
    if norm == "linf" and (check_values or not isinstance(step_size, torch.Tensor)):
        _check_linf_radius(step_size if isinstance(step_size, numbers.Real) else size, name="step_size")
    loss_fn = loss_fn or (lambda logits, target: F.cross_entropy(logits, target, reduction="none"))
    x = x.detach()
    was_training = training_modes(model)
    model.eval()
    # Only the input's gradient is needed. A compiled model's backward computes every gradient its graph
    # can (pytorch/pytorch#132929): frozen weights spare it about a third of each attack step; their flags
    # come back with the model's mode. Eager autograd skips the weights' gradients by itself, and there
    # freezing would cost: bf16 autocast caches its cast of a weight only while the weight requires grad,
    # so every attack step would cast every weight again (ResNet34: 37 more kernels a step).
    weights = [p for p in model.parameters() if p.requires_grad] if is_compiled(model) else []
    for p in weights:
        p.requires_grad_(False)
    try:
        x_adv = x.clone()
        if random_start:
            x_adv = (x + threat.random_init(x, radius, generator)).clamp(0, 1)
        for k in range(steps):
            x_adv.requires_grad_(True)
            with torch.enable_grad():
                loss = loss_fn(model(x_adv), y).sum()
                (grad,) = torch.autograd.grad(loss, x_adv)
            x_adv = x_adv.detach() + threat.step(grad, size)
            delta = threat.project(x_adv - x, radius)
            x_adv = (x + delta).clamp(0, 1).detach()
            if each_step is not None:
                each_step(k + 1, x_adv)
    finally:
        for p in weights:
            p.requires_grad_(True)
        restore_training_modes(was_training)
    return x_adv


def fgsm(model, x, y, *, eps) -> torch.Tensor:
    """FGSM (Goodfellow et al. 2015): one signed-gradient step of size eps, Linf."""
    return perturb(model, x, y, eps=eps, step_size=eps, steps=1, norm="linf", random_start=False)


def ifgsm(model, x, y, *, eps, step_size, steps) -> torch.Tensor:
    """I-FGSM / BIM (Kurakin et al. 2017): ``steps`` signed steps in the Linf ball, no random start."""
    return perturb(model, x, y, eps=eps, step_size=step_size, steps=steps, norm="linf", random_start=False)


def pgd(model, x, y, *, eps, step_size, steps, norm: str = "linf", random_start: bool = True,
        generator: torch.Generator | None = None) -> torch.Tensor:
    """PGD (Madry et al. 2018) in Linf or L2, random start inside the ball by default.

    ``norm`` defaults to ``"linf"`` (the common PGD), but every PGD of the paper, the training
    adversary included, is L2: pass ``norm="l2"`` for those (e.g. eps=0.5, step_size=0.15).
    ``x`` (N, C, H, W) lies in [0, 1] and ``eps`` is in the same units: an Linf radius above 1
    raises (8/255, not 8). ``eps`` and ``step_size``: floats or (N,) tensors, one per sample.
    """
    return perturb(model, x, y, eps=eps, step_size=step_size, steps=steps, norm=norm,
                   random_start=random_start, generator=generator)


@dataclass(frozen=True)
class AttackSpec:
    """One attack as configuration: a name for tables plus the loop's arguments."""

    name: str
    norm: str
    eps: float
    step_size: float
    steps: int
    random_start: bool

    def __post_init__(self):
        if self.norm not in NORMS:
            raise ValueError(f"unknown norm {self.norm!r} in attack {self.name!r}; use one of {NORMS}")
        for field in ("eps", "step_size"):
            v = getattr(self, field)
            if isinstance(v, bool) or not isinstance(v, numbers.Real) or not (math.isfinite(v) and v >= 0):
                raise ValueError(f"attack {self.name!r}: {field} must be a finite number >= 0, got {v!r}")
        if self.norm == "linf":
            _check_linf_radius(self.eps, where=f"attack {self.name!r}: ")
        if isinstance(self.steps, bool) or not isinstance(self.steps, numbers.Integral) or self.steps < 0:
            raise ValueError(f"attack {self.name!r}: steps must be an integer >= 0, got {self.steps!r}")

    def __call__(self, model, x, y, *, eps=None, generator=None, check_values: bool = True,
                 each_step=None) -> torch.Tensor:
        """Run the attack on ``x`` (N, C, H, W) in [0, 1] with labels ``y`` (N,); returns x'.

        ``eps`` overrides the radius only (float or per-sample (N,) tensor): the step stays the
        spec's ``step_size``, whatever the radius. That is what training needs (AMAT and DPAAT
        run PGD-L2 with the fixed step 0.15 inside each sample's own radius), but it is not the
        same attack at another radius: for FGSM (one step of ``step_size``) an override below
        the spec's eps still steps by the spec's eps and is then clipped, one above it never
        reaches the new radius. For the same attack at another radius, with the step scaled in
        proportion, use :meth:`with_eps` (``spec.with_eps(r)(model, x, y)``).
        ``generator`` seeds the random start; ``check_values`` and ``each_step`` as in :func:`perturb`.
        """
        return perturb(model, x, y, eps=self.eps if eps is None else eps, step_size=self.step_size,
                       steps=self.steps, norm=self.norm, random_start=self.random_start,
                       generator=generator, check_values=check_values, each_step=each_step)

    def is_prefix_of(self, other: "AttackSpec") -> bool:
        """Whether this attack's output is ``other``'s iterate after ``self.steps`` steps (:func:`perturb`'s
        ``each_step``): the same norm, radius, step and start, at least one step and no more than ``other``'s."""
        return (0 < self.steps <= other.steps and (self.norm, self.eps, self.step_size, self.random_start)
                == (other.norm, other.eps, other.step_size, other.random_start))

    def with_eps(self, eps: float) -> "AttackSpec":
        """The same attack at another radius; the step keeps its ratio to eps."""
        ratio = self.step_size / self.eps if self.eps else 1.0
        return AttackSpec(self.name, self.norm, eps, ratio * eps, self.steps, self.random_start)

    def to_dict(self) -> dict:
        return asdict(self)


LINF_EPS = 2 / 255
L2_EPS = 0.5


def paper_attacks(linf_eps: float = LINF_EPS, l2_eps: float = L2_EPS, l2_step: float = 0.15) -> tuple[AttackSpec, ...]:
    """The five evaluation attacks of method.md section 4, in the paper's column order."""
    return (
        AttackSpec("FGSM", "linf", linf_eps, linf_eps, 1, False),
        AttackSpec("10-IFGSM", "linf", linf_eps, linf_eps / 4, 10, False),
        AttackSpec("20-IFGSM", "linf", linf_eps, linf_eps / 4, 20, False),
        AttackSpec("20-PGD", "l2", l2_eps, l2_step, 20, True),
        AttackSpec("50-PGD", "l2", l2_eps, l2_step, 50, True),
    )


def training_attack(eps0: float = L2_EPS, step_size: float = 0.15, steps: int = 7, norm: str = "l2") -> AttackSpec:
    """The training adversary of AT, SAT, AMAT and DPAAT: PGD-L2, eps0 0.5, step 0.15, 7 steps."""
    return AttackSpec(f"PGD-{steps}", norm, eps0, step_size, steps, True)
