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
# # 6. Confusion matrices: the paper's Fig. 2
#
# **Goal.** Reproduce Fig. 2: confusion matrices of the five methods on the clean test set and
# under 20-step PGD, for the paper's two representative CNNs (ResNet34 and MobileNetV2) or, in
# a profile without them, for the profile's models. The paper reads them by eye ("the diagonal
# colours of DPAAT were more even"); we also give the per-class recall and its spread, which
# turns "more even" into a number.

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
shown = report.figure_models(prof)  # the paper: ResNet34 and MobileNetV2
report.profile_banner(prof, results)

# %% [markdown]
# ## Confusion matrices
#
# Rows: true class, columns: predicted class; colour: share of the true class (so the diagonal
# is the per-class recall), number: images. Top row clean, bottom row 20-step PGD (L2, eps0).

# %%
report.plot_confusion_grid(results, shown[0])

# %%
report.plot_confusion_grid(results, shown[1]) if len(shown) > 1 else report.md(
    f"This profile's main grid has one model ({shown[0]}); the paper shows a second CNN (MobileNetV2). Where a "
    "profile trains MobileNetV2 outside its main grid (chapter 12), it has AT and DPAAT only, no STD or SAT "
    "or AMAT, so it cannot fill this figure.")

# %% [markdown]
# ## How even is the diagonal?
#
# Per method, each class's recall (the diagonal above), the worst class and the spread between
# the best and the worst class, clean and under 20-step PGD: mean ± std over the training seeds
# (the figures above show the first seed only).

# %%
report.confusion_balance(results, shown[0])

# %%
report.confusion_balance(results, shown[1]) if len(shown) > 1 else None

# %% [markdown]
# ## What it shows

# %% tags=["hide-input"]
report.md(
    " ".join(report.confusion_balance_findings(results, m) for m in shown)
    + " A small spread alone can also mean failing on every class evenly, so both numbers matter. The paper "
    "reports DPAAT's diagonal as the most even, clean and under attack, from one training run per method; with "
    f"{prof.n_test} test images per class, one image moves a class's recall by {100 / prof.n_test:.1f} points."
    + ("\n\nThese are SYNTHETIC data." if prof.synthetic else "")
)
