"""Wu & Johnson 2021, Fig 5-6 and Table 3: the normalization batch B at SGD batch 256 (WJ-2,
docs/claims.md#wj-2), and FrozenBN for the last 20% of training at B = 2 (WJ-3, #wj-3). The errors come from
each run's final model: training error with batch statistics of size B (the fixed clean training set), test
error with batch statistics of size B, test error with PreciseBN."""

from __future__ import annotations

import numpy as np
import pandas as pd

from normexp.claims import Verdict, compare
from normexp.plots import figure

from .common import bn_cell, error, modes_overrides, regime_beside

MODES = ("running", "precise", "batch")
FROZEN = "bn_b2_frozen"
MEASURES = {  # label -> the run's summary key (normexp/evaluation.py's modes)
    "training error, batch statistics": "train_clean_acc_batch",
    "test error, batch statistics": "test_acc_batch",
    "test error, PreciseBN": "test_acc_precise",
}


def norm_batches(ctx) -> list[int]:
    return [int(b) for b in ctx.params["norm_batches"][ctx.profile]]


def name(b: int) -> str:
    return f"bn_b{b}"


def wj2_cells(ctx) -> list[dict]:
    sgd, modes = int(ctx.params["sgd_batch"]), modes_overrides(ctx, MODES)
    cells = [bn_cell(ctx, b, sgd, modes, name(b)) for b in norm_batches(ctx)]
    frozen = (*modes, f"train.freeze_bn_at={ctx.params['freeze_at']}")
    return [*cells, bn_cell(ctx, 2, sgd, frozen, FROZEN)]


def _per_seed(ctx, cell: str, label: str, value) -> object:
    """Per seed, ``value`` of the run's summary row (a function of a key -> error (%) lookup)."""
    return ctx.runs.cell(cell, lambda row: value(lambda key: error(row.get(key))), label)


def check_wj2(ctx) -> Verdict:
    """(a) at B = 2, PreciseBN's test error minus batch statistics' is >= 1 point, beyond the spread; (b)
    the generalization gap with batch statistics (test minus training error) is larger at B = 256 than at
    B = 2."""
    small, large = name(min(norm_batches(ctx))), name(max(norm_batches(ctx)))
    inconsistency = _per_seed(ctx, small, f"B={small[4:]}: PreciseBN minus batch-statistics test error",
                              lambda e: e("test_acc_precise") - e("test_acc_batch"))

    def gap(cell: str):
        return _per_seed(ctx, cell, f"B={cell[4:]}: generalization gap (batch statistics, test - train)",
                         lambda e: e("test_acc_batch") - e("train_clean_acc_batch"))

    gap_small, gap_large = gap(small), gap(large)
    outcomes = [compare(inconsistency, ">=", 1.0, fmt="{:.2f}"),
                compare(gap_large, ">", gap_small, fmt="{:.2f}")]
    num = lambda c: f"{c.mean:.2f}" if c.values else c.state
    sentence = (f"B={small[4:]}: PreciseBN minus batch-statistics test error {num(inconsistency)} points; "
                f"generalization gap B={large[4:]} {num(gap_large)} vs B={small[4:]} {num(gap_small)} points")
    verdict = Verdict.from_outcomes("WJ-2", outcomes, [inconsistency, gap_small, gap_large], sentence)
    cells = [name(b) for b in norm_batches(ctx)]
    return regime_beside(ctx, verdict, [small, large], [cells])


def check_wj3(ctx) -> Verdict:
    """FrozenBN's test error (its frozen statistics) is below the plain B = 2 run's PreciseBN error."""
    frozen = _per_seed(ctx, FROZEN, "B=2 FrozenBN (last 20%): test error", lambda e: e("test_acc"))
    plain = _per_seed(ctx, name(2), "B=2: test error, PreciseBN", lambda e: e("test_acc_precise"))
    outcome = compare(frozen, "<", plain, fmt="{:.2f}")
    num = lambda c: f"{c.mean:.2f}" if c.values else c.state
    sentence = f"B=2 test error: FrozenBN for the last 20% {num(frozen)} vs PreciseBN {num(plain)} %"
    verdict = Verdict.from_outcomes("WJ-3", [outcome], [frozen, plain], sentence)
    return regime_beside(ctx, verdict, [FROZEN, name(2)])


def errors_by_norm_batch(ctx) -> pd.DataFrame:
    """Per B: each measure's seed mean and spread (%), the running (EMA) test error, and FrozenBN at B = 2."""
    rows = []
    for cell, label in [*((name(b), str(b)) for b in norm_batches(ctx)), (FROZEN, "2, FrozenBN")]:
        row = {"B": label}
        for measure, key in {**MEASURES, "test error, EMA statistics": "test_acc"}.items():
            c = _per_seed(ctx, cell, measure, lambda e, k=key: e(k))
            row[measure] = round(c.mean, 2) if c.values else c.state
            row[f"{measure} spread"] = round(c.spread, 2) if c.values else None
        rows.append(row)
    return pd.DataFrame(rows)


def fig5_error_vs_norm_batch(ctx):
    """Fig 5-6: the three errors against B (seed mean, min-max band); FrozenBN at B = 2 as a point."""
    fig, axes = figure(1, 1, width=5.2)
    ax = axes[0, 0]
    bs = norm_batches(ctx)
    for measure, key in MEASURES.items():
        cells = [_per_seed(ctx, name(b), measure, lambda e, k=key: e(k)) for b in bs]
        mean = [c.mean if c.values else np.nan for c in cells]
        line = ax.plot(bs, mean, marker="o", label=measure)[0]
        ax.fill_between(bs, [min(c.values) if c.values else np.nan for c in cells],
                        [max(c.values) if c.values else np.nan for c in cells], alpha=0.2,
                        color=line.get_color())
    frozen = _per_seed(ctx, FROZEN, "FrozenBN", lambda e: e("test_acc"))
    if frozen.values:
        ax.scatter([2], [frozen.mean], marker="*", s=80, color="k", zorder=3,
                   label="test error, FrozenBN (B = 2)")
    ax.set_xscale("log", base=2)
    ax.set_xticks(bs, [str(b) for b in bs])
    ax.set(xlabel="normalization batch B (SGD batch 256)", ylabel="error (%)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig
