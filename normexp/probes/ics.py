"""Internal covariate shift, Santurkar et al. Definition 2.1, for each chosen conv/linear layer i.

On the step's own batch, G = grad of the loss w.r.t. W_i at the current weights and G' = the same gradient
after layers 1..i-1 have taken this step's optimizer update: every parameter registered before W_i in the
model (forward order here; norm gains and shifts of earlier Blocks included) moves as ``optimizer.step()``
moves it now, W_i and everything after it stays. The update is the optimizer's own (lr, momentum, weight
decay, Adam moments included; per-parameter optimizers update each parameter independently, so one full
step gives every layer's "earlier layers only" update). The model runs in its training mode; every
evaluation replays the same RNG state, so noisy BN compares G and G' under the same noise. Cost: one
optimizer step and one forward/backward per layer, plus one for G. Option: ``layers`` (conv/linear
layers: indices, names or "all").

Keys: ``{layer}/l2`` = ||G - G'||_2, ``{layer}/cos`` = cos(G, G'), and medians over the chosen layers
``median/l2``, ``median/cos``.
"""

from __future__ import annotations

from statistics import median

import torch

from normexp.probes.base import WeightLayerProbe, register
from normexp.probes.guard import assign, replayed_rng


@register("ics")
class InternalCovariateShift(WeightLayerProbe):

    def measure(self, ctx) -> dict:
        model, (x, y) = ctx.model, ctx.batch
        params = list(model.parameters())
        now = [p.detach().clone() for p in params]
        ctx.optimizer.step()  # this step's update of every parameter (the guard undoes it)
        updated = [p.detach().clone() for p in params]
        position = {id(p): i for i, p in enumerate(params)}

        def grads(weights):
            with replayed_rng():
                return torch.autograd.grad(ctx.loss_fn(model(x), y), weights)

        weights = [m.weight for _, m in self.chosen]
        assign(params, now)
        before = grads(weights)
        out = {}
        for (name, _), w, g in zip(self.chosen, weights, before, strict=True):
            k = position[id(w)]
            assign(params, updated[:k] + now[k:])
            (g_after,) = grads([w])
            g, g_after = g.double().flatten(), g_after.double().flatten()
            out[f"{name}/l2"] = float((g - g_after).norm())
            out[f"{name}/cos"] = float(g @ g_after / (g.norm() * g_after.norm()))
        if self.chosen:
            out["median/l2"] = median(out[f"{n}/l2"] for n, _ in self.chosen)
            out["median/cos"] = median(out[f"{n}/cos"] for n, _ in self.chosen)
        return out
