"""The non-interference guard every probe call runs under (``ProbeSet.run`` applies it)."""

from __future__ import annotations

import copy
from contextlib import contextmanager

import torch


def _cuda_devices() -> list[int]:
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        return list(range(torch.cuda.device_count()))
    return []


@contextmanager
def untouched(model: torch.nn.Module, optimizer: torch.optim.Optimizer | None = None):
    """Run the body, then put back exactly what it may have changed: parameter values and their ``.grad``,
    every buffer (BN running statistics and ``num_batches_tracked``), each module's train/eval flag, the
    optimizer's state and hyperparameters, and the torch RNG states (CPU and CUDA). Values are restored
    in place, so the training loop keeps the same tensor objects."""
    params = list(model.parameters())
    values = [p.detach().clone() for p in params]
    grads = [None if p.grad is None else p.grad.detach().clone() for p in params]
    buffers = [(b, b.detach().clone()) for b in model.buffers()]
    modes = [(m, m.training) for m in model.modules()]
    opt_state = copy.deepcopy(optimizer.state_dict()) if optimizer is not None else None
    try:
        with torch.random.fork_rng(devices=_cuda_devices()):
            yield
    finally:
        with torch.no_grad():
            for p, v, g in zip(params, values, grads, strict=True):
                p.copy_(v)
                p.grad = g
            for b, v in buffers:
                b.copy_(v)
        for m, training in modes:
            m.training = training
        if optimizer is not None:
            optimizer.load_state_dict(opt_state)


def replayed_rng():
    """A block that starts from the current RNG states and puts them back at its end: evaluations wrapped
    in it draw the same random numbers (noisy BN sees the same noise at every point a probe compares)."""
    return torch.random.fork_rng(devices=_cuda_devices())


@torch.no_grad()
def assign(params: list[torch.Tensor], values: list[torch.Tensor]) -> None:
    for p, v in zip(params, values, strict=True):
        p.copy_(v)
