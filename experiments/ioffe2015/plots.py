"""Ioffe & Szegedy 2015 figures, drawn like the paper's panels (seed mean line, min-max band over seeds)."""

from __future__ import annotations

import math

from normexp.claims import Cell
from normexp.plots import DIVERGED_MARKER, figure, note_diverged, seed_band
from normexp.reproduce import Pending

from .claims import FIG3_ROWS, cell_at, eta0, percentile_columns, search_cells

NORM_LABEL = {"nobn": "Without BN", "bn": "With BN"}
PERCENTILE_STYLE = {15: ":", 50: "-", 85: "--"}


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


def eta0_search(ctx):
    """Final test accuracy vs learning rate: the no-BN search grid (eta0 marked) and the runs at multiples of
    eta0, with and without BN; each seed a dot, diverged seeds an x at the bottom."""
    runs = ctx.runs
    fig, axes = figure(width=5.2)
    ax = axes[0, 0]
    kinds = {"relu_nobn": ("ReLU, no BN", "tab:blue"), "relu_bn": ("ReLU, BN", "tab:orange"),
             "sigmoid_nobn": ("sigmoid, no BN", "tab:green"), "sigmoid_bn": ("sigmoid, BN", "tab:red")}
    points: dict[str, dict[str, float]] = {k: {} for k in kinds}  # kind -> {cell: lr}
    points["relu_nobn"] = {name: lr for lr, name in search_cells(ctx).items()}
    try:
        lr0 = eta0(ctx)
    except Pending:  # the search is not finished: draw what there is
        lr0 = None
    if lr0 is not None:
        for kind in kinds:
            names = {cell_at(ctx, kind, m): m * lr0 for m in (1, 5, 30)}
            points[kind] |= {name: lr for name, lr in names.items() if runs.has(name)}
        ax.axvline(lr0, color="0.6", linestyle="--", lw=1)
        ax.text(lr0, 0.96, f" eta0={lr0:g}", transform=ax.get_xaxis_transform(), fontsize=8, color="0.4")
    for kind, (label, color) in kinds.items():
        xs, means = [], []
        for name, lr in sorted(points[kind].items(), key=lambda p: p[1]):
            cell: Cell = runs.cell(name)
            if cell.values:
                ax.scatter([lr] * len(cell.values), cell.values, color=color, s=12, alpha=0.6)
                xs.append(lr)
                means.append(cell.mean)
            if cell.diverged:
                ax.scatter([lr] * cell.diverged, [0.0] * cell.diverged, color=color, **DIVERGED_MARKER)
        if xs:
            ax.plot(xs, means, color=color, marker="o", ms=3, label=label)
    ax.set(xscale="log", xlabel="learning rate", ylabel="final test accuracy", ylim=(-0.03, 1.0),
           title="Learning-rate tolerance (dots: seeds, line: mean)")
    ax.legend(fontsize=8, loc="center left")
    note_diverged(ax, ctx.runs)
    return fig


def fig2_test_accuracy(ctx):
    """Fig 2: test accuracy vs training steps of the models of the Fig 3 table (ReLU left, sigmoid right)."""
    runs = ctx.runs
    fig, axes = figure(1, 2, width=4.8, sharey=True)
    try:
        lr0 = eta0(ctx)
    except Pending:
        lr0 = None
    colors = iter(["tab:blue", "tab:orange", "tab:red", "tab:purple", "tab:brown", "tab:cyan", "tab:olive",
                   "tab:pink"])
    for label, kind, m in FIG3_ROWS:
        if lr0 is None:
            break
        name = cell_at(ctx, kind, m)
        if not runs.has(name):
            continue
        ax = axes[0, 1] if kind.startswith("sigmoid") else axes[0, 0]
        seed_band(ax, runs, name, "acc", label=f"{label}, lr {m * lr0:.3g}", color=next(colors),
                  linestyle="-" if kind.endswith("_bn") else "--")
    if lr0 is not None and runs.has(cell_at(ctx, "relu_nobn", 1)):  # the ReLU reference on the sigmoid panel
        seed_band(axes[0, 1], runs, cell_at(ctx, "relu_nobn", 1), "acc", label="no BN (ReLU, reference)",
                  color="0.6", linestyle="--")
    for ax, title in zip(axes[0], ("ReLU", "sigmoid"), strict=True):
        ax.set(xlabel="training steps", title=f"{title}: test accuracy")
        ax.legend(fontsize=7, loc="best")
        note_diverged(ax, ctx.runs)
    axes[0, 0].set_ylabel("test accuracy")
    if lr0 is None:
        axes[0, 0].text(0.5, 0.5, "eta0 undefined: no stage-2 runs", ha="center",
                        transform=axes[0, 0].transAxes)
    fig.tight_layout()
    return fig
