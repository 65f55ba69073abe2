"""Fig 3: internal covariate shift (Definition 2.1) with and without BN (ST-3, docs/claims.md#st-3): the
l2 difference (log axis) and cosine of G and G' per layer over training, on the VGG-like net and the DLN,
every layer measured and two drawn, as in the paper; training accuracy or loss beside."""

from __future__ import annotations

from normexp.claims import Verdict, compare, probe_median
from normexp.plots import figure, note_diverged

from .fig1_vgg import faster_at_25
from .vgg_dln import band, dln, layer_columns, two_layers, vgg

LAYER_COS = r"(?!median/)[^/]+/cos"  # every layer's cos(G, G'), not the per-call median over layers


def ics_cos(runs, cell: str, label: str):
    """Per seed: the median over probe calls and layers of cos(G, G')."""
    return probe_median(runs, cell, "ics", LAYER_COS, f"{label} median cos(G,G')")


def check_st3(ctx) -> Verdict:
    runs = ctx.runs
    dln_bn, dln_std = ics_cos(runs, dln("bn"), "DLN BN"), ics_cos(runs, dln("std"), "DLN Standard")
    loss_bn = runs.cell(dln("bn"), "train_loss", "DLN BN final train loss")
    loss_std = runs.cell(dln("std"), "train_loss", "DLN Standard final train loss")
    vgg_bn, vgg_std = ics_cos(runs, vgg("bn"), "VGG BN"), ics_cos(runs, vgg("std"), "VGG Standard")
    faster, acc_cells = faster_at_25(runs, "0.1")
    outcomes = [compare(dln_bn, "<", dln_std), compare(loss_bn, "<", loss_std),
                compare(vgg_bn, "<=", vgg_std, offset=0.05), faster]
    num = lambda c, f="{:.3g}": f.format(c.mean) if c.values else c.state
    sentence = (f"DLN: median cos BN {num(dln_bn)} vs Standard {num(dln_std)}, final loss BN {num(loss_bn)} "
                f"vs Standard {num(loss_std)}; VGG: median cos BN {num(vgg_bn)} vs Standard {num(vgg_std)}, "
                f"train acc@25% BN {num(acc_cells[0])} vs Standard {num(acc_cells[1])}")
    return Verdict.from_outcomes("ST-3", outcomes, [dln_bn, dln_std, loss_bn, loss_std, vgg_bn, vgg_std,
                                                    *acc_cells], sentence)


def ics_panels(axes, runs, cells: dict[str, str], progress: tuple[str, str, str], title: str) -> None:
    """One row: training progress (column, split, label) and l2 / cos of two layers, Standard vs BN."""
    column, split, ylabel = progress
    ax = axes[0]
    for kind, cell in cells.items():
        band(ax, runs, cell, column, kind, split=split)
    ax.set(xlabel="steps", ylabel=ylabel, title=title)
    if column == "loss":
        ax.set_yscale("log")
    note_diverged(ax, runs)
    ax.legend(fontsize=6)
    ref = next((c for c in cells.values() if layer_columns(runs, c, "ics", "l2")), None)
    layers = [c.rsplit("/", 1)[0] for c in two_layers(layer_columns(runs, ref, "ics", "l2"))] if ref else []
    for i, layer in enumerate(layers):
        for j, (quantity, scale) in enumerate((("l2", "log"), ("cos", "linear"))):
            ax = axes[1 + 2 * i + j]
            for kind, cell in cells.items():
                band(ax, runs, cell, f"{layer}/{quantity}", kind, split="probe", probe="ics")
            ax.set(xlabel="steps", yscale=scale, title=f"layer {layer}",
                   ylabel="||G - G'||_2" if quantity == "l2" else "cos(G, G')")


def fig3_ics_vgg(ctx):
    """Fig 3a: the VGG-like net at lr 0.1 (and 0.01 where the profile runs it)."""
    return _ics_figure(ctx.runs, vgg, ("0.1", "0.01"), ("acc", "train", "training accuracy"), "VGG")


def fig3_ics_dln(ctx):
    """Fig 3b: the deep linear network at lr 1e-6 (and 1e-7 where the profile runs it)."""
    return _ics_figure(ctx.runs, dln, ("1e-06", "1e-07"), ("loss", "train", "training loss (sum)"), "DLN")


def _ics_figure(runs, cell_of, lrs, curve, net: str):
    """One row of ICS panels per lr the profile ran, Standard vs BN."""
    lrs = [lr for lr in lrs if runs.has(cell_of("std", lr))]
    fig, axes = figure(max(len(lrs), 1), 5, width=3.2, height=2.6)
    for r, lr in enumerate(lrs):
        cells = {kind: cell_of(kind, lr) for kind in ("std", "bn")}
        ics_panels(axes[r], runs, cells, curve, f"{net}, lr {lr}")
    fig.tight_layout()
    return fig
