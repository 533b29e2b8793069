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
