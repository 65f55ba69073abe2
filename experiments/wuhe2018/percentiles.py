"""Wu & He 2018, Fig 6: percentiles 1/20/80/99 of the last conv's pre-normalization output over training.
Claim WH-4 (docs/claims.md), the per-run spread table and the figure (one panel per normalization)."""

from __future__ import annotations

import pandas as pd

from normexp.claims import Verdict, compare, spread_ratio
from normexp.plots import figure, seed_band

CELLS = {"none": "no normalization", "bn": "BN", "gn": "GN"}
STYLE = {1: ":", 20: "--", 80: "--", 99: ":"}


def _ratio(runs):
    return lambda row: spread_ratio(runs.curve(row["cell"], row["seed"], split="probe", probe="activations"))


def check_wh4(ctx) -> Verdict:
    """The ratio of the final to the initial 1-99 spread is larger without normalization than with BN and
    than with GN."""
    r = {c: ctx.runs.cell(c, _ratio(ctx.runs), f"{label}: final / initial 1-99 spread")
         for c, label in CELLS.items()}
    outcomes = [compare(r["none"], ">", r[c], fmt="{:.3g}") for c in ("bn", "gn")]
    num = lambda c: f"{c.mean:.3g}" if c.values else c.state
    sentence = ("final / initial 1-99 spread of the last conv's output: no norm " + num(r["none"])
                + f", BN {num(r['bn'])}, GN {num(r['gn'])}")
    return Verdict.from_outcomes("WH-4", outcomes, list(r.values()), sentence)


def spread_table(ctx) -> pd.DataFrame:
    rows = []
    for _, row in ctx.runs.table.iterrows():
        rows.append({"cell": row["cell"], "seed": row["seed"], "status": row["status"],
                     "final / initial 1-99 spread": _ratio(ctx.runs)(row) if row["status"] == "completed"
                     else None})
    return pd.DataFrame(rows)


def fig6_percentiles(ctx):
    """Fig 6: the 1/20/80/99 percentiles over training steps (seed mean, min-max band), one panel each."""
    runs = ctx.runs
    probe = runs.curves[runs.curves["split"] == "probe"] if len(runs.curves) else runs.curves
    cols = sorted((c for c in probe.columns if "/all/p" in str(c)), key=lambda c: float(c.rsplit("p", 1)[1]))
    fig, axes = figure(1, 3, width=3.6)
    for ax, (cell, label) in zip(axes[0], CELLS.items(), strict=True):
        for col in cols:
            q = int(float(col.rsplit("p", 1)[1]))
            seed_band(ax, runs, cell, col, split="probe", probe="activations", color="k",
                      linestyle=STYLE.get(q, "-"), label=f"p{q}")
        ax.set(xlabel="training steps", title=f"Fig 6: {label}")
    axes[0, 0].set_ylabel("last conv output (pre-norm)")
    axes[0, 0].legend(fontsize=7)
    fig.tight_layout()
    return fig
