"""What every command that trains or evaluates a model shares with ``normexp.train``: the loss, seeding,
torch's threads and determinism flags, the device a run asks for and the one a model is on.
``normexp-train``, ``normexp-lrmap``, ``normexp-landscape``, ``normexp-bench``, ``normexp-recalibrate`` and
the claim checks import these from here, below the training loop rather than from it."""

from __future__ import annotations

import os
import random

import numpy as np
import torch
import torch.nn.functional as F

from normexp.errors import ConfigError, choices

DEVICES = ("auto", "cpu", "cuda")


def summed_squared_error(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """||f(x) - y||^2 summed over the batch's examples (``data.reduction=sum``): an evaluation adds it up over
    its batches instead of weighting batch means."""
    return (out - y).pow(2).sum()


def make_loss(task: str, reduction: str = "mean"):
    """Cross-entropy (batch mean), or for regression ||f(x) - y||^2 per example, averaged or summed over the
    batch (``data.reduction``; Santurkar's DLN loss: see experiments/santurkar2018/README.md)."""
    if task == "regression":
        if reduction == "sum":
            return summed_squared_error
        return lambda out, y: (out - y).pow(2).sum(dim=1).mean()
    return F.cross_entropy


def model_device(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def configure_torch(cfg) -> None:
    if int(cfg.train.threads) > 0:
        torch.set_num_threads(int(cfg.train.threads))
    deterministic = bool(cfg.train.deterministic)
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(deterministic, warn_only=True)
    torch.backends.cudnn.benchmark = not deterministic


def resolve_device(name: str) -> torch.device:
    if name not in DEVICES:
        raise ConfigError("device", name, choices(DEVICES))
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device", name, "CUDA is not available on this machine; choose one of: auto, cpu")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)
