"""Gradient and weight norms per conv/linear layer: the step's gradient (``.grad``) and the current weight.

Option: ``layers`` (indices, names or "all"). Keys: ``{layer}/grad_norm``, ``{layer}/weight_norm`` (l2 norms
of the layer's weight), ``total/grad_norm``, ``total/weight_norm`` (over every parameter of the model).
"""

from __future__ import annotations

import torch

from normexp.probes.base import WeightLayerProbe, register


@register("param_norms")
class ParamNorms(WeightLayerProbe):

    def measure(self, ctx) -> dict:
        keys, norms = [], []
        for name, layer in self.chosen:
            w = layer.weight
            if w.grad is not None:
                keys.append(f"{name}/grad_norm")
                norms.append(w.grad.double().norm())
            keys.append(f"{name}/weight_norm")
            norms.append(w.detach().double().norm())
        params = list(ctx.model.parameters())
        keys += ["total/grad_norm", "total/weight_norm"]
        norms += [torch.stack([p.grad.double().norm() for p in params if p.grad is not None]).norm(),
                  torch.stack([p.detach().double().norm() for p in params]).norm()]
        return dict(zip(keys, torch.stack(norms).tolist(), strict=True))
