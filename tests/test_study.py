"""Tests for chapter 12's library side (dpaat_lib.study) and what it relies on: run identity kept
for old configurations, the fraction split, the balanced sampler, the 7-class profiles."""
from __future__ import annotations

import dataclasses
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from dpaat_lib import experiment, profiles, report, study
from dpaat_lib.config import DataConfig, RunConfig, TrainConfig
from dpaat_lib.data import ALL_CLASSES, CLASSES
from dpaat_lib.methods import MethodConfig
from dpaat_lib.metrics import balanced_accuracy, imbalance_metrics, macro_f1, per_class_recall
from dpaat_lib.training import epoch_order

REPO = Path(__file__).resolve().parents[1]
CPU_REAL_DIGEST = "ec41ab353aae7a39"  # the real 3-class metadata (tests/test_data.py pins it too)
# Run ids computed before the fields of config.IDENTITY_OPTIONAL existed: they name stored results.
DEFAULT_IDS = {"smallcnn": "smallcnn-std-s0-b21daa31abc8", "resnet34": "resnet34-std-s0-2e230adf69fc"}
CPU_REAL_IDS = ["smallcnn-std-s0-157b69e514f7", "smallcnn-at-s0-683db9918e21", "smallcnn-sat-s0-e0de1b707e95",
                "smallcnn-amat-s0-ae71292d79ac", "smallcnn-dpaat-s0-d4756862386f", "smallcnn-d-a-s0-68af30fbd645",
                "smallcnn-d-b-s0-cd0058f126a7"]
PAPER_IDS = ["resnet34-std-s0-1dae4f970c21", "resnet34-at-s0-3530f214bf14", "resnet34-sat-s0-0f1525ea468a"]


# --------------------------------------------------------------------------
# Run identity
# --------------------------------------------------------------------------

@pytest.mark.parametrize("model", sorted(DEFAULT_IDS))
def test_default_run_id_is_unchanged(model):
    assert RunConfig(model=model).run_id == DEFAULT_IDS[model]


def test_cpu_real_and_paper_run_ids_are_unchanged():
    p = profiles.get_profile("cpu-real")
    assert p.seeds == (0, 1, 2)  # seed 0's runs are the ones stored before the profile had three seeds
    assert [c.run_id for c in profiles.book_configs(p, profiles.data_config(p, CPU_REAL_DIGEST), seeds=(0,))] \
        == CPU_REAL_IDS
    p = profiles.get_profile("paper")
    assert [c.run_id for c in profiles.book_configs(p, profiles.data_config(p, "abc"))][:3] == PAPER_IDS


def test_stored_results_are_found_under_their_folder_names():
    stored = sorted((REPO / "results" / "cpu-real").glob("*/config.json"))
    if not stored:
        pytest.skip("no committed results/cpu-real in this checkout")
    for cfg in stored:
        config = RunConfig.from_dict(json.loads(cfg.read_text()))
        assert config.run_id == cfg.parent.name


def test_new_fields_enter_the_identity_only_when_not_default():
    base = RunConfig(model="smallcnn")
    assert "sampler" not in base.identity_dict()["train"] and "test_fraction" not in base.identity_dict()["data"]
    assert "sampler" in base.to_dict()["train"]  # config.json still records every field
    balanced = replace(base, train=replace(base.train, sampler="balanced"))
    by_fraction = replace(base, data=replace(base.data, test_fraction=0.2, val_fraction=0.1))
    full_size = replace(base, data=replace(base.data, source_size="600x450"))  # the official release's images
    assert len({base.run_id, balanced.run_id, by_fraction.run_id, full_size.run_id}) == 4
    for c in (balanced, by_fraction, full_size):
        assert RunConfig.from_dict(json.loads(json.dumps(c.to_dict()))) == c
    assert base.data.identity() == {k: v for k, v in base.to_dict()["data"].items()
                                    if k not in ("test_fraction", "val_fraction", "source_size")}


def test_config_validation():
    with pytest.raises(ValueError):
        TrainConfig(sampler="oversample")
    with pytest.raises(ValueError):
        DataConfig(test_fraction=0.2)
    with pytest.raises(ValueError):
        DataConfig(test_fraction=1.5, val_fraction=0.1)


def test_seven_class_profiles():
    for name in ("quick-7", "cpu-real-7"):
        p = profiles.get_profile(name)
        d = profiles.data_config(p, "abc")
        assert d.classes == ALL_CLASSES and d.by_fraction and (d.n_train, d.n_val, d.n_test) == (0, 0, 0)
        cfgs = profiles.configs(p, d)
        assert {c.train.sampler for c in cfgs} == {"balanced"}  # the same imbalance handling for every method
        assert [c.method.name for c in cfgs] == [m for m in profiles.MAIN_METHODS for _ in p.seeds]
    assert profiles.get_profile("cpu-real-7").seeds == (0, 1, 2)  # seed 0's runs are the ones stored first
    # the 3-class profiles are as they were
    for name in ("quick", "cpu-real", "paper"):
        p = profiles.get_profile(name)
        assert p.classes == CLASSES and p.test_fraction is None and p.sampler == "shuffle"


# --------------------------------------------------------------------------
# Sampler
# --------------------------------------------------------------------------

def test_balanced_sampler_balances_classes():
    y = torch.tensor([0] * 600 + [1] * 100 + [2] * 30 + [3] * 10)
    g = torch.Generator().manual_seed(0)
    order = torch.cat([epoch_order(y, g, "balanced") for _ in range(20)])
    assert len(order) == 20 * len(y) and int(order.min()) >= 0 and int(order.max()) < len(y)
    share = torch.bincount(y[order], minlength=4).double() / len(order)
    assert torch.allclose(share, torch.full((4,), 0.25, dtype=torch.double), atol=0.02), share
    # every image of the smallest class is drawn
    assert set(order[y[order] == 3].tolist()) == set(range(730, 740))


def test_shuffle_sampler_is_the_old_permutation():
    y = torch.tensor([0, 0, 1, 2, 2, 2])
    a = epoch_order(y, torch.Generator().manual_seed(3), "shuffle")
    assert torch.equal(a, torch.randperm(6, generator=torch.Generator().manual_seed(3)))
    with pytest.raises(ValueError):
        epoch_order(y, torch.Generator(), "nope")


# --------------------------------------------------------------------------
# Imbalance metrics
# --------------------------------------------------------------------------

def test_balanced_accuracy_and_macro_f1_match_sklearn():
    from sklearn.metrics import balanced_accuracy_score, f1_score

    rng = np.random.default_rng(0)
    y = rng.choice(7, size=400, p=[0.6, 0.1, 0.1, 0.08, 0.06, 0.03, 0.03])
    p = np.where(rng.random(400) < 0.7, y, rng.integers(0, 7, 400))
    pred = pd.DataFrame({"image_id": [f"i{k}" for k in range(400)], "label": y, "pred_clean": p})
    assert balanced_accuracy(pred) == pytest.approx(balanced_accuracy_score(y, p))
    assert macro_f1(pred, ALL_CLASSES) == pytest.approx(f1_score(y, p, average="macro", labels=list(range(7))))
    fn = study._metric_fn("bacc", 7)
    assert fn(y[None], p[None])[0] == pytest.approx(balanced_accuracy_score(y, p))
    fn = study._metric_fn("f1", 7)
    assert fn(y[None], p[None])[0] == pytest.approx(f1_score(y, p, average="macro", labels=list(range(7))))
    # Per class and per attack, beside the plain accuracy; a class absent from the test set is NaN, not 0.
    from sklearn.metrics import recall_score
    recall = per_class_recall(pred[pred["label"] != 6], ALL_CLASSES)
    kept = pred["label"] != 6
    assert list(recall) == list(ALL_CLASSES) and np.isnan(recall[ALL_CLASSES[6]])
    expected = recall_score(y[kept], p[kept], labels=list(range(6)), average=None, zero_division=0)
    assert [recall[c] for c in ALL_CLASSES[:6]] == pytest.approx(expected.tolist())
    pred["pred_FGSM"] = np.where(np.arange(400) % 2 == 0, y, (y + 1) % 7)  # every odd image wrong
    both = imbalance_metrics(pred, ALL_CLASSES)
    assert list(both) == ["clean", "FGSM"] and both["FGSM"]["acc"] == 0.5
    assert both["clean"] == {"acc": pytest.approx(float(np.mean(y == p))), "bacc": balanced_accuracy(pred),
                             "f1": macro_f1(pred, ALL_CLASSES)}


# --------------------------------------------------------------------------
# Significance on planted differences (fake runs: only predictions matter)
# --------------------------------------------------------------------------

def _fake(method: str, seed: int, y: np.ndarray, p_right: dict[str, float], rng, model="smallcnn",
          classes=CLASSES, **method_kw) -> experiment.RunResult:
    n = len(y)
    pred = {"image_id": [f"ISIC_{k:07d}" for k in range(n)], "label": y}
    for att, p in p_right.items():
        wrong = (y + rng.integers(1, len(classes), n)) % len(classes)
        pred[f"pred_{att}"] = np.where(rng.random(n) < p, y, wrong)
    cfg = RunConfig(model=model, method=MethodConfig(name=method, **method_kw),
                    data=DataConfig(source="synthetic", classes=tuple(classes)), train=TrainConfig(seed=seed))
    acc = {att: float((pred[f"pred_{att}"] == y).mean()) for att in p_right}
    metrics = {"GAcc": acc.get("clean", 0.0), "mAP": acc.get("clean", 0.0),
               "RAcc": {a.name: acc.get(a.name, 0.0) for a in cfg.eval_attacks}}
    return experiment.RunResult(cfg, Path("."), {}, metrics, pd.DataFrame(pred))


def _grid(effect: float, seeds=(0, 1, 2), n=600, seed=0, more: dict[str, float] | None = None):
    """Fake runs of the four adversarial methods; ``more``: other attacks' accuracies, the same for each."""
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(3), n // 3)
    out = []
    for s in seeds:
        base = 0.6 + 0.02 * rng.standard_normal()  # seed-to-seed variation shared by nothing
        for m, shift in (("at", 0.0), ("sat", 0.0), ("amat", 0.0), ("dpaat", effect)):
            out.append(_fake(m, s, y, {"clean": 0.8, "20-PGD": base + shift, **(more or {})}, rng))
    return out


def test_significance_detects_a_planted_difference():
    t = study.significance(_grid(0.15), "DPAAT", "AT", attacks=("20-PGD",))
    row = t.iloc[0]
    assert row["seeds"] == 3 and len(row["per_seed"]) == 3
    assert 10 < row["mean"] < 20 and row["exceeds_noise"] and row["p_ttest"] < 0.05
    assert 0 < row["ci_low"] < row["mean"] < row["ci_high"]


def test_significance_does_not_flag_a_null_difference():
    for seed in range(3):
        t = study.significance(_grid(0.0, seed=seed), "DPAAT", "AT", attacks=("clean", "20-PGD"))
        assert not t["exceeds_noise"].any(), t
        assert ((t["ci_low"] < 0) & (t["ci_high"] > 0)).all() or (t["p_ttest"] > 0.05).all()


def test_direction_summary_counts_each_paired_run_once_and_sets_below_chance_apart():
    lower, higher = _grid(-0.15, seed=1), _grid(0.15, seed=2)
    # another grid holds other runs (other run ids): here another CNN's
    higher = [dataclasses.replace(r, config=dataclasses.replace(r.config, model="resnet18")) for r in higher]
    text = study.direction_summary({"g1": lower, "g2": higher, "g1 again": lower}, attacks=("20-PGD", "clean"))
    diffs = {name: [100 * (study.metric_value(d, "acc", "20-PGD") - study.metric_value(a, "acc", "20-PGD"))
                    for d, a in zip([r for r in g if r.config.method.name == "dpaat"],
                                    [r for r in g if r.config.method.name == "at"])]
             for name, g in (("g1", lower), ("g2", higher))}
    n_below = sum(d < 0 for v in diffs.values() for d in v)
    assert n_below == 3  # the planted effects: DPAAT lower in g1's 3 seeds, higher in g2's
    assert f"under 20-PGD, DPAAT is below AT in {n_below} of 6 paired runs" in text  # "g1 again" not counted twice
    assert "g1 again" not in text and "over the 2 groups" in text
    assert "g1: " + ", ".join(f"{d:+.1f}" for d in diffs["g1"]) in text
    assert "clean, DPAAT is below AT in" in text and "no test is made over them" in text
    assert "below chance" not in text
    one_class = [dataclasses.replace(r, config=dataclasses.replace(
        r.config, data=dataclasses.replace(r.config.data, classes=("nv",)))) for r in lower]
    text = study.direction_summary({"g1": one_class, "g2": higher}, attacks=("20-PGD",))
    assert "g1 (both below chance): " in text
    assert "(0 of 3 where neither is below chance)" in text
    assert study.direction_summary({"g": [r for r in lower if r.config.method.name != "at"]}) == ""


def test_chapter_12s_list_parameters_are_read_from_papermills_text():
    """papermill's -p passes "[0.25, 1]" as text: tuple() would split it into characters."""
    assert study.default_sweeps("quick", eta="[0.25, null]", lam="[0.5]", mu="epoch") == {
        "eta": (0.25, None), "lam": (1.0, 0.5), "mu": ("batch", "epoch")}
    assert study.sweep_models("quick", "[smallcnn, resnet18]") == ("smallcnn", "resnet18")
    assert study.sweep_models("quick", "smallcnn") == ("smallcnn",)
    assert profiles.seed_list("[0, 1]", "sweep_seeds") == (0, 1)
    with pytest.raises(ValueError, match=r"sweep_models: unknown CNN\(s\) 'smalcnn'; choose from .*smallcnn"):
        study.sweep_models("quick", "[smalcnn]")
    with pytest.raises(ValueError, match=r"lam_values must be numbers, e.g. \[0.25, 1.0\], got 'a'"):
        study.default_sweeps("quick", lam="[a]")
    with pytest.raises(ValueError, match=r"sweep_seeds must be whole numbers, e.g. \[0, 1, 2\], got '\[a\]'"):
        profiles.seed_list("[a]", "sweep_seeds")


def test_significance_with_one_seed_gives_no_verdict():
    t = study.significance(_grid(0.15, seeds=(0,)), "DPAAT", "AT")
    assert (t["seeds"] == 1).all() and not t["exceeds_noise"].any() and t["p_ttest"].isna().all()
    assert "one seed" in study.significance_sentence(t)
    shown = study.significance_display(t)
    assert (shown["seed std"] == "n/a").all() and (shown["t-test p"] == "n/a").all()
    assert (shown["beyond seed noise"] == "n/a (one seed)").all() and "nan" not in shown.to_string()


def _correct_frames(results, attacks=("clean", "20-PGD")) -> dict:
    """Per-image correctness of each fake run, as chapter 11's every-seed worst case stores it."""
    out = {}
    for r in results:
        pred = r.predictions.set_index("image_id")
        out[(r.config.model, study._label(r), r.config.train.seed)] = pd.DataFrame(
            {a: pred[f"pred_{a}"] == pred["label"] for a in attacks})
    return out


@pytest.mark.parametrize("effect", [0.15, 0.0])
def test_correct_significance_equals_significance_on_predictions(effect):
    # The same runs, once as predictions and once as per-image correctness: the same test, row for row.
    res = _grid(effect)
    want = study.significance_table(res, attacks=("clean", "20-PGD"))
    got = study.correct_significance(_correct_frames(res))
    cols = ["model", "comparison", "attack", "seeds", "mean", "seed_std", "p_ttest", "ci_low", "ci_high",
            "exceeds_noise", "p_holm"]
    pd.testing.assert_frame_equal(got[cols], want[cols])
    assert list(got["per_seed"]) == list(want["per_seed"])


def test_correct_significance_pairs_images_by_id_and_refuses_disjoint_runs():
    frames = _correct_frames(_grid(0.15))
    # shuffled rows and a missing image: paired by image id on the common images
    shuffled = {k: (f.sample(frac=1.0, random_state=1).iloc[1:] if k[1] == "AT" else f) for k, f in frames.items()}
    t = study.correct_significance(shuffled, others=("AT",), columns=["20-PGD"])
    for s, d in enumerate(t.iloc[0]["per_seed"]):
        a, b = frames[("smallcnn", "DPAAT", s)]["20-PGD"], shuffled[("smallcnn", "AT", s)]["20-PGD"]
        assert d == pytest.approx(round(100 * (a.loc[b.index].mean() - b.mean()), 2))
    disjoint = dict(frames)
    at = frames[("smallcnn", "AT", 0)]
    disjoint[("smallcnn", "AT", 0)] = at.set_axis([f"other_{k}" for k in range(len(at))])
    with pytest.raises(ValueError, match="no common test image"):
        study.correct_significance(disjoint, others=("AT",))


def test_paired_difference_test_edge_cases():
    assert np.isnan(study.paired_difference_test([1.0]))
    assert study.paired_difference_test([0.0, 0.0, 0.0]) == 1.0
    assert study.paired_difference_test([2.0, 2.0]) == 0.0
    assert study.paired_difference_test([5.0, 6.0, 4.0]) < 0.05


def test_seed_table_and_significance_display():
    res = _grid(0.15)
    table = study.seed_table(res)
    assert list(table.index.get_level_values("method")) == ["AT", "SAT", "AMAT", "DPAAT"]
    assert (table["seeds"] == 3).all() and all("±" in v for v in table["Acc 20-PGD"])
    sig = study.significance_table(res, metric="acc")
    assert set(sig["comparison"]) == {"DPAAT - AT", "DPAAT - SAT", "DPAAT - AMAT"}
    shown = study.significance_display(sig)
    assert set(shown["beyond seed noise (Holm)"]) <= {"yes", "no"}
    assert "paired t-test across seeds" in study.significance_sentence(sig)


def test_significance_display_verdict_follows_holm_not_the_raw_p():
    # Two rows that pass p < 0.05 alone; Holm over the table keeps only the stronger one.
    sig = study.significance_table(_grid(0.15), metric="acc")
    sig["p_ttest"] = [0.001, 0.03] + [0.5] * (len(sig) - 2)
    sig["exceeds_noise"] = sig["p_ttest"] < 0.05
    sig["p_holm"] = study.holm(sig["p_ttest"].to_numpy())
    shown = study.significance_display(sig)
    assert list(shown["beyond seed noise (Holm)"][:2]) == ["yes", "no"]
    assert list(shown["Holm p"][:2]) == [f"{sig['p_holm'][0]:.3f}", f"{sig['p_holm'][1]:.3f}"]


def test_sweep_frame_table_plot_and_findings():
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(3), 50)
    sweeps = {"eta": {0.05: [_fake("dpaat", 0, y, {"clean": 0.7, "20-PGD": 0.5}, rng, eta=0.05)],
                      None: [_fake("dpaat", 0, y, {"clean": 0.7, "20-PGD": 0.6}, rng)]},
              "mu": {"batch": [_fake("dpaat", 0, y, {"clean": 0.7, "20-PGD": 0.6}, rng)],
                     "epoch": [_fake("dpaat", 0, y, {"clean": 0.7, "20-PGD": 0.1}, rng, mu="epoch")]}}
    ref = [_fake("at", s, y, {"clean": 0.75, "20-PGD": 0.45}, rng) for s in (0, 1, 2)]
    default = [_fake("dpaat", s, y, {"clean": 0.7, "20-PGD": 0.6}, rng) for s in (0, 1, 2)]
    frame = study.sweep_frame(sweeps, ref)
    assert set(frame["param"]) == {"eta", "mu", "AT"}
    frame = study.sweep_frame(sweeps, ref, default)
    assert set(frame["param"]) == {"eta", "mu", "AT", "default"}
    assert "eps0 = 0.5" in set(frame["label"])
    d = frame[(frame["param"] == "default") & (frame["attack"] == "20-PGD")].iloc[0]
    assert d["seeds"] == 3 and d["pi_low"] < d["min"] <= d["mean"] <= d["max"] < d["pi_high"]
    table = study.sweep_table(frame)
    assert {"clean acc (%)", "20-PGD acc (%)", "value", "parameter", "seeds"} <= set(table.columns)
    assert list(table["parameter"])[:2] == ["adaptive length eta"] * 2 and "reference" in set(table["parameter"])
    fig = study.plot_sweeps(frame)
    assert len(fig.axes) == 2
    # a second sweep model: one row of panels per model, and the findings name both
    other = {p: {v: [replace_model(r, "mobilenet_v2") for r in rs] for v, rs in by.items()} for p, by in sweeps.items()}
    two = study.sweep_frame({p: {v: sweeps[p][v] + other[p][v] for v in sweeps[p]} for p in sweeps}, ref, default)
    assert len(study.plot_sweeps(two).axes) == 4
    # the CNNs keep the order of the runs (the main grid's first), not the alphabet's
    assert list(dict.fromkeys(study.sweep_table(two)["model"])) == ["smallcnn", "mobilenet_v2"]
    assert "(mobilenet_v2, 1 seed per value)" in study.sweep_findings(two, profiles.get_profile("quick"))
    assert "constant guess" not in study.sweep_findings(two, profiles.get_profile("quick"))
    collapsed = two.copy()
    collapsed.loc[(collapsed["param"] == "default") & (collapsed["model"] == "smallcnn")
                  & (collapsed["attack"] == "20-PGD"), "mean"] = 10.0  # below a 3-class guess's 33.3 %
    assert ("On smallcnn the default DPAAT's 20-PGD accuracy (10.0%) is below the 33.3% of a constant guess"
            in study.sweep_findings(collapsed, profiles.get_profile("quick")))
    text = study.sweep_findings(frame, profiles.get_profile("quick"))
    # mu = epoch was planted 50 points below the default under 20-PGD: it must be flagged, and with one seed
    assert "criterion mu = epoch (20-PGD" in text and "one training seed" in text
    assert "(default)" in text


def test_sweep_findings_read_a_point_of_several_seeds_against_the_mean_interval():
    rng = np.random.default_rng(1)
    y = np.repeat(np.arange(3), 1000)
    default = [_fake("dpaat", s, y, {"clean": 0.7, "20-PGD": acc}, rng) for s, acc in zip((0, 1, 2), (0.56, 0.6, 0.64))]
    point = [_fake("dpaat", s, y, {"clean": 0.7, "20-PGD": 0.8}, rng, lam=2.0) for s in (0, 1, 2)]
    frame = study.sweep_frame({"lam": {1.0: default, 2.0: point}}, default=default)
    d = frame[(frame["param"] == "default") & (frame["attack"] == "20-PGD")].iloc[0]
    p = frame[(frame["param"] == "lam") & (frame["label"] == "2") & (frame["attack"] == "20-PGD")].iloc[0]
    # 80 % lies inside the interval of one more run (about 35-85) but outside that of a mean of three (42-78)
    assert d["pi_low"] <= p["mean"] <= d["pi_high"]
    assert not study.default_interval(d, 3)[0] <= p["mean"] <= study.default_interval(d, 3)[1]
    text = study.sweep_findings(frame, profiles.get_profile("quick"))
    assert "(smallcnn, 3 seeds per value)" in text and "synchronisation weight lambda = 2 (20-PGD" in text
    assert "evidence of an effect" in text and "one training seed" not in text
    assert "95% prediction interval of a mean of 3 more runs" in text
    assert len(study.plot_sweeps(frame).axes) == 1


def test_sweep_trends_find_a_planted_drift_and_not_a_flat_sweep():
    rng = np.random.default_rng(2)
    y = np.repeat(np.arange(3), 1000)
    lams = (0.25, 0.5, 1.0, 2.0, 4.0)
    # robust accuracy planted to rise 5 points per doubling of lambda; clean accuracy flat
    sweeps = {"lam": {v: [_fake("dpaat", s, y, {"clean": 0.7, "20-PGD": 0.5 + 0.05 * np.log2(v)}, rng, lam=v)
                          for s in (0, 1)] for v in lams}}
    trends = study.sweep_trends(sweeps)
    assert list(trends["attack"]) == ["clean", "20-PGD"] and (trends["runs"] == 10).all()
    pgd = trends[trends["attack"] == "20-PGD"].iloc[0]
    clean = trends[trends["attack"] == "clean"].iloc[0]
    assert pgd["slope"] == pytest.approx(5.0, abs=0.6) and pgd["p"] < 1e-4 and pgd["p (Holm)"] < 1e-3
    assert abs(clean["slope"]) < 0.6 and clean["p"] > pgd["p"]
    text = study.trend_findings(trends)
    assert "synchronisation weight lambda on smallcnn, 20-PGD: +" in text and "1 survives Holm" in text
    assert list(study.trend_table(trends).columns)[:3] == ["parameter", "model", "attack"]
    # mu has no numeric values, and two runs are too few for a slope
    assert study.sweep_trends({"mu": {"batch": sweeps["lam"][1.0], "epoch": sweeps["lam"][2.0]}}).empty
    assert study.sweep_trends({"lam": {1.0: sweeps["lam"][1.0]}}).empty
    assert "no trend fitted" in study.trend_findings(study.sweep_trends({}))


def replace_model(result, model):
    """The same fake run under another model's name."""
    return experiment.RunResult(replace(result.config, model=model), result.path, result.history, result.metrics,
                                result.predictions)


def test_seed_findings_name_the_metric_and_the_models():
    res = _grid(0.15)
    sig = study.significance_table(res + [replace_model(r, "mobilenet_v2") for r in res], metric="bacc",
                                   attacks=("20-PGD",))
    text = study.seed_findings(sig)
    assert "per-seed balanced accuracy differences" in text and "on mobilenet_v2, smallcnn" in text
    assert "mobilenet_v2, AT 20-PGD" in text  # a flagged difference says on which CNN


def test_load_sweep_study_merges_models_in_value_order(tmp_path, cache_dir, monkeypatch):
    kw = dict(results_root=tmp_path, cache_dir=cache_dir, image_size=16, epochs=1)
    monkeypatch.setitem(study.DEFAULT_SWEEPS, "quick", {"lam": (1.0,)})
    # given values come after the default (1.0, 0.5): the study puts them in ascending order
    sweeps, at, default = study.load_sweep_study("quick", ("smallcnn",), seeds=(0, 1), given={"lam": [0.5]}, **kw)
    assert list(sweeps["lam"]) == [0.5, 1.0] and [len(v) for v in sweeps["lam"].values()] == [1, 1]
    assert [r.config.train.seed for r in at] == [0, 1] and [r.config.train.seed for r in default] == [0, 1]
    assert sweeps["lam"][1.0][0].run_id == default[0].run_id  # the default's point is its seed-0 run
    assert study.default_sweeps("quick", lam=[0.5]) == {"lam": (1.0, 0.5)}
    assert study._value_key("eta", None, 0.5) == 0.5 and study._value_key("mu", "epoch", 0.5) == 1
    assert study.sweep_models("cpu-real") == ("smallcnn", "mobilenet_v2", "resnet34")
    note = study.study_note("paper", profiles.get_profile("cpu-real"), profiles.get_profile("cpu-real-7"), {},
                            (0,), ("smallcnn", "mobilenet_v2"))
    assert "on smallcnn, mobilenet_v2 is trained on 1 training seed(s)" in note
    assert "seven-class task uses 3 training seed(s) (0, 1, 2)" in note
    # without given sweep seeds, each CNN's own (study.SWEEP_SEEDS), named per CNN
    assert study.sweep_seeds_for("cpu-real", "smallcnn") == (0, 1, 2)
    assert study.sweep_seeds_for("cpu-real", "mobilenet_v2") == (0,) == study.sweep_seeds_for("quick", "smallcnn")
    note = study.study_note("paper", profiles.get_profile("cpu-real"), profiles.get_profile("cpu-real-7"), {},
                            None, ("smallcnn", "mobilenet_v2"))
    assert ("trained on 3 training seed(s) (0, 1, 2) on smallcnn and 1 training seed(s) (0) on mobilenet_v2"
            in note)


def test_prediction_interval_and_holm():
    lo, hi = study.prediction_interval([1.0, 2.0, 3.0])
    # mean 2, s 1, t(2, 0.975) = 4.303, sqrt(1 + 1/3)
    assert (lo, hi) == pytest.approx((2 - 4.3027 * 1.1547, 2 + 4.3027 * 1.1547), rel=1e-3)
    assert all(np.isnan(study.prediction_interval([1.0])))
    # the mean of m more seeds: sqrt(1/m + 1/n) instead of sqrt(1 + 1/n)
    lo3, hi3 = study.prediction_interval([1.0, 2.0, 3.0], m=3)
    assert (lo3, hi3) == pytest.approx((2 - 4.3027 * (2 / 3) ** 0.5, 2 + 4.3027 * (2 / 3) ** 0.5), rel=1e-3)
    row = {"mean": 20.0, "std": 1.0, "seeds": 3}
    assert study.default_interval(row, 3) == pytest.approx((lo3 + 18, hi3 + 18))
    assert study.default_interval({"mean": 99.0, "std": 1.0, "seeds": 3})[1] == 100.0  # clipped to accuracy
    adj = study.holm([0.01, 0.04, np.nan, 0.03])
    assert adj[0] == pytest.approx(0.03) and adj[3] == pytest.approx(0.06) and adj[1] == pytest.approx(0.06)
    assert np.isnan(adj[2])


def test_main_table_and_seed_points():
    res = _grid(0.15)
    for r in res:  # the table needs every column, also mAP, from the stored metrics
        assert "mAP" in r.metrics
    table = study.main_table(res, ("GAcc", "20-PGD", "mAP"))
    assert list(table.columns) == ["GAcc", "20-PGD", "mAP", "seeds"]
    assert list(table.index.get_level_values("method")) == ["AT", "SAT", "AMAT", "DPAAT"]
    assert (table["seeds"] == 3).all() and all("±" in v for v in table["20-PGD"])
    vals = [100 * r.metrics["RAcc"]["20-PGD"] for r in res if r.config.method.name == "at"]
    assert table.loc[(res[0].config.model, "AT"), "20-PGD"] == f"{np.mean(vals):.1f} ± {np.std(vals, ddof=1):.1f}"
    fig = study.plot_seed_points(res)
    assert len(fig.axes) == 2


def test_seed_findings_report_the_test_either_way():
    sig = study.significance_table(_grid(0.15), attacks=("20-PGD",))
    assert "p_holm" in sig and (sig["p_holm"] >= sig["p_ttest"]).all()
    text = study.seed_findings(sig)
    assert "paired t-test across 3 seeds" in text and "exceed seed-to-seed noise" in text and "Holm" in text
    null = study.seed_findings(study.significance_table(_grid(0.0), attacks=("20-PGD",)))
    assert "None of the 3 differences exceeds seed-to-seed noise" in null
    one = study.seed_findings(study.significance_table(_grid(0.15, seeds=(0,)), attacks=("20-PGD",)))
    assert one.startswith("One seed per method")


# --------------------------------------------------------------------------
# The seed-aware comparison of the other chapters (report.comparison_sentence, comparison_headline)
# --------------------------------------------------------------------------

def test_comparison_sentence_with_seeds_names_the_test_and_its_numbers():
    from dpaat_lib import report

    res = _grid(0.15)
    text = report.comparison_sentence(res, "DPAAT", "AT", attacks=("clean", "20-PGD"))
    sig = study.significance(res, "DPAAT", "AT", attacks=("clean", "20-PGD"))
    for _, r in sig.iterrows():
        assert f"{r['mean']:+.1f} ± {r['seed_std']:.1f} points vs AT over 3 seeds" in text
        assert f"[{r['ci_low']:+.1f}, {r['ci_high']:+.1f}]" in text
    assert "paired t-test across seeds" in text and "bootstrap CI" in text and "McNemar" not in text
    assert "beyond seed-to-seed noise (DPAAT higher)" in text  # the planted 20-PGD difference
    assert "3 seeds per method" in text and text.count("\n- ") == 1  # one bullet per attack


def test_comparison_sentence_with_one_seed_keeps_mcnemar():
    from dpaat_lib import report

    text = report.comparison_sentence(_grid(0.15, seeds=(0,)), "DPAAT", "AT", attacks=("clean", "20-PGD"))
    assert "McNemar p = " in text and "Single training seed" in text and "t-test" not in text
    assert text.split("\n\n")[0].startswith("- smallcnn (seed 0), GAcc")


def test_comparison_headline_follows_the_test():
    from dpaat_lib import report

    up = report.comparison_headline(_grid(0.15))
    assert "paired t-test across 3 training seeds" in up and "higher than AT" in up
    assert "beyond seed-to-seed noise" in up and "holds on these runs beyond seed-to-seed noise" in up
    assert "Holm-adjusted for the 6 comparisons" in up and "Holm p = " in up  # several tests: corrected
    null = report.comparison_headline(_grid(0.0, seed=0), others=("AT",))  # no false alarm for this seed
    assert "within seed-to-seed noise of AT" in null and "is not supported by these runs" in null
    down = report.comparison_headline(_grid(-0.15), others=("AT",))  # two tests: the planted one survives Holm
    assert "lower than AT" in down and "not supported" in down
    one = report.comparison_headline(_grid(0.15, seeds=(0,)))
    assert "exact McNemar test" in one and "one training seed per method" in one
    assert "descriptive only" not in one and "descriptive only" not in null  # nothing removed by the correction


def test_comparison_headline_verdict_is_holm_adjusted(monkeypatch):
    # A difference that passes p < 0.05 alone but not after the correction for the headline's 6 tests
    # is reported within noise, and the unadjusted count is said.
    from dpaat_lib import report

    real = study.significance

    def marginal(*args, **kw):
        out = real(*args, **kw)
        out["p_ttest"] = 0.03 if args[2] == "AT" and kw["attacks"] == ("20-PGD",) else 0.6
        return out

    monkeypatch.setattr(study, "significance", marginal)
    text = report.comparison_headline(_grid(0.15))
    assert "higher than" not in text and "within seed-to-seed noise of AT (+" in text
    assert "Unadjusted, 1 of the 6 comparisons would pass" in text and "descriptive only" in text
    assert "is not supported by these runs" in text


def test_sweep_commands_skip_the_default_value():
    cmds = study.sweep_commands("cpu-real", {"eta": (0.25, None), "mu": ("batch", "epoch")}, (0, 1, 2), "D")
    assert cmds == ["python -m dpaat_lib grid --profile cpu-real --data D --seeds 0 1 2",
                    "python -m dpaat_lib grid --profile cpu-real --data D --seeds 0 1 2 --methods dpaat --set eta=0.25",
                    "python -m dpaat_lib grid --profile cpu-real --data D --seeds 0 1 2 --methods dpaat --set mu=epoch"]


def test_study_profiles():
    assert study.study_profiles("quick") == ("quick", "quick-7")
    assert study.study_profiles("paper") == ("cpu-real", "cpu-real-7")
    for name in ("quick", "cpu-real"):
        for param, values in study.default_sweeps(name).items():
            assert param in study.SWEEP_PARAMS and len(values) >= 2
    # given values replace the defaults; the profile's own value stays as the reference point
    sw = study.default_sweeps("cpu-real", eta=[0.1], lam=None)
    assert sw["eta"] == (None, 0.1) and sw["lam"] == study.DEFAULT_SWEEPS["cpu-real"]["lam"]
    with pytest.raises(ValueError):
        study.default_sweeps("quick", steps=[3])
    # Every sweep CNN takes the same values, and the study note no longer speaks of a CNN with fewer points.
    note = study.study_note("cpu-real", profiles.get_profile("cpu-real"), profiles.get_profile("cpu-real-7"), {},
                            None, study.sweep_models("cpu-real"))
    assert ("each sweep value is trained on 3 training seed(s) (0, 1, 2) on smallcnn, 1 training seed(s) (0) on "
            "mobilenet_v2 and 1 training seed(s) (0) on resnet34, and read against") in note
    assert "what the CPU affords" not in note
    assert study.study_overrides("quick") == {"image_size": 16}
    assert study.study_overrides("quick", image_size=24, epochs=None) == {"image_size": 24}
    assert study.study_overrides("cpu-real", epochs=None) == {}
    # Radii are printed as the pages print them: an Linf one in 255ths, given as a number or a fraction.
    note = study.study_note("cpu-real", profiles.get_profile("cpu-real"), profiles.get_profile("cpu-real-7"),
                            study.study_overrides("cpu-real", linf_eps="8/255", eps0=0.5 * 32 / 224), None)
    assert "linf_eps 2/255 -> 8/255, eps0 0.5 -> 0.0714" in note
    same = study.study_note("cpu-real", profiles.get_profile("cpu-real"), profiles.get_profile("cpu-real-7"),
                            {"linf_eps": 2 / 255}, None)
    assert "linf_eps" not in same
    # The quick build's own change and a parameter, each with its reason.
    quick = study.study_note("quick", profiles.get_profile("quick"), profiles.get_profile("quick-7"),
                             study.study_overrides("quick", linf_eps="8/255"), None)
    assert ("change the profile's image_size 32 -> 16 (for `quick` and `quick-7`), so they are not the runs of the "
            "other chapters: the quick build must stay within minutes") in quick
    assert "The parameters given change linf_eps 2/255 -> 8/255 too." in quick


# --------------------------------------------------------------------------
# A tiny real grid on the synthetic seven classes
# --------------------------------------------------------------------------

def test_seven_class_pipeline_end_to_end(tmp_path, cache_dir):
    from dpaat_lib import report

    kw = dict(results_root=tmp_path, cache_dir=cache_dir, image_size=16, epochs=1, seeds=(0, 1))
    prof, res = report.load_grid("quick-7", methods=("std", "dpaat"), **kw)
    assert len(res) == 4 and all(r.config.data.classes == ALL_CLASSES for r in res)
    assert all(r.config.train.sampler == "balanced" for r in res)
    m = res[0].metrics
    assert set(m["BAcc"]) == set(m["macroF1"]) == {"clean", *m["RAcc"]}
    labels = res[0].predictions["label"]
    assert labels.nunique() == 7 and labels.value_counts().max() > 3 * labels.value_counts().min()
    table = study.imbalance_table(res)
    assert {"Acc clean", "BAcc clean", "F1 clean", "BAcc 20-PGD"} <= set(table.columns)
    recall = study.per_class_recall(res)
    assert set(recall.columns) >= set(ALL_CLASSES) and set(recall["attack"]) == {"clean", "20-PGD"}
    sig = study.significance(res, "DPAAT", "STD", metric="bacc", n_boot=200)
    assert list(sig["seeds"]) == [2, 2]
    text = study.seven_class_findings(res, sig)
    assert "balanced accuracy" in text and "paired t-test across 2 seeds" in text and "mean of 2 seeds" in text
    # one epoch each: every run kept its first, and is named as barely trained
    assert "4 run(s) kept their first epoch" in text and "DPAAT seed 1 (1 epoch run, balanced accuracy" in text
    later = [replace(r, history={**r.history, "best_epoch": 2}) for r in res[1:]]
    assert "1 run(s) kept their first epoch" in study.seven_class_findings([res[0], *later], sig)
    counts = study.split_class_counts(res[0].config.data, cache_dir=cache_dir, results=tmp_path)
    assert list(counts["class"]) == list(ALL_CLASSES) and (counts[["train", "val", "test"]] > 0).all().all()
    # stored, so a page re-executed without the data shows the same counts
    assert list(tmp_path.glob("class-counts-*.json"))
    stored = study.split_class_counts(replace(res[0].config.data, source="ham10000"), results=tmp_path)
    assert stored.empty  # another data identity is not found in the store ...
    again = study.split_class_counts(res[0].config.data, results=tmp_path, cache_dir=tmp_path / "no-cache")
    pd.testing.assert_frame_equal(again, counts)  # ... the same one is, without making the data again
    assert counts[["train", "val", "test"]].to_numpy().sum() == sum(experiment.SYNTHETIC_ARGS["n_per_class"].values())
    assert "SYNTHETIC" in study.seven_class_banner(prof, res)
    sweeps = study.load_sweeps("quick-7", {"lam": (0.5, 1.0)}, **kw)
    assert [len(v) for v in sweeps["lam"].values()] == [2, 2]
    assert sweeps["lam"][1.0][0].run_id == res[2].run_id  # lam = 1.0 is the main grid's DPAAT run, loaded


def test_below_chance_note_names_models_that_gained_no_robustness():
    import dataclasses

    res = _grid(0.15)
    assert study.below_chance_note(res) == ""  # the planted grid is above chance (3 classes)
    # one class: chance is 100%, so every method falls below it and is named
    one = [dataclasses.replace(r, config=dataclasses.replace(
        r.config, data=dataclasses.replace(r.config.data, classes=("nv",)))) for r in res]
    note = study.below_chance_note(one)
    assert note.startswith("**Below chance.**") and "below the 100.0% of a constant guess" in note
    radius = next(a.eps for a in one[0].config.eval_attacks if a.name == "20-PGD")
    assert f"under 20-PGD at radius {radius:.3g}," in note  # a page shows some CNNs at two radii
    model = one[0].config.model
    at = [r for r in one if r.config.method.name == "at" and r.config.model == model]
    pgd, clean = (100 * np.mean([study.metric_value(r, "acc", a) for r in at]) for a in ("20-PGD", "clean"))
    assert f"On {model}, " in note and f"AT {pgd:.1f}% (clean {clean:.1f}%)" in note
    assert all(f"{m} " in note for m in ("AT", "SAT", "AMAT", "DPAAT")) and "compares two failures" in note


# --------------------------------------------------------------------------
# Section (d): the full schedule against the capped one
# --------------------------------------------------------------------------

def _scheduled(results, epochs: int, patience: int, run: int, kept: int):
    """The fake runs with a training schedule and a history of ``run`` epochs, ``kept`` kept."""
    out = []
    for r in results:
        train = replace(r.config.train, epochs=epochs, patience=patience)
        hist = {"finished": True, "best_epoch": kept,
                "epochs": [{"epoch": e, "seconds": 1.0, "val_loss": 1.0} for e in range(1, run + 1)]}
        out.append(replace(r, config=replace(r.config, train=train), history=hist))
    return out


def _schedules(gain: float, seeds=(0, 1, 2)):
    capped = _scheduled(_grid(0.0, seeds=seeds, seed=0), 12, 4, run=12, kept=12)
    full = _scheduled(_grid(gain, seeds=seeds, seed=1), 60, 5, run=30, kept=25)
    return capped, full


def test_schedule_overrides_are_method_md_s_schedule_unless_given():
    assert study.schedule_overrides("cpu-real") == {"epochs": 60, "patience": 5}
    assert study.schedule_overrides("cpu-real", epochs=40, patience=None) == {"epochs": 40, "patience": 5}
    assert study.schedule_overrides("quick")["epochs"] > profiles.get_profile("quick").epochs
    # method.md section 6 when fine-tuning: 10 epochs of the head, then up to 50 of all layers
    assert study.schedule_overrides("cpu-real", weights="imagenet") == {"epochs": 50, "patience": 5}
    assert study.schedule_overrides("cpu-real", weights="w/", epochs=30) == {"epochs": 30, "patience": 5}
    assert study.schedule_overrides("quick", weights="w/") == study.schedule_overrides("quick")


def test_schedule_change_pairs_the_seeds_and_finds_a_planted_gain():
    capped, full = _schedules(0.3)
    change = study.schedule_change(capped, full, attacks=("20-PGD",))
    assert list(change["comparison"]) == ["AT: full - capped", "SAT: full - capped", "AMAT: full - capped",
                                          "DPAAT: full - capped"]
    row = change.set_index("comparison").loc["DPAAT: full - capped"]
    assert 20 < row["mean"] < 40 and row["p_holm"] < 0.05 and len(row["per_seed"]) == 3
    at = change.set_index("comparison").loc["AT: full - capped"]
    assert abs(at["mean"]) < 10 and at["p_holm"] > 0.05
    # the per-seed differences are those of the runs' own accuracies
    by = {(study._label(r), r.config.train.seed): r for r in capped}
    dp = [r for r in full if study._label(r) == "DPAAT"]
    want = [round(100 * (study.metric_value(r, "acc", "20-PGD")
                         - study.metric_value(by[("DPAAT", r.config.train.seed)], "acc", "20-PGD")), 2) for r in dp]
    assert row["per_seed"] == want

    sig_c = study.significance_table(capped, attacks=("20-PGD",))
    sig_f = study.significance_table(full, attacks=("20-PGD",))
    text = study.schedule_findings(capped, full, change, sig_c, sig_f)
    assert "0 of 3 comparisons keep their verdict" in text
    assert "DPAAT - AT 20-PGD" in text and "(within noise) capped" in text and "(higher beyond noise) full" in text
    assert "1 moved beyond seed noise" in text and "DPAAT 20-PGD +" in text
    assert "12 of 12 runs cut short" in text and "0 of 12 runs reached the cap" in text

    table = study.schedule_table(capped, full)
    assert table.loc[("smallcnn", "AT"), "epochs run/kept (full)"] == "30/25, 30/25, 30/25"
    assert table.loc[("smallcnn", "AT"), "cut by the cap (capped)"] == "3 of 3"
    assert table.loc[("smallcnn", "AT"), "mean epochs (full)"] == 30


def test_schedule_findings_names_the_runs_both_schedules_trained_alike():
    capped, _ = _schedules(0.0)
    same = _scheduled(capped, 60, 5, run=16, kept=12)  # stopped early at the capped run's epoch: same predictions
    text = study.schedule_findings(capped, same, study.schedule_change(capped, same, attacks=("20-PGD",)),
                                   pd.DataFrame(), pd.DataFrame())
    assert "12 of them (AT seed 0, SAT seed 0" in text and "reproduce the capped run's predictions exactly" in text
    assert "12 of them" not in study.schedule_findings(capped, _schedules(0.0)[1], pd.DataFrame(), pd.DataFrame(),
                                                       pd.DataFrame())


def test_schedule_change_without_a_gain_keeps_the_verdicts():
    capped, full = _schedules(0.0)
    change = study.schedule_change(capped, full, attacks=("clean", "20-PGD"))
    assert not (change["p_holm"] < 0.05).any()
    text = study.schedule_findings(capped, full, change, study.significance_table(capped, attacks=("20-PGD",)),
                                   study.significance_table(full, attacks=("20-PGD",)))
    assert "3 of 3 comparisons keep their verdict" in text and "0 moved beyond seed noise" in text


def test_schedule_change_with_one_seed_reads_signs_and_refuses_other_test_images():
    capped, full = _schedules(0.3, seeds=(0,))
    change = study.schedule_change(capped, full, attacks=("20-PGD",))
    text = study.schedule_findings(capped, full, change, study.significance_table(capped, attacks=("20-PGD",)),
                                   study.significance_table(full, attacks=("20-PGD",)))
    assert "one seed: signs only" in text and "with one seed, the sign" in text
    assert study.schedule_findings(capped, capped, change, pd.DataFrame(), pd.DataFrame()).startswith(
        "The full schedule is this chapter's schedule here")
    other = [replace(r, predictions=r.predictions.assign(image_id=[f"x{k}" for k in range(len(r.predictions))]))
             for r in full]
    with pytest.raises(ValueError, match="tested on different images"):
        study.schedule_change(capped, other)


def test_schedule_note_says_whether_the_long_schedule_is_method_md_s():
    capped = profiles.get_profile("cpu-real")
    text = study.schedule_note(capped, profiles.get_profile("cpu-real", **study.schedule_overrides("cpu-real")))
    assert "Part (a): up to 12 epochs, patience 4. Here: up to 60 epochs, patience 5, method.md's schedule" in text
    quick = profiles.get_profile("quick", **study.schedule_overrides("quick"))
    assert "the quick build's stand-in" in study.schedule_note(profiles.get_profile("quick"), quick)
    tuned = profiles.get_profile("cpu-real", **study.schedule_overrides("cpu-real", weights="imagenet"))
    text = study.schedule_note(capped, tuned, "imagenet")
    assert ("Here: up to 50 epochs, patience 5, method.md's schedule when fine-tuning (its section 6). Both count "
            "the epochs of all layers, after 10 of the head alone.") in text
    text = study.schedule_note(capped, profiles.get_profile("cpu-real", **study.schedule_overrides("cpu-real")),
                               "imagenet")  # 60 epochs after the head: not method.md's when fine-tuning
    assert "not method.md's schedule when fine-tuning (up to 50 epochs, patience 5)." in text


def _dpaat_minus_at(results, attack="20-PGD") -> float:
    """Chapter 12's mean DPAAT - AT difference (points) under ``attack``, as the headlines must quote it."""
    table = study.significance_table(results, attacks=(attack,)).set_index(["comparison", "attack"])
    return table.loc[("DPAAT - AT", attack), "mean"]


def test_schedule_headline_agrees_with_chapter_12_and_needs_every_run():
    capped, full = _schedules(0.3)
    attacks = ("20-PGD",)
    text = study.schedule_headline(capped, full, attacks=attacks)
    change = study.schedule_change(capped, full, attacks=attacks)
    moved = int((change["p_holm"] < 0.05).sum())
    assert moved == 1 and f"{moved} of {len(change)} accuracies (method x attack) moved beyond seed noise" in text
    at, at_c = _dpaat_minus_at(full), _dpaat_minus_at(capped)
    assert f"20-PGD {at_c:+.1f} points capped, {at:+.1f} on the full schedule (higher beyond noise)" in text
    assert "they ran 30 to 30 epochs (0 reached that cap" in text and "0 of 3 comparisons" in text
    assert study.schedule_headline(capped, full[:-1], attacks=attacks) == ""  # one run missing: no sentence
    assert study.schedule_headline(capped, capped, attacks=attacks) == ""


# --------------------------------------------------------------------------
# Section (e): the paper's radius per pixel against the profile's eps0
# --------------------------------------------------------------------------

def _at_radius(results, eps: float):
    """The fake runs with a training attack of L2 radius ``eps`` and their L2 evaluation attacks at it, as
    chapter 12 (e) trains and evaluates them (another run id, same seeds)."""
    from dpaat_lib.attacks import training_attack

    def moved(config):
        return replace(config, method=replace(config.method, attack=training_attack(eps, 0.3 * eps, 7)),
                       eval_attacks=tuple(a.with_eps(eps) if a.norm == "l2" else a for a in config.eval_attacks))

    return [replace(r, config=moved(r.config)) for r in results]


def test_threat_overrides_give_the_paper_s_change_per_pixel():
    cpu = profiles.get_profile("cpu-real")
    over = study.threat_overrides(cpu)
    # the same root-mean-square change per value at 32 px as eps0 = 0.5 at 224 px: a seventh of the radius
    assert report.l2_rms_per_value(over["eps0"], 32) == pytest.approx(report.l2_rms_per_value(0.5, 224))
    assert over["eps0"] == pytest.approx(0.5 / 7) and over["train_step_size"] == pytest.approx(0.15 / 7)
    # the exact floats of the stored runs of section (e) (their run ids hash them)
    assert (over["eps0"], over["train_step_size"]) == (0.07142857142857142, 0.02142857142857143)
    quick16 = profiles.get_profile("quick", image_size=16)
    assert study.threat_overrides(quick16)["eps0"] == pytest.approx(0.5 * 16 / 224)
    assert study.threat_overrides(profiles.get_profile("paper")) == {}  # already the paper's resolution
    given = study.threat_overrides(cpu, 0.2)
    assert given == {"eps0": 0.2, "train_step_size": pytest.approx(0.06)}  # the step keeps its ratio to eps0
    for bad in (0, -0.1, float("nan"), float("inf"), True, "0.1"):
        with pytest.raises(ValueError, match="threat_eps0 must be a positive L2 radius"):
            study.threat_overrides(cpu, bad)
    # the runs of the overridden profile attack at that radius, in training and in the PGD columns
    cfg = profiles.run_config(profiles.get_profile("cpu-real", **over), "smallcnn", "dpaat", 0,
                              profiles.data_config(cpu, "d"))
    assert cfg.method.attack.eps == over["eps0"]
    assert {a.name: a.eps for a in cfg.eval_attacks}["20-PGD"] == over["eps0"]
    assert {a.name: a.eps for a in cfg.eval_attacks}["FGSM"] == pytest.approx(2 / 255)


def test_threat_note_states_both_radii_per_pixel():
    cpu = profiles.get_profile("cpu-real")
    matched = profiles.get_profile("cpu-real", **study.threat_overrides(cpu))
    text = study.threat_note(cpu, matched)
    assert "Part (a): PGD-L2 eps0 = 0.5, 7 steps of 0.15, a root-mean-square change of 2.30/255" in text
    assert "(7.0 times the paper's 0.33/255 at 224 px)" in text
    assert "Here: PGD-L2 eps0 = 0.07143, 7 steps of 0.02143, a root-mean-square change of 0.33/255" in text
    assert "(1.0 times the paper's" in text
    assert study.threat_note(cpu, cpu).startswith("**Radius.** Part (a) already")
    assert study.threat_names(cpu, matched) == ("eps0 0.5", "eps0 0.0714")
    assert "FGSM and I-FGSM keep their Linf 2/255" in text
    wider = [profiles.profile_for("cpu-real", linf_eps="8/255", **o) for o in ({}, study.threat_overrides(cpu))]
    assert "FGSM and I-FGSM keep their Linf 8/255" in study.threat_note(*wider)  # -p linf_eps reaches (e) too


def test_threat_findings_find_a_planted_gain_and_the_runs_trained_alike():
    base = _grid(0.0, seed=0)
    matched = _at_radius(_grid(0.3, seed=1), 0.0714)
    # AT seed 0 trained alike in both grids: the same clean predictions
    k = next(i for i, r in enumerate(matched) if study._label(r) == "AT" and r.config.train.seed == 0)
    twin = next(r for r in base if study._label(r) == "AT" and r.config.train.seed == 0)
    matched[k] = replace(matched[k],
                         predictions=matched[k].predictions.assign(pred_clean=twin.predictions["pred_clean"]))
    names = ("eps0 0.5", "eps0 0.0714")
    change = study.variant_change(base, matched, names=names, attacks=("clean",))
    assert list(change["comparison"])[0] == "AT: eps0 0.0714 - eps0 0.5"
    sig_b = study.significance_table(base, attacks=("20-PGD",))
    sig_m = study.significance_table(matched, attacks=("20-PGD",))
    text = study.threat_findings(base, matched, change, sig_b, sig_m, names)
    assert "**Runs trained alike.** 1 of 12 runs (AT seed 0) gives the same clean predictions in both grids" in text
    assert "still differ" not in text  # no STD run in the fake grid: nothing to explain
    assert "0 of 3 comparisons keep their verdict" in text
    assert "DPAAT - AT 20-PGD" in text and "(within noise) at eps0 0.5" in text
    assert "(higher beyond noise) at eps0 0.0714" in text
    def pgd_mean(rs):
        return 100 * np.mean([study.metric_value(r, "acc", "20-PGD") for r in rs if study._label(r) == "DPAAT"])

    assert f"DPAAT {pgd_mean(base):.1f} -> {pgd_mean(matched):.1f}" in text
    table = study.verdict_changes(sig_b, sig_m, names=names)
    assert list(table.columns) == ["model", "comparison", "attack", "mean eps0 0.5", "eps0 0.5", "mean eps0 0.0714",
                                   "eps0 0.0714", "kept"]
    assert not table["kept"].any()
    assert study.threat_findings(base, base, change, sig_b, sig_b, names).startswith("This grid already runs")
    assert study.threat_findings(base, [], change, sig_b, sig_b, names) == "No runs at the paper's per-pixel radius."


def test_threat_headline_agrees_with_chapter_12_and_needs_every_run():
    base = _at_radius(_grid(0.0, seed=0), 0.5)
    matched = _at_radius(_grid(0.3, seed=1), 0.0714)
    attacks = ("20-PGD",)
    text = study.threat_headline(base, matched, attacks=attacks)
    at, at_b = _dpaat_minus_at(matched), _dpaat_minus_at(base)
    assert f"20-PGD {at_b:+.1f} points at eps0 0.5, {at:+.1f} at eps0 0.0714 (higher beyond noise)" in text
    assert "(eps0 = 0.0714 instead of 0.5" in text and "0 of 3 comparisons of DPAAT" in text
    assert "undefended STD" not in text  # no STD run in the fake grid: no yardstick sentence
    assert study.threat_headline(base, matched[:-1], attacks=attacks) == ""  # one run missing: no sentence
    assert study.threat_headline(base, base, attacks=attacks) == ""


def test_threat_headline_gives_every_attack_not_only_clean_and_pgd():
    """Chapter 1 gives DPAAT - AT under each attack chapter 12 tests: the Linf columns too, where (e)'s largest
    differences were."""
    base = _at_radius(_grid(0.0, seed=0, more={"FGSM": 0.5, "20-IFGSM": 0.4}), 0.5)
    matched = _at_radius(_grid(0.0, seed=1, more={"FGSM": 0.5, "20-IFGSM": 0.4}), 0.0714)
    text = study.threat_headline(base, matched, attacks=("clean", "FGSM", "20-IFGSM", "20-PGD"))
    assert all(f"; {a} " in text for a in ("FGSM", "20-IFGSM", "20-PGD")) and "DPAAT - AT: clean " in text
    assert "12 of 12 comparisons" in text


def test_threat_findings_name_an_std_run_that_differs_without_an_attack():
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(3), 100)
    base = [_fake("std", s, y, {"clean": 0.8, "20-PGD": 0.1}, rng) for s in (0, 1)]
    matched = _at_radius([_fake("std", s, y, {"clean": 0.8, "20-PGD": 0.7}, rng) for s in (0, 1)], 0.0714)
    matched[0] = replace(matched[0], predictions=matched[0].predictions.assign(
        pred_clean=base[0].predictions["pred_clean"]))
    text = study.threat_findings(base, matched, pd.DataFrame(), pd.DataFrame(), pd.DataFrame(),
                                 ("eps0 0.5", "eps0 0.0714"))
    assert "1 of 2 runs (STD seed 0) gives the same clean predictions" in text
    assert "STD seed 1 still differs: something other than the radius changed" in text
    pgd = [100 * np.mean([study.metric_value(r, "acc", "20-PGD") for r in rs]) for rs in (base, matched)]
    assert f"(seed means, %; eps0 0.5 -> eps0 0.0714): STD {pgd[0]:.1f} -> {pgd[1]:.1f}." in text
    # the paper's STD keeps 12.34% under 20-PGD: the planted 10% of the base grid is the closer match
    assert (f"20-step PGD leaves {pgd[0]:.1f}% at eps0 0.5 and {pgd[1]:.1f}% at eps0 0.0714; "
            "the paper's STD keeps 12.34%") in text
    assert "By that yardstick eps0 0.5 is the closer match" in text


def _two_cnns(effect: dict[str, float], seed: int, eps: float):
    """Fake AT and DPAAT runs on two CNNs outside the main grid, 3 seeds, DPAAT's 20-PGD shifted per CNN."""
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(3), 200)
    runs = []
    for model, shift in effect.items():
        for s in (0, 1, 2):
            level = 0.5 + 0.02 * rng.standard_normal()
            runs += [_fake(m, s, y, {"clean": 0.8, "20-PGD": level + (shift if m == "dpaat" else 0.0)}, rng,
                           model=model) for m in ("at", "dpaat")]
    return _at_radius(runs, eps)


def test_threat_findings_name_each_cnn_outside_the_main_grid():
    base = _two_cnns({"mobilenet_v2": 0.0, "resnet34": 0.0}, seed=0, eps=0.5)
    matched = _two_cnns({"mobilenet_v2": 0.3, "resnet34": 0.0}, seed=1, eps=0.0714)
    names = ("eps0 0.5", "eps0 0.0714")
    change = study.variant_change(base, matched, names=names, attacks=("clean",))
    sig_b, sig_m = (study.significance_table(rs, "DPAAT", ("AT",), attacks=("20-PGD",)) for rs in (base, matched))
    text = study.threat_findings(base, matched, change, sig_b, sig_m, names)
    # every sentence says which CNN a number belongs to, since the tables hold two
    assert "1 of 2 comparisons keep their verdict" in text
    assert "mobilenet_v2, DPAAT - AT 20-PGD" in text and "(higher beyond noise) at eps0 0.0714" in text
    assert "resnet34, DPAAT - AT 20-PGD" in text
    assert "The largest changes: mobilenet_v2, " in text or "The largest changes: resnet34, " in text

    def pgd_mean(rs, model):
        return 100 * np.mean([study.metric_value(r, "acc", "20-PGD") for r in rs
                              if study._label(r) == "DPAAT" and r.config.model == model])

    for model in ("mobilenet_v2", "resnet34"):
        assert f"{model} DPAAT {pgd_mean(base, model):.1f} -> {pgd_mean(matched, model):.1f}" in text
    assert "Runs trained alike" not in text and "undefended STD" not in text  # no STD: neither check applies
    # one CNN: no names, as in the main grid's reading
    one = [r for r in matched if r.config.model == "resnet34"]
    one_text = study.threat_findings([r for r in base if r.config.model == "resnet34"], one,
                                     change[change["model"] == "resnet34"], sig_b[sig_b["model"] == "resnet34"],
                                     sig_m[sig_m["model"] == "resnet34"], names)
    assert "resnet34," not in one_text and "DPAAT - AT 20-PGD" in one_text


def test_threat_models_are_the_cnns_outside_the_main_grid():
    assert study.threat_models("cpu-real", ("smallcnn",)) == study.THREAT_MODELS["cpu-real"]
    assert study.threat_models("quick", ("smallcnn",)) == ()
    assert study.threat_models("cpu-real", ("smallcnn",), "resnet34") == ("resnet34",)  # one name, as papermill
    assert study.threat_models("cpu-real", ("smallcnn",), ["smallcnn", "resnet34", "resnet34"]) == ("resnet34",)
    with pytest.raises(ValueError, match="unknown CNN.*'resnet99'.*choose from"):
        study.threat_models("cpu-real", (), ["resnet99"])


def test_threat_headline_reads_the_cnns_outside_the_main_grid_where_all_are_there():
    base = _at_radius(_grid(0.0, seed=0), 0.5)
    matched = _at_radius(_grid(0.0, seed=1), 0.0714)
    ob = _two_cnns({"mobilenet_v2": 0.0, "resnet34": 0.0}, seed=0, eps=0.5)
    om = _two_cnns({"mobilenet_v2": 0.3, "resnet34": 0.0}, seed=1, eps=0.0714)
    attacks = ("20-PGD",)
    text = study.threat_headline(base, matched, attacks=attacks, other_base=ob, other_matched=om)
    at = study.significance_table(om, "DPAAT", ("AT",), attacks=attacks).set_index(["model", "attack"])["mean"]
    assert "On mobilenet_v2 and resnet34 (DPAAT and AT only), DPAAT - AT: " in text
    mobilenet = at[("mobilenet_v2", "20-PGD")]
    assert "mobilenet_v2, 20-PGD " in text and f"{mobilenet:+.1f} at eps0 0.0714 (higher beyond noise)" in text
    assert "resnet34, 20-PGD " in text and "1 of 2 comparisons of DPAAT with AT keep their verdict" in text
    assert "3 of 3 comparisons of DPAAT with AT, SAT and AMAT" in text  # the main grid's, unchanged
    assert "Below chance" not in text  # 50% and more under 20-PGD: above the 33.3% of a constant guess
    def failed(runs):  # every image wrong under 20-PGD
        return [replace(r, predictions=r.predictions.assign(**{"pred_20-PGD": (r.predictions["label"] + 1) % 3}))
                for r in runs]

    low = failed(om)
    text = study.threat_headline(base, matched, attacks=attacks, other_base=ob, other_matched=low)
    assert "**Below chance.** On mobilenet_v2, AT 0.0% (clean " in text and "DPAAT 0.0% (clean " in text
    # named with its radius, and only at the radius where it is below chance
    assert text.count("**Below chance.**") == 1 and "under 20-PGD at radius 0.0714," in text
    both = study.threat_headline(base, matched, attacks=attacks, other_base=failed(ob), other_matched=low)
    assert both.count("**Below chance.**") == 2 and "under 20-PGD at radius 0.5," in both
    # a run missing outside the main grid: the main grid's sentence alone
    assert study.threat_headline(base, matched, attacks=attacks, other_base=ob, other_matched=om[:-1]) == \
        study.threat_headline(base, matched, attacks=attacks)


@pytest.mark.parametrize("low, high, shown", [(0.036, 1.6, "[+0.04, +1.6]"), (0.0, 1.44, "[+0.0, +1.4]"),
                                              (-1.23, -0.0004, "[-1.2, -0.0004]"), (-0.5, 2.0, "[-0.5, +2.0]")])
def test_an_interval_shows_whether_it_excludes_zero(low, high, shown):
    """A bound that one decimal would show as +0.0 or -0.0 while it is not zero gets the decimals it needs."""
    assert study.ci_text(low, high) == shown
