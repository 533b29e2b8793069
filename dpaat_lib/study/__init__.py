"""Beyond the paper (issue 5, parts 2, 3 and 5): seeds and significance, DPAAT's free parameters, and
all seven classes. The report-side functions of chapter 12; every number is computed from stored runs.

- **Seeds.** :func:`seed_table` gives mean and spread over training seeds per (model, method);
  :func:`significance` compares two methods on the same test images: the per-seed differences, a
  *paired t-test across seeds* (the verdict: does the difference exceed seed-to-seed noise?) and a
  *paired bootstrap confidence interval* of the mean difference that resamples test images within
  each seed (the same resample for both methods) and averages over seeds (the test-sample
  uncertainty of that mean).
- **Sweeps.** :func:`load_sweeps` trains or loads DPAAT for each value of ``eta`` (adaptive length),
  ``lam`` (synchronisation weight) and ``mu`` (batch or epoch criterion), every other option at its
  default, on the seeds :func:`sweep_seeds_for` gives (:data:`SWEEP_SEEDS`); :func:`sweep_frame`,
  :func:`plot_sweeps` and :func:`sweep_findings` show clean and 20-PGD accuracy beside AT and read each
  point against the default DPAAT's spread over seeds (its range and the 95% prediction interval of a
  mean over as many more seeds as the point has).
- **Seven classes.** The profiles ``quick-7`` and ``cpu-real-7`` (dpaat_lib.profiles): every image,
  a lesion-aware split by fractions, class-balanced sampling of each epoch for every method;
  :func:`imbalance_table` reports accuracy, balanced accuracy and macro F1, clean and attacked.
- **Schedule and threat.** Sections (d) and (e): the five methods again under method.md's schedule, and
  with the L2 radius scaled to the paper's change per pixel; which verdicts change.

One module per part, everything re-exported here (a page calls ``study.seed_table``):

- ``setup``         which profiles, seeds, CNNs and swept values the chapter uses, and its note
- ``numbers``       metrics recomputed from the stored per-image predictions, per-seed tables
- ``significance``  paired t-tests across seeds, paired bootstrap intervals, Holm, their sentences
- ``sweeps``        DPAAT's eta, lambda and mu swept: loading, tables, plots, trends, findings
- ``seven``         all seven diagnoses: imbalance-aware metrics, per-class recall, class counts
- ``schedule``      (d): method.md's full schedule against the capped one
- ``threat``        (e): the paper's radius per pixel against the main grid's
"""
from .setup import *  # noqa: F401,F403
from .numbers import *  # noqa: F401,F403
from .significance import *  # noqa: F401,F403
from .sweeps import *  # noqa: F401,F403
from .seven import *  # noqa: F401,F403
from .schedule import *  # noqa: F401,F403
from .threat import *  # noqa: F401,F403
from .numbers import _label  # noqa: F401 (used by the pages and tests)
from .significance import _metric_fn  # noqa: F401 (used by the pages and tests)
from .sweeps import _value_key  # noqa: F401 (used by the pages and tests)
