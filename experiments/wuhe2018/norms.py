"""Wu & He 2018, Table 1 and Fig 4: BN, LN, IN and GN at N = 32. Claim WH-2 (docs/claims.md), the table
with the paper's numbers beside ours, and the training and validation error curves."""

from __future__ import annotations

import pandas as pd

from normexp.claims import Verdict, compare
from normexp.claims.regime import gate
from normexp.plots import figure

from .common import (
    LABELS,
    PAPER_BY_NORM,
    cell,
    error_cell,
    error_curves,
    method_table,
    regime,
    with_sweep_cells,
)

NORMS = ("bn", "ln", "in", "gn")


def norm_cells(ctx) -> list[dict]:
    return with_sweep_cells(ctx, [cell(ctx, norm, 32) for norm in NORMS])


def check_wh2(ctx) -> Verdict:
    """error(IN) > error(LN) > error(GN), and error(GN) - error(BN) is at most 1.5 points."""
    e = {norm: error_cell(ctx.runs, f"{norm}_n32", f"{LABELS[norm]} error %") for norm in NORMS}
    outcomes = [compare(e["in"], ">", e["ln"], fmt="{:.2f}"), compare(e["ln"], ">", e["gn"], fmt="{:.2f}"),
                compare(e["gn"], "<=", e["bn"], offset=1.5, fmt="{:.2f}")]
    num = lambda c: f"{c.mean:.2f}" if c.values else c.state
    sentence = "error at N=32: " + ", ".join(f"{LABELS[n]} {num(e[n])}" for n in NORMS) + " %"
    verdict = Verdict.from_outcomes("WH-2", outcomes, list(e.values()), sentence)
    return gate(verdict, regime(ctx, [f"{norm}_n32" for norm in NORMS]))


def table1_error_by_norm(ctx) -> pd.DataFrame:
    """Table 1's layout: error (%) by normalization at N = 32, ours (seed mean and spread) and the paper's."""
    return method_table(ctx.runs, {f"{n}_n32": LABELS[n] for n in NORMS}, PAPER_BY_NORM)


def fig4_error_curves(ctx):
    """Fig 4: training (left) and validation (right) error over training, BN, LN, IN and GN at N = 32."""
    fig, axes = figure(1, 2)
    cells = {f"{norm}_n32": LABELS[norm] for norm in NORMS}
    error_curves(axes[0, 0], ctx.runs, cells, split="train")
    error_curves(axes[0, 1], ctx.runs, cells, split="test")
    axes[0, 0].set_title("Fig 4: training error, N = 32", fontsize=9)
    axes[0, 1].set_title("Fig 4: validation error, N = 32", fontsize=9)
    fig.tight_layout()
    return fig
