"""Multi-process data parallel training (train.world_size=2, gloo on CPU) against single-process runs that
must compute the same thing: DDP averages gradients over the processes' slices of the global batch, so
  - with sync_batch (statistics over all processes) it is single-process BN on the global batch;
  - with plain batch norm (statistics per process) it is single-process ghost BN with 2 virtual devices."""

from __future__ import annotations

import subprocess
import sys

import pytest
import yaml
from conftest import SMOKE

from normexp.errors import ConfigError
from normexp.records import read_json, read_metrics
from normexp.train import run

BASE = ["model=mlp", "data.batch_size=32", "train.steps=20", "train.log_every=5", "train.eval_every=0",
        "train.threads=1", "optim.lr=0.1"]


def _train_losses(run_dir):
    return [r["loss"] for r in read_metrics(run_dir) if r["split"] == "train"]


@pytest.mark.slow
def test_two_processes_match_one_process_on_the_global_batch(compose, tmp_path):
    pairs = [("norm=sync_batch", "norm=batch"), ("norm=batch", "norm=ghost_batch norm.virtual_devices=2")]
    for two_norm, one_norm in pairs:
        name = two_norm.split("=")[1]
        two = run(compose([*BASE, two_norm, "train.world_size=2"]), tmp_path / f"two-{name}")
        one = run(compose([*BASE, *one_norm.split()]), tmp_path / f"one-{name}")
        assert two["status"] == one["status"] == "completed"
        expected = _train_losses(tmp_path / f"one-{name}")
        assert _train_losses(tmp_path / f"two-{name}") == pytest.approx(expected, rel=1e-5)
    assert _train_losses(tmp_path / "two-sync_batch") != pytest.approx(_train_losses(tmp_path / "two-batch"),
                                                                       rel=1e-3)


@pytest.mark.parametrize("overrides, key", [
    (["data.batch_size=33", "train.world_size=2"], "data.batch_size"),
    (["train.world_size=2", "probes=activations"], "train.world_size"),
    (["train.world_size=0"], "train.world_size"),
])
def test_bad_multi_process_configs(compose, overrides, key):
    from normexp.config import validate

    with pytest.raises(ConfigError) as err:
        validate(compose(["model=mlp", *overrides]))
    assert err.value.key == key


@pytest.mark.slow
def test_torchrun_two_processes_write_one_run_that_matches_one_process_on_the_global_batch(compose, tmp_path):
    """``torchrun --nproc_per_node=2`` (torch.distributed.run, gloo): one run dir with one set of records, and
    sync_batch over the two processes trains as one process with batch norm on the global batch."""
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
               "-m", "normexp.train", *SMOKE, *BASE, "norm=sync_batch"]
    out = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    run_dirs = [p.parent for p in tmp_path.glob("outputs/*/*/config.yaml")]
    assert len(run_dirs) == 1 and len(list(tmp_path.glob("outputs/*/*"))) == 1
    run_dir = run_dirs[0]
    assert yaml.safe_load((run_dir / "config.yaml").read_text())["train"]["world_size"] == 2
    assert [(r["step"], r["split"]) for r in read_metrics(run_dir)] == [
        (5, "train"), (10, "train"), (15, "train"), (20, "train"), (20, "test"), (20, "train_clean")]
    assert out.stdout.count("normexp-train: completed") == 1

    one = run(compose([*BASE, "norm=batch"]), tmp_path / "one")
    assert read_json(run_dir / "summary.json")["status"] == one["status"] == "completed"
    assert _train_losses(run_dir) == pytest.approx(_train_losses(tmp_path / "one"), rel=1e-5)
