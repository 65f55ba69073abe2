"""Warm workers (normexp/workers.py): the parallel launcher's loky workers fork from one server that has
imported the training code, and a sweep run that way gives the same numbers as the sequential launcher."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from normexp import workers
from normexp.records import read_metrics

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
LINUX_ONLY = pytest.mark.skipif(sys.platform != "linux", reason="forkserver workers: Linux only")

# Run in a fresh interpreter: the start method and the reusable executor are process-wide.
WORKER_REPORT = """
import gc, json, os, sys
from joblib import Parallel, delayed
from normexp import workers
warm = workers.use_warm_workers() if sys.argv[1] == "warm" else False
import multiprocessing.forkserver as fs
job = delayed(lambda: (os.getppid(), "torch._dynamo" in sys.modules, gc.get_freeze_count(),
                       workers.warm_server.SERVER_ENV in os.environ))
report = Parallel(n_jobs=2)(job() for _ in range(4))
print(json.dumps({"warm": warm, "me": os.getpid(), "server": fs._forkserver._forkserver_pid, "jobs": report,
                  "env_left": workers.warm_server.SERVER_ENV in os.environ}))
"""


def test_preloaded_modules_exist():
    assert all(importlib.util.find_spec(name) for name in workers.PRELOAD)  # the server skips failed imports


@LINUX_ONLY
@pytest.mark.parametrize("mode", ["warm", "cold"])
def test_warm_workers_are_forked_from_a_server_that_imported_torch(mode):
    done = subprocess.run([sys.executable, "-c", WORKER_REPORT, mode], capture_output=True, text=True,
                          cwd=REPO, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(done.stdout.splitlines()[-1])
    parents, preloaded, frozen, env_seen = (set(column) for column in zip(*report["jobs"], strict=True))
    assert env_seen == {False} and not report["env_left"]  # only the server sees its marker
    if mode == "warm":
        assert report["warm"] and parents == {report["server"]} and report["server"] != report["me"]
        assert preloaded == {True}
        assert min(frozen) > 100_000  # the server's imports are frozen for the workers' collector
    else:  # loky's own start: workers are children of this process and import torch themselves
        assert parents == {report["me"]} and preloaded == {False} and frozen == {0}


@LINUX_ONLY
@pytest.mark.parametrize("server", [True, False])
def test_the_server_module_freezes_and_skips_teardown_only_in_the_server(server):
    """In the server, the last preload freezes the heap and makes the exit skip the rest of the teardown: an
    exit handler registered before it never runs. A child forked from it exits normally, with its own status.
    Anywhere else, importing the module changes nothing."""
    code = textwrap.dedent("""
        import atexit, gc, os
        main = os.getpid()
        atexit.register(lambda: print("torn down", "main" if os.getpid() == main else "child", flush=True))
        import normexp.warm_server as w
        print(gc.get_freeze_count() > 0, w.SERVER_ENV in os.environ, flush=True)
        pid = os.fork()
        if pid == 0:
            raise SystemExit(3)
        print("child exit", os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]), flush=True)
    """)
    env = {**os.environ, workers.warm_server.SERVER_ENV: str(os.getpid())} if server else os.environ
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == ("True False" if server else "False False")
    assert lines[1:3] == ["torn down child", "child exit 3"]  # a forked child tears down, with its status
    assert lines[3:] == ([] if server else ["torn down main"])


@LINUX_ONLY
@pytest.mark.slow
def test_a_parallel_sweep_gives_the_sequential_sweeps_numbers(tmp_path):
    common = ["-m", "model=mlp", "data=mnist5k", "train.steps=20", "train.log_every=5", "train.eval_every=10",
              "data.test_subset=200", "norm=batch_noisy", "seed=0,1"]
    metrics = {}
    for launcher in ("parallel", "basic"):
        sweep = tmp_path / launcher
        done = subprocess.run([str(BIN / "normexp-train"), *common, f"launcher={launcher}", "train.threads=1",
                               f"hydra.sweep.dir={sweep}"], capture_output=True, text=True, cwd=tmp_path,
                              timeout=600)
        assert done.returncode == 0, done.stderr[-2000:]
        seeds = {d: json.loads((d / "meta.json").read_text())["overrides"] for d in sweep.glob("*/")
                 if (d / "meta.json").exists()}  # job folders are named by config: find them by seed
        by_seed = {next(o for o in overrides if o.startswith("seed=")): d for d, overrides in seeds.items()}
        metrics[launcher] = [read_metrics(by_seed[f"seed={i}"]) for i in (0, 1)]
    assert metrics["parallel"] == metrics["basic"]
    assert metrics["basic"][0] != metrics["basic"][1]  # the seeds differ: equal lists are not trivially equal
