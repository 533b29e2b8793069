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
# # 4. Robustness: the paper's Table I
#
# **Goal.** Reproduce Table I of the paper: robust accuracy (RAcc, %) under FGSM, 10- and
# 20-step I-FGSM (Linf, eps = 2/255 unless `-p linf_eps` gives another; the banner then says so)
# and 20- and 50-step PGD (L2, eps0), and clean accuracy
# (GAcc, %), for STD, AT, SAT, AMAT and DPAAT; the paper averages over its CNN groups. Then
# look beyond one radius: robust accuracy against eps, for each norm.

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
from dpaat_lib import profiles

# %%
prof, results = report.load_grid(profile, data_root=data_root, results_root=results_root, models=models,
                                 methods=methods or profiles.MAIN_METHODS, seeds=seeds, device=device, weights=weights,
                                 image_size=image_size, epochs=epochs, eps0=eps0, linf_eps=linf_eps)
out = report.results_dir(prof, results_root)
report.profile_banner(prof, results)

# %% [markdown]
# ## Our Table I, per model
#
# Percent; mean ± std (sample standard deviation) over training seeds when there are several.
# The banner gives the number of test images per class.

# %%
report.ours_table(results, "I")

# %%
report.md(report.stopping_findings(results))

# %% [markdown]
# ## Beside the paper's group averages

# %%
report.side_by_side(results, "I")

# %%
report.md(report.group_note(prof.models) + "\n\n" + report.threat_scale_note(results[0].config) + "\n\n"
          + report.paper_consistency_note("I"))

# %% [markdown]
# Where our runs hold every CNN of one of the paper's groups (the paper profile's grid), each gap to the
# paper's average, against the noise that two independent test sets (and training seeds, where there are
# several) put between two replications of the same experiment: `ours - paper = gap ± noise` in points.

# %%
gaps = report.paper_gaps(results)
report.paper_gap_table(gaps) if len(gaps) else None

# %%
report.md(report.paper_gap_findings(gaps, prof.models))

# %% [markdown]
# Bars: our mean over seeds, with ± one standard deviation over seeds; black dashes: the paper's
# all-six average as printed.

# %%
report.plot_metric_bars(results, report.TABLE1_COLUMNS, paper=report.paper_table1(), paper_group="all_six")

# %% [markdown]
# ## Robust accuracy against eps
#
# One radius can flatter or hide a method, so each trained model is also attacked over a range
# of radii: 20-step PGD in L2 and 20-step I-FGSM in Linf (steps keep their ratio to eps).
# The curves are computed once from each run's checkpoint and stored beside the run
# (`eps_curve-<norm>-<hash>.json`); with several training seeds, for the first seed's runs only
# (a 20-step attack of every test image at each radius), so they show a trend, not a tested
# difference.

# %%
curves_l2 = report.eps_curves(report.first_seed(results), out, data_root, norm="l2", device=device)
report.plot_eps_curves(curves_l2) if curves_l2 else report.md("No stored L2 curves and no checkpoints.")

# %%
report.eps_curve_frame(curves_l2)

# %%
curves_linf = report.eps_curves(report.first_seed(results), out, data_root, norm="linf", device=device)
report.plot_eps_curves(curves_linf) if curves_linf else report.md("No stored Linf curves and no checkpoints.")

# %%
report.eps_curve_frame(curves_linf)

# %% [markdown]
# ## What it shows

# %% tags=["hide-input"]
report.md(
    f"**Ranking under 20-step PGD (seed means, %):** {report.rank_sentence(results, '20-PGD')}.\n\n"
    f"**Under 20-step I-FGSM (Linf):** {report.rank_sentence(results, '20-IFGSM')}.\n\n"
    f"**Clean:** {report.rank_sentence(results, 'GAcc')}.\n\n"
    + report.paper_table1_findings("all_six") + " Ours, 20- against 50-step PGD (seed means): "
    + report.pgd_steps_sentence(results) + ".\n\n"
    + (f"**Against eps (first seed):** {report.eps_curve_findings(curves_l2, prof.eps0)} "
       f"{report.eps_curve_findings(curves_linf, prof.linf_eps)}\n\n" if curves_l2 and curves_linf else "")
    + "**DPAAT minus AT, same test images:**\n\n"
    + report.comparison_sentence(results, "DPAAT", "AT", attacks=("clean", "20-IFGSM", "20-PGD"))
    + ("\n\nThese are SYNTHETIC data: the table tests the pipeline, not the paper." if prof.synthetic else "")
)
