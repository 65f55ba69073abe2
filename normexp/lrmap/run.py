"""Running a map: its runs through the reproduction executor into ordinary run dirs (a killed map
resumes)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from normexp.config import validate
from normexp.errors import ConfigError
from normexp.lrmap.figures import map_figures
from normexp.lrmap.search import LrGrid, LrMap, MapCell, read_points, run_dir
from normexp.records import FINISHED
from normexp.reproduce.execute import execute
from normexp.reproduce.plan import Planner, move_aside_stale
from normexp.reproduce.planned_run import PlannedRun
from normexp.reproduce.spec import merge_overrides


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
