"""Reading one experiment's runs: a row per (cell, seed), their metric curves, and numbers taken from them
(a value at a step, the steps to reach a target)."""

from __future__ import annotations

import math
from collections.abc import Callable

import pandas as pd

from .verdict import Cell


class Pending(Exception):  # noqa: N818 - a state, not an error
    """Raised by a hook (a ``stages`` planner, or a helper it calls) whose input runs are not finished yet."""

class Runs:
    """One experiment's planned runs at one profile: ``table`` has a row per (cell, seed) with the run's
    ``status`` (``completed``, ``diverged``, ``failed``, ``incomplete``, ``missing``) and summary columns;
    ``curves`` holds their metric records (long format) with ``cell`` and ``seed`` columns."""

    def __init__(self, table: pd.DataFrame, curves: pd.DataFrame):
        self.table, self.curves = table, curves

    def rows(self, cell: str) -> pd.DataFrame:
        return self.table[self.table["cell"] == cell]

    def has(self, cell: str) -> bool:
        return bool((self.table["cell"] == cell).any())

    def curve(self, cell: str, seed: int, split: str = "test", probe: str | None = None) -> pd.DataFrame:
        c = self.curves
        if c.empty:
            return c
        keep = (c["cell"] == cell) & (c["seed"] == seed) & (c["split"] == split)
        if probe is not None:
            keep &= c["probe"] == probe
        rows = c[keep]
        return rows if rows.empty else rows.dropna(axis=1, how="all").sort_values("step")

    def cell(self, name: str, value: Callable[[pd.Series], float] | str = "test_acc",
             label: str | None = None) -> Cell:
        """The cell's per-seed numbers: ``value`` is a summary column or a function of the run's row
        (use :meth:`curve` inside it for curves). Diverged runs are counted, never measured."""
        values, diverged, missing = [], 0, 0
        rows = self.rows(name)
        for _, row in rows.iterrows():
            if row["status"] == "diverged":
                diverged += 1
            elif row["status"] != "completed":
                missing += 1
            else:
                v = row[value] if isinstance(value, str) else value(row)
                if v is None or not math.isfinite(float(v)):
                    missing += 1
                else:
                    values.append(float(v))
        return Cell(label or name, tuple(values), diverged, missing if len(rows) else 1)

    def final_steps(self) -> int:
        """The planned number of optimizer steps (``planned_steps``, else the summaries' ``steps``)."""
        col = "planned_steps" if "planned_steps" in self.table else "steps"
        return int(pd.to_numeric(self.table[col], errors="coerce").max())


def value_at(curve: pd.DataFrame, step: int, column: str = "acc") -> float | None:
    """The value logged at the last record at or before ``step``."""
    before = curve[curve["step"] <= step]
    return float(before[column].iloc[-1]) if len(before) and column in before else None


def steps_to(curve: pd.DataFrame, target: float, column: str = "acc") -> int | None:
    """First logged step whose value reaches ``target``; None when it never does."""
    hit = curve[curve[column] >= target] if column in curve else curve.iloc[0:0]
    return int(hit["step"].iloc[0]) if len(hit) else None


def steps_to_target(runs: Runs, cell: str, target: float, label: str, split: str = "test",
                    column: str = "acc") -> tuple[Cell, int]:
    """Per seed, the first logged step at which ``column`` of the ``split`` curve reaches ``target``.
    Returns the cell of the seeds that reached it and how many completed seeds never did (those are not
    missing: they trained, and did not get there)."""
    rows = runs.rows(cell)
    trained = rows[rows["status"] == "completed"]
    hits = [steps_to(runs.curve(cell, r["seed"], split=split), target, column) for _, r in trained.iterrows()]
    never = sum(h is None for h in hits)
    values = tuple(float(h) for h in hits if h is not None)
    diverged = int((rows["status"] == "diverged").sum())
    missing = len(rows) - len(trained) - diverged if len(rows) else 1
    return Cell(label, values, diverged, missing), never
