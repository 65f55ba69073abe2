"""Numbers computed from probe curves that several papers' checks use."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd

PERCENTILE_KEY = re.compile(r"^(?P<block>[^/]+)/u(?P<unit>\d+)/p(?P<q>[\d.]+)$")


def percentile_columns(curve: pd.DataFrame) -> dict[tuple[str, int], dict[float, str]]:
    """(block, unit) -> {percentile: column} of an activations probe curve."""
    found: dict[tuple[str, int], dict[float, str]] = {}
    for col in curve.columns:
        m = PERCENTILE_KEY.match(str(col))
        if m and curve[col].notna().any():
            found.setdefault((m["block"], int(m["unit"])), {})[float(m["q"])] = col
    return found


def _unit_percentiles(curve: pd.DataFrame):
    """Per probed unit: its percentiles in ascending order and their values (records x percentiles)."""
    for unit, cols in percentile_columns(curve).items():
        qs = sorted(cols)
        yield unit, qs, curve[[cols[q] for q in qs]].to_numpy(dtype=float)


def percentile_drift(curve: pd.DataFrame) -> float | None:
    """Total movement of the percentile curves across the run divided by the final band width (highest minus
    lowest percentile), averaged over the probed units (docs/claims.md, IS-2). None without two records."""
    per_unit = []
    for _, _, values in _unit_percentiles(curve):
        if len(values) < 2:
            continue
        movement = np.abs(np.diff(values, axis=0)).sum()
        width = values[-1, -1] - values[-1, 0]
        per_unit.append(movement / width if width > 0 else np.inf)
    return float(np.mean(per_unit)) if per_unit else None


def percentile_net_displacement(curve: pd.DataFrame, start: int) -> dict[tuple[str, int], dict[float, float]]:
    """A diagnostic beside :func:`percentile_drift`: per probed unit and percentile, |p(last record) -
    p(first record at or after step ``start``)| divided by the same final band width. Drift sums every
    step-to-step movement (jitter included); this is only where the percentile ended up. Units without a
    record at or after ``start`` are left out."""
    later = (curve["step"] >= start).to_numpy() if len(curve) else np.array([], dtype=bool)
    out = {}
    for unit, qs, values in _unit_percentiles(curve):
        if not later.any():
            continue
        first, last = values[later.argmax()], values[-1]
        width = last[-1] - last[0]
        out[unit] = {q: abs(e - b) / width if width > 0 else np.inf
                     for q, b, e in zip(qs, first, last, strict=True)}
    return out
