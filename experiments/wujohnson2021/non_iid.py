"""Wu & Johnson 2021, Sec 6: class-grouped vs i.i.d. batches, plain BN vs GN at SGD batch 64 (WJ-5,
docs/claims.md#wj-5). BN is evaluated with PreciseBN recomputed on i.i.d. clean training batches."""

from __future__ import annotations

import pandas as pd

from normexp.claims import Verdict, compare, paired_difference

from .common import bn_cell, error, modes_overrides, norm_cell, regime_beside

CELLS = {"bn_iid": "BN, i.i.d.", "bn_grouped": "BN, class-grouped", "gn_iid": "GN, i.i.d.",
         "gn_grouped": "GN, class-grouped"}


def wj5_cells(ctx) -> list[dict]:
    p = ctx.params
    batch = int(p["sgd_batch"])
    grouped = ("data.sampler=class_grouped", f"data.classes_per_batch={p['classes_per_batch']}")
    precise = modes_overrides(ctx, ("running", "precise"))
    iid = [bn_cell(ctx, batch, batch, precise, "bn_iid"), norm_cell(ctx, "gn", batch, name="gn_iid")]
    if "data=imagenet" in ctx.params["resnet"][ctx.profile]:  # an image folder streams: no class-grouped draw
        ctx.notices.append("WJ-5: class-grouped batches need the data in memory (not an image folder): "
                           "only the i.i.d. cells are planned at this profile")
        return iid
    return [*iid, bn_cell(ctx, batch, batch, (*precise, *grouped), "bn_grouped"),
            norm_cell(ctx, "gn", batch, grouped, "gn_grouped")]


def _error(ctx, row) -> float:
    """Test error (%): BN with PreciseBN (i.i.d. clean training batches of the SGD batch), GN as trained."""
    return error(row.get("test_acc_precise" if str(row["cell"]).startswith("bn") else "test_acc"))


def check_wj5(ctx) -> Verdict:
    """BN's rise from i.i.d. to class-grouped batches (paired by seed) exceeds GN's, beyond the spread."""
    value = lambda row: _error(ctx, row)
    bn = paired_difference(ctx.runs, "bn_grouped", "bn_iid", "BN: class-grouped minus i.i.d. error", value)
    gn = paired_difference(ctx.runs, "gn_grouped", "gn_iid", "GN: class-grouped minus i.i.d. error", value)
    outcome = compare(bn, ">", gn, fmt="{:.2f}")
    num = lambda c: f"{c.mean:.2f}" if c.values else c.state
    sentence = f"test error rise from i.i.d. to class-grouped batches: BN {num(bn)} vs GN {num(gn)} points"
    return regime_beside(ctx, Verdict.from_outcomes("WJ-5", [outcome], [bn, gn], sentence), list(CELLS))


def errors_by_sampler(ctx) -> pd.DataFrame:
    """Per cell: the test error (%) as WJ-5 reads it (BN: PreciseBN), BN's EMA error beside it."""
    rows = []
    for cell, label in CELLS.items():
        c = ctx.runs.cell(cell, lambda row: _error(ctx, row))
        ema = ctx.runs.cell(cell, lambda row: error(row.get("test_acc")))
        rows.append({"cell": label, "test error % (BN: PreciseBN)": round(c.mean, 2) if c.values else c.state,
                     "spread": round(c.spread, 2) if c.values else None,
                     "test error %, running statistics": round(ema.mean, 2) if ema.values else ema.state})
    return pd.DataFrame(rows)
