"""Beyond the paper: sharpness over training. The top Hessian eigenvalue of the training loss (BN in train
mode: the loss being optimized) every 20% of the run, Standard and BN at lr 0.1, with the 2/lr line of the
edge-of-stability picture (Cohen et al. 2021). A figure and a table; no verdict."""

from __future__ import annotations

import numpy as np
import pandas as pd

from normexp.plots import figure, seed_band

from .vgg_dln import COLOR, LABEL, band, vgg

TOP = "model/top_eig"


def edge_lines(ax, ctx) -> None:
    """The 2/lr line of each lr the Hessian cells train at."""
    table = ctx.runs.table
    for lr in table.loc[table["cell"].isin(ctx.params["hessian_cells"]), "optim.lr"].unique():
        ax.axhline(2 / float(lr), color="k", linestyle="--", lw=1, label=f"2 / lr = {2 / float(lr):g}")


def sharpness_figure(ctx):
    fig, axes = figure(1, 1, width=5.0, height=3.4)
    ax = axes[0, 0]
    for kind in ("std", "bn"):
        band(ax, ctx.runs, vgg(kind), TOP, kind, split="probe", probe="hessian")
    edge_lines(ax, ctx)
    ax.set_yscale("symlog", linthresh=1.0)  # the largest-magnitude eigenvalue may be negative early on
    ax.set(xlabel="steps", ylabel="top Hessian eigenvalue (symlog)",
           title="VGG: sharpness over training")
    ax.legend(fontsize=7)
    return fig


def beta_vs_sharpness(ctx):
    """Diagnostic beside ST-4 (no verdict): the landscape probe's effective beta (solid, every 10% of the
    run, on the step's batch) and the top Hessian eigenvalue (dashed, every 20%, on the probe batch), Standard
    and BN at lr 0.1, with 2/lr, on one curvature axis (symlog)."""
    fig, axes = figure(1, 1, width=5.6, height=3.8)
    ax = axes[0, 0]
    for kind in ("std", "bn"):
        for probe, column, what, style in (("landscape", "beta", "effective beta", "-"),
                                           ("hessian", TOP, "top Hessian eigenvalue", "--")):
            if ctx.runs.has(vgg(kind)):
                seed_band(ax, ctx.runs, vgg(kind), column, split="probe", probe=probe, color=COLOR[kind],
                          label=f"{LABEL[kind]}: {what}", linestyle=style)
    edge_lines(ax, ctx)
    ax.set_yscale("symlog", linthresh=1.0)
    ax.set(xlabel="steps", ylabel="curvature (symlog)", title="VGG, lr 0.1: effective beta vs sharpness")
    ax.legend(fontsize=6)
    return fig


def sharpness_table(ctx) -> pd.DataFrame:
    """Per cell and seed: the top eigenvalue's median, maximum and last value over the calls, 2/lr, the share
    of calls at or above 2/lr, and the most power iterations a call took (max_iter: not converged)."""
    runs, rows = ctx.runs, []
    for cell in ctx.params["hessian_cells"]:
        for _, row in runs.rows(cell).iterrows():
            curve = runs.curve(cell, row["seed"], split="probe", probe="hessian")
            if TOP not in curve:
                continue
            eig = curve[TOP].to_numpy(dtype=float)
            edge = 2 / float(row["optim.lr"])
            rows.append({"net": LABEL[cell.rsplit("_lr", 1)[0]], "seed": row["seed"], "status": row["status"],
                         "2/lr": edge, "calls": len(eig), "median": float(np.median(eig)),
                         "max": float(eig.max()), "last": float(eig[-1]),
                         "share_at_or_above_2/lr": float((eig >= edge).mean()),
                         "most_iterations": int(curve["model/iters"].max())})
    return pd.DataFrame(rows)
