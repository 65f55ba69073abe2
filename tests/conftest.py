"""Shared test helpers: ``compose`` (a smoke-size, CPU, quiet config) and the repo's paths."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parent.parent
# Data caches (mnist5k) go to the repo's data/ wherever pytest is started from; subprocesses inherit it.
os.environ.setdefault("NORMEXP_DATA", str(REPO / "data"))
# The tests' tensors are small: one thread is faster than two fighting over a shared machine.
torch.set_num_threads(1)

QUIET = ["device=cpu", "train.progress=false", "logger=local"]
SMOKE = ["profile=smoke", *QUIET]


def _compose(overrides=(), smoke: bool = True):
    from normexp.compose import compose

    return compose([*(SMOKE if smoke else QUIET), *overrides])


@pytest.fixture
def compose():
    """``compose(["norm=group", ...])``: the config of a smoke-size CPU run with these overrides."""
    return _compose
