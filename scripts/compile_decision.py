"""Whether the grid should train through CUDA graphs, from what scripts/device_check.sh measured.

    python scripts/compile_decision.py OUT_DIR [--write FILE]

Yes ("reduce-overhead") only if the CUDA-graph test passed for every method (cuda-tests.txt, pytest
-rA) and the compiled library path was faster than the eager one for every benchmarked CNN, in one
process and (where measured) in several. Prints the reasons; --write FILE stores the mode, or an
empty line for eager, for `COMPILE=auto bash scripts/device_grid.sh`, so the session's next call can
start at once (the machine goes back after 30 idle seconds).
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

METHODS = ("std", "at", "sat", "amat", "dpaat")
TEST = "test_cuda_graphs_match_eager_on_a_gpu"
MODE = "reduce-overhead"


def decide(out_dir: Path) -> tuple[str, list[str]]:
    """(mode or "", reasons) from ``out_dir``'s cuda-tests.txt and benchmark-*-eager/graphs.json."""
    reasons = []
    tests = (out_dir / "cuda-tests.txt").read_text() if (out_dir / "cuda-tests.txt").exists() else ""
    passed = set(re.findall(rf"PASSED \S*{TEST}\[(\S+?)\]", tests))
    missing = [m for m in METHODS if m not in passed]
    if missing:
        reasons.append(f"CUDA graphs not shown correct for {', '.join(missing)} ({TEST})")
    rows = {}
    for mode in ("eager", "graphs"):
        paths = sorted(out_dir.glob(f"benchmark-*-{mode}.json"))
        rows[mode] = {r["model"]: r for p in paths for r in json.loads(p.read_text()).get("throughput", [])}
    if not rows["eager"] or not rows["graphs"]:
        reasons.append("no benchmark of both paths")
    for model, g in rows["graphs"].items():
        e = rows["eager"].get(model)
        if e is None:
            continue
        for key in ("library_img_s", "concurrent_img_s"):
            if key in g and key in e and g[key] <= e[key]:
                reasons.append(f"{model}: {key} {g[key]:.0f} through CUDA graphs, not above eager's {e[key]:.0f}")
    if not reasons:
        speedups = ", ".join(f"{m} x{g['library_img_s'] / rows['eager'][m]['library_img_s']:.2f}"
                             for m, g in rows["graphs"].items() if m in rows["eager"])
        return MODE, [f"every method correct under CUDA graphs; faster: {speedups}"]
    return "", reasons


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("out_dir", type=Path)
    p.add_argument("--write", type=Path, help="store the decision here for COMPILE=auto")
    args = p.parse_args(argv)
    mode, reasons = decide(args.out_dir)
    print(f"compile decision: {mode or 'eager'}")
    for r in reasons:
        print(f"  - {r}")
    if args.write:
        args.write.parent.mkdir(parents=True, exist_ok=True)
        args.write.write_text(mode + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
