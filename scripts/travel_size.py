"""What a call of the device tool would send, against its 64 MiB limit, before the call is made.

    python scripts/travel_size.py --carry scratch/ham-gpu .whl [scratch/compile-cache]

The device tool copies the working tree (tracked files and untracked files git does not ignore) plus
the carried paths, and refuses the call when they are over 64 MiB together: a refusal costs a lent
GPU's minutes, so this checks here, for free. Exit status 0 when it fits, 1 when it does not (the
message names the largest parts), 2 for a carried path that does not exist.
"""
from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

LIMIT_MIB = 64.0


def _git_files(root: Path, *args: str) -> list[Path]:
    out = subprocess.run(["git", "ls-files", "-z", *args], cwd=root, check=True, capture_output=True).stdout
    return [root / name for name in out.decode().split("\0") if name]


def _size(path: Path) -> int:
    if path.is_symlink():  # a link travels as a link
        return 0
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())


def travel_sizes(root, carry=()) -> dict[str, int]:
    """Bytes per part of what a call sends: "tracked", "untracked" (not ignored), then each carried path."""
    root = Path(root)
    tracked = _git_files(root)
    untracked = _git_files(root, "--others", "--exclude-standard")
    sizes = {"tracked": sum(_size(p) for p in tracked if p.exists()),
             "untracked": sum(_size(p) for p in untracked)}
    for name in carry:
        path = root / name
        if not path.exists():
            raise FileNotFoundError(f"carried path {name} does not exist under {root}: build it first "
                                    "(README, 'On a GPU') or leave it out of carry")
        sizes[f"carry {name}"] = _size(path)
    return sizes


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--carry", nargs="*", default=[], help="the paths the call will name in carry")
    parser.add_argument("--root", default=".", help="the repository's root")
    parser.add_argument("--limit-mib", type=float, default=LIMIT_MIB, help="the device tool's limit")
    args = parser.parse_args(argv)
    try:
        sizes = travel_sizes(args.root, args.carry)
    except FileNotFoundError as err:
        print(f"travel_size: error: {err}", file=sys.stderr)
        return 2
    total = sum(sizes.values())
    for part, size in sizes.items():
        print(f"{size / 2**20:8.1f} MiB  {part}")
    left = args.limit_mib - total / 2**20
    print(f"{total / 2**20:8.1f} MiB  in all, {abs(left):.1f} MiB {'under' if left >= 0 else 'over'} "
          f"the limit of {args.limit_mib:g} MiB")
    if left < 0:
        largest = max(sizes, key=sizes.get)
        print(f"travel_size: too large to send: the largest part is {largest}; carry less (a compile cache "
              "only costs compile time when left behind) or make the tracked results smaller", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
