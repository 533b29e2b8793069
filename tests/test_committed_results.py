"""The committed results are what the code computes: a stored run of each CPU store, trained again from the
real HAM10000 copy, gives the same predictions byte for byte (the book's numbers are read from such files).

Needs the real data (skips without it). The cheapest run of each store, on one CPU thread as the profiles
pin it: cpu-real's smallcnn STD seed 2 (6 epochs, then the paper's five attacks on 897 test images,
about 2.5 minutes) and cpu-real-7's smallcnn STD seed 1 (6 epochs, 2003 test images, about 4 minutes).
"""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from dpaat_lib import experiment, profiles, store
from dpaat_lib.config import RunConfig

RESULTS = Path(__file__).resolve().parents[1] / "results"


@pytest.mark.parametrize("profile, run_id", [("cpu-real", "smallcnn-std-s2-8480db7c3724"),
                                             ("cpu-real-7", "smallcnn-std-s1-ad9586e4a944")])
def test_a_committed_cpu_run_is_reproduced_byte_for_byte(ham10000_root, tmp_path, profile, run_id):
    stored = RESULTS / profile / run_id
    config = RunConfig.from_dict(store.read_json(stored / "config.json"))
    assert config.run_id == run_id, "the stored configuration no longer hashes to its folder's name"
    threads = torch.get_num_threads()
    # As the store was trained, and as the profile pins it on a CPU: a float sum's order depends on the count.
    assert profiles.pin_cpu_threads(profiles.get_profile(profile)) == 1
    try:
        result = experiment.run(config, results=tmp_path, data_root=ham10000_root, cache_dir=tmp_path / "cache",
                                progress=False)
    finally:
        torch.set_num_threads(threads)
    assert result.history["best_epoch"] == store.read_json(stored / "history.json")["best_epoch"]
    # Metrics added since the run was stored (balanced accuracy, ...) are new keys; the stored ones are unchanged.
    metrics, committed = store.read_json(Path(result.path) / "metrics.json"), store.read_json(stored / "metrics.json")
    assert {k: metrics[k] for k in committed} == committed
    assert (Path(result.path) / store.PREDICTIONS).read_bytes() == (stored / store.PREDICTIONS).read_bytes(), (
        "the same configuration, seed and data gave other predictions than the committed ones: training or "
        "evaluation changed its numbers (or this CPU computes floats differently); re-run the store's runs "
        "and re-execute the book")
