"""SD-1: the spread of final test accuracy across init scales, with BN at most half of that without BN."""

from __future__ import annotations

import pandas as pd

from normexp.claims import Cell, Verdict, compare, format_value
from normexp.plots import DIVERGED_MARKER, figure

KINDS = {"none": "no norm", "bn": "BN"}


def accuracy(ctx, kind: str, scale: float, seed: int) -> float | None:
    """Final test accuracy of one run; chance accuracy for a diverged run; None when it has not finished."""
    rows = ctx.runs.rows(f"{kind}_scale{format_value(scale)}")
    row = rows[rows["seed"] == seed]
    if row.empty:
        return None
    status = row["status"].iloc[0]
    if status == "diverged":
        return float(ctx.params["chance"])
    return float(row["test_acc"].iloc[0]) if status == "completed" else None


def spread_cell(ctx, kind: str) -> Cell:
    """Per seed: max - min over the scales of the final test accuracy (a seed with a missing run is
    missing)."""
    values, missing = [], 0
    for seed in ctx.seeds:
        accs = [accuracy(ctx, kind, s, seed) for s in ctx.params["scales"]]
        if any(a is None for a in accs):
            missing += 1
        else:
            values.append(max(accs) - min(accs))
    return Cell(f"{KINDS[kind]} spread across scales", tuple(values), 0, missing)


def check_sd1(ctx) -> Verdict:
    bn, none = spread_cell(ctx, "bn"), spread_cell(ctx, "none")
    outcome = compare(bn, "<=", none, factor=0.5)
    return Verdict.from_outcomes("SD-1", [outcome], [bn, none])


def accuracy_table(ctx) -> pd.DataFrame:
    """Seed-mean final test accuracy per scale (diverged runs as chance), and how many seeds diverged."""
    rows = []
    for kind, label in KINDS.items():
        for scale in ctx.params["scales"]:
            accs = [accuracy(ctx, kind, scale, seed) for seed in ctx.seeds]
            done = [a for a in accs if a is not None]
            diverged = ctx.runs.cell(f"{kind}_scale{format_value(scale)}").diverged
            rows.append({"norm": label, "init_scale": scale,
                         "test_acc": sum(done) / len(done) if done else None,
                         "spread_over_seeds": max(done) - min(done) if done else None, "diverged": diverged})
    return pd.DataFrame(rows)


def accuracy_figure(ctx):
    fig, axes = figure(width=4.6)
    ax = axes[0, 0]
    table = accuracy_table(ctx)
    for label, group in table.groupby("norm", sort=False):
        line, = ax.plot(group["init_scale"], group["test_acc"], marker="o", label=label)
        hit = group[group["diverged"] > 0]
        ax.scatter(hit["init_scale"], [ctx.params["chance"]] * len(hit), color=line.get_color(),
                   **DIVERGED_MARKER)
    ax.set(xscale="log", xlabel="init scale (x default init)", ylabel="final test accuracy (seed mean)",
           title="SD-1: accuracy vs init scale (x: a seed diverged)")
    ax.legend(fontsize=8)
    return fig
