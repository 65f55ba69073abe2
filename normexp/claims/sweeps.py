"""Numbers for sweeps over a setting (batch size, group count): test error in percent, per-seed differences
between two cells, and the spread of activation-percentile curves."""

from __future__ import annotations

import math
import re

import pandas as pd

from .runs import Runs
from .verdict import Cell

ALL_UNITS_KEY = re.compile(r"^(?P<block>[^/]+)/all/p(?P<q>[\d.]+)$")


def error_percent(row) -> float:
    """A run's final test error in percent (from its ``test_acc``)."""
    return 100.0 * (1.0 - float(row["test_acc"]))


def paired_difference(runs: Runs, a: str, b: str, label: str, value=error_percent) -> Cell:
    """Per seed number, ``value(a) - value(b)`` (seeds paired by their number, as they share data order and
    init); ``value`` is a summary column or a function of the run's row. A pair with a diverged run counts
    as diverged; a pair with an absent or failed run, or without a finite difference, as missing."""
    if isinstance(value, str):
        column, value = value, lambda row: row[column]
    rows = {c: {int(r["seed"]): r for _, r in runs.rows(c).iterrows()} for c in (a, b)}
    values, diverged, missing = [], 0, 0
    for seed in sorted(set(rows[a]) | set(rows[b])):
        pair = [rows[c].get(seed) for c in (a, b)]
        statuses = {None if r is None else r["status"] for r in pair}
        difference = float(value(pair[0])) - float(value(pair[1])) if statuses == {"completed"} else None
        if difference is not None and math.isfinite(difference):
            values.append(difference)
        elif statuses == {"completed"}:
            missing += 1
        elif statuses <= {"completed", "diverged"}:
            diverged += 1
        else:
            missing += 1
    return Cell(label, tuple(values), diverged, missing if rows[a] or rows[b] else 1)


def spread_columns(curve: pd.DataFrame, low: float, high: float) -> dict[str, tuple[str, str]]:
    """block -> (low column, high column) of an activations probe curve taken over all units
    (``{block}/all/p{q}``)."""
    found: dict[str, dict[float, str]] = {}
    for col in curve.columns:
        m = ALL_UNITS_KEY.match(str(col))
        if m and curve[col].notna().any():
            found.setdefault(m["block"], {})[float(m["q"])] = col
    return {b: (qs[low], qs[high]) for b, qs in found.items() if low in qs and high in qs}


def spread_ratio(curve: pd.DataFrame, low: float = 1, high: float = 99) -> float | None:
    """Final over initial width (p_high - p_low) of the activation-percentile curves taken over all units,
    averaged over the probed blocks (docs/claims.md, WH-4). None without two records or a zero start."""
    ratios = []
    for lo, hi in spread_columns(curve, low, high).values():
        rows = curve[["step", lo, hi]].dropna().sort_values("step")
        if len(rows) < 2:
            continue
        first, last = rows.iloc[0], rows.iloc[-1]
        start = first[hi] - first[lo]
        if start > 0:
            ratios.append((last[hi] - last[lo]) / start)
    return sum(ratios) / len(ratios) if ratios else None
