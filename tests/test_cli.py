"""The command lines of the README end to end at smoke size, and every kind of bad input: a one-line error
naming the key, the bad value and the valid choices, a non-zero exit, and no run dir."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from normexp import data as data_module
from normexp.errors import ConfigError
from normexp.records import read_metrics

BIN = Path(sys.executable).parent


def _run(tool: str, *args, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # tiny runs: one thread each is fastest on a shared machine
    return subprocess.run([str(BIN / tool), *args], capture_output=True, text=True, cwd=cwd, env=env,
                          timeout=600)


@pytest.mark.skipif(not (data_module.FASHION_DEBIAN_DIR / f"{data_module.IDX_FILES[0]}.gz").exists(),
                    reason="Debian's dataset-fashion-mnist is not installed (make test installs it as root)")
def test_the_readme_training_line_at_smoke_size(tmp_path):
    run_dir = tmp_path / "run"
    result = _run("normexp-train", "model=vgg_small", "norm=group", "norm.groups=8", "data=fashion_mnist",
                  "data.batch_size=4", "optim.lr=0.05", "train.steps=20", "data.train_subset=256",
                  "data.test_subset=200", "train.eval_every=10", f"hydra.run.dir={run_dir}", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "normexp-train: completed at step 20" in result.stdout and str(run_dir) in result.stdout
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["step"] == 20 and 0 <= summary["test_acc"] <= 1
    config = (run_dir / "config.yaml").read_text()
    assert "groups: 8" in config and "name: fashion_mnist" in config and "lr: 0.05" in config
    metrics = read_metrics(run_dir)
    assert [m["step"] for m in metrics if m["split"] == "test"] == [0, 10, 20]
    assert not (tmp_path / "outputs").exists()


@pytest.mark.slow
def test_the_readme_sweep_and_its_results_table(tmp_path):
    sweep = tmp_path / "sweep"
    result = _run("normexp-train", "-m", "norm=none,batch,group,layer,instance", "data.batch_size=2,8,32",
                  "profile=smoke", f"hydra.sweep.dir={sweep}", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    runs = sorted(p.parent for p in sweep.glob("*/summary.json"))
    assert len(runs) == 15
    jobs = set()
    for run in runs:
        summary = json.loads((run / "summary.json").read_text())
        meta = json.loads((run / "meta.json").read_text())
        assert summary["status"] == "completed"
        batch = next(o for o in meta["overrides"] if o.startswith("data.batch_size"))
        jobs.add((meta["choices"]["norm"], batch))
    assert len(jobs) == 15

    table = _run("normexp-results", str(sweep), "--csv", str(tmp_path / "runs.csv"), cwd=tmp_path)
    assert table.returncode == 0, table.stderr
    lines = table.stdout.splitlines()
    header = lines[0].split()
    assert header[:5] == ["run_dir", "norm", "data.batch_size", "status", "step"]
    rows = [line.split() for line in lines[1:16]]
    assert {(r[1], r[2]) for r in rows} == {(n, b) for n in ("none", "batch", "group", "layer", "instance")
                                           for b in ("2", "8", "32")}
    assert all(r[3] == "completed" and r[4] == "20" for r in rows)
    columns = len((tmp_path / "runs.csv").read_text().splitlines()[0].split(","))
    assert lines[16] == f"wrote 15 runs x {columns} columns to {tmp_path / 'runs.csv'}"


# ---------------------------------------------------------------- bad input

BAD_INPUTS = {  # overrides -> what the one-line error must name (key, value, part of the valid choices)
    "unknown norm": (["norm=bogus"], ["norm='bogus'", "batch", "group", "instance"]),
    "unknown model": (["model=resnet7"], ["model='resnet7'", "vgg_small", "resnet18"]),
    "unknown data": (["data=imagenet21k"], ["data='imagenet21k'", "fashion_mnist", "mnist5k"]),
    "groups not dividing": (["norm=group", "norm.groups=3"], ["norm.groups=3", "8 channels", "1, 2, 4, 8"]),
    "batch of one": (["norm=batch", "data.batch_size=1"], ["data.batch_size=1", "norm=batch", "at least 2"]),
    "lr zero": (["optim.lr=0"], ["optim.lr=0", "> 0"]),
    "lr negative": (["optim.lr=-0.1"], ["optim.lr=-0.1", "> 0"]),
    "mnist missing": (["data=mnist", "data.root={empty}"], ["data.name='mnist'", "{empty}", "MNIST/raw",
                                                           "data.download=true"]),
    "cifar10 missing": (["data=cifar10", "data.root={empty}"], ["data.name='cifar10'", "{empty}",
                                                               "cifar-10-batches-py", "data.download=true"]),
    "fashion_mnist missing": (["data=fashion_mnist", "data.root={empty}"],
                              ["data.name='fashion_mnist'", "{empty}",
                               "apt-get install dataset-fashion-mnist", "data.download=true"]),
}


def _fill(items, empty: Path):
    return [s.replace("{empty}", str(empty)) for s in items]


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_exits_with_one_line_naming_key_value_and_choices(case, tmp_path, monkeypatch, capsys):
    from normexp.train import cli

    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.setattr(data_module, "FASHION_DEBIAN_DIR", tmp_path / "no-debian")
    monkeypatch.setenv("NORMEXP_RUN_STAMP", "unused")  # cli() sets it; monkeypatch restores it
    overrides, expected = (_fill(items, empty) for items in BAD_INPUTS[case])
    run_dir = tmp_path / "run"
    argv = ["normexp-train", *overrides, "profile=smoke", f"hydra.run.dir={run_dir}"]
    monkeypatch.setattr(sys, "argv", argv)
    with pytest.raises(SystemExit) as exit_info:
        cli()
    assert exit_info.value.code not in (0, None)
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("normexp-train: error: "), err
    for part in expected:
        assert part in err, (part, err)
    assert not run_dir.exists()


def test_a_bad_job_stops_a_sweep_before_any_job_runs(tmp_path, monkeypatch, capsys):
    from normexp.train import cli

    monkeypatch.setenv("NORMEXP_RUN_STAMP", "unused")
    sweep = tmp_path / "sweep"
    argv = ["normexp-train", "-m", "norm=group,batch", "data.batch_size=4,1", "profile=smoke",
            f"hydra.sweep.dir={sweep}"]
    monkeypatch.setattr(sys, "argv", argv)
    with pytest.raises(SystemExit) as exit_info:
        cli()
    assert exit_info.value.code == 2
    assert "data.batch_size=1" in capsys.readouterr().err
    assert not sweep.exists()


def test_bad_input_in_a_real_process(tmp_path):
    result = _run("normexp-train", "norm=bogus", f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "normexp-train: error: norm='bogus' is not valid: choose one of: batch, batch_noisy, batch_renorm, "
        "frozen_batch, ghost_batch, group, instance, layer, lp, noise, none, rms, sync_batch"]
    assert not (tmp_path / "run").exists() and not (tmp_path / "outputs").exists()


def test_run_in_process_refuses_bad_input_before_writing(compose, tmp_path):
    from normexp.train import run

    with pytest.raises(ConfigError, match="norm.groups=3"):
        run(compose(["norm=group", "norm.groups=3"]), tmp_path / "run")
    assert not (tmp_path / "run").exists()
