"""Shared pytest fixtures.

Data fixtures: ``synthetic_root`` (a small synthetic HAM10000-layout folder,
made once per session) and ``ham10000_root`` (the real data if present; tests
that use it are skipped otherwise, so the suite runs anywhere).
"""

from __future__ import annotations

import os
import pathlib

import pytest

from dpaat_lib.synthetic import make_synthetic_ham


def _ham10000_path() -> pathlib.Path:
    """The real data: $DPAAT_HAM10000, else shared/data/ham10000 beside the checkout."""
    env = os.environ.get("DPAAT_HAM10000")
    if env:
        return pathlib.Path(env)
    return pathlib.Path(__file__).resolve().parents[2] / "shared" / "data" / "ham10000"


@pytest.fixture(scope="session")
def synthetic_root(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    """Synthetic HAM10000 folder (3 classes x 150 images at 96 px, seed 0).

    Shared by the whole session: treat it as read-only (copy it to modify it).
    """
    return make_synthetic_ham(tmp_path_factory.mktemp("synthetic_ham"), n_per_class=150, size=96, seed=0)


@pytest.fixture(scope="session")
def ham10000_root() -> pathlib.Path:
    """The real HAM10000 folder; skips the test when it is not available."""
    root = _ham10000_path()
    if not (root / "HAM10000_metadata.csv").is_file():
        pytest.skip(f"real HAM10000 not found at {root} (set DPAAT_HAM10000)")
    return root


# --------------------------------------------------------------------------
# Fixtures of the core tests (attacks, models, methods, training)
# --------------------------------------------------------------------------

import torch  # noqa: E402


@pytest.fixture(scope="session", autouse=True)
def _one_torch_thread():
    """Run torch on one intra-op thread ($DPAAT_TEST_THREADS to change).

    The tests use tiny tensors; on a small, shared machine several OpenMP
    threads spin against each other and make a 16-pixel forward pass a
    hundred times slower than one thread does.
    """
    before = torch.get_num_threads()
    torch.set_num_threads(int(os.environ.get("DPAAT_TEST_THREADS", "1")))
    yield
    torch.set_num_threads(before)


# cuBLAS reads this when its first handle is made, so it is set before any test touches CUDA: torch's
# deterministic mode (``deterministic_cuda``) needs it for deterministic matrix products.
os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")


@pytest.fixture
def deterministic_cuda():
    """Two runs of the same code on a GPU, made to repeat each other: fp32 without TF32, cuDNN's
    deterministic algorithms, torch's deterministic implementations (a warning where an op has none).

    The GPU tests compare the losses of two runs (resumed vs uninterrupted, graph vs eager). Left to
    cuDNN's heuristics, atomic-add kernels and TF32, two runs of identical code differed on an H200
    (two eager AMAT runs by 2.6e-4 after 3 epochs; a resumed DPAAT run by 2.3e-3), so the tests' bounds
    had to be loose enough to miss a real fault, and were still exceeded. Nothing changes on a CPU."""
    cudnn, matmul = torch.backends.cudnn, torch.backends.cuda.matmul
    before = (cudnn.deterministic, cudnn.benchmark, cudnn.allow_tf32, matmul.allow_tf32,
              torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled())
    cudnn.deterministic, cudnn.benchmark, cudnn.allow_tf32, matmul.allow_tf32 = True, False, False, False
    torch.use_deterministic_algorithms(True, warn_only=True)
    yield
    cudnn.deterministic, cudnn.benchmark, cudnn.allow_tf32, matmul.allow_tf32 = before[:4]
    torch.use_deterministic_algorithms(before[4], warn_only=before[5])


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    """Decoded-image cache shared by the end-to-end tests (keys depend on content, not path)."""
    return tmp_path_factory.mktemp("dpaat_cache")


@pytest.fixture
def smallcnn():
    """A seeded, fresh ``smallcnn`` (3 classes) in eval mode."""
    from dpaat_lib.models import build_model

    torch.manual_seed(0)
    return build_model("smallcnn", 3).eval()


@pytest.fixture
def image_batch():
    """Four seeded 16 px images in [0, 1] (away from the borders) and their labels."""
    g = torch.Generator().manual_seed(0)
    x = 0.2 + 0.6 * torch.rand(4, 3, 16, 16, generator=g)
    y = torch.tensor([0, 1, 2, 0])
    return x, y
