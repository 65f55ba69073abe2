"""Compare two results folders (e.g. the committed results/quick and a regeneration of it): every CSV and
claims.json must hold the same values but for paths, timings and the code version that made them.

    python scripts/compare_results.py results/quick /tmp/clone/results/quick

Prints one line per file that differs (the first differing column or key, with both values) and a summary;
exits 1 when any file differs or is missing on one side. Values are compared exactly (a refactor must not
move the last bit), after both sides are read the same way.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
from pathlib import Path

import pandas as pd

# columns and keys that record where and how long, not what was computed (a table's markdown in claims.json
# renders its CSV, which is compared on its own; probe cost tables are timings)
IGNORED = re.compile(r"(^|[./_])(wall_seconds|seconds|run_seconds|steps_per_second|share_of_run|markdown|"
                     r"run_dir|dir|path|init_from|"
                     r"code_version|commit|run_commits|uncommitted|created|date|host|environment|versions|cpu|gpu|command|"
                     r"started|finished|invocation|wall)($|[./_])")


def ignored(name: str) -> bool:
    return bool(IGNORED.search(str(name)))


def where_free(value):
    """A string with the folder a reproduction ran in cut off its paths (``/any/where/outputs/x`` ->
    ``outputs/x``): the same run made in another clone."""
    return re.sub(r"/\S*?/outputs/", "outputs/", value) if isinstance(value, str) else value


def same(a, b) -> bool:
    a, b = where_free(a), where_free(b)
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return a == b


def compare_csv(a: Path, b: Path) -> str | None:
    left, right = pd.read_csv(a), pd.read_csv(b)
    columns = [c for c in left.columns if not ignored(c)]
    if [c for c in right.columns if not ignored(c)] != columns:
        return f"columns differ: {sorted(set(left.columns) ^ set(right.columns))}"
    if len(left) != len(right):
        return f"{len(left)} vs {len(right)} rows"
    for column in columns:
        for i, (x, y) in enumerate(zip(left[column], right[column], strict=True)):
            if not same(x, y):
                return f"row {i} {column}: {x!r} vs {y!r}"
    return None


def flatten(value, prefix: str = "") -> dict:
    if isinstance(value, dict):
        out = {}
        for key, item in value.items():
            out.update(flatten(item, f"{prefix}.{key}" if prefix else str(key)))
        return out
    if isinstance(value, list):
        out = {}
        for i, item in enumerate(value):
            out.update(flatten(item, f"{prefix}[{i}]"))
        return out
    return {prefix: value}


def compare_json(a: Path, b: Path) -> str | None:
    left, right = (flatten(json.loads(p.read_text())) for p in (a, b))
    keys = sorted(k for k in set(left) | set(right) if not ignored(k))
    for key in keys:
        if not same(left.get(key), right.get(key)):
            return f"{key}: {left.get(key)!r} vs {right.get(key)!r}"
    return None


def compare(first: Path, second: Path) -> int:
    files = sorted({p.relative_to(root) for root in (first, second) for p in root.rglob("*")
                    if p.suffix in (".csv", ".json")})
    differing = 0
    for rel in files:
        a, b = first / rel, second / rel
        if not (a.exists() and b.exists()):
            problem = f"only in {first if a.exists() else second}"
        else:
            problem = (compare_csv if rel.suffix == ".csv" else compare_json)(a, b)
        if problem:
            differing += 1
            print(f"DIFFERS {rel}: {problem}")
    print(f"{len(files) - differing} of {len(files)} files equal (paths, timings and versions aside)")
    return 1 if differing else 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("first", type=Path)
    parser.add_argument("second", type=Path)
    args = parser.parse_args(argv)
    return compare(args.first, args.second)


if __name__ == "__main__":
    sys.exit(main())
