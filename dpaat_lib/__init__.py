"""dpaat_lib: Dynamic Perturbation-Adaptive Adversarial Training (Li et al., arXiv 2403.06798).

The library behind the dpaat book. The folder tree is the architecture:

- ``data``       HAM10000 reader, lesion-aware split, decoded-image cache
- ``synthetic``  a synthetic stand-in in the same layout (tests, quick profile)
- ``models``     the six torchvision CNNs (plus a tiny CNN and others), normalisation inside
- ``pretrained`` starting weights: from scratch, torchvision's ImageNet weights or local files
- ``attacks``    FGSM, I-FGSM and PGD (Linf, L2) from one loop, per-sample eps
- ``methods``    STD, AT, SAT, AMAT, DPAAT and its ablations as strategy objects
- ``training``   one training loop: seeded, resumable, early stopping
- ``evaluation`` clean and attacked predictions of a trained model
- ``metrics``    GAcc, RAcc, mAP, mARP, macro P/R/F1, confusion matrices
- ``config``     frozen dataclasses; their hash names a run
- ``store``      run folders, atomic writes, load-or-compute
- ``grid``       many runs in dependency order (AMAT after its STD run)
- ``profiles``   the quick, CPU-real and paper experiment grids
- ``gradcam``    Grad-CAM maps of a trained model
- ``robustness`` APGD-CE, APGD-DLR, Square and the gradient-masking checks (beyond the paper)
- ``experiment`` one run: train, evaluate, store, or load what is stored
- ``precompute`` what a GPU call derives from checkpoints before they are lost
- ``cli``        the ``dpaat`` command

The book's side (the notebooks are thin over these): ``report`` (a package, one module per concern of chapters
1-10: the grid and banner, the paper's tables, ours, comparisons, curves, Grad-CAM, dynamics, figures, speed),
``strong_report`` (chapter 11, stronger attacks) and ``study`` (chapter 12, seeds, sweeps, seven classes).
"""

__version__ = "0.1.0"
