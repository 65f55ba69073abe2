"""Wu & Johnson 2021, Sec 5 (Schneider et al. 2020): a BN model trained on clean images, on corrupted test
sets, with its source statistics and with statistics recomputed (PreciseBN) on K unlabeled corrupted test
images; GN and LN models beside it (WJ-4, docs/claims.md#wj-4)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from normexp.claims import Verdict, compare
from normexp.plots import figure

from .common import error, regime_beside, shifted_errors, wuhe, wuhe_context

MODELS = {"bn_n32": "BN", "gn_n32": "GN", "ln_n32": "LN"}  # Wu & He's N = 32 runs


def wj4_cells(ctx) -> list[dict]:
    """Wu & He's BN, GN and LN models at N = 32, at their design (the same runs)."""
    return [wuhe.cell(wuhe_context(ctx), norm, 32) for norm in ("bn", "gn", "ln")]


def _targets(ctx) -> tuple[int, ...]:
    return tuple(int(k) for k in ctx.params["target_images"][ctx.profile])


def _errors(ctx, row, corruption: str) -> dict:
    return shifted_errors(str(row["run_dir"]), corruption, _targets(ctx), int(ctx.params["recompute_batch"]))


def _gain(ctx, row) -> float:
    """Source minus recomputed error (points), averaged over the judged corruptions."""
    k = max(_targets(ctx))
    gains = [(e := _errors(ctx, row, c))["source"] - e.get(k, math.nan) for c in ctx.params["judged"]]
    return float(np.mean(gains))


def check_wj4(ctx) -> Verdict:
    """The mean gain over noise, blur and translation with statistics recomputed on 2,048 target images is
    at least 2 points, beyond the spread."""
    k = max(_targets(ctx))
    gain = ctx.runs.cell("bn_n32", lambda row: _gain(ctx, row),
                         f"BN: source minus recomputed ({k} images) error, mean over "
                         + ", ".join(ctx.params["judged"]))
    outcome = compare(gain, ">=", 2.0, fmt="{:.2f}")
    parts = []
    for c in ctx.params["judged"]:
        source = ctx.runs.cell("bn_n32", lambda row, c=c: _errors(ctx, row, c)["source"])
        after = ctx.runs.cell("bn_n32", lambda row, c=c: _errors(ctx, row, c).get(k, math.nan))
        if source.values and after.values:
            parts.append(f"{c} {source.mean:.1f} -> {after.mean:.1f}")
    sentence = (f"BN test error (%), source -> recomputed on {k} corrupted images: " + ", ".join(parts)
                + (f"; mean gain {gain.mean:.2f} points" if gain.values else ""))
    return regime_beside(ctx, Verdict.from_outcomes("WJ-4", [outcome], [gain], sentence), ["bn_n32"])


def _table_rows(ctx) -> list[dict]:
    rows = []
    for cell, label in MODELS.items():
        if not ctx.runs.has(cell):
            continue
        clean = ctx.runs.cell(cell, lambda row: error(row.get("test_acc")))
        for c in ctx.params["corruptions"][ctx.profile]:
            row = {"model": label, "corruption": c, "clean test error %": round(clean.mean, 2)
                   if clean.values else clean.state}
            for key in ("source", *_targets(ctx)):
                if key != "source" and label != "BN":
                    continue
                v = ctx.runs.cell(cell, lambda r, c=c, key=key: _errors(ctx, r, c).get(key, math.nan))
                column = "source statistics" if key == "source" else f"recomputed on {key}"
                row[f"{column} %"] = round(v.mean, 2) if v.values else v.state
            rows.append(row)
    return rows


def errors_by_corruption(ctx) -> pd.DataFrame:
    """Per model and corruption: the clean test error, the corrupted one with the source statistics and (BN)
    with statistics recomputed on K corrupted test images (seed means, %)."""
    rows = _table_rows(ctx)
    return pd.DataFrame(rows) if rows else pd.DataFrame([{"note": "no finished N = 32 run"}])


def recalibration_gain(ctx):
    """Per corruption: BN's error with source and recomputed statistics (each K), GN's and LN's."""
    table = errors_by_corruption(ctx)
    fig, axes = figure(1, 1, width=6.4)
    ax = axes[0, 0]
    if "corruption" not in table:
        return fig
    corruptions = list(dict.fromkeys(table["corruption"]))
    bars = [("BN", "source statistics %", "BN, source statistics")]
    bars += [("BN", f"recomputed on {k} %", f"BN, recomputed on {k}") for k in _targets(ctx)]
    bars += [("GN", "source statistics %", "GN"), ("LN", "source statistics %", "LN")]
    width = 0.8 / len(bars)
    for i, (model, column, label) in enumerate(bars):
        rows = table[table["model"] == model].set_index("corruption")
        if column not in rows:
            continue
        values = [pd.to_numeric(rows[column], errors="coerce").get(c, np.nan) for c in corruptions]
        ax.bar(np.arange(len(corruptions)) + i * width, values, width, label=label)
    ax.set_xticks(np.arange(len(corruptions)) + 0.4 - width / 2, corruptions, fontsize=8)
    ax.set(ylabel="test error (%)", title="corrupted test sets: recomputing BN's statistics")
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig
