"""The lr range test (Smith 2017; fastai's ``lr_find``): one run with an exponentially rising lr, its loss
vs lr, and a suggested lr."""

from __future__ import annotations

import copy
import itertools
import math
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from normexp.compose import compose
from normexp.config import validate
from normexp.data import build_data
from normexp.errors import ConfigError, choices
from normexp.lrmap.run import MapRun
from normexp.models import build_model
from normexp.norms import NormSpec
from normexp.optim import build_optimizer
from normexp.runtime import make_loss, resolve_device, seed_everything


@dataclass
class RangeTest:
    lrs: list[float]
    losses: list[float]
    smoothed: list[float]
    suggestion: float
    rule: str


SUGGESTION_RULES = ("steepest", "min/10")


def lr_range_test(model: torch.nn.Module, optimizer: torch.optim.Optimizer, loss_fn, batches: Iterable,
                  start: float = 1e-6, end: float = 10.0, steps: int = 100, smoothing: float = 0.05,
                  rule: str = "steepest", stop_factor: float = 4.0) -> RangeTest:
    """Smith's lr range test: ``steps`` optimizer steps with lr rising exponentially from ``start`` to
    ``end`` (lr_i = start * (end/start)**(i/(steps-1)), the lr of step i paired with that step's loss);
    the loss is smoothed by an exponential moving average with weight ``smoothing`` on the new value,
    bias-corrected as fastai's; the test stops once the smoothed loss exceeds ``stop_factor`` x its minimum
    (or is not finite).

    Suggestion (``rule``): ``steepest`` (default, torch-lr-finder's): the lr where the smoothed loss falls
    fastest per unit of log lr, looked for from the 10% mark up to the smoothed minimum; ``min/10``
    (fastai v1's): a tenth of the lr at the smoothed minimum.

    The model's parameters and buffers, its train/eval mode, the optimizer's state and lrs, and torch's CPU
    RNG state are restored afterwards (the test trains the model)."""
    if rule not in SUGGESTION_RULES:
        raise ConfigError("rule", rule, choices(SUGGESTION_RULES))
    if not 0 < smoothing <= 1:
        raise ConfigError("smoothing", smoothing, "must be in (0, 1]")
    saved = (copy.deepcopy(model.state_dict()), copy.deepcopy(optimizer.state_dict()), model.training,
             torch.get_rng_state())
    lrs, losses, smoothed, avg = [], [], [], 0.0
    batches = itertools.cycle(batches) if isinstance(batches, (list, tuple)) else iter(batches)
    try:
        model.train()
        for i in range(steps):
            lr = start * (end / start) ** (i / max(steps - 1, 1))
            for group in optimizer.param_groups:
                group["lr"] = lr
            x, y = next(batches)
            loss = loss_fn(model(x), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            value = float(loss.detach())
            avg = (1 - smoothing) * avg + smoothing * value
            lrs.append(lr)
            losses.append(value)
            smoothed.append(avg / (1 - (1 - smoothing) ** (i + 1)))
            if not math.isfinite(smoothed[-1]) or smoothed[-1] > stop_factor * min(smoothed):
                break
    finally:
        model.load_state_dict(saved[0])
        optimizer.load_state_dict(saved[1])
        model.train(saved[2])
        torch.set_rng_state(saved[3])
    return RangeTest(lrs, losses, smoothed, suggest(lrs, smoothed, rule), rule)


def suggest(lrs: list[float], smoothed: list[float], rule: str = "steepest") -> float:
    s = np.asarray(smoothed, dtype=float)
    s = np.where(np.isfinite(s), s, np.inf)
    lowest = int(np.argmin(s))
    if rule == "min/10":
        return lrs[lowest] / 10
    first = min(len(s) // 10, max(lowest - 1, 0))
    window = s[first:lowest + 1]
    if len(window) < 2:
        return lrs[lowest]
    slope = np.gradient(window, np.log(np.asarray(lrs[first:lowest + 1])))
    return lrs[first + int(np.argmin(slope))]


def suggest_lr(cfg_or_overrides, start: float = 1e-5, end: float = 10.0, steps: int = 100,
               smoothing: float = 0.05, rule: str = "steepest") -> RangeTest:
    """The range test on a config (a composed DictConfig, or a list of normexp-train overrides): its model,
    norm, data (training batches in the run's order), optimizer and loss, from the config's seed. The
    suggested lr is ``.suggestion``."""

    cfg = compose(list(cfg_or_overrides)) if isinstance(cfg_or_overrides, (list, tuple)) else cfg_or_overrides
    validate(cfg)
    device = resolve_device(cfg.device)
    seed_everything(int(cfg.seed))
    data = build_data(cfg.data, device, int(cfg.seed))
    model = build_model(cfg.model, NormSpec.from_config(cfg.norm), data.info.in_shape,
                        data.info.num_classes).to(device)
    optimizer = build_optimizer(cfg.optim, model)
    batches = (data.batch(step) for step in range(steps))
    return lr_range_test(model, optimizer, make_loss(data.info.task), batches, start, end, steps, smoothing,
                         rule)


def range_test_column(run: MapRun, table: pd.DataFrame, steps: int, rule: str, log=print):
    """Each cell's range-test suggestion (first seed) beside its edge; returns (table, curves)."""
    curves, suggestions = [], []
    for cell in run.lrmap.cells:
        _, cfg, _ = run._cells[cell.name]
        cfg = cfg.copy()
        cfg.seed = int(run.lrmap.seeds[0])
        test = suggest_lr(cfg, run.lrmap.grid.lr_min / 10, run.lrmap.grid.lr_max, steps, rule=rule)
        log(f"normexp-lrmap: range test {cell.name}: suggests {test.suggestion:.3g} ({rule})")
        suggestions.append(test.suggestion)
        curves.append(pd.DataFrame({"cell": cell.name, "lr": test.lrs, "loss": test.losses,
                                    "smoothed": test.smoothed}))
    table = table.assign(range_test_lr=suggestions)
    table["edge_over_range_test"] = table["largest_stable_lr"] / table["range_test_lr"]
    return table, pd.concat(curves, ignore_index=True)
