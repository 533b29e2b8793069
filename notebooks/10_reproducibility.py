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
# # 10. Reproducibility: environment, runs, how to re-run, deviations
#
# **Goal.** Say exactly what produced this book: the software and machine that executed the
# pages, the runs of the main grid (a run's id is the hash of its full configuration, which names
# its folder under `results/<profile>/`), how to re-run each chapter, and every way in which these
# runs differ from the paper.

# %% tags=["parameters"]
profile = "quick"  # quick | cpu-real | paper (dpaat_lib.profiles)
data_root = None  # HAM10000 folder (official layout); None: synthetic (quick) or the stored results
results_root = "results"  # relative paths are relative to the repository root
models = None  # None: the profile's models
methods = None  # None: this chapter's methods (every method of the book)
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
from dpaat_lib import precompute, profiles, store

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
# ## Environment of this execution

# %%
report.md(report.environment(device))

# %% [markdown]
# ## The runs of the main grid
#
# The main grid and its ablation, the runs that chapters 4 to 9 and 11 read. Chapter 12's studies
# (sweeps, the full schedule, another radius, seven classes) and chapter 10's paper-profile runs
# below are stored and named the same way: every folder under `results/` is one run.
#
# A run is identified by `<model>-<method>-s<seed>-<hash>`, the hash being the first 12 hex
# digits of the SHA-256 of its configuration (`config.json` in its folder). The data enter the
# configuration by a digest of their content (metadata rows and image ids), never by path, so a
# fresh clone finds the same results. A copy at another resolution than this book's 200x150 one
# adds its image size to the configuration, so it trains its own runs. And a copy with the same
# metadata and resolution but other image files (edited in place) is refused rather than served
# these runs: each store records the byte size of every image file its runs were computed from
# (`data-files.json.gz`, checked by `experiment.resolve_data` whenever a data folder is given).

# %%
report.runs_frame(results)

# %% [markdown]
# The full configuration of the DPAAT run, as stored in its folder (`null` for `eta` and
# `eps_max` means eps0 per nat and 2 eps0, chapter 3; `head_epochs` applies only when `weights`
# names weights to fine-tune, `torchvision:<name>` or the digest of a local file):

# %%
report.md(report.config_json(next(r for r in results if r.config.method.name == "dpaat")))

# %% [markdown]
# ## How to re-run
#
# Every chapter is a text notebook in `notebooks/` (jupytext percent format) whose first code
# cell holds its parameters; runs that are already in `results/<profile>/` are loaded, missing
# ones are trained (resumable: an interrupted run continues from its last epoch). The command
# line trains a profile's grid without the book (`python -m dpaat_lib grid --profile cpu-real
# --data /path/to/HAM10000 --results results/cpu-real`).

# %%
report.md(report.papermill_commands(prof.name))

# %%
report.md(report.cpu_threads_note(prof, results))

# %% [markdown]
# ## Training speed
#
# `benchmarks/train_throughput.py` trains one epoch of PGD-7 adversarial training (batch 32) in a
# paper-style loop (fp32, NCHW, a DataLoader over decoded images) and in the library's path (data
# on the device, bf16 and channels_last on a GPU), in the same process, and with `--procs N` in N
# library processes sharing the card, as the GPU grid runs. The table shows every stored result,
# whatever profile's folder holds it (a benchmark times hardware on random images, not this
# profile's runs). The column
# *training code* says whether a row timed this book's training path (a digest of the code of
# `attacks`, `methods`, `models` and `training`, comments and docstrings left out), an earlier one,
# or does not record which:

# %%
bench_root = report.resolve_path(results_root, "results")
speed = report.benchmark_throughput(bench_root)
speed if speed is not None else report.md("No benchmark stored.")

# %% tags=["hide-input"]
report.md(report.benchmark_findings(bench_root))

# %% [markdown]
# Our reading (not profiled): at batch 32 one process leaves a GPU mostly idle, since every attack
# step is a forward and backward pass of 32 images, short enough that launching the kernels rather
# than computing them sets the pace. That fits bf16 and channels_last, which make the arithmetic
# cheaper, raising the rate little or not at all (on some CNNs the library's path is slower than
# the fp32 loop), and several processes sharing the card raising it (the benchmark's processes
# take turns on it; the grid's workers run under NVIDIA's multi-process service where the machine
# has it); the grid relies on the latter. The remedy for launch-bound steps is a CUDA graph,
# which launches a whole step at once. The library has two: `torch.compile`'s (mode
# reduce-overhead, below) and its own capture of the whole training step
# (`training.CapturedStep`, `--compile cuda-graph`: nothing compiled, AMAT eager). The table's
# rows say on which card and for which version of the training path each was measured; the
# decision the check took from them, and why, is quoted under "The paper profile on a GPU" below.
# `scripts/device_check.sh` tests both against eager again, and benchmarks them, on the first lent
# GPU after the training path changes; the grid takes the correct one that costs the card least.

# %% [markdown]
# ### What compiling costs a run
#
# `torch.compile`'s CUDA graphs are compiled before a run's first batch (the library's own capture
# compiles nothing). `benchmarks/compile_time.py` times each method's first epochs three ways in fresh
# processes: with torch's own shape handling, where an epoch's partial last batch recompiles every
# graph for a dynamic batch size; with the library's (`training.CompiledNet`: the full batch compiled,
# the partial batch eager; AMAT's varying sub-batch dynamic from the start); and the library's again
# on the compile cache the previous process left, as a GPU session that carries the cache of an
# earlier one starts (`scripts/device_session.sh`). On a CPU here; the GPU's seconds differ, the
# graphs compiled do not.

# %%
compile_times = report.compile_time_table(bench_root)
compile_times if compile_times is not None else report.md("No compile-time benchmark stored.")

# %% [markdown]
# ## The paper profile on a GPU: what is stored so far
#
# The paper's protocol (six CNNs at 224 px, `profile="paper"`) runs on a lent GPU in calls of at
# most ten minutes (README, "On a GPU"); finished runs are kept in `results/paper/` and the grid
# continues from them. Which of its runs are stored, and the finished ones beside the paper's
# Table I (its rows are averages over groups of CNNs, ours single runs of one seed, from scratch
# where the paper fine-tunes from ImageNet):

# %%
paper_prof, paper_cfgs, paper_runs = report.stored_book_runs("paper", results_root)
report.md(f"{len(paper_runs)} of {len(paper_cfgs)} runs of the paper profile's book grid are stored"
          + (f"; {report.resolution_note(paper_runs[0].config)}." if paper_runs else "."))

# %%
paper_plan = precompute.plan_table(paper_cfgs, report.results_dir(paper_prof, results_root), paper_prof, sharing=8)
report.grid_progress(paper_cfgs, paper_runs, paper_plan)

# %% [markdown]
# The GPU calls behind these runs, from `results/paper/calls.jsonl` (one line per call of
# `scripts/device_grid.sh`), against the project's goal of the whole grid in 30 minutes of one GPU:

# %%
paper_calls = report.grid_calls(report.results_dir(paper_prof, results_root))
report.md(report.grid_time_findings(paper_calls, len(paper_runs), len(paper_cfgs),
                                    left=int((paper_plan["state"] != "done").sum()),
                                    expected_card_s=paper_plan["seconds"].sum() / 8))

# %%
paper_calls

# %% [markdown]
# What is left, run by run, with the seconds each is expected to take at 8 processes on the card
# (`dpaat grid --profile paper --book --plan --sharing 8`: from the stored runs, scaled by the
# benchmark for a CNN with none), against the length of one GPU session:

# %% tags=["hide-input"]
paper_decision = report.results_dir(paper_prof, results_root) / "compile-decision.json"
report.md(report.grid_window_findings(paper_plan, sharing=8, decision=store.read_json(paper_decision)
                                      if paper_decision.exists() else None))

# %%
report.side_by_side(paper_runs, "I") if paper_runs else report.md("None yet.")

# %% [markdown]
# Where a group of the paper is complete for a method, the gaps to the paper's average against the noise of
# two test sets (chapter 4, `report.paper_gaps`): `ours - paper = gap ± noise` in points, `*` beyond it.

# %%
paper_gaps = report.paper_gaps(paper_runs)
report.paper_gap_table(paper_gaps) if len(paper_gaps) else None

# %%
report.md(report.paper_gap_findings(paper_gaps, paper_prof.models))

# %% [markdown]
# ## Deviations from the paper

# %%
report.md(report.deviations(prof, results))
