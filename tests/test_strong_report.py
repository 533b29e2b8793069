"""Fast tests of dpaat_lib.strong_report (chapter 11; no training, no data): the strong suite and the
masking checks scaled to the profile, stored evaluations loaded and missing ones listed, the per-image
worst case per norm, the every-seed comparison, and the tables and findings."""
from __future__ import annotations

import dataclasses
import json

import numpy as np
import pandas as pd
import pytest

from dpaat_lib import profiles, report, store, strong_report
from fakes import ATTACKS, fake_result


def fake_strong_eval(cfg, *, fail: str | None = None, n: int = 60) -> dict:
    """A stored robust_eval_result as the chapter reads it, with made-up accuracies; ``fail`` names a
    masking check that fails (in L2)."""
    paper = {"FGSM": 0.6, "10-IFGSM": 0.55, "20-IFGSM": 0.5, "20-PGD": 0.4, "50-PGD": 0.4}
    strong = {"APGD-CE-Linf": 0.45, "APGD-DLR-Linf": 0.5, "Square-Linf": 0.7,
              "APGD-CE-L2": 0.35, "APGD-DLR-L2": 0.4, "Square-L2": 0.65}
    masking = []
    for norm, eps in (("linf", 2 / 255), ("l2", 0.5)):
        lab = "Linf" if norm == "linf" else "L2"
        bad = norm == "l2"
        masking += [
            {"check": "more_steps", "passed": not (bad and fail == "more_steps"),
             "detail": {"norm": norm, "eps": eps, "attack": f"APGD-CE-{lab}", "steps": [5, 20, 40],
                        "accuracy": [0.5, 0.45, 0.45], "correct": [30, 27, 27], "n_images": n,
                        "converged": True}},
            {"check": "restarts", "passed": True,
             "detail": {"norm": norm, "eps": eps, "attack": f"APGD-CE-{lab}", "restarts": [1, 2, 4],
                        "accuracy": [0.5, 0.5, 0.5], "correct": [30, 30, 30], "n_images": n, "converged": True}},
            {"check": "eps_to_zero", "passed": not (bad and fail == "eps_to_zero"),
             "detail": {"norm": norm, "eps": [0.0, eps, 4 * eps, 0.3], "accuracy": [0.8, 0.45, 0.1, 0.0],
                        "correct": [48, 27, 6, 0], "n_images": n, "monotone": True, "final_accuracy": 0.0,
                        "max_final_correct": 6, "max_final_accuracy": 0.1, "attack": f"PGD-20-{lab}"}},
            {"check": "blackbox_not_stronger", "passed": not (bad and fail == "blackbox_not_stronger"),
             "detail": {"norm": norm, "eps": eps, "white_acc": 0.35, "black_acc": 0.65, "n_images": n,
                        "black_attack": f"Square-{lab}", "fooled_only_by_black_box": 0}}]
    return {"run_id": cfg.run_id, "n_images": n, "clean_accuracy": 0.8,
            "robust_accuracy": {**paper, **strong},
            "worst_case": {"paper": 0.4, "strong": 0.33, "all": 0.3, "all_linf": 0.43, "all_l2": 0.33},
            "masking": masking, "masking_passed": all(c["passed"] for c in masking),
            "spec": {"suite": [{"name": "APGD-CE-Linf", "norm": "linf", "eps": 2 / 255},
                               {"name": "APGD-CE-L2", "norm": "l2", "eps": 0.5}]}}


def test_profiles_carry_the_strong_evaluation_budget_outside_the_run_identity():
    quick = profiles.get_profile("quick")
    data = profiles.data_config(quick, digest="0123456789abcdef")
    base = profiles.run_config(quick, "smallcnn", "dpaat", 0, data)
    other = profiles.run_config(profiles.get_profile("quick", apgd_steps=7, strong_images=9, square_queries=3),
                                "smallcnn", "dpaat", 0, data)
    assert base.run_id == other.run_id
    text = json.dumps(base.to_dict())
    assert "apgd" not in text and "square" not in text and "strong" not in text


def test_strong_suite_and_masking_scale_with_the_profile():
    paper = profiles.get_profile("paper", apgd_steps=100)
    assert strong_report.strong_masking_options(paper)["steps"] == [25, 100, 200]
    quick = profiles.get_profile("quick")
    m = strong_report.strong_masking_options(quick)
    assert m["steps"] == [5, 20, 40] and m["restarts"] == [1, 2, 4]
    cfg = fake_result("smallcnn", "at", seed=3).config
    suite = strong_report.strong_suite_for(quick, cfg)
    assert [a.name for a in suite] == ["APGD-CE-Linf", "APGD-DLR-Linf", "Square-Linf",
                                       "APGD-CE-L2", "APGD-DLR-L2", "Square-L2"]
    assert {a.seed for a in suite} == {3}
    assert {a.steps for a in suite if a.kind != "square"} == {20}
    assert {a.steps for a in suite if a.kind == "square"} == {200}
    assert {a.eps for a in suite if a.norm == "l2"} == {cfg.method.eps0}
    assert [a.eps for a in suite if a.norm == "linf"] == pytest.approx([2 / 255] * 3)


def test_strong_evaluations_load_stored_results_and_list_runs_without_a_checkpoint(tmp_path):
    from dpaat_lib import robustness

    prof = profiles.get_profile("quick")
    stored, bare = fake_result("smallcnn", "at", tmp=tmp_path), fake_result("smallcnn", "dpaat", tmp=tmp_path)
    path = robustness.robust_eval_path(stored.config, tmp_path, strong_report.strong_suite_for(prof, stored.config),
                                       prof.strong_images, masking=strong_report.strong_masking_options(prof))
    assert path.parent == tmp_path / stored.run_id
    store.write_json(path, fake_strong_eval(stored.config))
    evals, missing = strong_report.strong_evaluations([stored, bare], prof, tmp_path)
    assert list(evals) == [("smallcnn", "AT", 0)] and missing == [bare.run_id]
    assert evals[("smallcnn", "AT", 0)]["worst_case"]["all"] == 0.3
    assert "60 test images" in strong_report.strong_settings(prof, evals)
    assert "in one batch" in strong_report.strong_settings(prof, evals)  # 60 images, batches of 128
    assert "in batches of 50" in strong_report.strong_settings(dataclasses.replace(prof, strong_batch=50), evals)
    assert "each in Linf (eps = 2/255)" in strong_report.strong_settings(prof, evals)
    assert "each in Linf (eps = 8/255)" in strong_report.strong_settings(dataclasses.replace(prof, linf_eps=8 / 255),
                                                                        evals)


def fake_whole_test_eval(cfg, right: dict[str, np.ndarray]) -> dict:
    """A stored whole-test-set evaluation (no masking checks): per-image 0/1 per column of ``right``
    (clean, the paper's five attacks, the suite's six), as robust_eval_result writes it."""
    suite = strong_report.strong_suite_for(profiles.get_profile("quick"), cfg)
    n = len(right["clean"])
    return {"run_id": cfg.run_id, "n_images": n, "image_ids": [f"ISIC_{k:07d}" for k in range(n)],
            "spec": {"suite": [a.to_dict() for a in suite], "n_images": None, "masking": None, "batch_size": 128},
            "per_image": {c: np.asarray(v, int).tolist() for c, v in right.items()}, "masking": None}


def _right(rng, n: int, p: float) -> dict[str, np.ndarray]:
    names = ["clean", *ATTACKS, "APGD-CE-Linf", "APGD-DLR-Linf", "Square-Linf", "APGD-CE-L2", "APGD-DLR-L2",
             "Square-L2"]
    return {c: rng.random(n) < (0.9 if c == "clean" else p) for c in names}


def test_worst_case_frame_takes_each_norm_from_the_run_and_its_suite():
    cfg = fake_result("smallcnn", "dpaat").config
    right = _right(np.random.default_rng(0), 200, 0.8)
    f = strong_report.worst_case_frame(fake_whole_test_eval(cfg, right), cfg)
    assert list(f.columns) == list(strong_report.WORST_CASE_COLUMNS) and f.index[3] == "ISIC_0000003"
    linf = right["clean"] & right["FGSM"] & right["10-IFGSM"] & right["20-IFGSM"] & right["APGD-CE-Linf"] \
        & right["APGD-DLR-Linf"] & right["Square-Linf"]
    l2 = right["clean"] & right["20-PGD"] & right["50-PGD"] & right["APGD-CE-L2"] & right["APGD-DLR-L2"] \
        & right["Square-L2"]
    assert (f["worst case Linf"].to_numpy() == linf).all() and (f["worst case L2"].to_numpy() == l2).all()
    assert (f["worst case"].to_numpy() == (linf & l2)).all() and 0 < f["worst case"].sum() < f["worst case L2"].sum()
    assert (f["20-PGD"].to_numpy() == right["20-PGD"]).all()
    other = fake_whole_test_eval(cfg, {**right, "PGD-3-L2": right["clean"]})
    with pytest.raises(ValueError, match="belongs to another run"):
        strong_report.worst_case_frame(other, cfg)


def test_seed_worst_case_loads_every_seed_and_compares_the_methods(tmp_path):
    from dpaat_lib import robustness

    prof = profiles.get_profile("quick")
    assert prof.strong_all_seeds and profiles.get_profile("cpu-real").strong_all_seeds
    assert not profiles.get_profile("paper").strong_all_seeds
    rng = np.random.default_rng(1)
    runs = []
    for seed in range(3):
        for method, p in (("at", 0.55), ("dpaat", 0.75)):
            r = fake_result("smallcnn", method, seed=seed, tmp=tmp_path)
            path = robustness.robust_eval_path(r.config, tmp_path, strong_report.strong_suite_for(prof, r.config), None,
                                               masking=False, batch_size=prof.strong_batch)
            store.write_json(path, fake_whole_test_eval(r.config, _right(rng, 300, p)))
            runs.append(r)
    bare = fake_result("smallcnn", "sat", tmp=tmp_path)
    frames, missing = strong_report.seed_worst_case([*runs, bare], prof, tmp_path)
    assert list(frames) == [("smallcnn", m, s) for m in ("AT", "DPAAT") for s in range(3)]
    assert missing == [bare.run_id]
    table = strong_report.seed_worst_case_table(frames)
    assert list(table.index) == [("smallcnn", "AT"), ("smallcnn", "DPAAT")]
    assert (table["seeds"] == 3).all() and (table["images"] == "300").all() and "±" in table.iloc[0]["worst case"]
    sig = strong_report.seed_worst_case_significance(frames)
    assert list(sig["attack"]) == ["worst case Linf", "worst case L2"] and sig["exceeds_noise"].all()
    text = strong_report.seed_worst_case_findings(frames, sig, missing, prof)
    assert "3 seed(s), 300 test images" in text and "DPAAT higher" in text and bare.run_id in text
    # chapter 1's paragraph: DPAAT minus AT in the L2 worst case, the same numbers as the table's row
    row = sig[sig["attack"] == "worst case L2"].iloc[0]
    head = strong_report.worst_case_headline(frames, sig)
    # The verdict follows the Holm-adjusted p, as chapter 11's table does (one page, one verdict).
    beyond = "beyond" if row["p_holm"] < 0.05 else "within"
    assert (f"DPAAT minus AT {row['mean']:+.1f} points (p = {row['p_ttest']:.3f}, Holm p = {row['p_holm']:.3f}: "
            f"{beyond} seed-to-seed noise)") in head
    assert "every test image of 3 seed(s)" in head and "over chapter 11's 2 worst-case tests" in head
    assert strong_report.worst_case_headline({}, sig) == ""
    # The paper profile leaves it to a parameter, and says so.
    off = dataclasses.replace(prof, strong_all_seeds=False)
    assert strong_report.seed_worst_case(runs, off, tmp_path) == ({}, [])
    assert "strong_all_seeds=True" in strong_report.seed_worst_case_findings({}, sig.iloc[0:0], [], off)


def test_strong_tables_and_findings_from_stored_evaluations():
    at, dp = (fake_result("smallcnn", m).config for m in ("at", "dpaat"))
    evals = {("smallcnn", "DPAAT", 0): fake_strong_eval(dp, fail="blackbox_not_stronger"),
             ("smallcnn", "AT", 0): fake_strong_eval(at)}
    t = strong_report.strong_table(evals)
    assert list(t.index) == [("smallcnn", "AT", 0), ("smallcnn", "DPAAT", 0)]  # method order, not dict order
    row = t.loc[("smallcnn", "AT", 0)]
    assert (row["clean"], row["L2: 20-PGD (paper)"], row["L2: APGD-CE"], row["L2: worst case"],
            row["worst case, all attacks"]) == ("80.0", "40.0", "35.0", "33.0", "30.0")
    side = strong_report.strong_beside_paper(evals)
    assert side.loc[("smallcnn", "DPAAT", 0), "paper (all_six): 20-PGD"] == \
        f"{report.paper_value('I', 'all_six', 'DPAAT', '20-PGD'):.2f}"
    s = strong_report.masking_summary(evals)
    assert s.loc[("smallcnn", "AT", 0), "all checks"] == "pass"
    assert s.loc[("smallcnn", "DPAAT", 0), "black box not stronger (L2)"] == "FAIL"
    assert s.loc[("smallcnn", "DPAAT", 0), "black box not stronger (Linf)"] == "pass"
    d = strong_report.masking_detail(evals)
    assert len(d) == 16 and (d["result"] == "FAIL").sum() == 1
    first = d.iloc[0]
    assert (first["attack"], first["varied"], first["values"], first["accuracy (%)"]) == \
        ("APGD-CE-Linf", "steps", "5, 20, 40", "50.0, 45.0, 45.0")
    assert d.drop(columns=["seed"]).map(len).max().max() <= 50  # pandas cuts longer cells in the page
    text = strong_report.strong_findings(evals, missing=["x"], synthetic=True)
    assert "1 of 16 checks fail" in text and "signature of masked gradients" in text
    assert "-7.0 points" in text  # 20-PGD 40.0 -> worst case L2 33.0
    assert "SYNTHETIC" in text and "1 run(s)" in text
    key = ("smallcnn", "AT", 0)
    assert "every run passes all its checks (8 per run, 8 in all)" in strong_report.strong_findings({key: evals[key]})
    assert "No stronger evaluation" in strong_report.strong_findings({}, missing=["a"])
    fig = strong_report.plot_masking_eps(evals)
    assert len(fig.axes) == 2


def test_a_failed_eps_check_says_whether_the_sweep_reached_zero_before():
    cfg = fake_result("smallcnn", "amat").config
    e = fake_strong_eval(cfg, fail="eps_to_zero")
    text = strong_report.strong_findings({("smallcnn", "AMAT", 0): e})
    assert "already down to 0.0%" in text and "overshooting" in text
    sweep = next(c for c in e["masking"] if c["check"] == "eps_to_zero" and c["detail"]["norm"] == "l2")
    sweep["detail"]["correct"] = [48, 40, 30, 20]
    sweep["detail"]["accuracy"] = [0.8, 40 / 60, 0.5, 20 / 60]
    assert "never got below 33.3%" in strong_report.strong_findings({("smallcnn", "AMAT", 0): e})


def test_subset_gap_note_sets_the_subset_against_every_test_image():
    """The subset beside the paper against the whole test set, from the stored predictions: a subset on which the
    runs score higher is called easier, with the range of the gaps and the largest one."""
    label = np.arange(100) % 3
    preds = pd.DataFrame({"image_id": [f"i{k}" for k in range(100)], "label": label,
                          "pred_clean": np.where(np.arange(100) < 80, label, (label + 1) % 3),   # 80% right
                          "pred_20-PGD": np.where(np.arange(100) < 50, label, (label + 1) % 3)})  # 50% right
    r = fake_result("smallcnn", "at", preds=preds)
    evals = {("smallcnn", "AT", 0): {"n_images": 30, "clean_accuracy": 0.9, "robust_accuracy": {"20-PGD": 0.6}}}
    note = strong_report.subset_gap_note(evals, [r])
    assert "on the 30 images above minus its accuracy on all 100 test images is +10.0 to +10.0 points" in note
    assert "20-PGD 60.0 here against 50.0" in note or "clean 90.0 here against 80.0" in note
    assert "the subset is easier than the test set" in note
    evals[("smallcnn", "AT", 0)]["clean_accuracy"] = 0.7
    evals[("smallcnn", "AT", 0)]["robust_accuracy"]["20-PGD"] = 0.45
    assert "the subset is harder" in strong_report.subset_gap_note(evals, [r])
    assert strong_report.subset_gap_note(evals, [fake_result("smallcnn", "dpaat", preds=preds)]) == ""
