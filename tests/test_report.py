"""Fast tests of dpaat_lib.report (no training, no data): the paper's tables, the side-by-side
tables, group averages only for complete groups, the profile banner, paths, the paired
comparison, the eps-curve store and the book checker."""
from __future__ import annotations

import dataclasses
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from dpaat_lib import experiment, gradcam, methods, profiles, report, store, training
from dpaat_lib.models import GROUPS
from fakes import fake_result, write_model_module

REPO = Path(__file__).resolve().parents[1]


def test_paper_tables_have_the_published_shape_and_values():
    t1, t2 = report.paper_table1(), report.paper_table2()
    assert t1.shape == (15, 8) and list(t1.columns) == ["group", "method", *report.TABLE1_COLUMNS]
    assert t2.shape == (12, 7) and list(t2.columns) == ["group", "method", *report.TABLE2_COLUMNS]
    assert set(t1["group"]) == set(report.PAPER_GROUPS) == set(GROUPS)
    assert "STD" not in set(t2["method"])
    assert report.paper_value("I", "all_six", "DPAAT", "GAcc") == pytest.approx(70.71)
    assert report.paper_value("I", "widely_used", "STD", "20-IFGSM") == pytest.approx(0.04)
    assert report.paper_value("II", "all_six", "DPAAT", "mAP") == pytest.approx(0.8317)
    assert np.isnan(report.paper_value("II", "all_six", "STD", "mAP"))


def test_paper_tables_match_the_shared_copy_when_present():
    shared = REPO.parent / "shared" / "paper"
    if not (shared / "table1_robustness.csv").exists():
        pytest.skip("no shared/paper beside the checkout")
    pd.testing.assert_frame_equal(report.paper_table1(), pd.read_csv(shared / "table1_robustness.csv"))
    pd.testing.assert_frame_equal(report.paper_table2(), pd.read_csv(shared / "table2_precision.csv"))


def test_fmt_rounds_and_shows_spread_only_for_several_seeds():
    assert report.fmt(0.71234) == "71.2"
    assert report.fmt(0.71234, 0.0123, n=3) == "71.2 ± 1.2"
    assert report.fmt(0.71234, 0.0123, n=1) == "71.2"
    assert report.fmt(float("nan")) == "—"
    assert report.fmt(0.8317, scale=1.0, digits=3) == "0.832"


def test_side_by_side_aligns_methods_and_metrics():
    results = [fake_result("smallcnn", m, acc=0.5 + 0.05 * i) for i, m in enumerate(profiles.MAIN_METHODS)]
    t = report.side_by_side(results, "I")
    assert t.index.names == ["metric", "method"]
    assert list(t.columns) == ["ours: smallcnn", "paper: widely_used", "paper: lightweight", "paper: all_six"]
    assert len(t) == len(report.TABLE1_COLUMNS) * 5
    # ours in percent: DPAAT is the 5th method, acc 0.7
    assert t.loc[("GAcc", "DPAAT"), "ours: smallcnn"] == "70.0"
    assert t.loc[("20-PGD", "DPAAT"), "ours: smallcnn"] == "60.0"
    # the paper's number of the same row, as published
    assert t.loc[("GAcc", "DPAAT"), "paper: all_six"] == "70.71"
    assert t.loc[("20-PGD", "AT"), "paper: lightweight"] == "61.35"
    t2 = report.side_by_side(results, "II")
    assert t2.loc[("mAP", "STD"), "paper: all_six"] == "—"
    assert t2.loc[("mAP", "DPAAT"), "paper: all_six"] == "0.8317"
    assert t2.loc[("mAP", "DPAAT"), "ours: smallcnn"] == "0.700"


def test_mean_and_std_over_seeds():
    results = [fake_result("smallcnn", "at", seed=s, acc=a) for s, a in ((0, 0.6), (1, 0.7))]
    t = report.ours_table(results, "I")
    assert t.loc[("smallcnn", "AT"), "GAcc"] == f"65.0 ± {100 * np.std([0.6, 0.7], ddof=1):.1f}"
    assert t.loc[("smallcnn", "AT"), "seeds"] == 2


def test_mean_std_table_orders_formats_and_counts():
    runs = pd.DataFrame([
        {"model": "resnet34", "method": "DPAAT", "seed": 0, "a": 0.50, "b": 0.1},
        {"model": "resnet34", "method": "DPAAT", "seed": 1, "a": 0.60, "b": float("nan")},
        {"model": "resnet34", "method": "AT", "seed": 0, "a": 0.40, "b": 0.2},
        {"model": "alexnet", "method": "STD", "seed": 0, "a": 0.90, "b": 0.3},
    ])
    t = report.mean_std_table(runs, ["a", "b", "not stored"])
    # CNNs in the order they first appear (not alphabetical), methods in the paper's order
    assert list(t.index) == [("resnet34", "AT"), ("resnet34", "DPAAT"), ("alexnet", "STD")]
    assert list(t.columns) == ["a", "b", "seeds"] and list(t["seeds"]) == [1, 2, 1]
    assert t.loc[("resnet34", "DPAAT"), "a"] == f"55.0 ± {100 * np.std([0.5, 0.6], ddof=1):.1f}"
    assert t.loc[("resnet34", "AT"), "a"] == "40.0"  # one seed: no spread is shown
    assert t.loc[("resnet34", "DPAAT"), "b"] == "10.0"  # the seed without a value is left out of its mean
    assert report.mean_std_table(runs, ["a"], scale=1.0, digits=3).loc[("alexnet", "STD"), "a"] == "0.900"
    assert list(report.mean_std_table(runs.iloc[0:0], ["a"]).columns) == ["a", "seeds"]


def test_group_average_only_for_complete_groups():
    wide = GROUPS["widely_used"]
    full = [fake_result(m, meth, acc=0.5 + 0.1 * k) for k, m in enumerate(wide) for meth in ("at", "dpaat")]
    t = report.side_by_side(full, "I")
    assert "ours: widely_used" in t.columns and "ours: all_six" not in t.columns
    assert t.loc[("GAcc", "AT"), "ours: widely_used"] == "60.0"  # mean of 50, 60, 70
    partial = [r for r in full if r.config.model != wide[-1]]
    t = report.side_by_side(partial, "I")
    assert not any(c.startswith("ours: widely") for c in t.columns)
    # Every CNN of the group has AT, one lacks DPAAT (a GPU grid filled over several calls): AT is averaged,
    # DPAAT is not (the mean of two CNNs is not the group's).
    uneven = [r for r in full if not (r.config.model == wide[-1] and r.config.method.name == "dpaat")]
    t = report.side_by_side(uneven, "I")
    assert t.loc[("GAcc", "AT"), "ours: widely_used"] == "60.0"
    assert t.loc[("GAcc", "DPAAT"), "ours: widely_used"] == "—"
    assert "complete none" in report.group_note(m for m in wide[:2])
    assert "widely_used" in report.group_note(wide)


def test_profile_banner_says_synthetic_for_quick_only():
    quick = report.profile_banner(profiles.get_profile("quick")).data
    assert "SYNTHETIC" in quick and "`quick`" in quick and "32 px" in quick
    real = report.profile_banner(profiles.get_profile("cpu-real")).data
    assert "SYNTHETIC" not in real and "real HAM10000" in real


def test_make_profile_with_data_switches_quick_to_real_data():
    p = report.make_profile("quick", data_root="/some/where", epochs=None)
    assert p.source == "ham10000" and (p.n_train, p.n_val, p.n_test) == (800, 80, 299)
    assert report.make_profile("quick").synthetic
    assert report.make_profile("quick", epochs=2).epochs == 2


@pytest.mark.parametrize("given, expected", [("resnet18", ("resnet18",)), (["resnet18", "smallcnn"],
                                                                            ("resnet18", "smallcnn")),
                                             # papermill's -p models "[resnet18, smallcnn]": the list as text
                                             ("[resnet18, 'smallcnn']", ("resnet18", "smallcnn"))])
def test_a_pages_models_become_the_profiles_so_its_banner_and_figures_name_them(given, expected):
    p = report.make_profile("paper", models=given)
    assert p.models == expected and p.ablation_models == expected
    assert report.figure_models(p) == list(expected)[:2]  # chapter 8 draws the CNNs the page ran
    shown = report.profile_banner(p).data
    assert f"models: {', '.join(expected)} | ablation models: {', '.join(expected)} |" in shown
    assert f"- **Models**: {', '.join(expected)} (paper: " in report.deviations(p)
    for none in (None, [], ()):  # papermill's default and an empty list: the profile's own
        assert report.make_profile("paper", models=none).models == profiles.get_profile("paper").models


def test_a_pages_seeds_and_methods_may_come_as_papermill_text():
    assert report.make_profile("quick", seeds="[0, 1, 2]").seeds == (0, 1, 2)
    assert report.make_profile("quick", seeds=4).seeds == (4,) and report.make_profile("quick", seeds=[5]).seeds == (5,)
    with pytest.raises(ValueError, match=r"seeds must be whole numbers, e.g. \[0, 1, 2\], got '\[a\]'"):
        report.make_profile("quick", seeds="[a]")
    assert profiles.list_parameter("[std, 'at']") == ("std", "at") and profiles.list_parameter("dpaat") == ("dpaat",)
    assert profiles.list_parameter("[]") == () and profiles.list_parameter(("at",)) == ("at",)


def test_a_pages_unknown_model_is_refused_before_anything_runs():
    with pytest.raises(ValueError, match=r"unknown model\(s\) \['resnet19'\] in models=\['resnet18', 'resnet19'\]"
                                         r".*DPAAT_MODELS"):
        report.make_profile("quick", models=["resnet18", "resnet19"])


def test_paths_resolve_against_the_repository(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert report.repo_root() == REPO
    assert report.resolve_path("results") == REPO / "results"
    assert report.resolve_path(None, "results") == REPO / "results"
    assert report.resolve_path(tmp_path / "x") == tmp_path / "x"
    assert report.results_dir(profiles.get_profile("quick"), None) == REPO / "results" / "quick"


def test_paired_comparison_counts_discordant_images():
    ids = [f"i{k}" for k in range(10)]
    label = [0] * 10
    a = pd.DataFrame({"image_id": ids, "label": label, "pred_clean": [0] * 8 + [1] * 2})
    b = pd.DataFrame({"image_id": ids, "label": label, "pred_clean": [0] * 5 + [1] * 5})
    res = [fake_result("smallcnn", "dpaat", preds=a), fake_result("smallcnn", "at", preds=b)]
    t = report.paired_comparison(res, "DPAAT", "AT", attacks=("clean",))
    row = t.iloc[0]
    assert row["diff"] == pytest.approx(30.0) and row["a_only"] == 3 and row["b_only"] == 0
    assert row["p"] == pytest.approx(0.25)
    assert "Single training seed" in report.comparison_sentence(res, "DPAAT", "AT", attacks=("clean",))


def test_eps_curve_loads_stored_json_and_needs_a_checkpoint_otherwise(tmp_path):
    r = fake_result("smallcnn", "dpaat", tmp=tmp_path)
    assert report.eps_curve(r.config, tmp_path, norm="l2") is None
    path = report.eps_curve_path(r.config, tmp_path, "l2", report.DEFAULT_EPS["l2"])
    assert path.parent == tmp_path / r.run_id and path.name.startswith("eps_curve-l2-")
    stored = {"norm": "l2", "eps": list(report.DEFAULT_EPS["l2"]), "acc": [0.9, 0.8, 0.7, 0.5, 0.3]}
    store.write_json(path, stored)
    assert report.eps_curve(r.config, tmp_path, norm="l2") == stored
    # another radius list is another file
    assert report.eps_curve_path(r.config, tmp_path, "l2", (0.0, 0.5)) != path
    frame = report.eps_curve_frame({("smallcnn", "DPAAT", 0): stored})
    assert list(frame.columns) == ["0", "0.25", "0.5", "1", "1.5"] and frame.iloc[0, 0] == "90.0"


def test_check_book_reports_missing_pages_and_figures(tmp_path):
    script = REPO / "scripts" / "check_book.py"
    res = subprocess.run([sys.executable, script, tmp_path], capture_output=True, text=True)
    assert res.returncode == 1 and "does not exist" in res.stderr
    html = tmp_path / "_build" / "html"
    (html / "book").mkdir(parents=True)
    (html / "index.html").write_text("<html></html>")
    (html / "_images").mkdir()
    (html / "_images" / "f.png").write_bytes(b"png")
    for ch in report.CHAPTERS:
        (html / "book" / f"{ch}.html").write_text('<img src="../_images/f.png" alt="">')
    res = subprocess.run([sys.executable, script, tmp_path], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    (html / "book" / "06_confusion.html").write_text("<p>no figure</p>")
    res = subprocess.run([sys.executable, script, tmp_path], capture_output=True, text=True)
    assert res.returncode == 1 and "06_confusion.html: no figure" in res.stderr
    (html / "book" / "06_confusion.html").write_text('<img src="../_images/f.png"><td>the adaptation matters...</td>')
    res = subprocess.run([sys.executable, script, tmp_path], capture_output=True, text=True)
    assert res.returncode == 1 and "1 table cell(s) cut short" in res.stderr


def test_the_books_specification_page_is_method_md():
    """The appendix reproduces the project's specification, one heading level down under its own title; where
    the specification is beside the checkout (../shared/method.md), the two must not drift apart."""
    page = (REPO / "book" / "specification.md").read_text()
    assert page.startswith("# Appendix: the specification (method.md)\n")
    assert "- file: book/specification" in (REPO / "_toc.yml").read_text()
    spec = REPO.parent / "shared" / "method.md"
    if not spec.is_file():
        pytest.skip(f"{spec} is not beside this checkout")
    body = page.split("\n\n", 2)[2]
    assert body == re.sub(r"^(#+) ", r"#\1 ", spec.read_text(), flags=re.MULTILINE), \
        "book/specification.md differs from ../shared/method.md: copy it again (headings one level down)"


def test_the_books_tables_show_long_cells_whole():
    """Importing the report sets pandas' display to show a sentence in a cell whole (chapter 7's claims)."""
    sentence = "conclusion: the adaptation matters more for robustness than the synchronisation term"
    html = pd.DataFrame({"paper's statement": [sentence]})._repr_html_()
    assert sentence in html


def test_notebooks_define_no_functions_and_have_parameters_and_a_title():
    nbs = sorted((REPO / "notebooks").glob("[0-9][0-9]_*.py"))
    assert [p.stem for p in nbs] == list(report.CHAPTERS)
    for p in nbs:
        text = p.read_text()
        code = "\n" + "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#"))
        assert "\ndef " not in code and "\nclass " not in code and "lambda" not in code, p.name
        assert '# %% tags=["parameters"]' in text, p.name
        first_md = text.split("# %% [markdown]\n", 1)[1]
        assert first_md.startswith("# # "), f"{p.name}: the first markdown cell must start with a # Title"
        for name in ("profile", "data_root", "results_root", "models", "methods", "image_size", "epochs",
                     "seeds", "eps0", "linf_eps", "device"):
            assert f"\n{name} = " in text, f"{p.name}: parameter {name} missing"
        if p.stem != "02_data":  # the split does not depend on the radius; every other page's runs do
            assert "eps0=eps0" in code, f"{p.name}: the eps0 parameter reaches no run"
            assert "linf_eps=linf_eps" in code, f"{p.name}: the linf_eps parameter reaches no run"
        assert "models=models" in code, f"{p.name}: the models parameter reaches neither the runs nor the profile"


def test_every_chapter_that_loads_runs_takes_weights_and_passes_them_to_every_run_of_its_own():
    """-p weights imagenet given to the whole book must fine-tune every page's runs: a chapter that loaded one
    grid from scratch would mix its numbers in silently (build_book gives a parameter only to the chapters that
    declare it). Chapter 8's mask check reads the stored synthetic runs of chapter 8's own quick profile."""
    import ast

    for p in sorted((REPO / "notebooks").glob("[0-9][0-9]_*.py")):
        calls = [n for n in ast.walk(ast.parse(p.read_text())) if isinstance(n, ast.Call)
                 and isinstance(n.func, ast.Attribute) and n.func.attr in ("load_grid", "load_sweep_study")]
        if not calls:
            assert p.stem == "03_methods", f"{p.name} loads no runs"
            continue
        assert "\nweights = " in p.read_text(), f"{p.name}: parameter weights missing"
        stored_quick = [c for c in calls if c.args and isinstance(c.args[0], ast.Constant)
                        and c.args[0].value == "quick"]
        assert [p.stem for _ in stored_quick] in ([], ["08_gradcam"]), f"{p.name}: a grid of a fixed profile"
        missing = [c.lineno for c in calls if c not in stored_quick and "weights" not in {k.arg for k in c.keywords}]
        assert not missing, f"{p.name}: the runs loaded at lines {missing} ignore the weights parameter"


def test_toc_lists_every_chapter():
    toc = (REPO / "_toc.yml").read_text()
    for ch in report.CHAPTERS:
        assert f"file: book/{ch}" in toc
    assert json.dumps("off") in (REPO / "_config.yml").read_text()


def test_the_module_lists_name_every_module_of_the_library():
    """The package docstring and the README's table are how a newcomer finds the architecture: a module
    added without a line in both fails here."""
    import dpaat_lib

    lib = REPO / "dpaat_lib"
    modules = sorted([p.stem for p in lib.glob("*.py") if not p.stem.startswith("__")]
                     + [p.parent.name for p in lib.glob("*/__init__.py")])
    assert "report" in modules
    readme = (REPO / "README.md").read_text()
    table = readme[readme.index("## The library"):]
    assert not [m for m in modules if f"`{m}`" not in table], "README.md's module table misses these"
    assert not [m for m in modules if f"``{m}``" not in dpaat_lib.__doc__], "dpaat_lib/__init__.py misses these"
    from dpaat_lib import study

    for package in (report, study):
        folder = lib / package.__name__.rsplit(".", 1)[1]
        parts = sorted(p.stem for p in folder.glob("*.py") if not p.stem.startswith("__"))
        assert not [m for m in parts if f"``{m}``" not in package.__doc__], f"{folder}/__init__.py misses these"


def test_the_readmes_library_example_runs_as_written():
    """What a user of dpaat_lib copies first: if it breaks, the README lies (about 15 s on 2 CPU cores)."""
    readme = (REPO / "README.md").read_text()
    section = readme[readme.index("## The library"):]
    code = section[section.index("```python\n") + len("```python\n"):section.index("\n```\n")]
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert res.returncode == 0, res.stderr[-3000:]
    assert res.stdout.rstrip().endswith("(8, 64, 64)") and "'dL_mean'" in res.stdout and "'50-PGD'" in res.stdout


# --------------------------------------------------------------------------
# Speed and cost
# --------------------------------------------------------------------------

def test_strong_cost_table_uses_medians_and_counts_passes(tmp_path):
    runs = [fake_result("smallcnn", m) for m in ("std", "at", "sat", "amat", "dpaat")]
    for r, secs in zip(runs, ([1.0, 1.0, 9.0], [8.0, 8.0, 1.0], [9.0], [5.0], [10.0, 8.0])):
        r.history["epochs"] = [{"epoch": i + 1, "seconds": s, "val_acc": 0.5} for i, s in enumerate(secs)]
    t = report.strong_cost_table(runs).set_index("method")
    assert t.loc["AT", "median relative to STD"] == "x   8.0"
    assert t.loc["DPAAT", "median relative to STD"] == "x   9.0"
    assert t.loc["STD", "median s/epoch"] == "     1.0 s/epoch"
    assert list(t["passes per batch"]) == ["1", "7 + 1", "7 + 2", "<= 7 + 2", "7 + 2"]
    assert list(t["passes relative to STD"]) == ["1", "8", "9", "<= 9", "9"]
    assert "shared CPU" in report.strong_cost_findings(runs)
    assert "smallcnn AT: measured x8.0, passes 8;" in report.strong_cost_findings(runs)
    # several seeds: one entry per method, the median of the seeds' ratios and their range
    seed1 = [dataclasses.replace(r, config=dataclasses.replace(r.config, train=dataclasses.replace(r.config.train,
                                                                                                   seed=1)))
             for r in (fake_result("smallcnn", "std"), fake_result("smallcnn", "at"))]
    seed1[0].history["epochs"] = [{"epoch": 1, "seconds": 2.0, "val_acc": 0.5}]
    seed1[1].history["epochs"] = [{"epoch": 1, "seconds": 8.0, "val_acc": 0.5}]
    text = report.strong_cost_findings(runs + seed1)
    assert "smallcnn AT: measured x6.0 (x4.0 to x8.0 over 2 seeds), passes 8;" in text
    assert text.count("smallcnn AT") == 1


def test_grid_progress_marks_finished_missing_and_absent_runs():
    from types import SimpleNamespace
    prof = profiles.get_profile("paper")
    cfgs = profiles.book_configs(prof, profiles.data_config(prof))
    done = [c for c in cfgs if c.method.name == "std"][:2]
    table = report.grid_progress(cfgs, [SimpleNamespace(run_id=c.run_id) for c in done])
    assert list(table.index) == list(prof.models)
    assert list(table.columns) == ["STD", "AT", "SAT", "AMAT", "DPAAT", "D-A", "D-B"]
    assert (table == "done").sum().sum() == 2 and table.loc[done[0].model, "STD"] == "done"
    assert (table == "—").sum().sum() == len(cfgs) - 2
    # the ablation runs only on the ablation models: elsewhere the cell is empty, not "still to run"
    assert table.loc["densenet121", "D-A"] == "" and table.loc["resnet34", "D-A"] == "—"
    plan = pd.DataFrame({"run": [c.run_id for c in done], "state": [
        "extras missing: Grad-CAM (no checkpoint)", "extras missing: Grad-CAM"]})  # the second can still compute
    table = report.grid_progress(cfgs, [SimpleNamespace(run_id=c.run_id) for c in done], plan)
    assert table.loc[done[0].model, "STD"] == "done, to train again" and table.loc[done[1].model, "STD"] == "done"


def test_the_committed_paper_store_loads_without_data():
    prof, cfgs, runs = report.stored_book_runs("paper")
    assert len(cfgs) == 34
    assert all(r.history["finished"] and "GAcc" in r.metrics for r in runs)
    assert {r.run_id for r in runs} <= {c.run_id for c in cfgs}


def test_a_page_of_the_committed_cpu_store_computes_with_its_pinned_threads():
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        prof, runs = report.load_grid("cpu-real", stored_only=True)
        assert torch.get_num_threads() == prof.cpu_threads == 1 and len(runs) == 15
    finally:
        torch.set_num_threads(threads)


def test_the_threads_note_says_whether_runs_reproduce_and_counts_the_recorded_ones():
    run = fake_result("smallcnn", "at")
    on_cpu = dataclasses.replace(fake_result("smallcnn", "std"), history={
        **run.history, "evaluated_on": {"device": "cpu", "torch": "2.x", "torch_threads": 1}})
    pinned = report.cpu_threads_note(profiles.get_profile("cpu-real"), [run, on_cpu])
    assert "computes with 1 torch thread (`cpu_threads`)" in pinned
    assert "1 of the 2 runs record the device they were evaluated on (on a CPU, torch threads: 1); 1 predate" in pinned
    free = report.cpu_threads_note(profiles.get_profile("quick"), [run])
    assert "does not pin torch's CPU threads" in free and "None of the 1 runs records" in free
    assert report.cpu_threads_note(profiles.get_profile("quick"), []).endswith("differ from the one shown here.")
    assert report.cpu_threads_note(profiles.get_profile("quick"), [on_cpu]).endswith(
        "All 1 runs record the device they were evaluated on (on a CPU, torch threads: 1).")
    assert "on the same kind of CPU gives the same predictions byte for byte" in pinned
    kind = dataclasses.replace(on_cpu, history={**on_cpu.history, "evaluated_on": {
        **on_cpu.history["evaluated_on"], "cpu": "Some CPU (family 6, model 1), torch CPU capability AVX2"}})
    assert report.cpu_threads_note(profiles.get_profile("cpu-real"), [run, on_cpu, kind]).endswith(
        "2 of the 3 runs record the device they were evaluated on (on a CPU, torch threads: 1; the kind of CPU, "
        "recorded by 1 of them: Some CPU (family 6, model 1), torch CPU capability AVX2); 1 predate that record.")


def test_grid_calls_and_the_time_goal(tmp_path):
    assert report.grid_calls(tmp_path).empty
    assert report.grid_time_findings(report.grid_calls(tmp_path), 0, 34) == "No GPU call is recorded yet."
    lines = [{"start": 1, "seconds": 600, "card": "NVIDIA H200", "workers": 8, "compile": "", "final": 0,
              "runs_trained": 4, "note": "recorded by hand from the device tool's wall time"},
             {"start": 2, "seconds": 540, "card": "NVIDIA H100", "workers": 8, "compile": "reduce-overhead",
              "final": 1, "runs_trained": 6}]
    (tmp_path / "calls.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    calls = report.grid_calls(tmp_path)
    assert list(calls["compile"]) == ["eager", "reduce-overhead"] and list(calls["note"])[1] == ""
    text = report.grid_time_findings(calls, 10, 34)
    assert ("2 GPU call(s) (NVIDIA H200, NVIDIA H100) have run 19.0 minutes of wall time in all (600 s of them, "
            "1 call(s), typed into calls.jsonl by hand") in text
    assert "11.0 minutes are left for the 24 runs still to train" in text
    again = report.grid_time_findings(calls, 10, 34, left=29, expected_card_s=3960)
    assert "5 of them to train again" in again and "29 runs still to train" in again
    assert "the plan expects about 66 minutes of the card for them, so the goal will be missed by about 55" in again
    assert "exceeded by 8.0 minutes, with 4 runs" in report.grid_time_findings(calls, 30, 34, goal_min=11)
    assert report.grid_time_findings(calls, 34, 34).endswith(": met.")
    assert "stopped early" not in text
    # A call stopped by the device tool left only the record its partial archive brought back; one that
    # finished has its line in calls.jsonl, and a record of it left behind is not counted twice.
    (tmp_path / "logs").mkdir()
    early = {**lines[1], "start": 3, "seconds": 120, "note": "stopped early (by the device tool): a lower bound"}
    (tmp_path / "logs" / "call-3.json").write_text(json.dumps(early) + "\n")
    (tmp_path / "logs" / "call-2.json").write_text(json.dumps({**lines[1], "seconds": 1}) + "\n")
    calls = report.grid_calls(tmp_path)
    assert list(calls["seconds"]) == [600, 540, 120]
    text = report.grid_time_findings(calls, 10, 34)
    assert ("3 GPU call(s) (NVIDIA H200, NVIDIA H100) have run 21.0 minutes of wall time in all (1 of them stopped "
            "early by the device tool, counted up to their last partial pack: a lower bound)") in text


def test_what_is_left_against_one_call():
    """Chapter 10's account of the runs left: which fit one call at full sharing, which only alone on the
    card (1/sqrt(8) of the time at 8 processes), which not even alone."""
    plan = pd.DataFrame({"run": ["resnet34-std-s0-a", "resnet34-at-s0-b", "mobilenet_v2-at-s0-c",
                                 "densenet121-d-a-s0-d", "densenet121-at-s0-e"],
                         "state": ["done", "to train", "to train", "resumes at epoch 3", "to train"],
                         "seconds": [None, 400.0, 1000.0, 2000.0, None]})
    amat = pd.DataFrame({"run": ["densenet121-amat-s0-f"], "state": ["to train"], "seconds": [3000.0]})
    text = report.grid_window_findings(plan, window_s=500, sharing=8)
    assert "4 runs are left to train" in text and "3,400 process-seconds" in text and "about 7 minutes" in text
    assert "At 8 processes 1 of them fit: resnet34 (1)." in text
    assert "1 more would fit alone on the card: mobilenet_v2 (1)." in text  # 1000 / sqrt(8) = 354 s
    assert "1 would not even alone: densenet121 (1), 707 to 707 s each." in text
    assert "1 have no estimate" in text and "WORKERS=auto" in text and "need CUDA graphs" in text
    assert "AMAT" not in text and "counts its epoch cap" in text
    with_amat = report.grid_window_findings(pd.concat([plan, amat], ignore_index=True), window_s=500, sharing=8)
    assert "2 would not even alone" in with_amat and "Of those, 1 train AMAT, which no CUDA graph captures" in with_amat
    # Once a check has decided, the page says what it chose and why, instead of hoping for CUDA graphs.
    decision = {"mode": "", "card": "NVIDIA H200", "torch": "2.11.0+cu130",
                "reasons": ["resnet34: concurrent_img_s 802 through the library's CUDA graph, not above eager's 810"]}
    decided = report.grid_window_findings(plan, window_s=500, sharing=8, decision=decision)
    assert ("The check on NVIDIA H200 (torch 2.11.0+cu130) chose eager training for the grid "
            "(`compile-decision.json`: resnet34: concurrent_img_s 802") in decided
    assert "need CUDA graphs" not in decided and "fewer epochs than the profile's cap" in decided
    assert "judged an earlier version of the training path" in decided  # no code digest on record
    current = report.grid_window_findings(plan, window_s=500, sharing=8,
                                          decision={**decision, "training_code": training.training_code_digest()})
    assert "earlier version" not in current
    graphs = report.grid_window_findings(plan, window_s=500, sharing=8, decision={**decision, "mode": "cuda-graph"})
    assert "chose cuda-graph training" in graphs and "faster than the eager estimates above" in graphs
    fits = report.grid_window_findings(plan.iloc[:2], window_s=500, sharing=8)
    assert "alone" not in fits and "CUDA graphs" not in fits and fits.endswith("fit: resnet34 (1).")
    assert report.grid_window_findings(plan.iloc[:1]) == "Nothing of the grid is left to train."


def test_a_gpu_sized_profile_is_not_trained_by_a_page_on_the_cpu(tmp_path, synthetic_root, monkeypatch):
    """A chapter executed with profile="paper" on a CPU must not start days of training for missing runs."""
    from dpaat_lib import grid

    def forbidden(*args, **kwargs):
        raise AssertionError("a GPU-sized run must not be trained by a page on the CPU")

    monkeypatch.setattr(grid, "run_grid", forbidden)
    assert profiles.get_profile("paper").gpu and not profiles.get_profile("cpu-real").gpu
    with pytest.raises(RuntimeError, match=r"GPU-sized profile 'paper' are not in .*resnet34-std-s0-.*device_grid\.sh"):
        report.load_grid("paper", data_root=synthetic_root, results_root=tmp_path, models=("resnet34",),
                         methods=("std",))


def test_load_grid_stored_only_trains_nothing_and_returns_what_is_stored(synthetic_root, tmp_path, monkeypatch):
    from dpaat_lib import grid

    def forbidden(*args, **kwargs):
        raise AssertionError("stored_only must not train")

    monkeypatch.setattr(grid, "run_grid", forbidden)
    kw = dict(data_root=synthetic_root, results_root=tmp_path, methods=("std", "at"), stored_only=True)
    prof, none = report.load_grid("quick", **kw)
    assert none == []
    stored = fake_result("smallcnn", "std")
    cfgs = profiles.configs(prof, experiment.resolve_data(profiles.data_config(prof), synthetic_root,
                                                          report.results_dir(prof, tmp_path)), methods=("std",))
    monkeypatch.setattr(experiment, "load_result",
                        lambda c, out: dataclasses.replace(stored, config=c) if c.run_id == cfgs[0].run_id else None)
    assert [r.run_id for r in report.load_grid("quick", **kw)[1]] == [cfgs[0].run_id]
    page, nothing = report.load_grid("quick", **kw, models=["resnet18"])  # another CNN: the page's profile names it
    assert page.models == ("resnet18",) and nothing == []


def test_lesion_energy_sentence_ranks_the_methods_against_a_uniform_map():
    scores = pd.DataFrame({"images": [30, 30], "energy in lesion mask": ["0.270", "0.120"],
                           "lesion area share (uniform map)": ["0.135", "0.135"]}, index=["STD", "AT"])
    text = report.lesion_energy_sentence(scores)
    assert "STD 0.270, AT 0.120, against 0.135 for a uniform map" in text
    assert "STD concentrates on the lesion more than a uniform map would" in text
    scores["energy in lesion mask"] = ["0.100", "0.120"]
    assert "no method's maps concentrate on the lesion" in report.lesion_energy_sentence(scores)
    assert "cannot be measured" in report.lesion_energy_sentence(scores.drop(columns=["energy in lesion mask"]))


# --------------------------------------------------------------------------
# What the book says about its own runs and the paper's tables
# --------------------------------------------------------------------------

def test_paper_consistency_flags_all_six_values_that_are_not_the_groups_mean():
    off = report.paper_consistency("I")
    row = off[(off["method"] == "AMAT") & (off["column"] == "20-PGD")].iloc[0]
    assert row["mean of the groups"] == pytest.approx((61.58 + 60.42) / 2) and row["outside the groups' range"]
    # a value that is the mean of its groups (to the rounding) is not flagged: DPAAT GAcc 70.71 = (71.93 + 69.48) / 2
    assert off[(off["method"] == "DPAAT") & (off["column"] == "GAcc")].empty
    assert "3 of them lie outside the range" in report.paper_consistency_note("I")
    # off by 0.045 (groups 12.00 and 11.60 printed, mean 12.155 against 12.20): more than two decimals' rounding
    assert not off[(off["method"] == "STD") & (off["column"] == "50-PGD")].empty
    t2 = report.paper_consistency("II")
    assert set(zip(t2["method"], t2["column"])) == {("AT", "mARP"), ("DPAAT", "mARP")}


def test_paper_recall_is_checked_against_its_gacc():
    """On 299 test images per class, recall averaged over classes is the accuracy: Table II's recall against
    Table I's GAcc, from the two CSVs."""
    gaps = report.paper_recall_gaps().set_index(["group", "method"])
    assert gaps.loc[("all_six", "DPAAT"), "gap"] == pytest.approx(71.95 - 70.71)
    assert len(gaps) == 12 and (gaps["gap"] > 0).all()
    note = report.paper_recall_note()
    assert "differs in 12 of the 12 rows" in note and "DPAAT 71.95 against 70.71 in the all-six row" in note
    assert "equals Table I's GAcc for every method" in report.paper_recall_note(tolerance=2.0)


@pytest.mark.parametrize("profile", ["quick", "cpu-real", "paper"])
def test_another_eps0_brings_its_step_and_reaches_every_l2_attack(profile):
    """-p eps0 changes the training radius, DPAAT's and AMAT's derived radii and the 20/50-step PGD, with the
    step at the profile's ratio to the radius; the Linf attacks keep 2/255; an explicit step wins; the default
    radius given explicitly names the same runs."""
    base = report.make_profile(profile)
    p = report.make_profile(profile, eps0=1.0)
    assert p.eps0 == 1.0 and p.train_step_size == pytest.approx(2 * base.train_step_size)
    cfg = profiles.run_config(p, p.models[0], "dpaat", 0, profiles.data_config(p, digest="0" * 16))
    assert (cfg.method.attack.eps, cfg.method.attack.step_size) == (1.0, pytest.approx(0.3))
    dpaat = methods.build_method(cfg.method, 4)
    assert (dpaat.eps_max, dpaat.eta, float(dpaat.radii()[0])) == (pytest.approx(2.0), 1.0, 1.0)
    by_name = {a.name: a for a in cfg.eval_attacks}
    assert (by_name["20-PGD"].eps, by_name["50-PGD"].step_size) == (1.0, pytest.approx(0.3))
    assert by_name["FGSM"].eps == pytest.approx(2 / 255)
    assert report.make_profile(profile, eps0=1.0, train_step_size=0.1).train_step_size == 0.1
    d = profiles.data_config(base, digest="0" * 16)
    same = report.make_profile(profile, eps0=base.eps0)
    assert [c.run_id for c in profiles.configs(same, d)] == [c.run_id for c in profiles.configs(base, d)]


@pytest.mark.parametrize("bad", [0, -0.5, float("nan"), float("inf"), "-1.0", True])
def test_a_bad_eps0_is_refused_by_name(bad):
    with pytest.raises(ValueError, match=r"eps0 must be a positive L2 radius.*got"):
        report.make_profile("quick", eps0=bad)


def test_an_eps0_given_as_text_is_read_as_the_number():  # papermill -r, or a YAML string
    assert report.make_profile("quick", eps0="1.0") == report.make_profile("quick", eps0=1.0)


@pytest.mark.parametrize("given", ["8/255", 8 / 255, "0.0313725490196"])
def test_another_linf_radius_reaches_fgsm_and_ifgsm_only(given):
    """-p linf_eps: FGSM's radius and step, I-FGSM's radius and its quarter step; training and the PGD columns
    keep theirs, so the training identity is the default's (the stored model is evaluated again); the default
    radius given explicitly names the same runs."""
    base = report.make_profile("cpu-real")
    p = report.make_profile("cpu-real", linf_eps=given)
    assert p.linf_eps == pytest.approx(8 / 255)
    d = profiles.data_config(base, digest="0" * 16)
    cfg, cfg0 = (profiles.run_config(q, "smallcnn", "dpaat", 0, d) for q in (p, base))
    by_name = {a.name: a for a in cfg.eval_attacks}
    assert (by_name["FGSM"].eps, by_name["FGSM"].step_size) == (pytest.approx(8 / 255), pytest.approx(8 / 255))
    assert (by_name["20-IFGSM"].eps, by_name["20-IFGSM"].step_size) == (pytest.approx(8 / 255),
                                                                         pytest.approx(2 / 255))
    assert by_name["20-PGD"] == {a.name: a for a in cfg0.eval_attacks}["20-PGD"]
    assert cfg.run_id != cfg0.run_id and cfg.training_identity() == cfg0.training_identity()
    same = report.make_profile("cpu-real", linf_eps="2/255")
    assert [c.run_id for c in profiles.configs(same, d)] == [c.run_id for c in profiles.configs(base, d)]
    assert "FGSM and I-FGSM at Linf 8/255" in p.describe() and "Linf" not in base.describe()


@pytest.mark.parametrize("eps, text", [(2 / 255, "2/255"), (8 / 255, "8/255"), (0.03, "7.65/255"),
                                       (0.5 / 255, "0.5/255"), (0.00784, "1.9992/255")])
def test_an_linf_radius_prints_in_255ths_and_never_as_a_neighbour(eps, text):
    """A radius near the paper's 2/255 but not it (0.00784) must not print as 2/255 on a page that says it is
    not the paper's."""
    assert profiles.linf_text(eps) == text
    if text != "2/255":
        assert "not the paper's 2/255" in report.profile_banner(report.make_profile("quick", linf_eps=eps)).data


@pytest.mark.parametrize("bad", [0, -1 / 255, 2, float("nan"), "eight", "8/0", True, [8, 255]])
def test_a_bad_linf_radius_is_refused_by_name(bad):
    with pytest.raises(ValueError, match=r"linf_eps must be an Linf radius in \(0, 1\] such as 8/255.*got"):
        report.make_profile("quick", linf_eps=bad)


def test_pages_say_when_the_linf_radius_is_not_the_papers():
    """The banner, the threat note and the deviations name an Linf radius given as a parameter; at the paper's
    resolution the note says which columns still compare with the paper's."""
    p = report.make_profile("quick", linf_eps="8/255")
    assert "FGSM and I-FGSM at Linf 8/255, not the paper's 2/255" in report.profile_banner(p).data
    assert "Linf 8/255, not" not in report.profile_banner(report.make_profile("quick")).data
    assert "eps = 8/255" in report.deviations(p) and "Linf radius 8/255 is a parameter" in report.deviations(p)
    assert "eps = 2/255" in report.deviations(report.make_profile("quick"))
    d = profiles.data_config(p, digest="0" * 16)
    note = report.threat_scale_note(profiles.run_config(p, "smallcnn", "at", 0, d))
    assert "The Linf radius here is 8/255" in note and "4 times as far" in note
    full = report.make_profile("quick", image_size=224, linf_eps="8/255")
    d = profiles.data_config(full, digest="0" * 16)
    note = report.threat_scale_note(profiles.run_config(full, "smallcnn", "at", 0, d))
    assert "Compare the PGD columns with the paper's; FGSM and I-FGSM only" in note
    assert "an L2 distance" not in note  # at the paper's resolution the Linf ball is the paper's size in L2
    both = report.make_profile("quick", image_size=224, linf_eps="8/255", eps0=1.0)
    assert "Compare the robust columns with the paper's only in direction" in report.threat_scale_note(
        profiles.run_config(both, "smallcnn", "at", 0, d))


def test_a_curve_holds_the_runs_own_radius():
    """Chapter 4's curves: the default radii, with a radius given as a parameter among them (so the table shows
    the point the page's columns measured); the paper's radii add nothing (the stored curves keep their names)."""
    d = profiles.data_config(report.make_profile("quick"), digest="0" * 16)
    cfg = profiles.run_config(report.make_profile("quick"), "smallcnn", "at", 0, d)
    assert report.curve_eps(cfg, "linf") == report.DEFAULT_EPS["linf"]
    assert report.curve_eps(cfg, "l2") == report.DEFAULT_EPS["l2"]
    other = profiles.run_config(report.make_profile("quick", linf_eps="16/255", eps0=0.7), "smallcnn", "at", 0, d)
    assert report.curve_eps(other, "linf") == (*report.DEFAULT_EPS["linf"], 16 / 255)
    assert 0.7 in report.curve_eps(other, "l2") and len(report.curve_eps(other, "l2")) == 6
    assert report.curve_eps(other, "l2", (0.0, 2.0)) == (0.0, 2.0)
    default_path = report.eps_curve_path(cfg, "r", "linf", report.DEFAULT_EPS["linf"])
    assert report.eps_curve_path(cfg, "r", "linf") == default_path


def test_an_unknown_profile_with_data_is_refused_with_the_known_ones():
    with pytest.raises(ValueError, match="unknown profile 'papr'; choose one of"):
        report.make_profile("papr", data_root="/some/where")


def test_pages_say_when_eps0_is_not_the_papers():
    """The banner, the threat note and the deviations name a radius given as a parameter and its strength
    against the paper's (0.5 at 224 px); with the default radius they say what they said before."""
    small = report.make_profile("quick", eps0=1.0)
    assert "eps0 = 1.0 is not the paper's 0.5" in report.profile_banner(small).data
    assert "14 times the paper's per pixel" in report.profile_banner(small).data
    assert "7.0 times stronger per pixel" in report.profile_banner(report.make_profile("quick")).data
    assert "not the paper's" not in report.profile_banner(report.make_profile("quick")).data
    full = report.make_profile("quick", image_size=224, eps0=0.25)
    cfg = profiles.run_config(full, "smallcnn", "at", 0, profiles.data_config(full, digest="0" * 16))
    note = report.threat_scale_note(cfg)
    assert "means here what it means" not in note and "0.5 times the paper's per pixel" in note
    assert "0.5 times the paper's per pixel" in report.deviations(full)
    assert "is a parameter" not in report.deviations(report.make_profile("quick"))
    assert report.l2_strength(0.5, 224) == pytest.approx(1.0)
    assert report.l2_strength(0.5 * 32 / 224, 32) == pytest.approx(1.0)  # chapter 12 (e)'s matched radius


def test_paper_table1_findings_counts_from_the_table():
    text = report.paper_table1_findings("all_six")
    assert "identical for 3 of its 5 methods (AT, SAT, DPAAT)" in text and "for AMAT 50 steps" in text
    assert "identical for 4 of its 5 methods" in report.paper_table1_findings("widely_used")


def test_threat_scale_note_scales_with_the_resolution():
    prof = profiles.get_profile("quick")
    cfg = profiles.run_config(prof, "smallcnn", "at", 0, profiles.data_config(prof, digest="0" * 16))
    small = report.threat_scale_note(cfg)
    assert f"{224 / cfg.data.image_size:.1f} times stronger per pixel" in small
    full = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, image_size=224))
    assert "the resolution we assume for the paper (it states none)" in report.threat_scale_note(full)
    assert "The paper does not state its input size" in small


def _history(n_epochs: int, best: int, cap: int, radius: float | None = None) -> dict:
    eps = [{"epoch": e, "seconds": 1.0, "val_acc": 0.5, "val_loss": 1.0 / e,
            **({"radius_mean": radius * e / n_epochs} if radius is not None else {})} for e in range(1, n_epochs + 1)]
    return {"finished": True, "epochs": eps, "best_epoch": best}


def test_stopping_findings_separates_the_cap_from_early_stopping():
    capped = fake_result("smallcnn", "at")
    cap = capped.config.train.epochs
    capped = dataclasses.replace(capped, history=_history(cap, cap, cap))
    stopped = dataclasses.replace(fake_result("smallcnn", "std"), history=_history(cap - 2, cap - 6, cap))
    amat = dataclasses.replace(fake_result("smallcnn", "amat"), history=_history(cap, cap - 1, cap, radius=0.4))
    text = report.stopping_findings([capped, stopped, amat])
    assert f"Of 3 runs, 1 reached the cap of {cap} epochs" in text and "AT 1 of 1" in text and "STD 0 of 1" in text
    assert f"STD {cap - 2}/{cap - 6}; AMAT {cap}/{cap - 1}." in text
    eps0 = amat.config.method.eps0
    kept = 0.4 * (cap - 1) / cap
    assert f"their mean was {kept:.3f} ({kept / eps0:.0%} of eps0)" in text
    assert "weaker adversary than AT's, yet are evaluated at eps0, which weighs" in text
    assert "chapter 12 (d) trains the main grid again on method.md's schedule, up to 60 epochs" in text
    full = [dataclasses.replace(r, config=dataclasses.replace(r.config, train=dataclasses.replace(
        r.config.train, epochs=60))) for r in (capped, stopped, amat)]
    assert "chapter 12 (d)" not in report.stopping_findings(full)
    # A page of seven-class runs is pointed at the main grid without implying that its own runs were retrained.
    seven = [dataclasses.replace(r, config=dataclasses.replace(r.config, data=dataclasses.replace(
        r.config.data, classes=profiles.ALL_CLASSES))) for r in (capped, stopped, amat)]
    assert ("chapter 12 (d) trains the 3-class main grid again on method.md's schedule, up to 60 epochs with "
            "patience 5, not these 7-class runs") in report.stopping_findings(seven)


@pytest.mark.parametrize("radii, says", [((0.2, 0.48), "In 1 of 2 runs that mean was below 90% of eps0"),
                                         ((0.46, 0.5), "every run's mean had reached at least 90% of eps0")])
def test_stopping_findings_names_a_weaker_amat_adversary_only_where_there_is_one(radii, says):
    runs = [dataclasses.replace(fake_result("smallcnn", "amat", seed=s), history=_history(20, 20, 60, radius=r))
            for s, r in enumerate(radii)]
    text = report.stopping_findings(runs)
    assert says in text and "which weighs against AMAT" not in text


def test_nonfinite_findings_names_each_epoch_that_met_a_nan():
    def run(method, seed=0, **bad):
        h = _history(3, 3, 3, radius=0.5)
        h["epochs"][1].update(bad)
        return dataclasses.replace(fake_result("smallcnn", method, seed=seed), history=h)

    clean = [run("std"), run("dpaat"), run("amat", nonfinite_adv=0)]
    text = report.nonfinite_findings(clean)
    assert "None in any of the 3 runs" in text and "trained before AMAT counted" not in text
    old_amat = run("amat", seed=1)  # its epochs predate the count
    assert "1 of the 2 AMAT runs were trained before AMAT counted" in report.nonfinite_findings(clean + [old_amat])
    bad = [run("dpaat", seed=2, nonfinite_dL=4), run("at", val_loss=float("nan")), run("amat", seed=3, nonfinite_adv=2)]
    text = report.nonfinite_findings(clean + bad)
    ids = [r.config.run_id for r in bad]
    assert text.startswith("**Non-finite values.** 3 epochs met a NaN or an inf")
    assert (f"{ids[0]} epoch 2: 4 x DPAAT's dL" in text and f"{ids[1]} epoch 2: val_loss" in text
            and f"{ids[2]} epoch 2: 2 x AMAT's adversarial loss" in text)


def test_confusion_balance_averages_the_seeds_and_names_ties():
    def run(method, seed, cm):
        r = fake_result("smallcnn", method, seed=seed)
        return dataclasses.replace(r, metrics={**r.metrics, "confusion": {"clean": cm, "20-PGD": cm}})

    even = [[8, 1, 1], [1, 8, 1], [1, 1, 8]]  # every class 80%
    uneven = [[9, 1, 0], [2, 6, 2], [0, 0, 10]]  # 90, 60, 100
    results = [run("at", 0, even), run("at", 1, uneven), run("dpaat", 0, even), run("dpaat", 1, uneven)]
    t = report.confusion_balance(results, "smallcnn")
    assert t.loc[("clean", "AT"), "worst class"] == f"70.0 ± {np.std([80, 60], ddof=1):.1f}"
    assert list(t.index.get_level_values("attack")) == ["clean", "clean", "20-PGD", "20-PGD"]
    text = report.confusion_balance_findings(results, "smallcnn")
    assert "highest worst-class recall AT and DPAAT (70.0%)" in text  # a tie is named as one
    assert "the smallest spread in 0 of its 2 seed(s)" in text  # idxmin picks AT first in a tie


def test_ablation_claims_check_every_statement_and_the_conclusion():
    accs = {"at": 0.60, "d-a": 0.62, "d-b": 0.66, "dpaat": 0.64}  # RAcc = acc - 0.1 in the fakes
    t = report.ablation_claims([fake_result("smallcnn", m, acc=a) for m, a in accs.items()])
    held = dict(zip(t["paper's statement"], t["holds here"]))
    assert len(held) == 7
    assert held["D-A: higher GAcc than AT"] == "yes" and held["D-B: highest GAcc of the four"] == "yes"
    assert held["D-B: lower 20-PGD RAcc than D-A"] == "no"  # D-B's RAcc is the highest here
    assert held["D-(A+B) = DPAAT: highest 20-PGD RAcc"] == "no"
    assert held["conclusion: the adaptation matters more for robustness than the synchronisation term"] == "no"


def test_method_difference_tests_each_metric_across_seeds():
    results = [fake_result("smallcnn", m, seed=s, acc=a + 0.01 * s) for s in range(3)
               for m, a in (("at", 0.6), ("dpaat", 0.65))]
    d = report.method_difference(results, "DPAAT", "AT", metrics=("GAcc",))
    assert d.loc[0, "DPAAT - AT"] == "+5.0" and d.loc[0, "seeds"] == 3 and d.loc[0, "t-test p"] == "0.000"
    one = report.method_difference(results[:2], "DPAAT", "AT", metrics=("GAcc",))
    assert "t-test p" not in one
    assert report.difference_findings(d).endswith("Holm-adjusted for the 1 tests; 1 of 1 remain below 0.05 after "
                                                  "the adjustment.")
    assert "(one seed: a difference between two training runs" in report.difference_findings(one)
    # No AT run at all (a page given -p methods "[std, dpaat]"): said so, not read as one seed.
    none = report.method_difference([r for r in results if r.config.method.name == "dpaat"], "DPAAT", "AT")
    assert report.difference_findings(none) == "**DPAAT minus AT here:** no run pairs of DPAAT and AT to compare."


def test_model_table_gives_the_grad_cam_map_size_at_the_resolution():
    t = report.model_table(["smallcnn", "inception_v3"], 32)
    assert t.loc["smallcnn", "Grad-CAM map at 32 px"] == "4 x 4"  # four 2x2 pools, the layer before the last
    assert t.loc["inception_v3", "Grad-CAM map at 32 px"] == "needs >= 75 px"
    assert t.loc["smallcnn", "in the paper"].startswith("no") and t.loc["inception_v3", "in the paper"] == "yes"
    assert report.model_table(["smallcnn"], 64).iloc[0, -1] == "8 x 8"


def test_unmoved_radii_note_flags_a_median_still_at_eps0():
    moved = fake_result("smallcnn", "dpaat")
    eps0 = moved.config.method.eps0
    ep = [{"epoch": 1, "seconds": 1.0, "val_acc": 0.5, "radius_quantiles": [0.1, 0.3, eps0 + 0.01, 0.7, 0.9]}]
    moved = dataclasses.replace(moved, history={"epochs": ep, "best_epoch": 1})
    assert report.unmoved_radii_note([moved]) == ""
    still = dataclasses.replace(moved, history={"epochs": [{**ep[0], "radius_quantiles": [0.3, 0.45, eps0, 0.52, 0.7]}],
                                                "best_epoch": 1})
    note = report.unmoved_radii_note([moved, still])
    assert "In 1 of the 2 DPAAT runs" in note and "quartiles 0.450-0.520" in note and "D-B" in note
    assert "upper bound" not in note  # no histogram logged: no share claimed
    hist = [0] * 20
    hist[10], hist[3] = 45, 55  # eps0 = 0.5 on [0, 1]: bin 10, [0.5, 0.55)
    logged = dataclasses.replace(still, history={"epochs": [{**still.history["epochs"][0], "radius_hist": hist,
                                                             "radius_hist_max": 2 * eps0}], "best_epoch": 1})
    assert report.eps0_bin_share(logged.history["epochs"][0], eps0) == 0.45
    assert "bin that holds eps0 has 45.0% of them, an upper bound" in report.unmoved_radii_note([logged])
    # The ends of the range: the lowest bin (near-clean training) and the highest (at the 2 eps0 clip).
    assert report.radius_bounds_note([still]) == ""  # no histogram logged
    hist[0], hist[19], hist[3] = 10, 5, 40
    ends = dataclasses.replace(logged, history={"epochs": [{**logged.history["epochs"][0], "radius_hist": hist}],
                                                "best_epoch": 1})
    note = report.radius_bounds_note([ends])
    assert "lowest bin (radius below 0.05" in note and "holds 10.0% of DPAAT's" in note
    assert "from 0.95 to the clip at 1) 5.0%" in note and "(smallcnn seed 0)" in note


def _build_book_module():
    import importlib.util

    spec = importlib.util.spec_from_file_location("build_book", REPO / "scripts" / "build_book.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_build_book_params_reach_the_chapters_that_declare_them_typed(tmp_path):
    bb = _build_book_module()
    plain = tmp_path / "99_plain.py"
    plain.write_text("# %%\nx = 1\n")  # no parameters cell: it declares nothing
    assert bb.chapter_parameters(plain) == set()
    sources = sorted((REPO / "notebooks").glob("[0-9][0-9]_*.py"))
    params = bb.parse_params([["eps0", "1.0"], ["seeds", "[0, 1, 2, 3]"], ["n_show", "3"], ["models", "null"]],
                             sources)
    assert params["04_robustness"] == {"eps0": 1.0, "seeds": [0, 1, 2, 3], "models": None}
    assert params["08_gradcam"]["n_show"] == 3 and "n_show" not in params["04_robustness"]
    with pytest.raises(SystemExit, match="no chapter takes a parameter 'epsilon'.*eps0"):
        bb.parse_params([["epsilon", "1.0"]], sources)
    with pytest.raises(SystemExit, match="give data_root with --data"):
        bb.parse_params([["data_root", "/x"]], sources)


@pytest.mark.parametrize("given, field, want", [
    ({"strong_all_seeds": "false"}, "strong_all_seeds", False), ({"strong_all_seeds": "Yes"}, "strong_all_seeds", True),
    ({"lesion_aware": 0}, "lesion_aware", False), ({"epochs": "3"}, "epochs", 3), ({"eps0": "1.0"}, "eps0", 1.0),
    ({"linf_eps": "8/255"}, "linf_eps", 8 / 255), ({"epochs": 3}, "epochs", 3),
])
def test_a_pages_text_parameter_is_read_as_its_fields_type(given, field, want):
    """papermill's -p passes "false" as text, which as it is would count as true (chapter 11's strong_all_seeds)."""
    got = getattr(profiles.profile_for("quick", **given), field)
    assert got == want and type(got) is type(want)


@pytest.mark.parametrize("given, match", [
    ({"strong_all_seeds": "maybe"}, "strong_all_seeds must be true or false, got 'maybe'"),
    ({"bf16": 2}, "bf16 must be true or false, got 2"),
    ({"epochs": "3.5"}, "epochs must be a whole number like 8, got '3.5'"),
    ({"lam": "much"}, "lam must be a number like 1.0, got 'much'"),
])
def test_a_pages_parameter_of_the_wrong_type_is_refused(given, match):
    with pytest.raises(ValueError, match=re.escape(match)):
        profiles.profile_for("quick", **given)


def test_build_book_selects_chapters_by_their_exact_number_or_name():
    bb = _build_book_module()
    sources = sorted((REPO / "notebooks").glob("[0-9][0-9]_*.py"))
    assert [s.stem for s in bb.select_chapters(sources, ["1", "04", "12_study"])] == [
        "01_overview", "04_robustness", "12_study"]  # "1" is chapter 1, not 10, 11 and 12
    with pytest.raises(SystemExit, match="no chapter 13, 4_robustness; the chapters are 01_overview, .*12_study"):
        bb.select_chapters(sources, ["13", "4_robustness"])


def test_build_book_runs_a_chapter_with_another_eps0_and_a_users_cnn(tmp_path):
    """papermill end to end: the parameters reach the page's runs, and a CNN registered by a module named in
    DPAAT_MODELS reaches the page's kernel (chapter 3 trains nothing; about 10 s)."""
    env = {**os.environ, **write_model_module(tmp_path)}
    res = subprocess.run([sys.executable, REPO / "scripts" / "build_book.py", "--profile", "quick", "--out", tmp_path,
                          "--chapters", "03", "--no-html", "-p", "eps0", "1.0", "-p", "seeds", "[0, 1]",
                          "-p", "models", "[plugcnn]"], capture_output=True, text=True, cwd=REPO, env=env)
    assert res.returncode == 0, res.stderr[-3000:]
    nb = json.loads((tmp_path / "book" / "03_methods.ipynb").read_text())
    assert nb["metadata"]["papermill"]["parameters"]["eps0"] == 1.0
    shown = "".join("".join(o.get("data", {}).get("text/markdown", "")) for c in nb["cells"]
                    for o in c.get("outputs", []))
    assert "training attack PGD-L2 eps0 = 1.0, 7 steps of 0.3 " in shown and "seeds: 0, 1 |" in shown
    assert "14 times the paper's per pixel" in shown and "models: plugcnn |" in shown
    tables = "".join("".join(o.get("data", {}).get("text/plain", "")) for c in nb["cells"]
                     for o in c.get("outputs", []))
    assert re.search(r"plugcnn\s+no \(from my_cnns\)", tables), tables[:3000]


def test_gradcam_selection_says_which_runs_its_images_are_correct_under():
    ids = [f"img{k}" for k in range(6)]
    labels = [0, 0, 1, 1, 2, 2]

    def preds(right: bool) -> pd.DataFrame:
        return pd.DataFrame({"image_id": ids, "label": labels, "pred_clean": labels if right else [1, 1, 2, 2, 0, 0]})

    both = [fake_result("smallcnn", m, preds=preds(True)) for m in ("std", "at", "dpaat")]
    chosen, note = report.gradcam_selection(both, "smallcnn", n_per_class=1, pool=2)
    assert len(chosen) == 3 and note.startswith("images correctly classified (clean) by all of STD, AT, DPAAT")
    # A class short of images gives fewer, never images chosen by one method (the others would be scored on
    # images they misclassify) ...
    half = preds(True)
    half.loc[half["label"] == 0, "pred_clean"] = 1
    chosen, note = report.gradcam_selection([fake_result("smallcnn", "std", preds=half), *both[1:]], "smallcnn",
                                            n_per_class=1, pool=2)
    assert len(chosen) == 2 and not {"img0", "img1"} & set(chosen)
    assert note.endswith("; 2 of the 3 asked for, because too few of the candidates are correct under all of them")
    # ... and where none is correct under all of them, the first candidates, whatever the predictions.
    weak_std = [fake_result("smallcnn", "std", preds=preds(False)), *both[1:]]
    chosen, note = report.gradcam_selection(weak_std, "smallcnn", n_per_class=1, pool=2)
    order = [per_class[0] for per_class in gradcam.candidate_order(preds(True), ("nv", "mel", "bkl"))]
    assert chosen == order and note == ("the first 1 of the 2 candidates per class (seeded), correct or not: none "
                                        "is classified correctly by all of STD, AT, DPAAT")


def test_the_stored_configuration_is_shown_as_its_file_holds_it(tmp_path):
    result = fake_result("smallcnn", "dpaat", tmp=tmp_path)
    assert '"source_size": null' in report.config_json(result)  # no folder: the configuration itself
    stored = result.config.to_dict()
    del stored["data"]["source_size"]  # written before the field existed
    store.write_json(result.path / "config.json", stored)
    shown = report.config_json(result)
    assert "source_size" not in shown
    assert json.loads(shown.strip("`").removeprefix("json\n")) == json.loads(json.dumps(stored))


# --------------------------------------------------------------------------
# Our group averages against the paper's Table I (report.gaps)
# --------------------------------------------------------------------------

PER_CLASS = 299  # the paper protocol's test images per class


def _test_predictions(acc: float, seed: int, shared: bool = True, ids=None) -> pd.DataFrame:
    """897 test images (299 per class) of which a share ``acc`` is classified correctly, clean and under
    20-PGD (acc / 2): the same images for every CNN (``shared``) or a draw of the CNN's own (``seed``)."""
    n = 3 * PER_CLASS
    rng = np.random.default_rng(0 if shared else seed)
    label = np.repeat([0, 1, 2], PER_CLASS)
    rank = rng.permutation(n)
    pred_clean = np.where(rank < round(acc * n), label, (label + 1) % 3)
    pred_pgd = np.where(rank < round(acc / 2 * n), label, (label + 1) % 3)
    return pd.DataFrame({"image_id": ids if ids is not None else [f"ISIC_{i:07d}" for i in range(n)],
                         "label": label, "pred_clean": pred_clean, "pred_20-PGD": pred_pgd})


def _group_runs(acc, seeds=(0,), shared=True, group="lightweight", method="std"):
    return [fake_result(m, method, seed=s, preds=_test_predictions(acc(k, s) if callable(acc) else acc,
                                                                   seed=10 * k + s, shared=shared))
            for k, m in enumerate(GROUPS[group]) for s in seeds]


def test_paper_gaps_measure_the_gap_against_two_test_sets():
    paper = report.paper_value("I", "lightweight", "STD", "GAcc")  # 70.77
    near = report.paper_gaps(_group_runs(0.71))
    assert list(near["column"]) == ["20-PGD", "GAcc"], "columns the predictions lack are left out"
    row = near.set_index("column").loc["GAcc"]
    assert row["ours"] == pytest.approx(100 * round(0.71 * 897) / 897)
    assert row["paper"] == paper and row["gap"] == pytest.approx(row["ours"] - paper)
    # The same images right for every CNN: the average is as noisy as one run, and the paper's test set adds
    # as much again, so the gap's 95 % noise is about 1.96 sqrt(2 p (1 - p) / n) (a bit less: within classes).
    binomial = 100 * 1.96 * np.sqrt(2 * 0.71 * 0.29 / 897)
    assert 0.8 * binomial < row["noise"] < 1.05 * binomial
    assert not row["beyond"] and row["seeds"] == 1 and not row["seed_noise"]
    far = report.paper_gaps(_group_runs(0.85)).set_index("column").loc["GAcc"]
    assert far["beyond"] and far["gap"] > far["noise"]
    # Each CNN wrong on images of its own: their errors average out, so the group average is less noisy.
    own = report.paper_gaps(_group_runs(0.71, shared=False)).set_index("column").loc["GAcc"]
    assert own["noise"] < 0.75 * row["noise"]
    assert report.paper_gaps(_group_runs(0.71)).equals(near), "the bootstrap is seeded"


def test_paper_gaps_add_the_spread_of_training_seeds_where_there_are_several():
    one = report.paper_gaps(_group_runs(0.71)).set_index("column").loc["GAcc"]
    spread = report.paper_gaps(_group_runs(lambda k, s: 0.65 + 0.06 * s, seeds=(0, 1, 2)))
    row = spread.set_index("column").loc["GAcc"]
    assert row["seeds"] == 3 and row["seed_noise"]
    assert row["ours"] == pytest.approx(100 * np.mean([round(a * 897) / 897 for a in (0.65, 0.71, 0.77)]))
    assert row["noise"] > 2 * one["noise"], "a spread of 6 points between seeds widens the noise"
    text = report.paper_gap_findings(spread)
    assert "spread between our training seeds" in text and "cannot be measured" not in text
    assert "cannot be measured" in report.paper_gap_findings(report.paper_gaps(_group_runs(0.71)))


def test_paper_gaps_need_a_complete_group_and_one_test_set():
    partial = [r for r in _group_runs(0.71) if r.config.model != GROUPS["lightweight"][-1]]
    assert report.paper_gaps(partial).empty and report.paper_gap_table(report.paper_gaps(partial)).empty
    assert "No group of the paper is complete" in report.paper_gap_findings(report.paper_gaps(partial),
                                                                            ["mobilenet_v2", "shufflenet_v2"])
    runs = _group_runs(0.71)
    other = _test_predictions(0.71, 0, ids=[f"ISIC_{i:07d}" for i in range(1, 898)])
    runs[-1] = fake_result(runs[-1].config.model, "std", preds=other)
    with pytest.raises(ValueError, match="tested on other images"):
        report.paper_gaps(runs)


def test_paper_gap_table_and_findings_mark_the_gaps_beyond_noise():
    gaps = report.paper_gaps(_group_runs(0.85) + _group_runs(0.71, method="at"))
    table = report.paper_gap_table(gaps)
    assert list(table.index) == [("lightweight", "STD"), ("lightweight", "AT")]
    assert table.loc[("lightweight", "STD"), "GAcc"].endswith(" *")
    std = gaps.set_index(["method", "column"]).loc[("STD", "GAcc")]
    assert table.loc[("lightweight", "STD"), "GAcc"] == f"{std['ours']:.1f} - 70.77 = {std['gap']:+.1f} ± " \
                                                        f"{std['noise']:.1f} *"
    text = report.paper_gap_findings(gaps)
    beyond = int(gaps["beyond"].sum())
    assert "(4 cells of Table I: group x method x column; in points)" in text and f"{beyond} of them differ" in text
    assert f"lightweight STD GAcc {std['gap']:+.1f}" in text


def test_weighted_metrics_are_scikit_learns_and_count_each_image_as_often_as_its_weight():
    from sklearn.metrics import average_precision_score, precision_recall_fscore_support

    rng = np.random.default_rng(3)
    label = rng.integers(0, 3, 200)
    score = np.round(rng.random(200), 1)  # many ties: scikit-learn's thresholds group them
    pred = np.where(rng.random(200) < 0.6, label, rng.integers(0, 3, 200))
    counts = rng.multinomial(200, np.full(200, 1 / 200), size=3)
    for w in np.vstack([np.ones(200), counts]):
        copies = np.repeat(np.arange(200), w.astype(int))  # the resample the weights stand for
        ap = report.weighted_average_precision(label == 1, score, w[None])[0]
        assert ap == pytest.approx(average_precision_score(label[copies] == 1, score[copies]), abs=1e-12)
        got = report.weighted_macro_scores(label, pred, 3, w[None])
        want = precision_recall_fscore_support(label[copies], pred[copies], labels=[0, 1, 2], average="macro",
                                               zero_division=0)
        for name, value in zip(("precision", "recall", "f1"), want[:3]):
            assert got[name][0] == pytest.approx(value, abs=1e-12)


def test_paper_gaps_of_table_ii_recompute_each_runs_metrics():
    from dpaat_lib.metrics import compute_metrics

    def preds(k, s):
        p = _test_predictions(0.7, seed=10 * k + s, shared=False)
        rng = np.random.default_rng(10 * k + s)
        for attack in ("clean", "20-PGD"):
            logits = rng.normal(size=(len(p), 3)) + 2.0 * np.eye(3)[p[f"pred_{attack}"]]
            prob = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
            for j, c in enumerate(("nv", "mel", "bkl")):
                p[f"p_{attack}_{c}"] = prob[:, j]
        return p

    runs = [fake_result(m, "dpaat", seed=s, preds=preds(k, s)) for k, m in enumerate(GROUPS["lightweight"])
            for s in (0, 1)]
    gaps = report.paper_gaps(runs, "II")
    assert list(gaps["column"]) == list(report.TABLE2_COLUMNS) and (gaps["table"] == "II").all()
    want = {c: np.mean([compute_metrics(r.predictions, ("nv", "mel", "bkl"))[c] for r in runs])
            for c in report.TABLE2_COLUMNS}
    for row in gaps.itertuples():
        assert row.ours == pytest.approx(want[row.column], abs=1e-9)  # fractions, the paper's scale
        assert row.paper == report.paper_value("II", "lightweight", "DPAAT", row.column)
        assert 0 < row.noise < 0.2 and row.seed_noise
    table = report.paper_gap_table(gaps)
    row = gaps.set_index("column").loc["mAP"]
    assert table.loc[("lightweight", "DPAAT"), "mAP"].startswith(f"{row['ours']:.3f} - {row['paper']:.4f} = ")
    assert "Table II" in report.paper_gap_findings(gaps) and "as fractions" in report.paper_gap_findings(gaps)


def test_paper_gap_headline_speaks_only_for_a_complete_group():
    gaps = report.paper_gaps(_group_runs(0.85) + _group_runs(0.71, method="at"))
    assert report.paper_gap_headline(gaps) == "", "the six CNNs are not all there: no all-six sentence"
    assert report.paper_gap_headline(report.paper_gaps([])) == ""
    line = report.paper_gap_headline(gaps, "lightweight")
    std = gaps.set_index(["method", "column"]).loc[("STD", "GAcc")]
    assert line.startswith("**Our lightweight average minus the paper's**")
    assert f"STD GAcc {std['gap']:+.1f} ± {std['noise']:.1f} *, 20-PGD" in line  # the columns in the given order
    assert f"{int(gaps[gaps['column'].isin(['GAcc', '20-PGD'])]['beyond'].sum())} of 4 differ beyond it" in line


def test_split_summary_is_recomputed_where_the_data_are_and_refuses_a_stored_file_that_differs(tmp_path,
                                                                                               synthetic_root):
    """Chapter 2's counts: computed from the metadata and stored; where the data are, recomputed every time and
    checked against the stored file (a changed metadata or split stops the page); without the data, loaded."""
    data = dataclasses.replace(profiles.data_config(profiles.get_profile("quick")), source="ham10000",
                               n_train=80, n_val=10, n_test=40)
    first = report.split_summary(data, synthetic_root, tmp_path, "p")
    (path,) = (tmp_path / "p").glob("split-summary-*.json")
    assert first["lesion_aware"]["n_test"] == 40 * len(data.classes)
    assert report.split_summary(data, synthetic_root, tmp_path, "p") == first == store.read_json(path)
    assert report.split_summary(data, None, tmp_path, "p") == first  # no data: the stored counts
    stored = store.read_json(path)
    stored["data"]["a_field_added_later"] = None  # the configuration's record may grow: the counts decide
    store.write_json(path, stored)
    assert report.split_summary(data, synthetic_root, tmp_path, "p")["split_digest"] == first["split_digest"]
    stored["lesion_aware"]["n_test"] += 1
    store.write_json(path, stored)
    with pytest.raises(ValueError, match="differs from the split summary recomputed from the metadata"):
        report.split_summary(data, synthetic_root, tmp_path, "p")
    assert report.split_summary(data, None, tmp_path / "elsewhere", "p") is None
