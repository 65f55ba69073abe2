"""Determinism: the same seed gives bit-identical records and weights on CPU, different seeds differ, and
meta.json says whether deterministic algorithms were requested. The config draws on every random source a
run has: the init, the data order, crop and flip offsets, and noisy BN's draws from the global RNG."""

from __future__ import annotations

import pytest
import torch

from normexp.compose import compose
from normexp.records import MODEL, read_json, read_metrics
from normexp.train import run

RANDOM_EVERYWHERE = ["profile=smoke", "model=mlp", "device=cpu", "train.threads=1", "train.progress=false",
                     "train.steps=10", "norm=batch_noisy", "data.crop_padding=2", "data.flip=true",
                     "train.save_final=true"]
TIMING = ("wall_seconds", "steps_per_second", "seconds")


@pytest.fixture(autouse=True)
def _restore_torch_settings():
    threads, deterministic = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    yield
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(deterministic)


def records_of(run_dir) -> list[dict]:
    return [{k: v for k, v in r.items() if k not in TIMING} for r in read_metrics(run_dir)]


def test_the_same_seed_gives_bit_identical_records_and_weights(tmp_path):
    for name in ("a", "b"):
        run(compose([*RANDOM_EVERYWHERE, "seed=3"]), tmp_path / name)
    assert records_of(tmp_path / "a") == records_of(tmp_path / "b")
    assert len(records_of(tmp_path / "a")) == 5  # test 0, train 5, train 10, test 10, train_clean 10
    a, b = torch.load(tmp_path / "a" / MODEL), torch.load(tmp_path / "b" / MODEL)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_a_conv_net_in_channels_last_repeats_bit_for_bit(tmp_path):
    """The quick profile's layout (train.channels_last=true): a conv net with BN, crop and flip, run twice."""
    conv = [*RANDOM_EVERYWHERE, "model=vgg_small", "norm=batch", "train.channels_last=true",
            "data.batch_size=8", "seed=3"]
    for name in ("a", "b"):
        run(compose(conv), tmp_path / name)
    assert records_of(tmp_path / "a") == records_of(tmp_path / "b")
    a, b = torch.load(tmp_path / "a" / MODEL), torch.load(tmp_path / "b" / MODEL)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_different_seeds_differ(tmp_path):
    for seed in (3, 4):
        run(compose([*RANDOM_EVERYWHERE, f"seed={seed}"]), tmp_path / str(seed))
    three, four = records_of(tmp_path / "3"), records_of(tmp_path / "4")
    assert [(r["step"], r["split"]) for r in three] == [(r["step"], r["split"]) for r in four]
    assert all(r3["loss"] != r4["loss"] for r3, r4 in zip(three, four, strict=True))


@pytest.mark.parametrize("requested", [True, False])
def test_meta_records_whether_deterministic_algorithms_were_requested(tmp_path, requested):
    flag = f"train.deterministic={str(requested).lower()}"
    run(compose([*RANDOM_EVERYWHERE, "train.steps=2", flag]), tmp_path)
    assert read_json(tmp_path / "meta.json")["deterministic_requested"] is requested
    assert torch.are_deterministic_algorithms_enabled() is requested
