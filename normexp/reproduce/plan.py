"""Planning: an experiment at a profile -> one run per (cell, seed), each a composed config, its overrides
and its run dir; stages that add cells once earlier runs are finished."""

from __future__ import annotations

import itertools
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

from omegaconf import OmegaConf

from normexp.claims import Pending, Runs
from normexp.compose import compose_sharing
from normexp.config import total_steps, validate
from normexp.data import fashion_mnist_available, load_arrays
from normexp.errors import ConfigError
from normexp.records import RunDirBusy, writing

from .planned_run import PlannedRun
from .spec import CellSpec, Experiment, merge_overrides
from .tables import LazyRuns, run_table

DATA_FALLBACKS = {"fashion_mnist": "mnist5k"}  # offline profiles only
CADENCE_KEY = re.compile(r"^(train\.\w+_every|probes\.\w+\.every)$")


def planned_steps(cfg) -> int:
    """Optimizer steps of a run (``train.epochs`` needs the training set's size: the data is read once)."""
    if not cfg.train.get("epochs"):
        return int(cfg.train.steps)
    n_train = len(load_arrays(cfg.data)[1])
    subset = cfg.data.get("train_subset")
    return total_steps(cfg, min(n_train, int(subset)) if subset else n_train)


def cadence_fraction(override: str) -> float | None:
    """The fraction of a cadence override given as one (``train.eval_every=0.01``), else None."""
    key, _, value = override.partition("=")
    if not CADENCE_KEY.match(key.lstrip("+")):
        return None
    try:
        v = float(value)
    except ValueError:
        return None
    return v if 0 < v < 1 else None


def aside_path(run_dir: Path) -> Path:
    """A new, empty folder beside ``run_dir`` for a run dir whose computation changed:
    ``seed0.changed-20250101-120000`` (``-2``, ``-3``, ... when taken), which sorts right after ``seed0``."""
    base = run_dir.with_name(f"{run_dir.name}.changed-{time.strftime('%Y%m%d-%H%M%S')}")
    for n in itertools.count(1):
        target = base if n == 1 else base.with_name(f"{base.name}-{n}")
        try:
            target.mkdir()  # exclusive: no other mover gets this name
            return target
        except FileExistsError:
            continue
    raise AssertionError  # unreachable


def move_aside_stale(runs: list[PlannedRun], log) -> dict[Path, Path]:
    """Move each run dir whose computation differs from the planned run's aside (never delete one), so that
    the run starts afresh; a run dir that another live process writes is left where it is (that run is
    then skipped). Returns {run dir: where it went}."""
    moved = {}
    for r in runs:
        changes = r.changes
        if not changes:
            continue
        key, old, new = changes[0]
        more = f" and {len(changes) - 1} more key(s)" if len(changes) > 1 else ""
        holds = f"{r.run_dir} holds a run with {key}={old!r} (planned {new!r}){more}"
        try:
            with writing(r.run_dir):
                target = aside_path(r.run_dir)
                os.replace(r.run_dir, target)  # onto the empty folder aside_path made
        except RunDirBusy as busy:
            log(f"{holds}, but {busy}: left as it is")
            continue
        moved[r.run_dir] = target
        log(f"{holds}: moved it to {target}; running it again")
    return moved


class Planner:
    """Composes (and caches) the configs of an invocation's runs."""

    def __init__(self, profile: str, outputs: Path, jobs: int, check_data: bool = True,
                 threads: int | None = None):
        self.profile, self.outputs, self.jobs, self.check_data = profile, Path(outputs), jobs, check_data
        self.threads = threads if threads is not None else (1 if jobs > 1 else 0)
        self._composed: dict[tuple, tuple] = {}
        self._bases: dict = {}  # compose_sharing's: one composition per choice of config groups
        self._shared: dict[tuple, PlannedRun] = {}  # a run's overrides -> the first run planned with them
        self.notices: dict[str, list[str]] = {}

    def runtime_overrides(self) -> list[str]:
        return ["train.progress=false", *([f"train.threads={self.threads}"] if self.threads else [])]

    def compose(self, overrides: list[str]):
        key = tuple(overrides)
        if key not in self._composed:
            cfg = compose_sharing(overrides, self._bases, return_hydra_config=True)
            chosen = {k: v for k, v in cfg.hydra.runtime.choices.items() if not k.startswith("hydra")}
            OmegaConf.set_struct(cfg, False)
            del cfg["hydra"]
            self._composed[key] = (cfg, chosen)
        return self._composed[key]

    def notice(self, exp: Experiment, text: str) -> None:
        if text not in self.notices.setdefault(exp.id, []):
            self.notices[exp.id].append(text)

    def _with_fallback(self, exp: Experiment, overrides: list[str]) -> list[str]:
        cfg, _ = self.compose(overrides)
        fallback = DATA_FALLBACKS.get(cfg.data.name)
        if self.profile == "paper" or not fallback or fashion_mnist_available(cfg.data):
            return overrides
        self.notice(exp, f"{cfg.data.name} is not installed (scripts/setup_data.sh installs it): this "
                         f"experiment ran on {fallback} instead, so its numbers are not from the paper's "
                         "data set")
        return merge_overrides(overrides, [f"data={fallback}"])

    def _in_steps(self, overrides: list[str]) -> tuple[list[str], int]:
        """Cadences given as fractions of the run become steps (at least 1). The composed config of the
        resolved overrides is the given one with those numbers set (composing again would cost as much)."""
        cfg, chosen = self.compose(overrides)
        steps = planned_steps(cfg)
        resolved, cadences = [], {}
        for o in overrides:
            f = cadence_fraction(o)
            if f is None:
                resolved.append(o)
                continue
            key = o.split("=", 1)[0]
            cadences[key] = max(1, round(f * steps))
            resolved.append(f"{key}={cadences[key]}")
        if cadences:
            cfg = cfg.copy()
            for key, every in cadences.items():
                OmegaConf.update(cfg, key.lstrip("+"), every)
            self._composed.setdefault(tuple(resolved), (cfg, chosen))
        return resolved, steps

    def runs(self, exp: Experiment, cells: list[CellSpec]) -> list[PlannedRun]:
        planned = []
        for cell in cells:
            overrides = merge_overrides(exp.spec["base"], list(cell.overrides),
                                        exp.profile_overrides(self.profile), list(cell.pinned),
                                        self.runtime_overrides())
            overrides, steps = self._in_steps(self._with_fallback(exp, overrides))
            cfg, chosen = self.compose(overrides)
            self._validate(exp, cell, cfg)
            for seed in exp.seeds(self.profile):
                run_cfg = cfg.copy()
                run_cfg.seed = seed
                run_dir = self.outputs / self.profile / exp.id / cell.name / f"seed{seed}"
                seeded = merge_overrides(overrides, [f"seed={seed}"])
                run_dir, seeded = self._share(exp, run_dir, seeded)
                planned.append(PlannedRun(exp.id, cell.name, seed, seeded, run_dir, run_cfg, chosen, steps))
        return planned

    def _share(self, exp: Experiment, run_dir: Path, overrides: list[str]) -> tuple[Path, list[str]]:
        """A run another experiment of this invocation planned with the same overrides is the same run: its
        run dir (and override order) serve both, so it trains once."""
        first = self._shared.setdefault(tuple(sorted(overrides)),
                                        PlannedRun(exp.id, "", 0, overrides, run_dir))
        if first.experiment != exp.id:
            return first.run_dir, list(first.overrides)
        return run_dir, overrides

    def _validate(self, exp: Experiment, cell: CellSpec, cfg) -> None:
        try:
            validate(cfg)
        except ConfigError as error:
            if self.check_data or error.key != "data.name":
                raise ConfigError(f"{exp.id} cell {cell.name}: {error.key}", error.value,
                                  error.allowed) from None
            self.notice(exp, f"data not here: {error}")


@dataclass
class Context:
    """What an experiment's hooks see: its spec, the profile and the runs so far."""

    experiment: Experiment
    profile: str
    runs: Runs
    notices: list[str] = field(default_factory=list)

    @property
    def params(self) -> dict:
        return self.experiment.params

    @property
    def seeds(self) -> list[int]:
        return self.experiment.seeds(self.profile)


def plan_experiment(exp: Experiment, planner: Planner) -> tuple[list[PlannedRun], str | None]:
    """Every run the experiment needs that can be planned now, and what later stages wait for (or None)."""
    cells = exp.cells(planner.profile)
    runs = planner.runs(exp, cells)
    stages = exp.spec.get("stages")
    if not stages:
        return runs, None
    known = {c.name for c in cells}
    while True:  # the hook sees the runs of its own earlier cells too (e.g. a search's earlier rounds)
        try:
            ctx = Context(exp, planner.profile, LazyRuns(run_table(runs)))
            more = [CellSpec(c["name"], tuple(c.get("overrides", []))) for c in exp.hook(stages)(ctx)]
        except Pending as waiting:
            return runs, str(waiting)
        new = [c for c in more if c.name not in known]
        if not new:
            return runs, None
        runs += planner.runs(exp, new)
        known |= {c.name for c in new}
