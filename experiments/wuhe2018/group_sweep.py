"""Wu & He 2018, Table 3: the group count of GN from LN (G = 1) to IN (G = C), and channels per group.
Claim WH-3 (docs/claims.md), the table with the paper's numbers beside ours, and its plot."""

from __future__ import annotations

import pandas as pd

from normexp.claims import Outcome, Verdict, compare
from normexp.claims.regime import gate
from normexp.plots import figure

from .common import PAPER_BY_GROUPS, PAPER_BY_NORM, cell, error_cell, fmt, regime, with_sweep_cells


def group_name(ctx, g) -> str:
    """G = 1 is the LN cell, G = C the IN cell, GN's own G (params.gn_groups) the GN cell of the others."""
    return {1: "ln_n32", "C": "in_n32", ctx.params["gn_groups"][ctx.profile]: "gn_n32"}.get(g, f"g{g}_n32")


def group_cells(ctx) -> list[dict]:
    """One cell per G (G = 1: LN, G = C: IN, G = 4: the shared GN cell) and per fixed channels per group."""
    cells = []
    for g in ctx.params["groups"][ctx.profile]:
        norm = {1: "ln", "C": "in"}.get(g, "gn")
        cells.append(cell(ctx, norm, 32, (f"norm.groups={g}",) if norm == "gn" else (), group_name(ctx, g)))
    for k in ctx.params["channels_per_group"][ctx.profile]:
        cells.append(cell(ctx, "gn", 32, ("norm.groups=null", f"norm.channels_per_group={k}"),
                          name=f"cpg{k}_n32"))
    return with_sweep_cells(ctx, cells)


def _label(g) -> str:
    return {1: "G = 1 (LN)", "C": "G = C (IN)"}.get(g, f"G = {g}")


def check_wh3(ctx) -> Verdict:
    """IN (G = C) has the highest error, and the lowest error is at some G with 1 < G < C."""
    groups = ctx.params["groups"][ctx.profile]
    e = {g: error_cell(ctx.runs, group_name(ctx, g), f"{_label(g)} error %") for g in groups}
    outcomes = [compare(e["C"], ">", e[g], fmt="{:.2f}") for g in groups if g != "C"]
    middle = [g for g in groups if g not in (1, "C") and e[g].values]
    if middle:
        best = min(middle, key=lambda g: e[g].mean)
        outcomes += [compare(e[best], "<", e[1], fmt="{:.2f}"), compare(e[best], "<", e["C"], fmt="{:.2f}")]
    else:
        outcomes.append(Outcome("inconclusive", "no G with 1 < G < C has a number: runs are missing",
                                missing=True))
    num = lambda c: f"{c.mean:.2f}" if c.values else c.state
    sentence = "error by G: " + ", ".join(f"{g} {num(e[g])}" for g in groups) + " %"
    verdict = Verdict.from_outcomes("WH-3", outcomes, list(e.values()), sentence)
    return gate(verdict, regime(ctx, [group_name(ctx, g) for g in groups]))


def table3_error_by_groups(ctx) -> pd.DataFrame:
    """Table 3's layout: error (%) by G, then by channels per group; ours and the paper's."""
    rows = []
    for g in ctx.params["groups"][ctx.profile]:
        c = error_cell(ctx.runs, group_name(ctx, g))
        paper = PAPER_BY_NORM["IN"] if g == "C" else PAPER_BY_GROUPS.get(g)
        rows.append({"setting": _label(g), "ours": fmt(c.mean) if c.values else c.state,
                     "ours spread": fmt(c.spread) if c.values else "", "paper (ImageNet)": paper})
    for k in ctx.params["channels_per_group"][ctx.profile]:
        c = error_cell(ctx.runs, f"cpg{k}_n32")
        rows.append({"setting": f"{k} channels per group", "ours": fmt(c.mean) if c.values else c.state,
                     "ours spread": fmt(c.spread) if c.values else "", "paper (ImageNet)": None})
    return pd.DataFrame(rows)


def error_by_groups_plot(ctx):
    """Error (%) by G (seed mean, min-max bar), G = 1 (LN) left to G = C (IN) right."""
    fig, axes = figure()
    ax = axes[0, 0]
    groups = ctx.params["groups"][ctx.profile]
    cells = [error_cell(ctx.runs, group_name(ctx, g)) for g in groups]
    xs = range(len(groups))
    means = [c.mean if c.values else float("nan") for c in cells]
    low = [c.mean - min(c.values) if c.values else 0 for c in cells]
    high = [max(c.values) - c.mean if c.values else 0 for c in cells]
    ax.errorbar(xs, means, yerr=[low, high], marker="o", capsize=3)
    ax.set_xticks(list(xs), [_label(g).replace(" (", "\n(") for g in groups], fontsize=7)
    ax.set(xlabel="groups", ylabel="test error (%)", title="Table 3: error by group count, N = 32")
    return fig
