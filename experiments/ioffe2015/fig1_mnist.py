"""Ioffe & Szegedy 2015, Fig 1 (a-c): the MNIST sigmoid MLP without and with BN. Claims IS-1 and IS-2
(docs/claims.md), the IS-2 drift table, and the figures drawn like the paper's panels (seed mean line, min-max
band over seeds)."""

from __future__ import annotations

import math

import pandas as pd

from normexp.claims import (
    FAIL,
    INCONCLUSIVE,
    Cell,
    Outcome,
    Verdict,
    compare,
    percentile_columns,
    percentile_drift,
    percentile_net_displacement,
    steps_to_target,
    value_at,
)
from normexp.plots import figure, note_diverged, seed_band

NORM_LABEL = {"nobn": "Without BN", "bn": "With BN"}
PERCENTILE_STYLE = {15: ":", 50: "-", 85: "--"}


def check_is1(ctx) -> Verdict:
    """BN's test accuracy at 20% of the run is at least no-BN's, and BN reaches no-BN's final test accuracy
    in at most half the steps."""
    runs = ctx.runs
    steps = runs.final_steps()
    at = int(round(0.2 * steps))
    acc_at = lambda row: value_at(runs.curve(row["cell"], row["seed"]), at)
    bn20, nobn20 = runs.cell("bn", acc_at, f"BN acc@{at}"), runs.cell("nobn", acc_at, f"no-BN acc@{at}")
    nobn_final = runs.cell("nobn", "test_acc", "no-BN final acc")
    outcomes = [compare(bn20, ">=", nobn20)]
    cells = [bn20, nobn20, nobn_final]
    if nobn_final.state == "trained":
        target = nobn_final.mean
        bn_steps, never = steps_to_target(runs, "bn", target, f"BN steps to {target:.4f}")
        cells.append(bn_steps)
        if never and not bn_steps.values:
            outcomes.append(Outcome(FAIL, f"BN never reached no-BN's final accuracy {target:.4f}"))
        elif never:
            outcomes.append(Outcome(INCONCLUSIVE, f"{never} BN seed(s) never reached {target:.4f}"))
        else:
            outcomes.append(compare(bn_steps, "<=", steps / 2, fmt="{:.0f}"))
    else:
        outcomes.append(Outcome(INCONCLUSIVE, f"{nobn_final.describe()}: no target for BN to reach",
                                missing=nobn_final.state == "missing"))
    acc = lambda c: f"{c.mean:.3f}" if c.values else c.state
    reached = (f"BN reached no-BN's final {nobn_final.mean:.3f} at step {_mean_text(cells[-1])} of {steps}"
               if nobn_final.state == "trained" else f"no-BN final: {nobn_final.state}")
    sentence = f"acc at step {at}: BN {acc(bn20)} vs no-BN {acc(nobn20)}; {reached}"
    return Verdict.from_outcomes("IS-1", outcomes, cells, sentence)


def _mean_text(cell: Cell) -> str:
    return f"{cell.mean:.0f} (spread {cell.spread:.0f})" if cell.values else "never"


def _drift_of(runs):
    return lambda row: percentile_drift(runs.curve(row["cell"], row["seed"], split="probe",
                                                   probe="activations"))


def check_is2(ctx) -> Verdict:
    runs = ctx.runs
    bn, nobn = runs.cell("bn", _drift_of(runs), "BN drift"), runs.cell("nobn", _drift_of(runs), "no-BN drift")
    outcome = compare(bn, "<", nobn)
    sentence = (f"drift (percentile movement / final 15-85 band): BN {bn.mean:.3g} vs no-BN {nobn.mean:.3g}"
                if bn.values and nobn.values else outcome.text)
    return Verdict.from_outcomes("IS-2", [outcome], [bn, nobn], sentence)


def drift_table(ctx) -> pd.DataFrame:
    """Per run: the drift of each probed unit and their mean (the IS-2 number)."""
    rows = []
    for _, row in ctx.runs.table.iterrows():
        curve = ctx.runs.curve(row["cell"], row["seed"], split="probe", probe="activations")
        entry = {"cell": row["cell"], "seed": row["seed"], "status": row["status"]}
        for (block, unit), cols in sorted(percentile_columns(curve).items()):
            entry[f"{block}/u{unit}"] = percentile_drift(curve[["step", *cols.values()]])
        entry["drift"] = percentile_drift(curve) if len(curve) else None
        rows.append(entry)
    return pd.DataFrame(rows)


NET_FROM = 0.1  # the net displacement is measured from the first probe at or after 10% of the run


def net_displacement_table(ctx) -> pd.DataFrame:
    """Diagnostic beside IS-2 (no verdict): per run and probed unit, the registered drift (every
    step-to-step movement / final 15-85 band) and each percentile's net displacement from 10% of the run to
    the end over the same band (normexp.claims.percentile_net_displacement), and their mean."""
    start, rows = int(round(NET_FROM * ctx.runs.final_steps())), []
    for _, row in ctx.runs.table.iterrows():
        curve = ctx.runs.curve(row["cell"], row["seed"], split="probe", probe="activations")
        if not len(curve):
            continue
        displaced = percentile_net_displacement(curve, start)
        for (block, unit), cols in sorted(percentile_columns(curve).items()):
            net = displaced.get((block, unit), {})
            entry = {"cell": row["cell"], "seed": row["seed"], "unit": f"{block}/u{unit}",
                     "drift": percentile_drift(curve[["step", *cols.values()]])}
            entry.update({f"net_p{q:g}": v for q, v in sorted(net.items())})
            entry["net_mean"] = sum(net.values()) / len(net) if net else None
            rows.append(entry)
    return pd.DataFrame(rows)


# ---------------------------------------------------------------- figures

def fig1a_test_accuracy(ctx):
    """Fig 1a: test accuracy vs training steps, without and with BN."""
    fig, axes = figure()
    ax = axes[0, 0]
    for cell, color in (("nobn", "tab:blue"), ("bn", "tab:orange")):
        seed_band(ax, ctx.runs, cell, "acc", label=NORM_LABEL[cell], color=color)
    ax.set(xlabel="training steps", ylabel="test accuracy", title="(a) MNIST MLP, test accuracy")
    tests = ctx.runs.curves.query("split == 'test' and step > 0") if len(ctx.runs.curves) else None
    low = float(tests["acc"].quantile(0.05)) if tests is not None and len(tests) else 0.0
    ax.set_ylim(max(0.0, min(0.7, low if math.isfinite(low) else 0.0)), 1.0)
    ax.legend(loc="lower right", fontsize=8)
    note_diverged(ax, ctx.runs)
    return fig


def fig1bc_sigmoid_inputs(ctx):
    """Fig 1b,c: 15/50/85 percentiles of the sigmoid input of fixed last-hidden-layer units over training;
    one row per probed unit, without BN (left) and with BN (right)."""
    runs = ctx.runs
    probe = runs.curves[(runs.curves["split"] == "probe")] if len(runs.curves) else runs.curves
    units = sorted(percentile_columns(probe)) if len(probe) else []
    fig, axes = figure(max(len(units), 1), 2, width=4.0, height=2.6)
    for r, unit in enumerate(units):
        cols = percentile_columns(probe)[unit]
        for c, cell in enumerate(("nobn", "bn")):
            ax = axes[r, c]
            for q, col in sorted(cols.items()):
                seed_band(ax, runs, cell, col, split="probe", probe="activations", color="k",
                          linestyle=PERCENTILE_STYLE.get(int(q), "-"), label=f"p{q:g}")
            ax.set_title(f"({'bc'[c]}) {NORM_LABEL[cell]}, layer {unit[0]} unit {unit[1]}", fontsize=9)
            if r == len(units) - 1:
                ax.set_xlabel("training steps")
            if c == 0:
                ax.set_ylabel("sigmoid input")
            if r == 0 and c == 0:
                ax.legend(fontsize=7)
    if not units:
        axes[0, 0].text(0.5, 0.5, "no activation probe records", ha="center", transform=axes[0, 0].transAxes)
    fig.tight_layout()
    return fig
