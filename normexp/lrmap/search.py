"""The lr grid and the search on it, a map's cells and its state read from run dirs: no training, no
figures; :class:`LrMap` is what an experiment hook drives with its own executor."""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from normexp.errors import ConfigError
from normexp.records import FINISHED, SUMMARY, read_json

LOSS_KEYS = ("train_loss", "test_loss")
SCORE_KEY = "test_acc"
RESERVED_KEYS = ("optim.lr", "seed", "hydra.run.dir")


# ---------------------------------------------------------------- the grid and the search (no training)

@dataclass(frozen=True)
class LrGrid:
    """``lr_min * resolution**k`` up to ``lr_max``; the coarse scan takes every ``stride``-th point and the
    last one."""

    lr_min: float = 1e-3
    lr_max: float = 10.0
    resolution: float = 1.25
    points_per_decade: float = 2.0

    def __post_init__(self):
        if not (self.lr_min > 0 and math.isfinite(self.lr_min)):
            raise ConfigError("--lr-min", self.lr_min, "must be a positive number")
        if not (self.lr_max > self.lr_min and math.isfinite(self.lr_max)):
            raise ConfigError("--lr-max", self.lr_max, f"must be a number above --lr-min ({self.lr_min:g})")
        if not (self.resolution > 1 and math.isfinite(self.resolution)):
            raise ConfigError("--resolution", self.resolution, "must be a factor above 1, e.g. 1.25")
        if not self.points_per_decade > 0:
            raise ConfigError("--points-per-decade", self.points_per_decade, "must be a positive number")

    @property
    def values(self) -> list[float]:
        n = math.floor(math.log(self.lr_max / self.lr_min) / math.log(self.resolution) + 1e-9)
        return [float(f"{self.lr_min * self.resolution ** k:.6g}") for k in range(n + 1)]

    @property
    def stride(self) -> int:
        return max(1, round(math.log(10) / self.points_per_decade / math.log(self.resolution)))

    @property
    def coarse(self) -> list[int]:
        last = len(self.values) - 1
        return sorted({*range(0, last + 1, self.stride), last})


def trains(per_lr: pd.DataFrame, fraction: float) -> pd.Series:
    """Per lr (index): every seed completed and the seed-mean score is at least ``fraction`` of the best."""
    ok = per_lr["completed"] == per_lr["seeds"]
    best = per_lr.loc[ok, "score"].max()
    return ok & (per_lr["score"] >= fraction * best)


def next_indices(grid: LrGrid, outcome: dict[int, bool], dense: bool = False) -> list[int]:
    """Grid indices to evaluate next, given whether each evaluated index trains; [] when the search is done.
    The bracket is (largest index that trains, smallest evaluated index above it)."""
    todo = range(len(grid.values)) if dense else grid.coarse
    missing = [i for i in todo if i not in outcome]
    if missing or dense:
        return missing
    trained = [i for i, ok in outcome.items() if ok]
    if not trained:
        return []
    lo = max(trained)
    above = [i for i in outcome if i > lo]
    if not above or min(above) - lo <= 1:
        return []
    return [(lo + min(above)) // 2]  # the grid is geometric: the middle index is the log-space midpoint


# ---------------------------------------------------------------- cells and a map's state

@dataclass(frozen=True)
class MapCell:
    axes: tuple[tuple[str, str], ...]  # the swept keys and this cell's values

    @property
    def name(self) -> str:
        return ",".join(f"{k}={v}" for k, v in self.axes).replace("/", "_") or "all"

    @property
    def overrides(self) -> list[str]:
        return [f"{k}={v}" for k, v in self.axes]


def cells_from_axes(axes: dict[str, list[str]]) -> list[MapCell]:
    return [MapCell(tuple(zip(axes, combo, strict=True))) for combo in itertools.product(*axes.values())]


def parse_overrides(tokens: list[str]) -> tuple[dict[str, list[str]], list[str]]:
    """``key=v1,v2`` tokens become axes (the cartesian product of them are the cells), ``key=v`` fixed
    overrides."""
    axes, fixed = {}, []
    for token in tokens:
        key, eq, value = token.partition("=")
        key = key.lstrip("+~")
        if not eq or not key:
            raise ConfigError("override", token, "write key=value or key=v1,v2,... (a swept key)")
        if key in RESERVED_KEYS:
            raise ConfigError(key, value, "set by normexp-lrmap: use --lr-min/--lr-max/--resolution "
                                          "and --seeds")
        if "," in value:
            axes[key] = [v for v in value.split(",") if v]
        else:
            fixed.append(token)
    return axes, fixed


def run_dir(out: Path, cell: MapCell, lr: float, seed: int) -> Path:
    return Path(out) / cell.name / f"lr{lr:.6g}" / f"seed{seed}"


def read_points(out: Path, cell: MapCell, lrs: Iterable[float], seeds: list[int]) -> pd.DataFrame:
    """One row per (lr, seed) with its summary; status ``missing`` where no run has finished."""
    rows = []
    for lr in lrs:
        for seed in seeds:
            d = run_dir(out, cell, lr, seed)
            summary = read_json(d / SUMMARY) or {"status": "missing"}
            rows.append({"cell": cell.name, **dict(cell.axes), "lr": lr, "seed": seed,
                         "status": summary.get("status"),
                         **{k: summary.get(k) for k in (SCORE_KEY, *LOSS_KEYS)},
                         "run_dir": str(d)})
    return pd.DataFrame(rows)


def per_lr(points: pd.DataFrame, loss: str = "train_loss") -> pd.DataFrame:
    """Seed aggregates of one cell's points, indexed by lr."""
    pts = points.assign(done=points["status"] == "completed",
                        diverged=points["status"] == "diverged",
                        finished=points["status"].isin([*FINISHED, "failed"]))
    for col in (SCORE_KEY, loss):
        pts[col] = pd.to_numeric(pts[col], errors="coerce").where(pts["done"])
    return pts.groupby("lr").agg(seeds=("seed", "size"), finished=("finished", "sum"),
                                 completed=("done", "sum"), diverged=("diverged", "sum"),
                                 score=(SCORE_KEY, "mean"), loss=(loss, "mean"),
                                 loss_min=(loss, "min"), loss_max=(loss, "max"))


@dataclass
class LrMap:
    """A map's plan; ``next_round`` and ``summarize`` are pure functions of the points measured so far, so an
    experiment hook can drive the search with its own executor."""

    cells: list[MapCell]
    seeds: list[int]
    grid: LrGrid = field(default_factory=LrGrid)
    fraction: float = 0.5
    loss: str = "train_loss"
    dense: bool = False

    def outcome(self, cell_points: pd.DataFrame) -> dict[int, bool]:
        agg = per_lr(cell_points, self.loss)
        agg = agg[agg["finished"] == agg["seeds"]]
        index = {lr: i for i, lr in enumerate(self.grid.values)}
        return {index[lr]: bool(ok) for lr, ok in trains(agg, self.fraction).items()}

    def next_round(self, points_of: Callable[[MapCell, list[float]], pd.DataFrame]) -> list[tuple[MapCell,
                                                                                                   float]]:
        """The (cell, lr) points to run next, whose seeds have not all finished; [] when every cell is
        done. ``points_of(cell, lrs)`` gives the cell's points at those lrs (status ``missing`` if not run).
        """
        todo = []
        for cell in self.cells:
            lrs = self.evaluated_lrs(cell, points_of)
            outcome = self.outcome(points_of(cell, lrs)) if lrs else {}
            todo += [(cell, self.grid.values[i]) for i in next_indices(self.grid, outcome, self.dense)]
        return todo

    def evaluated_lrs(self, cell: MapCell, points_of) -> list[float]:
        """The lrs the search has asked for so far in this cell (replaying it from the grid's start)."""
        asked: list[float] = []
        while True:
            outcome = self.outcome(points_of(cell, asked)) if asked else {}
            if len(outcome) < len(asked):  # a point still running
                return asked
            new = [self.grid.values[i] for i in next_indices(self.grid, outcome, self.dense)]
            if not new:
                return asked
            asked += new

    def summarize(self, points_of) -> tuple[pd.DataFrame, pd.DataFrame]:
        """(one row per cell, every point the search used)."""
        rows, all_points = [], []
        top = self.grid.values[-1]
        for cell in self.cells:
            pts = points_of(cell, self.evaluated_lrs(cell, points_of))
            all_points.append(pts)
            agg = per_lr(pts, self.loss) if len(pts) else per_lr(pts.assign(lr=[], seed=[], status=[]))
            ok = trains(agg, self.fraction) if len(agg) else pd.Series(dtype=bool)
            stable = max(ok[ok].index, default=math.nan)
            complete = agg[agg["completed"] == agg["seeds"]]
            rows.append({"cell": cell.name, **dict(cell.axes),
                         "largest_stable_lr": stable,
                         "edge": ("below lr_min" if math.isnan(stable) else
                                  f">= {top:g} (grid top)" if stable >= top else
                                  f"< {stable * self.grid.resolution:.4g}"),
                         "best_lr": complete["loss"].idxmin() if len(complete) else math.nan,
                         f"best_{self.loss}": complete["loss"].min() if len(complete) else math.nan,
                         f"best_{SCORE_KEY}": complete["score"].max() if len(complete) else math.nan,
                         "runs": int(agg["seeds"].sum()) if len(agg) else 0,
                         "dense_runs": len(self.grid.values) * len(self.seeds)})
        points = pd.concat(all_points, ignore_index=True) if all_points else pd.DataFrame()
        return pd.DataFrame(rows), points


def search_vs_dense(lrmap: LrMap, points_of) -> pd.DataFrame:
    """Per cell: the runs the adaptive search needs and the largest stable lr it finds, against the dense
    grid's, from the same run dirs (the dense grid holds every point the search asks for), and whether the
    two edges are within one resolution step."""
    search, dense = (LrMap(lrmap.cells, lrmap.seeds, lrmap.grid, lrmap.fraction, lrmap.loss, d)
                     .summarize(points_of)[0] for d in (False, True))
    steps = np.log(search["largest_stable_lr"] / dense["largest_stable_lr"]) / math.log(lrmap.grid.resolution)
    both_none = search["largest_stable_lr"].isna() & dense["largest_stable_lr"].isna()
    return pd.DataFrame({"cell": search["cell"], "search_runs": search["runs"], "dense_runs": dense["runs"],
                         "run_fraction": search["runs"] / dense["runs"],
                         "search_edge": search["largest_stable_lr"], "dense_edge": dense["largest_stable_lr"],
                         "edge_steps_apart": steps.round(3), "agree": both_none | (steps.abs() <= 1 + 1e-6)})
