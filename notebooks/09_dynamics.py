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
# # 9. Training dynamics: how the radii move
#
# **Goal.** Look inside training, which the paper does not show: the distribution of the
# per-sample radii eps_i of DPAAT (and of AMAT and the D-A ablation) at every epoch, the
# training loss and the validation accuracy of every method, and what each method costs. If
# DPAAT's adaptation works as described, the radii should spread out from eps0: fragile
# samples lower, stable ones higher.

# %% tags=["parameters"]
profile = "quick"  # quick | cpu-real | paper (dpaat_lib.profiles)
data_root = None  # HAM10000 folder (official layout); None: synthetic (quick) or the stored results
results_root = "results"  # relative paths are relative to the repository root
models = None  # None: the profile's models
methods = None  # None: this chapter's methods (all five, plus the ablations on the ablation models)
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
prof, main = report.load_grid(profile, data_root=data_root, results_root=results_root, models=models,
                              methods=methods or profiles.MAIN_METHODS, seeds=seeds, device=device, weights=weights,
                              image_size=image_size, epochs=epochs, eps0=eps0, linf_eps=linf_eps)
_, ablation = report.load_grid(profile, data_root=data_root, results_root=results_root,
                               models=models or prof.ablation_models, methods=("d-a", "d-b"), seeds=seeds,
                               device=device, weights=weights, image_size=image_size, epochs=epochs, eps0=eps0,
                               linf_eps=linf_eps)
results = main + ablation
report.profile_banner(prof, results)

# %% [markdown]
# ## Per-sample radii per epoch
#
# Colour: share of the training images whose radius falls in each bin, after each epoch;
# white line: the mean radius; red dashed line: eps0. (D-B keeps every radius at eps0 and is
# left out.) One run per method: the first seed's. The table below gives every seed, and in
# "mean (kept)" the mean radius at the epoch whose checkpoint was kept, i.e. the adversary the
# evaluated model was trained against last.

# %%
report.plot_radius_heatmaps(results)

# %%
radii = report.radius_stats(results)
radii

# %% [markdown]
# ## Training curves
#
# Each method's training loss is its own objective (for DPAAT it includes the adversarial and
# synchronisation terms), so the left panels compare shapes, not levels. The star marks the
# epoch whose checkpoint was kept: the lowest clean validation cross-entropy (right panels), so
# it need not be the peak of the accuracy curve. Early stopping waits the profile's patience
# (banner) for the cross-entropy to fall again.

# %%
report.plot_training_curves(main)

# %%
report.md(report.stopping_findings(main))

# %%
report.md(report.nonfinite_findings(results))

# %% [markdown]
# ## Training cost
#
# Seconds per epoch come from the stored training log of each run: they depend on the machine
# and on its load while each run trained. The ratio to STD removes the machine's speed, not
# changes in its load between runs, and early stopping and AMAT's attack of only correctly
# classified images change the work per epoch.

# %%
report.training_cost(results)

# %% [markdown]
# ## What it shows

# %% tags=["hide-input"]
dp = radii[radii["method"] == "DPAAT"]
bounds = report.radius_bounds_note(main)
report.md(
    "DPAAT's radii: "
    + "; ".join(f"{r['model']} mean {r['mean (epoch 1)']} (std {r['std (epoch 1)']}) after epoch 1 and mean {r['mean (last)']} "
                f"(std {r['std (last)']}, 5-95% range {r['5% (last)']}-{r['95% (last)']}) after epoch {r['epochs']}"
                for _, r in dp.iterrows())
    + f". All start at eps0 = {prof.eps0}. A growing spread is what eq. 15 would show if it separated fragile "
      "from stable samples, but it does not prove it: radii that moved up and down at random would spread too, "
      "as the square root of the epochs, and these summaries do not follow a sample from one epoch to the next; "
      "a mean that drifts shows whether the adversary overall gets weaker or stronger than AT's "
      "fixed eps0"
    + (" (with mu the batch mean, the update of a batch sums to zero, so the mean drifts only through the "
       "clip at [0, 2 eps0])" if prof.mu == "batch" else "")
    + ". AMAT's radii start at eps0/10 and only grow by fixed steps or halve towards the attack "
      "distance: its distribution is driven by the STD model's loss threshold, not by a batch comparison."
    + (f"\n\n{bounds}" if bounds else "")
    + ("\n\nThese are SYNTHETIC data." if prof.synthetic else "")
)
