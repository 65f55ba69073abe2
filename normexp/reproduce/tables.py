"""Aggregation: an experiment's planned runs -> the run table (a row per (cell, seed)) and its curves."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from normexp.claims import Runs
from normexp.records import CONFIG, SUMMARY, read_json
from normexp.results import load_metrics, run_row

from .planned_run import PlannedRun

NUMERIC = ("test_acc", "train_acc", "test_loss", "train_loss", "train_clean_acc", "train_clean_loss", "step",
           "steps", "diverged_step")


def run_table(runs: list[PlannedRun]) -> pd.DataFrame:
    rows = []
    for r in runs:
        row = {"experiment": r.experiment, "cell": r.cell, "seed": r.seed, "planned_steps": r.steps}
        if (r.run_dir / CONFIG).exists():
            row |= run_row(r.run_dir)
        else:
            row |= {"status": r.status, "run_dir": str(r.run_dir),
                    "error": (read_json(r.run_dir / SUMMARY) or {}).get("error")}
        rows.append(row)
    table = pd.DataFrame(rows)
    for col in NUMERIC:
        if col in table:
            table[col] = pd.to_numeric(table[col], errors="coerce")
    return table


def curve_table(table: pd.DataFrame) -> pd.DataFrame:
    dirs = [d for d in table["run_dir"] if (Path(d) / "metrics.jsonl").exists()]
    curves = load_metrics(dirs)
    if curves.empty:
        return pd.DataFrame(columns=["cell", "seed", "step", "split"])
    keys = table.set_index("run_dir")[["cell", "seed"]]
    curves = curves.join(keys, on="run_dir").drop(columns="run_dir")
    front = ["cell", "seed", "step", "split"]
    return curves[front + [c for c in curves.columns if c not in front]]


class LazyRuns(Runs):
    """Runs whose metric records load on first use (stage planning needs only the summaries)."""

    def __init__(self, table: pd.DataFrame):
        super().__init__(table, None)
        self._curves = None

    @property
    def curves(self) -> pd.DataFrame:
        if self._curves is None:
            self._curves = curve_table(self.table)
        return self._curves

    @curves.setter
    def curves(self, value):
        self._curves = value
