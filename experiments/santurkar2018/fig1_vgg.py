"""Fig 1: the VGG-like net, Standard vs BN at lr 0.1 and 0.5 (ST-1, docs/claims.md#st-1): training and test
accuracy over the run, and the distribution of one unit's input to the ReLU in an early and a late layer."""

from __future__ import annotations

from normexp.claims import (
    FAIL,
    INCONCLUSIVE,
    PASS,
    Outcome,
    Verdict,
    compare,
    paired_difference,
    percentile_columns,
)
from normexp.plots import figure, note_diverged, seed_curves

from .vgg_dln import LABEL, band, train_acc_at, vgg

LRS = ("0.1", "0.5")


def faster_at_25(runs, lr: str):
    """BN's training accuracy at 25% of the run above Standard's, at one lr: (outcome, cells)."""
    at = train_acc_at(runs, 0.25)
    bn = runs.cell(vgg("bn", lr), at, f"BN train acc@25% lr {lr}")
    std = runs.cell(vgg("std", lr), at, f"Standard train acc@25% lr {lr}")
    return compare(bn, ">", std), [bn, std]


def loses_more(runs):
    """Standard loses more final training accuracy from lr 0.1 to 0.5 than BN (or diverges at 0.5)."""
    std5, bn5 = runs.cell(vgg("std", "0.5"), "train_acc"), runs.cell(vgg("bn", "0.5"), "train_acc")
    std_drop = paired_difference(runs, vgg("std", "0.1"), vgg("std", "0.5"),
                                 "Standard train acc drop 0.1->0.5", value="train_acc")
    bn_drop = paired_difference(runs, vgg("bn", "0.1"), vgg("bn", "0.5"), "BN train acc drop 0.1->0.5",
                                value="train_acc")
    if "missing" in (std5.state, bn5.state, std_drop.state, bn_drop.state):
        return Outcome(INCONCLUSIVE, "runs at lr 0.1 or 0.5 are missing", missing=True), [std_drop, bn_drop]
    if std5.state == "diverged" and bn5.state == "trained":
        return Outcome(PASS, "Standard diverged at lr 0.5 and BN trained"), [std_drop, bn_drop]
    if bn5.state == "diverged" and std5.state == "trained":
        return Outcome(FAIL, "BN diverged at lr 0.5 and Standard trained"), [std_drop, bn_drop]
    return compare(std_drop, ">", bn_drop), [std_drop, bn_drop]


def check_st1(ctx) -> Verdict:
    runs = ctx.runs
    outcomes, cells = [], []
    for lr in LRS:
        outcome, used = faster_at_25(runs, lr)
        outcomes.append(outcome), cells.extend(used)
    outcome, used = loses_more(runs)
    outcomes.append(outcome), cells.extend(used)
    acc = lambda c: f"{c.mean:.3f}" if c.values else c.state
    sentence = (f"train acc at 25%: lr 0.1 BN {acc(cells[0])} vs Standard {acc(cells[1])}, lr 0.5 BN "
                f"{acc(cells[2])} vs Standard {acc(cells[3])}; drop 0.1->0.5: Standard {acc(cells[4])}, "
                f"BN {acc(cells[5])} ({outcome.text})")
    return Verdict.from_outcomes("ST-1", outcomes, cells, sentence)


def fig1_accuracy(ctx):
    """Fig 1 (left): training and test accuracy vs steps, Standard vs BN, one column per lr."""
    fig, axes = figure(2, len(LRS), width=4.2, height=3.0)
    for c, lr in enumerate(LRS):
        for r, split in enumerate(("train", "test")):
            ax = axes[r, c]
            for kind in ("std", "bn"):
                band(ax, ctx.runs, vgg(kind, lr), "acc", kind, split=split)
            ax.set(xlabel="steps", ylabel=f"{split} accuracy", title=f"VGG, lr {lr}: {split}", ylim=(0, 1))
            note_diverged(ax, ctx.runs)
    axes[0, 0].legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    return fig


def fig1_activations(ctx):
    """Fig 1 (right): percentiles 5/25/50/75/95 of unit 0's input to the ReLU in an early and a late layer
    over training, Standard vs BN at lr 0.1."""
    blocks = probed_blocks(ctx.runs)
    early_late = [blocks[0], blocks[-1]] if blocks else []
    fig, axes = figure(2, 2, width=4.2, height=2.8)
    for r, block in enumerate(early_late):
        for c, kind in enumerate(("std", "bn")):
            activation_panel(axes[r, c], ctx.runs, vgg(kind), block)
            axes[r, c].set_title(f"{LABEL[kind]}, layer {block}", fontsize=9)
    fig.tight_layout()
    return fig


def probed_blocks(runs) -> list[str]:
    """The Blocks the activations probe recorded, in depth order."""
    curves = runs.curves
    probe = curves[curves["probe"] == "activations"] if "probe" in curves else curves.iloc[0:0]
    return list(dict.fromkeys(block for block, _ in percentile_columns(probe.dropna(axis=1, how="all"))))


def activation_panel(ax, runs, cell: str, block: str, unit: int = 0) -> None:
    """Nested percentile bands (5-95 light, 25-75 dark, median line) of one unit, seed means."""
    cols = {q: f"{block}/u{unit}/p{q}" for q in (5, 25, 50, 75, 95)}
    table = {q: seed_curves(runs, cell, col, split="probe", probe="activations")[0]
             for q, col in cols.items()}
    if any(t.empty for t in table.values()):
        ax.text(0.5, 0.5, "no records", ha="center", transform=ax.transAxes)
        return
    mean = {q: t.mean(axis=1) for q, t in table.items()}
    ax.fill_between(mean[5].index, mean[5], mean[95], color="tab:blue", alpha=0.2, lw=0, label="p5-p95")
    ax.fill_between(mean[25].index, mean[25], mean[75], color="tab:blue", alpha=0.45, lw=0, label="p25-p75")
    ax.plot(mean[50].index, mean[50], color="k", lw=1, label="median")
    ax.set(xlabel="steps", ylabel="input to ReLU")
    ax.legend(fontsize=6)
