"""Numbers taken from probe records: a run's median over its probe calls (and layers), paired per-seed
differences of a summary column, and what each probe cost."""

from __future__ import annotations

import math
import re

import numpy as np
import pandas as pd

from .verdict import Cell


def probe_values(curve: pd.DataFrame, pattern: str) -> np.ndarray:
    """Every finite value, over all calls, of the columns whose name matches the regex ``pattern``."""
    cols = [c for c in curve.columns if re.fullmatch(pattern, str(c))]
    if not cols:
        return np.array([])
    values = curve[cols].to_numpy(dtype=float).ravel()
    return values[np.isfinite(values)]


def probe_median(runs, cell: str, probe: str, pattern: str, label: str) -> Cell:
    """Per seed, the median over the probe's calls (and over every column matching ``pattern``, e.g. every
    layer's ``{layer}/cos``) of the probe's records; a completed run without such records is missing."""

    def median(row) -> float | None:
        values = probe_values(runs.curve(cell, row["seed"], split="probe", probe=probe), pattern)
        return float(np.median(values)) if len(values) else None

    return runs.cell(cell, median, label)


def probe_costs(runs) -> pd.DataFrame:
    """Per cell and probe: calls per run, seconds per call, seconds per run and their share of the run's
    wall time (means over the cell's completed seeds), from the probe records' ``seconds``."""
    curves = runs.curves
    if curves.empty or "probe" not in curves or "seconds" not in curves:
        return pd.DataFrame(columns=["cell", "probe", "calls", "seconds_per_call", "seconds_per_run",
                                     "share_of_run"])
    probes = curves[curves["split"] == "probe"]
    wall = runs.table.set_index(["cell", "seed"])["wall_seconds"] if "wall_seconds" in runs.table else None
    rows = []
    for (cell, probe), group in probes.groupby(["cell", "probe"], sort=False):
        per_seed = group.groupby("seed")["seconds"].agg(["count", "sum"])
        share = [s / wall.get((cell, seed), math.nan) if wall is not None else math.nan
                 for seed, s in per_seed["sum"].items()]
        rows.append({"cell": cell, "probe": probe, "calls": float(per_seed["count"].mean()),
                     "seconds_per_call": float(group["seconds"].mean()),
                     "seconds_per_run": float(per_seed["sum"].mean()),
                     "share_of_run": float(np.nanmean(share)) if share else math.nan})
    return pd.DataFrame(rows)
