"""What the book computes from checkpoints, computed where the checkpoints are.

Checkpoints are not committed and, on a lent GPU, do not outlive the call that
trained them. So the extras the chapters derive from a trained model are
computed right after training, into the results store, with exactly the calls
and arguments the chapters use (the chapters then load the stored files on any
machine):

- chapter 4: robust accuracy against eps, both norms (:func:`report.eps_curves`);
- chapter 11: the stronger attacks and the gradient-masking checks
  (:func:`report.strong_evaluations`, the profile's suite and subset);
- chapter 8: Grad-CAM maps and scores of STD, AT and DPAAT on the figure
  models (:func:`report.gradcam_results`, the chapter's default image counts),
  once all three runs of a model are there.
"""
from __future__ import annotations

from typing import Sequence

from . import experiment, profiles, report
from .config import RunConfig

# Chapter 8's papermill defaults (n_show, n_score): images per class in the figure and in the scores.
GRADCAM_SHOW, GRADCAM_SCORE = 2, 10
GRADCAM_METHODS = ("std", "at", "dpaat")


def run_extras(result: experiment.RunResult, prof: profiles.Profile, results_dir, data_root=None,
               device: str = "cpu", cache_dir=None) -> list[str]:
    """Eps curves and the stronger evaluation of one finished run of the main grid and the profile's first
    seed (what chapters 4 and 11 show); returns what was computed or found."""
    # Chapters 4 and 11 show the main methods' runs of the profile's first seed.
    if result.config.method.name not in profiles.MAIN_METHODS or result.config.train.seed != min(prof.seeds):
        return []
    done = []
    for norm in ("l2", "linf"):
        if report.eps_curves([result], results_dir, data_root, norm=norm, device=device, cache_dir=cache_dir):
            done.append(f"eps curve {norm}")
    evals, missing = report.strong_evaluations([result], prof, results_dir, data_root=data_root, device=device,
                                               cache_dir=cache_dir)
    if evals:
        done.append("strong attacks")
    return done


def _gradcam_runs(prof, configs, results_dir, model):
    runs = [c for c in configs if c.model == model and c.method.name in GRADCAM_METHODS]
    seed = min((c.train.seed for c in runs), default=None)
    return [experiment.load_result(c, results_dir) for c in runs if c.train.seed == seed]


def gradcam_ready(prof: profiles.Profile, configs: Sequence[RunConfig], results_dir, model: str) -> bool:
    """Whether ``model`` is a figure model whose STD, AT and DPAAT runs have all finished."""
    results = _gradcam_runs(prof, configs, results_dir, model)
    return (model in report.figure_models(prof) and len(results) == len(GRADCAM_METHODS)
            and all(r is not None for r in results))


def gradcam_extras(prof: profiles.Profile, configs: Sequence[RunConfig], results_dir, data_root=None,
                   device: str = "cpu", cache_dir=None, model: str | None = None) -> list[str]:
    """Chapter 8's Grad-CAM results for each figure model (or just ``model``) whose STD, AT and DPAAT
    runs (first seed) have finished; returns the models done."""
    done = []
    for m in report.figure_models(prof):
        if model is not None and m != model:
            continue
        if not gradcam_ready(prof, configs, results_dir, m):
            continue
        results = _gradcam_runs(prof, configs, results_dir, m)
        for n, sel_seed in ((GRADCAM_SHOW, 0), (GRADCAM_SCORE, 1)):
            ids, _ = report.gradcam_selection(results, m, n_per_class=n, seed=sel_seed)
            report.gradcam_results(results, m, ids, results_dir, data_root, device, cache_dir=cache_dir)
        done.append(m)
    return done


def precompute_all(prof: profiles.Profile, configs: Sequence[RunConfig], results_dir, data_root=None,
                   device: str = "cpu", cache_dir=None, log=print) -> None:
    """Every extra of every finished run in ``configs`` (stored files are loaded, not recomputed)."""
    for c in configs:
        r = experiment.load_result(c, results_dir)
        if r is None:
            continue
        try:
            got = run_extras(r, prof, results_dir, data_root, device, cache_dir)
        except FileNotFoundError as err:  # no checkpoint here: nothing to compute from
            got = [f"skipped ({err})"]
        log(f"{c.run_id}: {', '.join(got) or 'nothing to do'}")
    try:
        models = gradcam_extras(prof, configs, results_dir, data_root, device, cache_dir)
    except FileNotFoundError as err:
        models = [f"skipped ({err})"]
    log(f"Grad-CAM: {models or 'no model ready'}")
