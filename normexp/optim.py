"""Optimizer (any ``torch.optim`` class through ``_target_``) and learning-rate schedules by step."""

from __future__ import annotations

import math

import torch
from hydra.utils import instantiate

from normexp.registry import Registry

# name -> the lr multiplier at the fraction t of the run, before the warm-up
SCHEDULES = Registry("schedule.name")


@SCHEDULES.register("constant")
def constant(t: float) -> float:
    return 1.0


@SCHEDULES.register("step")
def step(t: float, milestones=(0.3, 0.6, 0.9), gamma: float = 0.1) -> float:
    """lr x gamma at each milestone, a fraction of the run (Wu & He: 0.3, 0.6, 0.9)."""
    return float(gamma) ** sum(t >= m for m in milestones)


@SCHEDULES.register("cosine")
def cosine(t: float) -> float:
    return 0.5 * (1 + math.cos(math.pi * min(t, 1.0)))


@SCHEDULES.register("linear")
def linear(t: float) -> float:
    """Linear decay to zero."""
    return max(0.0, 1.0 - t)


def build_optimizer(cfg, model: torch.nn.Module) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    return instantiate(cfg, params=params, _convert_="all")


def lr_factor(cfg, total_steps: int):
    """step -> multiplier of the base lr: the schedule's shape times a linear warm-up over
    ``warmup_steps`` (steps, or a fraction of the run when below 1)."""
    name = cfg.get("name", "constant")
    shape = SCHEDULES.lookup(name)
    options = {k: cfg[k] for k in SCHEDULES.options(name, leading=1) if cfg.get(k) is not None}
    warmup = cfg.get("warmup_steps", 0) or 0
    warmup = int(warmup * total_steps) if 0 < warmup < 1 else int(warmup)

    def factor(step: int) -> float:
        ramp = min(1.0, (step + 1) / warmup) if warmup else 1.0
        return shape(step / max(total_steps, 1), **options) * ramp

    return factor


def build_schedule(cfg, optimizer, total_steps: int):
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor(cfg, total_steps))
