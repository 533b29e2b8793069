"""The threat's strength: (e)'s runs with the L2 radius scaled to the paper's change per pixel,
against the main grid's."""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import pandas as pd

from .. import experiment, profiles, report
from ..evaluation import CLEAN
from ..models import list_models
from .setup import COMPARED, TEST_ATTACKS
from .numbers import _label, below_chance_note, metric_value
from .significance import _model_prefix, significance_table
from .schedule import _by_key, _change_sentences, _group, _pair_sentence, _retrained, _verdict_sentence, verdict_changes


SHARED_ATTACKS = (CLEAN, "FGSM", "20-IFGSM")
"""The columns section (e)'s two grids share: clean, and the Linf attacks, whose radius (linf_eps, 2/255 by
default, a bound on each value) does not depend on eps0. The PGD columns attack each grid at its own eps0."""


def threat_overrides(prof: profiles.Profile, eps0: float | None = None) -> dict:
    """Section (e)'s radius: eps0 and the training step, both scaled by image_size / 224, so that the L2
    radius changes each value of an image at the profile's resolution by the root-mean-square amount
    (eps0 / sqrt(3 s^2)) that the paper's eps0 changes a 224 px image by. It is also the largest L2 norm a
    224 px perturbation of norm eps0 keeps once the image is averaged down to s px. ``eps0`` (not None)
    sets the radius instead, the step keeping its ratio to it. Every radius a method derives from eps0
    follows it (DPAAT's eta = eps0 per nat and eps_max = 2 eps0, AMAT's start and step eps0 / 10), and so
    do the 20/50-step PGD of the evaluation; FGSM and I-FGSM keep their Linf radius. Empty where the
    profile already runs at the paper's resolution and no ``eps0`` is given."""
    if eps0 is None:
        if prof.image_size == report.PAPER_IMAGE_SIZE:
            return {}
        return {"eps0": prof.eps0 * prof.image_size / report.PAPER_IMAGE_SIZE,
                "train_step_size": prof.train_step_size * prof.image_size / report.PAPER_IMAGE_SIZE}
    return profiles.radius_overrides(prof, eps0, name="threat_eps0")


THREAT_MODELS = {"cpu-real": ("mobilenet_v2", "resnet34")}
"""The CNNs outside the main grid on which section (e) trains AT and DPAAT at its radius too, on
:data:`STUDY_SEEDS`, per study profile: on cpu-real the two sweep CNNs, whose part (a) comparison is DPAAT
against AT (a run on one CPU core: MobileNetV2 about 10 minutes, ResNet34 about 30, evaluation included)."""


def threat_models(study_profile: str, main_models: Sequence[str], given: Sequence[str] | None = None
                  ) -> tuple[str, ...]:
    """Section (e)'s CNNs outside the main grid: ``given`` (the notebook's parameter) or
    :data:`THREAT_MODELS`, less those of ``main_models``. An unknown name is refused with the known ones."""
    chosen = tuple(THREAT_MODELS.get(study_profile, ()) if given is None
                   else profiles.list_parameter(given))  # papermill: one name, or "[a, b]" as text
    unknown = [m for m in chosen if m not in list_models()]
    if unknown:
        raise ValueError(f"threat_models: unknown CNN(s) {', '.join(map(repr, unknown))}; "
                         f"choose from {', '.join(list_models())}")
    return tuple(m for m in dict.fromkeys(chosen) if m not in main_models)


def threat_names(base: profiles.Profile, matched: profiles.Profile) -> tuple[str, str]:
    """How section (e)'s tables name the two grids: by their eps0."""
    return radius_name(base.eps0), radius_name(matched.eps0)


def radius_name(eps0: float) -> str:
    """How section (e)'s tables and sentences name a grid: by its eps0."""
    return f"eps0 {eps0:.3g}"


def threat_note(base: profiles.Profile, matched: profiles.Profile) -> str:
    """Markdown: the radii of part (a) and of section (e), each as a change per pixel against the paper's."""
    if matched.eps0 == base.eps0:
        return (f"**Radius.** Part (a) already trains and attacks at eps0 = {base.eps0:g}, the paper's "
                f"at {base.image_size} px: this section repeats it.")
    s, paper = base.image_size, report.PAPER_IMAGE_SIZE
    ref = report.l2_rms_per_value(base.eps0, paper)

    def radius(p):
        rms = report.l2_rms_per_value(p.eps0, s)
        return (f"PGD-L2 eps0 = {p.eps0:.4g}, {p.train_steps} steps of {p.train_step_size:.4g}, a root-mean-square "
                f"change of {rms:.2f}/255 per value at {s} px ({rms / ref:.1f} times the paper's {ref:.2f}/255 "
                f"at {paper} px)")

    return (f"**Radii.** Part (a): {radius(base)}. Here: {radius(matched)}. The training adversary, AMAT's and "
            "DPAAT's radii (which start from and scale with eps0) and the 20-step PGD column follow eps0; FGSM "
            f"and I-FGSM keep their Linf {profiles.linf_text(base.linf_eps)}, so their columns, and the clean one, "
            "compare the two grids on the same test, while each grid's PGD column attacks at its own radius.")


def threat_findings(base: Sequence[experiment.RunResult], matched: Sequence[experiment.RunResult],
                    change: pd.DataFrame, sig_base: pd.DataFrame, sig_matched: pd.DataFrame,
                    names: tuple[str, str], alpha: float = 0.05, a: str = "DPAAT") -> str:
    """The reading of section (e) (Markdown): which runs trained alike in both grids, what the smaller
    radius changed on the attacks both grids share (beyond seed noise after Holm), each method's PGD
    accuracy at its grid's own radius, and whether each comparison of ``a`` with the others keeps its
    verdict (Holm-adjusted in both tables; with one seed, its sign)."""
    if not matched:
        return "No runs at the paper's per-pixel radius."
    if {r.run_id for r in matched} == {r.run_id for r in base}:
        return "This grid already runs at the paper's per-pixel radius (the same runs): part (a) answers it."
    parts = []
    short = _by_key(base)
    twins = [r for r in matched if (k := (r.config.model, _label(r), r.config.train.seed)) in short
             and r.predictions[f"pred_{CLEAN}"].equals(short[k].predictions[f"pred_{CLEAN}"])]
    # STD trains without an attack, so the radius cannot enter its training: its runs are the check.
    unlike = [r for r in matched if r.config.method.name == "std" and r not in twins
              and (r.config.model, _label(r), r.config.train.seed) in short]

    def named(rs):
        return ", ".join(f"{_label(r)} seed {r.config.train.seed}" for r in rs)

    if twins or unlike:
        parts.append(f"**Runs trained alike.** {len(twins)} of {len(matched)} runs"
                     + (f" ({named(twins)})" if twins else "")
                     + f" {'gives' if len(twins) == 1 else 'give'} the same clean predictions in both grids, image "
                     "for image; STD trains without an attack, so the radius cannot enter its training"
                     + (f". {named(unlike)} still {'differs' if len(unlike) == 1 else 'differ'}: something other "
                        "than the radius changed between the two trainings (on a CPU, torch's thread count changes a "
                        "run's numbers as another seed would, chapter 10)." if unlike else "."))
    parts += _change_sentences(change, "What the smaller radius changed on the attacks both grids share", alpha)
    if "pred_20-PGD" in matched[0].predictions:
        def means(rs):
            return {key: 100 * np.mean([metric_value(r, "acc", "20-PGD") for r in runs])
                    for key, runs in _group(rs).items()}

        mb, mm = means(base), means(matched)
        where = _model_prefix((m for m, _ in mm), sep=" ")
        parts.append(f"**20-step PGD at each grid's own radius** (seed means, %; {names[0]} -> {names[1]}): "
                     + ", ".join(f"{where(m)}{lab} {mb[(m, lab)]:.1f} -> {mm[(m, lab)]:.1f}"
                                 for m, lab in mm if (m, lab) in mb)
                     + ". The smaller radius is a weaker attack as well as a weaker training adversary, so these "
                       "levels are not a change of one model's robustness.")
        paper_std = report.paper_value("I", "all_six", "STD", "20-PGD")
        std = [(mb[k], mm[k]) for k in mm if k[1] == "STD" and k in mb]
        if len(std) == 1 and not math.isnan(paper_std):
            (std_b, std_m), = std
            closer = names[0] if abs(std_b - paper_std) <= abs(std_m - paper_std) else names[1]
            parts.append(f"**Which radius is the paper's threat?** Against the undefended STD model, 20-step PGD "
                         f"leaves {std_b:.1f}% at {names[0]} and {std_m:.1f}% at {names[1]}; the paper's "
                         f"STD keeps {paper_std:.2f}% (the mean of its six CNNs). By that yardstick "
                         f"{closer} is the closer match: the same change per pixel is not the same attack strength, "
                         "which also depends on the model and its input size, so neither grid reproduces the paper's "
                         "threat in both senses.")
    verdicts = verdict_changes(sig_base, sig_matched, alpha, names=names)
    if len(verdicts):
        parts.append(_verdict_sentence(verdicts, sig_matched, names, (f"at {names[0]}", f"at {names[1]}"), alpha, a))
    return " ".join(parts)


def threat_headline(base: Sequence[experiment.RunResult], matched: Sequence[experiment.RunResult],
                    alpha: float = 0.05, a: str = "DPAAT", b: str = "AT",
                    attacks: Sequence[str] = TEST_ATTACKS, other_base: Sequence[experiment.RunResult] = (),
                    other_matched: Sequence[experiment.RunResult] = ()) -> str:
    """Chapter 1's account of section (e) (Markdown; empty unless ``matched`` holds every (model, method,
    seed) of ``base`` at another radius): ``a`` - ``b`` at both radii and how many comparisons of ``a`` keep
    their verdict, from the same tests as chapter 12 (the bootstrap intervals, not shown here, skipped).
    ``other_base`` and ``other_matched``: ``a`` and ``b`` on the CNNs outside the main grid at both radii,
    read the same way where every run is there, with :func:`below_chance_note` at each radius."""
    if not _retrained(base, matched):
        return ""
    e0, e1 = base[0].config.method.attack.eps, matched[0].config.method.attack.eps
    names = (radius_name(e0), radius_name(e1))
    words = (f"at eps0 {e0:g}", f"at eps0 {e1:.3g}")  # the grids' training radius, not the attack's

    def verdicts(rb, rm, against):
        return verdict_changes(significance_table(rb, a, against, attacks=attacks, n_boot=1),
                               significance_table(rm, a, against, attacks=attacks, n_boot=1), alpha, names=names)

    s = base[0].config.data.image_size
    std = [100 * np.mean([metric_value(r, "acc", "20-PGD") for r in rs if _label(r) == "STD"] or [np.nan])
           for rs in (base, matched)]
    paper_std = report.paper_value("I", "all_six", "STD", "20-PGD")
    others = ""
    if _retrained(other_base, other_matched):
        cnns = list(dict.fromkeys(r.config.model for r in other_matched))
        # A 20-PGD difference between two failures is no comparison: say so at each radius where it is one.
        low = " ".join(note for note in map(below_chance_note, (other_base, other_matched)) if note)
        others = (f" On {report.and_list(cnns)} ({a} and {b} only), " + _pair_sentence(
            verdicts(other_base, other_matched, (b,)), names, words, a, b, against=(b,))
            + (f" {low}" if low else ""))
    return (f"**The threat's strength.** Chapter 12 (e) trains these {len(matched)} runs again with the L2 radius "
            f"that changes a {s} px image per pixel as much as the paper's eps0 changes a "
            f"{report.PAPER_IMAGE_SIZE} px one (eps0 = {e1:.3g} instead of {e0:g}; the 20-step PGD column attacks "
            "at that radius too). " + _pair_sentence(verdicts(base, matched, COMPARED), names, words, a, b)
            + others
            + (f" Against the undefended STD, 20-PGD leaves {std[0]:.1f}% at {e0:g} and {std[1]:.1f}% at {e1:.3g}; "
               f"the paper's STD keeps {paper_std:.2f}%."
               if not (math.isnan(std[0]) or math.isnan(std[1]) or math.isnan(paper_std)) else ""))
