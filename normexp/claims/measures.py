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


def percentile_drift(curve: pd.DataFrame) -> float | None:
    """Total movement of the percentile curves across the run divided by the final band width (highest minus
    lowest percentile), averaged over the probed units (docs/claims.md, IS-2). None without two records."""
    per_unit = []
    for cols in percentile_columns(curve).values():
        qs = sorted(cols)
        values = curve[[cols[q] for q in qs]].to_numpy(dtype=float)
        if len(values) < 2:
            continue
        movement = np.abs(np.diff(values, axis=0)).sum()
        width = values[-1, -1] - values[-1, 0]
        per_unit.append(movement / width if width > 0 else np.inf)
    return float(np.mean(per_unit)) if per_unit else None
