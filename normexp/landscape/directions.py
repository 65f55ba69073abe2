"""Random directions in weight space, filter-normalized as in Li et al. 2018 ("Visualizing the Loss
Landscape of Neural Nets").

A direction d has one tensor per trainable parameter w. For a conv or linear weight (2 or more dims), d is
Gaussian and each filter (an output channel of a conv, a row of a linear layer: index 0) is rescaled to the
norm of the same filter of w: d_i <- d_i ||w_i|| / ||d_i||. One-dimensional parameters (biases, the
norms' gains and shifts) are handled as Li et al.'s code does: ``weights`` sets their direction to zero
(their default, "ignore biasbn"), ``all`` moves them along themselves (d = w: each scalar is its own filter
and keeps its sign, so the step is proportional to the parameter).
"""

from __future__ import annotations

import torch

from normexp.errors import ConfigError, choices

DIRECTIONS = ("weights", "all")


def filter_normalized(d: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """``d`` with each filter (slice along dim 0) scaled to the norm of the matching filter of ``w``."""
    d_norms = d.reshape(len(d), -1).norm(dim=1)
    w_norms = w.reshape(len(w), -1).norm(dim=1)
    scale = w_norms / (d_norms + 1e-10)
    return d * scale.view(-1, *([1] * (d.dim() - 1)))


def random_direction(named_params, kind: str, generator: torch.Generator) -> dict[str, torch.Tensor]:
    """{name: direction} for ``named_params`` ((name, parameter) pairs), drawn from ``generator`` (CPU)
    in order, so a seed gives the same direction on every device."""
    if kind not in DIRECTIONS:
        raise ConfigError("--directions", kind, choices(DIRECTIONS))
    out = {}
    for name, p in named_params:
        w = p.detach()
        d = torch.randn(w.shape, generator=generator, dtype=w.dtype).to(w.device)
        if w.dim() >= 2:
            out[name] = filter_normalized(d, w)
        else:
            out[name] = torch.zeros_like(w) if kind == "weights" else w.clone()
    return out
