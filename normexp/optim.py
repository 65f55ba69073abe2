"""Optimizer (any ``torch.optim`` class through ``_target_``) and learning-rate schedules by step."""

from __future__ import annotations

import math

import torch
from hydra.utils import instantiate

from normexp.errors import check_choice

SCHEDULES = ("constant", "step", "cosine", "linear")


def check_schedule(name) -> None:
    check_choice("schedule.name", name, SCHEDULES)


def build_optimizer(cfg, model: torch.nn.Module) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    return instantiate(cfg, params=params, _convert_="all")


def lr_factor(cfg, total_steps: int):
    """step -> multiplier of the base lr. Milestones are fractions of the run (Wu & He: 0.3, 0.6, 0.9)."""
    name = cfg.get("name", "constant")
    check_schedule(name)
    warmup = cfg.get("warmup_steps", 0) or 0
    warmup = int(warmup * total_steps) if 0 < warmup < 1 else int(warmup)  # a fraction of the run, or steps

    def shape(step: int) -> float:
        t = step / max(total_steps, 1)
        if name == "constant":
            return 1.0
        if name == "step":
            return float(cfg.get("gamma", 0.1)) ** sum(t >= m for m in cfg.get("milestones", [0.3, 0.6, 0.9]))
        if name == "cosine":
            return 0.5 * (1 + math.cos(math.pi * min(t, 1.0)))
        return max(0.0, 1.0 - t)  # linear decay to zero

    return lambda step: shape(step) * (min(1.0, (step + 1) / warmup) if warmup else 1.0)


def build_schedule(cfg, optimizer, total_steps: int):
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor(cfg, total_steps))
