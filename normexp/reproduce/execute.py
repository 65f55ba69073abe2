"""Running planned runs: in this process or in warm joblib workers, each through ``normexp.train.run``;
a run that raises is recorded as failed and the rest go on."""

from __future__ import annotations

import math
import sys
import traceback
from pathlib import Path

from joblib import Parallel, delayed

from normexp import train
from normexp.records import SUMMARY, RunDirBusy, atomic_write_json, read_json
from normexp.workers import use_warm_workers

from .planned_run import PlannedRun


def train_one(cfg, run_dir: str, chosen: dict, overrides: list[str]) -> dict:
    """One run in this process; a run that raises comes back as ``failed`` (the rest of the suite goes on)."""
    argv, sys.argv = sys.argv, ["normexp-train", *overrides, f"hydra.run.dir={run_dir}"]  # meta's command
    try:
        return train.run(cfg, run_dir, choices=chosen, overrides=overrides)
    except RunDirBusy as busy:  # another process writes it: not this run's failure, leave its dir alone
        return {"status": "skipped", "error": str(busy)}
    except Exception as error:  # noqa: BLE001 - recorded, reported, and the suite goes on
        summary = read_json(Path(run_dir) / SUMMARY)
        if not summary or summary.get("status") != "failed":
            summary = {"status": "failed", "error": f"{type(error).__name__}: {error}"}
            atomic_write_json(Path(run_dir) / SUMMARY, summary)
        summary["traceback"] = traceback.format_exc()
        return summary
    finally:
        sys.argv = argv


def start_workers(jobs: int) -> None:
    """With ``jobs`` > 1, start the warm workers' server now, so that its imports overlap the planning."""
    if jobs > 1:
        use_warm_workers(also=(__name__,))


def execute(runs: list[PlannedRun], jobs: int, log=print) -> list[dict]:
    if not runs:
        return []
    args = [(r.cfg, str(r.run_dir), r.choices, r.overrides) for r in runs]
    if jobs > 1:
        start_workers(jobs)
        results = Parallel(n_jobs=jobs, return_as="generator_unordered")(
            delayed(_indexed)(i, *a) for i, a in enumerate(args))
    else:
        results = (_indexed(i, *a) for i, a in enumerate(args))
    summaries: list[dict] = [{}] * len(runs)
    for done, (i, summary) in enumerate(results, 1):
        summaries[i] = summary
        log_run(log, done, len(runs), runs[i], summary)
    return summaries


def log_run(log, done: int, total: int, run: PlannedRun, summary: dict) -> None:
    """A finished run's line (``[ 3/40] exp cell seed 0: completed, ...``), and a failed run's traceback."""
    log(f"[{done:>3}/{total}] {describe_run(run, summary)}")
    if summary.get("status") == "failed":
        log(summary.get("traceback") or summary.get("error", ""))


def _indexed(i, *args):
    return i, train_one(*args)


def describe_run(run: PlannedRun, s: dict) -> str:
    acc = s.get("test_acc")
    acc_text = f", test acc {acc:.4f}" if isinstance(acc, float) and math.isfinite(acc) else ""
    where = f" at step {s.get('step')}" if s.get("status") == "diverged" else ""
    secs = f" ({s['wall_seconds']:.0f} s)" if isinstance(s.get("wall_seconds"), (int, float)) else ""
    err = f": {s.get('error')}" if s.get("status") in ("failed", "skipped") else ""
    return f"{run.experiment} {run.cell} seed {run.seed}: {s.get('status')}{where}{acc_text}{secs}{err}"
