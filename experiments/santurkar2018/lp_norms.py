"""The lp-normalization experiments: l1, l2 and linf normalization in place of BN (ST-5,
docs/claims.md#st-5) on the VGG-like net and the DLN: training curves, ICS and the landscape beside BN and
Standard; and, reported without a verdict, whether l1 beats BN on the DLN."""

from __future__ import annotations

import pandas as pd

from normexp.claims import Verdict, compare
from normexp.plots import figure, note_diverged

from .fig3_ics import ics_cos
from .vgg_dln import LABEL, band, dln, vgg

LP = ("l1", "l2", "linf")


def check_st5(ctx) -> Verdict:
    """The DLN's lp cells are full and paper only (their 10,000 steps cost more than the quick budget): at
    quick the DLN half of the ICS comparisons and the l1-vs-BN report are left out, and the sentence says
    so (a planned cell that did not finish is still missing)."""
    runs = ctx.runs
    bn = runs.cell(vgg("bn"), "train_acc", "VGG BN final train acc")
    outcomes, cells = [], [bn]
    for kind in LP:
        acc = runs.cell(vgg(kind), "train_acc", f"VGG {kind} final train acc")
        outcomes.append(compare(acc, ">=", bn, offset=-0.03))
        cells.append(acc)
    nets = [("VGG", vgg)] + ([("DLN", dln)] if runs.has(dln(LP[0])) else [])
    ics = {}
    for net, cell in nets:
        std = ics_cos(runs, cell("std"), f"{net} Standard")
        lps = [ics_cos(runs, cell(kind), f"{net} {kind}") for kind in LP]
        outcomes += [compare(cos, "<=", std, offset=0.05) for cos in lps]
        ics[net] = [std, *lps]
        cells += ics[net]
    num = lambda c: f"{c.mean:.3g}" if c.values else c.state
    listed = lambda names, cs: ", ".join(f"{k} {num(c)}" for k, c in zip(names, cs, strict=True))
    per_net = "; ".join(f"{net}: {listed(('Standard', *LP), ics[net])}" for net, _ in nets)
    sentence = f"VGG final train acc: BN {num(bn)}, {listed(LP, cells[1:4])}; median cos(G,G') {per_net}; "
    if "DLN" not in ics:
        sentence += "the DLN's lp cells are not run at this profile (full and paper only)"
        return Verdict.from_outcomes("ST-5", outcomes, cells, sentence)
    report = l1_vs_bn(runs)
    sentence += f"report: {report['sentence']}"
    return Verdict.from_outcomes("ST-5", outcomes, cells, sentence, extra={"report: DLN l1 vs BN": report})


def l1_vs_bn(runs) -> dict:
    """The DLN's final training loss with l1 normalization against BN (lower is better), no verdict."""
    l1 = runs.cell(dln("l1"), "train_loss", "DLN l1 final loss")
    bn = runs.cell(dln("bn"), "train_loss", "DLN BN final loss")
    outcome = compare(l1, "<", bn)
    word = {"pass": "yes", "fail": "no"}.get(outcome.status, "undecided")
    return {"l1_beats_bn": word, "sentence": f"l1 beats BN on the DLN: {word} ({outcome.text})",
            "l1": l1.to_dict(), "bn": bn.to_dict()}


def dln_l1_vs_bn(ctx) -> pd.DataFrame:
    """Per seed, the DLN's final training loss for every normalization (the ST-5 report)."""
    runs, rows = ctx.runs, []
    for kind in ("std", "bn", *LP):
        for _, row in runs.rows(dln(kind)).iterrows():
            rows.append({"net": LABEL[kind], "cell": row["cell"], "seed": row["seed"],
                         "status": row["status"], "final_train_loss": row.get("train_loss")})
    return pd.DataFrame(rows)


def lp_norms_figure(ctx):
    """Top: the VGG-like net at lr 0.1; bottom: the DLN at lr 1e-6. Training progress, ICS cos (median over
    layers per call) and effective beta, Standard, BN and the lp norms."""
    runs = ctx.runs
    kinds = ("std", "bn", *LP)
    rows = [("VGG, lr 0.1", vgg, ("acc", "training accuracy")),
            ("DLN, lr 1e-6", dln, ("loss", "training loss"))]
    fig, axes = figure(2, 3, width=3.8, height=2.8)
    for r, (title, cell, (column, ylabel)) in enumerate(rows):
        for kind in kinds:
            band(axes[r, 0], runs, cell(kind), column, kind, split="train")
            band(axes[r, 1], runs, cell(kind), "median/cos", kind, split="probe", probe="ics")
            band(axes[r, 2], runs, cell(kind), "beta", kind, split="probe", probe="landscape")
        axes[r, 0].set(xlabel="steps", ylabel=ylabel, title=title,
                       yscale="log" if column == "loss" else "linear")
        axes[r, 1].set(xlabel="steps", ylabel="cos(G, G'), median over layers", title=f"{title}: ICS")
        axes[r, 2].set(xlabel="steps", ylabel="effective beta", yscale="log", title=f"{title}: beta")
        note_diverged(axes[r, 0], runs)
    axes[0, 0].legend(fontsize=6)
    fig.tight_layout()
    return fig
