"""The lr schedules (normexp/optim.py) against their closed forms, with a linear warm-up given as steps or
as a fraction of the run."""

import math

import pytest
from omegaconf import OmegaConf

from normexp.compose import compose
from normexp.config import validate
from normexp.errors import ConfigError
from normexp.optim import lr_factor


def test_cosine_with_a_warmup_given_as_a_fraction_of_the_run_is_the_same_as_in_steps():
    total = 234
    steps = lr_factor(OmegaConf.create({"name": "cosine", "warmup_steps": 11}), total)
    fraction = lr_factor(OmegaConf.create({"name": "cosine", "warmup_steps": 0.05}), total)  # int(11.7)
    for step in range(total):
        cosine = 0.5 * (1 + math.cos(math.pi * step / total))
        assert steps(step) == fraction(step) == pytest.approx(cosine * min(1.0, (step + 1) / 11))
    assert steps(0) == pytest.approx(1 / 11) and steps(10) == pytest.approx(0.5 * (1 + math.cos(math.pi * 10
                                                                                                   / total)))


def test_warmup_steps_takes_an_integer_or_a_fraction_and_nothing_else():
    quiet = ["device=cpu", "schedule=cosine"]
    for good in ("0.05", "11", "0"):
        validate(compose([*quiet, f"schedule.warmup_steps={good}"]))
    for bad in ("1.5", "-1", "abc"):
        with pytest.raises(ConfigError, match=r"warmup_steps=.*integer >= 0 \(steps\) or a fraction"):
            validate(compose([*quiet, f"schedule.warmup_steps={bad}"]))
