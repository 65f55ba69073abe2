"""Santurkar et al.'s deep linear network: ``depth`` square bias-free linear layers, W_depth ... W_1 x.

The paper leaves BN's placement unstated; here a norm follows every layer but the last (a norm on the
output would keep it from fitting A x).
"""

from __future__ import annotations

import math

from torch import nn

from normexp.models.blocks import Block, linear_norm
from normexp.norms import NormSpec


def dln(in_shape, num_classes: int, norm: NormSpec, depth: int = 25, width: int = 10):
    d_in = math.prod(in_shape)
    dims = [d_in] + [width] * (depth - 1) + [num_classes]
    layers: list[nn.Module] = [nn.Flatten()]
    for i in range(depth):
        linear = nn.Linear(dims[i], dims[i + 1], bias=False)
        last = i == depth - 1
        layers.append(linear if last else Block(linear, linear_norm(norm, dims[i + 1]), nn.Identity(),
                                                norm.placement))
    return nn.Sequential(*layers)
