"""Sentences and small tables for the "what it shows" sections: the ablation's claims, the deviations from
the paper."""
from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd

from .. import experiment, pretrained, profiles
from ..profiles import linf_text, radius_text
from .common import (PAPER_EPS0, PAPER_IMAGE_SIZE, PAPER_LINF_EPS, PAPER_SIZE_BASIS,
                     fmt, results_frame, summary)
from .pages import l2_strength_text, stored_book_runs
from .split import stored_split_matches
from .dynamics import _cut_by_cap, _full_schedule_pointer


def method_difference(results: Sequence[experiment.RunResult], a: str = "DPAAT", b: str = "AT",
                      metrics: Sequence[str] = ("GAcc", "20-PGD"), scale: float = 100.0,
                      digits: int = 1) -> pd.DataFrame:
    """Seed means of methods ``a`` and ``b`` and their difference, per model and metric (formatted); with
    two or more common seeds also the paired t-test across seeds of the per-seed differences and its
    Holm adjustment over the table's rows (columns ``t-test p``, ``Holm p``)."""
    from .. import study

    runs = results_frame(results)
    rows, ps = [], []
    for model in dict.fromkeys(runs["model"]):
        ra = runs[(runs["model"] == model) & (runs["method"] == a)].set_index("seed")
        rb = runs[(runs["model"] == model) & (runs["method"] == b)].set_index("seed")
        seeds = sorted(set(ra.index) & set(rb.index))
        if not seeds:
            continue
        for c in metrics:
            if c not in runs.columns:
                continue
            d = [scale * (float(ra.loc[k, c]) - float(rb.loc[k, c])) for k in seeds]
            p = study.paired_difference_test(d)
            ps.append(p)
            rows.append({"model": model, "metric": c,
                         a: fmt(float(ra.loc[seeds, c].mean()), scale=scale, digits=digits),
                         b: fmt(float(rb.loc[seeds, c].mean()), scale=scale, digits=digits),
                         f"{a} - {b}": f"{float(np.mean(d)):+.{digits}f}", "seeds": len(seeds),
                         "per seed": ", ".join(f"{x:+.{digits}f}" for x in d)})
    out = pd.DataFrame(rows)
    if len(out) and out["seeds"].max() >= 2:
        out["t-test p"] = [f"{p:.3f}" if np.isfinite(p) else "n/a" for p in ps]
        out["Holm p"] = [f"{p:.3f}" if np.isfinite(p) else "n/a" for p in study.holm(ps)]
    return out


def difference_findings(diff: pd.DataFrame, a: str = "DPAAT", b: str = "AT", alpha: float = 0.05) -> str:
    """The reading of :func:`method_difference` (Markdown): ``a`` - ``b`` per model and metric, with the tests
    where there are several seeds, or why there is none (one seed; no pair of runs of the two methods)."""
    if not len(diff):
        return f"**{a} minus {b} here:** no run pairs of {a} and {b} to compare."
    tested = "Holm p" in diff
    text = f"**{a} minus {b} here (seed means):** " + "; ".join(
        f"{r['model']} {r['metric']} {r[f'{a} - {b}']}" + (f" (p = {r['t-test p']}, Holm {r['Holm p']})" if tested
                                                          else "") for _, r in diff.iterrows())
    if not tested:
        return text + " (one seed: a difference between two training runs, not tested against the seed-to-seed noise)."
    below = sum(float(p) < alpha for p in diff["Holm p"] if p != "n/a")
    return (text + f". Over {int(diff['seeds'].max())} seeds, each a paired t-test across seeds of the per-seed "
            f"differences, Holm-adjusted for the {len(diff)} tests; {below} of {len(diff)} remain below {alpha:g} "
            "after the adjustment.")


def ablation_claims(results: Sequence[experiment.RunResult], similar: float = 2.0) -> pd.DataFrame:
    """Every statement the paper makes about its Fig. 3, checked on our ablation runs (seed means, per
    model): D-A's GAcc above AT's; D-A's 20-PGD similar to AT's (within ``similar`` points); D-B's GAcc
    the highest of the four; D-B's 20-PGD below D-A's; D-(A+B) = DPAAT's 20-PGD the highest; DPAAT's
    GAcc above AT's; and the paper's conclusion, that the dynamic adaptation matters more for robustness
    than the synchronisation term: DPAAT loses more 20-PGD accuracy without the adaptation (D-B) than
    without the synchronisation term (D-A)."""
    s = summary(results, ("GAcc", "20-PGD"))["mean"]
    rows = []
    for model in dict.fromkeys(s.index.get_level_values("model")):
        sub = s.xs(model, level="model")
        need = {"AT", "D-A", "D-B", "DPAAT"}
        if not need <= set(sub.index):
            continue
        g, r = 100 * sub["GAcc"], 100 * sub["20-PGD"]
        no_adapt, no_sync = r["DPAAT"] - r["D-B"], r["DPAAT"] - r["D-A"]
        checks = [
            ("D-A: higher GAcc than AT", g["D-A"] > g["AT"], f"D-A {g['D-A']:.1f} vs AT {g['AT']:.1f}"),
            (f"D-A: 20-PGD RAcc similar to AT (within {similar:g} points)", abs(r["D-A"] - r["AT"]) <= similar,
             f"D-A {r['D-A']:.1f} vs AT {r['AT']:.1f}"),
            ("D-B: highest GAcc of the four", g.idxmax() == "D-B" and (g == g.max()).sum() == 1,
             ", ".join(f"{k} {v:.1f}" for k, v in g.sort_values(ascending=False).items())),
            ("D-B: lower 20-PGD RAcc than D-A", r["D-B"] < r["D-A"], f"D-B {r['D-B']:.1f} vs D-A {r['D-A']:.1f}"),
            ("D-(A+B) = DPAAT: highest 20-PGD RAcc", r.idxmax() == "DPAAT" and (r == r.max()).sum() == 1,
             ", ".join(f"{k} {v:.1f}" for k, v in r.sort_values(ascending=False).items())),
            ("D-(A+B) = DPAAT: higher GAcc than AT", g["DPAAT"] > g["AT"],
             f"DPAAT {g['DPAAT']:.1f} vs AT {g['AT']:.1f}"),
            ("conclusion: the adaptation matters more for robustness than the synchronisation term",
             no_adapt > no_sync, f"20-PGD lost without the adaptation (DPAAT - D-B) {no_adapt:+.1f}, without the "
             f"synchronisation term (DPAAT - D-A) {no_sync:+.1f}"),
        ]
        rows += [{"model": model, "paper's statement": c, "holds here": "yes" if ok else "no", "ours (%)": txt}
                 for c, ok, txt in checks]
    return pd.DataFrame(rows)


def resolution_note(config) -> str:
    """How a run's images reached its input size (text, no final stop): centre-cropped to the short side of the
    HAM10000 copy they were decoded from, then resized; resized up, they hold no detail finer than that side."""
    from ..data import BOOK_COPY_SIZE

    source = config.data.source_size or BOOK_COPY_SIZE
    short, size = min(int(v) for v in source.split("x")), config.data.image_size
    up = f" (up: they hold no detail finer than {short} px)" if size > short else ""
    return (f"the images come from a {source} px copy of HAM10000, centre-cropped to {short} px and resized to "
            f"{size} px{up}")


def scope_note(results: Sequence[experiment.RunResult], results_root=None) -> str:
    """Chapter 1's first finding (Markdown): how far this page's runs are from the paper's setting (its six CNNs,
    fine-tuned from ImageNet weights, at the 224 px we assume), and how many runs of the paper profile's grid,
    which has that setting, are stored (chapter 10). Empty once the page's runs have that setting."""
    from ..models import PAPER_MODELS

    if not results:
        return ""
    models = list(dict.fromkeys(r.config.model for r in results))
    sizes = sorted({r.config.data.image_size for r in results})
    tuned = {r.config.train.weights is not None for r in results}
    if set(models) >= set(PAPER_MODELS) and sizes == [PAPER_IMAGE_SIZE] and tuned == {True}:
        return ""
    setting = (f"{', '.join(models)} at {', '.join(map(str, sizes))} px, "
               + ("fine-tuned from pretrained weights" if tuned == {True} else
                  "trained from scratch" if tuned == {False} else "some fine-tuned, some from scratch"))
    _, cfgs, stored = stored_book_runs("paper", results_root)
    return (f"**Scope.** The runs on this page are {setting}; the paper fine-tunes six ImageNet CNNs "
            f"({', '.join(PAPER_MODELS)}), we assume at {PAPER_IMAGE_SIZE} px. No verdict below is a replication "
            "of the paper's numbers: each says what holds in this setting. The paper profile's grid, which has the "
            f"paper's six CNNs at {PAPER_IMAGE_SIZE} px, needs a GPU: {len(stored)} of its {len(cfgs)} runs are stored "
            "(chapter 10).")


def deviations(prof: profiles.Profile, results: Sequence[experiment.RunResult] = ()) -> str:
    """Markdown list of where this profile's runs differ from the paper (computed from the profile)."""
    from ..models import PAPER_MODELS

    c = results[0].config if results else None
    starts = sorted({r.config.train.weights for r in results} - {None})
    head_epochs = results[0].config.train.head_epochs if results else 0
    lines = [
        "- **Threat model**: the paper gives 0.5 for a symbol and a norm lost in extraction, 7 steps of 0.15, and "
        "no evaluation radii. We read 0.5 as the radius and the norm from the step size and its identical 20/50-step "
        f"PGD numbers: training adversary PGD-L2 with eps0 = {radius_text(prof.eps0)}, "
        f"{prof.train_steps} steps of {radius_text(prof.train_step_size)}; FGSM and I-FGSM evaluated in Linf at "
        f"eps = {linf_text(prof.linf_eps)}, 20/50-step PGD in L2 at eps0 (chapter 3)."
        + (f" At {prof.image_size} px the same L2 radius is {PAPER_IMAGE_SIZE / prof.image_size:.1f} times stronger "
           f"per pixel than at {PAPER_IMAGE_SIZE} px (assumed for the paper), and the Linf one weaker in L2 terms: "
           "levels compare with the paper's only in direction (chapter 3); chapter 12 (e) trains the five methods "
           "again with the L2 radius scaled to the paper's change per pixel."
           if prof.image_size != PAPER_IMAGE_SIZE else "")
        + (f" This page's eps0 = {radius_text(prof.eps0)} is a parameter, not the paper's {PAPER_EPS0:g}: its L2 "
           f"threat is {l2_strength_text(prof.eps0, prof.image_size)}, and its robust columns are not the paper's."
           if prof.eps0 != PAPER_EPS0 else "")
        + (f" This page's Linf radius {linf_text(prof.linf_eps)} is a parameter, not the paper's "
           f"{linf_text(PAPER_LINF_EPS)}: its FGSM and I-FGSM columns are not the paper's."
           if prof.linf_eps != PAPER_LINF_EPS else ""),
        "- **Initialisation**: " + ("two-phase, as the paper: " + "; ".join(pretrained.describe(w, head_epochs)
                                                                             for w in starts) + "."
                                    if starts else "training from scratch; the paper fine-tunes ImageNet "
                                    "weights, which cannot be downloaded on the machines that built this book "
                                    "(`-p weights imagenet` fine-tunes them where they can)."),
        "- **Unstated hyper-parameters**: DPAAT's step length eta "
        f"({'eps0 per nat' if prof.eta is None else prof.eta}), radius bounds [0, 2 eps0], "
        f"lambda = {prof.lam}, mu = the {prof.mu} mean; AMAT's threshold from a trained STD model; "
        "flip augmentation; early stopping on a validation set carved from the "
        + (f"{prof.n_train} training images per class" if prof.n_train else "training images")
        + ", the checkpoint kept by the "
        + ("highest clean validation accuracy" if c is not None and c.train.select_on == "val_acc"
           else "lowest clean validation cross-entropy") + " (the paper names no metric).",
        f"- **Split**: {'lesion-aware' if prof.lesion_aware else 'image-level'} (no lesion on two sides); "
        "the paper's split is not described and HAM10000 has several images of one lesion (chapter 2).",
        "- **Data**: " + ("the SYNTHETIC stand-in, not HAM10000" if prof.synthetic else
                          f"HAM10000 at {c.data.source_size} px" if c is not None and c.data.source_size else
                          "all of HAM10000's images and metadata in a 200x150 px copy (a third party's "
                          "downscale; the published images are 600x450)") + "; "
        f"{prof.n_train}/{prof.n_test} train/test images per class (paper: 800/299)"
        + (f"; {prof.n_val} of the {prof.n_train} are held out as the validation set of early stopping and "
           "checkpoint choice (the paper validates on a set it does not describe)" if prof.n_val else "") + ".",
        f"- **Resolution**: {prof.image_size} px (paper: not stated; we assume {PAPER_IMAGE_SIZE} px, "
        f"{PAPER_SIZE_BASIS}, wherever a page compares with the paper's resolution)"
        + ("" if prof.synthetic or c is None else f"; {resolution_note(c)}") + ".",
        f"- **Models**: {', '.join(prof.models)}"
        + ("" if set(prof.models) == set(PAPER_MODELS) else f" (paper: {', '.join(PAPER_MODELS)})")
        + f"; up to {prof.epochs} epochs, patience {prof.patience}, batch size {prof.batch_size} "
          "(paper: 50 epochs after 10 head epochs; ablation batch 64, 100 epochs)"
        + (": " + _capped_text(results) if results else "") + ".",
        f"- **Seeds**: {', '.join(map(str, prof.seeds))}; the paper names no seeds, repeats or intervals "
        "(apparently single runs).",
    ]
    if prof.bf16 or prof.channels_last:
        lines.append("- **Numerics**: training forward and backward passes under bf16 autocast"
                     + (" in channels_last memory format" if prof.channels_last else "")
                     + " on the GPU (tested against the fp32 path on CPU); attacks at evaluation in fp32.")
    return "\n".join(lines)


def _capped_text(results: Sequence[experiment.RunResult]) -> str:
    """How many runs the epoch cap ended with their last epoch kept (see :func:`stopping_findings`)."""
    capped = [r for r in results if _cut_by_cap(r)]
    return (f"{len(capped)} of these {len(results)} runs reached the cap with their last epoch kept, cut short "
            "while their validation loss still fell (chapter 4"
            + (f"; {_full_schedule_pointer(results)})" if capped and _full_schedule_pointer(results) else ")"))


def leakage_text(summary_: dict | None, result: experiment.RunResult) -> str:
    """Chapter 2's leakage paragraph (or why it is missing)."""
    if summary_ is None:
        return ("The split summary is not stored with the results and the data are not available: pass "
                "`data_root` to compute it.")
    aware, image = summary_["lesion_aware"], summary_["image_level"]
    share = 100 * image["test_images_with_lesion_in_training"] / max(image["n_test"], 1)
    return (f"With the same per-class counts and seed, a plain image-level split would put "
            f"**{image['test_images_with_lesion_in_training']} of {image['n_test']} test images** ({share:.1f}%) "
            f"beside another image of the same lesion in training or validation ({image['shared_lesions']} "
            f"lesions on both sides). The lesion-aware split used here has "
            f"{aware['test_images_with_lesion_in_training']} such images. The split stored with run "
            f"`{result.run_id}` {'is' if stored_split_matches(result, summary_) else 'is NOT'} the one "
            "these counts describe. Available per class: "
            + ", ".join(f"{c} {summary_['available'][c]['images']} images of {summary_['available'][c]['lesions']} "
                        "lesions" for c in summary_["data"]["classes"])
            + ".")
