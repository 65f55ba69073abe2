"""Activation percentiles (Ioffe & Szegedy Fig 1b,c; Wu & He Fig 6) on the fixed probe batch.

Options: ``layers`` (Blocks: indices, names or "all"), ``site`` (``pre_act``: the input to the Block's
nonlinearity; ``pre_norm``: the layer's output before the norm; ``post_norm``: the norm's output), ``units``
(unit/channel indices, or "all": every unit and position pooled), ``percentiles``, ``mode`` (``train``: the
batch statistics training sees; ``eval``: running statistics). For conv layers a unit is a channel and its
percentiles pool the batch and positions. Percentiles interpolate linearly (numpy's default).

Keys: ``{block}/u{unit}/p{q:g}`` (e.g. ``3/u0/p15``), or ``{block}/all/p{q:g}`` when units is "all".
"""

from __future__ import annotations

import numpy as np
import torch

from normexp.checks import number
from normexp.errors import ConfigError, check_choice
from normexp.probes.base import Probe, register
from normexp.probes.layers import SITES, blocks, capture, channels, select, unit_columns

MODES = ("train", "eval")


@register("activations")
class Activations(Probe):
    defaults = {"layers": [-1], "site": "pre_act", "units": [0, 1, 2], "percentiles": [15, 50, 85],
                "mode": "train"}

    @classmethod
    def check(cls, opts, model, key):
        chosen = select(blocks(model), opts["layers"], f"{key}.layers")
        check_choice(f"{key}.site", opts["site"], SITES)
        check_choice(f"{key}.mode", opts["mode"], MODES)
        qs = opts["percentiles"]
        if not isinstance(qs, list) or not qs:
            raise ConfigError(f"{key}.percentiles", qs, "must be a non-empty list of numbers in [0, 100]")
        for q in qs:
            number(0, 100)(f"{key}.percentiles", q)
        units = opts["units"]
        if units == "all":
            return
        width = min((channels(b) for _, b in chosen), default=0)
        if not isinstance(units, list) or not units or not all(
                isinstance(u, int) and not isinstance(u, bool) and 0 <= u < width for u in units):
            raise ConfigError(f"{key}.units", units,
                              f"'all' or a non-empty list of unit indices 0..{width - 1} (narrowest layer)")

    def __init__(self, cfg, model):
        super().__init__(cfg, model)
        self.chosen = select(blocks(model), self.opts["layers"], "probes.activations.layers")

    def measure(self, ctx) -> dict:
        o = self.opts
        ctx.model.train(o["mode"] == "train")
        with torch.no_grad(), capture(self.chosen, o["site"]) as seen:
            ctx.model(ctx.probe_batch[0])
        labels = ["all"] if o["units"] == "all" else [f"u{u}" for u in o["units"]]
        out = {}
        for name, _ in self.chosen:
            cols = unit_columns(seen[name])
            rows = cols.reshape(1, -1) if o["units"] == "all" else cols[o["units"]]
            table = np.percentile(rows.double().cpu().numpy(), o["percentiles"], axis=1)  # (quantiles, units)
            for q, per_unit in zip(o["percentiles"], table, strict=True):
                for label, v in zip(labels, per_unit, strict=True):
                    out[f"{name}/{label}/p{q:g}"] = float(v)
        return out
