"""Wu & Johnson 2021, Fig 2-3: the test error with the EMA population statistics and with PreciseBN, every
5% of a large-batch run (WJ-1, docs/claims.md#wj-1); and, reported without a verdict, PreciseBN's error by the
number of images and the batch it recomputes with, beside torch's ``update_bn``."""

from __future__ import annotations

import math
from functools import lru_cache

import pandas as pd
import torch

from normexp.claims import Verdict, compare
from normexp.landscape.run import load_run
from normexp.norms import recompute_running_stats, statistics_layers
from normexp.plots import figure, seed_band

from .common import bn_cell, error, error_on_test_set, modes_overrides, one_slice_copy, regime_beside, wuhe

CELL = "bn_b64_sgd1024"


def wj1_cells(ctx) -> list[dict]:
    p = ctx.params
    extra = (*modes_overrides(ctx, ("running", "precise")), f"schedule.warmup_steps={p['warmup']}")
    return [bn_cell(ctx, int(p["norm_batch"]), int(p["sgd_batch"][ctx.profile]), extra, CELL)]


def _window_curve(ctx, seed: int) -> pd.DataFrame:
    """The seed's evaluations inside the claim's window (after the warm-up, before 80% of the run)."""
    curve = ctx.runs.curve(CELL, seed, "test")
    if curve.empty or "acc_precise" not in curve:
        return curve.iloc[0:0]
    low, high = (float(x) for x in ctx.params["window"])
    total = ctx.runs.final_steps()
    return curve[(curve["step"] > low * total) & (curve["step"] < high * total)]


def _gap(ctx, row) -> float:
    """EMA's error minus PreciseBN's (points), averaged over the window's evaluations."""
    curve = _window_curve(ctx, int(row["seed"]))
    return float((100.0 * (curve["acc_precise"] - curve["acc"])).mean()) if len(curve) else math.nan


def check_wj1(ctx) -> Verdict:
    """The window's mean of EMA's error minus PreciseBN's is positive beyond its seed spread."""
    gap = ctx.runs.cell(CELL, lambda row: _gap(ctx, row), "EMA minus PreciseBN error, window mean (points)")
    final = ctx.runs.cell(CELL, lambda row: error(row.get("test_acc")) - error(row.get("test_acc_precise")),
                          "EMA minus PreciseBN error at the end (points)")
    outcome = compare(gap, ">", 0.0, fmt="{:.2f}")
    num = lambda c: f"{c.mean:.2f} (spread {c.spread:.2f})" if c.values else c.state
    sentence = (f"EMA minus PreciseBN test error over the evaluations at 5-80% of the run: {num(gap)} "
                f"points; at the end {num(final)}")
    return regime_beside(ctx, Verdict.from_outcomes("WJ-1", [outcome], [gap, final], sentence), [CELL])


def ema_vs_precise_by_eval(ctx) -> pd.DataFrame:
    """Per evaluation step: the test error (%) with EMA and with PreciseBN (seed mean), their difference."""
    c = ctx.runs.curves
    if c.empty or "acc_precise" not in c:
        return pd.DataFrame([{"note": "no PreciseBN evaluations recorded"}])
    c = c[(c["cell"] == CELL) & (c["split"] == "test")].dropna(subset=["acc_precise"])
    table = c.groupby("step")[["acc", "acc_precise"]].mean()
    out = pd.DataFrame({"step": table.index, "EMA error %": (100 * (1 - table["acc"])).round(2),
                        "PreciseBN error %": (100 * (1 - table["acc_precise"])).round(2)})
    out["EMA minus PreciseBN"] = (out["EMA error %"] - out["PreciseBN error %"]).round(2)
    return out.reset_index(drop=True)


def fig2_ema_vs_precise(ctx):
    """Fig 2-3: test error over training with EMA and with PreciseBN statistics (seed mean, min-max band)."""
    fig, axes = figure(1, 1, width=5.2)
    ax = axes[0, 0]
    curves = ctx.runs.curves
    if len(curves) and "acc_precise" in curves:
        ctx.runs.curves = curves.assign(err=100 * (1 - curves["acc"]),
                                        err_precise=100 * (1 - curves["acc_precise"]))
        seed_band(ax, ctx.runs, CELL, "err", label="EMA statistics")
        seed_band(ax, ctx.runs, CELL, "err_precise", label="PreciseBN")
        ctx.runs.curves = curves
    low, high = (float(x) for x in ctx.params["window"])
    total = ctx.runs.final_steps()
    ax.axvspan(low * total, high * total, color="0.9", zorder=0, label="WJ-1's window")
    ax.set(xlabel="training steps", ylabel="test error (%)",
           title=f"SGD batch {ctx.params['sgd_batch'][ctx.profile]}, B = {ctx.params['norm_batch']}")
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


# ---------------------------------------------------------------- report: PreciseBN by images and batch

@lru_cache(maxsize=64)
def _precise_by_samples(run_dir: str, counts: tuple[int, ...], batches: tuple[int, ...]) -> list[dict]:
    run = load_run(run_dir)

    def recomputed(images: int, batch: int, how: str) -> float:
        model = one_slice_copy(run.model)
        batches_ = [x for x, _ in run.data.clean_train_batches(images, batch)]
        if how == "update_bn":
            torch.optim.swa_utils.update_bn(batches_, model)
        else:
            recompute_running_stats(model, batches_, statistics_layers(model), "precise")
        return error_on_test_set(run, model)

    rows = [{"statistics": "EMA (as trained)", "images": None, "batch": None,
             "test error %": error_on_test_set(run, run.model)}]
    rows += [{"statistics": "PreciseBN", "images": k, "batch": b, "test error %": recomputed(k, b, "precise")}
             for b in batches for k in counts]
    rows += [{"statistics": "torch update_bn", "images": k, "batch": max(batches),
              "test error %": recomputed(k, max(batches), "update_bn")} for k in counts]
    return rows


def precise_by_samples(ctx) -> pd.DataFrame:
    """Seed 0's final model (the run keeps no mid-run weights): the test error with EMA statistics, with
    PreciseBN recomputed on K clean training images in batches of 2 and 32 (each batch one normalization
    batch), and with ``torch.optim.swa_utils.update_bn`` (which averages batch variances) on the same
    images."""
    dirs = wuhe.completed_run_dirs(ctx.runs, CELL)
    if not dirs:
        return pd.DataFrame([{"note": f"no finished {CELL} run with model.pt"}])
    p = ctx.params
    counts = tuple(int(k) for k in p["sample_counts"][ctx.profile])
    rows = _precise_by_samples(dirs[0], counts, tuple(int(b) for b in p["recompute_batches"]))
    return pd.DataFrame(rows).round({"test error %": 2})
