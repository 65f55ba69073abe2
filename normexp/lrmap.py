"""normexp-lrmap: how large a learning rate each cell of a grid tolerates, and an lr range test.

For each cell (one combination of the swept keys, e.g. ``norm=batch data.batch_size=32``) the map finds

- the **largest stable lr**: the largest lr on a geometric grid (``lr_min * resolution**k``) that *trains*:
  every seed completes (none diverges or fails) and the seed mean of the final **test accuracy** is at least
  ``fraction`` of the best seed mean over the cell's lrs;
- the **best lr**: the lr whose seeds all complete with the lowest seed-mean final loss (``--loss``,
  default the final training loss).

Search: a coarse scan (every ``stride``-th grid point, ``points_per_decade`` per decade), then bisection in
log space between the largest lr that trains and the smallest evaluated lr above it, until they are
neighbours on the grid (one resolution step apart). ``--dense`` runs every grid point instead, for checking
the search. Every run is an ordinary run dir ``<out>/<cell>/lr<lr>/seed<k>`` run through the reproduction
executor (``--jobs`` joblib workers), so a killed map resumes: finished runs are read, not rerun.

The range test (Smith 2017; fastai's ``lr_find``): one run with an exponentially rising lr, its loss vs lr,
and a suggestion; see :func:`lr_range_test` and :func:`suggest_lr`.
"""

from __future__ import annotations

import argparse
import copy
import itertools
import math
import shlex
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from normexp.errors import ConfigError, choices
from normexp.records import FINISHED, SUMMARY, read_json
from normexp.reproduce.execute import execute
from normexp.reproduce.plan import PlannedRun, Planner, move_aside_stale
from normexp.reproduce.spec import merge_overrides

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


# ---------------------------------------------------------------- running a map (the reproduction executor)

class MapFailed(RuntimeError):
    """A run of the map failed (raised an error): the map stops; rerunning it retries that run."""


@dataclass
class MapRun:
    """Runs an :class:`LrMap` into run dirs under ``out``."""

    lrmap: LrMap
    fixed: list[str]
    out: Path
    jobs: int = 1
    log: Callable[[str], None] = print
    ran: int = 0

    def __post_init__(self):
        self.planner = Planner("lrmap", self.out, self.jobs)
        self._cells = {c.name: self._compose(c) for c in self.lrmap.cells}  # every cell checked up front

    def _compose(self, cell: MapCell):
        from normexp.config import validate

        overrides = merge_overrides(self.fixed, cell.overrides, self.planner.runtime_overrides())
        cfg, chosen = self.planner.compose(overrides)
        try:
            validate(cfg)
        except ConfigError as error:
            raise ConfigError(f"cell {cell.name}: {error.key}", error.value, error.allowed) from None
        return overrides, cfg, chosen

    def points_of(self, cell: MapCell, lrs: list[float]) -> pd.DataFrame:
        return read_points(self.out, cell, lrs, self.lrmap.seeds)

    def planned(self, cell: MapCell, lr: float, seed: int):
        overrides, cfg, chosen = self._cells[cell.name]
        run_cfg = cfg.copy()
        run_cfg.optim.lr, run_cfg.seed = lr, int(seed)
        return PlannedRun("lrmap", f"{cell.name} lr={lr:g}", int(seed),
                          merge_overrides(overrides, [f"optim.lr={lr:.6g}", f"seed={seed}"]),
                          run_dir(self.out, cell, lr, seed), run_cfg, chosen)

    def run(self) -> tuple[pd.DataFrame, pd.DataFrame]:
        while todo := self.lrmap.next_round(self.points_of):
            runs = [self.planned(c, lr, s) for c, lr in todo for s in self.lrmap.seeds]
            runs = [r for r in runs if r.stale or not r.finished]
            move_aside_stale(runs, lambda text: self.log(f"normexp-lrmap: {text}"))
            self.log(f"normexp-lrmap: {len(runs)} runs ({len(todo)} cell-lr points)")
            summaries = execute(runs, self.jobs, log=self.log)
            self.ran += len(runs)
            failed = [(r, s) for r, s in zip(runs, summaries, strict=True) if s.get("status") not in FINISHED]
            if failed:  # a bug or a crash, not an lr that does not train: stop with what it said
                raise MapFailed(f"{failed[0][0].run_dir}: {failed[0][1].get('status')}: "
                                f"{failed[0][1].get('error')}")
        return self.lrmap.summarize(self.points_of)


def lr_map(cells: list[MapCell], seeds: list[int], out: Path, fixed: list[str] = (), jobs: int = 1,
           grid: LrGrid | None = None, fraction: float = 0.5, loss: str = "train_loss", dense: bool = False,
           log=print) -> tuple[pd.DataFrame, dict]:
    """Run (or read back) a map; returns (one row per cell, {name: matplotlib Figure}). The entry for
    experiment hooks; ``normexp-lrmap`` is this plus the range test and writing files."""
    lrmap = LrMap(cells, list(seeds), grid or LrGrid(), fraction, loss, dense)
    table, points = MapRun(lrmap, list(fixed), Path(out), jobs, log).run()
    return table, map_figures(table, points, cells, loss)


# ---------------------------------------------------------------- figures

def _row_col(cells: list[MapCell]) -> tuple[list[str], list[str], Callable[[MapCell], tuple[str, str]]]:
    """Heat map layout: the first swept key's values as rows, the combinations of the others as columns."""
    if not cells or not cells[0].axes:
        return ["all"], ["all"], lambda c: ("all", "all")
    key = lambda c: (f"{c.axes[0][0]}={c.axes[0][1]}",  # noqa: E731
                     ",".join(f"{k}={v}" for k, v in c.axes[1:]) or "all")
    rows = list(dict.fromkeys(key(c)[0] for c in cells))
    cols = list(dict.fromkeys(key(c)[1] for c in cells))
    return rows, cols, key


def heatmap(table: pd.DataFrame, cells: list[MapCell]):
    from normexp.plots import figure

    rows, cols, key = _row_col(cells)
    grid = np.full((len(rows), len(cols)), np.nan)
    fig, axes = figure(width=1.3 * len(cols) + 2.2, height=0.75 * len(rows) + 1.4)
    ax = axes[0][0]
    by_name, labels = table.set_index("cell"), []
    for c in cells:
        r, k = key(c)
        row = by_name.loc[c.name]
        i, j = rows.index(r), cols.index(k)
        grid[i, j] = math.log10(row["largest_stable_lr"]) if row["largest_stable_lr"] > 0 else np.nan
        edge = row["largest_stable_lr"]
        text = "none" if not edge > 0 else (">=" if row["edge"].startswith(">=") else "") + f"{edge:.3g}"
        best = f"\nbest {row['best_lr']:.3g}" if row["best_lr"] > 0 else ""
        labels.append((j, i, text + best))
    image = ax.imshow(np.ma.masked_invalid(grid), cmap=matplotlib_cmap(), aspect="auto")
    for j, i, text in labels:  # dark text on the light end of the colour map, white on the dark end
        light = np.isnan(grid[i, j]) or image.norm(grid[i, j]) > 0.5
        ax.text(j, i, text, ha="center", va="center", fontsize=8, color="black" if light else "white")
    fig.colorbar(image, ax=ax, label="log10 largest stable lr")
    ax.set_xticks(range(len(cols)), cols, rotation=20, ha="right", fontsize=8)
    ax.set_yticks(range(len(rows)), rows, fontsize=8)
    ax.set_title("largest stable lr (best-loss lr below it)", fontsize=9)
    return fig


def matplotlib_cmap():
    import matplotlib

    cmap = matplotlib.colormaps["viridis"].copy()
    cmap.set_bad("0.85")  # no lr trains
    return cmap


def loss_vs_lr(points: pd.DataFrame, cells: list[MapCell], loss: str):
    """Final loss (seed mean, min-max band) vs lr, one panel per value of the first swept key, one line per
    combination of the others; a diverged or failed run is an x at the top of its panel."""
    from normexp.plots import figure, mark_diverged_at_top, mean_band

    rows, cols, key = _row_col(cells)
    fig, axes = figure(1, len(rows), width=3.6, height=3.0, sharey=True)
    for c in cells:
        r, k = key(c)
        ax = axes[0][rows.index(r)]
        pts = points[points["cell"] == c.name]
        agg = per_lr(pts, loss).sort_index()
        done = agg[agg["completed"] > 0]
        color = mean_band(ax, done.index, done["loss"], done["loss_min"], done["loss_max"], label=k)
        mark_diverged_at_top(ax, pts.loc[pts["status"].isin(["diverged", "failed"]), "lr"], color)
        ax.set_title(r, fontsize=9)
        ax.set_xscale("log")
        ax.set_xlabel("learning rate")
    axes[0][0].set_ylabel(f"final {loss.replace('_', ' ')}")
    axes[0][0].set_yscale("log")
    for ax in axes[0]:
        ax.legend(fontsize=7, title="x at top: diverged", title_fontsize=7)
    return fig


def map_figures(table: pd.DataFrame, points: pd.DataFrame, cells: list[MapCell], loss: str) -> dict:
    return {"lrmap_heatmap": heatmap(table, cells), "lrmap_loss_vs_lr": loss_vs_lr(points, cells, loss)}


# ---------------------------------------------------------------- the range test

@dataclass
class RangeTest:
    lrs: list[float]
    losses: list[float]
    smoothed: list[float]
    suggestion: float
    rule: str


SUGGESTION_RULES = ("steepest", "min/10")


def lr_range_test(model: torch.nn.Module, optimizer: torch.optim.Optimizer, loss_fn, batches: Iterable,
                  start: float = 1e-6, end: float = 10.0, steps: int = 100, smoothing: float = 0.05,
                  rule: str = "steepest", stop_factor: float = 4.0) -> RangeTest:
    """Smith's lr range test: ``steps`` optimizer steps with lr rising exponentially from ``start`` to
    ``end`` (lr_i = start * (end/start)**(i/(steps-1)), the lr of step i paired with that step's loss);
    the loss is smoothed by an exponential moving average with weight ``smoothing`` on the new value,
    bias-corrected as fastai's; the test stops once the smoothed loss exceeds ``stop_factor`` x its minimum
    (or is not finite).

    Suggestion (``rule``): ``steepest`` (default, torch-lr-finder's): the lr where the smoothed loss falls
    fastest per unit of log lr, looked for from the 10% mark up to the smoothed minimum; ``min/10``
    (fastai v1's): a tenth of the lr at the smoothed minimum.

    The model's parameters and buffers, its train/eval mode, the optimizer's state and lrs, and torch's CPU
    RNG state are restored afterwards (the test trains the model)."""
    if rule not in SUGGESTION_RULES:
        raise ConfigError("rule", rule, choices(SUGGESTION_RULES))
    if not 0 < smoothing <= 1:
        raise ConfigError("smoothing", smoothing, "must be in (0, 1]")
    saved = (copy.deepcopy(model.state_dict()), copy.deepcopy(optimizer.state_dict()), model.training,
             torch.get_rng_state())
    lrs, losses, smoothed, avg = [], [], [], 0.0
    batches = itertools.cycle(batches) if isinstance(batches, (list, tuple)) else iter(batches)
    try:
        model.train()
        for i in range(steps):
            lr = start * (end / start) ** (i / max(steps - 1, 1))
            for group in optimizer.param_groups:
                group["lr"] = lr
            x, y = next(batches)
            loss = loss_fn(model(x), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            value = float(loss.detach())
            avg = (1 - smoothing) * avg + smoothing * value
            lrs.append(lr)
            losses.append(value)
            smoothed.append(avg / (1 - (1 - smoothing) ** (i + 1)))
            if not math.isfinite(smoothed[-1]) or smoothed[-1] > stop_factor * min(smoothed):
                break
    finally:
        model.load_state_dict(saved[0])
        optimizer.load_state_dict(saved[1])
        model.train(saved[2])
        torch.set_rng_state(saved[3])
    return RangeTest(lrs, losses, smoothed, suggest(lrs, smoothed, rule), rule)


def suggest(lrs: list[float], smoothed: list[float], rule: str = "steepest") -> float:
    s = np.asarray(smoothed, dtype=float)
    s = np.where(np.isfinite(s), s, np.inf)
    lowest = int(np.argmin(s))
    if rule == "min/10":
        return lrs[lowest] / 10
    first = min(len(s) // 10, max(lowest - 1, 0))
    window = s[first:lowest + 1]
    if len(window) < 2:
        return lrs[lowest]
    slope = np.gradient(window, np.log(np.asarray(lrs[first:lowest + 1])))
    return lrs[first + int(np.argmin(slope))]


def suggest_lr(cfg_or_overrides, start: float = 1e-5, end: float = 10.0, steps: int = 100,
               smoothing: float = 0.05, rule: str = "steepest") -> RangeTest:
    """The range test on a config (a composed DictConfig, or a list of normexp-train overrides): its model,
    norm, data (training batches in the run's order), optimizer and loss, from the config's seed. The
    suggested lr is ``.suggestion``."""
    from normexp.config import compose, resolve_device, validate
    from normexp.data import build_data
    from normexp.models import build_model
    from normexp.norms import NormSpec
    from normexp.optim import build_optimizer
    from normexp.train import make_loss, seed_everything

    cfg = compose(list(cfg_or_overrides)) if isinstance(cfg_or_overrides, (list, tuple)) else cfg_or_overrides
    validate(cfg)
    device = resolve_device(cfg.device)
    seed_everything(int(cfg.seed))
    data = build_data(cfg.data, device, int(cfg.seed))
    model = build_model(cfg.model, NormSpec.from_config(cfg.norm), data.info.in_shape,
                        data.info.num_classes).to(device)
    optimizer = build_optimizer(cfg.optim, model)
    batches = (data.batch(step) for step in range(steps))
    return lr_range_test(model, optimizer, make_loss(data.info.task), batches, start, end, steps, smoothing,
                         rule)


def range_test_column(run: MapRun, table: pd.DataFrame, steps: int, rule: str, log=print):
    """Each cell's range-test suggestion (first seed) beside its edge; returns (table, curves)."""
    curves, suggestions = [], []
    for cell in run.lrmap.cells:
        _, cfg, _ = run._cells[cell.name]
        cfg = cfg.copy()
        cfg.seed = int(run.lrmap.seeds[0])
        test = suggest_lr(cfg, run.lrmap.grid.lr_min / 10, run.lrmap.grid.lr_max, steps, rule=rule)
        log(f"normexp-lrmap: range test {cell.name}: suggests {test.suggestion:.3g} ({rule})")
        suggestions.append(test.suggestion)
        curves.append(pd.DataFrame({"cell": cell.name, "lr": test.lrs, "loss": test.losses,
                                    "smoothed": test.smoothed}))
    table = table.assign(range_test_lr=suggestions)
    table["edge_over_range_test"] = table["largest_stable_lr"] / table["range_test_lr"]
    return table, pd.concat(curves, ignore_index=True)


def range_test_figure(curves: pd.DataFrame, table: pd.DataFrame):
    from normexp.plots import figure

    fig, axes = figure(width=5.2, height=3.6)
    ax = axes[0][0]
    for (name, curve), (_, row) in zip(curves.groupby("cell", sort=False), table.iterrows(), strict=True):
        line, = ax.plot(curve["lr"], curve["smoothed"], label=name, lw=1)
        ax.axvline(row["range_test_lr"], color=line.get_color(), ls=":", lw=1)
        if row["largest_stable_lr"] > 0:
            ax.axvline(row["largest_stable_lr"], color=line.get_color(), ls="--", lw=1)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("learning rate (rising within one run)")
    ax.set_ylabel("smoothed training loss")
    ax.set_title("range test: suggestion (dotted) vs map edge (dashed)", fontsize=9)
    ax.legend(fontsize=6)
    return fig


# ---------------------------------------------------------------- command line

def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="normexp-lrmap", description=__doc__.splitlines()[0],
                                epilog="example: normexp-lrmap norm=none,batch,group,layer "
                                       "data.batch_size=4,32,128 model=vgg_small profile=quick --seeds 0,1")
    p.add_argument("overrides", nargs="*", help="key=v1,v2 (a swept key: the cells are their cartesian "
                   "product) or key=value (the same in every cell)")
    p.add_argument("--seeds", default="0", help="comma-separated seeds per (cell, lr) (default 0)")
    p.add_argument("--lr-min", type=float, default=1e-3, help="lowest lr of the grid (default 1e-3)")
    p.add_argument("--lr-max", type=float, default=10.0, help="highest lr of the grid (default 10)")
    p.add_argument("--resolution", type=float, default=1.25,
                   help="grid factor (default 1.25): the edge is found to within it")
    p.add_argument("--points-per-decade", type=float, default=2.0, help="of the coarse scan (default 2)")
    p.add_argument("--fraction", type=float, default=0.5,
                   help="an lr trains when no seed diverged and its seed-mean final test accuracy is at "
                        "least this fraction of the cell's best (default 0.5)")
    p.add_argument("--loss", default="train_loss", help="final loss for the best lr: " + ", ".join(LOSS_KEYS))
    p.add_argument("--dense", action="store_true", help="run every grid point (to check the search)")
    p.add_argument("--jobs", type=int, default=2, help="runs in parallel (joblib workers)")
    p.add_argument("--range-test", action="store_true", help="also run the lr range test per cell")
    p.add_argument("--range-steps", type=int, default=100)
    p.add_argument("--rule", default="steepest", help="range-test suggestion: " + ", ".join(SUGGESTION_RULES))
    p.add_argument("--out", type=Path, default=Path("outputs/lrmap"), help="run dirs, table and figures")
    return p.parse_args(argv)


def _seeds(text: str) -> list[int]:
    try:
        seeds = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise ConfigError("--seeds", text, "comma-separated integers, e.g. 0,1") from None
    if not seeds:
        raise ConfigError("--seeds", text, "at least one seed")
    return seeds


def main(argv=None) -> int:
    from normexp.plots import save_figure

    args = parse_args(argv)
    command = "normexp-lrmap " + " ".join(map(shlex.quote, sys.argv[1:] if argv is None else argv))
    if args.loss not in LOSS_KEYS:
        raise ConfigError("--loss", args.loss, choices(LOSS_KEYS))
    if args.rule not in SUGGESTION_RULES:
        raise ConfigError("--rule", args.rule, choices(SUGGESTION_RULES))
    if not 0 < args.fraction <= 1:
        raise ConfigError("--fraction", args.fraction, "must be in (0, 1]")
    if args.jobs < 1:
        raise ConfigError("--jobs", args.jobs, "must be an integer >= 1")
    axes, fixed = parse_overrides(args.overrides)
    grid = LrGrid(args.lr_min, args.lr_max, args.resolution, args.points_per_decade)
    cells = cells_from_axes(axes)
    lrmap = LrMap(cells, _seeds(args.seeds), grid, args.fraction, args.loss, args.dense)
    run = MapRun(lrmap, fixed, args.out, args.jobs, log=lambda s: print(s, flush=True))
    table, points = run.run()
    figures = map_figures(table, points, cells, args.loss)
    if args.range_test:
        table, curves = range_test_column(run, table, args.range_steps, args.rule)
        curves.to_csv(args.out / "range_test.csv", index=False)
        figures["range_test"] = range_test_figure(curves, table)
    if args.dense:
        check = search_vs_dense(lrmap, run.points_of)
        check.to_csv(args.out / "lrmap_search_vs_dense.csv", index=False)
        print(check.to_string(index=False, float_format="{:.4g}".format))
        needed, grid_runs = check["search_runs"].sum(), check["dense_runs"].sum()
        print(f"normexp-lrmap: the search needs {needed} of the dense grid's {grid_runs} runs "
              f"({needed / grid_runs:.0%}); "
              f"largest stable lr within one step of the dense grid's in {int(check['agree'].sum())} of "
              f"{len(check)} cells")
    name = "lrmap_dense" if args.dense else "lrmap"
    table.to_csv(args.out / f"{name}.csv", index=False)
    points.to_csv(args.out / f"{name}_points.csv", index=False)
    for fig_name, fig in figures.items():
        save_figure(fig, args.out / (fig_name.replace("lrmap", name)), command)
    shown = table.drop(columns=["cell"] if axes else [])
    with pd.option_context("display.width", 200, "display.max_columns", 30, "display.float_format",
                           "{:.4g}".format):
        print(shown.to_string(index=False))
    used, dense = int(table["runs"].sum()), int(table["dense_runs"].sum())
    print(f"normexp-lrmap: {used} runs used ({run.ran} run now), {used / dense:.0%} of the dense grid's "
          f"{dense}; wrote {args.out / name}.csv and figures")
    return 0


def cli() -> None:
    try:
        raise SystemExit(main())
    except ConfigError as error:
        print(f"normexp-lrmap: error: {error}", file=sys.stderr)
        raise SystemExit(2) from None
    except MapFailed as error:
        print(f"normexp-lrmap: a run failed: {error}", file=sys.stderr)
        raise SystemExit(1) from None


if __name__ == "__main__":
    cli()
