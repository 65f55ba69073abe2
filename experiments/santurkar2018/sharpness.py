"""Beyond the paper: sharpness over training. The top Hessian eigenvalue of the training loss (BN in train
mode: the loss being optimized) every 20% of the run, Standard and BN at lr 0.1, with the 2/lr line of the
edge-of-stability picture (Cohen et al. 2021). A figure and a table; no verdict."""

from __future__ import annotations

import numpy as np
import pandas as pd

from normexp.plots import figure

from .vgg_dln import LABEL, band, vgg

TOP = "model/top_eig"


def sharpness_figure(ctx):
    fig, axes = figure(1, 1, width=5.0, height=3.4)
    ax = axes[0, 0]
    for kind in ("std", "bn"):
        band(ax, ctx.runs, vgg(kind), TOP, kind, split="probe", probe="hessian")
    table = ctx.runs.table
    for lr in table.loc[table["cell"].isin(ctx.params["hessian_cells"]), "optim.lr"].unique():
        ax.axhline(2 / float(lr), color="k", linestyle="--", lw=1, label=f"2 / lr = {2 / float(lr):g}")
    ax.set_yscale("symlog", linthresh=1.0)  # the largest-magnitude eigenvalue may be negative early on
    ax.set(xlabel="steps", ylabel="top Hessian eigenvalue (symlog)",
           title="VGG: sharpness over training")
    ax.legend(fontsize=7)
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
