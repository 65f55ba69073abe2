"""A configurable VGG-like CNN: a layout of conv widths and 'M' (2x2 max-pool), then a small classifier.

The small default trains in minutes on two CPU cores; ``vgg11``/``vgg16`` configs give the CIFAR layouts
Santurkar et al. and Wu & He use.
"""

from __future__ import annotations

from torch import nn

from normexp.errors import ConfigError
from normexp.models.blocks import conv_block, linear_block
from normexp.norms import NormSpec


def vgg(in_shape, num_classes: int, norm: NormSpec, layout=(8, 8, "M", 16, 16, "M", 32, 32, "M", 32, 32),
        activation: str = "relu", classifier=(), head: str = "avgpool"):
    c, h, w = in_shape
    features: list[nn.Module] = []
    for item in layout:
        if item == "M":
            features.append(nn.MaxPool2d(2))
            h, w = h // 2, w // 2
            continue
        features.append(conv_block(c, int(item), norm, activation))
        c = int(item)
    if head == "avgpool":
        pool, d = nn.AdaptiveAvgPool2d(1), c
    elif head == "flatten":
        pool, d = nn.Identity(), c * h * w
    else:
        raise ConfigError("model.head", head, "choose one of: avgpool, flatten")
    fc: list[nn.Module] = []
    for width in classifier:
        fc.append(linear_block(d, int(width), norm, activation))
        d = int(width)
    fc.append(nn.Linear(d, num_classes))
    return nn.Sequential(nn.Sequential(*features), pool, nn.Flatten(), nn.Sequential(*fc))
