"""Do two run folders hold the same numbers? Every metrics row of every (method, seed), value by
value, wall-clock columns aside; the exit code is 1 when any differs.

Used to check that a refactoring changes no result: run the same recipe on one seed from two
checkouts (runs are deterministic per seed), then compare::

    densereward run doorkey --local --seeds 0 --out before/doorkey     # on the old checkout
    densereward run doorkey --local --seeds 0 --out after/doorkey      # on the new one
    python benchmarks/same_numbers.py before/doorkey after/doorkey
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import pyarrow.parquet as pq

WALL_CLOCK = {"steps_per_second", "seconds"}


def differences(before: Path, after: Path) -> tuple[int, dict[str, tuple[object, object]]]:
    """How many values were compared, and the first differing pair of each column."""

    def rows(folder: Path) -> list[dict]:
        table = pq.read_table(folder / "metrics.parquet").to_pylist()
        return sorted(table, key=lambda r: (r["method"], r["seed"], r["update"]))

    old, new = rows(before), rows(after)
    if len(old) != len(new):
        return 0, {"rows": (len(old), len(new))}
    compared, differ = 0, {}
    for x, y in zip(old, new, strict=True):
        for column in (set(x) | set(y)) - WALL_CLOCK:
            u, v = x.get(column), y.get(column)
            compared += 1
            both_nan = (
                isinstance(u, float) and isinstance(v, float) and math.isnan(u) and math.isnan(v)
            )
            if u != v and not both_nan:
                differ.setdefault(column, (u, v))
    return compared, differ


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("before", type=Path)
    parser.add_argument("after", type=Path)
    args = parser.parse_args()
    compared, differ = differences(args.before, args.after)
    if differ:
        print(f"DIFFERENT in {sorted(differ)}; first of each: {differ}")
        sys.exit(1)
    print(f"identical: {compared} values of {args.before} and {args.after}")


if __name__ == "__main__":
    main()
