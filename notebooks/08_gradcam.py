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
# # 8. Grad-CAM: the paper's Fig. 4, measured
#
# **Goal.** Reproduce Fig. 4: Grad-CAM maps (pytorch-grad-cam, last convolutional block) of
# STD, AT and DPAAT on correctly predicted test images of each class. The paper judges them
# by eye ("DPAAT covers the lesion regions"); beside the pictures we measure them on a larger
# sample of test images: deletion and insertion curves (how fast the class probability falls
# when the most relevant pixels are blurred away, or rises when only they are kept), the ROAD
# score, and, on the synthetic data whose lesion masks are known, the share of the map's
# energy inside the lesion.

# %% tags=["parameters"]
profile = "quick"  # quick | cpu-real | paper (dpaat_lib.profiles)
data_root = None  # HAM10000 folder (official layout); None: synthetic (quick) or the stored results
results_root = "results"  # relative paths are relative to the repository root
models = None  # None: the profile's models
methods = None  # None: this chapter's methods (STD, AT, DPAAT)
image_size = None  # None: the profile's
epochs = None  # None: the profile's
seeds = None  # None: the profile's
weights = None  # None: from scratch; "imagenet" (torchvision's, downloaded once) or a folder of <model>.pth: fine-tune
eps0 = None  # None: the profile's L2 radius (training, 20/50-step PGD); the PGD step keeps its ratio to it
linf_eps = None  # None: the profile's FGSM and I-FGSM radius (Linf 2/255); "8/255": another (a stored model
#                 with its checkpoint is evaluated again, not trained again)
device = "cpu"
n_show = 2  # images per class in the figure
n_score = 10  # images per class for the scores
mask_results_root = "results/synthetic"  # the synthetic stand-in's runs for the lesion-mask score (committed)

# %%
from dpaat_lib import report  # first: it keeps tqdm's notebook warning out of the page

# %%
# A CNN whose map is 1 x 1 at this size is refused before anything trains
report.check_gradcam_resolution(report.make_profile(profile, models=models, image_size=image_size))
prof, results = report.load_grid(profile, data_root=data_root, results_root=results_root, models=models,
                                 methods=methods or ("std", "at", "dpaat"), seeds=seeds, device=device, weights=weights,
                                 image_size=image_size, epochs=epochs, eps0=eps0, linf_eps=linf_eps)
out = report.results_dir(prof, results_root)
shown = report.figure_models(prof)  # the paper: ResNet34 and MobileNetV2
classes = results[0].config.data.classes
report.profile_banner(prof, results)

# %% [markdown]
# ## Maps of correctly predicted test images
#
# Columns: the image (white outline: the lesion mask, where known), then each method's
# Grad-CAM for the true class, each scaled to [0, 1] on its own. Images are chosen at random
# (seeded) among those all three methods classify correctly, from a fixed, seeded set of
# candidate test images per class whose maps each run stores right after training (so no run
# needs another's checkpoint); the figure draws on fewer candidates than the scores, those
# whose thumbnails are stored.

# %%
ids, note = report.gradcam_selection(results, shown[0], n_per_class=n_show, figure=True)
cams = report.gradcam_results(results, shown[0], ids, out, data_root, device)
report.md(f"{shown[0]}: {len(ids)} {note}.")

# %%
report.plot_gradcam_grid(cams, classes, shown[0])

# %%
ids_2, note_2 = report.gradcam_selection(results, shown[-1], n_per_class=n_show, figure=True)
cams_2 = report.gradcam_results(results, shown[-1], ids_2, out, data_root, device)
(report.plot_gradcam_grid(cams_2, classes, shown[-1]) if len(shown) > 1 else
 report.md(f"This profile's main grid has one model ({shown[0]}); the paper also shows MobileNetV2. Where a "
           "profile trains MobileNetV2 outside its main grid (chapter 12), it has AT and DPAAT only, no STD "
           "model to set them against."))

# %% [markdown]
# ## Scores on more images

# %%
score_tables = {}
for m in shown:
    score_ids, score_note = report.gradcam_selection(results, m, n_per_class=n_score)
    score_tables[m] = report.gradcam_scores(report.gradcam_results(results, m, score_ids, out, data_root, device))
    score_tables[m].attrs["note"] = score_note
report.md("\n\n".join(f"**{m}**: {t['images'].iloc[0]} {t.attrs['note']}." for m, t in score_tables.items()))

# %%
score_tables[shown[0]]

# %%
score_tables[shown[1]] if len(shown) > 1 else None

# %% [markdown]
# ## Where the lesion is known: the synthetic stand-in
#
# HAM10000 comes without lesion masks, so on its images the maps are scored only by what they do to
# the model (deletion, insertion, ROAD). The synthetic stand-in (chapter 2) draws every lesion with
# its mask. On it, STD, AT and DPAAT of the `quick` profile (small CNN, 32 px, one training seed,
# stored in `results/synthetic/quick/`) are scored the same way and by the share of each map's
# energy inside the lesion, beside the share a uniform map would have (the lesion's area).

# %%
mask_table, mask_text = None, "This page runs on the synthetic data: the scores above already include the lesion mask."
if not prof.synthetic:
    mask_prof, mask_runs = report.load_grid("quick", results_root=mask_results_root, methods=("std", "at", "dpaat"),
                                            device=device)
    mask_model = report.figure_models(mask_prof)[0]
    mask_ids, mask_note = report.gradcam_selection(mask_runs, mask_model, n_per_class=n_score)
    mask_table = report.gradcam_scores(report.gradcam_results(
        mask_runs, mask_model, mask_ids, report.results_dir(mask_prof, mask_results_root), None, device))
    mask_text = (f"**{mask_model}, SYNTHETIC data** ({mask_prof.image_size} px): {mask_table['images'].iloc[0]} "
                 f"{mask_note}.")
report.md(mask_text)

# %%
mask_table

# %% [markdown]
# ## What it shows

# %% tags=["hide-input"]
t = score_tables[shown[0]].astype({c: float for c in score_tables[shown[0]].columns if c != "images"})
has_mask = "energy in lesion mask" in t.columns
gap = "insertion - deletion (higher = better)"
report.md(
    f"On {shown[0]} (the runs of seed {min(r.config.train.seed for r in results)}), the largest gap between "
    f"insertion and deletion AUC is {t[gap].idxmax()}'s ({t[gap].max():.3f}; "
    + ", ".join(f"{m} {v:.3f}" for m, v in t[gap].items())
    + f") and the highest ROAD score {t['ROAD (higher = better)'].idxmax()}'s. Both AUCs are areas under the model's "
      "raw probability of the true class, so a less confident model (adversarial training lowers confidence) has "
      f"a lower deletion AUC without a more faithful map (here the lowest deletion AUC is "
      f"{t['deletion AUC (lower = better)'].idxmin()}'s and the lowest insertion AUC "
      f"{t['insertion AUC (higher = better)'].idxmin()}'s); the gap between the two cancels much of that"
    + (f"; the largest share of map energy inside the lesion is {t['energy in lesion mask'].idxmax()}'s "
       f"({t['energy in lesion mask'].max():.3f}, against {t['lesion area share (uniform map)'].iloc[0]:.3f} for a "
       f"uniform map)" if has_mask else "; lesion masks are not available for these data, so the share of energy in the "
       "lesion cannot be measured")
    + f". The paper examined 532 correctly predicted test images and shows a few it calls typical, judged by eye; "
      f"these scores cover {int(t['images'].iloc[0])} correct images drawn at random"
    + (", fewer than the paper looked at," if int(t["images"].iloc[0]) < 532 else "")
    + " from one training run per method, with no interval, so small differences between methods say little."
    + (f"\n\nAt {prof.image_size} px the Grad-CAM layer of {shown[0]} gives a "
       f"{report.model_table([shown[0]], prof.image_size, len(classes)).iloc[0, -1]} map, upsampled to the image "
       "(chapter 3), so every map is coarse: it can say which part of the image counts, not which structure."
       if prof.image_size < 100 else "")
    + ("\n\nThese are SYNTHETIC data." if prof.synthetic else "")
    + ("" if prof.synthetic else "\n\n" + report.lesion_energy_sentence(mask_table))
)
