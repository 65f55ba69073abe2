"""Curvature of the loss beyond the top eigenvalue: Lanczos for the top-k Hessian eigenvalues, Hutchinson's
trace estimate and the spectral density by stochastic Lanczos quadrature (SLQ; Ghorbani et al. 2019, as
PyHessian computes it), for the whole model, per conv/linear layer and for the normalization layers'
parameters alone, with BN in train mode (batch statistics) or eval mode (running statistics).

Every estimator runs on :class:`HessianOperator`, flat float64 vectors in and out, one Hessian-vector product
(the shared :func:`normexp.landscape.hvp.hvp`) per call, counted in ``products``.

- Lanczos keeps every basis vector and reorthogonalizes each new one against all of them (twice), so its
  Ritz values stay free of the spurious copies plain Lanczos makes. A Ritz pair (theta, y) has the residual
  ||H y - theta y|| = |beta_m s_m| (the last entry of its eigenvector in the tridiagonal matrix times the
  last off-diagonal): ``top_eigenvalues`` stops when each of the top k has residual <= tol |theta|, the same
  test the power iteration of the probe uses.
- Hutchinson: tr H = E[v^T H v] over Rademacher v; the mean of ``samples`` draws, with its standard error.
- SLQ: for a random unit v, m Lanczos steps give nodes theta_i (Ritz values) and weights tau_i (squared
  first entries of the Ritz vectors), a Gaussian quadrature of the spectral measure seen from v, exact for
  the moments v^T H^p v with p < 2m. The density averages the quadratures of several v, each node broadened
  by a Gaussian of width ``sigma``; it integrates to 1.
"""

from __future__ import annotations

import io
import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from scipy.linalg import eigh_tridiagonal

from normexp.errors import ConfigError, choices
from normexp.landscape.figures import draw_density
from normexp.landscape.hvp import hvp
from normexp.landscape.run import load_run, run_subsets
from normexp.norms import NORMS
from normexp.probes.guard import untouched
from normexp.probes.layers import weight_layers
from normexp.records import atomic_write_bytes, atomic_write_json

BN_MODES = ("train", "eval")
BLOCKS = ("model", "layers", "norm")


class HessianOperator:
    """v -> H v for the Hessian of the mean loss over ``batches`` (a list of (x, y)) with respect to
    ``params``, on flat float64 vectors. Each batch's gradient graph is built once and kept; the mean is
    weighted by batch size. The model is used as it is (its train/eval mode decides the BN statistics)."""

    def __init__(self, model, loss_fn, batches, params):
        self.params = list(params)
        self.sizes = [p.numel() for p in self.params]
        self.size = sum(self.sizes)
        self.device = self.params[0].device
        n = sum(len(y) for _, y in batches)
        self.grads = [torch.autograd.grad(loss_fn(model(x), y) * (len(y) / n), self.params, create_graph=True)
                      for x, y in batches]
        self.products = 0

    def __call__(self, v: torch.Tensor) -> torch.Tensor:
        pieces = torch.split(v, self.sizes)
        chunks = [c.view_as(p).to(p.dtype) for c, p in zip(pieces, self.params, strict=True)]
        out = torch.zeros(self.size, dtype=torch.float64, device=self.device)
        for grads in self.grads:
            out += torch.cat([h.reshape(-1) for h in hvp(grads, self.params, chunks)]).double()
        self.products += 1
        return out


def gaussian_vector(n: int, seed: int, device) -> torch.Tensor:
    return torch.randn(n, generator=torch.Generator().manual_seed(seed), dtype=torch.float64).to(device)


def rademacher_vector(n: int, seed: int, device) -> torch.Tensor:
    bits = torch.randint(0, 2, (n,), generator=torch.Generator().manual_seed(seed))
    return (2.0 * bits - 1).double().to(device)


@dataclass
class Tridiagonal:
    """What m Lanczos steps leave: T's diagonal ``alphas`` (m) and ``betas`` (m): betas[:-1] is T's
    off-diagonal, betas[-1] the coupling to the next basis vector (zero: the Krylov space is invariant)."""

    alphas: np.ndarray
    betas: np.ndarray

    def ritz(self) -> tuple[np.ndarray, np.ndarray]:
        """Ritz values (ascending) and T's eigenvectors (columns)."""
        if len(self.alphas) == 1:
            return self.alphas.copy(), np.ones((1, 1))
        return eigh_tridiagonal(self.alphas, self.betas[:-1])

    def residuals(self, vectors: np.ndarray) -> np.ndarray:
        """||H y - theta y|| of each Ritz pair (in exact arithmetic; full reorthogonalization keeps it so)."""
        return np.abs(self.betas[-1] * vectors[-1, :])


def lanczos(operator, start: torch.Tensor, steps: int, stop=None) -> Tridiagonal:
    """At most ``steps`` Lanczos steps from ``start`` with full reorthogonalization; ends early when the
    Krylov space is invariant or ``stop(tridiagonal)`` says so (checked after every step)."""
    q = start / start.norm()
    basis, alphas, betas = [q], [], []
    for _ in range(min(steps, operator.size)):
        w = operator(q)
        alphas.append(float(q @ w))
        w = w - alphas[-1] * q - (betas[-1] * basis[-2] if betas else 0)
        Q = torch.stack(basis)
        for _ in range(2):  # twice is enough (Kahan and Parlett): orthogonal to working precision
            w = w - Q.T @ (Q @ w)
        betas.append(float(w.norm()))
        t = Tridiagonal(np.array(alphas), np.array(betas))
        if betas[-1] <= 1e-10 * max(abs(a) for a in alphas) or (stop is not None and stop(t)):
            return t
        q = w / betas[-1]
        basis.append(q)
    return t


def top_eigenvalues(operator, k: int = 1, tol: float = 1e-3, max_iter: int = 100, seed: int = 0
                    ) -> tuple[np.ndarray, int]:
    """The k largest (algebraic) Hessian eigenvalues, descending, by Lanczos from a fixed Gaussian start;
    converged when each has a Ritz residual <= tol |theta|. Returns (values, Hessian-vector products used);
    fewer than k values when the Krylov space is smaller."""

    def converged(t: Tridiagonal) -> bool:
        theta, s = t.ritz()
        if len(theta) < k:
            return False
        top = np.argsort(theta)[::-1][:k]
        return bool(np.all(t.residuals(s)[top] <= tol * np.abs(theta[top])))

    before = operator.products
    t = lanczos(operator, gaussian_vector(operator.size, seed, operator.device), max_iter, converged)
    return np.sort(t.ritz()[0])[::-1][:k], operator.products - before


def hutchinson_trace(operator, samples: int = 100, seed: int = 0) -> tuple[float, float]:
    """Hutchinson's estimate of tr H from ``samples`` Rademacher vectors: (mean, standard error)."""
    draws = []
    for i in range(samples):
        v = rademacher_vector(operator.size, seed * 100_003 + i, operator.device)
        draws.append(float(v @ operator(v)))
    stderr = float(np.std(draws, ddof=1) / math.sqrt(samples)) if samples > 1 else math.nan
    return float(np.mean(draws)), stderr


def slq(operator, vectors: int = 4, steps: int = 80, seed: int = 0
        ) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Stochastic Lanczos quadrature: per random start (``slq_start(size, seed, i)``), the nodes (Ritz
    values) and weights (squared first components of T's eigenvectors, summing to 1)."""
    nodes, weights = [], []
    for i in range(vectors):
        theta, s = lanczos(operator, slq_start(operator.size, seed, i, operator.device), steps).ritz()
        nodes.append(theta)
        weights.append(s[0, :] ** 2)
    return nodes, weights


def slq_start(size: int, seed: int, i: int, device=None) -> torch.Tensor:
    """The i-th SLQ start vector (Gaussian; its direction is uniform on the sphere)."""
    return gaussian_vector(size, seed * 100_003 + 50_000 + i, device)


def density(nodes, weights, grid: np.ndarray, sigma: float) -> np.ndarray:
    """The spectral density on ``grid``: the quadratures averaged, each node a Gaussian of width ``sigma``."""
    total = np.zeros_like(grid, dtype=float)
    for theta, tau in zip(nodes, weights, strict=True):
        z = (grid[:, None] - theta[None, :]) / sigma
        total += (tau[None, :] * np.exp(-0.5 * z ** 2)).sum(axis=1) / (sigma * math.sqrt(2 * math.pi))
    return total / len(nodes)


def density_grid(nodes, points: int = 1000, sigma: float | None = None) -> tuple[np.ndarray, float]:
    """A grid that covers every node with 5 sigma to spare, and sigma (default: 1% of the nodes' range)."""
    lo, hi = min(float(t.min()) for t in nodes), max(float(t.max()) for t in nodes)
    sigma = sigma or max(0.01 * (hi - lo), 1e-6 * max(abs(lo), abs(hi), 1.0))
    return np.linspace(lo - 5 * sigma, hi + 5 * sigma, points), sigma


def density_curve(nodes, weights) -> tuple[np.ndarray, np.ndarray]:
    """(grid, density) on the default :func:`density_grid` of the nodes."""
    grid, sigma = density_grid(nodes)
    return grid, density(nodes, weights, grid, sigma)


# ------------------------------------------------------------------------ parameter blocks of a model

def norm_parameters(model: torch.nn.Module) -> list[torch.nn.Parameter]:
    """The learned gains and shifts of every normalization layer (the norms registry's classes)."""
    kinds = tuple(NORMS.values())
    return [p for m in model.modules() if isinstance(m, kinds) for p in m.parameters(recurse=False)
            if p.requires_grad]


def parameter_blocks(model: torch.nn.Module, which=BLOCKS) -> dict[str, list[torch.nn.Parameter]]:
    """{block name: its parameters}: ``model`` (every trainable parameter), ``layers`` (one block per
    conv/linear layer, named as the probes name weight layers), ``norm`` (the norms' gains and shifts;
    absent when the model has none)."""
    for name in which:
        if name not in BLOCKS:
            raise ConfigError("--blocks", name, choices(BLOCKS))
    out = {}
    if "model" in which:
        out["model"] = [p for p in model.parameters() if p.requires_grad]
    if "layers" in which:
        for name, layer in weight_layers(model):
            out[f"layer {name}"] = [p for p in layer.parameters() if p.requires_grad]
    if "norm" in which and norm_parameters(model):
        out["norm"] = norm_parameters(model)
    return out


def spectrum(model, loss_fn, batches, blocks=("model", "norm"), bn: str = "train", top_k: int = 5,
             tol: float = 1e-3, max_iter: int = 100, trace_samples: int = 50, slq_vectors: int = 4,
             slq_steps: int = 80, seed: int = 0) -> dict[str, dict]:
    """Top-k eigenvalues, trace and SLQ quadrature of the Hessian of the mean loss over ``batches`` for each
    block, with BN in ``bn`` mode. The model is left as it was (weights, buffers, modes, RNG states).
    Returns {block: {"size", "top", "top_products", "trace", "trace_stderr", "nodes", "weights"}}."""
    if bn not in BN_MODES:
        raise ConfigError("--bn", bn, choices(BN_MODES))
    out = {}
    with untouched(model):
        model.train(bn == "train")
        for name, params in parameter_blocks(model, blocks).items():
            op = HessianOperator(model, loss_fn, batches, params)
            top, used = top_eigenvalues(op, top_k, tol, max_iter, seed)
            trace, stderr = hutchinson_trace(op, trace_samples, seed)
            nodes, weights = slq(op, slq_vectors, slq_steps, seed)
            out[name] = {"size": op.size, "top": top.tolist(), "top_products": used, "trace": trace,
                         "trace_stderr": stderr, "nodes": nodes, "weights": weights}
            del op
    return out


def write_spectrum(results: dict, folder, meta: dict | None = None) -> Path:
    """``spectrum.json`` (per block: size, top-k, products, trace and its standard error),
    ``spectrum.npz`` (the SLQ nodes and weights, ``{block}/nodes``, ``{block}/weights``) and
    ``density.png`` in ``folder``."""
    folder = Path(folder)
    arrays = {f"{b}/{k}": np.stack(r[k]) for b, r in results.items() for k in ("nodes", "weights")}
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    atomic_write_bytes(folder / "spectrum.npz", buffer.getvalue())
    summary = {b: {k: v for k, v in r.items() if k not in ("nodes", "weights")} for b, r in results.items()}
    atomic_write_json(folder / "spectrum.json", {**(meta or {}), "blocks": json.loads(json.dumps(summary))})
    curves = {name: density_curve(r["nodes"], r["weights"]) for name, r in results.items()}
    return draw_density(results, curves, folder / "density.png")


def spectrum_of_run(run_dir, out=None, checkpoint: str = "model", subset: int = 1000, batch_size: int = 0,
                    device: str = "cpu", seed: int = 0, **options) -> dict[str, dict]:
    """:func:`spectrum` of a run dir's model on a fixed training subset (``subset`` examples in batches of
    ``batch_size``, default the run's), written by :func:`write_spectrum` to ``out`` (default
    RUN_DIR/landscape/spectrum_<bn>). ``options``: those of :func:`spectrum`."""
    run = load_run(run_dir, checkpoint, device)
    (x, y), _ = run_subsets(run, subset, seed)
    size = batch_size or run.batch_size
    batches = [(x[i:i + size], y[i:i + size]) for i in range(0, len(y), size)]
    results = spectrum(run.model, run.loss_fn, batches, seed=seed, **options)
    bn = options.get("bn", "train")
    folder = Path(out) if out else Path(run_dir) / "landscape" / f"spectrum_{bn}"
    meta = {"checkpoint": checkpoint, "subset": len(y), "batch_size": size, "seed": seed,
            **{k: (list(v) if isinstance(v, tuple) else v) for k, v in options.items()}}
    write_spectrum(results, folder, meta)
    return results
