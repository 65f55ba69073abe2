"""Warm workers (normexp/workers.py): the parallel launcher's loky workers fork from one server that has
imported the training code, and a sweep run that way gives the same numbers as the sequential launcher."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

from normexp import workers
from normexp.records import read_metrics

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
LINUX_ONLY = pytest.mark.skipif(sys.platform != "linux", reason="forkserver workers: Linux only")

# Run in a fresh interpreter: the start method and the reusable executor are process-wide.
WORKER_REPORT = """
import json, os, sys
from joblib import Parallel, delayed
from normexp import workers
warm = workers.use_warm_workers() if sys.argv[1] == "warm" else False
import multiprocessing.forkserver as fs
job = delayed(lambda: (os.getppid(), "torch._dynamo" in sys.modules))
report = Parallel(n_jobs=2)(job() for _ in range(4))
print(json.dumps({"warm": warm, "me": os.getpid(), "server": fs._forkserver._forkserver_pid, "jobs": report}))
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
    parents = {parent for parent, _ in report["jobs"]}
    preloaded = {dynamo for _, dynamo in report["jobs"]}
    if mode == "warm":
        assert report["warm"] and parents == {report["server"]} and report["server"] != report["me"]
        assert preloaded == {True}
    else:  # loky's own start: workers are children of this process and import torch themselves
        assert parents == {report["me"]} and preloaded == {False}


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
        metrics[launcher] = [read_metrics(sweep / str(i)) for i in (0, 1)]
    assert metrics["parallel"] == metrics["basic"]
    assert metrics["basic"][0] != metrics["basic"][1]  # the seeds differ: equal lists are not trivially equal
