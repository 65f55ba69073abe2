"""Tiny models, fake data and a probe-calling helper shared by the probe tests."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf
from torch.func import functional_call

from normexp.models import build_model
from normexp.norms import NormSpec
from normexp.probes import ProbeSet


class FakeData:
    """Stands in for TensorData: only the fixed probe batch is used by ProbeSet."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor):
        self.x, self.y = x, y

    def fixed_train_batch(self, size: int, seed: int):
        return self.x[:size], self.y[:size]


def model(name: str = "mlp", norm: str = "batch", in_shape=(1, 6, 6), num_classes: int = 3, seed: int = 0,
          **options):
    torch.manual_seed(seed)
    cfg = OmegaConf.create({"name": name, **options})
    return build_model(cfg, NormSpec.from_config(OmegaConf.create({"name": norm})), in_shape, num_classes)


def batch(n: int = 16, in_shape=(1, 6, 6), num_classes: int = 3, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, *in_shape, generator=g), torch.randint(0, num_classes, (n,), generator=g)


def probe_set(net, probes: dict, x, y, loss_fn=F.cross_entropy, seed: int = 0) -> ProbeSet:
    return ProbeSet(OmegaConf.create(probes), net, FakeData(x, y), loss_fn, seed)


def measure(net, probes: dict, x, y, step: int = 0, optimizer=None, loss_fn=F.cross_entropy):
    """One call of the probes in ``probes`` at ``step`` with the step's gradient on (x, y) in ``.grad``;
    returns {probe name: record}."""
    optimizer = optimizer or torch.optim.SGD(net.parameters(), lr=0.1)
    optimizer.zero_grad()
    loss_fn(net(x), y).backward()
    records = probe_set(net, probes, x, y, loss_fn).run(step, (x, y), optimizer)
    return {r["probe"]: r for r in records}


def full_hessian(net, x, y, names, loss_fn=F.cross_entropy) -> np.ndarray:
    """The dense Hessian of the loss w.r.t. the parameters ``names`` (flattened in that order), with
    the model in its current train/eval mode."""
    params = dict(net.named_parameters())
    buffers = {k: v.clone() for k, v in net.named_buffers()}
    shapes = [params[n].shape for n in names]
    flat = torch.cat([params[n].detach().flatten() for n in names])

    def loss(v):
        chunks = torch.split(v, [s.numel() for s in shapes])
        values = {**params, **{n: c.view(s) for n, c, s in zip(names, chunks, shapes, strict=True)}}
        out = functional_call(net, (values, {k: b.clone() for k, b in buffers.items()}), (x,))
        return loss_fn(out, y)

    return torch.autograd.functional.hessian(loss, flat).numpy()


def tiny_bn_net():
    """A 3-4-3 tanh MLP with BN in double precision, with running statistics away from their defaults (so
    eval-mode BN differs from train mode)."""
    net = model("mlp", "batch", in_shape=(3,), num_classes=3, widths=[4], activation="tanh").double()
    with torch.no_grad():
        net[1].norm.running_mean.copy_(torch.tensor([0.2, -0.1, 0.3, 0.0]))
        net[1].norm.running_var.copy_(torch.tensor([1.5, 0.7, 2.0, 1.1]))
    return net
