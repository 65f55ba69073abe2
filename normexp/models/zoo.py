"""torchvision's ResNets with the chosen norm injected through their ``norm_layer`` argument."""

from __future__ import annotations

import torch
from torch import nn

from normexp.errors import ConfigError, choices
from normexp.norms import NormSpec

ARCHS = ("resnet18", "resnet34", "resnet50", "resnet101")


def tv_resnet(in_shape, num_classes: int, norm: NormSpec, arch: str = "resnet50", zero_init_last: bool = True,
              small_input_stem: bool = False):
    """``small_input_stem`` swaps the 7x7/2 stem and max-pool for a 3x3/1 conv, for 28-32 pixel images."""
    import torchvision  # lazy: start-up (more than a second)

    if arch not in ARCHS:
        raise ConfigError("model.arch", arch, choices(ARCHS))
    if norm.placement != "before":
        raise ConfigError("norm.placement", norm.placement, "model=tv_resnet supports only: before")
    model = getattr(torchvision.models, arch)(weights=None, num_classes=num_classes, norm_layer=norm)
    if small_input_stem:
        model.conv1 = nn.Conv2d(in_shape[0], 64, 3, padding=1, bias=False)
        model.maxpool = nn.Identity()
    elif in_shape[0] != 3:
        model.conv1 = nn.Conv2d(in_shape[0], 64, 7, stride=2, padding=3, bias=False)
    if not norm.shifts:  # torchvision's convs leave the shift to the norm; without one they need their bias
        for conv in model.modules():
            if isinstance(conv, nn.Conv2d) and conv.bias is None:
                conv.bias = nn.Parameter(torch.zeros(conv.out_channels))
    if zero_init_last:  # torchvision's zero_init_residual assumes BN; this works for any norm with a gamma
        blocks = (torchvision.models.resnet.BasicBlock, torchvision.models.resnet.Bottleneck)
        for block in model.modules():
            last = getattr(block, "bn3", None) or getattr(block, "bn2", None)
            if isinstance(block, blocks) and getattr(last, "weight", None) is not None:
                nn.init.zeros_(last.weight)
    return model
