"""What the book computes from checkpoints, computed where the checkpoints are.

Checkpoints are not committed and, on a lent GPU, do not outlive the call that
trained them. So the extras the chapters derive from a trained model are
computed right after training, into the results store, with exactly the calls
and arguments the chapters use (the chapters then load the stored files on any
machine):

- chapter 4: robust accuracy against eps, both norms (:func:`report.eps_curves`);
- chapter 11: the stronger attacks and the gradient-masking checks
  (:func:`strong_report.strong_evaluations`, the profile's suite and subset), and where the profile asks
  for it (``strong_all_seeds``) the suite alone on every test image, for the runs of every seed;
- chapter 8: Grad-CAM maps and scores of the STD, AT and DPAAT runs of the
  figure models, for the candidate images of :func:`gradcam.candidate_ids`,
  which depend on no other run: the chapter picks among them the images all
  three runs classify correctly, so no run needs another's checkpoint.

:func:`missing_extras` says what of this a stored run lacks, and :func:`plan_table` what a grid call
would do with each run (``dpaat grid --plan``).
"""
from __future__ import annotations

from typing import Sequence

import pandas as pd

from . import experiment, gradcam, grid, profiles, report, store, strong_report
from .config import RunConfig

WHOLE_TEST_SET = "worst case on every test image"  # chapter 11's, on every seed (profile strong_all_seeds)


def run_extras(result: experiment.RunResult, prof: profiles.Profile, results_dir, data_root=None,
               device: str = "cpu", cache_dir=None) -> list[str]:
    """What the chapters derive from one finished run's checkpoint (main methods): on the profile's first
    seed, eps curves and the stronger evaluation (chapters 4 and 11), and for the figure models' STD, AT
    and DPAAT runs the Grad-CAM candidates (chapter 8); on every seed, the worst case of chapter 11 on
    every test image where the profile asks for it. Returns what was computed or found."""
    c = result.config
    if c.method.name not in profiles.MAIN_METHODS:
        return []
    done = []
    if c.train.seed == min(prof.seeds):
        for norm in ("l2", "linf"):
            if report.eps_curves([result], results_dir, data_root, norm=norm, device=device, cache_dir=cache_dir):
                done.append(f"eps curve {norm}")
        if strong_report.strong_evaluations([result], prof, results_dir, data_root=data_root, device=device,
                                            cache_dir=cache_dir)[0]:
            done.append("strong attacks")
        if c.method.name in gradcam.FIGURE_METHODS and c.model in report.figure_models(prof):
            ids = gradcam.candidate_ids(result.predictions, c.data.classes)
            shown = gradcam.candidate_ids(result.predictions, c.data.classes,
                                          per_class=gradcam.THUMBNAILS_PER_CLASS)
            gradcam.cam_result(c, results=results_dir, image_ids=ids, data_root=report.resolve_path(data_root),
                               device=device, cache_dir=cache_dir, thumbnails=shown)
            done.append("Grad-CAM")
    if prof.strong_all_seeds and strong_report.strong_evaluations([result], prof, results_dir, data_root=data_root,
                                                                  device=device, cache_dir=cache_dir,
                                                                  whole_test_set=True)[0]:
        done.append(WHOLE_TEST_SET)
    return done


def missing_extras(result: experiment.RunResult, prof: profiles.Profile, results_dir) -> list[str]:
    """What :func:`run_extras` would compute for ``result`` that is not stored (nothing is computed)."""
    from . import robustness

    c = result.config
    if c.method.name not in profiles.MAIN_METHODS:
        return []
    suite = strong_report.strong_suite_for(prof, c)
    missing = []
    if c.train.seed == min(prof.seeds):
        missing += [f"eps curve {norm}" for norm in ("l2", "linf")
                    if not report.eps_curve_path(c, results_dir, norm).exists()]
        path = robustness.robust_eval_path(c, results_dir, suite, prof.strong_images,
                                           masking=strong_report.strong_masking_options(prof),
                                           batch_size=prof.strong_batch)
        if not path.exists():
            missing.append("strong attacks")
        if c.method.name in gradcam.FIGURE_METHODS and c.model in report.figure_models(prof):
            if gradcam.stored_file(result.path, gradcam.candidate_ids(result.predictions, c.data.classes)) is None:
                missing.append("Grad-CAM")
    if prof.strong_all_seeds and not robustness.robust_eval_path(c, results_dir, suite, None, masking=None,
                                                                 batch_size=prof.strong_batch).exists():
        missing.append(WHOLE_TEST_SET)
    return missing


def precompute_all(prof: profiles.Profile, configs: Sequence[RunConfig], results_dir, data_root=None,
                   device: str = "cpu", cache_dir=None, log=print) -> None:
    """Every extra of every finished run in ``configs`` (stored files are loaded, not recomputed)."""
    finished = 0
    for c in configs:
        r = experiment.load_result(c, results_dir)
        if r is None:
            continue
        finished += 1
        try:
            got = run_extras(r, prof, results_dir, data_root, device, cache_dir)
        except FileNotFoundError as err:  # no checkpoint here: nothing to compute from
            got = [f"skipped ({err})"]
        log(f"{c.run_id}: {', '.join(got) or 'nothing to do'}")
    log(f"extras: {finished} of {len(configs)} runs are finished")


def plan_table(configs: list[RunConfig], results, prof, sharing: int | None = None,
               compile_mode: str | None = None) -> pd.DataFrame:
    """What a grid call would do, run by run (nothing is trained): "done", "extras missing: ..." (no
    checkpoint here to compute them from: --retrain-lost-extras trains it again), "resumes at epoch k",
    "to evaluate" (its model is stored under other evaluation attacks) or "to train", with
    :func:`grid.remaining_seconds` at ``sharing`` and in ``compile_mode`` for the runs to train: "expected s"
    as printed ("?" where none), "seconds" as a number (None where none or done) for what reads the plan."""
    rows = []
    for c in grid.ordered(configs):
        run = store.RunDir(results, c.run_id)
        r = experiment.load_result(c, results)
        est = None
        if r is not None:
            lost = missing_extras(r, prof, results)
            has_ckpt = (run.ckpt / "best.pt").exists()
            state = ("done" if not lost else f"extras missing: {', '.join(lost)}"
                     + ("" if has_ckpt else " (no checkpoint)"))
            if lost and not has_ckpt:
                est = grid.estimate_seconds(c, results, sharing, compile_mode)
        else:
            epochs = len(store.read_json(run / "history.json")["epochs"]) if (run / "history.json").exists() else 0
            twin = experiment.trained_twin(c, results)
            state = (f"resumes at epoch {epochs + 1}" if epochs and (run.ckpt / "last.pt").exists() else
                     f"to evaluate (the model of {experiment.trained_in(twin)})" if twin else "to train")
            est = grid.remaining_seconds(c, results, sharing, compile_mode)
        rows.append({"run": c.run_id, "state": state, "seconds": est,
                     "expected s": "?" if est is None and state != "done" else ("" if est is None else f"{est:.0f}")})
    return pd.DataFrame(rows)
