"""Ioffe & Szegedy 2015: the checks of IS-1..IS-4 (PAPERS.md), the eta0 stage planner and report tables.

Every check reads the experiment's runs (``ctx.runs``: a row per (cell, seed) and their metric records) and
returns a :class:`normexp.claims.Verdict`; the comparison rule is :data:`normexp.claims.RULE`.
"""

from __future__ import annotations

import re

import numpy as np
import pandas as pd

from normexp.claims import FAIL, INCONCLUSIVE, Cell, Outcome, Verdict, compare, steps_to, value_at
from normexp.reproduce import Pending, format_value

# ---------------------------------------------------------------- IS-1, IS-2: Fig 1 (MNIST MLP)


def check_is1(ctx) -> Verdict:
    """BN's test accuracy at 20% of the run is at least no-BN's, and BN reaches no-BN's final test accuracy
    in at most half the steps."""
    runs = ctx.runs
    steps = runs.final_steps()
    at = int(round(0.2 * steps))
    acc_at = lambda row: value_at(runs.curve(row["cell"], row["seed"]), at)  # noqa: E731
    bn20, nobn20 = runs.cell("bn", acc_at, f"BN acc@{at}"), runs.cell("nobn", acc_at, f"no-BN acc@{at}")
    nobn_final = runs.cell("nobn", "test_acc", "no-BN final acc")
    outcomes = [compare(bn20, ">=", nobn20)]
    cells = [bn20, nobn20, nobn_final]
    if nobn_final.state == "trained":
        target = nobn_final.mean
        reach = lambda row: steps_to(runs.curve(row["cell"], row["seed"]), target)  # noqa: E731
        bn_steps, never = _steps_with_never(runs, "bn", reach, f"BN steps to {target:.4f}")
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
    acc = lambda c: f"{c.mean:.3f}" if c.values else c.state  # noqa: E731
    reached = (f"BN reached no-BN's final {nobn_final.mean:.3f} at step {_mean_text(cells[-1])} of {steps}"
               if nobn_final.state == "trained" else f"no-BN final: {nobn_final.state}")
    sentence = f"acc at step {at}: BN {acc(bn20)} vs no-BN {acc(nobn20)}; {reached}"
    return Verdict.from_outcomes("IS-1", outcomes, cells, sentence)


def _steps_with_never(runs, cell: str, reach, label: str) -> tuple[Cell, int]:
    """Steps-to-target per seed; seeds that trained but never reached it are counted apart (not missing)."""
    rows = runs.rows(cell)
    trained = rows[rows["status"] == "completed"]
    hits = [reach(r) for _, r in trained.iterrows()]
    never = sum(h is None for h in hits)
    values = tuple(float(h) for h in hits if h is not None)
    diverged = int((rows["status"] == "diverged").sum())
    missing = len(rows) - len(trained) - diverged if len(rows) else 1
    return Cell(label, values, diverged, missing), never


def _mean_text(cell: Cell) -> str:
    return f"{cell.mean:.0f} (spread {cell.spread:.0f})" if cell.values else "never"


PERCENTILE_KEY = re.compile(r"^(?P<block>[^/]+)/u(?P<unit>\d+)/p(?P<q>[\d.]+)$")


def percentile_columns(curve: pd.DataFrame) -> dict[tuple[str, int], dict[float, str]]:
    """(block, unit) -> {percentile: column} of an activations probe curve."""
    found: dict[tuple[str, int], dict[float, str]] = {}
    for col in curve.columns:
        m = PERCENTILE_KEY.match(str(col))
        if m and curve[col].notna().any():
            found.setdefault((m["block"], int(m["unit"])), {})[float(m["q"])] = col
    return found


def drift(curve: pd.DataFrame) -> float | None:
    """PAPERS.md IS-2: total movement of the percentile curves across the run divided by the final band
    width (highest minus lowest percentile), averaged over the probed units."""
    per_unit = []
    for cols in percentile_columns(curve).values():
        qs = sorted(cols)
        values = curve[[cols[q] for q in qs]].to_numpy(dtype=float)
        if len(values) < 2:
            continue
        movement = np.abs(np.diff(values, axis=0)).sum()
        width = values[-1, -1] - values[-1, 0]
        per_unit.append(movement / width if width > 0 else np.inf)
    return float(np.mean(per_unit)) if per_unit else None


def _drift_of(runs):
    return lambda row: drift(runs.curve(row["cell"], row["seed"], split="probe", probe="activations"))


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
            entry[f"{block}/u{unit}"] = drift(curve[["step", *cols.values()]])
        entry["drift"] = drift(curve) if len(curve) else None
        rows.append(entry)
    return pd.DataFrame(rows)


# ---------------------------------------------------------------- IS-3, IS-4: learning-rate tolerance

SEARCH = "relu_nobn_lr"


def search_cells(ctx) -> dict[float, str]:
    """lr -> cell name of the eta0 search."""
    cells = ctx.runs.table["cell"].drop_duplicates()
    return {float(c[len(SEARCH):]): c for c in cells if c.startswith(SEARCH)}


def trains(cells: dict[float, Cell]) -> dict[float, bool]:
    """PAPERS.md IS-3: a cell trains when it does not diverge and ends above half the final accuracy of the
    best cell. Decided on seed means (this picks eta0; it is not a verdict): a cell where any seed diverged
    does not train."""
    best = max((c.mean for c in cells.values() if c.state == "trained"), default=None)
    return {lr: c.state == "trained" and best is not None and c.mean > 0.5 * best for lr, c in cells.items()}


def eta0(ctx) -> float | None:
    """The largest grid lr at which no-BN trains; None when none does. Pending until the search is done."""
    cells = {lr: ctx.runs.cell(name) for lr, name in search_cells(ctx).items()}
    if not cells or any(c.state == "missing" for c in cells.values()):
        raise Pending("eta0 needs every run of the lr search (relu_nobn_lr*) finished")
    ok = trains(cells)
    return max((lr for lr, good in ok.items() if good), default=None)


def plan_after_search(ctx) -> list[dict]:
    """Stage 2: the cells of ``params.after_search`` at lr = multiple x eta0."""
    lr0 = eta0(ctx)
    if lr0 is None:
        return []
    return [{"name": c["name"],
             "overrides": [*c["overrides"], f"optim.lr={format_value(c['multiple'] * lr0)}"]}
            for c in ctx.params["after_search"]]


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
        reach = lambda row: steps_to(_test_curve(runs, row), target)  # noqa: E731, B023 - used at once
        steps, never = _steps_with_never(runs, name, reach, label)
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
