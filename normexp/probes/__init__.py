"""Probes: measurements taken during training, on a cadence, without changing training.

``cfg.probes`` holds ``batch_size`` (the fixed probe batch, drawn once from the training data) and one
sub-config per enabled probe with at least ``every`` (steps between calls; 0 turns it off). A probe is
called after the step's backward pass and before the optimizer update, so ``.grad`` holds this step's
gradient; it must leave weights, gradients, optimizer state, BN running statistics and RNG states as it
found them. Each call becomes one record in ``metrics.jsonl`` with ``split='probe'``, the probe's name, its
metrics and its own cost in ``seconds``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch

from normexp.errors import ConfigError, choices

PROBES: dict[str, type] = {}
_RESERVED = ("batch_size",)


def register(name: str):
    def add(cls):
        PROBES[name] = cls
        cls.name = name
        return cls

    return add


@dataclass
class StepContext:
    """What a probe sees at a step: the model with this step's gradients, the optimizer before its update,
    the step's own batch and the fixed probe batch."""

    step: int
    model: torch.nn.Module
    loss_fn: object
    optimizer: torch.optim.Optimizer
    batch: tuple
    probe_batch: tuple


class Probe:
    name = "probe"

    def __init__(self, cfg, model: torch.nn.Module):
        self.cfg, self.every = cfg, int(cfg.get("every", 0))

    def measure(self, ctx: StepContext) -> dict:
        raise NotImplementedError

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


class ProbeSet:
    @staticmethod
    def check_config(cfg) -> None:
        for key in cfg or {}:
            if key not in PROBES and key not in _RESERVED:
                raise ConfigError(f"probes.{key}", cfg[key], "not a probe; " + choices([*PROBES, *_RESERVED]))

    def __init__(self, cfg, model, data, loss_fn, seed: int):
        cfg = cfg or {}
        self.check_config(cfg)
        self.probes = [PROBES[k](cfg[k], model) for k in cfg if k in PROBES and int(cfg[k].get("every", 0)) > 0]
        self.model, self.data, self.loss_fn = model, data, loss_fn
        self.batch_size, self.seed = int(cfg.get("batch_size", 128)), seed
        self._probe_batch = None

    @property
    def probe_batch(self):
        if self._probe_batch is None:
            self._probe_batch = self.data.fixed_train_batch(self.batch_size, self.seed)
        return self._probe_batch

    def due(self, step: int) -> bool:
        return any(step % p.every == 0 for p in self.probes)

    def run(self, step: int, batch, optimizer) -> list[dict]:
        ctx = StepContext(step, self.model, self.loss_fn, optimizer, batch, self.probe_batch)
        records = []
        for p in self.probes:
            if step % p.every:
                continue
            start = time.perf_counter()
            values = p.measure(ctx)
            records.append({"step": step, "split": "probe", "probe": p.name, **values,
                            "seconds": time.perf_counter() - start})
        return records

    def state_dict(self) -> dict:
        return {p.name: p.state_dict() for p in self.probes}

    def load_state_dict(self, state: dict) -> None:
        for p in self.probes:
            p.load_state_dict(state.get(p.name, {}))
