"""Fig 2 and Fig 8: noisy BN, whose activation moments keep shifting, trains like BN (ST-2,
docs/claims.md#st-2). The VGG-like net at lr 0.1: Standard, BN, noisy BN and Standard + the same noise."""

from __future__ import annotations

import pandas as pd

from normexp.claims import Verdict, compare, probe_median
from normexp.plots import figure, note_diverged

from .fig1_vgg import activation_panel, probed_blocks
from .vgg_dln import LABEL, band, vgg

KINDS = ("std", "bn", "noisy_bn", "std_noise")
BLOCK_DRIFT = r"(?!median/)[^/]+/{}_drift"  # every Block's drift, not the per-call median over Blocks


ST2_KINDS = ("std", "bn", "noisy_bn")
# the diagnostic's columns: key suffix of the moment_drift probe (pair: true) -> column
DIAGNOSTICS = {"": "drift_k", "_1": "drift_1", "_rel": "drift_rel_k", "_rel_1": "drift_rel_1"}


def drift(runs, kind: str, moment: str, suffix: str = ""):
    """Per seed: the median over probe calls and Blocks of the post-norm {mean, var} drift (``suffix``: the
    pair diagnostic's ``_1``, ``_rel``, ``_rel_1``)."""
    return probe_median(runs, vgg(kind), "moment_drift", BLOCK_DRIFT.format(moment) + suffix,
                        f"{LABEL[kind]} {moment} drift{suffix}")


def check_st2(ctx) -> Verdict:
    runs = ctx.runs
    noisy = runs.cell(vgg("noisy_bn"), "train_acc", "noisy BN final train acc")
    std = runs.cell(vgg("std"), "train_acc", "Standard final train acc")
    bn = runs.cell(vgg("bn"), "train_acc", "BN final train acc")
    noisy_mean, std_mean = drift(runs, "noisy_bn", "mean"), drift(runs, "std", "mean")
    noisy_var, std_var = drift(runs, "noisy_bn", "var"), drift(runs, "std", "var")
    outcomes = [compare(noisy, ">", std), compare(noisy, ">=", bn, offset=-0.03),
                compare(noisy_mean, ">", std_mean), compare(noisy_var, ">", std_var)]
    num = lambda c: f"{c.mean:.3g}" if c.values else c.state
    sentence = (f"final train acc: noisy BN {num(noisy)}, BN {num(bn)}, Standard {num(std)}; median moment "
                f"drift (mean / var): noisy BN {num(noisy_mean)} / {num(noisy_var)}, "
                f"Standard {num(std_mean)} / {num(std_var)}")
    return Verdict.from_outcomes("ST-2", outcomes, [noisy, bn, std, noisy_mean, std_mean, noisy_var, std_var],
                                 sentence)


def drift_diagnostics(ctx) -> pd.DataFrame:
    """Diagnostic beside ST-2 (no verdict): per ST-2 cell and moment, the registered drift over k steps (the
    number ST-2 compares), the drift over one step, and both relative to the moment's size (|change| over
    the mean |mu|, or mean var); each the per-seed median over calls and Blocks, seed mean and spread."""
    rows = []
    for kind in ST2_KINDS:
        every = ctx.runs.rows(vgg(kind)).get("probes.moment_drift.every")
        for moment in ("mean", "var"):
            entry = {"cell": vgg(kind), "moment": moment,
                     "k": int(every.max()) if every is not None and every.notna().any() else None}
            for suffix, column in DIAGNOSTICS.items():
                cell = drift(ctx.runs, kind, moment, suffix)
                entry["seeds"] = max(entry.get("seeds", 0), len(cell.values))
                entry[column] = cell.mean if cell.values else None
                entry[f"{column}_spread"] = cell.spread if cell.values else None
            rows.append(entry)
    return pd.DataFrame(rows)


def fig2_noisy_bn(ctx):
    """Fig 2: training accuracy of the four nets (left column), and one unit's input to the ReLU at three
    depths for each of them (percentile bands over training)."""
    runs = ctx.runs
    blocks = probed_blocks(runs)
    fig, axes = figure(max(len(blocks), 1), 1 + len(KINDS), width=3.2, height=2.5)
    ax = axes[0, 0]
    for kind in KINDS:
        band(ax, runs, vgg(kind), "acc", kind, split="train")
    ax.set(xlabel="steps", ylabel="training accuracy", title="VGG, lr 0.1", ylim=(0, 1))
    ax.legend(fontsize=6, loc="lower right")
    note_diverged(ax, runs)
    for r in range(1, axes.shape[0]):
        axes[r, 0].axis("off")
    for r, block in enumerate(blocks):
        for c, kind in enumerate(KINDS, start=1):
            activation_panel(axes[r, c], runs, vgg(kind), block)
            axes[r, c].set_title(f"{LABEL[kind]}\nlayer {block}", fontsize=8)
    fig.tight_layout()
    return fig


def fig8_moment_drift(ctx):
    """Fig 8: per probe call, the median over Blocks of the post-norm mean and variance drift (log axis)."""
    fig, axes = figure(1, 2, width=4.4, height=3.2)
    for c, moment in enumerate(("mean", "var")):
        ax = axes[0, c]
        for kind in KINDS:
            band(ax, ctx.runs, vgg(kind), f"median/{moment}_drift", kind, split="probe", probe="moment_drift")
        ax.set(xlabel="steps", ylabel=f"|change of {moment}| (median over layers)", yscale="log",
               title=f"moment drift: {moment}")
    axes[0, 0].legend(fontsize=6)
    fig.tight_layout()
    return fig
