"""Tests for dpaat_lib.methods (method.md section 5).

Each method's loss is recomputed here by hand from the formulas of method.md:
the adversarial examples with :func:`dpaat_lib.attacks.perturb` and a fresh
generator of the method's seed, the cross-entropy and the synchronisation loss
with plain torch operations. The model is in eval mode for both, so forward
passes do not depend on the batch (BatchNorm).
"""
from __future__ import annotations

import math

import pytest
import torch

from dpaat_lib.attacks import AttackSpec, perturb
from dpaat_lib.methods import (AMAT, DPAAT, METHODS, MethodConfig, build_method, radius_summary, sync_loss)
from dpaat_lib.models import build_model

SEED = 7
N_TRAIN = 8
ATTACK = AttackSpec("PGD-3", "l2", 0.5, 0.15, 3, True)  # the training adversary, fewer steps
IDX = torch.tensor([5, 0, 3, 6])


def gen(seed: int = SEED) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def ce(logits, y):
    """Per-sample cross-entropy, by hand."""
    return -torch.log_softmax(logits, 1).gather(1, y.view(-1, 1)).squeeze(1)


def sym_kl(logits, logits_adv):
    """Eq. 11 per sample: sum_k (p_k - p'_k)(log p_k - log p'_k), by hand."""
    p, q = torch.softmax(logits, 1), torch.softmax(logits_adv, 1)
    return ((p - q) * (torch.log(p) - torch.log(q))).sum(1)


def adv(model, x, y, eps, generator, attack=ATTACK):
    return perturb(model, x, y, eps=eps, step_size=attack.step_size, steps=attack.steps, norm=attack.norm,
                   random_start=attack.random_start, generator=generator)


@pytest.fixture
def model():
    torch.manual_seed(0)
    return build_model("smallcnn", 3).eval()


@pytest.fixture
def batch(model):
    """Four images; samples 0 and 1 are labelled as the model predicts, 2 and 3 are not."""
    x = 0.1 + 0.8 * torch.rand(4, 3, 16, 16, generator=gen(1))
    with torch.no_grad():
        pred = model(x).argmax(1)
    y = torch.where(torch.arange(4) < 2, pred, (pred + 1) % 3)
    return x, y


def make(name, threshold=1.0, **cfg):
    config = MethodConfig(name=name, attack=ATTACK, **cfg)
    return build_method(config, N_TRAIN, generator=gen(), threshold=threshold if name == "amat" else None)


def expected_loss(name, model, x, y, idx, method, *, alpha=0.5, lam=1.0):
    """method.md section 5, written out."""
    g = gen()
    with torch.no_grad():
        logits = model(x)
    if name == "std":
        return ce(logits, y).mean()
    if name in ("at", "sat"):
        x_adv = adv(model, x, y, ATTACK.eps, g)
        with torch.no_grad():
            l_adv = ce(model(x_adv), y).mean()
        return l_adv if name == "at" else alpha * ce(logits, y).mean() + (1 - alpha) * l_adv
    if name == "amat":
        correct = logits.argmax(1) == y
        eps = method.eps[idx][correct]
        x_adv = adv(model, x[correct], y[correct], eps, g)
        with torch.no_grad():
            l_adv = ce(model(x_adv), y[correct]).mean()
        return alpha * ce(logits, y).mean() + (1 - alpha) * l_adv
    # DPAAT and its ablations: alpha mean(l) + (1 - alpha) mean(l') + lambda L_sync
    x_adv = adv(model, x, y, method.eps[idx].clone(), g)
    with torch.no_grad():
        logits_adv = model(x_adv)
    lam = 0.0 if name == "d-a" else lam
    return (alpha * ce(logits, y).mean() + (1 - alpha) * ce(logits_adv, y).mean()
            + lam * sym_kl(logits, logits_adv).mean())


# --------------------------------------------------------------------------
# The losses of method.md section 5
# --------------------------------------------------------------------------


@pytest.mark.parametrize("name", METHODS)
def test_loss_matches_method_md(model, batch, name):
    x, y = batch
    method = make(name)
    if isinstance(method, DPAAT):  # unequal radii, so a per-sample mix-up would show
        method.eps = torch.linspace(0.2, 0.9, N_TRAIN)
    expected = expected_loss(name, model, x, y, IDX, method)
    loss, logs = method.loss(model, x, y, IDX)
    assert loss.dim() == 0 and loss.requires_grad
    torch.testing.assert_close(loss.detach(), expected, atol=1e-5, rtol=1e-5)
    assert logs["loss"] == pytest.approx(expected.item(), abs=1e-5)
    assert not model.training


@pytest.mark.parametrize("name", ["sat", "amat", "dpaat", "d-a", "d-b"])
def test_alpha_and_lambda_are_used(model, batch, name):
    x, y = batch
    method = make(name, alpha=0.3, lam=0.7)
    expected = expected_loss(name, model, x, y, IDX, method, alpha=0.3, lam=0.7)
    loss, _ = method.loss(model, x, y, IDX)
    torch.testing.assert_close(loss.detach(), expected, atol=1e-5, rtol=1e-5)


def test_sat_is_half_clean_half_adversarial(model, batch):
    x, y = batch
    with torch.no_grad():
        l = ce(model(x), y).mean()
        l_adv = ce(model(adv(model, x, y, ATTACK.eps, gen())), y).mean()
    loss, _ = make("sat").loss(model, x, y, IDX)
    torch.testing.assert_close(loss.detach(), 0.5 * l + 0.5 * l_adv, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(l, l_adv)  # the two halves differ, so the weights matter


def test_sync_loss_is_symmetric_kl():
    a, b = torch.randn(5, 3, generator=gen(2)), torch.randn(5, 3, generator=gen(3))
    torch.testing.assert_close(sync_loss(a, b), sym_kl(a, b))
    torch.testing.assert_close(sync_loss(a, b), sync_loss(b, a))
    assert (sync_loss(a, b) >= 0).all()
    torch.testing.assert_close(sync_loss(a, a), torch.zeros(5))
    # Gradients flow through both sides.
    a.requires_grad_(True)
    b.requires_grad_(True)
    sync_loss(a, b).sum().backward()
    assert a.grad.abs().sum() > 0 and b.grad.abs().sum() > 0


def test_amat_attacks_only_correct_samples(model, batch):
    x, y = batch
    method = make("amat")
    _, logs = method.loss(model, x, y, IDX)
    assert logs["attacked"] == 2
    assert method.seen[IDX[:2]].all() and not method.seen[IDX[2:]].any()
    assert method.seen.sum() == 2


def test_amat_without_correct_samples_is_half_clean_loss(model, batch):
    x, y = batch
    y = y.clone()
    y[:2] = (y[:2] + 1) % 3  # now every sample is misclassified
    method = make("amat")
    loss, logs = method.loss(model, x, y, IDX)
    with torch.no_grad():
        torch.testing.assert_close(loss.detach(), 0.5 * ce(model(x), y).mean())
    assert logs["attacked"] == 0 and not method.seen.any()


def test_amat_needs_a_threshold():
    with pytest.raises(ValueError, match="threshold"):
        build_method(MethodConfig(name="amat", attack=ATTACK), N_TRAIN)
    assert MethodConfig(name="amat").needs_threshold and not MethodConfig(name="dpaat").needs_threshold


def test_unknown_method_and_options_raise():
    with pytest.raises(ValueError, match="unknown method"):
        MethodConfig(name="trades")
    with pytest.raises(ValueError, match="mu"):
        MethodConfig(name="dpaat", mu="median")
    with pytest.raises(ValueError, match="length"):
        MethodConfig(name="dpaat", length="cubic")


def test_ablations():
    da, db, full = make("d-a", lam=0.7), make("d-b", lam=0.7), make("dpaat", lam=0.7)
    assert da.config.lam == 0.0 and da.adapt
    assert db.config.lam == 0.7 and not db.adapt
    assert full.config.lam == 0.7 and full.adapt


# --------------------------------------------------------------------------
# DPAAT radii, eq. 13-15
# --------------------------------------------------------------------------


def loss_change(model, x, y, eps, generator):
    """dL_i = CE(x'_i) - CE(x_i), by hand."""
    x_adv = adv(model, x, y, eps, generator)
    with torch.no_grad():
        return ce(model(x_adv), y) - ce(model(x), y)


def test_dpaat_radii_follow_eq_15(model, batch):
    x, y = batch
    method = make("dpaat", eta=0.1, eps_max=1.0)
    before = method.eps.clone()
    assert torch.equal(before, torch.full((N_TRAIN,), 0.5))  # eps_i starts at eps0
    dl = loss_change(model, x, y, before[IDX], gen())
    mu = dl.mean()
    method.loss(model, x, y, IDX)
    change = method.eps[IDX] - before[IDX]
    fragile, stable = dl > mu, dl < mu
    assert fragile.any() and stable.any()
    assert (change[fragile] < 0).all(), "relatively fragile samples (dL > mu) shrink"
    assert (change[stable] > 0).all(), "relatively stable samples (dL < mu) grow"
    torch.testing.assert_close(change.abs(), 0.1 * (dl - mu).abs(), atol=1e-6, rtol=1e-5)
    others = torch.ones(N_TRAIN, dtype=torch.bool)
    others[IDX] = False
    assert torch.equal(method.eps[others], before[others]), "samples not in the batch keep their radius"


def test_dpaat_default_eta_is_eps0(model, batch):
    x, y = batch
    method = make("dpaat")
    assert method.eta == ATTACK.eps and method.eps_max == 2 * ATTACK.eps
    dl = loss_change(model, x, y, method.eps[IDX].clone(), gen())
    method.loss(model, x, y, IDX)
    expected = (0.5 - ATTACK.eps * (dl - dl.mean())).clamp(0.0, 1.0)
    torch.testing.assert_close(method.eps[IDX], expected, atol=1e-6, rtol=1e-5)


def test_dpaat_radii_clipped_to_bounds(model, batch):
    x, y = batch
    method = make("dpaat", eta=100.0, eps_min=0.45, eps_max=0.55)
    dl = loss_change(model, x, y, method.eps[IDX].clone(), gen())
    method.loss(model, x, y, IDX)
    new = method.eps[IDX]
    torch.testing.assert_close(new, (0.5 - 100.0 * (dl - dl.mean())).clamp(0.45, 0.55))
    assert (new >= 0.45).all() and (new <= 0.55).all()
    assert (new == 0.45).any() and (new == 0.55).any(), "a step of eta=100 overshoots both bounds"


def test_dpaat_normalized_length(model, batch):
    x, y = batch
    method = make("dpaat", length="normalized", gamma=0.4, eps_max=2.0)
    dl = loss_change(model, x, y, method.eps[IDX].clone(), gen())
    dev = dl - dl.mean()
    method.loss(model, x, y, IDX)
    change = method.eps[IDX] - 0.5
    torch.testing.assert_close(change, -0.4 * 0.5 * dev / dev.abs().max(), atol=1e-6, rtol=1e-5)
    assert change.abs().max() == pytest.approx(0.4 * 0.5, abs=1e-6)  # gamma * eps0 for the farthest


def test_dpaat_mu_epoch_uses_previous_epoch_mean(model):
    x = 0.1 + 0.8 * torch.rand(8, 3, 16, 16, generator=gen(4))
    y = torch.tensor([0, 1, 2, 0, 1, 2, 0, 1])
    first, second = torch.arange(4), torch.arange(4, 8)
    eta = 10.0  # large, so the two criteria of mu lead to clearly different radii
    method = make("dpaat", mu="epoch", eta=eta, eps_max=100.0)
    hand = gen()
    # Epoch 1: no previous epoch yet, so mu is the batch mean.
    dl1 = loss_change(model, x[first], y[first], torch.full((4,), 0.5), hand)
    dl2 = loss_change(model, x[second], y[second], torch.full((4,), 0.5), hand)
    method.loss(model, x[first], y[first], first)
    method.loss(model, x[second], y[second], second)
    torch.testing.assert_close(method.eps[first], 0.5 - eta * (dl1 - dl1.mean()), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(method.eps[second], 0.5 - eta * (dl2 - dl2.mean()), atol=1e-5, rtol=1e-5)
    logs = method.end_epoch()
    epoch_mu = torch.cat([dl1, dl2]).mean().item()
    assert method.prev_epoch_mu == pytest.approx(epoch_mu, abs=1e-6)
    assert logs["epoch_mu"] == pytest.approx(epoch_mu, abs=1e-6)
    # Epoch 2: mu is the mean loss change of epoch 1, not the batch mean.
    before = method.eps.clone()
    dl3 = loss_change(model, x[first], y[first], before[first], hand)
    method.loss(model, x[first], y[first], first)
    expected = before[first] - eta * (dl3 - epoch_mu)
    torch.testing.assert_close(method.eps[first], expected, atol=1e-5, rtol=1e-5)
    with_batch_mu = before[first] - eta * (dl3 - dl3.mean())
    assert (expected - with_batch_mu).abs().max() > 1e-4  # the two criteria differ on this batch


def test_dpaat_mu_batch_ignores_previous_epoch(model, batch):
    x, y = batch
    method = make("dpaat", eta=0.1)
    hand = gen()
    loss_change(model, x, y, method.eps[IDX].clone(), hand)  # replays the first call's random start
    method.loss(model, x, y, IDX)
    method.end_epoch()
    before = method.eps.clone()
    dl = loss_change(model, x, y, before[IDX], hand)
    method.loss(model, x, y, IDX)
    torch.testing.assert_close(method.eps[IDX], (before[IDX] - 0.1 * (dl - dl.mean())).clamp(0, 1.0),
                               atol=1e-6, rtol=1e-5)


def test_d_b_keeps_radii_fixed(model, batch):
    x, y = batch
    method = make("d-b")
    for _ in range(2):
        method.loss(model, x, y, IDX)
        method.end_epoch()
    assert torch.equal(method.eps, torch.full((N_TRAIN,), ATTACK.eps))


def test_d_a_adapts_radii(model, batch):
    x, y = batch
    method = make("d-a")
    method.loss(model, x, y, IDX)
    assert not torch.equal(method.eps[IDX], torch.full((4,), ATTACK.eps))


# --------------------------------------------------------------------------
# An image drawn twice in one batch (the balanced sampler draws with replacement)
# --------------------------------------------------------------------------


class WriteLog(torch.Tensor):
    """A table that records every ``table[key] = value`` (key and value), then writes it."""

    writes: list = []

    def __setitem__(self, key, value):
        WriteLog.writes.append((torch.as_tensor(key).clone(), torch.as_tensor(value).clone()))
        super().__setitem__(key, value)


def logged(t: torch.Tensor) -> torch.Tensor:
    return t.clone().as_subclass(WriteLog)


def test_last_visit():
    method = make("dpaat")
    i = torch.tensor([3, 1, 3, 0, 1, 3])
    assert method.last_visit(i).tolist() == [5, 4, 5, 3, 4, 5]
    assert method.last_visit(IDX).tolist() == [0, 1, 2, 3], "no repeat: every position is its own last visit"


@pytest.mark.parametrize("name", ["dpaat", "amat"])
def test_repeated_index_keeps_its_last_visit_in_any_write_order(model, batch, name):
    """Every occurrence of a repeated index writes the same value (so the order of the writes, undefined
    on a GPU, cannot matter), and that value is what the last visit measured."""
    x, y = batch
    idx = torch.tensor([5, 5, 3, 5]) if name == "dpaat" else torch.tensor([5, 5, 3, 6])  # AMAT: 0, 1 correct
    method = make(name, eta=0.1, threshold=math.inf)
    tables = ("eps",) if name == "dpaat" else ("seen", "nonfinite", "adv_loss", "adv_dist")
    for t in tables:
        setattr(method, t, logged(getattr(method, t)))
    WriteLog.writes.clear()
    if name == "dpaat":
        dl = loss_change(model, x, y, method.eps[idx].clone().as_subclass(torch.Tensor), gen())
        method.loss(model, x, y, idx)
        assert method.eps[5].item() == pytest.approx(0.5 - 0.1 * (dl[3] - dl.mean()).item(), abs=1e-6)
    else:
        correct, l_adv, dist = _amat_hand(model, x, y, method.eps[idx].as_subclass(torch.Tensor))
        method.loss(model, x, y, idx)
        assert correct.tolist() == [True, True, False, False] and l_adv[0] != l_adv[1]
        assert method.adv_loss[5].item() == pytest.approx(l_adv[1].item(), abs=1e-5)
        assert method.adv_dist[5].item() == pytest.approx(dist[1].item(), abs=1e-5)
    assert len(WriteLog.writes) == len(tables)
    for key, value in WriteLog.writes:
        assert key.unique().numel() < key.numel(), "the batch repeats an index"
        for j in key.unique():
            assert value[key == j].unique().numel() == 1, f"index {int(j)} is written with different values"


# --------------------------------------------------------------------------
# AMAT radii
# --------------------------------------------------------------------------


def _amat_hand(model, x, y, eps):
    """CE(x') and ||x' - x|| of the correctly classified samples, by hand."""
    with torch.no_grad():
        correct = model(x).argmax(1) == y
    x_adv = adv(model, x[correct], y[correct], eps[correct], gen())
    with torch.no_grad():
        l_adv = ce(model(x_adv), y[correct])
    return correct, l_adv, (x_adv - x[correct]).flatten(1).norm(dim=1)


def test_amat_starts_at_delta():
    method = make("amat")
    assert method.delta == pytest.approx(ATTACK.eps / 10)
    assert torch.equal(method.eps, torch.full((N_TRAIN,), ATTACK.eps / 10))
    assert method.eps_max == 2 * ATTACK.eps


def test_amat_end_epoch_grows_or_halves(model, batch):
    x, y = batch
    delta = ATTACK.eps / 10
    # Radii of 0.9 that 3 steps of 0.15 cannot fill: ||x' - x|| < eps_i, so "half-way" is visible.
    start = torch.full((N_TRAIN,), 0.9)
    correct, l_adv, dist = _amat_hand(model, x, y, start[IDX])
    assert correct.tolist() == [True, True, False, False]
    assert l_adv[0] != l_adv[1] and (dist < 0.85).all()
    threshold = l_adv.mean().item()  # one attacked sample below T, the other above
    method = make("amat", threshold=threshold)
    method.eps = start.clone()
    method.loss(model, x, y, IDX)
    logs = method.end_epoch()
    grow = l_adv <= threshold
    for j in range(2):
        i = IDX[j]
        if grow[j]:
            assert method.eps[i].item() == pytest.approx(0.9 + delta)
        else:
            assert method.eps[i].item() == pytest.approx((0.9 + dist[j].item()) / 2, abs=1e-6)
    assert torch.equal(method.eps[IDX[2:]], start[IDX[2:]]), "misclassified samples keep their radius"
    others = torch.ones(N_TRAIN, dtype=torch.bool)
    others[IDX] = False
    assert torch.equal(method.eps[others], start[others])
    assert (logs["grown"], logs["shrunk"]) == (1, 1)
    assert not method.seen.any(), "end_epoch starts the next epoch afresh"
    # Nothing seen in the next epoch: nothing moves.
    after = method.eps.clone()
    method.end_epoch()
    assert torch.equal(method.eps, after)


def test_amat_halves_towards_the_distance_in_its_attacks_norm(model, batch):
    """Under an Linf training attack the radius moves half-way to the Linf distance ||x' - x||_inf, which the
    radius bounds; an L2 distance (about sqrt(C H W) times larger) would grow a radius meant to shrink."""
    x, y = batch
    linf = AttackSpec("PGD-Linf-3", "linf", 8 / 255, 2 / 255, 3, True)
    start = 0.02
    # -inf: no CE(x') is at or below it, so every attacked (correctly classified) sample shrinks.
    method = build_method(MethodConfig(name="amat", attack=linf), N_TRAIN, generator=gen(), threshold=-math.inf)
    method.eps = torch.full((N_TRAIN,), start)
    method.loss(model, x, y, IDX)
    dist = method.adv_dist[IDX[:2]].clone()
    assert (dist > 0).all() and (dist <= start + 1e-6).all(), "the recorded distance is the Linf one"
    method.end_epoch()
    torch.testing.assert_close(method.eps[IDX[:2]], (start + dist) / 2)
    assert (method.eps[IDX[:2]] <= start + 1e-6).all(), "a radius meant to shrink did not grow"


@pytest.mark.parametrize("visits, grown", [([[5, 0, 3, 6], [1, 2, 5, 4]], {0, 1, 2}),  # 5 correct, then not
                                           ([[5, 0, 5, 6]], {0})])                      # ... in one batch
def test_amat_image_misclassified_at_its_last_visit_keeps_its_radius(model, batch, visits, grown):
    """The balanced sampler draws an image several times per epoch: what counts at the epoch's end is its last
    visit, and an image misclassified there keeps its radius (method.md), whatever an earlier visit measured.
    In ``batch`` positions 0 and 1 are classified correctly, 2 and 3 not."""
    x, y = batch
    method = make("amat", threshold=math.inf)  # every attacked image would grow
    start = method.eps.clone()
    for idx in visits:
        method.loss(model, x, y, torch.tensor(idx))
    logs = method.end_epoch()
    assert method.eps[5].item() == start[5].item(), "image 5's last visit was misclassified"
    assert logs["grown"] == len(grown) and logs["shrunk"] == 0  # the images whose last visit was correct
    assert [i for i in range(N_TRAIN) if method.eps[i] > start[i]] == sorted(grown)


def test_amat_radii_clipped_to_eps_max(model, batch):
    x, y = batch
    method = make("amat", threshold=math.inf)  # every attacked sample grows
    method.eps.fill_(2 * ATTACK.eps - 0.01)
    method.loss(model, x, y, IDX)
    method.end_epoch()
    assert torch.allclose(method.eps[IDX[:2]], torch.full((2,), 2 * ATTACK.eps))  # capped at 2 eps0
    assert (method.eps <= 2 * ATTACK.eps).all()
    assert method.eps[IDX[2]] == pytest.approx(2 * ATTACK.eps - 0.01)


def test_amat_uses_each_samples_radius(model, batch):
    x, y = batch
    method = make("amat")
    method.eps = torch.linspace(0.05, 0.4, N_TRAIN)
    correct, l_adv, dist = _amat_hand(model, x, y, method.eps[IDX])
    method.loss(model, x, y, IDX)
    torch.testing.assert_close(method.adv_loss[IDX[correct]], l_adv, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(method.adv_dist[IDX[correct]], dist, atol=1e-5, rtol=1e-5)
    assert (method.adv_dist[IDX[correct]] <= method.eps[IDX[correct]] + 1e-5).all()


# --------------------------------------------------------------------------
# Gradients, state
# --------------------------------------------------------------------------


@pytest.mark.parametrize("name", METHODS)
def test_every_parameter_gets_a_gradient(batch, name):
    torch.manual_seed(0)
    net = build_model("smallcnn", 3).train()  # training mode, as in the training loop
    x, y = batch
    loss, logs = make(name).loss(net, x, y, IDX)
    assert net.training, "the attack must hand the model back in train mode"
    assert torch.isfinite(loss)
    loss.backward()
    missing = [k for k, p in net.named_parameters() if p.grad is None]
    assert not missing, missing
    assert all(torch.isfinite(p.grad).all() for p in net.parameters())
    assert sum(p.grad.abs().sum() for p in net.parameters()) > 0
    # Batch logs stay on the device (the loop reads them once per epoch): 0-dim, detached, finite.
    assert all(isinstance(v, torch.Tensor) and v.dim() == 0 and not v.requires_grad and math.isfinite(float(v))
               for v in logs.values()), logs


@pytest.mark.parametrize("name", METHODS)
def test_state_dict_round_trip(tmp_path, model, batch, name):
    x, y = batch
    method = make(name, threshold=0.8)
    method.loss(model, x, y, IDX)
    method.end_epoch()
    method.loss(model, x, y, IDX)  # mid-epoch state too (AMAT's seen flags)
    state = method.state_dict()
    # It survives a checkpoint file loaded with weights_only=True.
    torch.save(state, tmp_path / "m.pt")
    state = torch.load(tmp_path / "m.pt", weights_only=True)
    copy = make(name, threshold=0.1)
    copy.load_state_dict(state)
    assert_states_equal(copy.state_dict(), method.state_dict())
    if method.radii() is not None:
        assert torch.equal(copy.radii(), method.radii())
        kept = method.eps.clone()
        method.eps += 1.0  # the copy owns its tensors
        assert not torch.equal(copy.radii(), method.radii())
        method.eps = kept
    if name == "amat":
        assert copy.threshold == 0.8
    # From here both continue identically.
    copy.generator = torch.Generator().manual_seed(11)
    method.generator = torch.Generator().manual_seed(11)
    a, _ = method.loss(model, x, y, IDX)
    b, _ = copy.loss(model, x, y, IDX)
    torch.testing.assert_close(a, b, atol=0, rtol=0)
    assert_states_equal(copy.end_epoch(), method.end_epoch())
    assert_states_equal(copy.state_dict(), method.state_dict())


def assert_states_equal(a: dict, b: dict):
    assert a.keys() == b.keys()
    for k in a:
        if isinstance(a[k], torch.Tensor):
            assert torch.equal(a[k], b[k]), k
        else:
            assert a[k] == b[k], k


def test_dpaat_epoch_mu_survives_state_dict(model, batch):
    x, y = batch
    method = make("dpaat", mu="epoch")
    method.loss(model, x, y, IDX)
    method.end_epoch()
    copy = make("dpaat", mu="epoch")
    copy.load_state_dict(method.state_dict())
    assert copy.prev_epoch_mu is not None and copy.prev_epoch_mu == method.prev_epoch_mu


def test_radius_summary():
    r = torch.tensor([0.0, 0.25, 0.5, 0.75, 1.0])
    s = radius_summary(r, eps_max=1.0, bins=4)
    assert s["radius_mean"] == pytest.approx(0.5)
    assert (s["radius_min"], s["radius_max"]) == (0.0, 1.0)
    assert sum(s["radius_hist"]) == 5 and len(s["radius_hist"]) == 4
    assert s["radius_quantiles"][2] == pytest.approx(0.5)


def test_methods_without_radii():
    for name in ("std", "at", "sat"):
        m = make(name)
        assert m.radii() is None and m.state_dict() == {} and m.end_epoch() == {}
    assert isinstance(make("amat"), AMAT)


# --------------------------------------------------------------------------
# CUDA-graph safety (dpaat_lib.training.CapturedStep)
# --------------------------------------------------------------------------


def python_state(method) -> dict:
    """What a CUDA graph's replay would leave as it is: every attribute of ``method``, a tensor by its
    identity and storage, anything else by value (the generator's draws are the graph's to advance)."""
    return {k: (id(v), v.data_ptr(), v.dtype, tuple(v.shape)) if isinstance(v, torch.Tensor) else v
            for k, v in vars(method).items() if k != "generator"}


@pytest.mark.parametrize("name", METHODS)
def test_graph_safe_methods_keep_their_state_in_place(model, batch, name):
    """A replayed step runs the captured kernels and none of the Python: a method that counts in a Python
    number, or rebinds a tensor attribute, would keep the capture's value for every later batch. Those
    marked graph_safe change their tensors' values only (and the tables do change); AMAT reads its
    sub-batch's size on the host every batch, so it is not marked."""
    x, y = batch
    method = build_method(MethodConfig(name=name, attack=ATTACK, mu="epoch"), N_TRAIN, generator=gen(),
                          threshold=1.0 if name == "amat" else None, check_values=False)
    assert method.graph_safe == (name != "amat")
    if not method.graph_safe:
        return
    before = python_state(method)
    radii = None if method.radii() is None else method.radii().clone()
    for _ in range(2):
        method.loss(model, x, y, IDX)
    assert python_state(method) == before
    if name in ("dpaat", "d-a"):
        assert not torch.equal(method.radii(), radii)
    method.end_epoch()  # mu="epoch": the next batches read the previous epoch's mean from a tensor
    before = python_state(method)
    method.loss(model, x, y, IDX)
    assert python_state(method) == before


def test_dpaat_epoch_statistics_add_up_in_place(model, batch):
    """The epoch's mean dL (its log, and mu="epoch") sums every batch of the epoch, in tensors a captured
    step adds to (and the epoch's end zeroes in place)."""
    x, y = batch
    method = make("dpaat")
    batch_means = [float(method.loss(model, x, y, IDX)[1]["dL_mean"]) for _ in range(2)]
    mu = method.end_epoch()["epoch_mu"]
    assert mu == pytest.approx(sum(batch_means) / 2, abs=1e-6)
    assert float(method._prev_mu) == pytest.approx(mu, abs=1e-6) and bool(method._has_prev_mu)
    assert float(method._dl_sum) == 0 and int(method._dl_n) == 0


@pytest.mark.parametrize("name", ["dpaat", "amat"])
def test_radii_are_a_copy_of_the_methods_table(name):
    """A caller keeping radii() per epoch keeps each epoch's values, and cannot change the training by writing
    into them."""
    method = build_method(MethodConfig(name), 4, threshold=0.5)
    first = method.radii()
    first.fill_(7.0)
    assert not torch.equal(method.radii(), first) and float(method.radii().max()) < 7.0
    before = method.radii()
    method.eps += 0.1  # as an epoch's update does, in place
    assert not torch.equal(method.radii(), before)


def _one_correct(model, x, classes=3):
    """Labels under which exactly the first of ``x`` is classified correctly by ``model`` in train mode."""
    with torch.no_grad():
        pred = model(x).argmax(1)
    y = (pred + 1) % classes
    y[0] = pred[0]
    return y


def test_amat_attacks_a_sub_batch_of_one_image_where_batchnorm_sees_a_1x1_map():
    """ResNet18 at 32 px: layer4's BatchNorm sees 1x1 maps, so one image alone in train mode has one value
    per channel, which BatchNorm refuses; AMAT attacks only the correctly classified images."""
    torch.manual_seed(0)
    model = build_model("resnet18", 3).train()
    x = torch.rand(8, 3, 32, 32)
    y = _one_correct(model, x)
    method = build_method(MethodConfig("amat"), 8, threshold=1.0)
    loss, logs = method.loss(model, x, y, torch.arange(8))
    assert int(logs["attacked"]) == 1 and torch.isfinite(loss)
    loss.backward()
    method.end_epoch()
    assert float(method.radii()[0]) != method.config.eps0 / 10  # the attacked image's radius moved
    assert torch.equal(method.radii()[1:], torch.full((7,), method.config.eps0 / 10))


class _WithAuxLogits(torch.nn.Module):
    """Returns (logits, aux) in train mode, as torchvision's InceptionV3 with aux_logits=True does."""

    def __init__(self):
        super().__init__()
        self.net = build_model("smallcnn", 3)

    def forward(self, x):
        out = self.net(x)
        return (out, out) if self.training else out


@pytest.mark.parametrize("name", METHODS)
def test_a_model_returning_auxiliary_logits_is_named_with_the_fix(name):
    method = build_method(MethodConfig(name), 4, threshold=1.0)
    x, y = torch.rand(4, 3, 16, 16), torch.tensor([0, 1, 2, 0])
    with pytest.raises(TypeError, match=r"returned a tuple, not a tensor of logits.*aux_logits=False"):
        method.loss(_WithAuxLogits().train(), x, y, torch.arange(4))
