"""What the book's chapters need beyond the library: loading a profile's grid, the paper's tables beside ours,
small load-or-compute extras and the figures, one module per concern (``dpaat_lib.report.pages``, ``.paper``,
``.numbers`` ...). Everything is re-exported here, so a page calls ``report.load_grid``.

- ``common``      constants, paths, ordering, summarising and rounding runs (:func:`fmt`)
- ``pages``       a page's grid (load, or train what is missing), the banner, the threat at its resolution
- ``paper``       the paper's Table I and II, and the checks of their own consistency
- ``numbers``     our tables in the paper's layout, per model and per group
- ``gaps``        our group averages against the paper's Table I, against the noise of two test sets
- ``comparison``  two methods compared against seed-to-seed noise (paired tests, bootstrap, Holm)
- ``split``       the split's counts, leakage and example images (chapter 2)
- ``curves``      robust accuracy against eps (chapter 4)
- ``cams``        Grad-CAM images, runs and scores (chapter 8)
- ``dynamics``    radii, stopping, non-finite values, training cost (chapter 9)
- ``environment`` the environment, runs, configurations and commands of a page (chapter 10)
- ``figures``     every matplotlib figure of the chapters
- ``findings``    the sentences of the "what it shows" sections, the ablation claims, the deviations
- ``speed``       method costs, the throughput benchmark, compile times (chapters 10 and 11)

The notebooks under ``notebooks/`` stay thin: every table, figure and number they show comes from a function
here (or from the library), so a notebook never defines logic of its own. Two chapters have their own module on
top of this package: chapter 11's stronger attacks (:mod:`dpaat_lib.strong_report`) and chapter 12's seeds,
sweeps and seven classes (:mod:`dpaat_lib.study`).

Paths: ``results_root`` and ``data_root`` may be absolute; a relative path (and the default
``results_root=None``, i.e. ``results``) is taken relative to the repository root (:func:`repo_root`), not to the
working directory, so the same notebook finds the same results whether papermill, nbval or a person runs it,
from the repository or from a build folder.

Numbers shown in the book are rounded here (:func:`fmt`), so executed notebooks are identical from one execution
to the next.
"""
from .common import *  # noqa: F401,F403
from .pages import *  # noqa: F401,F403
from .paper import *  # noqa: F401,F403
from .numbers import *  # noqa: F401,F403
from .gaps import *  # noqa: F401,F403
from .comparison import *  # noqa: F401,F403
from .split import *  # noqa: F401,F403
from .curves import *  # noqa: F401,F403
from .cams import *  # noqa: F401,F403
from .dynamics import *  # noqa: F401,F403
from .environment import *  # noqa: F401,F403
from .figures import *  # noqa: F401,F403
from .findings import *  # noqa: F401,F403
from .speed import *  # noqa: F401,F403
# private helpers that chapter 12 and the tests reach through report.<name>
from .curves import _measured_points  # noqa: F401
from .dynamics import _cut_by_cap  # noqa: F401
from .speed import _code_label  # noqa: F401
