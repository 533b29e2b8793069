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
# # 12. Beyond the paper: seeds, DPAAT's free parameters, all seven classes, the schedule, the radius
#
# **Goal.** Answer five questions the paper leaves open, because it reports one training run
# per method, fixes DPAAT's free parameters, tests three of HAM10000's seven classes, and
# because this book trains under a shorter schedule and at a lower resolution on the CPU.
# (a) Is DPAAT's advantage larger than the variation between training seeds? Three seeds per
# method, mean ± std, and DPAAT against AT, SAT and AMAT with a paired t-test across seeds and a
# paired bootstrap interval over test images. (b) What do the adaptive length eta, the
# synchronisation weight lambda and the batch-or-epoch criterion mu (chapter 3) do to
# clean and robust accuracy? (c) Does the comparison carry over to all seven diagnoses, where
# the classes are far from balanced? (d) Does the comparison survive a longer schedule
# (on cpu-real, method.md's full one) than part (a)'s epoch cap, which cuts runs short?
# (e) Does it survive the paper's radius per pixel? At a lower resolution the same L2 radius
# changes each pixel more (chapter 3), so part (a)'s adversary is stronger than the paper's.

# %% tags=["parameters"]
profile = "quick"  # quick | cpu-real | paper (dpaat_lib.profiles); paper uses cpu-real here (dpaat_lib.study)
data_root = None  # HAM10000 folder (official layout); None: synthetic (quick) or the stored results
results_root = "results"  # relative paths are relative to the repository root
models = None  # None: the profile's models
methods = None  # None: this chapter's methods (STD, AT, SAT, AMAT, DPAAT)
image_size = None  # None: the study's (quick: 16 px, study.STUDY_OVERRIDES; otherwise the profile's)
epochs = None  # None: the profile's
seeds = None  # the method comparison's seeds; None: 0, 1, 2 (study.STUDY_SEEDS)
eps0 = None  # None: the profile's L2 radius (training, 20/50-step PGD), the step keeping its ratio; (e) scales it
linf_eps = None  # None: the profile's FGSM and I-FGSM radius (Linf 2/255); "8/255" evaluates at another
weights = None  # None: from scratch; "imagenet" or a folder of <model>.pth: fine-tune (every part's runs; (d) then
#               follows method.md's fine-tuning schedule: 10 epochs of the head, then up to 50)
device = "cpu"
sweep_models = None  # None: the study's (study.SWEEP_MODELS; cpu-real: smallcnn, mobilenet_v2, resnet34)
sweep_seeds = None  # None: the study's per CNN (study.SWEEP_SEEDS; cpu-real: 0, 1, 2 on smallcnn, 0 on the others)
eta_values = None  # None: the study's values (study.DEFAULT_SWEEPS); the default eps0 is always included
lam_values = None  # None: the study's values; the default 1.0 is always included
mu_values = None  # None: batch and epoch
seven_seeds = None  # None: the 7-class profile's (cpu-real-7: 0, 1, 2; quick-7: 0)
full_epochs = None  # (d)'s epoch cap; None: study.FULL_SCHEDULE (cpu-real: method.md's 60, 50 with weights; quick 16)
full_patience = None  # (d)'s early-stopping patience; None: study.FULL_SCHEDULE (5, method.md's)
threat_eps0 = None  # (e)'s L2 radius; None: eps0 x image_size / 224, the paper's change per pixel (study.threat_overrides)
threat_models = None  # CNNs outside the main grid with AT and DPAAT at (e)'s radius; None: study.THREAT_MODELS
n_boot = 2000  # bootstrap resamples of the test images

# %%
from dpaat_lib import report  # first: it keeps tqdm's notebook warning out of the page
from dpaat_lib import profiles, study

# %% [markdown]
# ## Compute or load
#
# Five grids, each loaded from `results/<profile>/` or trained where a run is missing: the five
# methods on every seed; DPAAT once per swept value and sweep seed on each sweep CNN, with AT and the default DPAAT
# on every seed as its yardsticks; the five methods on seven classes; and the five methods on every
# seed again, under the full schedule and at the paper's per-pixel radius (there with AT and DPAAT
# on the CNNs outside the main grid too).

# %%
name3, name7 = study.study_profiles(profile)
over = study.study_overrides(profile, image_size=image_size, epochs=epochs, eps0=eps0, linf_eps=linf_eps)
# papermill's -p passes a list as its text: read before anything trains
sweep_seeds = profiles.seed_list(sweep_seeds, "sweep_seeds") if sweep_seeds else None
sweep_models = study.sweep_models(name3, sweep_models)
study.default_sweeps(name3, eta=eta_values, lam=lam_values, mu=mu_values)  # a bad value stops here, untrained
prof, results = report.load_grid(name3, data_root=data_root, results_root=results_root, models=models,
                                 methods=methods or profiles.MAIN_METHODS, seeds=seeds or study.STUDY_SEEDS,
                                 device=device, weights=weights, **over)
sweeps, sweep_at, sweep_default = study.load_sweep_study(
    name3, sweep_models, seeds=seeds or study.STUDY_SEEDS, sweep_seeds=sweep_seeds,
    given=dict(eta=eta_values, lam=lam_values, mu=mu_values), data_root=data_root, results_root=results_root,
    device=device, weights=weights, **over)
prof7, results7 = report.load_grid(name7, data_root=data_root, results_root=results_root, models=models,
                                   methods=methods or profiles.MAIN_METHODS, seeds=seven_seeds, device=device,
                                   weights=weights, **over)
over_full = {**over, **study.schedule_overrides(name3, weights=weights, epochs=full_epochs, patience=full_patience)}
prof_full, results_full = report.load_grid(name3, data_root=data_root, results_root=results_root, models=models,
                                           methods=methods or profiles.MAIN_METHODS,
                                           seeds=seeds or study.STUDY_SEEDS, device=device, weights=weights,
                                           **over_full)
over_threat = {**over, **study.threat_overrides(prof, threat_eps0)}
prof_threat, results_threat = report.load_grid(name3, data_root=data_root, results_root=results_root,
                                               models=models, methods=methods or profiles.MAIN_METHODS,
                                               seeds=seeds or study.STUDY_SEEDS, device=device, weights=weights,
                                               **over_threat)
threat_models = study.threat_models(name3, prof.models, threat_models)
other_base, other_threat = [
    report.load_grid(name3, data_root=data_root, results_root=results_root, models=threat_models,
                     methods=("at", "dpaat"), seeds=seeds or study.STUDY_SEEDS, device=device, weights=weights,
                     **o)[1]
    if threat_models else [] for o in (over, over_threat)]
report.profile_banner(prof, results)

# %%
report.md(study.study_note(profile, prof, prof7, over, sweep_seeds, sweep_models))

# %% [markdown]
# ## (a) Three seeds: mean and spread
#
# Percent, mean ± standard deviation over training seeds; every run of a seed is evaluated on the
# same test images. GAcc is clean accuracy; FGSM and 20-step I-FGSM attack in Linf (eps = 2/255
# unless `-p linf_eps` gives another),
# 20-step PGD in L2 (eps0); mAP is the mean average precision over the classes.

# %%
study.main_table(results)

# %% [markdown]
# Each dot is one training seed, the bar their mean: differences between methods are to be read
# against the spread of a method's own dots.

# %%
study.plot_seed_points(results, ("GAcc", "20-PGD"))

# %% [markdown]
# ## (a) DPAAT against AT, SAT and AMAT
#
# Per comparison and attack: the per-seed accuracy differences (points; same seed, same test
# images), their mean and standard deviation; the **paired t-test across seeds** (H0: mean
# difference 0), which asks whether the difference exceeds seed-to-seed noise; Holm's adjustment
# of its p-values for the whole table; and a **paired bootstrap 95% interval** that resamples the
# test images within each seed (the same resample for both methods) and averages over seeds,
# which covers the test sample only.

# %%
sig = study.significance_table(results, "DPAAT", study.COMPARED, attacks=study.TEST_ATTACKS, n_boot=n_boot)
study.significance_display(sig)

# %% [markdown]
# ### The sweep CNNs outside the main grid
#
# The sweeps of part (b) train AT and the default DPAAT on every seed of each sweep CNN as their
# yardsticks; on a CNN outside the main grid they give the same test of DPAAT against AT (mean ±
# std over seeds, then the paired comparison). Holm's adjustment is over this table's tests, all
# its CNNs together. Unless the page fine-tunes (`-p weights`; the banner says so), these CNNs are
# trained from scratch at the profile's resolution, where torchvision's ImageNet architectures end
# in a 1x1 feature map: compare their methods with each other, not their accuracies with the small
# CNN's or the paper's.

# %%
other = [r for r in sweep_at + sweep_default if r.config.model not in {x.config.model for x in results}]
sig_other = study.significance_table(other, "DPAAT", ("AT",), attacks=study.TEST_ATTACKS, n_boot=n_boot)
study.main_table(other) if other else report.md("Every sweep CNN is in the main grid: nothing more to compare.")

# %%
study.significance_display(sig_other) if other else None

# %%
report.md(study.below_chance_note(other) or "Every sweep CNN's AT and DPAAT are above chance under 20-PGD.")

# %% [markdown]
# ## (b) DPAAT's free parameters
#
# DPAAT trained once per sweep seed and value of the adaptive length eta (eq. 15's step; default eps0), the
# synchronisation weight lambda (eq. 12; default 1) and the criterion mu (the batch mean of the
# loss increase, the default, or its running mean over the epoch), every other option at its
# default, on each sweep CNN (one row of panels per CNN). Each point is the mean over the sweep's
# training seeds for that CNN (the study note above names them; error bars: their standard
# deviation). The default DPAAT's spread over three training seeds of the same CNN is the
# yardstick: dashed its mean, the dark band its range, the light band the 95% prediction interval
# of a mean over as many more seeds as a point has (where an unchanged DPAAT's point would fall);
# dotted: AT's mean over its seeds.

# %%
frame = study.sweep_frame(sweeps, reference=sweep_at, default=sweep_default, eps0=prof.eps0)
study.plot_sweeps(frame)

# %%
study.sweep_table(frame)

# %% [markdown]
# Read point by point, a value must move accuracy beyond seed noise on its own. A steady drift
# across the whole range can hide below that bar, so each numeric sweep is also read at once:
# every run's accuracy against log2 of the value (the values span a factor of 20), the slope in
# points per doubling with its p-value, Holm-adjusted over all the slopes on this page.

# %%
trends = study.sweep_trends(sweeps, eps0=prof.eps0)
study.trend_table(trends)

# %% [markdown]
# ## (c) All seven classes
#
# Every image of the seven diagnoses, split per class by lesion (no lesion in more than one
# side); the same imbalance handling for every method.

# %%
report.md(study.seven_class_banner(prof7, results7))

# %% [markdown]
# Images per class and side of the split, lesions per class, each class's share of the training
# images, and how often the balanced sampler draws each training image of a class per epoch
# (above 1: the class is over-sampled; below 1: under-sampled).

# %%
counts = study.split_class_counts(results7[0].config.data, data_root=report.resolve_path(data_root),
                                  results=report.results_dir(prof7, results_root), draws=prof7.epoch_draws)
counts if len(counts) else report.md("No stored class counts and no data folder to count them from.")

# %% [markdown]
# Accuracy, balanced accuracy (the mean recall over the classes) and macro F1, clean and under
# 20-step PGD, in percent.

# %%
study.imbalance_table(results7)

# %%
report.md(report.stopping_findings(results7) + "\n\n" + report.unmoved_radii_note(results7))

# %% [markdown]
# DPAAT against AT, SAT and AMAT in balanced accuracy, clean and under 20-step PGD: the same paired
# t-test across seeds, Holm's adjustment and paired bootstrap interval as in part (a).

# %%
sig7 = study.significance_table(results7, "DPAAT", study.COMPARED, metric="bacc", n_boot=n_boot)
study.significance_display(sig7)

# %% [markdown]
# Recall of each class (%), clean and under 20-step PGD.

# %%
study.per_class_recall(results7)

# %% [markdown]
# ## (d) The schedule: does the epoch cap decide the comparison?
#
# Part (a)'s runs stop at the profile's epoch cap; a run that reaches it with its last epoch kept
# was cut short while its validation loss still fell (the table below counts them). Here the same
# five methods on the same seeds, data and test images train under a longer schedule, and nothing
# else changes but AMAT's threshold, which comes from the STD run of the same schedule: where that
# STD run trains longer, AMAT's threshold moves with it. How each run ended, and the epochs run /
# epoch kept per seed under both schedules:

# %%
report.md(study.schedule_note(prof, prof_full, weights) + "\n\n" + report.stopping_findings(results_full))

# %%
study.schedule_table(results, results_full)

# %% [markdown]
# Accuracy under the full schedule, percent, mean ± standard deviation over seeds (part (a)'s
# table for the capped runs):

# %%
study.main_table(results_full)

# %% [markdown]
# What the longer schedule changed: each method's accuracy under the full schedule minus that of
# the capped run of the same seed (points), with part (a)'s paired t-test across seeds, Holm's
# adjustment over this table and the paired bootstrap interval over the test images.

# %%
change = study.schedule_change(results, results_full, n_boot=n_boot)
study.significance_display(change)

# %% [markdown]
# DPAAT against AT, SAT and AMAT under the full schedule, as in part (a):

# %%
sig_full = study.significance_table(results_full, "DPAAT", study.COMPARED, attacks=study.TEST_ATTACKS,
                                    n_boot=n_boot)
study.significance_display(sig_full)

# %% [markdown]
# ## (e) The radius: the paper's change per pixel
#
# An L2 radius is spread over every value of an image, so at a lower resolution the same eps0
# changes each pixel more (chapter 3): part (a)'s adversary is stronger than the paper's. Here the
# same five methods on the same seeds, data and test images train with eps0 and the training step
# scaled by the resolution over 224 px (the paper states no input size; we assume 224), which
# changes each pixel by the paper's root-mean-square amount, and nothing else changes.

# %%
names_threat = study.threat_names(prof, prof_threat)
report.md(study.threat_note(prof, prof_threat) + "\n\n" + report.stopping_findings(results_threat))

# %% [markdown]
# Accuracy at the paper's per-pixel radius, percent, mean ± standard deviation over seeds (the
# 20-step PGD column attacks at this radius):

# %%
study.main_table(results_threat)

# %% [markdown]
# What the smaller radius changed on the tests both grids share (clean, FGSM and 20-step I-FGSM,
# whose Linf radius does not depend on eps0): each method's accuracy minus that of part (a)'s run of
# the same seed (points), with the paired t-test across seeds, Holm's adjustment over this table and
# the paired bootstrap interval over the test images.

# %%
change_threat = study.variant_change(results, results_threat, names=names_threat, attacks=study.SHARED_ATTACKS,
                                     n_boot=n_boot)
study.significance_display(change_threat)

# %% [markdown]
# DPAAT against AT, SAT and AMAT at the paper's per-pixel radius, as in part (a), and each
# comparison's verdict (beyond seed noise after Holm, or within it) at both radii:

# %%
sig_threat = study.significance_table(results_threat, "DPAAT", study.COMPARED, attacks=study.TEST_ATTACKS,
                                      n_boot=n_boot)
study.significance_display(sig_threat)

# %%
study.verdict_changes(sig, sig_threat, names=names_threat).round(1)

# %% [markdown]
# ### The CNNs outside the main grid
#
# Part (a) compares DPAAT with AT on the sweep CNNs outside the main grid; here both train again
# at this radius on the same seeds, and the same three tables follow: accuracy at this radius,
# what the smaller radius changed on the shared tests, and DPAAT against AT with its verdict at
# both radii (Holm's adjustment over each table, all its CNNs together).

# %%
sig_other_base = study.significance_table(other_base, "DPAAT", ("AT",), attacks=study.TEST_ATTACKS, n_boot=n_boot)
sig_other_threat = study.significance_table(other_threat, "DPAAT", ("AT",), attacks=study.TEST_ATTACKS,
                                            n_boot=n_boot)
change_other = study.variant_change(other_base, other_threat, names=names_threat, attacks=study.SHARED_ATTACKS,
                                    n_boot=n_boot)
(study.main_table(other_threat) if other_threat
 else report.md("No CNN outside the main grid at this radius on this profile (parameter `threat_models`)."))

# %%
study.significance_display(change_other) if other_threat else None

# %%
study.significance_display(sig_other_threat) if other_threat else None

# %%
study.verdict_changes(sig_other_base, sig_other_threat, names=names_threat).round(1) if other_threat else None

# %%
(report.md(study.below_chance_note(other_threat) or "Every such CNN's AT and DPAAT are above chance under 20-PGD "
           "at this radius.") if other_threat else None)

# %% [markdown]
# ## What it shows

# %% tags=["hide-input"]
report.md(
    "**(a) Seeds.** " + study.seed_findings(sig)
    + (" **On the sweep CNNs outside the main grid** (" + ", ".join(sorted({r.config.model for r in other})) + "): "
       + study.seed_findings(sig_other) if other else "") + "\n\n"
    + "**(b) Free parameters.**\n\n" + study.sweep_findings(frame, prof) + "\n\n" + study.trend_findings(trends)
    + "\n\n"
    + "**(c) Seven classes.** " + study.seven_class_findings(results7, sig7) + "\n\n"
    + "**(d) Schedule.** " + study.schedule_findings(results, results_full, change, sig, sig_full) + "\n\n"
    + "**(e) Radius.** " + study.threat_findings(results, results_threat, change_threat, sig, sig_threat,
                                                 names_threat)
    + (" **On the CNNs outside the main grid** (" + ", ".join(threat_models) + ", AT and DPAAT): "
       + study.threat_findings(other_base, other_threat, change_other, sig_other_base, sig_other_threat,
                               names_threat)
       + " " + " ".join(study.below_chance_note(rs) for rs in (other_base, other_threat)) if other_threat else "")
    + "\n\n" + study.direction_summary({"(a) the main grid": results, "(a) outside the main grid": other,
                                        "(d) method.md's schedule": results_full,
                                        "(e) the paper's radius per pixel": results_threat,
                                        "(e) outside the main grid at that radius": other_threat})
    + ("\n\nThese are SYNTHETIC data: the numbers test the pipeline, not the paper." if prof.synthetic else "")
)
