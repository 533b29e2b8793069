"""Reproducibility: the environment a page ran in, the runs, configurations and commands that rebuild it."""
from __future__ import annotations

import json
import os
import platform
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from .. import experiment, profiles, store
from .common import CHAPTERS


def environment(device: str = "cpu") -> str:
    """Versions and hardware of the machine that executed the page, as a Markdown list; each line
    reads ``- env `item`: value`` (the book's nbval sanitizer blanks the values, which differ
    from machine to machine)."""
    import matplotlib
    import sklearn
    import torch
    import torchvision

    items = {"python": platform.python_version(), "torch": torch.__version__,
             "torchvision": torchvision.__version__, "numpy": np.__version__, "pandas": pd.__version__,
             "scikit-learn": sklearn.__version__, "matplotlib": matplotlib.__version__,
             "platform": platform.platform(), "processor": profiles.cpu_kind(),
             "cpu count": str(os.cpu_count()), "torch threads": str(torch.get_num_threads()),
             "cuda available": str(torch.cuda.is_available()), "device used": device}
    try:
        from importlib.metadata import version

        items["grad-cam"] = version("grad-cam")
    except Exception:  # pragma: no cover - optional
        pass
    if torch.cuda.is_available():
        items["gpu"] = torch.cuda.get_device_name(0)
    return "\n".join(f"- env `{k}`: {v}" for k, v in items.items())


def cpu_threads_note(prof: profiles.Profile, results: Sequence[experiment.RunResult]) -> str:
    """Whether a run trained again on a CPU reproduces the stored one: the profile's pinned torch threads
    (:func:`dpaat_lib.profiles.pin_cpu_threads`), and how many runs record where they were evaluated."""
    recorded = [r.history["evaluated_on"] for r in results if "evaluated_on" in r.history]
    if prof.cpu_threads is None:
        text = (f"**Threads.** Profile `{prof.name}` does not pin torch's CPU threads: on a CPU its runs' numbers "
                "depend on the machine's thread count (the order of float sums) as they depend on the seed, so a "
                "run trained on another machine can differ from the one shown here.")
    else:
        text = (f"**Threads.** On a CPU, profile `{prof.name}` computes with {prof.cpu_threads} torch "
                f"thread{'s' if prof.cpu_threads > 1 else ''} (`cpu_threads`), the count its committed runs were "
                "trained with: the thread count sets the order of float sums, and another count gives other "
                "numbers, as another seed would. With it, a run trained again on the same kind of CPU gives the same "
                "predictions byte for byte (tests/test_committed_results.py retrains one run of cpu-real and of "
                "cpu-real-7 from the real data). Another kind of CPU can round differently even on one thread (its "
                "kernels differ by instruction set and cache size), and a run trained there then differs as another "
                "seed's would: measured on an Intel Xeon of family 6, model 207, where the test checks the first "
                "epoch against the values recorded for that CPU instead. `dpaat --threads N` trades the "
                "reproduction for speed, and "
                "several one-thread processes (`dpaat grid --claim DIR`) use more cores without it.")
    if not results:
        return text
    if recorded:
        on_cpu = [e for e in recorded if str(e.get("device", "")).startswith("cpu")]
        threads = sorted({str(e.get("torch_threads")) for e in on_cpu})
        kinds = sorted({e["cpu"] for e in on_cpu if "cpu" in e})
        every = len(recorded) == len(results)
        text += ((f" All {len(results)} runs record" if every else
                  f" {len(recorded)} of the {len(results)} runs record")
                 + " the device they were evaluated on"
                 + (f" (on a CPU, torch threads: {' or '.join(threads)}" if threads else "")
                 + (f"; the kind of CPU, recorded by {sum('cpu' in e for e in on_cpu)} of them: {'; '.join(kinds)}"
                    if kinds else "") + (")" if threads else "")
                 + ("." if every else f"; {len(results) - len(recorded)} predate that record."))
    else:
        text += f" None of the {len(results)} runs records the device it was evaluated on (they predate that record)."
    return text


def runs_frame(results: Sequence[experiment.RunResult]) -> pd.DataFrame:
    """Every run: id (its configuration hash), model, method, seed, data source and digest, image size,
    epochs run and best epoch."""
    rows = []
    for r in results:
        c = r.config
        rows.append({"run_id": r.run_id, "model": c.model, "method": c.method.label, "seed": c.train.seed,
                     "data": f"{c.data.source} ({c.data.digest})", "size": c.data.image_size,
                     "epochs run": len(r.history["epochs"]), "best epoch": r.history.get("best_epoch")})
    return pd.DataFrame(rows).drop_duplicates("run_id").reset_index(drop=True)


def config_json(result: experiment.RunResult) -> str:
    """The run's full configuration as stored in its folder (``config.json``), as a Markdown code block: the
    file itself, so a field added since (at its default, outside the run's identity) is not shown as stored."""
    stored = Path(result.path) / "config.json"
    config = store.read_json(stored) if stored.exists() else result.config.to_dict()
    return "```json\n" + json.dumps(config, indent=1, sort_keys=True) + "\n```"


def papermill_commands(profile: str, chapters: Sequence[str] = CHAPTERS) -> str:
    """Markdown code block with the commands that rebuild the book (all chapters, or one)."""
    lines = [f".venv/bin/python scripts/build_book.py --profile {profile} --out _build/{profile}"
             "   # all chapters + HTML",
             "# one chapter, from the repository root:",
             ".venv/bin/jupytext --to ipynb --set-kernel python3 notebooks/04_robustness.py "
             "-o /tmp/04_robustness.ipynb",
             f".venv/bin/python -m papermill /tmp/04_robustness.ipynb book/04_robustness.ipynb -k python3 --cwd book "
             f"-p profile {profile} -p device cpu",
             "# stored runs load without the data; add -p data_root /path/to/HAM10000 to train the missing ones"]
    return "```bash\n" + "\n".join(lines) + "\n```"


def source_block(obj) -> str:
    """The source code of a library function or class as a Markdown code block (what the page
    shows is what runs)."""
    import inspect

    return "```python\n" + inspect.getsource(obj).rstrip() + "\n```"
