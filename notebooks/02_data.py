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
# # 2. Data: three classes, a lesion-aware split
#
# **Goal.** Describe the images the runs were trained and tested on: the paper's three
# HAM10000 classes (melanocytic nevi `nv`, melanoma `mel`, benign keratosis `bkl`), its
# protocol of 800 training and 299 test images per class, and our split, which keeps every
# lesion on one side. HAM10000 often has several photographs of one lesion; an image-level
# split puts some of them in training and others in the test set, and the test then partly
# measures recognition of a lesion already seen. We count how often that happens.

# %% tags=["parameters"]
profile = "quick"  # quick | cpu-real | paper (dpaat_lib.profiles)
data_root = None  # HAM10000 folder (official layout); None: synthetic (quick) or the stored results
results_root = "results"  # relative paths are relative to the repository root
models = None  # None: the profile's models
methods = None  # None: this chapter's methods (STD only: all runs share one split)
image_size = None  # None: the profile's
epochs = None  # None: the profile's
seeds = None  # None: the profile's
weights = None  # None: from scratch; "imagenet" (torchvision's, downloaded once) or a folder of <model>.pth: fine-tune
eps0 = None  # unused here: the split does not depend on the radius
linf_eps = None  # unused here: the split does not depend on the radius
device = "cpu"

# %%
from dpaat_lib import report  # first: it keeps tqdm's notebook warning out of the page
from dpaat_lib import experiment

# %% [markdown]
# ## Compute or load
#
# The split is a pure function of the metadata and a seed; it is saved with every run. The
# counts below come from `report.split_summary`: where the data are present it recomputes both
# splits from the metadata (and stops if they differ from the stored counts), and it stores the
# counts (no images) beside the results, so the page re-executes without the data.

# %%
prof, results = report.load_grid(profile, data_root=data_root, results_root=results_root, models=models,
                                 methods=methods or ("std",), seeds=seeds, device=device, weights=weights,
                                 image_size=image_size, epochs=epochs)
data = results[0].config.data
summary = report.split_summary(data, data_root, results_root, prof.name)
report.profile_banner(prof, results)

# %% [markdown]
# ## Images per class and side

# %%
report.plot_split_counts(summary) if summary else report.md("The split summary is not stored and the data are "
                                                            "not available: pass `data_root`.")

# %%
report.split_counts_frame(summary) if summary else report.md("(no split summary)")

# %% [markdown]
# ## Leakage of an image-level split

# %%
report.md(report.leakage_text(summary, results[0]))

# %% [markdown]
# ## Example test images, as the models see them

# %% tags=["nbval-ignore-output"]
# (nbval: this picture needs the data folder, which a re-execution may not have; the results
# store holds no real images, so without the data the cell says so instead.)
examples = report.example_images(data, data_root, n_per_class=5)
(report.plot_examples(*examples[:2], data.classes, examples[2]) if examples else
 report.md("Example images need the data (`data_root`); the results store holds no real images."))

# %% [markdown]
# ## The synthetic stand-in
#
# The real data cannot be shipped with the project. So that every chapter runs anywhere, the
# `quick` profile without `data_root` uses a stand-in written by
# `dpaat_lib.synthetic.make_synthetic_ham` in HAM10000's folder layout: procedurally drawn
# "lesions" on a skin-coloured background, in the seven classes of HAM10000 that differ in shape,
# border and colour (the paper's three: nv round and uniform, mel irregular and multi-coloured,
# bkl oval, light and fissured; bcc, akiec, vasc and df for chapter 12's 7-class task, drawn after
# them so the three-class set does not depend on them), about a fifth of them photographed
# twice, each with its lesion mask (used by chapter 8). It is not HAM10000 and every page
# computed on it says so at the top.

# %%
report.md(
    f"Data of this page: **{data.source}**, content digest `{data.digest}`"
    + (f"; generator arguments {experiment.SYNTHETIC_ARGS}." if data.source == "synthetic" else
       "; images are centre-cropped to the short side and resized to "
       f"{data.image_size} px.")
)
