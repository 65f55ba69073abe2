"""Ioffe & Szegedy's MNIST network: fully connected hidden layers (784-100-100-100-10 by default)."""

from __future__ import annotations

import math

from torch import nn

from normexp.models.blocks import linear_block
from normexp.norms import NormSpec


def mlp(in_shape, num_classes: int, norm: NormSpec, widths=(100, 100, 100), activation: str = "sigmoid"):
    layers: list[nn.Module] = [nn.Flatten()]
    d = math.prod(in_shape)
    for w in widths:
        layers.append(linear_block(d, w, norm, activation))
        d = w
    layers.append(nn.Linear(d, num_classes))
    return nn.Sequential(*layers)
