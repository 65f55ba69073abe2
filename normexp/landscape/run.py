"""A trained model back from its run directory: the config, the data on the device, the weights of a
chosen checkpoint, and fixed subsets of the training and test data."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import torch
from omegaconf import OmegaConf

from normexp.checkpoint import safe_load
from normexp.data import build_data
from normexp.errors import ConfigError
from normexp.models import build_model
from normexp.norms import NormSpec
from normexp.records import CHECKPOINT, CONFIG, MODEL
from normexp.runtime import make_loss, resolve_device

CHECKPOINTS = {"model": MODEL, "checkpoint": CHECKPOINT}  # the final weights, the last training checkpoint


@dataclass
class LoadedRun:
    cfg: object
    model: torch.nn.Module
    loss_fn: object
    classify: bool
    data: object
    batch_size: int


def weights_file(run_dir: Path, checkpoint: str) -> Path:
    """``model`` (model.pt, written with train.save_final=true), ``checkpoint`` (checkpoint.pt, an
    unfinished run's last checkpoint) or the path of a .pt file (a state_dict, or a checkpoint holding one
    as "model")."""
    path = run_dir / CHECKPOINTS[checkpoint] if checkpoint in CHECKPOINTS else Path(checkpoint)
    if not path.is_file():
        raise ConfigError("--checkpoint", checkpoint, f"{path} does not exist: choose model (needs "
                          "train.save_final=true), checkpoint (needs train.checkpoint_every) or a .pt file")
    return path


def load_run(run_dir, checkpoint: str = "model", device: str = "cpu", cfg=None) -> LoadedRun:
    """The run of ``run_dir`` with the weights of ``checkpoint`` (:func:`weights_file`); ``cfg``: its config
    as the caller changed it (default: its config.yaml)."""
    run_dir = Path(run_dir)
    if not (run_dir / CONFIG).is_file():
        raise ConfigError("RUN_DIR", str(run_dir), f"not a run directory: it has no {CONFIG}")
    path = weights_file(run_dir, checkpoint)
    cfg = OmegaConf.load(run_dir / CONFIG) if cfg is None else cfg
    device = resolve_device(device)
    data = build_data(cfg.data, device, int(cfg.seed))
    model = build_model(cfg.model, NormSpec.from_config(cfg.norm), data.info.in_shape, data.info.num_classes)
    state = safe_load(path)
    model.load_state_dict(state["model"] if "model" in state and isinstance(state["model"], dict) else state)
    return LoadedRun(cfg, model.to(device), make_loss(data.info.task), data.info.task == "classification",
                     data, int(cfg.data.batch_size))


def fixed_subset(x: torch.Tensor, y: torch.Tensor, size: int, seed: int):
    """``size`` examples drawn once with ``seed`` (all of them when there are fewer)."""
    if size >= len(y):
        return x, y
    idx = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))[:size].to(y.device)
    return x[idx], y[idx]


def run_subsets(run: LoadedRun, size: int, seed: int):
    """(train, test) fixed subsets of a run's data, as (x, y) pairs."""
    d = run.data
    return fixed_subset(d.x_train, d.y_train, size, seed), fixed_subset(d.x_test, d.y_test, size, seed + 1)


def weights_digest(model: torch.nn.Module) -> str:
    """A short hash of the parameters and buffers: a resumed surface must continue around the same point."""
    h = hashlib.sha256()
    for name, t in model.state_dict().items():
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]
