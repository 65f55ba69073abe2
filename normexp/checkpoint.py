"""Checkpoints: everything a run needs to continue exactly where it stopped, written atomically.

The data order needs no state (it is a function of seed and step, see ``normexp.data``); what is saved is the
model, optimizer, scheduler, every RNG in use, probe state, the open logging window and how many metric lines
were logged, so records written after the checkpoint by a killed run are dropped on resume.
"""

from __future__ import annotations

import io
import random
from pathlib import Path

import numpy as np
import torch

from normexp.errors import ConfigError
from normexp.records import CHECKPOINT, MODEL, atomic_write_bytes


def rng_state() -> dict:
    state = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _save(obj, path: Path) -> None:
    buffer = io.BytesIO()  # serialized in memory, so the file on disk is only ever whole (atomic rename)
    torch.save(obj, buffer)
    atomic_write_bytes(path, buffer.getvalue())


def save_checkpoint(run_dir: Path, state: dict) -> None:
    _save(state, Path(run_dir) / CHECKPOINT)


def save_weights(run_dir: Path, model: torch.nn.Module) -> None:
    """The final ``state_dict`` (parameters and buffers such as BN running statistics) as ``model.pt``."""
    _save(model.state_dict(), Path(run_dir) / MODEL)


def load_weights(path: str | Path) -> dict:
    """A ``model.pt`` (``train.save_final``) to start another run from (``train.init_from``)."""
    if not Path(path).is_file():
        raise ConfigError("train.init_from", str(path), "must be the path of a model.pt (saved by a run with "
                          "train.save_final=true)")
    return torch.load(path, map_location="cpu", weights_only=True)


def load_checkpoint(run_dir: Path) -> dict | None:
    path = Path(run_dir) / CHECKPOINT
    if not path.exists():
        return None
    return torch.load(path, map_location="cpu", weights_only=False)
