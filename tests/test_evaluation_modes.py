"""BN evaluation modes during training (``train.eval_modes``, normexp/evaluation.py): training is bit for bit
the same with the extra modes on, their numbers equal an independent recompute-and-evaluate of the saved
weights, norms without population statistics record the running values, bad settings are refused, and the
evaluation batch size changes no prediction."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf

from normexp.compose import compose
from normexp.config import validate
from normexp.data import TensorData
from normexp.errors import ConfigError
from normexp.identity import identity_key, run_identity
from normexp.models import build_model
from normexp.norms import NormSpec, recompute_running_stats, statistics_layers
from normexp.records import MODEL, read_metrics
from normexp.results import load_runs
from normexp.train import run

TINY = ["profile=smoke", "model=mlp", "device=cpu", "train.threads=1", "train.progress=false", "data=mnist5k",
        "data.train_subset=300", "data.test_subset=200", "train.steps=30", "train.eval_every=10",
        "train.save_final=true", "train.eval_train_images=100000"]
ALL_MODES = "train.eval_modes=[running,precise,batch]"


def _saved_model(cfg, run_dir):
    data = TensorData(cfg.data, torch.device("cpu"), int(cfg.seed))
    model = build_model(cfg.model, NormSpec.from_config(cfg.norm), data.info.in_shape, data.info.num_classes)
    model.load_state_dict(torch.load(run_dir / MODEL))
    return model, data


def _scores(out: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
    return (out.argmax(1) == y).double().mean().item(), F.cross_entropy(out.double(), y).item()


@pytest.mark.parametrize("norm", [["norm=batch_noisy"], ["norm=ghost_batch", "norm.virtual_devices=2",
                                                         "train.eval_batch_stats=50"]])
def test_training_is_bit_identical_with_the_extra_modes_on(tmp_path, norm):
    """batch_noisy draws its noise from the global RNG at every training step (and in a batch-mode
    evaluation); crop and flip draw from generators seeded by step. Evaluations at steps 0, 10, 20, 30."""
    overrides = [*TINY, *norm, "data.crop_padding=2", "data.flip=true"]
    off = run(compose(overrides), tmp_path / "off")
    on = run(compose([*overrides, ALL_MODES]), tmp_path / "on")
    train = [[m for m in read_metrics(tmp_path / d) if m["split"] == "train"] for d in ("off", "on")]
    assert [m["loss"] for m in train[0]] == [m["loss"] for m in train[1]] and len(train[0]) == 6
    weights = [torch.load(tmp_path / d / MODEL) for d in ("off", "on")]
    assert weights[0].keys() == weights[1].keys()
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])  # EMA buffers included
    tests = [[m for m in read_metrics(tmp_path / d) if m["split"] == "test"] for d in ("off", "on")]
    assert [(m["loss"], m["acc"]) for m in tests[0]] == [(m["loss"], m["acc"]) for m in tests[1]]
    assert {"loss_precise", "acc_precise", "loss_batch", "acc_batch"} <= set(tests[1][-1])
    assert {k for k in off if "precise" in k or "batch" in k} == set()  # the default: today's keys
    assert on["test_acc"] == off["test_acc"] and on["train_clean_loss"] == off["train_clean_loss"]
    assert on["test_loss_precise"] != on["test_loss"] and on["test_loss_batch"] != on["test_loss"]


@pytest.mark.parametrize("norm", [["norm=batch_noisy"], ["norm=ghost_batch", "norm.virtual_devices=2",
                                                         "train.eval_batch_stats=50"]])
def test_training_is_bit_identical_without_the_evaluations_before_the_end(tmp_path, norm):
    """What lets a profile evaluate a run at its end alone (Wu & Johnson's WJ-2, WJ-3 and WJ-5 runs at
    quick): the evaluations at steps 0, 10 and 20, in every mode, change nothing that the end records."""
    overrides = [*TINY, *norm, "data.crop_padding=2", "data.flip=true", ALL_MODES]
    every = run(compose(overrides), tmp_path / "every")
    end = run(compose([*overrides, "train.eval_every=0"]), tmp_path / "end")
    assert [m["step"] for m in read_metrics(tmp_path / "end") if m["split"] == "test"] == [30]
    weights = [torch.load(tmp_path / d / MODEL) for d in ("every", "end")]
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])  # EMA buffers included
    measured = [k for k in every if k.startswith(("test_", "train_clean_"))]
    assert len(measured) >= 6 and {k: end[k] for k in measured} == {k: every[k] for k in measured}


def test_precise_mode_equals_an_independent_recompute_of_the_saved_weights(tmp_path):
    """All 300 training images in one batch of 300: the recomputed statistics do not depend on the code's
    choice of images or their order; then the test set and the training set evaluated in eval mode."""
    cfg = compose([*TINY, "norm=batch", "train.eval_modes=[running,precise]", "train.precise_images=100000",
                   "train.precise_batch=300"])
    summary = run(cfg, tmp_path)
    model, data = _saved_model(cfg, tmp_path)
    precise = copy.deepcopy(model)
    recompute_running_stats(precise, [data.x_train], statistics_layers(precise), "precise")
    precise.eval()
    with torch.no_grad():
        test_acc, test_loss = _scores(precise(data.x_test), data.y_test)
        clean_acc, clean_loss = _scores(precise(data.x_train), data.y_train)
        running_acc, _ = _scores(model.eval()(data.x_test), data.y_test)
    assert len(data.y_train) == 300 and len(data.y_test) == 200
    assert summary["test_acc_precise"] == pytest.approx(test_acc, abs=1e-12)
    assert summary["test_loss_precise"] == pytest.approx(test_loss, rel=1e-5)
    assert summary["train_clean_acc_precise"] == pytest.approx(clean_acc, abs=1e-12)
    assert summary["train_clean_loss_precise"] == pytest.approx(clean_loss, rel=1e-5)
    assert summary["test_acc"] == pytest.approx(running_acc, abs=1e-12)  # model.pt keeps the EMA
    assert summary["test_loss_precise"] != pytest.approx(summary["test_loss"], rel=1e-3)
    assert load_runs(tmp_path)["test_acc_precise"].tolist() == [summary["test_acc_precise"]]


def test_batch_mode_equals_train_mode_forwards_of_the_saved_weights(tmp_path):
    """The 200 test images in the documented fixed random order, in batches of 64: three of 64, then the
    last 8 filled up with the first 56 of that order."""
    cfg = compose([*TINY, "norm=batch", "train.eval_modes=[running,batch]", "train.eval_batch_stats=64"])
    summary = run(cfg, tmp_path)
    model, data = _saved_model(cfg, tmp_path)
    order = torch.randperm(200, generator=torch.Generator().manual_seed(20_210_701))
    x, y = data.x_test[order], data.y_test[order]
    model.train()
    with torch.no_grad():
        outs = [model(x[i:i + 64]) for i in (0, 64, 128)] + [model(torch.cat([x[192:], x[:56]]))[:8]]
    acc, loss = _scores(torch.cat(outs), y)
    assert summary["test_acc_batch"] == pytest.approx(acc, abs=1e-12)
    assert summary["test_loss_batch"] == pytest.approx(loss, rel=1e-5)


def test_norms_without_population_statistics_record_the_running_values(tmp_path):
    summary = run(compose([*TINY, "norm=group", "norm.groups=2", ALL_MODES, "train.steps=10"]), tmp_path)
    for prefix in ("test", "train_clean"):
        for metric in ("acc", "loss"):
            key = f"{prefix}_{metric}"
            assert summary[f"{key}_precise"] == summary[key] and summary[f"{key}_batch"] == summary[key]


@pytest.mark.parametrize("overrides,key", [
    (["train.eval_modes=[precise]"], "train.eval_modes"),
    (["train.eval_modes=[running,precise,precise]"], "train.eval_modes"),
    (["train.eval_modes=[running,ema]"], "train.eval_modes[1]"),
    (["train.eval_modes=running"], "train.eval_modes"),
    (["norm=lp", "train.eval_modes=[running,precise]"], "train.eval_modes"),
    (["norm=ghost_batch", "data.batch_size=64", ALL_MODES, "train.eval_batch_stats=12"],
     "train.eval_batch_stats"),
    (["norm=ghost_batch", "data.batch_size=64", ALL_MODES, "train.precise_batch=20"], "train.precise_batch"),
    (["norm=batch", ALL_MODES, "train.eval_batch_stats=1"], "train.eval_batch_stats"),
    (["train.precise_images=0"], "train.precise_images"),
])
def test_bad_evaluation_settings_are_refused_naming_the_key(overrides, key):
    with pytest.raises(ConfigError) as refused:
        validate(compose([*TINY, *overrides]))
    assert refused.value.key == key and "\n" not in str(refused.value)


def test_ghost_batch_takes_evaluation_batches_of_whole_slices():
    validate(compose([*TINY, "norm=ghost_batch", "data.batch_size=64", ALL_MODES, "train.eval_batch_stats=16",
                      "train.precise_batch=24"]))


def test_the_default_modes_leave_the_run_identity_as_it_was():
    """Committed runs' config.yaml predate the keys: without an extra mode, a run is the same run."""
    cfg = compose(TINY)
    old = OmegaConf.to_container(cfg, resolve=True)  # a config.yaml written before the keys existed
    for key in ("eval_modes", "precise_images", "precise_batch", "eval_batch_stats"):
        del old["train"][key]
    assert run_identity(cfg) == run_identity(old)
    assert identity_key(cfg) == identity_key(compose([*TINY, "train.precise_images=5"]))
    assert identity_key(cfg) != identity_key(compose([*TINY, "train.eval_modes=[running,precise]"]))


def test_the_evaluation_batch_changes_no_prediction_and_the_loss_only_by_rounding(tmp_path):
    """data.eval_batch_size (quick: 250) is how many test images go through the net at once: the same
    training, the same accuracies, and a mean loss equal to the whole test set's in one float64 loss."""
    conv = [*TINY, "model=vgg_small", "norm=batch", "train.channels_last=true", "train.steps=20",
            "train.eval_train_images=300"]
    summaries = {b: run(compose([*conv, f"data.eval_batch_size={b}"]), tmp_path / str(b)) for b in (1000, 7)}
    cfg = compose(conv)
    model, data = _saved_model(cfg, tmp_path / "1000")
    other, _ = _saved_model(cfg, tmp_path / "7")
    weights = zip(model.state_dict().values(), other.state_dict().values(), strict=True)
    assert all(torch.equal(a, b) for a, b in weights)
    with torch.no_grad():
        acc, loss = _scores(model.eval()(data.x_test), data.y_test)
    for summary in summaries.values():
        assert summary["test_acc"] == pytest.approx(acc, abs=1e-12)
        assert summary["test_loss"] == pytest.approx(loss, rel=1e-5)
    assert summaries[7]["train_clean_acc"] == summaries[1000]["train_clean_acc"]
    assert summaries[7]["train_clean_loss"] == pytest.approx(summaries[1000]["train_clean_loss"], rel=1e-5)
