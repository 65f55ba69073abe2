"""Which layers a probe looks at, and reading activations at a site of a Block.

Two kinds of layer lists, both in module order: ``blocks(model)`` (every :class:`Block`, named by its module
name, e.g. ``"0.3"`` in a VGG, ``"3"`` for the MLP's last hidden Block) and ``weight_layers(model)`` (every
conv/linear layer; a layer inside a Block carries the Block's name, others their module name, e.g. ``"3.0"``
for a VGG's output layer). A selector is ``"all"`` or a list of indices (negative from the end) and names.
"""

from __future__ import annotations

from contextlib import contextmanager

import torch
from torch import nn

from normexp.errors import ConfigError
from normexp.models.blocks import Block, parametrized_layers

SITES = ("pre_act", "pre_norm", "post_norm")


def blocks(model: nn.Module) -> list[tuple[str, Block]]:
    return [(n, m) for n, m in model.named_modules() if isinstance(m, Block)]


def weight_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    return [(n.removesuffix(".layer"), m) for n, m in parametrized_layers(model)]


def select(candidates: list[tuple[str, nn.Module]], selector, key: str) -> list[tuple[str, nn.Module]]:
    """The candidates a selector names, in the selector's order (``"all"``: every one, in module order)."""
    if selector == "all":
        return list(candidates)
    names = [n for n, _ in candidates]
    allowed = (f"'all', indices -{len(names)}..{len(names) - 1} or names: "
               + ", ".join(names[:12]) + (", ..." if len(names) > 12 else ""))
    if isinstance(selector, (str, int)) or selector is None:
        selector = [selector]
    chosen = []
    for item in selector:
        if isinstance(item, bool) or not isinstance(item, (int, str)):
            raise ConfigError(key, item, allowed)
        if isinstance(item, int):
            if not -len(names) <= item < len(names):
                raise ConfigError(key, item, allowed)
            chosen.append(candidates[item])
        elif item in names:
            chosen.append(candidates[names.index(item)])
        else:
            raise ConfigError(key, item, allowed)
    return chosen


def site_module(block: Block, site: str) -> tuple[nn.Module, bool]:
    """The submodule whose input (True) or output (False) is the activation at ``site``."""
    where = {"pre_act": (block.act, True), "pre_norm": (block.layer, False), "post_norm": (block.norm, False)}
    return where[site]


def channels(block: Block) -> int:
    layer = block.layer
    return int(getattr(layer, "out_channels", None) or layer.out_features)


@contextmanager
def capture(chosen: list[tuple[str, Block]], site: str):
    """Hooks that store the activation at ``site`` of each chosen Block (detached) in the yielded dict."""
    seen: dict[str, torch.Tensor] = {}
    handles = []
    for name, block in chosen:
        module, is_input = site_module(block, site)

        def keep(_module, inputs, output=None, name=name, is_input=is_input):
            seen[name] = (inputs[0] if is_input else output).detach()

        hook = module.register_forward_pre_hook if is_input else module.register_forward_hook
        handles.append(hook(keep))
    try:
        yield seen
    finally:
        for h in handles:
            h.remove()


def unit_columns(x: torch.Tensor) -> torch.Tensor:
    """(N, C, *spatial) -> (C, N * positions): each row holds every value of one unit/channel."""
    return x.transpose(0, 1).reshape(x.size(1), -1)
