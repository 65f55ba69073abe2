"""Folding BN into the conv or linear layer before it, for inference (SD-3).

In eval mode BN is a fixed per-channel affine map, gamma (x - mean) / sqrt(var + eps) + beta, so a conv
that feeds only that BN can absorb it: with s = gamma / sqrt(var + eps), W' = s W, b' = s (b - mean) + beta.
``fold_batch_norms`` finds every such pair in a model's traced graph (plain stacks and residual nets alike)
and returns an eval-only copy with one layer per pair; torch's ``fuse_conv_bn_eval`` does the arithmetic.
"""

from __future__ import annotations

import copy

import torch.fx as fx
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval, fuse_linear_bn_eval

from normexp.norms import NORMS, LpBatchNorm

FUSERS = {nn.Conv2d: fuse_conv_bn_eval, nn.Linear: fuse_linear_bn_eval}


def foldable(norm: nn.Module) -> bool:
    """Norms whose eval mode is BN with running statistics (lp divides by its scale, not sqrt(var + eps))."""
    return isinstance(norm, nn.modules.batchnorm._BatchNorm) and not isinstance(norm, LpBatchNorm)


class _NormsAsLeaves(fx.Tracer):
    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return isinstance(m, tuple(NORMS.values())) or super().is_leaf_module(m, qualname)


def fold_batch_norms(model: nn.Module) -> fx.GraphModule:
    """An eval-mode copy of ``model`` in which every foldable norm that directly follows a conv or linear
    layer, and is that layer's only consumer, is merged into the layer. ``model`` is left as it is."""
    model = copy.deepcopy(model).eval()
    graph = _NormsAsLeaves().trace(model)
    folded = fx.GraphModule(model, graph)
    modules = dict(folded.named_modules())
    for node in list(folded.graph.nodes):
        if node.op != "call_module" or not foldable(modules[node.target]):
            continue
        source = node.args[0]
        if not (isinstance(source, fx.Node) and source.op == "call_module" and len(source.users) == 1):
            continue
        layer = modules[source.target]
        fuse = FUSERS.get(type(layer))
        if fuse is None:
            continue
        parent, _, name = source.target.rpartition(".")
        setattr(folded.get_submodule(parent), name, fuse(layer, modules[node.target]))
        node.replace_all_uses_with(source)
        folded.graph.erase_node(node)
    folded.delete_all_unused_submodules()
    folded.recompile()
    return folded
