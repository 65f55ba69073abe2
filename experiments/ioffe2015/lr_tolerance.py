"""Ioffe & Szegedy 2015, Fig 2 and the Fig 3 table: learning-rate tolerance of a deep CNN without and with BN
(ReLU and sigmoid). Claims IS-3 and IS-4 (docs/claims.md), the eta0 search as stage 1 and the runs at
multiples of eta0 as stage 2, the Fig 3 table and the figures."""

from __future__ import annotations

import pandas as pd

from normexp.claims import (
    Cell,
    Pending,
    Verdict,
    cells_at_multiples,
    compare,
    grid_cells,
    largest_training_lr,
    steps_to_target,
    trains,
)
from normexp.plots import DIVERGED_MARKER, figure, note_diverged, seed_band

SEARCH = "relu_nobn_lr"


def search_cells(ctx) -> dict[float, str]:
    """lr -> cell name of the eta0 search."""
    return grid_cells(ctx.runs, SEARCH)


def eta0(ctx) -> float | None:
    """The largest grid lr at which no-BN trains (does not diverge and ends above half the final accuracy of
    the best grid lr); None when none does. Pending until the search is done."""
    return largest_training_lr(ctx.runs, SEARCH)


def plan_after_search(ctx) -> list[dict]:
    """Stage 2: the cells of ``params.after_search`` at lr = multiple x eta0."""
    return cells_at_multiples(ctx.params["after_search"], eta0(ctx))


def cell_at(ctx, kind: str, multiple: int) -> str:
    """Cell name of ``kind`` (relu_nobn, relu_bn, sigmoid_nobn, sigmoid_bn) at ``multiple`` x eta0."""
    if kind == "relu_nobn" and multiple == 1:
        return search_cells(ctx)[eta0(ctx)]
    return f"{kind}_x{multiple}"


def _eta0_or_verdict(ctx, claim_id: str):
    try:
        lr0 = eta0(ctx)
    except Pending as waiting:
        return None, Verdict.inconclusive(claim_id, f"runs are missing: {waiting}")
    if lr0 is None:
        return None, Verdict.inconclusive(claim_id, "no-BN trains at no lr of the grid, so eta0 is undefined")
    return lr0, None


def check_is3(ctx) -> Verdict:
    """No-BN at 5 eta0 diverges or ends below half its eta0 test accuracy, while BN at 5 eta0 does not
    diverge and ends at or above 80% of no-BN@eta0's final test accuracy."""
    lr0, early = _eta0_or_verdict(ctx, "IS-3")
    if early:
        return early
    runs = ctx.runs
    nobn1 = runs.cell(cell_at(ctx, "relu_nobn", 1), label=f"no-BN@eta0={lr0:g}")
    nobn5 = runs.cell(cell_at(ctx, "relu_nobn", 5), label="no-BN@5eta0")
    bn5 = runs.cell(cell_at(ctx, "relu_bn", 5), label="BN@5eta0")
    outcomes = [compare(nobn5, "<", nobn1, factor=0.5), compare(bn5, ">=", nobn1, factor=0.8)]
    ratio = tolerance_ratio(ctx)
    sentence = (f"eta0 = {lr0:g}; final test acc: no-BN@eta0 {_acc(nobn1)}, no-BN@5eta0 {_acc(nobn5)}, "
                f"BN@5eta0 {_acc(bn5)}; BN's tolerance ratio {ratio}")
    return Verdict.from_outcomes("IS-3", outcomes, [nobn1, nobn5, bn5], sentence,
                                 extra={"eta0": lr0, "bn_tolerance_ratio": ratio})


def _acc(cell: Cell) -> str:
    if cell.state == "diverged":
        return "diverged"
    if not cell.values:
        return cell.state
    more = f", {cell.diverged} diverged" if cell.diverged else ""
    return f"{cell.mean:.3f} (spread {cell.spread:.3f}{more})"


def tolerance_ratio(ctx) -> str:
    """Largest multiple of eta0 at which BN trains (report only; the paper's is at least 30)."""
    cells = {m: ctx.runs.cell(f"relu_bn_x{m}") for m in (1, 5, 30) if ctx.runs.has(f"relu_bn_x{m}")}
    if not cells or any(c.state == "missing" for c in cells.values()):
        return "unknown (runs are missing)"
    ok = [m for m, good in trains(cells).items() if good]
    if not ok:
        return "below 1 (BN does not train at eta0)"
    top = max(ok)
    return f"{top}" + (" (the largest multiple tried)" if top == max(cells) else "")


def check_is4(ctx) -> Verdict:
    """The same CNN with sigmoid units: BN at 5 eta0 ends at least 20 points of test accuracy above no-BN at
    eta0 (eta0 of the ReLU search, as in the paper, which kept Inception's lr for BN-x5-Sigmoid)."""
    lr0, early = _eta0_or_verdict(ctx, "IS-4")
    if early:
        return early
    runs = ctx.runs
    bn5 = runs.cell("sigmoid_bn_x5", label="sigmoid BN@5eta0")
    nobn1 = runs.cell("sigmoid_nobn_x1", label=f"sigmoid no-BN@eta0={lr0:g}")
    outcome = compare(bn5, ">=", nobn1, offset=0.20)
    sentence = (f"eta0 = {lr0:g}; final test acc: sigmoid BN@5eta0 {_acc(bn5)} vs sigmoid no-BN@eta0 "
                f"{_acc(nobn1)}")
    return Verdict.from_outcomes("IS-4", [outcome], [bn5, nobn1], sentence, extra={"eta0": lr0})


FIG3_ROWS = [("no BN (Inception)", "relu_nobn", 1), ("BN-Baseline", "relu_bn", 1), ("BN-x5", "relu_bn", 5),
             ("BN-x30", "relu_bn", 30), ("BN-x5-Sigmoid", "sigmoid_bn", 5), ("no BN x5", "relu_nobn", 5),
             ("no BN x30", "relu_nobn", 30), ("no BN sigmoid", "sigmoid_nobn", 1)]


def fig3_table(ctx) -> pd.DataFrame:
    """The Fig 3 table: steps to reach no-BN@eta0's final test accuracy, and the best test accuracy, per model
    (seed mean and spread; 'never' when no seed reached it)."""
    try:
        lr0 = eta0(ctx)
    except Pending as waiting:
        return pd.DataFrame({"note": [f"runs are missing: {waiting}"]})
    if lr0 is None:
        return pd.DataFrame({"note": ["no-BN trains at no lr of the grid: eta0 is undefined"]})
    runs = ctx.runs
    target_cell = runs.cell(cell_at(ctx, "relu_nobn", 1))
    target = target_cell.mean
    rows = []
    for label, kind, m in FIG3_ROWS:
        name = cell_at(ctx, kind, m)
        if not runs.has(name):
            continue
        steps, never = steps_to_target(runs, name, target, label)
        best = runs.cell(name, lambda row: _test_curve(runs, row)["acc"].max())
        final = runs.cell(name)
        rows.append({"model": label, "lr": float(f"{m * lr0:.6g}"),
                     f"steps to {target:.4f}": _steps_text(steps, never),
                     "best test acc": _acc(best), "final test acc": _acc(final)})
    return pd.DataFrame(rows)


def _test_curve(runs, row) -> pd.DataFrame:
    return runs.curve(row["cell"], row["seed"])


def _steps_text(cell: Cell, never: int) -> str:
    """Seed mean and spread of the seeds that reached the target, then how many never did, diverged or
    are missing."""
    notes = [f"{k} {w}" for k, w in ((never, "never reached"), (cell.diverged, "diverged"),
                                     (cell.missing, "missing")) if k]
    if not cell.values:
        return "; ".join(notes) if notes else "missing"
    return f"{cell.mean:.0f} (spread {cell.spread:.0f})" + (f"; {', '.join(notes)}" if notes else "")


# ---------------------------------------------------------------- figures

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
