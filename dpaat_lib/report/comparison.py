"""Comparing two methods honestly: paired tests across seeds, bootstrap intervals over test images, Holm's
correction."""
from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd

from .. import experiment
from ..evaluation import CLEAN
from .common import summary


def _mcnemar_p(b: int, c: int) -> float:
    """Exact two-sided McNemar p-value from the discordant counts b, c."""
    from scipy.stats import binomtest

    n = b + c
    return 1.0 if n == 0 else float(binomtest(min(b, c), n, 0.5).pvalue)


def paired_comparison(results: Sequence[experiment.RunResult], a: str = "DPAAT", b: str = "AT",
                      attacks: Sequence[str] = (CLEAN, "20-PGD")) -> pd.DataFrame:
    """Method ``a`` minus method ``b`` per model, seed and attack, on the same test images.

    Columns: model, seed, attack, acc_a, acc_b, diff (points), a_only / b_only (images that only one of
    them gets right) and the exact McNemar p-value. The test only covers the test-set sampling of
    one training run per method; variation between training seeds is not in it.
    """
    by = {(r.config.model, r.config.method.label, r.config.train.seed): r for r in results}
    rows = []
    for (model, meth, seed), ra in by.items():
        if meth != a or (model, b, seed) not in by:
            continue
        rb = by[(model, b, seed)]
        pa = ra.predictions.set_index("image_id")
        pb = rb.predictions.set_index("image_id").loc[pa.index]
        for att in attacks:
            ca = (pa[f"pred_{att}"] == pa["label"]).to_numpy()
            cb = (pb[f"pred_{att}"] == pb["label"]).to_numpy()
            a_only, b_only = int((ca & ~cb).sum()), int((~ca & cb).sum())
            rows.append({"model": model, "seed": seed, "attack": "GAcc" if att == CLEAN else att,
                         "acc_a": ca.mean(), "acc_b": cb.mean(), "diff": 100 * (ca.mean() - cb.mean()),
                         "a_only": a_only, "b_only": b_only, "p": _mcnemar_p(a_only, b_only),
                         "n_test": len(ca)})
    return pd.DataFrame(rows)


def _p_text(p: float) -> str:
    return "p < 0.001" if p < 0.001 else f"p = {p:.3f}"


def _attack_name(attack: str) -> str:
    return "GAcc" if attack == CLEAN else attack


def comparison_sentence(results: Sequence[experiment.RunResult], a: str = "DPAAT", b: str = "AT",
                        attacks: Sequence[str] = (CLEAN, "20-PGD"), alpha: float = 0.05) -> str:
    """Plain-language comparison of method ``a`` with ``b`` on the same test images, with its caveats:
    one bullet per model and attack, then a paragraph on what the test covers.

    Where both methods have two or more training seeds of a model, the seed-aware test of
    :func:`dpaat_lib.study.significance`: the mean of the per-seed differences ± their standard deviation,
    the paired t-test across seeds (the verdict: does the difference exceed seed-to-seed noise?) and the
    paired bootstrap confidence interval over test images. With one seed, :func:`paired_comparison`'s exact
    McNemar test per seed, which covers the test sample only.
    """
    from .. import study

    t = paired_comparison(results, a, b, attacks)
    if t.empty:
        return f"No run pairs of {a} and {b} to compare."
    n_by_model = t.groupby("model", sort=False)["seed"].nunique()
    multi = [m for m, n in n_by_model.items() if n >= 2]
    parts, notes = [], []
    if multi:
        sig = study.significance([r for r in results if r.config.model in multi], a, b, attacks=attacks,
                                 alpha=alpha)
        sig = sig.assign(p_holm=study.holm(sig["p_ttest"].to_numpy()))
        for _, r in sig.iterrows():
            verdict = (f"beyond seed-to-seed noise ({a} {'higher' if r['mean'] > 0 else 'lower'})"
                       if r["p_holm"] < alpha else "within seed-to-seed noise")
            parts.append(f"{r['model']}, {_attack_name(r['attack'])}: {a} {r['mean']:+.1f} ± {r['seed_std']:.1f} "
                         f"points vs {b} over {r['seeds']} seeds (per seed "
                         f"{', '.join(f'{d:+.1f}' for d in r['per_seed'])}); paired t-test across seeds "
                         f"{_p_text(r['p_ttest'])}, Holm {_p_text(r['p_holm'])}, {verdict} at {alpha:g}; "
                         f"95% paired bootstrap CI over test images {study.ci_text(r['ci_low'], r['ci_high'])}")
        n = int(sig["seeds"].min()) if len(sig) else 0
        notes.append(f"{n} seeds per method: the verdict is the paired t-test across seeds ({n - 1} degrees of "
                     f"freedom) of the per-seed accuracy differences (mean ± standard deviation over seeds), "
                     f"Holm-adjusted for the {len(sig)} comparisons of this list (an adjusted p depends on the "
                     "tests adjusted together, so where another page adjusts over other tests the same comparison "
                     "has another Holm p, never another raw p): does "
                     "the difference exceed the variation between training runs? The bootstrap interval "
                     "resamples the test images within each seed and covers the test sample only. With few seeds "
                     "the t-test detects only large, consistent differences: *within noise* means not shown, "
                     "not shown equal.")
    for _, r in t[~t["model"].isin(multi)].iterrows():
        sign = "higher" if r["diff"] > 0 else ("lower" if r["diff"] < 0 else "equal")
        verdict = "not significant at 5%" if r["p"] >= 0.05 else "significant at 5% for these two runs"
        parts.append(f"{r['model']} (seed {r['seed']}), {r['attack']}: {a} {r['diff']:+.1f} points vs {b} "
                     f"({sign}; test images right only under {a}: {r['a_only']}, only under {b}: {r['b_only']}; "
                     f"McNemar p = {r['p']:.2f}, {verdict})")
    if len(multi) < len(n_by_model):
        notes.append("Single training seed per method: a difference between two training runs also contains "
                     "the run-to-run variation of training, which one seed cannot measure, so no difference "
                     "here is evidence for or against the paper.")
    return "- " + "\n- ".join(parts) + "\n\n" + " ".join(notes)


def comparison_headline(results: Sequence[experiment.RunResult], a: str = "DPAAT",
                        others: Sequence[str] = ("AT", "SAT", "AMAT"), attacks: Sequence[str] = ("20-PGD", CLEAN),
                        alpha: float = 0.05) -> str:
    """The overview's headline (Markdown): is ``a`` more robust (and more accurate) than each of ``others``
    on this profile's runs? It follows the test, whichever way it goes: the paired t-test across seeds
    where every method has two or more seeds (:func:`dpaat_lib.study.significance`), else the exact
    McNemar test on the test images (one seed, which cannot separate a method from its training run).

    The headline makes several comparisons at once, so each verdict is Holm-adjusted for their number
    (:func:`dpaat_lib.study.holm`); the unadjusted p-values are shown beside the adjusted ones."""
    from .. import study

    present = {r.config.method.label for r in results}
    others = [o for o in others if o in present]
    if a not in present or not others:
        return f"No runs of {a} and {', '.join(others) or 'the other methods'} to compare."
    seeds = {}
    for r in results:
        seeds.setdefault((r.config.model, r.config.method.label), set()).add(r.config.train.seed)
    n_min = min(len(v) for (_, m), v in seeds.items() if m in (a, *others))
    multi = n_min >= 2
    what = {"20-PGD": "robust accuracy under 20-step PGD", CLEAN: "clean accuracy"}
    tests = []  # (model, attack, other, difference in points, unadjusted p)
    for model in dict.fromkeys(r.config.model for r in results):
        res = [r for r in results if r.config.model == model]
        for att in attacks:
            for o in others:
                if multi:
                    row = study.significance(res, a, o, attacks=(att,), alpha=alpha)
                    if not row.empty:
                        tests.append((model, att, o, row.iloc[0]["mean"], row.iloc[0]["p_ttest"]))
                else:
                    row = paired_comparison(res, a, o, attacks=(att,))
                    if not row.empty:
                        tests.append((model, att, o, row.iloc[0]["diff"], row.iloc[0]["p"]))
    adjusted = study.holm([t[4] for t in tests]) if tests else []
    out = []
    for model in dict.fromkeys(t[0] for t in tests):
        for att in attacks:
            up, down, flat = [], [], []
            for (m, t_att, o, d, p), p_adj in zip(tests, adjusted):
                if (m, t_att) != (model, att):
                    continue
                item = f"{o} ({d:+.1f} points, {_p_text(p)}, Holm {_p_text(p_adj)})"
                (up if p_adj < alpha and d > 0 else down if p_adj < alpha and d < 0 else flat).append(item)
            if not (up or down or flat):
                continue
            seg = []
            beyond = "beyond seed-to-seed noise" if multi else "significant on these test images"
            if up:
                seg.append(f"higher than {', '.join(up)}, {beyond}")
            if down:
                seg.append(f"lower than {', '.join(down)}, {beyond}")
            if flat:
                seg.append(("within seed-to-seed noise of " if multi else "not significantly different from ")
                           + ", ".join(flat))
            text = f"{a}'s {what.get(att, att + ' accuracy')} is " + "; ".join(seg)
            out.append((model, att, text, up, down, flat))
    test = (f"paired t-test across {n_min} training seeds" if multi else
            "exact McNemar test on the test images, one training seed per method")
    test += f", Holm-adjusted for the {len(tests)} comparisons, at {alpha:g}"
    lines = [f"{'(' + m + ') ' if len({o[0] for o in out}) > 1 else ''}{t}." for m, _, t, *_ in out]
    rob = [o for o in out if o[1] == "20-PGD"]
    if rob and all(len(o[3]) == len(others) for o in rob):
        claim = (f"The paper's headline, that {a} is more robust than {', '.join(others)}, holds "
                 + ("on these runs beyond seed-to-seed noise." if multi else
                    "for these single runs on these test images; with one training run per method it may still "
                    "be that run's luck."))
    elif rob and any(o[3] for o in rob):
        claim = (f"The paper's headline, that {a} is more robust than {', '.join(others)}, holds here only against "
                 + ", ".join(dict.fromkeys(x.split(' (')[0] for o in rob for x in o[3]))
                 + ("." if multi else " on these test images, for one training run per method."))
    elif rob:
        claim = (f"The paper's headline, that {a} is more robust than {', '.join(others)}, is not supported by "
                 "these runs" + (": no difference in its favour exceeds seed-to-seed noise." if multi else
                                 ", and one training run per method could not have shown it beyond the variation "
                                 "between training runs anyway."))
    else:
        claim = ""
    raw = sum(t[4] < alpha for t in tests)
    kept = int((np.asarray(adjusted) < alpha).sum()) if tests else 0
    if raw > kept:
        # Say what the correction removed, so a reader who reads the unadjusted p-values is not misled.
        claim += (f" Unadjusted, {raw} of the {len(tests)} comparisons would pass p < {alpha:g}; with {len(tests)} "
                  f"tests about {alpha * len(tests):.1f} pass by chance alone, and after Holm's correction {kept} "
                  f"remain{'s' if kept == 1 else ''}: the directions of the others are descriptive only.")
    return f"**Headline ({test}).** " + " ".join(lines) + (" " + claim.strip() if claim.strip() else "")


def rank_sentence(results: Sequence[experiment.RunResult], metric: str, scale: float = 100.0, digits: int = 1) -> str:
    """The methods of each model ordered by ``metric``, best first (seed means)."""
    s = summary(results, [metric])["mean"][metric]
    parts = []
    for model in dict.fromkeys(s.index.get_level_values("model")):
        sub = s.xs(model, level="model").sort_values(ascending=False)
        order = ", ".join(f"{m} {scale * v:.{digits}f}" for m, v in sub.items())
        parts.append(f"{model}: {order}")
    return "; ".join(parts)
