"""Moment drift (Santurkar et al. Fig 8): how far the post-norm activations' per-unit moments move.

On the fixed probe batch, each chosen Block's norm output gives per unit (channel: pooled over batch and
positions) a mean mu and a variance var (biased). A call compares them with the previous call's, k = ``every``
steps earlier; the first call only stores them (its record has no drift keys). Options: ``layers`` (Blocks),
``mode`` (``train`` by default: batch statistics and, for noisy BN, its noise, as training sees them),
``pair`` (false by default; a diagnostic, see below). The previous moments are probe state and travel in
checkpoints.

Keys: ``{block}/mean_drift`` = mean over units of |mu_t - mu_{t-k}|, ``{block}/var_drift`` likewise for var,
and their medians over the chosen Blocks ``median/mean_drift``, ``median/var_drift``.

With ``pair: true`` the probe is also called one step after each of its calls (step t + 1 for every t with
t % k == 0; the other probes keep their cadence) and records there the drift over that one step,
``{block}/mean_drift_1`` and ``{block}/var_drift_1`` (mu_{t+1} against mu_t). Both gaps then also get a
relative drift, ``..._drift_rel`` and ``..._drift_rel_1``: the drift divided by the moment's size, the mean
over units and over the two calls compared of |mu| (for var: of var); left out where that size is 0. Each has
its ``median/`` over Blocks. The registered keys are the same with ``pair`` on or off.
"""

from __future__ import annotations

from statistics import median

import torch

from normexp.checks import flag
from normexp.errors import check_choice
from normexp.probes.base import Probe, register
from normexp.probes.layers import blocks, capture, select, unit_columns

MODES = ("train", "eval")
MOMENTS = ("mean", "var")


@register("moment_drift")
class MomentDrift(Probe):
    defaults = {"layers": "all", "mode": "train", "pair": False}

    @classmethod
    def check(cls, opts, model, key):
        select(blocks(model), opts["layers"], f"{key}.layers")
        check_choice(f"{key}.mode", opts["mode"], MODES)
        flag()(f"{key}.pair", opts["pair"])

    def __init__(self, cfg, model):
        super().__init__(cfg, model)
        self.chosen = select(blocks(model), self.opts["layers"], "probes.moment_drift.layers")
        self.pair = bool(self.opts["pair"])
        self.previous: dict[str, torch.Tensor] = {}  # the moments of the last call on the cadence
        self.pending: tuple[int, dict[str, torch.Tensor]] | None = None  # (its step, moments): pair only

    def due(self, step: int) -> bool:
        return super().due(step) or (self.pair and step % self.every == 1)

    def measure(self, ctx) -> dict:
        moments, out = self.moments(ctx), {}
        if self.pending is not None and self.pending[0] == ctx.step - 1:
            out.update(drift_keys(self.pending[1], moments, "_1"))
        if ctx.step % self.every == 0:
            out.update(drift_keys(self.previous, moments, "", relative=self.pair))
            self.previous = moments
            self.pending = (ctx.step, moments) if self.pair else None
        return out

    def moments(self, ctx) -> dict[str, torch.Tensor]:
        """Per chosen Block: its units' (mean, var) on the probe batch, a 2 x units tensor on the CPU."""
        ctx.model.train(self.opts["mode"] == "train")
        with torch.no_grad(), capture(self.chosen, "post_norm") as seen:
            ctx.model(ctx.probe_batch[0])
        found = {}
        for name, _ in self.chosen:
            cols = unit_columns(seen[name]).double()
            found[name] = torch.stack([cols.mean(1), cols.var(1, unbiased=False)]).cpu()
        return found

    def state_dict(self) -> dict:
        pending = self.pending and {"step": self.pending[0], "moments": dict(self.pending[1])}
        return {"previous": dict(self.previous), "pending": pending}

    def load_state_dict(self, state: dict) -> None:
        self.previous = dict(state.get("previous", {}))
        pending = state.get("pending")
        self.pending = None if pending is None else (pending["step"], dict(pending["moments"]))


def drift_keys(before: dict, after: dict, suffix: str, relative: bool = True) -> dict:
    """``{block}/{moment}_drift{suffix}`` (and ``_drift_rel{suffix}``) for the Blocks in both, with their
    medians over Blocks."""
    per_key: dict[str, dict[str, float]] = {}
    for name, now in after.items():
        if name not in before:
            continue
        drift = (now - before[name]).abs().mean(1)
        size = torch.stack([now, before[name]]).abs().mean((0, 2))
        for i, moment in enumerate(MOMENTS):
            per_key.setdefault(f"{moment}_drift{suffix}", {})[name] = float(drift[i])
            if relative and size[i] > 0:
                per_key.setdefault(f"{moment}_drift_rel{suffix}", {})[name] = float(drift[i] / size[i])
    out = {f"{name}/{key}": v for key, values in per_key.items() for name, v in values.items()}
    out.update({f"median/{key}": median(values.values()) for key, values in per_key.items()})
    return out
