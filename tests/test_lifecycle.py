"""How commands and runs stop (normexp/lifecycle.py): SIGTERM and SIGKILL of the main process of a
``launcher=parallel`` sweep and of ``normexp-reproduce``, at random points, leave no process of the command
behind within 10 s, the runs they cut off say ``interrupted``, and running the same command again runs only
what is unfinished and ends with the records and results of an uninterrupted command. One process writes a
run dir at a time, and a lock left by a dead process is taken over."""

from __future__ import annotations

import json
import os
import random
import re
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml

from normexp.compose import compose
from normexp.records import FINISHED, LOCK, MODEL, SUMMARY, RunDirBusy, read_json, read_metrics
from normexp.sweep import job_key
from normexp.train import run

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
LINUX_ONLY = pytest.mark.skipif(sys.platform != "linux", reason="parent-death signals and /proc: Linux only")
GONE_WITHIN = 10.0  # seconds: what the issue asks of a stopped command
TIMING = ("wall_seconds", "steps_per_second", "seconds", "run_seconds", "analysis_seconds", "run_dir")


# ---------------------------------------------------------------- process trees

def session_processes(sid: int) -> list[int]:
    """The live processes of session ``sid`` (zombies are gone): a command started in a session of its own
    leaves its descendants there, whoever they are reparented to."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[3]) == sid and fields[0] != "Z":
            found.append(int(stat.parent.name))
    return found


@pytest.fixture
def start():
    """``start(command, log, cwd)``: run a command in a session of its own, output to ``log``; whatever is
    left of it is killed when the test ends, passed or failed."""
    started = []

    def start(command: list[str], log: Path, cwd: Path) -> subprocess.Popen:
        env = {**os.environ, "NORMEXP_DATA": os.environ.get("NORMEXP_DATA", str(REPO / "data"))}
        with open(log, "w") as out:
            started.append(subprocess.Popen(command, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT,
                                            start_new_session=True))
        return started[-1]

    yield start
    for proc in started:
        for pid in session_processes(proc.pid):
            os.kill(pid, signal.SIGKILL)
        proc.kill()
        proc.wait()


def stop_when(proc: subprocess.Popen, ready, signum: int, timeout: float = 600) -> None:
    """Send ``signum`` to ``proc`` once ``ready()`` holds; then within GONE_WITHIN seconds no process of its
    session is left."""
    deadline = time.monotonic() + timeout
    while not ready():
        assert proc.poll() is None, f"the command ended ({proc.returncode}) before the kill point"
        assert time.monotonic() < deadline, "the kill point was never reached"
        time.sleep(0.01)
    assert len(session_processes(proc.pid)) > 2, "the command runs no workers at the kill point"
    os.kill(proc.pid, signum)
    killed = time.monotonic()
    while session_processes(proc.pid) and time.monotonic() - killed < GONE_WITHIN:
        time.sleep(0.05)
    left = session_processes(proc.pid)
    for pid in left:  # do not leave them to the rest of the suite
        os.kill(pid, signal.SIGKILL)
    assert not left, f"{len(left)} processes of the command outlived it by {GONE_WITHIN} s"
    assert proc.wait(timeout=10) == (128 + signum if signum == signal.SIGTERM else -signum)


def statuses(root: Path) -> dict[str, str | None]:
    """Run dir (relative to ``root``) -> its summary's status (None: no summary)."""
    return {str(c.parent.relative_to(root)): (read_json(c.parent / SUMMARY) or {}).get("status")
            for c in root.rglob("config.yaml") if (c.parent / "meta.json").exists()}


def assert_cut_off_runs_say_interrupted(root: Path) -> dict[str, str]:
    """Every run dir the kill left unfinished has a summary that says so."""
    found = statuses(root)
    assert set(found.values()) <= {*FINISHED, "interrupted"}, found
    return found


def finished_files(root: Path) -> dict[str, int]:
    """The summaries of the finished runs and when they were written: a re-run must leave them alone."""
    return {d: (root / d / SUMMARY).stat().st_mtime_ns for d, s in statuses(root).items() if s in FINISHED}


def without_timing(record: dict) -> dict:
    return {k: v for k, v in record.items() if k not in TIMING}


# ---------------------------------------------------------------- a parallel sweep

STEPS = 300
SWEEP_JOB = ["model=mlp", "data=mnist5k", "profile=smoke", "device=cpu", "norm=batch_noisy",
             f"train.steps={STEPS}", "train.log_every=5", "train.eval_every=100", "train.checkpoint_every=40",
             "train.save_final=true", "data.test_subset=200"]
SEEDS = (0, 1, 2)


def job_dirs(sweep: Path) -> dict[int, Path]:
    """seed -> the job's run dir (a sweep names its job folders by their config)."""
    return {yaml.safe_load((c.parent / "config.yaml").read_text())["seed"]: c.parent
            for c in sweep.glob("*/metrics.jsonl")}


def logged_steps(sweep: Path, since: float = 0.0) -> list[int]:
    """Per job of the sweep that has started: the last training step logged (0 when none), or -1 for a job
    that has written no metrics since ``since`` or has finished."""
    steps = []
    for job in job_dirs(sweep).values():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the line being written may be torn
            records = read_metrics(job)
        step = max((r["step"] for r in records if r["split"] == "train"), default=0)
        moving = (job / "metrics.jsonl").exists() and (job / "metrics.jsonl").stat().st_mtime >= since
        steps.append(step if moving and not (job / SUMMARY).exists() else -1)
    return steps


@LINUX_ONLY
@pytest.mark.slow
def test_sigterm_and_sigkill_of_a_parallel_sweep_then_rerun_gives_the_uninterrupted_records(tmp_path, start):
    sweep = tmp_path / "sweep"
    command = [str(BIN / "normexp-train"), "-m", "launcher=parallel", *SWEEP_JOB,
               f"seed={','.join(map(str, SEEDS))}", f"hydra.sweep.dir={sweep}"]
    for attempt, signum in enumerate((signal.SIGTERM, signal.SIGKILL)):
        kill_at = random.randrange(10, STEPS - 40)  # a job of this attempt trains past it, 40 steps to go
        started = time.time() - 1  # file times are coarser than time.time()
        proc = start(command, tmp_path / f"attempt{attempt}.log", tmp_path)
        stop_when(proc, lambda: any(kill_at <= s <= STEPS - 40 for s in logged_steps(sweep, started)),  # noqa: B023
                  signum)
        found = assert_cut_off_runs_say_interrupted(sweep)
        assert "interrupted" in found.values(), (attempt, found)
        for d, status in found.items():
            if status == "interrupted":
                assert read_json(sweep / d / SUMMARY)["error"] == "interrupted by SIGTERM"
    finished = finished_files(sweep)
    done = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert {d: t for d, t in finished_files(sweep).items() if d in finished} == finished  # left alone

    for i, seed in enumerate(SEEDS):  # the uninterrupted sweep, one job after another in this process
        reference = tmp_path / "reference" / str(i)
        run(compose([*SWEEP_JOB, f"seed={seed}", "train.threads=1", "train.progress=false"]), reference)
        job = job_dirs(sweep)[seed]
        assert without_timing(read_json(job / SUMMARY)) == without_timing(read_json(reference / SUMMARY))
        assert ([without_timing(r) for r in read_metrics(job)]
                == [without_timing(r) for r in read_metrics(reference)])
        weights, expected = torch.load(job / MODEL), torch.load(reference / MODEL)
        assert all(torch.equal(weights[k], expected[k]) for k in expected)


# ---------------------------------------------------------------- normexp-reproduce

LOG_LINE = re.compile(r"^\[\s*\d+/\d+\] (\S+) (\S+) seed (\d+): ", re.MULTILINE)


def reproduce(outputs: Path, results: Path) -> list[str]:
    return [str(BIN / "normexp-reproduce"), "--profile", "smoke", "--only", "IS", "--outputs", str(outputs),
            "--results", str(results)]


def runs_in_log(text: str) -> set[str]:
    """The run dirs (relative to the profile folder) an invocation's log reports as done."""
    return {f"{exp}/{cell}/seed{seed}" for exp, cell, seed in LOG_LINE.findall(text)}


def assert_same_results(results: Path, reference: Path) -> None:
    """Run tables, curves, tables and claims.json numbers equal, timings and paths aside."""
    claims = sorted(reference.rglob("claims.json"))
    assert claims and sorted(p.relative_to(results) for p in results.rglob("*.csv")) == sorted(
        p.relative_to(reference) for p in reference.rglob("*.csv"))
    for path in reference.rglob("*.csv"):
        expected = pd.read_csv(path)
        got = pd.read_csv(results / path.relative_to(reference))
        keep = [c for c in expected.columns if c not in TIMING]
        pd.testing.assert_frame_equal(got[keep], expected[keep])
    invocation = ("command", "code_version", "date", "jobs", "host", "runs_run", "run_commits", *TIMING)
    for path in claims:
        got, expected = (json.loads(p.read_text()) for p in (results / path.relative_to(reference), path))
        assert {k: v for k, v in got.items() if k not in invocation} == {
            k: v for k, v in expected.items() if k not in invocation}


@LINUX_ONLY
@pytest.mark.slow
def test_sigkill_and_sigterm_of_normexp_reproduce_then_rerun_gives_the_uninterrupted_results(tmp_path, start):
    reference = subprocess.run(reproduce(tmp_path / "ref_outputs", tmp_path / "ref_results"), cwd=tmp_path,
                               capture_output=True, text=True, timeout=900)
    assert reference.returncode == 0, reference.stderr[-2000:]
    planned = set(statuses(tmp_path / "ref_outputs" / "smoke"))
    profile_dir = tmp_path / "outputs" / "smoke"
    command = reproduce(tmp_path / "outputs", tmp_path / "results")

    def finished_runs() -> int:
        return len(finished_files(profile_dir)) if profile_dir.exists() else 0

    kill_after = sorted(random.sample(range(len(planned) - 1), 2))  # finished runs at each kill point
    for attempt, (signum, after) in enumerate(zip((signal.SIGKILL, signal.SIGTERM), kill_after, strict=True)):
        after = max(after, finished_runs())  # a run of this attempt has finished
        proc = start(command, tmp_path / f"attempt{attempt}.log", tmp_path)
        stop_when(proc, lambda: finished_runs() > after, signum)  # noqa: B023
        assert_cut_off_runs_say_interrupted(profile_dir)

    finished = finished_files(profile_dir)
    done = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-2000:]
    assert runs_in_log(done.stdout) == planned - set(finished)  # only the unfinished runs ran
    assert {d: t for d, t in finished_files(profile_dir).items() if d in finished} == finished  # left alone
    assert set(statuses(profile_dir)) == planned
    assert_same_results(tmp_path / "results", tmp_path / "ref_results")


# ---------------------------------------------------------------- one writer per run dir

def long_run(steps: int | str = 100_000) -> list[str]:
    return ["model=mlp", "data=mnist5k", "profile=smoke", "device=cpu", f"train.steps={steps}",
            "train.eval_every=0", "train.checkpoint_every=50", "train.threads=1", "train.progress=false"]


@LINUX_ONLY
@pytest.mark.slow
def test_one_writer_per_run_dir_a_second_one_is_refused_and_a_dead_ones_lock_is_taken_over(tmp_path, start):
    run_dir = tmp_path / "sweep" / job_key(compose(long_run()))  # the sweep's job folder of the long run
    train_cli = str(BIN / "normexp-train")
    holder = start([train_cli, *long_run(), f"hydra.run.dir={run_dir}"], tmp_path / "holder.log", tmp_path)
    deadline = time.monotonic() + 300
    while not (run_dir / "checkpoint.pt").exists():  # training, past its first checkpoint
        assert holder.poll() is None and time.monotonic() < deadline, (tmp_path / "holder.log").read_text()
        time.sleep(0.05)
    assert (run_dir / LOCK).read_text() == f"{holder.pid}\n"

    # a second process on the run dir, and a sweep whose job 0 is that run dir (its job 1 is a short run)
    second = start([train_cli, *long_run(), f"hydra.run.dir={run_dir}"], tmp_path / "second.log", tmp_path)
    sweep = start([train_cli, "-m", *long_run("100000,20"), f"hydra.sweep.dir={run_dir.parent}"],
                  tmp_path / "sweep.log", tmp_path)
    assert second.wait(timeout=300) == 1
    busy = f"{run_dir} is in use by process {holder.pid} (one process writes a run dir at a time)"
    assert (tmp_path / "second.log").read_text() == f"normexp-train: error: {busy}\n"  # one line
    assert sweep.wait(timeout=300) == 0, (tmp_path / "sweep.log").read_text()[-2000:]
    assert f"normexp-train: skipped: {busy}\n" in (tmp_path / "sweep.log").read_text()
    assert read_json(run_dir.parent / job_key(compose(long_run(20))) / SUMMARY)["status"] == "completed"
    with pytest.raises(RunDirBusy, match=f"in use by process {holder.pid} "):
        run(compose(long_run(20)), run_dir)
    assert holder.poll() is None and not (run_dir / SUMMARY).exists()  # the holder trains on, undisturbed

    os.kill(holder.pid, signal.SIGKILL)
    assert holder.wait(timeout=30) == -signal.SIGKILL
    assert (run_dir / LOCK).read_text() == f"{holder.pid}\n"  # a stale lock: its process is dead
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the killed holder may have torn its last metrics line
        steps = [r["step"] for r in read_metrics(run_dir) if r["split"] == "train"]
    assert steps == sorted(set(steps))  # one writer: no step logged twice
    summary = run(compose([*long_run(20), "train.resume=false"]), run_dir)
    assert summary["status"] == "completed" and (run_dir / LOCK).read_text() == f"{os.getpid()}\n"
