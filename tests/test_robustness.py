"""Tests for dpaat_lib.robustness: the stronger evaluation and the gradient-masking checks (method.md section 7).

A small CNN is trained for 100 Adam steps on a toy problem that it learns
perfectly: 16 px noise images whose class raises the mean of one colour
channel by 0.2. Every strong attack must lower its accuracy while staying in
its eps-ball and [0, 1]. The masking checks must pass on it and flag the same
network behind an input quantiser (x -> round(7x)/7, eight grey levels): its
gradient is zero almost everywhere, so gradient attacks get nowhere while the
black-box Square attack does, and PGD cannot bring accuracy to zero even at
eps = 0.3. The radii of these tests (Linf 0.08, L2 3.0) are larger than the
paper's because the toy classes are far apart. Everything is seeded.
"""
from __future__ import annotations

import dataclasses

import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from dpaat_lib import experiment, profiles, robustness, store
from dpaat_lib.models import Normalized, SmallCNN
from dpaat_lib.robustness import StrongAttack, per_image_correct, strong_suite, worst_case

EPS = {"linf": 0.08, "l2": 3.0}
FAST = dict(steps=(5, 10, 20), restarts=(1, 2), pgd_steps=10, square_queries=300)


def toy_images(n_per_class: int, seed: int, size: int = 16, delta: float = 0.2):
    """Grey noise images; class k adds ``delta`` to channel k; a random brightness per channel as nuisance."""
    g = torch.Generator().manual_seed(seed)
    n = 3 * n_per_class
    y = torch.arange(n) % 3
    x = 0.5 + 0.15 * (2 * torch.rand(n, 3, size, size, generator=g) - 1)
    x = x + 0.1 * (2 * torch.rand(n, 3, 1, 1, generator=g) - 1)
    x[torch.arange(n), y] += delta
    return x.clamp(0, 1), y


class Quantised(nn.Module):
    """``net(round(7x) / 7)``: eight input levels, zero gradient almost everywhere (masks gradients)."""

    def __init__(self, net: nn.Module, levels: int = 8):
        super().__init__()
        self.net, self.k = net, levels - 1

    def forward(self, x):
        return self.net(torch.round(x * self.k) / self.k)


@pytest.fixture(scope="module")
def toy_model():
    torch.manual_seed(0)
    model = Normalized(SmallCNN(3, width=8))
    x, y = toy_images(64, seed=0)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(0)
    model.train()
    for _ in range(100):
        idx = torch.randint(0, len(y), (32,), generator=g)
        loss = F.cross_entropy(model(x[idx]), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


@pytest.fixture(scope="module")
def toy_test():
    return toy_images(8, seed=1)


def accuracy(model, x, y) -> float:
    with torch.no_grad():
        return (model(x).argmax(1) == y).float().mean().item()


# --------------------------------------------------------------------------
# The attacks
# --------------------------------------------------------------------------

SUITE = strong_suite(EPS["linf"], EPS["l2"], apgd_steps=10, square_queries=200) + (
    robustness.pgd_attack("linf", EPS["linf"], steps=10, restarts=2),
    robustness.pgd_attack("l2", EPS["l2"], steps=10, restarts=2))


def test_suite_names_and_kinds():
    suite = strong_suite()
    assert [a.name for a in suite] == ["APGD-CE-Linf", "APGD-DLR-Linf", "Square-Linf",
                                       "APGD-CE-L2", "APGD-DLR-L2", "Square-L2"]
    assert {a.eps for a in suite if a.norm == "linf"} == {2 / 255} and {a.eps for a in suite if a.norm == "l2"} == {0.5}
    assert [a.steps for a in suite] == [100, 100, 1000] * 2
    assert [a.white_box for a in suite] == [True, True, False] * 2
    assert [a.name for a in strong_suite(norms=("l2",))] == ["APGD-CE-L2", "APGD-DLR-L2", "Square-L2"]


@pytest.mark.parametrize("attack", SUITE, ids=[a.name for a in SUITE])
def test_strong_attack_lowers_accuracy_inside_the_ball(toy_model, toy_test, attack):
    x, y = toy_test
    x_before = x.clone()
    rng = torch.get_rng_state()
    toy_model.train()  # the attack must run in eval mode and give train mode back
    x_adv = attack(toy_model, x, y)
    assert toy_model.training
    toy_model.eval()
    assert torch.equal(x, x_before), "inputs modified"
    assert torch.equal(torch.get_rng_state(), rng), "global random state changed (torchattacks seeds it)"
    d = robustness.distance(attack.norm, x_adv, x)
    assert d.max() <= attack.eps + 1e-5
    assert x_adv.min() >= 0 and x_adv.max() <= 1
    clean = accuracy(toy_model, x, y)
    assert clean == 1.0
    assert accuracy(toy_model, x_adv, y) <= clean - 0.25, attack.name
    # Seeded: the same call gives the same images.
    assert torch.equal(attack(toy_model, x, y), x_adv)


def test_results_outside_the_ball_are_projected_and_checked(monkeypatch, toy_model, toy_test):
    x, y = toy_test
    for norm in ("linf", "l2"):
        far = x + 3.0 * torch.randn(x.shape, generator=torch.Generator().manual_seed(0))
        with pytest.raises(AssertionError, match="left"):
            robustness.check_adversarial(norm, far, x, EPS[norm])
        back = robustness.project(norm, far, x, EPS[norm])
        robustness.check_adversarial(norm, back, x, EPS[norm])
        assert robustness.distance(norm, back, x).max() <= EPS[norm] + 1e-6
    # Whatever the third-party attack returns is projected before anyone counts it.
    monkeypatch.setattr(StrongAttack, "_run", lambda self, model, xb, yb: xb + 0.5)
    for attack in strong_suite(EPS["linf"], EPS["l2"], apgd_steps=2, square_queries=2):
        out = attack(toy_model, x, y)
        assert robustness.distance(attack.norm, out, x).max() <= attack.eps + 1e-5
        assert out.min() >= 0 and out.max() <= 1


def test_zero_eps_is_identity_and_bad_arguments_fail(toy_model, toy_test):
    x, y = toy_test
    a = StrongAttack("APGD-CE-Linf", "apgd-ce", "linf", 0.0, steps=3)
    assert torch.equal(a(toy_model, x, y), x)
    with pytest.raises(ValueError, match="kind"):
        StrongAttack("x", "fab", "linf", 0.1)
    with pytest.raises(ValueError, match="norm"):
        StrongAttack("x", "square", "l1", 0.1)
    with pytest.raises(ValueError, match="step_size"):
        StrongAttack("x", "apgd-ce", "linf", 0.1, step_size=0.01)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        a.with_eps(0.1)(toy_model, x * 2, y)
    two_class = nn.Sequential(nn.Flatten(), nn.Linear(3 * 16 * 16, 2)).eval()
    with pytest.raises(ValueError, match="3 classes"):
        StrongAttack("d", "apgd-dlr", "linf", 0.1, steps=2)(two_class, x, y % 2)


def square_benchmark():
    """benchmarks/square_overhead.py as a module (its probe, its attack and its operation counter)."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "square_overhead.py"
    spec = importlib.util.spec_from_file_location("square_overhead", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    return bench


@pytest.mark.parametrize("norm,eps", [("linf", 0.03), ("l2", 0.6)])
def test_our_square_gives_torchattacks_images_bit_for_bit_with_fewer_operations(toy_model, toy_test, norm, eps):
    """robustness.square_class() keeps the L2 window pattern per size and draws the window's corners on the
    host: its adversarial images must be torchattacks' own, bit for bit, over enough queries that the
    window shrinks through several sizes (resc_schedule) and a part of the images stays unbroken."""
    import torchattacks

    x, y = toy_test
    kw = dict(norm=robustness._TA_NORM[norm], eps=eps, n_queries=120, n_restarts=1, p_init=0.8, loss="margin",
              resc_schedule=True, seed=3)
    images, searched, counts = [], [], []
    for cls in (torchattacks.Square, robustness.square_class()):
        with torch.random.fork_rng(), square_benchmark().DispatchCount() as count:
            images.append(cls(toy_model, **kw)(x, y))
        counts.append(count.n)
        with torch.random.fork_rng():  # every image's best point of the search, fooled or not
            square = cls(toy_model, **kw)
            square.init_hyperparam(x)
            torch.manual_seed(kw["seed"])
            searched.append(square.attack_single_run(x, y))
    ours, theirs = images[1], images[0]
    assert torch.equal(ours, theirs)
    assert 0 < accuracy(toy_model, ours, y) < accuracy(toy_model, x, y)  # the attack ran and was not trivial
    for a, b in zip(*searched):  # the number of queries and the best image of each image
        assert torch.equal(a, b)
    # On a CPU the corners' copies to the device and back are no operations, so Linf dispatches as many;
    # L2 no longer rebuilds its window pattern (a fifth of its operations at 16 px, most of them at 224 px:
    # benchmarks/square_overhead.py).
    assert counts[1] <= counts[0]
    if norm == "l2":
        assert counts[1] < 0.8 * counts[0], counts


def test_square_benchmark_counts_fewer_operations_and_finds_the_same_images(capsys):
    bench = square_benchmark()
    # Its probe model is never fooled at the paper's radii, so every image stays in the search throughout.
    x, y = bench.images(6, 32)
    for norm in bench.EPS:
        x_best = bench.attack(robustness.square_class(), bench.MeanColour(), x, y, norm, 20)
        assert accuracy(bench.MeanColour(), x_best, y) == 1.0 and (x_best != x).any(dim=(1, 2, 3)).all()
    assert bench.main(["--size", "32", "--images", "6", "--queries", "20", "--repeats", "1"]) == 0
    rows = [line.split() for line in capsys.readouterr().out.splitlines()[2:]]
    assert [r[:2] for r in rows] == [["linf", "torchattacks"], ["linf", "ours"], ["l2", "torchattacks"],
                                     ["l2", "ours"]]
    assert all(r[-1] == "yes" for r in rows)
    assert int(rows[3][2]) < int(rows[2][2])


# --------------------------------------------------------------------------
# Per-image correctness and the worst case
# --------------------------------------------------------------------------


def test_worst_case_is_the_and_of_the_columns():
    frame = pd.DataFrame({"clean": [True, True, True, False], "A": [True, False, True, True],
                          "B": [True, True, False, True]})
    assert worst_case(frame).tolist() == [True, False, False, False]
    assert worst_case(frame, ["clean", "B"]).tolist() == [True, True, False, False]
    assert worst_case(frame, ["A"]).tolist() == frame["A"].tolist()
    with pytest.raises(KeyError):
        worst_case(frame, ["C"])
    with pytest.raises(ValueError):
        worst_case(frame, [])


def test_per_image_correct_columns_and_batches(toy_model, toy_test):
    x, y = toy_test
    attacks = [robustness.pgd_attack("linf", EPS["linf"], steps=3), StrongAttack("Square-Linf", "square", "linf",
                                                                                   EPS["linf"], 20)]
    frame = per_image_correct(toy_model, x, y, attacks, batch_size=7)
    assert list(frame.columns) == ["clean", "PGD-3-Linf", "Square-Linf"]
    assert frame.index.name == "image" and len(frame) == len(y)
    assert all(frame[c].dtype == bool for c in frame.columns)
    with torch.no_grad():
        assert frame["clean"].tolist() == (toy_model(x).argmax(1) == y).tolist()
    # uint8 images, as stored, give the same clean column.
    x8 = (x * 255).round().to(torch.uint8)
    frame8 = per_image_correct(toy_model, x8, y, [])
    with torch.no_grad():
        assert frame8["clean"].tolist() == (toy_model(x8.float() / 255).argmax(1) == y).tolist()
    with pytest.raises(ValueError, match="unique"):
        per_image_correct(toy_model, x, y, [attacks[0], attacks[0]])


def test_balanced_subset_is_deterministic_and_balanced():
    y = torch.tensor([0, 1, 2, 0, 0, 1, 2, 1, 2, 0, 2, 1])
    idx = robustness.balanced_subset(y, 7)
    assert idx.tolist() == sorted(idx.tolist())
    assert torch.bincount(y[idx], minlength=3).tolist() == [3, 2, 2]
    assert idx.tolist() == [0, 1, 2, 3, 4, 5, 6]
    assert torch.equal(robustness.balanced_subset(y, 7), idx)
    assert robustness.balanced_subset(y, None).tolist() == list(range(12))
    with pytest.raises(ValueError, match="fewer"):
        robustness.balanced_subset(torch.tensor([0, 0, 0, 0, 1]), 4)  # two of class 1 asked, one there


# --------------------------------------------------------------------------
# Gradient-masking checks
# --------------------------------------------------------------------------


class FoolFirst:
    """A fake attack that misclassifies the first ``k`` images (replaces them with an image of another class)."""

    def __init__(self, k: int):
        self.k, self.name = k, f"fool-{k}"

    def __call__(self, model, x, y):
        out = x.clone()
        out[:self.k] = x[(torch.arange(len(y)) + 1)[:self.k] % len(y)]  # neighbour: another class
        return out


def test_check_logic_on_hand_made_numbers(toy_model, toy_test):
    x, y = toy_test
    falling = robustness.check_more_steps(toy_model, x, y, lambda s: FoolFirst(s), steps=(2, 6, 12))
    assert falling["passed"] and falling["detail"]["correct"] == [22, 18, 12]
    assert not falling["detail"]["converged"]
    rising = robustness.check_more_steps(toy_model, x, y, lambda s: FoolFirst(12 // s), steps=(1, 2, 4))
    assert not rising["passed"] and rising["detail"]["correct"] == [12, 18, 21]
    one_image = robustness.check_restarts(toy_model, x, y, lambda r: FoolFirst(5 - r), restarts=(1, 2))
    assert one_image["passed"], "a rise of one image is within the tolerance"
    assert robustness.check_blackbox_not_stronger(0.5, 0.5, n_images=10)["passed"]
    assert robustness.check_blackbox_not_stronger(0.5, 0.4, n_images=10)["passed"]  # one image
    assert not robustness.check_blackbox_not_stronger(0.5, 0.3, n_images=10)["passed"]
    stays = robustness.check_eps_to_zero(toy_model, x, y, "linf", (0.0, 0.1, 0.2),
                                         attack_factory=lambda e: FoolFirst(int(e * 50)))
    assert stays["detail"]["correct"] == [24, 19, 14] and stays["detail"]["monotone"] and not stays["passed"]


def _by(report, check, norm):
    (r,) = [r for r in report if r["check"] == check and r["detail"]["norm"] == norm]
    return r


def test_masking_checks_pass_for_a_normal_model(toy_model, toy_test):
    x, y = toy_test
    report = robustness.masking_report(toy_model, x, y, eps=EPS, **FAST)
    assert [r["check"] for r in report] == ["more_steps", "restarts", "eps_to_zero", "blackbox_not_stronger"] * 2
    failed = [(r["check"], r["detail"]) for r in report if not r["passed"]]
    assert not failed, failed
    for norm in ("linf", "l2"):
        eps_check = _by(report, "eps_to_zero", norm)["detail"]
        assert eps_check["correct"][0] == len(y) and eps_check["correct"][-1] == 0
        assert _by(report, "blackbox_not_stronger", norm)["detail"]["fooled_only_by_black_box"] == 0
    assert set(report[0]) == {"check", "passed", "detail"}


def test_masking_checks_flag_a_quantised_input(toy_model, toy_test):
    x, y = toy_test
    masked = Quantised(toy_model).eval()
    assert accuracy(masked, x, y) >= 0.9  # quantising barely costs clean accuracy...
    report = robustness.masking_report(masked, x, y, eps=EPS, **FAST)
    # ... but gradient attacks no longer work: PGD leaves most images correct even at Linf 0.3 ...
    for norm in ("linf", "l2"):
        r = _by(report, "eps_to_zero", norm)
        assert not r["passed"], r
        assert r["detail"]["final_accuracy"] >= 0.5
    # ... while the black-box Square attack, which only reads outputs, breaks far more images.
    r = _by(report, "blackbox_not_stronger", "linf")
    assert not r["passed"], r
    assert r["detail"]["black_acc"] <= r["detail"]["white_acc"] - 0.25
    assert r["detail"]["fooled_only_by_black_box"] >= 6
    # The same attacks at the same radii find the plain network far less robust.
    white = _by(report, "more_steps", "linf")["detail"]["correct"][-1]
    plain = worst_case(per_image_correct(toy_model, x, y, [StrongAttack("c", "apgd-ce", "linf", EPS["linf"], 20)]))
    assert int(plain.sum()) < white - 10


# --------------------------------------------------------------------------
# Load or compute for one run
# --------------------------------------------------------------------------

TINY_SUITE = strong_suite(2 / 255, 0.5, apgd_steps=4, square_queries=30)
TINY_MASKING = {"steps": [2, 4], "restarts": [1, 2], "pgd_steps": 3}


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """A finished quick-profile STD run on the synthetic stand-in: (config, results, cache_dir)."""
    cache = tmp_path_factory.mktemp("robust_cache")
    results = tmp_path_factory.mktemp("robust_results")
    prof = profiles.get_profile("quick", n_train=24, n_val=6, n_test=12, image_size=16, epochs=2)
    data = experiment.resolve_data(profiles.data_config(prof), None, cache_dir=cache)
    (cfg,) = profiles.configs(prof, data, methods=("std",))
    assert experiment.run(cfg, results=results, cache_dir=cache, progress=False) is not None
    return cfg, results, cache


def test_robust_eval_result_computes_once_then_loads(monkeypatch, finished_run):
    cfg, results, cache = finished_run
    kw = dict(results=results, cache_dir=cache, suite=TINY_SUITE, n_images=9, masking=TINY_MASKING)
    res = robustness.robust_eval_result(cfg, **kw)
    run = store.RunDir(results, cfg.run_id)
    files = sorted(run.path.glob("robustness-*.json"))
    assert [p.name for p in files] == [robustness.robust_eval_path(cfg, results, TINY_SUITE, 9,
                                                                   masking=TINY_MASKING).name]
    assert len(files[0].stem.split("-")[1]) == 8
    assert not list(run.path.glob("*.tmp"))
    assert res["n_images"] == 9 and len(res["image_ids"]) == 9

    # Three images per class, the first of each class in test order; labels as in the stored predictions.
    pred = store.read_csv(run.predictions).set_index("image_id").loc[res["image_ids"]]
    assert pred["label"].value_counts().tolist() == [3, 3, 3]
    paper = [a.name for a in cfg.eval_attacks]
    assert set(res["robust_accuracy"]) == set(paper) | {a.name for a in TINY_SUITE}
    for a in paper:
        assert res["robust_accuracy"][a] == pytest.approx((pred[f"pred_{a}"] == pred["label"]).mean())
    assert res["clean_agrees_with_predictions"] == 1.0
    # Worst cases are ANDs: never above any of their parts, "all" never above "paper" or "strong".
    wc = res["worst_case"]
    paper_and = (pred[[f"pred_{a}" for a in ["clean", *paper]]].to_numpy() == pred[["label"]].to_numpy()).all(1)
    assert wc["paper"] == pytest.approx(paper_and.mean())
    assert wc["all"] <= min(wc["paper"], wc["strong"], *res["robust_accuracy"].values(), res["clean_accuracy"])
    assert wc["all"] <= min(wc["all_linf"], wc["all_l2"])
    frame = pd.DataFrame(res["per_image"]).astype(bool)
    assert wc["all"] == pytest.approx(worst_case(frame).mean())
    assert {r["check"] for r in res["masking"]} == {"more_steps", "restarts", "eps_to_zero", "blackbox_not_stronger"}
    assert res["masking_passed"] == all(r["passed"] for r in res["masking"])

    # Second call: loaded from the file, without the checkpoint, the data or any attack.
    stamp = files[0].stat().st_mtime_ns
    for p in run.ckpt.glob("*.pt"):
        p.rename(p.with_suffix(".bak"))
    try:
        def forbidden(*args, **kwargs):
            raise AssertionError("a stored result must be loaded, not recomputed")

        monkeypatch.setattr(robustness, "per_image_correct", forbidden)
        monkeypatch.setattr(experiment, "load_data", forbidden)
        assert robustness.robust_eval_result(cfg, **kw) == res
        assert files[0].stat().st_mtime_ns == stamp
        # Another specification needs the checkpoint, and says so.
        with pytest.raises(FileNotFoundError, match="best.pt"):
            robustness.robust_eval_result(cfg, **{**kw, "n_images": 6})
    finally:
        for p in run.ckpt.glob("*.bak"):
            p.rename(p.with_suffix(".pt"))


def test_result_name_depends_on_the_specification(finished_run):
    cfg, results, _ = finished_run
    path = robustness.robust_eval_path
    base = path(cfg, results, TINY_SUITE, 9, masking=TINY_MASKING)
    assert base == path(cfg, results, TINY_SUITE, 9, masking=dict(TINY_MASKING))
    assert base != path(cfg, results, TINY_SUITE, 6, masking=TINY_MASKING)
    assert base != path(cfg, results, TINY_SUITE[:3], 9, masking=TINY_MASKING)
    assert base != path(cfg, results, TINY_SUITE, 9, masking=False)
    other = tuple(dataclasses.replace(a, seed=1) for a in TINY_SUITE)
    assert base != path(cfg, results, other, 9, masking=TINY_MASKING)
    # The default suite uses the run's own radii.
    default = robustness._spec(cfg, None, None, True, 128)["suite"]
    assert {a["eps"] for a in default if a["norm"] == "linf"} == {2 / 255}
    assert {a["eps"] for a in default if a["norm"] == "l2"} == {cfg.method.eps0}
