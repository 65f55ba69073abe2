"""Top Hessian eigenvalue of the loss on the fixed probe batch, by power iteration on Hessian-vector
products (double backprop; :mod:`normexp.landscape.hvp`, shared with the curvature tools), for the whole
model and optionally per layer (the Hessian block of one conv/linear layer's weight and bias).

The eigenvalue found is the one of largest magnitude, with its sign: the Rayleigh quotient lambda = v^T H v
of the unit iterate v. Iteration starts from a fixed Gaussian vector (its own generator) and stops when the
residual ||H v - lambda v|| is at most ``tol`` |lambda| (for a symmetric H some eigenvalue then lies within
``tol`` relative of lambda, and the Rayleigh quotient's error is of second order), or after ``max_iter``
Hessian-vector products (``iters`` = max_iter: not converged). Options:
``layers`` (per-layer blocks: indices, names, "all", or [] for the whole model only), ``bn_mode``
(``train``: the whole model in train mode, batch statistics, the loss being optimized; ``eval``: the whole
model in eval mode, running statistics), ``tol``, ``max_iter``.

Keys: ``model/top_eig``, ``model/iters``, and per chosen layer ``{layer}/top_eig``, ``{layer}/iters``.
"""

from __future__ import annotations

import torch

from normexp.checks import integer, number
from normexp.errors import check_choice
from normexp.landscape.hvp import power_iteration
from normexp.probes.base import WeightLayerProbe, register

BN_MODES = ("train", "eval")


@register("hessian")
class Hessian(WeightLayerProbe):
    defaults = {"layers": [], "bn_mode": "train", "tol": 1e-3, "max_iter": 100}

    @classmethod
    def check(cls, opts, model, key):
        super().check(opts, model, key)
        check_choice(f"{key}.bn_mode", opts["bn_mode"], BN_MODES)
        number(0, 1, strict=True)(f"{key}.tol", opts["tol"])
        integer(1, exact=True)(f"{key}.max_iter", opts["max_iter"])

    def measure(self, ctx) -> dict:
        model, (x, y), o = ctx.model, ctx.probe_batch, self.opts
        model.train(o["bn_mode"] == "train")
        params = [p for p in model.parameters() if p.requires_grad]
        grads = torch.autograd.grad(ctx.loss_fn(model(x), y), params, create_graph=True)
        tol, max_iter = float(o["tol"]), int(o["max_iter"])
        out = {}
        out["model/top_eig"], out["model/iters"] = power_iteration(grads, params, tol, max_iter)
        index = {id(p): i for i, p in enumerate(params)}
        for name, layer in self.chosen:
            block = [p for p in layer.parameters() if p.requires_grad]
            g = [grads[index[id(p)]] for p in block]
            out[f"{name}/top_eig"], out[f"{name}/iters"] = power_iteration(g, block, tol, max_iter)
        return out
