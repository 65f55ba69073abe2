"""Wu & He 2018, Batch Renorm at N = 4: claim WH-5 (docs/claims.md), its table and error curves."""

from __future__ import annotations

import pandas as pd

from normexp.claims import Verdict, compare
from normexp.claims.regime import gate
from normexp.plots import figure

from .common import (
    LABELS,
    PAPER_RENORM,
    cell,
    error_cell,
    error_curves,
    method_table,
    regime,
    with_sweep_cells,
)

NORMS = ("bn", "brn", "gn")


def renorm_cells(ctx) -> list[dict]:
    return with_sweep_cells(ctx, [cell(ctx, norm, 4) for norm in NORMS], extra_sizes=(4,))


def check_wh5(ctx) -> Verdict:
    """error(BRN) < error(BN) at N = 4."""
    brn, bn = (error_cell(ctx.runs, f"{n}_n4", f"{LABELS[n]} error % at N=4") for n in ("brn", "bn"))
    gn = error_cell(ctx.runs, "gn_n4", "GN error % at N=4")
    num = lambda c: f"{c.mean:.2f}" if c.values else c.state
    sentence = f"error at N=4: BRN {num(brn)}, BN {num(bn)}, GN {num(gn)} %"
    verdict = Verdict.from_outcomes("WH-5", [compare(brn, "<", bn, fmt="{:.2f}")], [brn, bn, gn], sentence)
    return gate(verdict, regime(ctx, [f"{n}_n4" for n in NORMS]))


def renorm_error(ctx) -> pd.DataFrame:
    return method_table(ctx.runs, {f"{n}_n4": LABELS[n] for n in NORMS}, PAPER_RENORM)


def renorm_error_curves(ctx):
    fig, axes = figure()
    error_curves(axes[0, 0], ctx.runs, {f"{n}_n4": LABELS[n] for n in NORMS})
    axes[0, 0].set_title("validation error at N = 4", fontsize=9)
    return fig
