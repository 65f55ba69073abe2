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

NORMS = ("bn", "brn", "gn")  # GN beside the two WH-5 compares, at the profiles that train it (renorm.yaml)


def renorm_cells(ctx) -> list[dict]:
    return with_sweep_cells(ctx, [cell(ctx, norm, 4) for norm in ctx.params["renorm_norms"][ctx.profile]])


def trained(ctx) -> list[str]:
    """The norms this profile trained at N = 4 (BN and BRN always; GN where it is planned), in NORMS order."""
    return [n for n in NORMS if n != "gn" or ctx.runs.has("gn_n4")]


def check_wh5(ctx) -> Verdict:
    """error(BRN) < error(BN) at N = 4."""
    cells = {n: error_cell(ctx.runs, f"{n}_n4", f"{LABELS[n]} error % at N=4") for n in trained(ctx)}
    num = lambda c: f"{c.mean:.2f}" if c.values else c.state
    shown = [n for n in ("brn", "bn", "gn") if n in cells]
    sentence = "error at N=4: " + ", ".join(f"{LABELS[n]} {num(cells[n])}" for n in shown) + " %"
    verdict = Verdict.from_outcomes("WH-5", [compare(cells["brn"], "<", cells["bn"], fmt="{:.2f}")],
                                    [cells[n] for n in shown], sentence)
    return gate(verdict, regime(ctx, [f"{n}_n4" for n in cells]))


def by_cell(ctx) -> dict[str, str]:
    return {f"{n}_n4": LABELS[n] for n in trained(ctx)}


def renorm_error(ctx) -> pd.DataFrame:
    return method_table(ctx.runs, by_cell(ctx), PAPER_RENORM)


def renorm_error_curves(ctx):
    fig, axes = figure()
    error_curves(axes[0, 0], ctx.runs, by_cell(ctx))
    axes[0, 0].set_title("validation error at N = 4", fontsize=9)
    return fig
