"""normexp-reproduce's runs and result writes, on one pool of workers.

Each experiment moves through its stages on its own: once none of its runs is queued or running it is planned
again (a stage hook then sees its finished runs), and once that plans nothing new its results are written,
while the other experiments' runs go on. So no core waits at the end of a stage for runs of other
experiments, the writes fill the cores between runs instead of following the last one, and the first runs
start while the later experiments are being planned. Workers take, in this order: writes (the slowest
first, by ``analysis_seconds`` of the claims.json each replaces), runs of experiments with a ``stages`` hook
(a later stage may wait for them: started last, a chain of short stages would end the suite with a core
idle), then the other runs; within each, the longest first, by the wall time the same run took in the
results the last invocation wrote (``runs.csv``), so that the suite does not end on a long run started last.
Each run is tried once per invocation.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, wait
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
from joblib import parallel_config
from joblib.externals.loky import get_reusable_executor

from normexp.records import atomic_write_json, read_json

from . import execute
from .execute import log_run, start_workers
from .plan import Planner, move_aside_stale, plan_experiment
from .planned_run import PlannedRun


@dataclass(order=True)
class Task:
    rank: tuple
    call: tuple = field(compare=False)  # (function, *arguments) for the pool
    run: PlannedRun | None = field(default=None, compare=False)
    experiment: str | None = field(default=None, compare=False)  # a write's


class InProcess:
    """The pool of ``--jobs 1``: each task runs in this process when submitted."""

    def submit(self, fn, *args) -> Future:
        future = Future()
        future.set_result(fn(*args))  # an error is raised here, as it was without a pool
        return future

    def shutdown(self, **_) -> None:
        pass


class Workers:
    """The pool of ``--jobs`` > 1: joblib's loky processes, forked warm (``start_workers``). A joblib
    ``Parallel`` inside a task runs in threads, as in joblib's own workers (the loss surfaces' ``jobs``),
    not in a second pool of processes started from the worker."""

    def __init__(self, jobs: int):
        start_workers(jobs)
        self.executor = get_reusable_executor(max_workers=jobs, reuse=True)

    def submit(self, fn, *args) -> Future:
        return self.executor.submit(_nested_in_threads, fn, *args)

    def shutdown(self, **kwargs) -> None:
        self.executor.shutdown(**kwargs)


def _nested_in_threads(fn, *args):
    with parallel_config(backend="threading"):
        return fn(*args)


def worker_pool(jobs: int):
    return InProcess() if jobs == 1 else Workers(jobs)


def previous_run_seconds(results: Path, profile: str) -> dict[tuple, float]:
    """(experiment, cell, seed) -> the wall seconds of that run in the last results at ``profile``."""
    seconds = {}
    for path in (results / profile).glob("**/runs.csv"):
        try:
            table = pd.read_csv(path, usecols=["experiment", "cell", "seed", "wall_seconds"])
        except (ValueError, OSError, pd.errors.ParserError):  # no such column, or not a runs table
            continue
        for row in table.dropna().itertuples(index=False):
            seconds[(row.experiment, row.cell, int(row.seed))] = float(row.wall_seconds)
    return seconds


class Pipeline:
    """Runs ``experiments`` at the planner's profile and writes each one's results (``write``: a picklable
    function of (experiment, runs, notices, invocation extras) returning its record)."""

    def __init__(self, experiments, planner: Planner, jobs: int, write: Callable, results: Path, log=print,
                 started: float | None = None):
        self.experiments, self.planner, self.jobs = list(experiments), planner, jobs
        self.staged = {e.id for e in self.experiments if e.spec.get("stages")}
        self.write, self.results, self.log = write, results, log
        self.plans: dict[str, list[PlannedRun]] = {}
        self.attempted: set[Path] = set()
        self.pending: set[Path] = set()  # run dirs queued or running
        self.queue: list[Task] = []
        self.records: dict[str, dict] = {}
        self.writing: set[str] = set()
        self.done = 0
        self.started = started or time.time()  # the invocation's start
        self.run_seconds = previous_run_seconds(results, planner.profile)

    def run(self) -> list[dict]:
        """Every experiment's record, in the given order, once all runs and writes have ended."""
        pool = worker_pool(self.jobs)
        running: dict[Future, Task] = {}
        try:
            for exp in self.experiments:  # the first runs start while the others are planned
                self.advance(exp)
                self.collect(running, timeout=0)
                self.fill(pool, running)
            while self.queue or running:
                self.fill(pool, running)
                self.collect(running)
        except BaseException:
            pool.shutdown(wait=False, kill_workers=True)
            raise
        return [self.records[e.id] for e in self.experiments]

    def fill(self, pool, running: dict[Future, Task]) -> None:
        while self.queue and len(running) < self.jobs:
            self.queue.sort()
            task = self.queue.pop(0)
            running[pool.submit(*task.call)] = task

    def collect(self, running: dict[Future, Task], timeout: float | None = None) -> None:
        """Take in the tasks that have ended (waiting up to ``timeout`` for the first one)."""
        if not running:
            return
        finished, _ = wait(running, timeout=timeout, return_when=FIRST_COMPLETED)
        for future in finished:
            self.finish(running.pop(future), future.result())

    def advance(self, exp) -> None:
        """Plan ``exp`` again and queue its new runs, or its write once no run of it is left to wait for."""
        runs, waiting = plan_experiment(exp, self.planner)
        self.plans[exp.id] = runs
        new = {}
        for r in runs:
            if r.run_dir not in self.attempted and (r.stale or not r.finished):
                new.setdefault(r.run_dir, r)
        if new:
            self.queue_runs(exp.id, list(new.values()))
        if not any(r.run_dir in self.pending for r in runs):
            self.queue_write(exp, waiting)

    def queue_runs(self, exp_id: str, runs: list[PlannedRun]) -> None:
        move_aside_stale(runs, lambda text: self.log(f"normexp-reproduce: {text}"))
        for r in runs:
            rank = (1, 0 if r.experiment in self.staged else 1,
                    -self.run_seconds.get((r.experiment, r.cell, r.seed), 0.0))
            call = (execute.train_one, r.cfg, str(r.run_dir), r.choices, r.overrides)
            self.queue.append(Task(rank, call, r))
        self.attempted |= {r.run_dir for r in runs}
        self.pending |= {r.run_dir for r in runs}
        self.log(f"normexp-reproduce: {exp_id}: {len(runs)} runs to do ({self.planner.profile}, {self.jobs} "
                 f"jobs; {len(self.attempted)} in all so far)")

    def out(self, exp_id: str) -> Path:
        """Where an experiment's results go (``write`` writes there too)."""
        return self.results / self.planner.profile / exp_id

    def queue_write(self, exp, waiting: str | None) -> None:
        notices = list(self.planner.notices.get(exp.id, []))
        if waiting:
            notices.append(f"later stages were not run: {waiting}")
        runs = self.plans[exp.id]
        extra = {"runs_run": sum(r.run_dir in self.attempted for r in runs),
                 "wall_seconds": time.time() - self.started}  # the whole invocation's, once it has ended
        last = read_json(self.out(exp.id) / "claims.json") or {}
        rank = (0, -last.get("analysis_seconds", 0.0))
        self.writing.add(exp.id)
        self.queue.append(Task(rank, (self.write, exp, runs, notices, extra), experiment=exp.id))

    def finish(self, task: Task, result) -> None:
        if task.run is None:
            self.records[task.experiment] = result
            return
        self.done += 1
        log_run(self.log, self.done, len(self.attempted), task.run, result)
        self.pending.discard(task.run.run_dir)
        for exp in self.experiments:  # not planned yet: its turn in run() comes
            runs = self.plans.get(exp.id, [])
            if (exp.id not in self.writing and any(r.run_dir == task.run.run_dir for r in runs)
                    and not any(r.run_dir in self.pending for r in runs)):
                self.advance(exp)

    def stamp_wall_time(self) -> float:
        """Record the invocation's wall time, now that it has ended, in each claims.json it wrote."""
        seconds = time.time() - self.started
        for exp_id, record in self.records.items():
            record["wall_seconds"] = seconds
            path = self.out(exp_id) / "claims.json"
            written = read_json(path)
            if written is not None:
                atomic_write_json(path, {**written, "wall_seconds": seconds})
        return seconds

