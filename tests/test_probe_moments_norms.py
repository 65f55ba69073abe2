"""Moment drift and per-layer norms against moments and norms computed by hand."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from _probe_helpers import batch, model, probe_set


@torch.no_grad()
def post_norm_moments(net, x):
    """Post-norm activations of the MLP's two Blocks in train mode, by hand; (mean, var) per unit."""
    moments, h = [], x.detach()
    for block in (net[1], net[2]):
        bn = block.norm
        a = F.batch_norm(F.linear(h, block.layer.weight), None, None, bn.weight, bn.bias, True)
        moments.append((a.mean(0), a.var(0, unbiased=False)))
        h = torch.sigmoid(a)
    return moments


def step(net, optimizer, x, y):
    optimizer.zero_grad()
    F.cross_entropy(net(x), y).backward()


def test_moment_drift_between_calls_and_its_state():
    net = model("mlp", "batch", in_shape=(5,), widths=[6, 4])
    x, y = batch(30, in_shape=(5,))
    optimizer = torch.optim.SGD(net.parameters(), lr=1.0)
    probes = probe_set(net, {"moment_drift": {"every": 2}}, x, y)
    step(net, optimizer, x, y)
    first = probes.run(0, (x, y), optimizer)[0]
    assert set(first) == {"step", "split", "probe", "seconds"}  # nothing to compare with yet
    before = post_norm_moments(net, x)
    optimizer.step()
    step(net, optimizer, x, y)
    restored = probe_set(net, {"moment_drift": {"every": 2}}, x, y)
    restored.load_state_dict(probes.state_dict())  # as after a resume from a checkpoint
    record = restored.run(2, (x, y), optimizer)[0]
    after = post_norm_moments(net, x)
    drifts = []
    for name, (m0, v0), (m1, v1) in zip(("1", "2"), before, after, strict=True):
        close = lambda a, b: pytest.approx(float((a - b).abs().mean()), rel=1e-4, abs=1e-7)
        assert record[f"{name}/mean_drift"] == close(m1, m0)
        assert record[f"{name}/var_drift"] == close(v1, v0)
        drifts.append(record[f"{name}/var_drift"])
    assert record["median/var_drift"] == pytest.approx(sum(drifts) / 2)
    assert record["2/var_drift"] > 0


def test_param_norms():
    net = model("vgg", "batch", layout=[4, "M", 6])
    x, y = batch(8)
    optimizer = torch.optim.SGD(net.parameters(), lr=0.1)
    step(net, optimizer, x, y)
    probes = probe_set(net, {"param_norms": {"every": 1, "layers": [0, -1]}}, x, y)
    record = probes.run(0, (x, y), optimizer)[0]
    first, last = net[0][0].layer, net[3][0]
    norm = lambda t: pytest.approx(float(torch.linalg.vector_norm(t.detach())), rel=1e-6)
    assert record["0.0/weight_norm"] == norm(first.weight)
    assert record["0.0/grad_norm"] == norm(first.weight.grad)
    assert record["3.0/grad_norm"] == norm(last.weight.grad)
    assert record["total/grad_norm"] == norm(torch.cat([p.grad.flatten() for p in net.parameters()]))
    assert "0.2/weight_norm" not in record
