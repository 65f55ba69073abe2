"""Moment drift (Santurkar et al. Fig 8): how far the post-norm activations' per-unit moments move.

On the fixed probe batch, each chosen Block's norm output gives per unit (channel: pooled over batch and
positions) a mean mu and a variance var (biased). A call compares them with the previous call's, k = ``every``
steps earlier; the first call only stores them (its record has no drift keys). Options: ``layers`` (Blocks),
``mode`` (``train`` by default: batch statistics and, for noisy BN, its noise, as training sees them).
The previous moments are probe state and travel in checkpoints.

Keys: ``{block}/mean_drift`` = mean over units of |mu_t - mu_{t-k}|, ``{block}/var_drift`` likewise for var,
and their medians over the chosen Blocks ``median/mean_drift``, ``median/var_drift``.
"""

from __future__ import annotations

from statistics import median

import torch

from normexp.errors import check_choice
from normexp.probes.base import Probe, register
from normexp.probes.layers import blocks, capture, select, unit_columns

MODES = ("train", "eval")


@register("moment_drift")
class MomentDrift(Probe):
    defaults = {"layers": "all", "mode": "train"}

    @classmethod
    def check(cls, opts, model, key):
        select(blocks(model), opts["layers"], f"{key}.layers")
        check_choice(f"{key}.mode", opts["mode"], MODES)

    def __init__(self, cfg, model):
        super().__init__(cfg, model)
        self.chosen = select(blocks(model), self.opts["layers"], "probes.moment_drift.layers")
        self.previous: dict[str, torch.Tensor] = {}

    def measure(self, ctx) -> dict:
        ctx.model.train(self.opts["mode"] == "train")
        with torch.no_grad(), capture(self.chosen, "post_norm") as seen:
            ctx.model(ctx.probe_batch[0])
        out, means, variances = {}, [], []
        for name, _ in self.chosen:
            cols = unit_columns(seen[name]).double()
            moments = torch.stack([cols.mean(1), cols.var(1, unbiased=False)]).cpu()
            before = self.previous.get(name)
            self.previous[name] = moments
            if before is None:
                continue
            mean_drift, var_drift = (moments - before).abs().mean(1).tolist()
            out[f"{name}/mean_drift"], out[f"{name}/var_drift"] = mean_drift, var_drift
            means.append(mean_drift)
            variances.append(var_drift)
        if means:
            out["median/mean_drift"], out["median/var_drift"] = median(means), median(variances)
        return out

    def state_dict(self) -> dict:
        return {"previous": dict(self.previous)}

    def load_state_dict(self, state: dict) -> None:
        self.previous = dict(state.get("previous", {}))
