"""Hooks of the measured comparisons (SD-5, SD-6, SD-7; no verdict): a table of final numbers per cell and the
test-accuracy curves, for the cells listed in ``params.cells`` (name -> label)."""

from __future__ import annotations

import pandas as pd

from normexp.plots import figure, note_diverged, seed_band


def final_table(ctx) -> pd.DataFrame:
    """Per cell: seed mean and spread (max - min) of the final test accuracy and training loss; diverged
    seeds are counted, never averaged."""
    rows = []
    for name, label in ctx.params["cells"].items():
        acc, loss = ctx.runs.cell(name, "test_acc"), ctx.runs.cell(name, "train_loss")
        rows.append({"cell": name, "what": label, "test_acc": acc.mean, "test_acc_spread": acc.spread,
                     "train_loss": loss.mean, "train_loss_spread": loss.spread, "seeds": acc.seeds,
                     "diverged": acc.diverged, "missing": acc.missing})
    return pd.DataFrame(rows)


def accuracy_curves(ctx):
    """Test accuracy vs steps, seed mean with the spread as a band, one line per cell."""
    fig, axes = figure(width=5.0)
    ax = axes[0, 0]
    for name, label in ctx.params["cells"].items():
        if ctx.runs.has(name):
            seed_band(ax, ctx.runs, name, "acc", label=label)
    ax.set(xlabel="training steps", ylabel="test accuracy", title=ctx.experiment.spec["title"])
    ax.title.set_fontsize(8)
    ax.legend(fontsize=7)
    note_diverged(ax, ctx.runs)
    return fig
