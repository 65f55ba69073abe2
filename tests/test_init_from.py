"""train.init_from: a run starts from another run's model.pt (fine-tuning, e.g. with frozen BN)."""

from __future__ import annotations

import pytest
import torch

from normexp.compose import compose
from normexp.errors import ConfigError
from normexp.records import MODEL, read_metrics
from normexp.train import run

BASE = ["profile=smoke", "model=mlp", "model.activation=relu", "device=cpu", "train.threads=1",
        "train.progress=false", "train.steps=10", "train.eval_every=10", "train.save_final=true"]


def test_a_run_starts_from_the_weights_of_another_runs_model_pt(tmp_path):
    run(compose([*BASE, "norm=batch", "seed=1"]), tmp_path / "source")
    source = torch.load(tmp_path / "source" / MODEL)
    run(compose([*BASE, "norm=frozen_batch", "seed=2", f"train.init_from={tmp_path / 'source' / MODEL}"]),
        tmp_path / "tuned")
    run(compose([*BASE, "norm=frozen_batch", "seed=2"]), tmp_path / "fresh")
    # eval-mode BN is frozen BN with the same running statistics: evaluated at step 0 (before any update), the
    # tuned run's model is the source's final one; a fresh init is not
    start, fresh = _test_loss(tmp_path / "tuned", 0), _test_loss(tmp_path / "fresh", 0)
    assert start == pytest.approx(_test_loss(tmp_path / "source", -1), rel=1e-6)
    assert abs(fresh - start) > 1e-3
    tuned = torch.load(tmp_path / "tuned" / MODEL)
    assert tuned.keys() == source.keys()
    assert all(torch.equal(tuned[k], source[k]) for k in source if "running" in k)  # frozen BN never updates
    assert not all(torch.equal(tuned[k], source[k]) for k in source)  # the weights trained on


def _test_loss(run_dir, index: int) -> float:
    return [r["loss"] for r in read_metrics(run_dir) if r["split"] == "test"][index]


def test_init_from_a_missing_file_names_the_key(tmp_path):
    with pytest.raises(ConfigError, match="train.init_from"):
        run(compose([*BASE, f"train.init_from={tmp_path / 'nowhere.pt'}"]), tmp_path / "run")
