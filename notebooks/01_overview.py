# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 1. Overview: what DPAAT does, and the headline numbers
#
# **Goal.** Show the idea of Dynamic Perturbation-Adaptive Adversarial Training (Li et al.,
# arXiv 2403.06798) in one figure, and put the paper's headline result (its Table I, all six
# CNNs: clean accuracy GAcc and robust accuracy under 20-step PGD) beside what this book's runs
# measured. Everything on this page is computed by `dpaat_lib`; the chapters that follow
# take each table and figure of the paper in turn.

# %% tags=["parameters"]
profile = "quick"  # quick | cpu-real | paper (dpaat_lib.profiles)
data_root = None  # HAM10000 folder (official layout); None: synthetic (quick) or the stored results
results_root = "results"  # relative paths are relative to the repository root
models = None  # None: the profile's models
methods = None  # None: this chapter's methods (STD, AT, SAT, AMAT, DPAAT)
image_size = None  # None: the profile's
epochs = None  # None: the profile's
seeds = None  # None: the profile's
weights = None  # None: from scratch; "imagenet" (torchvision's, downloaded once) or a folder of <model>.pth: fine-tune
eps0 = None  # None: the profile's L2 radius (training, 20/50-step PGD); the PGD step keeps its ratio to it
linf_eps = None  # None: the profile's FGSM and I-FGSM radius (Linf 2/255); "8/255": another (a stored model
#                 with its checkpoint is evaluated again, not trained again)
device = "cpu"

# %%
from dpaat_lib import report  # first: it keeps tqdm's notebook warning out of the page
from dpaat_lib import profiles, strong_report, study

# %% [markdown]
# ## Compute or load
#
# `report.load_grid` loads every run of the profile from `results/<profile>/`, or trains and
# evaluates the missing ones (the quick profile takes a few minutes on a CPU the first time).

# %%
prof, results = report.load_grid(profile, data_root=data_root, results_root=results_root, models=models,
                                 methods=methods or profiles.MAIN_METHODS, seeds=seeds, device=device, weights=weights,
                                 image_size=image_size, epochs=epochs, eps0=eps0, linf_eps=linf_eps)
report.profile_banner(prof, results)

# %% [markdown]
# ## DPAAT in one figure
#
# Every training image i has its own perturbation radius eps_i. For each batch, DPAAT attacks
# each image within its radius (PGD-L2), measures how much the attack raised its loss,
# dL_i = CE(x'_i) - CE(x_i), and compares it with the batch mean mu. Relatively fragile images
# (dL_i > mu) get a smaller radius next time, relatively stable ones a larger one, by a length
# proportional to how far dL_i lies from mu (eq. 15). The model is trained on the clean and the
# adversarial loss plus a symmetric-KL term that keeps the clean and adversarial predictions
# together (eq. 11-12). The curves below are drawn by the library's own update rule
# (`dpaat_lib.methods.DPAAT.step_length` and its clip), with this profile's eps0.

# %%
report.plot_dpaat_rule(eps0=prof.eps0, eta=prof.eta)

# %% [markdown]
# ## The headline table: paper beside ours
#
# The methods (chapter 3 gives each loss): **STD**, standard training on clean images; **AT**, adversarial
# training on PGD examples only (Madry et al. 2018); **SAT**, the clean and the adversarial loss averaged
# (Goodfellow et al. 2015); **AMAT**, adaptive-margin AT, a radius per image grown or shrunk against a
# loss threshold (Ma & Liang 2022); **DPAAT**, the paper's method above.
#
# GAcc (clean test accuracy) and RAcc under 20-step PGD (L2, eps0), in percent. Ours are per
# model (mean ± std over seeds when there are several); the paper's are its average over all six
# CNNs.

# %%
report.headline(results)

# %%
report.md(report.group_note(prof.models) + "\n\n" + report.threat_scale_note(results[0].config))

# %% [markdown]
# ## What it shows

# %% tags=["hide-input"]
# chapter 11's stronger attacks on every seed and test image, where the profile runs them (stored files)
worst = strong_report.seed_worst_case(results, prof, report.results_dir(prof, results_root), data_root=data_root,
                               device=device)[0]
worst_case = strong_report.worst_case_headline(worst, strong_report.seed_worst_case_significance(worst))
# chapter 12 (d)'s runs of this grid on method.md's schedule, where they are stored (never trained here)
full = report.load_grid(profile, data_root=data_root, results_root=results_root, models=models,
                        methods=methods or profiles.MAIN_METHODS, seeds=seeds, device=device, weights=weights,
                        image_size=image_size, eps0=eps0, linf_eps=linf_eps, stored_only=True,
                        **study.schedule_overrides(profile, weights=weights))[1]
schedule = study.schedule_headline(results, full)
# chapter 12 (e)'s runs of this grid at the paper's radius per pixel, where they are stored (never trained here)
over_threat = study.threat_overrides(prof)
matched = report.load_grid(profile, data_root=data_root, results_root=results_root, models=models,
                           methods=methods or profiles.MAIN_METHODS, seeds=seeds, device=device, weights=weights,
                           image_size=image_size, linf_eps=linf_eps, stored_only=True,
                           **over_threat)[1] if over_threat else []
# and AT and DPAAT on its CNNs outside the main grid at both radii (study.THREAT_MODELS)
outside = study.threat_models(profile, prof.models) if over_threat else ()
other_base, other_matched = [
    report.load_grid(profile, data_root=data_root, results_root=results_root, models=outside,
                     methods=("at", "dpaat"), seeds=seeds, device=device, weights=weights, image_size=image_size,
                     linf_eps=linf_eps, stored_only=True, **o)[1] if outside else []
    for o in ({"eps0": eps0}, over_threat)]
threat = study.threat_headline(results, matched, other_base=other_base, other_matched=other_matched)
# which way DPAAT - AT leans over all of these runs together, seed by seed
directions = study.direction_summary({"the main grid": results, "method.md's schedule (12 d)": full,
                                      "the paper's radius per pixel (12 e)": matched,
                                      "outside the main grid": other_base,
                                      "outside the main grid at the paper's radius per pixel": other_matched})
# our all-six averages against the paper's, where the runs hold the six CNNs (chapter 4)
gap_line = report.paper_gap_headline(report.paper_gaps(results))
scope = report.scope_note(results, results_root)  # how far these runs are from the paper's setting
report.md(
    (f"{scope}\n\n" if scope else "")
    + report.comparison_headline(results, "DPAAT", ("AT", "SAT", "AMAT"), attacks=("20-PGD", "clean")) + "\n\n"
    f"**Ranking on this profile (seed means, %).** Clean accuracy: {report.rank_sentence(results, 'GAcc')}. "
    f"20-step PGD: {report.rank_sentence(results, '20-PGD')}.\n\n"
    f"**The paper's claim.** Over its six CNNs the paper reports DPAAT at "
    f"{report.paper_value('I', 'all_six', 'DPAAT', 'GAcc'):.2f}% clean and "
    f"{report.paper_value('I', 'all_six', 'DPAAT', '20-PGD'):.2f}% under 20-PGD, against AT's "
    f"{report.paper_value('I', 'all_six', 'AT', 'GAcc'):.2f}% and "
    f"{report.paper_value('I', 'all_six', 'AT', '20-PGD'):.2f}%: DPAAT "
    f"{report.paper_value('I', 'all_six', 'DPAAT', 'GAcc') - report.paper_value('I', 'all_six', 'AT', 'GAcc'):+.2f} "
    f"and {report.paper_value('I', 'all_six', 'DPAAT', '20-PGD') - report.paper_value('I', 'all_six', 'AT', '20-PGD'):+.2f} "
    f"points, apparently from single runs (it names no seeds, repeats or intervals).\n\n"
    + (f"{gap_line}\n\n" if gap_line else "")
    + f"**DPAAT minus AT here, on the same test images** (chapter 12 tests DPAAT against AT, SAT and AMAT "
    f"over three seeds):\n\n"
    + report.comparison_sentence(results, "DPAAT", "AT")
    + (f"\n\n{worst_case}" if worst_case else "")
    + "\n\n" + report.stopping_findings(results)
    + (f"\n\n{schedule}" if schedule else "")
    + (f"\n\n{threat}" if threat else "")
    + (f"\n\n{directions}" if directions else "")
    + ("\n\nThese runs use SYNTHETIC data, so they test the code path, not the paper's claim."
       if prof.synthetic else "")
)
