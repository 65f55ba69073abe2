"""normexp-recalibrate end to end on tiny runs: the table's numbers against an independent recompute of
model.pt's statistics and evaluation of the test set, the weights it writes, the --data overrides and
--source test, and every kind of bad input (one line naming the thing, the value and the choices; exit 2)."""

from __future__ import annotations

import subprocess
import sys

import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from conftest import REPO

from normexp.compose import compose
from normexp.data import TARGET_SEED, TensorData
from normexp.models import build_model
from normexp.norms import NormSpec, recompute_running_stats, statistics_layers
from normexp.recalibrate import TABLE, WEIGHTS, main
from normexp.train import run

TINY = ["profile=smoke", "model=mlp", "device=cpu", "train.threads=1", "train.progress=false", "data=mnist5k",
        "data.train_subset=300", "data.test_subset=200", "train.steps=30", "train.save_final=true"]


def _train(tmp_path_factory, *overrides):
    run_dir = tmp_path_factory.mktemp("run")
    cfg = compose([*TINY, *overrides])
    run(cfg, run_dir)
    return cfg, run_dir


@pytest.fixture(scope="module")
def bn_run(tmp_path_factory):
    return _train(tmp_path_factory, "norm=batch")


def _model(cfg, run_dir, data):
    model = build_model(cfg.model, NormSpec.from_config(cfg.norm), data.info.in_shape, data.info.num_classes)
    model.load_state_dict(torch.load(run_dir / "model.pt"))
    return model


@torch.no_grad()
def _test_error_and_loss(model, data) -> tuple[float, float]:
    out = model.eval()(data.x_test)
    error = 1 - (out.argmax(1) == data.y_test).double().mean().item()
    return error, F.cross_entropy(out.double(), data.y_test).item()


def test_after_equals_an_independent_recompute_of_the_saved_weights(bn_run, tmp_path, capsys):
    """K >= the 300 training images in one batch of 300: the statistics do not depend on which images the
    code picks or their order."""
    cfg, run_dir = bn_run
    assert main([str(run_dir), "--samples", "100000", "--batch-size", "300", "--out", str(tmp_path)]) == 0
    table = pd.read_csv(tmp_path / TABLE).set_index("statistics")
    data = TensorData(cfg.data, torch.device("cpu"), 0)
    model = _model(cfg, run_dir, data)
    before = _test_error_and_loss(model, data)
    recompute_running_stats(model, [data.x_train], statistics_layers(model), "precise")
    after = _test_error_and_loss(model, data)
    assert table.loc["running", "test_error"] == pytest.approx(before[0], abs=1e-12)
    assert table.loc["running", "test_loss"] == pytest.approx(before[1], rel=1e-5)
    assert table.loc["recalibrated", "test_error"] == pytest.approx(after[0], abs=1e-12)
    assert table.loc["recalibrated", "test_loss"] == pytest.approx(after[1], rel=1e-5)
    assert after[1] != pytest.approx(before[1], rel=1e-3)  # the recalibration changed something
    row = table.loc["recalibrated"]
    assert list(row[["estimator", "samples", "batch_size", "source"]]) == ["precise", 300, 300, "train"]
    weights = torch.load(tmp_path / WEIGHTS)
    assert weights.keys() == model.state_dict().keys()
    assert all(torch.allclose(weights[k].double(), v.double(), rtol=1e-5, atol=1e-6)
               for k, v in model.state_dict().items())
    printed = capsys.readouterr().out
    assert "recalibrated" in printed and str(tmp_path) in printed


def test_recalibrating_on_the_first_test_images_of_a_data_override(bn_run, tmp_path):
    """--data test_subset=100 --source test: the first 60 of those 100 test images in the fixed random order
    of the target images (a permutation seeded by TARGET_SEED; the stored order is sorted by class in
    mnist5k), in two batches of 30, with Ioffe's estimator; all 100 evaluated."""
    cfg, run_dir = bn_run
    args = [str(run_dir), "--data", "test_subset=100", "--source", "test", "--samples", "60", "--batch-size",
            "30", "--estimator", "ioffe", "--out", str(tmp_path)]
    assert main(args) == 0
    table = pd.read_csv(tmp_path / TABLE).set_index("statistics")
    data = TensorData(compose([*TINY, "norm=batch", "data.test_subset=100"]).data, torch.device("cpu"), 0)
    model = _model(cfg, run_dir, data)
    order = torch.randperm(100, generator=torch.Generator().manual_seed(TARGET_SEED))[:60]
    assert not torch.equal(order.sort().values, torch.arange(60))  # not the stored order's first 60
    target = data.x_test[order]
    recompute_running_stats(model, [target[:30], target[30:]], statistics_layers(model), "ioffe")
    error, loss = _test_error_and_loss(model, data)
    assert len(data.y_test) == 100
    assert table.loc["recalibrated", "test_error"] == pytest.approx(error, abs=1e-12)
    assert table.loc["recalibrated", "test_loss"] == pytest.approx(loss, rel=1e-5)
    assert table.loc["recalibrated", "data"] == "test_subset=100"


def _cli(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "normexp.recalibrate", *map(str, args)], capture_output=True,
                          text=True, cwd=REPO, timeout=300)


@pytest.mark.parametrize("args,says", [
    (["--estimator", "mean"], "--estimator='mean' is not valid: choose one of: ioffe, precise"),
    (["--source", "val"], "--source='val' is not valid: choose one of: test, train"),
    (["--data", "corrupt=1"], "--data corrupt='1' is not valid: give KEY=VALUE with a key of data=mnist5k:"),
    (["--data", "test_subset=0"], "data.test_subset=0 is not valid: must be an integer >= 1"),
    (["--samples", "0"], "--samples=0 is not valid: must be an integer >= 1"),
])
def test_bad_arguments_are_one_line_errors(bn_run, args, says):
    result = _cli(bn_run[1], *args)
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.count("\n") == 1 and says in result.stderr


def test_a_run_without_model_pt_is_refused(tmp_path):
    run(compose([*TINY, "train.save_final=false", "train.steps=5"]), tmp_path)
    result = _cli(tmp_path)
    assert result.returncode == 2 and result.stderr.count("\n") == 1
    assert f"RUN_DIR='{tmp_path}' is not valid: has no model.pt" in result.stderr


def test_a_model_without_population_statistics_is_refused(tmp_path_factory):
    _, run_dir = _train(tmp_path_factory, "norm=group", "norm.groups=2", "train.steps=5")
    assert main([str(run_dir)]) == 2
    assert not (run_dir / "recalibrate").exists()


def test_an_estimator_that_cannot_estimate_the_norm_is_refused(tmp_path_factory, capsys):
    _, run_dir = _train(tmp_path_factory, "norm=lp", "train.steps=5")
    assert main([str(run_dir), "--estimator", "precise"]) == 2
    assert "--estimator='precise' is not valid: norm=lp keeps an lp scale" in capsys.readouterr().err
    assert main([str(run_dir), "--estimator", "ioffe"]) == 0


def test_ghost_batch_needs_a_batch_of_whole_slices(tmp_path_factory, capsys):
    _, run_dir = _train(tmp_path_factory, "norm=ghost_batch", "norm.virtual_devices=4", "data.batch_size=32",
                        "train.steps=5")
    assert main([str(run_dir), "--batch-size", "30"]) == 2
    assert "--batch-size=30 is not valid: norm=ghost_batch needs a multiple of norm.virtual_devices=4" in (
        capsys.readouterr().err)
