"""Curvature estimators against dense eigendecompositions: a quadratic with a known Hessian, and tiny nets
with BN in train and eval mode (dense Hessian by torch.autograd.functional.hessian)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from _probe_helpers import batch, full_hessian, model, tiny_bn_net

from normexp.landscape.curvature import (
    HessianOperator,
    density,
    density_grid,
    hutchinson_trace,
    norm_parameters,
    parameter_blocks,
    rademacher_vector,
    slq,
    slq_start,
    spectrum,
    top_eigenvalues,
)
from normexp.landscape.hvp import power_iteration


class Vector(torch.nn.Module):
    def __init__(self, w):
        super().__init__()
        self.w = torch.nn.Parameter(torch.tensor(w))

    def forward(self, x):
        return self.w


def quadratic_operator(H):
    """The HessianOperator of L(w) = 0.5 w^T H w (+ a linear term, which the Hessian does not see)."""
    Ht = torch.tensor(H)
    net = Vector(np.ones(len(H)))
    loss = lambda w, y: 0.5 * w @ Ht @ w + w.sum()
    return HessianOperator(net, loss, [(torch.zeros(1, 1), torch.zeros(1))], list(net.parameters()))


def spd_with_negatives(n=12, seed=0):
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.normal(size=(n, n)))
    eig = np.concatenate([[9.0, 7.5, 6.0], rng.uniform(-1.0, 3.0, size=n - 3)])
    return (q * eig) @ q.T


def test_quadratic_top_k_trace_and_quadrature():
    H = spd_with_negatives()
    op = quadratic_operator(H)
    dense = np.sort(np.linalg.eigvalsh(H))[::-1]
    top, used = top_eigenvalues(op, k=3, tol=1e-8, max_iter=50)
    assert top == pytest.approx(dense[:3], rel=1e-7)
    assert used <= len(H)
    trace, stderr = hutchinson_trace(op, samples=20)
    forms = [float(v @ torch.tensor(H) @ v) for v in (rademacher_vector(len(H), i, "cpu") for i in range(20))]
    assert trace == pytest.approx(np.mean(forms), rel=1e-12)  # exactly the mean of v^T H v
    assert abs(trace - np.trace(H)) < 4 * stderr  # and E[v^T H v] = tr H
    nodes, weights = slq(op, vectors=3, steps=len(H))
    for theta, tau in zip(nodes, weights, strict=True):  # a full Lanczos run: the nodes are H's eigenvalues
        assert sum(tau) == pytest.approx(1.0)
        assert np.min(np.abs(theta[:, None] - dense[None, :]), axis=1).max() < 1e-8


@pytest.mark.slow
@pytest.mark.parametrize("bn", ["train", "eval"])
def test_tiny_net_against_the_dense_hessian(bn):
    net = tiny_bn_net()
    x, y = batch(20, in_shape=(3,))
    x = x.double()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    results = spectrum(net, F.cross_entropy, [(x[:10], y[:10]), (x[10:], y[10:])], blocks=("model", "layers",
                       "norm"), bn=bn, top_k=3, tol=1e-6, trace_samples=50, slq_vectors=60, slq_steps=3)
    assert all(torch.equal(v, before[k]) for k, v in net.state_dict().items())  # BN statistics untouched
    net.train(bn == "train")
    names = [n for n, _ in net.named_parameters()]
    # the loss is the mean over the two batches of 10 (BN statistics per batch in train mode)
    H = (full_hessian(net, x[:10], y[:10], names) + full_hessian(net, x[10:], y[10:], names)) / 2
    blocks = {"model": slice(0, 35), "layer 1": slice(0, 12), "norm": slice(12, 20), "layer 2": slice(20, 35)}
    assert set(results) == set(blocks)
    for name, where in blocks.items():
        sub = H[where, where]
        dense = np.sort(np.linalg.eigvalsh(sub))[::-1]
        r = results[name]
        k = min(3, len(dense))
        assert r["top"] == pytest.approx(dense[:k], rel=1e-5, abs=1e-9), name
        assert abs(r["trace"] - np.trace(sub)) < 4 * r["trace_stderr"] + 1e-9, name
        # SLQ: the averaged quadrature's moments are exactly the dense ones seen from the same 60 start
        # vectors (mean of v^T H^p v, p < 2 x 3 steps), and those estimate tr H^p / n; the density
        # integrates to 1
        grid, sigma = density_grid(r["nodes"], points=4000)
        phi = density(r["nodes"], r["weights"], grid, sigma)
        assert np.trapezoid(phi, grid) == pytest.approx(1.0, abs=1e-6)
        scale = np.abs(dense).max()
        starts = [slq_start(len(sub), 0, i).numpy() for i in range(60)]
        starts = [v / np.linalg.norm(v) for v in starts]
        for p in (1, 2, 3):
            quad = np.mean([np.sum(w * t ** p) for t, w in zip(r["nodes"], r["weights"], strict=True)])
            seen = np.mean([v @ np.linalg.matrix_power(sub, p) @ v for v in starts])
            assert quad == pytest.approx(seen, rel=1e-6, abs=1e-9 * scale ** p), (name, p)
            assert quad == pytest.approx(np.mean(dense ** p), abs=0.2 * scale ** p), (name, p)
        mean = np.trapezoid(grid * phi, grid)  # broadening keeps the mean
        assert mean == pytest.approx(np.mean([np.sum(w * t) for t, w in zip(r["nodes"], r["weights"],
                                                                            strict=True)]), abs=1e-6 * scale)


def test_slq_quadrature_is_exact_for_low_moments():
    """m Lanczos steps from v integrate t^p exactly against v's spectral measure for p < 2m."""
    H = spd_with_negatives(20, seed=3)
    op = quadratic_operator(H)
    nodes, weights = slq(op, vectors=2, steps=3, seed=5)
    for i, (theta, tau) in enumerate(zip(nodes, weights, strict=True)):
        v = slq_start(len(H), 5, i).numpy()
        v /= np.linalg.norm(v)
        for p in range(6):
            exact = v @ np.linalg.matrix_power(H, p) @ v
            assert np.sum(tau * theta ** p) == pytest.approx(exact, rel=1e-8, abs=1e-10)


def test_lanczos_and_power_iteration_agree_and_lanczos_needs_fewer_products():
    H = spd_with_negatives(40, seed=1)  # top eigenvalues 9 and 7.5: a gap of 1.2x
    op = quadratic_operator(H)
    top, lanczos_products = top_eigenvalues(op, k=1, tol=1e-3, max_iter=100)
    net = op.params
    power, power_products = power_iteration(op.grads[0], net, tol=1e-3, max_iter=200)
    assert top[0] == pytest.approx(9.0, rel=1e-3) and power == pytest.approx(9.0, rel=1e-3)
    assert lanczos_products < power_products


def test_norm_and_layer_blocks_of_a_conv_net():
    net = model("vgg", "group", layout=[4, "M", 4], activation="relu")
    blocks = parameter_blocks(net)
    gains = [m.weight for m in net.modules() if isinstance(m, torch.nn.GroupNorm)]
    assert len(norm_parameters(net)) == 2 * len(gains) == len(blocks["norm"])
    assert [k for k in blocks if k.startswith("layer")] == ["layer 0.0", "layer 0.2", "layer 3.0"]
    assert "norm" not in parameter_blocks(model("vgg", "none", layout=[4, "M", 4], activation="relu"))


def test_full_reorthogonalization_keeps_ghost_copies_out():
    """Plain Lanczos, after an eigenvalue has converged, finds it again (a ghost copy); the top-3 of a
    spectrum with one large outlier must come out without a duplicate."""
    rng = np.random.default_rng(2)
    q, _ = np.linalg.qr(rng.normal(size=(80, 80)))
    eig = np.concatenate([[100.0], np.linspace(0.0, 1.0, 79)])
    H = (q * eig) @ q.T
    top, _ = top_eigenvalues(quadratic_operator(H), k=3, tol=1e-10, max_iter=80)
    assert top == pytest.approx(np.sort(eig)[::-1][:3], rel=1e-6)
