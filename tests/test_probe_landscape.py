"""Landscape along the gradient on a quadratic loss 0.5 w^T H w, where everything has a closed form."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from _probe_helpers import measure
from torch import nn


class Weights(nn.Module):
    def __init__(self, w: np.ndarray):
        super().__init__()
        self.w = nn.Parameter(torch.tensor(w))

    def forward(self, x):
        return self.w


@pytest.mark.parametrize("grid, scales", [
    ({"low": 0.5, "high": 4.0, "points": 7, "spacing": "linear"}, np.linspace(0.5, 4.0, 7)),
    ({"low": 0.01, "high": 30.0, "points": 5, "spacing": "log"}, np.geomspace(0.01, 30.0, 5)),
])
def test_quadratic_closed_forms(grid, scales):
    rng = np.random.default_rng(0)
    A = rng.normal(size=(6, 6))
    H = A @ A.T / 6 - 0.3 * np.eye(6)  # symmetric, one or two negative eigenvalues
    w = rng.normal(size=6)
    Ht = torch.tensor(H)
    loss_fn = lambda out, y: 0.5 * out @ Ht @ out
    net, lr = Weights(w), 0.1
    x, y = torch.zeros(4, 1), torch.zeros(4)
    record = measure(net, {"landscape": {"every": 1, **grid}}, x, y,
                     optimizer=torch.optim.SGD(net.parameters(), lr=lr), loss_fn=loss_fn)["landscape"]
    g = H @ w
    Hg = np.linalg.norm(H @ g)
    losses = [0.5 * (w - s * lr * g) @ H @ (w - s * lr * g) for s in scales]
    for s, loss in zip(scales, losses, strict=True):
        assert record[f"x{s:g}/grad_change"] == pytest.approx(s * lr * Hg, rel=1e-9)
        assert record[f"x{s:g}/loss"] == pytest.approx(loss, rel=1e-9)
    assert record["grad_change_min"] == pytest.approx(scales[0] * lr * Hg, rel=1e-9)
    assert record["grad_change_max"] == pytest.approx(scales[-1] * lr * Hg, rel=1e-9)
    assert record["beta"] == pytest.approx(Hg / np.linalg.norm(g), rel=1e-9)
    assert record["loss_min"] == pytest.approx(min(losses), rel=1e-9)
    assert record["loss_max"] == pytest.approx(max(losses), rel=1e-9)
    assert record["loss_band"] == pytest.approx(max(losses) - min(losses), rel=1e-9)
    assert record["grad_norm"] == pytest.approx(np.linalg.norm(g), rel=1e-12)
    assert np.array_equal(net.w.detach().numpy(), w)
