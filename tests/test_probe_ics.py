"""ICS (Santurkar Def 2.1) against the cases where G' is known: frozen earlier layers, and a two-layer
linear network whose G' has a closed form (numpy)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from _probe_helpers import batch, measure, model

from normexp.probes.layers import weight_layers
from normexp.runtime import make_loss


@pytest.mark.parametrize("layer", [0, 1, 2])
def test_g_prime_equals_g_when_earlier_layers_do_not_move(layer):
    net = model("mlp", "batch_noisy", in_shape=(5,), widths=[6, 4], activation="tanh")
    x, y = batch(24, in_shape=(5,))
    name, target = weight_layers(net)[layer]
    params = list(net.parameters())
    k = next(i for i, p in enumerate(params) if p is target.weight)
    groups = [{"params": params[k:], "lr": 0.5}] + ([{"params": params[:k], "lr": 0.0}] if k else [])
    optimizer = torch.optim.SGD(groups, lr=0.5, momentum=0.9)
    record = measure(net, {"ics": {"every": 1, "layers": [layer]}}, x, y, optimizer=optimizer)["ics"]
    assert record[f"{name}/l2"] == 0.0
    assert record[f"{name}/cos"] == pytest.approx(1.0, abs=1e-12)


def test_moving_earlier_layers_changes_the_gradient():
    """The control for the test above: with every layer moving, deeper layers see G' != G."""
    net = model("mlp", "batch_noisy", in_shape=(5,), widths=[6, 4], activation="tanh")
    x, y = batch(24, in_shape=(5,))
    optimizer = torch.optim.SGD(net.parameters(), lr=0.5)
    record = measure(net, {"ics": {"every": 1}}, x, y, optimizer=optimizer)["ics"]
    assert record["1/l2"] == 0.0  # nothing comes before the first layer
    assert record["2/l2"] > 1e-4 and record["3/l2"] > 1e-4 and record["3/cos"] < 1


def test_two_layer_linear_network_matches_closed_form():
    lr, wd, n = 0.05, 0.01, 16
    net = model("dln", "none", in_shape=(4,), num_classes=2, depth=2, width=3).double()
    g = torch.Generator().manual_seed(3)
    x, y = (torch.randn(n, d, generator=g, dtype=torch.double) for d in (4, 2))
    optimizer = torch.optim.SGD(net.parameters(), lr=lr, momentum=0.9, weight_decay=wd)
    loss_fn = make_loss("regression")
    record = measure(net, {"ics": {"every": 1}}, x, y, optimizer=optimizer, loss_fn=loss_fn)["ics"]

    W1, W2 = (net[1].layer.weight.detach().numpy(), net[2].weight.detach().numpy())
    X, Y = x.numpy().T, y.numpy().T  # columns are examples; loss = (1/n) ||W2 W1 X - Y||_F^2
    R = W2 @ W1 @ X - Y
    G1, G2 = (2 / n) * W2.T @ R @ X.T, (2 / n) * R @ (W1 @ X).T
    W1_next = W1 - lr * (G1 + wd * W1)  # SGD's first step: momentum buffer = gradient + weight decay
    G2_next = (2 / n) * (W2 @ W1_next @ X - Y) @ (W1_next @ X).T
    assert record["2/l2"] == pytest.approx(np.linalg.norm(G2 - G2_next), rel=1e-9)
    cos = np.sum(G2 * G2_next) / (np.linalg.norm(G2) * np.linalg.norm(G2_next))
    assert record["2/cos"] == pytest.approx(cos, abs=1e-12)
    assert record["1/l2"] == 0.0
    assert record["median/l2"] == pytest.approx(np.linalg.norm(G2 - G2_next) / 2, rel=1e-9)
