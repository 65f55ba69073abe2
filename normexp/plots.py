"""Plot helpers for the reproduction figures: curves as seed mean and spread, diverged runs marked.

Each helper draws on a matplotlib ``Axes`` from an experiment's :class:`normexp.claims.Runs`; the
experiments' plot hooks compose them into the papers' panels.
"""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

DIVERGED_MARKER = {"marker": "x", "s": 40, "linewidths": 1.5, "zorder": 5}


def figure(rows: int = 1, cols: int = 1, width: float = 4.6, height: float = 3.4, **kw):
    return plt.subplots(rows, cols, figsize=(width * cols, height * rows), squeeze=False, **kw)


def seed_curves(runs, cell: str, column: str, split: str = "test", probe: str | None = None):
    """(steps x seeds table of the seeds that completed, {seed: (curve, divergence step)} of those that
    diverged)."""
    done, diverged = {}, {}
    for _, row in runs.rows(cell).iterrows():
        curve = runs.curve(cell, row["seed"], split=split, probe=probe)
        if column not in curve:
            continue
        series = curve.set_index("step")[column].astype(float)
        series = series[~series.index.duplicated(keep="last")]
        if row["status"] == "completed":
            done[row["seed"]] = series
        elif row["status"] == "diverged":
            at = row.get("diverged_step")
            diverged[row["seed"]] = (series, at if pd.notna(at) else (series.index[-1] if len(series) else 0))
    return pd.DataFrame(done), diverged


def seed_band(ax, runs, cell: str, column: str = "acc", split: str = "test", probe: str | None = None,
              label: str | None = None, color=None, linestyle="-", mark_diverged: bool = True):
    """Mean over the seeds that completed (line) with their min-max band; a diverged seed is drawn thin up
    to its last record and marked with an x. Returns the line's color."""
    table, diverged = seed_curves(runs, cell, column, split, probe)
    n = table.shape[1]
    text = f"{label or cell} ({n} seed{'s' if n != 1 else ''}" + (f", {len(diverged)} diverged)"
                                                                  if diverged else ")")
    if n:
        line, = ax.plot(table.index, table.mean(axis=1), color=color, linestyle=linestyle, label=text)
        color = line.get_color()
        if n > 1:
            ax.fill_between(table.index, table.min(axis=1), table.max(axis=1), color=color, alpha=0.2, lw=0)
    for i, (series, at) in enumerate(diverged.values()):
        if mark_diverged and len(series):
            line, = ax.plot(series.index, series.values, color=color, lw=0.8, alpha=0.7, linestyle=":",
                            label=None if (n or i) else text)
            color = line.get_color()
            ax.scatter([at], [series.values[-1]], color=color, **DIVERGED_MARKER)
    return color


def note_diverged(ax, runs) -> None:
    """A key for the x markers, on panels of experiments where some run diverged."""
    if not (runs.table["status"] == "diverged").any():
        return
    ax.text(0.99, 0.01, "x: run diverged", transform=ax.transAxes, ha="right", va="bottom", fontsize=7,
            color="0.4")
