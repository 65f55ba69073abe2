"""Fig 4: the loss landscape along the gradient, Standard vs BN at the same lr (ST-4, docs/claims.md#st-4):
the range of the loss, the gradient predictiveness (range of the gradient change) and the effective
beta-smoothness over training, on the VGG-like net (0.5..4 x lr) and the DLN (0.01..30 x lr, log-spaced)."""

from __future__ import annotations

import pandas as pd

from normexp.claims import Verdict, compare, probe_median
from normexp.plots import figure

from .fig3_ics import ics_cos
from .vgg_dln import LABEL, band, dln, range_band, vgg

MEASURES = {"loss_band": "loss-band width", "grad_change_max": "max gradient change",
            "beta": "effective beta"}
TITLES = ("loss landscape", "gradient predictiveness", "effective beta-smoothness")


def landscape_median(runs, cell: str, column: str, label: str):
    """Per seed: the median over probe calls of one landscape measure."""
    return probe_median(runs, cell, "landscape", column, f"{label} median {MEASURES[column]}")


def check_st4(ctx) -> Verdict:
    runs = ctx.runs
    outcomes, cells, parts = [], [], []
    for column in MEASURES:
        bn = landscape_median(runs, vgg("bn"), column, "BN")
        std = landscape_median(runs, vgg("std"), column, "Standard")
        outcomes.append(compare(bn, "<=", std, factor=0.5))
        cells += [bn, std]
        ratio = f"{std.mean / bn.mean:.3g}x" if bn.values and std.values and bn.mean else "n/a"
        parts.append(f"{MEASURES[column]} Standard/BN {ratio}")
    return Verdict.from_outcomes("ST-4", outcomes, cells, "VGG lr 0.1, medians over probe calls: "
                                 + ", ".join(parts) + " (pass: each >= 2x)")


def fig4_landscape(ctx):
    """One row per net: loss range along the gradient, gradient-change range, effective beta (log axes)."""
    runs = ctx.runs
    rows = [("VGG, lr 0.1", {k: vgg(k) for k in ("std", "bn")}),
            ("DLN, lr 1e-6", {k: dln(k) for k in ("std", "bn")})]
    fig, axes = figure(len(rows), 3, width=3.8, height=2.8)
    for r, (title, cells) in enumerate(rows):
        for kind, cell in cells.items():
            range_band(axes[r, 0], runs, cell, "loss_min", "loss_max", kind, "landscape")
            range_band(axes[r, 1], runs, cell, "grad_change_min", "grad_change_max", kind, "landscape")
            band(axes[r, 2], runs, cell, "beta", kind, split="probe", probe="landscape")
        for ax, what in zip(axes[r], TITLES, strict=True):
            ax.set(xlabel="steps", yscale="log", title=f"{title}: {what}")
        axes[r, 0].set_ylabel("loss along the gradient")
        axes[r, 1].set_ylabel("||grad L(w - eta g) - g||")
        axes[r, 2].set_ylabel("max ||grad change|| / ||eta g||")
        axes[r, 0].legend(fontsize=6)
    fig.tight_layout()
    return fig


def probe_median_table(ctx) -> pd.DataFrame:
    """Per cell with probes: the per-seed medians the checks compare (landscape measures, ICS cos), seed
    mean and spread."""
    runs, rows = ctx.runs, []
    for cell in runs.table["cell"].drop_duplicates():
        kind = cell.removeprefix("dln_").rsplit("_lr", 1)[0]
        measured = [landscape_median(runs, cell, c, LABEL.get(kind, kind)) for c in MEASURES]
        measured.append(ics_cos(runs, cell, LABEL.get(kind, kind)))
        entry = {"cell": cell}
        for column, m in zip([*MEASURES, "ics_cos"], measured, strict=True):
            entry[column] = m.mean if m.values else None
            entry[f"{column}_spread"] = m.spread if m.values else None
        if any(entry[c] is not None for c in [*MEASURES, "ics_cos"]):
            rows.append(entry)
    return pd.DataFrame(rows)
