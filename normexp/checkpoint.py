"""Checkpoints: everything a run needs to continue exactly where it stopped, written atomically.

The data order needs no state (it is a function of seed and step, see ``normexp.data``); what is saved is the
model, optimizer, scheduler, every RNG in use, probe state, the open logging window and how many metric lines
were logged, so records written after the checkpoint by a killed run are dropped on resume.

A checkpoint holds tensors and plain Python values only, and is read with ``torch.load(weights_only=True)``,
which builds nothing else: a file whose pickle names any other object (code to run, for instance) is refused
before anything is run or changed.
"""

from __future__ import annotations

import io
import pickle
import random
import re
from pathlib import Path

import numpy as np
import torch

from normexp.errors import ConfigError, printable
from normexp.records import CHECKPOINT, MODEL, atomic_write_bytes


class UnsafeCheckpoint(Exception):
    """A checkpoint that holds more than tensors and plain values. ``str()`` is one line."""

    def __init__(self, path: Path, reason: str):
        super().__init__(f"{path} was not loaded: it holds more than tensors and plain values ({reason}); "
                         "nothing was run or changed. Move it away, or set train.resume=false to start over")


def rng_state() -> dict:
    name, keys, pos, has_gauss, cached_gaussian = np.random.get_state()
    numpy_state = {"name": name, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                   "has_gauss": int(has_gauss), "cached_gaussian": float(cached_gaussian)}
    state = {"torch": torch.get_rng_state(), "numpy": numpy_state, "python": random.getstate()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state((n["name"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["cached_gaussian"]))
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _save(obj, path: Path) -> None:
    buffer = io.BytesIO()  # serialized in memory, so the file on disk is only ever whole (atomic rename)
    torch.save(obj, buffer)
    atomic_write_bytes(path, buffer.getvalue())


def save_checkpoint(run_dir: Path, state: dict) -> None:
    _save(state, Path(run_dir) / CHECKPOINT)


def save_weights(run_dir: Path, model: torch.nn.Module, name: str = MODEL) -> None:
    """The final ``state_dict`` (parameters and buffers such as BN running statistics) as ``model.pt``
    (or ``name``)."""
    _save(model.state_dict(), Path(run_dir) / name)


def load_weights(path: str | Path) -> dict:
    """A ``model.pt`` (``train.save_final``) to start another run from (``train.init_from``)."""
    if not Path(path).is_file():
        raise ConfigError("train.init_from", str(path), "must be the path of a model.pt (saved by a run with "
                          "train.save_final=true)")
    return safe_load(Path(path))


def load_checkpoint(run_dir: Path) -> dict | None:
    """The checkpoint of ``run_dir`` (None when there is none); :class:`UnsafeCheckpoint` for a file that
    does not load as tensors and plain values."""
    path = Path(run_dir) / CHECKPOINT
    return safe_load(path) if path.exists() else None


def safe_load(path: Path) -> dict:
    """A torch file loaded as tensors and plain values only; :class:`UnsafeCheckpoint` for one that would
    build anything else (its pickle could run code)."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        raise UnsafeCheckpoint(Path(path), _refused_object(str(error))) from None


def _refused_object(message: str) -> str:
    """The object torch refused to build, as its message names it (``GLOBAL posix.mkdir``), else the
    message's first line."""
    named = re.search(r"GLOBAL ([\w.]+)", message)
    return named.group(1) if named else printable(message.strip().splitlines()[0])
