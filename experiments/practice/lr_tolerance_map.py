"""The learning-rate tolerance map as a pipeline experiment: normexp.lrmap's search (coarse scan, then
bisection on the upper edge), driven by this experiment's own run table, one round of runs per stage."""

from __future__ import annotations

import math

import pandas as pd

from normexp.claims import format_value
from normexp.lrmap import SCORE_KEY, LrGrid, LrMap, MapCell, cells_from_axes, heatmap, loss_vs_lr

POINT_COLUMNS = ("status", SCORE_KEY, "train_loss", "test_loss")


def lr_map(ctx) -> LrMap:
    p = ctx.params
    axes = {key: [format_value(v) for v in values] for key, values in p["axes"].items()}
    return LrMap(cells_from_axes(axes), ctx.seeds, LrGrid(**p["grid"][ctx.profile]), p["fraction"], p["loss"])


def cell_name(cell: MapCell, lr: float) -> str:
    """``none_b8_lr0.01``: the norm, the other axes' values, the lr."""
    values = [v if k == "norm" else f"b{v}" if k == "data.batch_size" else f"{k}{v}" for k, v in cell.axes]
    return "_".join([*values, f"lr{lr:.6g}"])


def points_of(ctx):
    """``points_of(cell, lrs)`` for LrMap: one row per (lr, seed) from the run table, ``missing`` where there
    is no row yet."""
    table = ctx.runs.table.set_index(["cell", "seed"]) if len(ctx.runs.table) else None

    def points(cell: MapCell, lrs: list[float]) -> pd.DataFrame:
        rows = []
        for lr in lrs:
            for seed in ctx.seeds:
                key = (cell_name(cell, lr), seed)
                found = table is not None and key in table.index
                row = table.loc[key] if found else {}
                values = {c: row.get(c) if found and c in row else None for c in POINT_COLUMNS}
                rows.append({"cell": cell.name, **dict(cell.axes), "lr": lr, "seed": seed,
                             **values, "status": values["status"] if found else "missing"})
        return pd.DataFrame(rows)
    return points


def plan_map(ctx) -> list[dict]:
    """Stage hook: every map point asked for so far and the next round's, as cells (cumulative, so each
    stage's cells include the earlier ones; the pipeline stops when a stage adds none)."""
    lrmap, points = lr_map(ctx), points_of(ctx)
    asked = [(cell, lr) for cell in lrmap.cells for lr in lrmap.evaluated_lrs(cell, points)]
    cells = {}
    for cell, lr in [*asked, *lrmap.next_round(points)]:
        cells[cell_name(cell, lr)] = [*cell.overrides, f"optim.lr={lr:.6g}"]
    return [{"name": name, "overrides": overrides} for name, overrides in cells.items()]


def _summary(ctx):
    lrmap = lr_map(ctx)
    table, pts = lrmap.summarize(points_of(ctx))
    return lrmap, table, pts


def map_table(ctx) -> pd.DataFrame:
    """Per cell: the largest stable lr, the edge it brackets, the best lr, and the runs the search used."""
    return _summary(ctx)[1]


def tolerance_ratios(ctx) -> pd.DataFrame:
    """Per batch size: each norm's largest stable lr over no norm's (NaN where either is undefined)."""
    _, table, _ = _summary(ctx)
    rows = []
    for batch, group in table.groupby("data.batch_size", sort=False):
        edge = group.set_index("norm")["largest_stable_lr"]
        base = edge.get("none", math.nan)
        ratios = {f"{n}/none": edge[n] / base if base > 0 else math.nan for n in edge.index if n != "none"}
        rows.append({"data.batch_size": batch, "none_lr": base, **ratios})
    return pd.DataFrame(rows)


def heatmap_figure(ctx):
    lrmap, table, _ = _summary(ctx)
    return heatmap(table, lrmap.cells)


def loss_figure(ctx):
    lrmap, _, pts = _summary(ctx)
    return loss_vs_lr(pts, lrmap.cells, lrmap.loss)
