"""Tests for dpaat_lib.attacks (method.md sections 3 and 4).

Invariants of the one attack loop, for both norms, FGSM / I-FGSM / PGD and a
scalar or per-sample radius: the ball and [0, 1] are respected, eps = 0 is the
identity, FGSM is one-step I-FGSM, attacks never help the model, inputs and
the model's mode are left alone, and with the random start off the loop agrees
with torchattacks 3.5.1.
"""
from __future__ import annotations

import re

import pytest
import torch
import torch.nn.functional as F

from dpaat_lib import attacks
from dpaat_lib.attacks import AttackSpec, paper_attacks, perturb, training_attack
from dpaat_lib.models import build_model

NORMS = ("linf", "l2")
KINDS = ("fgsm", "ifgsm", "pgd")
# Radii of the two norms: one scalar, one per-sample (N,) tensor with a zero in it.
SCALAR_EPS = {"linf": 8 / 255, "l2": 0.5}
PER_SAMPLE_EPS = {"linf": [0.0, 2 / 255, 8 / 255, 0.1], "l2": [0.0, 0.1, 0.5, 1.5]}


def _eps(norm: str, per_sample: bool):
    return torch.tensor(PER_SAMPLE_EPS[norm]) if per_sample else SCALAR_EPS[norm]


def run_attack(kind: str, norm: str, model, x, y, eps, *, steps: int = 5, generator=None):
    """FGSM (one step of size eps, no start), I-FGSM (k steps of eps/4, no start), PGD (random start)."""
    if kind == "fgsm":
        if norm == "linf":
            return attacks.fgsm(model, x, y, eps=eps)
        return perturb(model, x, y, eps=eps, step_size=eps, steps=1, norm=norm, random_start=False)
    step = eps / 4
    if kind == "ifgsm":
        if norm == "linf":
            return attacks.ifgsm(model, x, y, eps=eps, step_size=step, steps=steps)
        return perturb(model, x, y, eps=eps, step_size=step, steps=steps, norm=norm, random_start=False)
    return attacks.pgd(model, x, y, eps=eps, step_size=step, steps=steps, norm=norm, random_start=True,
                       generator=generator if generator is not None else torch.Generator().manual_seed(0))


def distance(norm: str, x_adv, x) -> torch.Tensor:
    d = (x_adv - x).flatten(1)
    return d.abs().amax(1) if norm == "linf" else d.norm(dim=1)


# --------------------------------------------------------------------------
# The ball, [0, 1], eps = 0
# --------------------------------------------------------------------------


@pytest.mark.parametrize("per_sample", [False, True], ids=["scalar", "per-sample"])
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("norm", NORMS)
def test_perturbation_within_each_samples_ball(smallcnn, norm, kind, per_sample):
    g = torch.Generator().manual_seed(1)
    x = torch.rand(4, 3, 16, 16, generator=g)  # full [0, 1]: the clipping to the box is exercised
    y = torch.tensor([0, 1, 2, 1])
    eps = _eps(norm, per_sample)
    x_adv = run_attack(kind, norm, smallcnn, x, y, eps)
    bound = eps if per_sample else torch.full((4,), eps)
    dist = distance(norm, x_adv, x)
    assert (dist <= bound + 1e-5).all(), (dist, bound)
    assert x_adv.min() >= 0 and x_adv.max() <= 1
    assert x_adv.shape == x.shape and x_adv.dtype == x.dtype
    # The attack moved every sample that had room to move.
    assert (dist[bound > 0] > 0).all()
    assert not x_adv.requires_grad


@pytest.mark.parametrize("per_sample", [False, True], ids=["scalar", "per-sample"])
def test_fgsm_linf_uses_the_whole_radius(smallcnn, image_batch, per_sample):
    # Inputs in [0.2, 0.8] and eps <= 0.1: no box clipping, so every sample sits on its sphere.
    x, y = image_batch
    eps = _eps("linf", per_sample)
    x_adv = attacks.fgsm(smallcnn, x, y, eps=eps)
    expected = eps if per_sample else torch.full((4,), eps)
    torch.testing.assert_close(distance("linf", x_adv, x), expected, atol=1e-6, rtol=0)


@pytest.mark.parametrize("random_start", [False, True], ids=["no-start", "random-start"])
@pytest.mark.parametrize("norm", NORMS)
@pytest.mark.parametrize("zero", ["float", "tensor"])
def test_eps_zero_returns_x_exactly(smallcnn, image_batch, norm, random_start, zero):
    x, y = image_batch
    eps = 0.0 if zero == "float" else torch.zeros(4)
    x_adv = perturb(smallcnn, x, y, eps=eps, step_size=0.1, steps=3, norm=norm, random_start=random_start,
                    generator=torch.Generator().manual_seed(0))
    assert torch.equal(x_adv, x)
    assert not torch.isnan(x_adv).any()


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("norm", NORMS)
def test_zero_radius_samples_untouched_beside_others(smallcnn, image_batch, norm, kind):
    x, y = image_batch
    x_adv = run_attack(kind, norm, smallcnn, x, y, _eps(norm, True))
    assert torch.equal(x_adv[0], x[0])  # PER_SAMPLE_EPS[...][0] == 0
    assert not torch.equal(x_adv[1:], x[1:])


# --------------------------------------------------------------------------
# Relations between the attacks
# --------------------------------------------------------------------------


@pytest.mark.parametrize("per_sample", [False, True], ids=["scalar", "per-sample"])
def test_fgsm_equals_one_step_ifgsm(smallcnn, image_batch, per_sample):
    x, y = image_batch
    eps = _eps("linf", per_sample)
    a = attacks.fgsm(smallcnn, x, y, eps=eps)
    b = attacks.ifgsm(smallcnn, x, y, eps=eps, step_size=eps, steps=1)
    c = perturb(smallcnn, x, y, eps=eps, step_size=eps, steps=1, norm="linf", random_start=False)
    assert torch.equal(a, b) and torch.equal(a, c)
    # And it is x + eps * sign(grad) clipped to [0, 1], written out by hand.
    xr = x.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(F.cross_entropy(smallcnn(xr), y, reduction="sum"), xr)
    radius = (eps if per_sample else torch.full((4,), eps)).view(4, 1, 1, 1)
    torch.testing.assert_close(a, (x + radius * grad.sign()).clamp(0, 1), atol=1e-7, rtol=0)


@pytest.mark.parametrize("kind", ["ifgsm", "pgd"])
@pytest.mark.parametrize("norm", NORMS)
def test_per_sample_eps_equals_scalar_eps_sample_by_sample(smallcnn, image_batch, norm, kind):
    """In eval mode samples do not interact: the (N,) radius acts on each sample as a scalar would."""
    x, y = image_batch
    eps = _eps(norm, True)
    together = run_attack(kind, norm, smallcnn, x, y, eps, generator=torch.Generator().manual_seed(3))
    for i in range(4):
        alone = run_attack(kind, norm, smallcnn, x, y, float(eps[i]), generator=torch.Generator().manual_seed(3))
        torch.testing.assert_close(together[i], alone[i], atol=1e-6, rtol=0)


def test_pgd_random_start_is_seeded(smallcnn, image_batch):
    x, y = image_batch
    spec = training_attack(steps=2)
    a = spec(smallcnn, x, y, generator=torch.Generator().manual_seed(5))
    b = spec(smallcnn, x, y, generator=torch.Generator().manual_seed(5))
    c = spec(smallcnn, x, y, generator=torch.Generator().manual_seed(6))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


@pytest.mark.parametrize("norm, eps", [("linf", 0.1), ("l2", 0.5)])
def test_the_random_start_fills_the_ball_symmetrically(smallcnn, norm, eps):
    """The start alone (steps of size 0), on images far from [0, 1]'s edges: every coordinate as often up as
    down; Linf uniform in [-eps, eps] per coordinate (mean |delta| eps/2); L2 a random direction times a
    uniform fraction of eps (mean length eps/2), as torchattacks draws them."""
    n = 256
    x, y = torch.full((n, 3, 16, 16), 0.5), torch.zeros(n, dtype=torch.long)
    d = perturb(smallcnn, x, y, eps=eps, step_size=0.0, steps=1, norm=norm, random_start=True,
                generator=torch.Generator().manual_seed(0)) - x
    assert 0.47 < (d < 0).float().mean() < 0.53 and abs(d.mean()) < 0.01 * eps
    if norm == "linf":
        assert d.abs().max() <= eps + 1e-6 and d.abs().max() > 0.99 * eps
        assert d.abs().mean() == pytest.approx(eps / 2, rel=0.02)
    else:
        lengths = d.flatten(1).norm(dim=1)
        assert lengths.max() <= eps + 1e-6 and lengths.mean() == pytest.approx(eps / 2, rel=0.1)
        assert lengths.min() < 0.05 * eps and lengths.max() > 0.95 * eps


@pytest.mark.parametrize("per_sample", [False, True], ids=["scalar", "per-sample"])
@pytest.mark.parametrize("kind", ["ifgsm", "pgd"])
@pytest.mark.parametrize("norm", NORMS)
def test_each_step_sees_exactly_the_shorter_attacks_output(smallcnn, image_batch, norm, kind, per_sample):
    """The iterate after k steps is the k-step attack's output, bit for bit (a random start drawn alike):
    what lets the evaluation read 10-step I-FGSM from 20-step and 20-step PGD from 50-step."""
    x, y = image_batch
    eps = _eps(norm, per_sample)
    seen = {}
    full = perturb(smallcnn, x, y, eps=eps, step_size=SCALAR_EPS[norm] / 4, steps=5, norm=norm,
                   random_start=kind == "pgd", generator=torch.Generator().manual_seed(3),
                   each_step=lambda k, x_k: seen.setdefault(k, x_k.clone()))
    assert sorted(seen) == [1, 2, 3, 4, 5] and torch.equal(seen[5], full)
    for k in (1, 3):
        short = perturb(smallcnn, x, y, eps=eps, step_size=SCALAR_EPS[norm] / 4, steps=k, norm=norm,
                        random_start=kind == "pgd", generator=torch.Generator().manual_seed(3))
        assert torch.equal(seen[k], short)
    assert not torch.equal(seen[1], seen[5])


def test_an_attack_is_a_prefix_only_of_a_longer_one_of_the_same_radius_step_and_start():
    fgsm, ifgsm10, ifgsm20, pgd20, pgd50 = paper_attacks()
    assert ifgsm10.is_prefix_of(ifgsm20) and pgd20.is_prefix_of(pgd50) and ifgsm20.is_prefix_of(ifgsm20)
    assert not ifgsm20.is_prefix_of(ifgsm10) and not pgd50.is_prefix_of(pgd20)
    assert not fgsm.is_prefix_of(ifgsm20)  # one step of eps, not of eps/4
    assert not ifgsm10.is_prefix_of(pgd50)
    assert not pgd20.is_prefix_of(AttackSpec("x", "l2", 0.5, 0.15, 50, False))  # no random start
    assert not pgd20.is_prefix_of(pgd50.with_eps(1.0))
    assert not AttackSpec("none", "l2", 0.5, 0.15, 0, True).is_prefix_of(pgd50)  # 0 steps: the random start


@pytest.fixture(scope="module")
def toy_task():
    """A smallcnn trained to 100% on 12 images whose class is their brightest channel."""
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    y = torch.arange(12) % 3
    x = 0.3 + 0.1 * torch.rand(12, 3, 16, 16, generator=g)
    x[torch.arange(12), y] += 0.3
    model = build_model("smallcnn", 3)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(40):
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        assert (model(x).argmax(1) == y).all(), "the toy model should fit its 12 images"
    return model, x, y


@pytest.mark.parametrize("norm, radii", [("linf", [1 / 255, 8 / 255, 0.3]), ("l2", [0.1, 0.5, 4.0])])
def test_robust_accuracy_at_most_clean_accuracy(toy_task, norm, radii):
    model, x, y = toy_task
    with torch.no_grad():
        clean = (model(x).argmax(1) == y).float().mean().item()
    accs = []
    for eps in radii:
        x_adv = perturb(model, x, y, eps=eps, step_size=eps / 4, steps=10, norm=norm, random_start=True,
                        generator=torch.Generator().manual_seed(0))
        with torch.no_grad():
            accs.append((model(x_adv).argmax(1) == y).float().mean().item())
            # The attack raises the loss it ascends.
            assert F.cross_entropy(model(x_adv), y) >= F.cross_entropy(model(x), y)
    assert all(a <= clean for a in accs), (clean, accs)
    assert accs[-1] < clean, f"the largest radius should break some predictions: {clean}, {accs}"


# --------------------------------------------------------------------------
# Side effects
# --------------------------------------------------------------------------


@pytest.mark.parametrize("start_mode", ["train", "eval"])
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("norm", NORMS)
def test_inputs_and_model_mode_left_alone(image_batch, norm, kind, start_mode):
    torch.manual_seed(0)
    model = build_model("smallcnn", 3).train(start_mode == "train")
    x, y = image_batch
    eps = _eps(norm, True)
    x0, y0, eps0 = x.clone(), y.clone(), eps.clone()
    params = {k: v.clone() for k, v in model.state_dict().items()}  # BN running stats included
    run_attack(kind, norm, model, x, y, eps)
    assert torch.equal(x, x0) and torch.equal(y, y0) and torch.equal(eps, eps0)
    assert model.training == (start_mode == "train")
    assert all(m.training == (start_mode == "train") for m in model.modules())
    # The attack ran in eval mode: BatchNorm statistics did not move, no gradient was left behind.
    for k, v in model.state_dict().items():
        assert torch.equal(v, params[k]), k
    assert all(p.grad is None for p in model.parameters())


def _frozen_bn_model():
    """A training model whose caller froze one BatchNorm (bn.eval(), a common fine-tuning choice)."""
    model = build_model("smallcnn", 3).train()
    bn = next(m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d))
    bn.eval()
    return model, bn


def _eval_mode_passes():
    """Every library function that switches a model to eval mode, each called once on (model, x, y)."""
    from dpaat_lib import evaluation, gradcam, robustness, training

    def to_uint8(x):
        return (x * 255).round().to(torch.uint8)

    cam = lambda x: torch.rand(x.shape[0], *x.shape[-2:]).numpy()  # noqa: E731
    return {
        "perturb": lambda m, x, y: perturb(m, x, y, eps=0.1, step_size=0.05, steps=1, norm="l2"),
        "predict_logits": lambda m, x, y: training.predict_logits(m, to_uint8(x)),
        "attacked_probs": lambda m, x, y: evaluation.attacked_probs(m, to_uint8(x), y, training_attack()),
        "cams": lambda m, x, y: gradcam.cams(m, "smallcnn", x, y),
        "deletion_insertion": lambda m, x, y: gradcam.deletion_insertion(m, x, y, cam(x), steps=2),
        "road_scores": lambda m, x, y: gradcam.road_scores(m, x, y, cam(x), percentiles=(50,)),
        "strong attack": lambda m, x, y: robustness.StrongAttack("apgd-ce", "apgd-ce", "l2", 0.1, steps=2)(m, x, y),
        "per_image_correct": lambda m, x, y: robustness.per_image_correct(m, x, y, []),
    }


@pytest.mark.parametrize("name", sorted(_eval_mode_passes()))
def test_every_submodules_own_mode_is_restored(image_batch, name):
    """model.train(was) after an eval-mode pass would switch a BatchNorm the caller froze back to training,
    and the next training step would move its running statistics (method.md section 3: the attacks leave
    the model's mode as they found it)."""
    model, bn = _frozen_bn_model()
    x, y = image_batch
    _eval_mode_passes()[name](model, x, y)
    assert model.training and not bn.training
    assert sum(not m.training for m in model.modules()) == 1


def test_mode_restored_after_an_error(image_batch):
    model = build_model("smallcnn", 3).train()
    x, y = image_batch

    def bad_loss(logits, target):
        raise RuntimeError("boom")

    frozen = next(model.parameters())
    frozen.requires_grad_(False)  # e.g. the body during two-phase fine-tuning's head-only epochs
    with pytest.raises(RuntimeError, match="boom"):
        perturb(model, x, y, eps=0.1, step_size=0.1, steps=1, loss_fn=bad_loss)
    assert model.training
    assert not frozen.requires_grad and all(p.requires_grad for p in list(model.parameters())[1:])


class _DeclaredCompiled(torch.nn.Module):
    """Stands for training.CompiledNet (compiling would take the test half a minute): says it is compiled."""

    compiled = True

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x):
        return self.model(x)


@pytest.mark.parametrize("compiled", [False, True])
def test_weights_are_frozen_during_the_attack_of_a_compiled_model_only(image_batch, compiled):
    """Only the input's gradient is asked for: a compiled model would otherwise compute the weights' too.
    Eager autograd skips them by itself, and keeping the flags keeps autocast's weight casts cached."""
    inner = build_model("smallcnn", 3).train()
    model = _DeclaredCompiled(inner) if compiled else inner
    x, y = image_batch
    seen = []

    def spy(logits, target):
        seen.append([p.requires_grad for p in inner.parameters()])
        return torch.nn.functional.cross_entropy(logits, target, reduction="none")

    perturb(model, x, y, eps=0.1, step_size=0.05, steps=2, loss_fn=spy)
    assert len(seen) == 2 and all(not any(s) if compiled else all(s) for s in seen)
    assert all(p.requires_grad for p in inner.parameters()) and all(p.grad is None for p in inner.parameters())


def test_eager_attack_under_bf16_autocast_casts_the_weights_once():
    """autocast caches a weight's bf16 copy only while the weight requires grad: more attack steps must
    add the input's casts, not a cast of every weight per step (the training path runs attacks inside
    autocast on a GPU)."""
    from torch.profiler import ProfilerActivity, profile

    model = build_model("resnet34", 3).eval()
    n_weights = sum(1 for m in model.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)))
    x, y = torch.rand(2, 3, 32, 32), torch.tensor([0, 1])

    def casts(steps):
        with profile(activities=[ProfilerActivity.CPU]) as prof, torch.autocast("cpu", dtype=torch.bfloat16):
            perturb(model, x, y, eps=0.5, step_size=0.15, steps=steps, norm="l2")
        return next((e.count for e in prof.key_averages() if e.key == "aten::_to_copy"), 0)

    per_step = (casts(3) - casts(1)) / 2
    assert per_step < n_weights / 2, f"{per_step} casts per attack step for {n_weights} weights"


# --------------------------------------------------------------------------
# torchattacks 3.5.1 cross-check (random start off)
# --------------------------------------------------------------------------


def _torchattacks_pairs(eps_linf, eps_l2):
    ta = pytest.importorskip("torchattacks")
    assert ta.__version__ == "3.5.1"
    return {
        "FGSM": (lambda m: ta.FGSM(m, eps=eps_linf),
                 lambda m, x, y: attacks.fgsm(m, x, y, eps=eps_linf)),
        "BIM": (lambda m: ta.BIM(m, eps=eps_linf, alpha=eps_linf / 4, steps=10),
                lambda m, x, y: attacks.ifgsm(m, x, y, eps=eps_linf, step_size=eps_linf / 4, steps=10)),
        "PGD": (lambda m: ta.PGD(m, eps=eps_linf, alpha=eps_linf / 4, steps=10, random_start=False),
                lambda m, x, y: attacks.pgd(m, x, y, eps=eps_linf, step_size=eps_linf / 4, steps=10,
                                            norm="linf", random_start=False)),
        "PGDL2": (lambda m: ta.PGDL2(m, eps=eps_l2, alpha=0.15, steps=10, random_start=False),
                  lambda m, x, y: attacks.pgd(m, x, y, eps=eps_l2, step_size=0.15, steps=10, norm="l2",
                                              random_start=False)),
    }


@pytest.mark.parametrize("name", ["FGSM", "BIM", "PGD", "PGDL2"])
def test_agrees_with_torchattacks(name):
    torch.manual_seed(0)
    model = build_model("smallcnn", 3).eval()
    g = torch.Generator().manual_seed(2)
    # Full [0, 1], so the box clipping is compared too. A power-of-two batch: torchattacks ascends the
    # mean CE, we ascend the sum; scaling by 1/8 is exact, so both see the same gradient signs.
    x = torch.rand(8, 3, 16, 16, generator=g)
    y = torch.tensor([0, 1, 2, 2, 1, 0, 0, 1])
    make_theirs, ours = _torchattacks_pairs(eps_linf=8 / 255, eps_l2=0.5)[name]
    expected = make_theirs(model)(x, y)
    got = ours(model, x, y)
    assert not torch.equal(got, x)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)


# --------------------------------------------------------------------------
# Argument checks
# --------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(4, 1), (5,), (1, 4)])
def test_bad_eps_shape_names_the_shape(smallcnn, image_batch, shape):
    x, y = image_batch
    with pytest.raises(ValueError, match=re.escape(str(shape))):
        perturb(smallcnn, x, y, eps=torch.full(shape, 0.1), step_size=0.1, steps=1)


def test_scalar_tensor_eps_accepted(smallcnn, image_batch):
    x, y = image_batch
    a = perturb(smallcnn, x, y, eps=torch.tensor(0.03), step_size=0.01, steps=2)
    b = perturb(smallcnn, x, y, eps=0.03, step_size=0.01, steps=2)
    assert torch.equal(a, b)


@pytest.mark.parametrize("eps", [-0.1, float("nan"), torch.tensor([0.1, -0.1, 0.1, 0.1])])
def test_negative_or_nan_eps_raises(smallcnn, image_batch, eps):
    x, y = image_batch
    with pytest.raises(ValueError, match="eps"):
        perturb(smallcnn, x, y, eps=eps, step_size=0.1, steps=1)


def test_unknown_norm_raises(smallcnn, image_batch):
    x, y = image_batch
    with pytest.raises(ValueError, match="unknown norm 'l1'"):
        perturb(smallcnn, x, y, eps=0.1, step_size=0.1, steps=1, norm="l1")
    with pytest.raises(ValueError, match="unknown norm"):
        AttackSpec("X", "l1", 0.1, 0.1, 1, False)


@pytest.mark.parametrize("low, high", [(-0.1, 0.5), (0.5, 1.2), (0.0, 255.0)])
def test_inputs_outside_unit_box_raise(smallcnn, low, high):
    x = torch.linspace(low, high, 4 * 3 * 16 * 16).view(4, 3, 16, 16)
    y = torch.zeros(4, dtype=torch.long)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        perturb(smallcnn, x, y, eps=0.1, step_size=0.1, steps=1)


def test_check_values_false_skips_only_the_value_checks(smallcnn, image_batch):
    """The training methods skip the checks that read values (a device sync each); shapes and names are
    still checked, and a float radius is checked on the host either way."""
    x, y = image_batch
    radii = torch.tensor([0.1, -0.1, 0.1, 0.1])
    with pytest.raises(ValueError, match="eps"):
        perturb(smallcnn, x, y, eps=radii, step_size=0.1, steps=1)
    out = perturb(smallcnn, x, y, eps=radii.abs(), step_size=0.1, steps=1, check_values=False)
    assert torch.equal(out, perturb(smallcnn, x, y, eps=radii.abs(), step_size=0.1, steps=1))
    perturb(smallcnn, x * 1.01, y, eps=0.1, step_size=0.1, steps=1, check_values=False)  # not read
    with pytest.raises(ValueError, match="y must have shape"):
        perturb(smallcnn, x, y[:3], eps=0.1, step_size=0.1, steps=1, check_values=False)
    with pytest.raises(ValueError, match="eps must be finite"):
        perturb(smallcnn, x, y, eps=-0.1, step_size=0.1, steps=1, check_values=False)


def test_bad_label_or_image_shape_raises(smallcnn, image_batch):
    x, y = image_batch
    with pytest.raises(ValueError, match="y must have shape"):
        perturb(smallcnn, x, y[:3], eps=0.1, step_size=0.1, steps=1)
    with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
        perturb(smallcnn, x[0], y, eps=0.1, step_size=0.1, steps=1)


# --------------------------------------------------------------------------
# Attacks as configuration
# --------------------------------------------------------------------------


def test_with_eps_keeps_the_step_ratio():
    spec = AttackSpec("20-PGD", "l2", 0.5, 0.15, 20, True)
    other = spec.with_eps(1.0)
    assert other.eps == 1.0
    assert other.step_size == pytest.approx(0.3)
    assert other.step_size / other.eps == pytest.approx(spec.step_size / spec.eps)
    assert (other.name, other.norm, other.steps, other.random_start) == ("20-PGD", "l2", 20, True)
    assert spec.eps == 0.5  # frozen: the original is unchanged
    fgsm = paper_attacks()[0].with_eps(8 / 255)
    assert fgsm.step_size == pytest.approx(8 / 255)


def test_with_eps_from_zero_radius_uses_step_equal_eps():
    assert AttackSpec("A", "linf", 0.0, 0.0, 1, False).with_eps(0.1).step_size == pytest.approx(0.1)


def test_paper_attacks_are_method_md_section_4():
    specs = paper_attacks()
    assert [s.name for s in specs] == ["FGSM", "10-IFGSM", "20-IFGSM", "20-PGD", "50-PGD"]
    assert [s.norm for s in specs] == ["linf", "linf", "linf", "l2", "l2"]
    assert [s.steps for s in specs] == [1, 10, 20, 20, 50]
    assert [s.random_start for s in specs] == [False, False, False, True, True]
    for s in specs[:3]:
        assert s.eps == pytest.approx(2 / 255)
    assert specs[0].step_size == pytest.approx(2 / 255)  # FGSM: one step of size eps
    assert specs[1].step_size == specs[2].step_size == pytest.approx(2 / 255 / 4)  # I-FGSM: eps / 4
    for s in specs[3:]:
        assert (s.eps, s.step_size) == (pytest.approx(0.5), pytest.approx(0.15))
    custom = paper_attacks(linf_eps=4 / 255, l2_eps=1.0, l2_step=0.3)
    assert custom[0].eps == pytest.approx(4 / 255) and custom[1].step_size == pytest.approx(1 / 255)
    assert (custom[4].eps, custom[4].step_size) == (1.0, 0.3)


def test_training_attack_is_pgd_l2_7_steps():
    spec = training_attack()
    assert (spec.norm, spec.eps, spec.step_size, spec.steps, spec.random_start) == ("l2", 0.5, 0.15, 7, True)
    assert AttackSpec(**spec.to_dict()) == spec


def test_attack_spec_eps_override_runs_per_sample(smallcnn, image_batch):
    x, y = image_batch
    spec = AttackSpec("I-FGSM", "linf", 0.5, 0.01, 3, False)
    eps = torch.tensor([0.0, 0.01, 0.02, 0.03])
    x_adv = spec(smallcnn, x, y, eps=eps)
    assert (distance("linf", x_adv, x) <= eps + 1e-6).all()
    assert torch.equal(x_adv[0], x[0])
