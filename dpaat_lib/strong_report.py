"""Chapter 11's report side: does the robustness the book measures survive stronger attacks?

The attacks themselves are the library's (:mod:`dpaat_lib.robustness`: APGD-CE, APGD-DLR, Square and the
gradient-masking checks). Here they are run on the book's runs, load-or-compute and stored beside each
run (:func:`strong_evaluations`), and read:

- **The worst case** per test image over the paper's attacks and the suite, per norm
  (:func:`worst_case_frame`); on the first seed's subset with the masking checks (:func:`strong_table`,
  :func:`strong_beside_paper`, :func:`strong_findings`) and, where the profile asks for it
  (``strong_all_seeds``), on every test image of every seed (:func:`seed_worst_case` and the functions
  after it, with chapter 12's paired test across seeds).
- **Gradient masking**: more steps, more restarts, a growing radius, the black box against the white box
  (:func:`masking_summary`, :func:`masking_detail`, :func:`plot_masking_eps`).

What each method costs to train is in :mod:`dpaat_lib.report` (section "Speed and cost"), beside the
throughput benchmark of chapter 10.
"""
from __future__ import annotations

import json
from typing import Sequence

import numpy as np
import pandas as pd

from . import experiment, profiles, store
from .config import RunConfig
from .evaluation import CLEAN
from .metrics import accuracy
from .report import (METHOD_COLORS, and_list, closed, fmt, mean_std_table, method_key, new_figure, paper_value,
                     resolve_path)


STRONG_CHECK_LABELS = {"more_steps": "more steps", "restarts": "more restarts", "eps_to_zero": "eps grows -> 0",
                       "blackbox_not_stronger": "black box not stronger"}
_NORM_NAME = {"linf": "Linf", "l2": "L2"}


def run_eps(config: RunConfig) -> tuple[float, float]:
    """The run's own evaluation radii (Linf, L2): those of its paper attacks (2/255 and eps0)."""
    from .attacks import L2_EPS, LINF_EPS

    linf = next((a.eps for a in config.eval_attacks if a.norm == "linf"), LINF_EPS)
    l2 = next((a.eps for a in config.eval_attacks if a.norm == "l2"), L2_EPS)
    return float(linf), float(l2)


def strong_suite_for(prof: profiles.Profile, config: RunConfig):
    """APGD-CE, APGD-DLR and Square in Linf and L2 at the run's radii, with the profile's budget
    (``apgd_steps``, ``square_queries``), seeded with the run's seed (:func:`robustness.strong_suite`)."""
    from . import robustness

    return robustness.strong_suite(*run_eps(config), apgd_steps=prof.apgd_steps,
                                   square_queries=prof.square_queries, seed=config.train.seed)


def strong_masking_options(prof: profiles.Profile) -> dict:
    """The masking checks scaled to the profile's APGD budget s: APGD-CE with s/4, s and 2s steps (the
    suite's own s is reused, 2s goes beyond it; APGD-DLR runs at 2s for the black-box check); 1, 2 and 4
    restarts of the s/4-step attack; 20-step PGD over the default radii up to a large one.
    For AutoAttack's budget (s = 100) that is 25, 100 and 200 steps; the paper profile uses s = 50."""
    s = int(prof.apgd_steps)
    return {"steps": sorted({max(1, s // 4), s, 2 * s}), "restarts": [1, 2, 4], "pgd_steps": 20}


def strong_evaluations(results: Sequence[experiment.RunResult], prof: profiles.Profile, results_dir,
                       data_root=None, device: str = "cpu", cache_dir=None, *,
                       whole_test_set: bool = False) -> tuple[dict, list[str]]:
    """:func:`dpaat_lib.robustness.robust_eval_result` for every run, with the profile's suite, subset
    (``strong_images``) and masking options: load ``<run>/robustness-<hash>.json`` or compute and store it.
    ``whole_test_set``: the suite alone on every test image, no masking checks (:func:`seed_worst_case`).

    Returns ({(model, method label, seed): result}, run ids left out because they have neither the
    stored file nor a checkpoint to compute it). The test set is decoded once per data configuration.
    """
    from . import robustness

    masking = None if whole_test_set else strong_masking_options(prof)
    n_images = None if whole_test_set else prof.strong_images
    out, missing, tensors = {}, [], {}
    for r in results:
        c = r.config
        suite = strong_suite_for(prof, c)
        path = robustness.robust_eval_path(c, results_dir, suite, n_images, masking=masking,
                                           batch_size=prof.strong_batch)
        t = None
        if not path.exists():
            if not (store.RunDir(results_dir, c.run_id).ckpt / "best.pt").exists():
                missing.append(c.run_id)
                continue
            if c.data not in tensors:
                tensors[c.data] = experiment.load_data(c.data, resolve_path(data_root), cache_dir)[1]
            t = tensors[c.data]
        out[(c.model, c.method.label, c.train.seed)] = robustness.robust_eval_result(
            c, results=results_dir, data_root=resolve_path(data_root), device=device, cache_dir=cache_dir,
            suite=suite, n_images=n_images, masking=masking, batch_size=prof.strong_batch, tensors=t)
    return out, missing


# The columns of the every-seed worst case: the paper's 20-step attack of each norm beside the worst case
# of that norm (the paper's attacks and the suite's), then over both norms.
WORST_CASE_COLUMNS = ("clean", "20-IFGSM", "worst case Linf", "20-PGD", "worst case L2", "worst case")


def worst_case_frame(evaluation: dict, config: RunConfig) -> pd.DataFrame:
    """Per test image (index: image id), whether the run is right clean, under the paper's 20-IFGSM and
    20-PGD, and in the worst case of each norm and of every attack (:data:`WORST_CASE_COLUMNS`), from a
    stored :func:`dpaat_lib.robustness.robust_eval_result`. A worst case counts an image only if it is
    right clean and under every attack of the set."""
    from .robustness import worst_case

    frame = pd.DataFrame(evaluation["per_image"], index=pd.Index(evaluation["image_ids"], name="image_id")).astype(bool)
    norm_of = {**{a.name: a.norm for a in config.eval_attacks},
               **{a["name"]: a["norm"] for a in evaluation["spec"]["suite"]}}
    attacks = [c for c in frame.columns if c != CLEAN]
    unknown = [c for c in attacks if c not in norm_of]
    if unknown:
        raise ValueError(f"the evaluation of {config.run_id} has columns {unknown} that are neither the run's "
                         "attacks nor its suite's: it belongs to another run")
    def of_norm(norm):
        return worst_case(frame, [CLEAN, *(c for c in attacks if norm_of[c] == norm)])

    return pd.DataFrame({"clean": frame[CLEAN], "20-IFGSM": frame["20-IFGSM"], "worst case Linf": of_norm("linf"),
                         "20-PGD": frame["20-PGD"], "worst case L2": of_norm("l2"),
                         "worst case": worst_case(frame, [CLEAN, *attacks])})[list(WORST_CASE_COLUMNS)]


def seed_worst_case(results: Sequence[experiment.RunResult], prof: profiles.Profile, results_dir, data_root=None,
                    device: str = "cpu", cache_dir=None) -> tuple[dict, list[str]]:
    """The strong suite on every test image of every run (all seeds; no masking checks), as
    {(model, method label, seed): :func:`worst_case_frame`} and the run ids that have neither the stored
    evaluation nor a checkpoint. Empty when the profile does not ask for it (``strong_all_seeds``)."""
    if not prof.strong_all_seeds:
        return {}, []
    evals, missing = strong_evaluations(results, prof, results_dir, data_root, device, cache_dir, whole_test_set=True)
    configs = {(r.config.model, r.config.method.label, r.config.train.seed): r.config for r in results}
    return {k: worst_case_frame(e, configs[k]) for k, e in _sorted_items(evals)}, missing


def worst_case_runs(frames: dict) -> pd.DataFrame:
    """One row per run of :func:`seed_worst_case`'s frames: model, method, seed, test images and the
    accuracy (share of images) in each of :data:`WORST_CASE_COLUMNS`; CNNs, methods and seeds sorted."""
    rows = [{"model": model, "method": meth, "seed": seed, "images": len(f), **f.mean()}
            for (model, meth, seed), f in frames.items()]
    if not rows:
        return pd.DataFrame(columns=["model", "method", "seed", "images", *WORST_CASE_COLUMNS])
    runs = pd.DataFrame(rows)
    return runs.sort_values(["model", "method", "seed"], kind="stable",
                            key=lambda c: c.map(method_key) if c.name == "method" else c).reset_index(drop=True)


def seed_worst_case_table(frames: dict, digits: int = 1) -> pd.DataFrame:
    """Per (model, method): accuracy (%) in each of :data:`WORST_CASE_COLUMNS`, ``mean ± std`` over the
    seeds (:func:`mean_std_table`), the seeds and the test images."""
    runs = worst_case_runs(frames)
    out = mean_std_table(runs, WORST_CASE_COLUMNS, digits=digits)
    images = runs.groupby(["model", "method"])["images"].agg(lambda v: "/".join(sorted(set(map(str, v)))))
    out["images"] = [images[k] for k in out.index]
    return out


def seed_worst_case_significance(frames: dict, columns: Sequence[str] = ("worst case Linf", "worst case L2")
                                 ) -> pd.DataFrame:
    """DPAAT against AT, SAT and AMAT in the worst case of each norm over the seeds
    (:func:`dpaat_lib.study.correct_significance`: paired t-test across seeds, Holm, bootstrap over images)."""
    from . import study

    return study.correct_significance(frames, columns=columns)


def worst_case_headline(frames: dict, significance: pd.DataFrame, norm: str = "L2", a: str = "DPAAT",
                        alpha: float = 0.05) -> str:
    """One paragraph for the overview (Markdown): ``a`` against each method in the per-image worst case of
    ``norm`` over every seed and test image (chapter 11), with the t-test's verdict; "" without it."""
    col = f"worst case {norm}"
    rows = significance[significance["attack"] == col] if len(significance) else significance
    if not frames or not len(rows):
        return ""
    paper = "20-PGD" if norm == "L2" else "20-IFGSM"
    runs = worst_case_runs(frames)
    mine = runs[runs["method"] == a]
    drop = 100 * float((mine[col] - mine[paper]).mean())
    seeds = int(rows["seeds"].max())

    def verdict(r):  # Holm-adjusted, as every other verdict of the book (chapter 11's table among them)
        if r["seeds"] < 2:
            return "one seed"
        p = r["p_holm"] if "p_holm" in r else r["p_ttest"]
        beyond = "beyond" if p < alpha else "within"
        holm = f", Holm p = {r['p_holm']:.3f}" if "p_holm" in r else ""
        return f"p = {r['p_ttest']:.3f}{holm}: {beyond} seed-to-seed noise"

    parts = [f"{r['comparison'].split(' - ')[1]} {r['mean']:+.1f} points ({verdict(r)})" for _, r in rows.iterrows()]
    return (f"**Under the stronger attacks** (chapter 11: the per-image worst case of the paper's {norm} attacks, "
            f"APGD-CE, APGD-DLR and Square, on every test image of {seeds} seed(s)), {a} minus "
            + and_list(parts) + f". The worst case takes {-drop:.1f} points from {a}'s "
            f"{paper} accuracy"
            + (f"; Holm's adjustment is over chapter 11's {len(significance)} worst-case tests." if seeds > 1
               and "p_holm" in rows else "."))


def seed_worst_case_findings(frames: dict, significance: pd.DataFrame, missing: Sequence[str] = (),
                             prof: profiles.Profile | None = None) -> str:
    """What the every-seed worst case shows (Markdown): how far the strong attacks lower each method below
    the paper's 20-step attacks (mean over seeds), and the comparison with seed-to-seed noise."""
    from . import study

    if not frames:
        if prof is not None and not prof.strong_all_seeds:
            return (f"Profile `{prof.name}` evaluates the strong suite on the first seed's subset only "
                    "(`strong_all_seeds` is off: on the paper profile a GPU's time goes to the grid); the "
                    "notebook parameter `strong_all_seeds=True` runs it on every seed and test image.")
        return (f"No every-seed evaluation is stored and no checkpoint is here to compute one ({len(missing)} "
                "run(s) without either).")
    seeds = sorted({k[2] for k in frames})
    images = sorted({len(f) for f in frames.values()})
    lines = []
    means = worst_case_runs(frames).groupby(["model", "method"], sort=False)[list(WORST_CASE_COLUMNS)].mean()
    for (model, meth), m in means.iterrows():
        lines.append(f"{model} {meth}: 20-IFGSM {100 * m['20-IFGSM']:.1f} -> worst case Linf "
                     f"{100 * m['worst case Linf']:.1f} ({100 * (m['worst case Linf'] - m['20-IFGSM']):+.1f}); "
                     f"20-PGD {100 * m['20-PGD']:.1f} -> worst case L2 {100 * m['worst case L2']:.1f} "
                     f"({100 * (m['worst case L2'] - m['20-PGD']):+.1f})")
    parts = [f"**Every seed, the whole test set** ({len(seeds)} seed(s), {'/'.join(map(str, images))} test images "
             "per run). How much the stronger attacks take away, mean over seeds (points):\n\n- " + "\n- ".join(lines)]
    if len(significance):
        parts.append("**DPAAT against AT, SAT and AMAT in the worst case.** "
                     + study.seed_findings(significance))
    if missing:
        parts.append(f"{len(missing)} run(s) have neither this evaluation nor a checkpoint and are left out: "
                     f"{', '.join(missing)}.")
    return "\n\n".join(parts)


def _sorted_items(evals: dict):
    return sorted(evals.items(), key=lambda kv: (kv[0][0], method_key(kv[0][1]), kv[0][2]))


def _pct(v) -> str:
    return fmt(float(v)) if v is not None else "—"


def _batches(n_images: list[int], batch: int) -> str:
    """How the attacks batch the images: "in one batch" when every evaluation fits one."""
    return "in one batch" if n_images and max(n_images) <= batch else f"in batches of {batch}"


def strong_settings(prof: profiles.Profile, evals: dict) -> str:
    """One paragraph: which attacks, budgets, images and checks the chapter's numbers come from."""
    m = strong_masking_options(prof)
    n = sorted({int(e["n_images"]) for e in evals.values()})
    images = (f"{n[0]} test images" if len(n) == 1 else f"{', '.join(map(str, n))} test images") if n else "—"
    subset = ("the whole test set" if prof.strong_images is None else
              f"{images}: the first {prof.strong_images // len(prof.classes)} test images of each of the "
              f"{len(prof.classes)} classes, in test order")
    return (f"**Attacks** (profile `{prof.name}`): APGD-CE and APGD-DLR with {prof.apgd_steps} steps and "
            f"Square with {prof.square_queries} queries (AutoAttack's defaults: 100 and 5000), each in Linf "
            f"(eps = {profiles.linf_text(prof.linf_eps)}) and L2 (eps = eps0), one restart, seeded with the run's "
            "seed, on "
            f"{subset}, {_batches(n, prof.strong_batch)}; the paper's attacks are read from the same images' "
            "stored predictions. "
            f"**Masking checks**: APGD-CE with {'/'.join(map(str, m['steps']))} steps; "
            f"{'/'.join(map(str, m['restarts']))} restarts of the {min(m['steps'])}-step attack; "
            f"{m['pgd_steps']}-step PGD as eps grows to a large radius; Square against the worst case of every "
            "white-box attack at the paper's radius. A check tolerates one image of noise. "
            f"With {prof.square_queries} queries Square is far below its usual budget, so the last check can "
            "only catch gross masking.")


def strong_table(evals: dict) -> pd.DataFrame:
    """Per run: accuracy (%) clean, under the paper's Linf and L2 attacks and the strong suite (same
    images), the per-image worst case per norm, over the paper's five attacks and over all attacks.
    A worst case counts an image as robust only if it is correct clean and under every attack named."""
    rows = {}
    for key, e in _sorted_items(evals):
        ra, wc = e["robust_accuracy"], e["worst_case"]
        rows[key] = {
            "images": str(e["n_images"]), "clean": _pct(e["clean_accuracy"]),
            "Linf: 20-IFGSM (paper)": _pct(ra.get("20-IFGSM")), "Linf: APGD-CE": _pct(ra.get("APGD-CE-Linf")),
            "Linf: APGD-DLR": _pct(ra.get("APGD-DLR-Linf")), "Linf: Square": _pct(ra.get("Square-Linf")),
            "Linf: worst case": _pct(wc.get("all_linf")),
            "L2: 20-PGD (paper)": _pct(ra.get("20-PGD")), "L2: 50-PGD (paper)": _pct(ra.get("50-PGD")),
            "L2: APGD-CE": _pct(ra.get("APGD-CE-L2")), "L2: APGD-DLR": _pct(ra.get("APGD-DLR-L2")),
            "L2: Square": _pct(ra.get("Square-L2")), "L2: worst case": _pct(wc.get("all_l2")),
            "worst case, paper's 5 attacks": _pct(wc.get("paper")), "worst case, all attacks": _pct(wc.get("all")),
        }
    out = pd.DataFrame.from_dict(rows, orient="index")
    if len(out):
        out.index = pd.MultiIndex.from_tuples(out.index, names=["model", "method", "seed"])
    return out


def strong_beside_paper(evals: dict, group: str = "all_six") -> pd.DataFrame:
    """The paper's published 20-IFGSM and 20-PGD (``group`` average, %) beside ours on the evaluated
    images: the same attack and the per-image worst case of its norm."""
    rows = {}
    for (model, meth, seed), e in _sorted_items(evals):
        ra, wc = e["robust_accuracy"], e["worst_case"]
        rows[(model, meth, seed)] = {
            f"paper ({group}): 20-IFGSM": fmt(paper_value("I", group, meth, "20-IFGSM"), scale=1.0, digits=2),
            "ours: 20-IFGSM": _pct(ra.get("20-IFGSM")), "ours: worst case Linf": _pct(wc.get("all_linf")),
            f"paper ({group}): 20-PGD": fmt(paper_value("I", group, meth, "20-PGD"), scale=1.0, digits=2),
            "ours: 20-PGD": _pct(ra.get("20-PGD")), "ours: worst case L2": _pct(wc.get("all_l2"))}
    out = pd.DataFrame.from_dict(rows, orient="index")
    if len(out):
        out.index = pd.MultiIndex.from_tuples(out.index, names=["model", "method", "seed"])
    return out


def subset_gap_note(evals: dict, results: Sequence[experiment.RunResult],
                    attacks: Sequence[str] = ("clean", "20-IFGSM", "20-PGD")) -> str:
    """How the evaluated subset compares with the whole test set (Markdown): for each run in ``evals`` and each
    of ``attacks``, its accuracy on the subset (the stored evaluation) minus its accuracy on every test image
    (the run's stored predictions). A subset easier than the test set makes every level beside the paper
    look better than the run is; "" when no run of ``evals`` is among ``results``."""
    by_key = {(r.config.model, r.config.method.label, r.config.train.seed): r for r in results}
    gaps = []
    for key, e in _sorted_items(evals):
        r = by_key.get(key)
        if r is None:
            continue
        pred = r.predictions
        for att in attacks:
            sub = e["clean_accuracy"] if att == "clean" else e["robust_accuracy"].get(att)
            if sub is not None and f"pred_{att}" in pred:
                gaps.append((key, att, 100 * sub, 100 * accuracy(pred, att)))
    if not gaps:
        return ""
    d = np.array([g[2] - g[3] for g in gaps])
    n_sub = {int(e["n_images"]) for e in evals.values()}
    n_full = {len(by_key[k].predictions) for k, *_ in gaps}
    big = max(gaps, key=lambda g: abs(g[2] - g[3]))
    (model, meth, seed), att, sub, full = big
    side = "easier" if d.mean() > 0 else "harder"
    return (f"**The subset against the whole test set.** A run's accuracy on the {'/'.join(map(str, sorted(n_sub)))} "
            f"images above minus its accuracy on all {'/'.join(map(str, sorted(n_full)))} test images is "
            f"{d.min():+.1f} to {d.max():+.1f} points (mean {d.mean():+.1f}), clean and under the paper's "
            f"{', '.join(a for a in attacks if a != 'clean')} ({len(gaps)} pairs; the largest: {model} {meth} seed "
            f"{seed}, {att} {sub:.1f} here against {full:.1f}). So the subset is {side} than the test set, and the "
            "levels beside the paper above inherit that; the seed means over every test image in \"Every seed\" "
            "below are the ones to set beside the paper.")


def _accs(values) -> str:
    return ", ".join(f"{100 * v:.1f}" for v in values)


def _eps_text(norm: str, values) -> str:
    return ", ".join((f"{v * 255:.3g}/255" if norm == "linf" else f"{v:.3g}") for v in values)


def masking_numbers(check: dict) -> str:
    """The key numbers of one masking check, in words (accuracy in %)."""
    d, name = check["detail"], check["check"]
    if name == "more_steps":
        s = (f"{d['attack']} with {'/'.join(map(str, d['steps']))} steps: {_accs(d['accuracy'])}%")
        return s + ("" if d.get("converged", True) else "; still falling at the most steps (not converged)")
    if name == "restarts":
        return (f"{d['attack']} with {'/'.join(map(str, d['restarts']))} restarts: {_accs(d['accuracy'])}%"
                + ("" if d.get("converged", True) else "; the last restarts still found new examples"))
    if name == "eps_to_zero":
        return (f"{d['attack']} at eps {_eps_text(d['norm'], d['eps'])}: {_accs(d['accuracy'])}% "
                f"({'monotone' if d['monotone'] else 'RISES'}; largest radius allows <= "
                f"{100 * d['max_final_correct'] / max(d['n_images'], 1):.1f}%)")
    if name == "blackbox_not_stronger":
        return (f"worst case of the white-box attacks {100 * d['white_acc']:.1f}%, {d['black_attack']} "
                f"{100 * d['black_acc']:.1f}%; images fooled only by the black box: "
                f"{d.get('fooled_only_by_black_box', '—')}")
    return json.dumps(d, sort_keys=True)


def masking_summary(evals: dict) -> pd.DataFrame:
    """Pass / FAIL of each masking check per norm, one row per run, and whether all passed."""
    rows = {}
    for key, e in _sorted_items(evals):
        row = {}
        for c in e.get("masking") or []:
            norm = c["detail"]["norm"]
            row[f"{STRONG_CHECK_LABELS.get(c['check'], c['check'])} ({_NORM_NAME[norm]})"] = \
                "pass" if c["passed"] else "FAIL"
        row["all checks"] = ("—" if e.get("masking_passed") is None else
                             ("pass" if e["masking_passed"] else "FAIL"))
        rows[key] = row
    out = pd.DataFrame.from_dict(rows, orient="index")
    if len(out):
        out.index = pd.MultiIndex.from_tuples(out.index, names=["model", "method", "seed"])
    return out


def _masking_columns(check: dict) -> dict:
    """A check's numbers as short table cells: attack, what varies, its values, accuracy (%), note."""
    d, name = check["detail"], check["check"]
    if name in ("more_steps", "restarts"):
        key = "steps" if name == "more_steps" else "restarts"
        note = "" if d.get("converged", True) else \
            ("not converged" if name == "more_steps" else "last restarts still found new examples")
        return {"attack": d["attack"], "varied": key, "values": ", ".join(map(str, d[key])),
                "accuracy (%)": _accs(d["accuracy"]), "note": note}
    if name == "eps_to_zero":
        allowed = 100 * d["max_final_correct"] / max(d["n_images"], 1)
        return {"attack": d["attack"], "varied": "eps", "values": _eps_text(d["norm"], d["eps"]),
                "accuracy (%)": _accs(d["accuracy"]),
                "note": f"{'monotone' if d['monotone'] else 'RISES'}; <= {allowed:.1f}% allowed at the largest"}
    if name == "blackbox_not_stronger":
        return {"attack": f"{d['black_attack']} vs white box", "varied": "attack",
                "values": f"white-box worst, {d['black_attack']}",
                "accuracy (%)": _accs([d["white_acc"], d["black_acc"]]),
                "note": f"fooled only by the black box: {d.get('fooled_only_by_black_box', '—')}"}
    return {"attack": "", "varied": "", "values": "", "accuracy (%)": "", "note": json.dumps(d, sort_keys=True)}


def masking_detail(evals: dict) -> pd.DataFrame:
    """Every masking check of every run: model, method, seed, norm, check, result and its key numbers
    (short columns, so no cell is cut in the page)."""
    rows = []
    for (model, meth, seed), e in _sorted_items(evals):
        for c in e.get("masking") or []:
            rows.append({"model": model, "method": meth, "seed": seed, "norm": _NORM_NAME[c["detail"]["norm"]],
                         "check": STRONG_CHECK_LABELS.get(c["check"], c["check"]),
                         "result": "pass" if c["passed"] else "FAIL", **_masking_columns(c)})
    return pd.DataFrame(rows)


def plot_masking_eps(evals: dict):
    """Robust accuracy against eps from the masking checks' sweep (20-step PGD), one panel per model
    and norm, one line per method; dotted: Table I's radius (our reading of the paper's); dashed: the
    largest accuracy the check allows at the largest radius."""
    models = list(dict.fromkeys(k[0] for k, _ in _sorted_items(evals)))
    colors = METHOD_COLORS
    fig = new_figure(9, 3.4 * max(1, len(models)))
    axes = fig.subplots(max(1, len(models)), 2, squeeze=False)
    for i, model in enumerate(models):
        for j, norm in enumerate(("linf", "l2")):
            ax = axes[i, j]
            limit, radius, ticks = None, None, set()
            for (mod, meth, seed), e in _sorted_items(evals):
                checks = [c for c in e.get("masking") or [] if c["check"] == "eps_to_zero"
                          and c["detail"]["norm"] == norm]
                if mod != model or not checks:
                    continue
                d = checks[0]["detail"]
                scale = 255 if norm == "linf" else 1
                ax.plot(np.array(d["eps"]) * scale, 100 * np.array(d["accuracy"]), marker="o",
                        color=colors.get(meth), label=meth + (f" s{seed}" if seed else ""))
                limit = 100 * d["max_final_correct"] / max(d["n_images"], 1)
                radius = run_eps_from_detail(e, norm) * scale
                ticks |= {float(v) * scale for v in d["eps"]}
            if limit is not None:
                ax.axhline(limit, color="k", ls="--", lw=0.8, label="allowed at the largest eps")
            if radius is not None:
                ax.axvline(radius, color="k", ls=":", lw=0.8, label="Table I's radius")
                ax.set_xscale("symlog", linthresh=radius)
            if ticks:
                ax.set_xticks(sorted(ticks), [f"{t:.3g}" for t in sorted(ticks)], fontsize=7)
                ax.set_xlim(0, 1.15 * max(ticks))
            scale_name = f"symlog axis, linear below {radius:.3g}" if radius is not None else "linear axis"
            ax.set_xlabel(f"eps x 255 (Linf; {scale_name})" if norm == "linf" else f"eps (L2; {scale_name})")
            ax.set_ylabel("accuracy (%)")
            ax.set_ylim(-2, 100)
            ax.set_title(f"{model}: 20-step PGD, {_NORM_NAME[norm]}", fontsize=9)
            ax.legend(fontsize=7)
    return closed(fig)


def run_eps_from_detail(evaluation: dict, norm: str) -> float:
    """The paper's radius in ``norm`` that a stored evaluation's suite used."""
    return float(next(a["eps"] for a in evaluation["spec"]["suite"] if a["norm"] == norm))


def _eps_failure_reading(check: dict) -> str:
    """For a failed eps check: did the sweep reach the allowed accuracy at some radius (then lose it), or never?"""
    if check["check"] != "eps_to_zero":
        return ""
    d = check["detail"]
    allowed = d["max_final_correct"]
    low = min(range(len(d["correct"])), key=lambda i: (d["correct"][i], i))
    e = _eps_text(d["norm"], [d["eps"][low]])
    if d["correct"][low] <= allowed:
        return (f". It was already down to {100 * d['accuracy'][low]:.1f}% at eps {e} and rose again: the "
                "most likely the fixed-step PGD's last iterate overshooting at a larger radius rather than "
                "gradients that lead nowhere")
    return (f". It never got below {100 * d['accuracy'][low]:.1f}% (at eps {e}): gradients that lead nowhere "
            "cannot be ruled out")


def strong_findings(evals: dict, missing: Sequence[str] = (), synthetic: bool = False) -> str:
    """The chapter's "what it shows", computed from the stored evaluations (Markdown)."""
    if not evals:
        return ("No stronger evaluation is stored for these runs and no checkpoint is here to compute one "
                f"({len(missing)} run(s) without either); train the grid here or copy the runs' ckpt/ folders.")
    parts = []
    n = sorted({int(e["n_images"]) for e in evals.values()})
    point = 100 / n[0]
    lines = []
    for (model, meth, seed), e in _sorted_items(evals):
        ra, wc = e["robust_accuracy"], e["worst_case"]
        d_l2 = 100 * (wc["all_l2"] - ra["20-PGD"])
        d_linf = 100 * (wc["all_linf"] - ra["20-IFGSM"])
        lines.append(f"{model} {meth}{f' (seed {seed})' if seed else ''}: 20-PGD {_pct(ra['20-PGD'])} -> worst case L2 "
                     f"{_pct(wc['all_l2'])} ({d_l2:+.1f} points); 20-IFGSM {_pct(ra['20-IFGSM'])} -> worst case "
                     f"Linf {_pct(wc['all_linf'])} ({d_linf:+.1f}); all attacks {_pct(wc['all'])}")
    parts.append("**How much the stronger attacks take away** (worst case per image minus the paper's attack, "
                 f"same {', '.join(map(str, n))} images; one image = {point:.1f} points):\n\n- " + "\n- ".join(lines))
    # DPAAT against AT, under the paper's attack and under the worst case
    by = evals
    cmp = []
    for (model, meth, seed), e in _sorted_items(evals):
        if meth != "DPAAT" or (model, "AT", seed) not in by:
            continue
        a = by[(model, "AT", seed)]
        p = 100 * (e["robust_accuracy"]["20-PGD"] - a["robust_accuracy"]["20-PGD"])
        w = 100 * (e["worst_case"]["all_l2"] - a["worst_case"]["all_l2"])
        cmp.append(f"{model}: DPAAT minus AT is {p:+.1f} points under 20-PGD and {w:+.1f} under the L2 worst case"
                   + (" (the sign changes)" if p * w < 0 else ""))
    if cmp:
        parts.append("**DPAAT against AT**: " + "; ".join(cmp) + ". These are single training runs: whether a "
                     "difference exceeds the run-to-run variation of training needs several seeds (below, the worst "
                     "case over every seed where the profile runs it; chapter 12, the paper's attacks).")
    # the paper's own attacks: already at the worst case?
    same = [f"{k[0]} {k[1]}" for k, e in _sorted_items(evals)
            if abs(e["worst_case"]["all_l2"] - e["robust_accuracy"]["20-PGD"]) < 1e-9]
    parts.append(f"The paper's 20-PGD already reaches the L2 worst case for {len(same)} of {len(evals)} runs"
                 + (f" ({', '.join(same)})" if same and len(same) < len(evals) else "")
                 + ": where it does, the stronger attacks find no image it missed, and the paper's number is "
                   "not inflated by a weak attack at this budget.")
    # masking
    fails = [(k, c) for k, e in _sorted_items(evals) for c in (e.get("masking") or []) if not c["passed"]]
    unconverged = [(k, c) for k, e in _sorted_items(evals) for c in (e.get("masking") or [])
                   if c["check"] == "more_steps" and not c["detail"].get("converged", True)]
    n_checks = sum(len(e.get("masking") or []) for e in evals.values())
    if not fails:
        per_run = sorted({len(e.get("masking") or []) for e in evals.values()})
        parts.append(f"**Gradient masking**: every run passes all its checks ({'/'.join(map(str, per_run))} per run, "
                     f"{n_checks} in all): more steps and restarts never "
                     "raise robust accuracy, accuracy falls to about zero as eps grows, and Square finds no image "
                     "the white-box attacks missed. Passing is necessary, not sufficient (Carlini et al. 2019): "
                     "it rules out the common kinds of masking, not every adaptive attack.")
    else:
        meaning = {"more_steps": "more steps raised accuracy: the attack's optimisation is erratic (noisy or "
                                 "masked gradients), so the fewer-step numbers are not reliable upper bounds",
                   "restarts": "more restarts raised accuracy, which a deterministic evaluation cannot do "
                               "(the first restart is identical): a bug or a non-deterministic model",
                   "eps_to_zero": "a gradient attack with an ever larger budget should drive accuracy to about "
                                  "zero and never let it rise; where it does not, either the gradients lead "
                                  "nowhere (masking) or the fixed-step PGD (step 2.5 eps / steps) overshoots at "
                                  "large radii, which APGD's adaptive step avoids: the table's APGD numbers at "
                                  "the paper's radius are then the ones to trust",
                   "blackbox_not_stronger": "a black-box search beat the gradient attacks: the signature of "
                                            "masked gradients; the white-box numbers overstate robustness"}
        items = [f"{k[0]} {k[1]}, {STRONG_CHECK_LABELS[c['check']]} ({_NORM_NAME[c['detail']['norm']]}): "
                 f"{masking_numbers(c)}{_eps_failure_reading(c)}." for k, c in fails]
        kinds = list(dict.fromkeys(c["check"] for _, c in fails))
        parts.append(f"**Gradient masking**: {len(fails)} of {n_checks} checks fail:\n\n- " + "\n- ".join(items)
                     + "\n\nWhat a failure means: " + "; ".join(f"*{STRONG_CHECK_LABELS[k]}*: {meaning[k]}"
                                                              for k in kinds) + ".")
    if unconverged:
        parts.append("Not converged (accuracy still fell by more than one image at the largest step count): "
                     + "; ".join(f"{k[0]} {k[1]} {_NORM_NAME[c['detail']['norm']]}" for k, c in unconverged)
                     + ". For those runs even the worst case is an upper bound on the true robust accuracy.")
    if missing:
        parts.append(f"{len(missing)} run(s) have neither a stored stronger evaluation nor a checkpoint and are "
                     f"not shown: {', '.join(missing)}.")
    if synthetic:
        parts.append("These are SYNTHETIC data: the numbers test the evaluation, not the paper.")
    return "\n\n".join(parts)
