"""CIFAR-style ResNet (He et al. 2016): depth 6n+2, three stages of n basic blocks, widths 16/32/64 x width.

Shortcuts that change shape are 1x1 convs followed by the norm. ``zero_init_last`` sets the last norm's
gamma in each block to zero, as Wu & He do, so every block starts as the identity. ``stem_stride=2`` halves
the input's size in the first conv (28 x 28 images: stages at 14, 7 and 4 pixels; a quarter of the compute,
and last-stage maps of 16 positions, so BN's statistics at a small batch rest on few values).
"""

from __future__ import annotations

from torch import nn

from normexp.errors import ConfigError
from normexp.models.blocks import activation, conv_block
from normexp.norms import NormSpec


class BasicBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int, norm: NormSpec, act: str):
        super().__init__()
        self.block1 = conv_block(c_in, c_out, norm, act, stride=stride)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1, bias=not norm.shifts)
        self.norm2 = norm(c_out)
        self.shortcut = nn.Identity()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride=stride, bias=not norm.shifts),
                                          norm(c_out))
        self.act = activation(act)

    def forward(self, x):
        return self.act(self.norm2(self.conv2(self.block1(x))) + self.shortcut(x))


def resnet_cifar(in_shape, num_classes: int, norm: NormSpec, depth: int = 20, width: int = 1,
                 activation: str = "relu", zero_init_last: bool = False, stem_stride: int = 1):
    if depth < 8 or (depth - 2) % 6:
        raise ConfigError("model.depth", depth, "must be 6n+2 with n >= 1 (8, 14, 20, 32, 56, 110, ...)")
    if norm.placement != "before":
        raise ConfigError("norm.placement", norm.placement, "model=resnet_cifar supports only: before")
    if stem_stride not in (1, 2):
        raise ConfigError("model.stem_stride", stem_stride, "choose from: 1, 2")
    n = (depth - 2) // 6
    widths = [16 * width, 32 * width, 64 * width]
    layers: list[nn.Module] = [conv_block(in_shape[0], widths[0], norm, activation, stride=stem_stride)]
    c = widths[0]
    for stage, w in enumerate(widths):
        for i in range(n):
            layers.append(BasicBlock(c, w, 2 if stage > 0 and i == 0 else 1, norm, activation))
            c = w
    model = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c, num_classes))
    if zero_init_last:
        for m in model.modules():
            if isinstance(m, BasicBlock) and getattr(m.norm2, "weight", None) is not None:
                nn.init.zeros_(m.norm2.weight)
    return model
