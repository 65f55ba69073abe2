"""Hessian-vector products by double backprop, and power iteration on them: the one HVP shared by the
``hessian`` probe and :mod:`normexp.landscape.curvature` (kept free of other normexp imports, so the probe
package can import it)."""

from __future__ import annotations

import math

import torch


def dot(a, b) -> float:
    """The inner product of two lists of tensors, summed in float64."""
    return float(sum((x.double() * y.double()).sum() for x, y in zip(a, b, strict=True)))


def hvp(grads, params, v) -> tuple[torch.Tensor, ...]:
    """H v, for H the Hessian d(grads)/d(params) and v a list shaped like ``params``; ``grads`` must carry a
    graph (``torch.autograd.grad(..., create_graph=True)``), which is kept for the next product."""
    return torch.autograd.grad(grads, params, grad_outputs=v, retain_graph=True)


def power_iteration(grads, params, tol: float, max_iter: int, seed: int = 0) -> tuple[float, int]:
    """The dominant (largest magnitude, signed) eigenvalue of the Hessian d(grads)/d(params) by power
    iteration from a fixed Gaussian start. Stops when ||H v - lambda v|| <= tol |lambda| for the unit
    iterate v and its Rayleigh quotient lambda, or after ``max_iter`` products. Returns (eigenvalue,
    products used)."""
    gen = torch.Generator().manual_seed(seed)
    v = [torch.randn(p.shape, generator=gen, dtype=p.dtype).to(p.device) for p in params]
    scale = math.sqrt(dot(v, v))
    v = [t / scale for t in v]
    estimate = math.nan
    for i in range(1, max_iter + 1):
        hv = hvp(grads, params, v)
        estimate = dot(v, hv)
        residual = [h - estimate * t for h, t in zip(hv, v, strict=True)]  # directly: no cancellation
        if math.sqrt(dot(residual, residual)) <= tol * abs(estimate):
            return estimate, i
        size = math.sqrt(dot(hv, hv))  # > 0: a zero Hv has a zero residual and returned above
        v = [t / size for t in hv]
    return estimate, max_iter
