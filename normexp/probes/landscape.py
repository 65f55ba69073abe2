"""The loss landscape along the gradient (Santurkar et al. Fig 4), on the step's own batch.

g = the step's gradient (``.grad``). For each step size eta = s * lr, s on the grid (``low``..``high``,
``points`` values, ``spacing`` linear or log; multiples of the optimizer's current lr, each parameter using
its own param group's lr), the probe evaluates L(w - eta g) and grad L(w - eta g) on the same batch, the
model in its training mode (the loss being optimized); every point replays the same RNG state. Santurkar's
grids: conv nets 0.5..4 x lr, 7 points, linear; the DLN 0.01..30 x lr, log-spaced.

Keys: ``loss_min``, ``loss_max``, ``loss_band`` (max - min of L over the grid), ``grad_change_min``,
``grad_change_max`` (gradient predictiveness: ||grad L(w - eta g) - g||_2 over the grid), ``beta`` (effective
beta-smoothness: max over the grid of ||grad L(w - eta g) - g||_2 / ||eta g||_2), ``grad_norm`` (||g||_2),
``lr`` (param group 0's lr), and per grid point ``x{s:g}/loss`` and ``x{s:g}/grad_change``.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from normexp.checks import integer, number
from normexp.errors import ConfigError, check_choice
from normexp.probes.base import Probe, register
from normexp.probes.guard import assign, replayed_rng

SPACINGS = ("linear", "log")


def grid(low: float, high: float, points: int, spacing: str) -> list[float]:
    return (np.linspace if spacing == "linear" else np.geomspace)(low, high, points).tolist()


def _norm(tensors) -> float:
    return math.sqrt(sum(float(t.double().pow(2).sum()) for t in tensors))


@register("landscape")
class Landscape(Probe):
    defaults = {"low": 0.5, "high": 4.0, "points": 7, "spacing": "linear"}

    @classmethod
    def check(cls, opts, model, key):
        check_choice(f"{key}.spacing", opts["spacing"], SPACINGS)
        integer(1, exact=True)(f"{key}.points", opts["points"])
        low, high = opts["low"], opts["high"]
        for name in ("low", "high"):  # multiples of the lr
            number(0, strict=True)(f"{key}.{name}", opts[name])
        if high < low:
            raise ConfigError(f"{key}.high", high, f"must be >= probes.landscape.low={low}")

    def __init__(self, cfg, model):
        super().__init__(cfg, model)
        o = self.opts
        self.scales = grid(float(o["low"]), float(o["high"]), int(o["points"]), o["spacing"])

    def measure(self, ctx) -> dict:
        model, (x, y), optimizer = ctx.model, ctx.batch, ctx.optimizer
        params = [p for p in model.parameters() if p.grad is not None]
        now = [p.detach().clone() for p in params]
        g = [p.grad.detach().clone() for p in params]
        lr = {id(p): group["lr"] for group in optimizer.param_groups for p in group["params"]}
        step = [lr.get(id(p), 0.0) * gi for p, gi in zip(params, g, strict=True)]  # eta g = s * step
        step_norm = _norm(step)
        out, losses, changes, betas = {}, [], [], []
        for s in self.scales:
            assign(params, [w - s * d for w, d in zip(now, step, strict=True)])
            with replayed_rng():
                loss = ctx.loss_fn(model(x), y)
                moved = torch.autograd.grad(loss, params)
            change = _norm([a - b for a, b in zip(moved, g, strict=True)])
            losses.append(float(loss.detach()))
            changes.append(change)
            betas.append(change / (s * step_norm) if step_norm > 0 else math.nan)
            out[f"x{s:g}/loss"], out[f"x{s:g}/grad_change"] = losses[-1], change
        out.update(loss_min=min(losses), loss_max=max(losses), loss_band=max(losses) - min(losses),
                   grad_change_min=min(changes), grad_change_max=max(changes), beta=max(betas),
                   grad_norm=_norm(g), lr=float(optimizer.param_groups[0]["lr"]))
        return out
