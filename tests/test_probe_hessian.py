"""Top Hessian eigenvalue by power iteration against numpy's eigvalsh of the full Hessian."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from _probe_helpers import batch, full_hessian, measure, tiny_bn_net


def dominant(eigenvalues: np.ndarray) -> float:
    return float(eigenvalues[np.argmax(np.abs(eigenvalues))])


class Weights(torch.nn.Module):
    def __init__(self, w):
        super().__init__()
        self.w = torch.nn.Parameter(torch.tensor(w))

    def forward(self, x):
        return self.w


def test_known_matrix():
    rng = np.random.default_rng(1)
    A = rng.normal(size=(10, 10))
    H = (A + A.T) / 2
    Ht = torch.tensor(H)
    net = Weights(rng.normal(size=10))
    x, y = torch.zeros(4, 1), torch.zeros(4)
    loss_fn = lambda out, y: 0.5 * out @ Ht @ out
    record = measure(net, {"hessian": {"every": 1}}, x, y, loss_fn=loss_fn)["hessian"]
    assert record["model/top_eig"] == pytest.approx(dominant(np.linalg.eigvalsh(H)), rel=1e-3)
    assert 1 < record["model/iters"] < 100


@pytest.mark.parametrize("bn_mode", ["train", "eval"])
def test_tiny_network_whole_model_and_layer_block(bn_mode):
    net = tiny_bn_net()
    x, y = batch(20, in_shape=(3,))
    x = x.double()
    cfg = {"batch_size": 20, "hessian": {"every": 1, "layers": [0, 1], "bn_mode": bn_mode}}
    record = measure(net, cfg, x, y)["hessian"]
    net.train(bn_mode == "train")
    names = [n for n, _ in net.named_parameters()]
    assert names == ["1.layer.weight", "1.norm.weight", "1.norm.bias", "2.weight", "2.bias"]
    H = full_hessian(net, x, y, names)
    assert record["model/top_eig"] == pytest.approx(dominant(np.linalg.eigvalsh(H)), rel=1e-3)
    first = H[:12, :12]  # the first layer's weight (4 x 3; BN makes its bias redundant)
    last = H[-15:, -15:]  # the output layer's weight (3 x 4) and bias (3)
    assert record["1/top_eig"] == pytest.approx(dominant(np.linalg.eigvalsh(first)), rel=1e-3)
    assert record["2/top_eig"] == pytest.approx(dominant(np.linalg.eigvalsh(last)), rel=1e-3)
