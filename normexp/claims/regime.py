"""The regime a verdict was measured in: does the network memorize its training set, and did the cells being
compared train comparably? (docs/claims.md, "The regime".)

Measured per run at the end of training (``train.eval_train_images``): the accuracy and loss of a fixed clean
set of training images, evaluated as the test set is. Per cell, seed means:

- R1, no memorization: clean training accuracy minus test accuracy is at most ``R1_MAX_GAP`` points;
- R2, comparable training: within a group of cells (one norm across N), every cell's clean training loss is at
  most ``R2_MAX_RATIO`` times the group's lowest.

Every report shows the measures; :func:`gate` turns the verdict of a claim that the regime governs into
``inconclusive`` ("outside the paper's regime") when a cell it uses breaks R1 or R2.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import pandas as pd

from .runs import Runs
from .verdict import INCONCLUSIVE, Verdict

R1_MAX_GAP = 3.0     # points of accuracy
R2_MAX_RATIO = 1.25  # final clean training loss over the group's lowest
ROUNDING = 1e-9      # the rules are in exact arithmetic: 0.93 - 0.90 is a gap of 3 points, not 3 + 3e-15


@dataclass(frozen=True)
class CellRegime:
    """One cell's regime measures: seed means over its completed runs (NaN where not measured)."""

    cell: str
    seeds: int
    train_acc: float
    train_loss: float
    test_acc: float

    @property
    def gap(self) -> float:
        """Clean training accuracy minus test accuracy, in points."""
        return 100.0 * (self.train_acc - self.test_acc)

    @property
    def measured(self) -> bool:
        return self.seeds > 0 and math.isfinite(self.train_loss)


def _mean(rows: pd.DataFrame, column: str) -> float:
    values = pd.to_numeric(rows[column], errors="coerce") if column in rows else pd.Series(dtype=float)
    values = values.dropna()
    return float(values.mean()) if len(values) else math.nan


def cell_regime(runs: Runs, cell: str) -> CellRegime:
    rows = runs.rows(cell)
    done = rows[rows["status"] == "completed"]
    return CellRegime(cell, len(done), _mean(done, "train_clean_acc"), _mean(done, "train_clean_loss"),
                      _mean(done, "test_acc"))


def regime_table(runs: Runs) -> pd.DataFrame:
    """Every cell of the run table with its regime measures (the report shows this beside each verdict)."""
    cells = list(dict.fromkeys(runs.table["cell"])) if len(runs.table) else []
    rows = []
    for c in (cell_regime(runs, name) for name in cells):
        rows.append({"cell": c.cell, "seeds": c.seeds, "clean train acc %": _pct(c.train_acc),
                     "clean train loss": _round(c.train_loss, 4), "test acc %": _pct(c.test_acc),
                     "gap (points)": _round(c.gap, 2)})
    return pd.DataFrame(rows)


def _pct(x: float) -> float | None:
    return _round(100.0 * x, 2)


def _round(x: float, digits: int) -> float | None:
    return round(x, digits) if math.isfinite(x) else None


@dataclass
class Regime:
    """The regime of one claim: the cells it uses, the groups R2 compares, and what broke."""

    cells: dict[str, CellRegime]  # the cells the claim uses and those R2 compares them with
    used: list[str] = field(default_factory=list)  # the cells the claim uses (describe() speaks of these)
    ratios: dict[str, float] = field(default_factory=dict)  # cell -> loss over its group's lowest
    broken: list[str] = field(default_factory=list)
    unmeasured: list[str] = field(default_factory=list)

    @property
    def inside(self) -> bool:
        return not self.broken and not self.unmeasured

    def describe(self) -> str:
        used = self.used or list(self.cells)
        measured = [self.cells[n] for n in used if self.cells[n].measured]
        if not measured:
            return "regime not measured (no clean training-set evaluation in these runs)"
        widest = max(measured, key=lambda c: c.gap if math.isfinite(c.gap) else -math.inf)
        parts = [f"R1 largest gap {widest.gap:+.2f} points ({widest.cell})" if math.isfinite(widest.gap)
                 else "R1 not measured (no accuracy)"]
        ratios = {n: r for n, r in self.ratios.items() if n in used}
        if ratios:
            worst = max(ratios, key=ratios.get)
            parts.append(f"R2 largest loss ratio {ratios[worst]:.2f} ({worst})")
        state = "inside the paper's regime" if self.inside else "outside the paper's regime"
        return f"{state}: " + ", ".join(parts)

    def to_dict(self, gated: bool) -> dict:
        return {"gated": gated, "inside": self.inside, "text": self.describe(), "broken": self.broken,
                "unmeasured": self.unmeasured,
                "cells": {name: {"seeds": c.seeds, "clean_train_acc": _finite(c.train_acc),
                                 "clean_train_loss": _finite(c.train_loss), "test_acc": _finite(c.test_acc),
                                 "gap_points": _finite(c.gap), "loss_ratio": _finite(self.ratios.get(name))}
                          for name, c in self.cells.items()}}


def _finite(x) -> float | None:
    return float(x) if isinstance(x, (int, float)) and math.isfinite(x) else None


def check_regime(runs: Runs, used: list[str], groups: list[list[str]] = ()) -> Regime:
    """R1 for every cell in ``used``; R2 for each cell of ``used`` that belongs to one of ``groups`` (the
    cells of one norm across N; a group's lowest loss is over its cells that have a measure)."""
    names = list(dict.fromkeys([*used, *(c for g in groups for c in g)]))
    cells = {name: cell_regime(runs, name) for name in names}
    regime = Regime(cells, list(dict.fromkeys(used)))
    for name in used:
        c = cells[name]
        if not c.measured:
            regime.unmeasured.append(name)
        elif math.isfinite(c.gap) and c.gap > R1_MAX_GAP + ROUNDING:
            regime.broken.append(f"R1: {name} memorizes (clean training accuracy {100 * c.train_acc:.2f}% vs "
                                 f"test {100 * c.test_acc:.2f}%, gap {c.gap:+.2f} > {R1_MAX_GAP:g} points)")
    for group in groups:
        losses = {n: cells[n].train_loss for n in group if cells[n].measured}
        if not losses:
            continue
        lowest_cell = min(losses, key=losses.get)
        for name in group:
            if name not in losses:
                continue
            regime.ratios[name] = losses[name] / losses[lowest_cell] if losses[lowest_cell] > 0 else math.inf
            if name in used and regime.ratios[name] > R2_MAX_RATIO + ROUNDING:
                regime.broken.append(f"R2: {name} trained less (clean training loss {losses[name]:.4f} = "
                                     f"{regime.ratios[name]:.2f} x {lowest_cell}'s {losses[lowest_cell]:.4f} "
                                     f"> {R2_MAX_RATIO:g} x)")
    return regime


def gate(verdict: Verdict, regime: Regime) -> Verdict:
    """The verdict of a claim the regime governs: as measured inside the regime; ``inconclusive``, "outside
    the paper's regime" (or "regime not measured"), with every number kept, outside it."""
    verdict.regime = regime.to_dict(gated=True)
    if regime.inside:
        return verdict
    reason = ("outside the paper's regime: " + "; ".join(regime.broken) if regime.broken
              else "regime not measured for " + ", ".join(regime.unmeasured))
    outcomes = [f"[{INCONCLUSIVE}] {reason}"] + [f"(not decided, {reason.split(':')[0]}) {o}"
                                                 for o in verdict.outcomes]
    return Verdict(verdict.id, INCONCLUSIVE, f"{reason}. Measured: {verdict.sentence}", verdict.measured,
                   outcomes, verdict.paper, verdict.figure, verdict.regime)
