"""Sweeps on several launchers, resumed by config; Slurm's on a real one-node cluster (slurm_cluster.py).

A 12-job sweep runs to the end, is left as an interrupted sweep leaves it (two jobs killed mid-run: metrics
but no summary; one failed), and the same command again launches only those three; the same sweep with a seed
added and its values reordered launches only the two new jobs and leaves the twelve folders as they were.
The re-run jobs end with the numbers their first run had (same config and seed on CPU: bit-identical)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from slurm_cluster import slurm_cluster  # noqa: F401 - the fixture

from normexp.records import SUMMARY, atomic_write_json, read_json

TRAIN = str(Path(sys.executable).parent / "normexp-train")
JOB = ["model=mlp", "profile=smoke", "device=cpu", "train.steps=10", "train.eval_every=0", "logger=local"]
LAUNCHERS = {
    "parallel": ["launcher=parallel", "hydra.launcher.n_jobs=2"],
    "submitit_local": ["launcher=submitit_local"],
    "slurm": ["launcher=slurm", "hydra.launcher.partition=debug", "hydra.launcher.gpus_per_node=0",
              "hydra.launcher.cpus_per_task=1", "hydra.launcher.mem_gb=1", "hydra.launcher.timeout_min=10"],
}


def sweep(sweep_dir: Path, launcher: str, norms: list[str], seeds: list[int], env: dict) -> str:
    command = [TRAIN, "-m", *LAUNCHERS[launcher], *JOB, f"norm={','.join(norms)}",
               f"seed={','.join(map(str, seeds))}", f"hydra.sweep.dir={sweep_dir}"]
    out = subprocess.run(command, capture_output=True, text=True, env={**os.environ, **env}, timeout=600)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-4000:]
    return out.stdout + out.stderr


def jobs(sweep_dir: Path) -> dict:
    """(norm, seed) -> (run dir, summary, summary's mtime) for every job folder of the sweep."""
    found = {}
    for run_dir in sweep_dir.iterdir():
        if (run_dir / "config.yaml").exists():
            cfg = yaml.safe_load((run_dir / "config.yaml").read_text())
            summary_path = run_dir / SUMMARY
            mtime = summary_path.stat().st_mtime_ns if summary_path.exists() else None
            found[(cfg["norm"]["name"], cfg["seed"])] = (run_dir, read_json(summary_path), mtime)
    return found


def launched(before: dict, after: dict) -> set:
    return {k for k in after if k not in before or after[k][2] != before[k][2]}


@pytest.mark.slow
@pytest.mark.parametrize("launcher", list(LAUNCHERS))
def test_a_sweep_reruns_only_its_missing_jobs_and_reuses_finished_ones(launcher, tmp_path, request):
    env = {"NORMEXP_FAKE_DEVICES": "2"}  # the parallel launcher's workers take one "GPU" each
    if launcher == "slurm":
        env.update(request.getfixturevalue("slurm_cluster").env)
    norms, seeds = ["batch", "group"], list(range(6))
    sweep(tmp_path, launcher, norms, seeds, env)
    first = jobs(tmp_path)
    assert sorted(first) == sorted((n, s) for n in norms for s in seeds)
    assert all(summary["status"] == "completed" for _, summary, _ in first.values())
    assert len({run_dir for run_dir, _, _ in first.values()}) == 12
    check_pinned_devices([read_json(run_dir / "meta.json") for run_dir, _, _ in first.values()], launcher)

    killed, failed = [("batch", 2), ("group", 5)], ("group", 0)
    for key in killed:
        (first[key][0] / SUMMARY).unlink()
    atomic_write_json(first[failed][0] / SUMMARY, {"status": "failed", "error": "RuntimeError: killed"})
    interrupted = jobs(tmp_path)
    log = sweep(tmp_path, launcher, norms, seeds, env)
    rerun = jobs(tmp_path)
    assert launched(interrupted, rerun) == {*killed, failed}
    assert "9 of 12 jobs already finished" in log
    for key in [*killed, failed]:
        assert rerun[key][0] == first[key][0]
        assert rerun[key][1]["train_loss"] == first[key][1]["train_loss"]

    sweep(tmp_path, launcher, norms[::-1], [6, *seeds[::-1]], env)
    added = jobs(tmp_path)
    assert launched(rerun, added) == {("batch", 6), ("group", 6)}
    assert all(added[k][:2] == rerun[k][:2] for k in rerun)
    assert all(summary["status"] == "completed" for _, summary, _ in added.values())


def check_pinned_devices(metas: list[dict], launcher: str) -> None:
    """With launcher=parallel each worker process ran all its jobs on its own device, and the two workers
    used both devices; other launchers pin nothing."""
    if launcher != "parallel":
        assert all(m["pinned_device"] is None for m in metas)
        return
    by_worker = {}
    for m in metas:
        by_worker.setdefault(m["pid"], set()).add(m["pinned_device"])
    assert all(len(devices) == 1 for devices in by_worker.values())
    assert sorted(d for devices in by_worker.values() for d in devices) == ["cuda:0", "cuda:1"]


def test_launcher_slurm_without_slurm_stops_with_one_line(tmp_path):
    env = {**os.environ, "PATH": os.path.dirname(sys.executable)}  # this venv only: no sbatch there
    out = subprocess.run([TRAIN, "-m", "launcher=slurm", *JOB, "seed=0,1", f"hydra.sweep.dir={tmp_path}"],
                         capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 2
    assert out.stderr.strip().splitlines() == [
        "normexp-train: error: launcher='slurm' is not valid: Slurm's sbatch is not on this machine's PATH; "
        "choose one of: basic, parallel, submitit_local (or run from a Slurm login node)"]
    assert not any(tmp_path.iterdir())


def test_wandb_runs_of_a_sweep_share_its_group(compose, tmp_path, monkeypatch):
    import types

    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode
    from omegaconf import OmegaConf

    from normexp.compose import compose as compose_with_hydra
    from normexp.loggers import WandbLogger

    calls = []
    monkeypatch.setitem(sys.modules, "wandb", types.SimpleNamespace(init=lambda **kw: calls.append(kw)))
    cfg = compose(["logger=wandb"])
    hydra_cfg = compose_with_hydra(["logger=wandb"], return_hydra_config=True)
    try:
        for mode, sweep_dir in [(RunMode.MULTIRUN, tmp_path / "sweep"), (RunMode.RUN, tmp_path / "sweep")]:
            job = OmegaConf.merge(hydra_cfg, {"hydra": {"mode": mode.name, "sweep": {"dir": str(sweep_dir)}}})
            HydraConfig.instance().set_config(job)
            WandbLogger(cfg, tmp_path / "run", "a")
        WandbLogger(compose(["logger=wandb", "logger.group=mine"]), tmp_path / "run", "b")
    finally:
        HydraConfig.instance().cfg = None
    assert [c["group"] for c in calls] == [str((tmp_path / "sweep").resolve()), None, "mine"]


@pytest.mark.slow
def test_jobs_that_differ_only_in_keys_that_change_nothing_computed_run_once(tmp_path):
    """train.threads does not change what is computed: both jobs name the same folder, and one runs."""
    out = subprocess.run([TRAIN, "-m", *JOB, "seed=3", "train.threads=1,2", f"hydra.sweep.dir={tmp_path}"],
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "0 of 2 jobs already finished" in out.stdout + out.stderr
    assert len(list(tmp_path.glob("*/summary.json"))) == 1
