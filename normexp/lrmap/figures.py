"""The map's figures: the heat map of the largest stable lr, final loss vs lr, and the range test's curves
against the map's edges."""

from __future__ import annotations

import math
from collections.abc import Callable

import matplotlib
import numpy as np
import pandas as pd

from normexp.lrmap.search import MapCell, per_lr
from normexp.plots import figure, mark_diverged_at_top, mean_band


def _row_col(cells: list[MapCell]) -> tuple[list[str], list[str], Callable[[MapCell], tuple[str, str]]]:
    """Heat map layout: the first swept key's values as rows, the combinations of the others as columns."""
    if not cells or not cells[0].axes:
        return ["all"], ["all"], lambda c: ("all", "all")
    key = lambda c: (f"{c.axes[0][0]}={c.axes[0][1]}",
                     ",".join(f"{k}={v}" for k, v in c.axes[1:]) or "all")
    rows = list(dict.fromkeys(key(c)[0] for c in cells))
    cols = list(dict.fromkeys(key(c)[1] for c in cells))
    return rows, cols, key


def heatmap(table: pd.DataFrame, cells: list[MapCell]):
    rows, cols, key = _row_col(cells)
    grid = np.full((len(rows), len(cols)), np.nan)
    fig, axes = figure(width=1.3 * len(cols) + 2.2, height=0.75 * len(rows) + 1.4)
    ax = axes[0][0]
    by_name, labels = table.set_index("cell"), []
    for c in cells:
        r, k = key(c)
        row = by_name.loc[c.name]
        i, j = rows.index(r), cols.index(k)
        grid[i, j] = math.log10(row["largest_stable_lr"]) if row["largest_stable_lr"] > 0 else np.nan
        edge = row["largest_stable_lr"]
        text = "none" if not edge > 0 else (">=" if row["edge"].startswith(">=") else "") + f"{edge:.3g}"
        best = f"\nbest {row['best_lr']:.3g}" if row["best_lr"] > 0 else ""
        labels.append((j, i, text + best))
    image = ax.imshow(np.ma.masked_invalid(grid), cmap=matplotlib_cmap(), aspect="auto")
    for j, i, text in labels:  # dark text on the light end of the colour map, white on the dark end
        light = np.isnan(grid[i, j]) or image.norm(grid[i, j]) > 0.5
        ax.text(j, i, text, ha="center", va="center", fontsize=8, color="black" if light else "white")
    fig.colorbar(image, ax=ax, label="log10 largest stable lr")
    ax.set_xticks(range(len(cols)), cols, rotation=20, ha="right", fontsize=8)
    ax.set_yticks(range(len(rows)), rows, fontsize=8)
    ax.set_title("largest stable lr (best-loss lr below it)", fontsize=9)
    return fig


def matplotlib_cmap():
    return matplotlib.colormaps["viridis"].with_extremes(bad="0.85")  # bad: no lr trains


def loss_vs_lr(points: pd.DataFrame, cells: list[MapCell], loss: str):
    """Final loss (seed mean, min-max band) vs lr, one panel per value of the first swept key, one line per
    combination of the others; a diverged or failed run is an x at the top of its panel."""

    rows, cols, key = _row_col(cells)
    fig, axes = figure(1, len(rows), width=3.6, height=3.0, sharey=True)
    for c in cells:
        r, k = key(c)
        ax = axes[0][rows.index(r)]
        pts = points[points["cell"] == c.name]
        agg = per_lr(pts, loss).sort_index()
        done = agg[agg["completed"] > 0]
        color = mean_band(ax, done.index, done["loss"], done["loss_min"], done["loss_max"], label=k)
        mark_diverged_at_top(ax, pts.loc[pts["status"].isin(["diverged", "failed"]), "lr"], color)
        ax.set_title(r, fontsize=9)
        ax.set_xscale("log")
        ax.set_xlabel("learning rate")
    axes[0][0].set_ylabel(f"final {loss.replace('_', ' ')}")
    axes[0][0].set_yscale("log")
    for ax in axes[0]:
        ax.legend(fontsize=7, title="x at top: diverged", title_fontsize=7)
    return fig


def map_figures(table: pd.DataFrame, points: pd.DataFrame, cells: list[MapCell], loss: str) -> dict:
    return {"lrmap_heatmap": heatmap(table, cells), "lrmap_loss_vs_lr": loss_vs_lr(points, cells, loss)}



def range_test_figure(curves: pd.DataFrame, table: pd.DataFrame):
    fig, axes = figure(width=5.2, height=3.6)
    ax = axes[0][0]
    for (name, curve), (_, row) in zip(curves.groupby("cell", sort=False), table.iterrows(), strict=True):
        line, = ax.plot(curve["lr"], curve["smoothed"], label=name, lw=1)
        ax.axvline(row["range_test_lr"], color=line.get_color(), ls=":", lw=1)
        if row["largest_stable_lr"] > 0:
            ax.axvline(row["largest_stable_lr"], color=line.get_color(), ls="--", lw=1)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("learning rate (rising within one run)")
    ax.set_ylabel("smoothed training loss")
    ax.set_title("range test: suggestion (dotted) vs map edge (dashed)", fontsize=9)
    ax.legend(fontsize=6)
    return fig
