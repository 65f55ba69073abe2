"""Probes: measurements taken during training, on a cadence, without changing training.

``cfg.probes`` holds ``batch_size`` (the fixed probe batch, drawn once from the training data) and one
sub-config per enabled probe with ``every`` (steps between calls; 0 turns it off) and the probe's options
(``Probe.defaults``). A probe is called after the step's backward pass and before the optimizer update, so
``.grad`` holds this step's gradient on this step's batch. Every call runs under
:func:`normexp.probes.guard.untouched`, which puts back weights, gradients, optimizer state, buffers (BN
running statistics), train/eval flags and RNG states. Each call becomes one record in ``metrics.jsonl`` with
``split='probe'``, the probe's name, its metrics and its own cost in ``seconds``. Record keys of each probe:
its module's docstring and docs/probes.md.
"""

from __future__ import annotations

import importlib
import pkgutil
import time

import torch
from omegaconf import DictConfig

from normexp.checks import integer
from normexp.errors import ConfigError, choices
from normexp.probes.base import PROBES, Probe, StepContext, WeightLayerProbe, plain, register
from normexp.probes.guard import untouched

# Each probe module registers its probe when imported: every module of the package is imported, so a new
# probe is its module and its YAML, with no list here to forget it in.
for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")

__all__ = ["PROBES", "Probe", "ProbeSet", "StepContext", "WeightLayerProbe", "plain", "register"]
_RESERVED = ("batch_size",)


class ProbeSet:
    @staticmethod
    def check_config(cfg, model: torch.nn.Module | None = None) -> None:
        """Names, options and their values; layer selectors and units only when ``model`` is given."""
        for key in cfg or {}:
            value = cfg[key]
            if key == "batch_size":
                integer(1, exact=True)("probes.batch_size", value)
                continue
            if key not in PROBES:
                raise ConfigError(f"probes.{key}", value, "not a probe; " + choices([*PROBES, *_RESERVED]))
            if not isinstance(value, (dict, DictConfig)):
                raise ConfigError(f"probes.{key}", value, "must be a mapping: every and the probe's options")
            cls = PROBES[key]
            for option in value:
                if option != "every" and option not in cls.defaults:
                    raise ConfigError(f"probes.{key}.{option}", value[option],
                                      f"probe {key} takes options: " + ", ".join(["every", *cls.defaults]))
            integer(0, exact=True)(f"probes.{key}.every", value.get("every", 0))  # 0: off
            if model is not None:
                opts = {k: plain(value.get(k, v)) for k, v in cls.defaults.items()}
                cls.check(opts, model, f"probes.{key}")

    def __init__(self, cfg, model, data, loss_fn, seed: int):
        cfg = cfg or {}
        self.check_config(cfg, model)
        enabled = [k for k in cfg if k in PROBES and int(cfg[k].get("every", 0)) > 0]
        self.probes = [PROBES[k](cfg[k], model) for k in enabled]
        self.model, self.data, self.loss_fn = model, data, loss_fn
        self.batch_size, self.seed = int(cfg.get("batch_size", 128)), seed
        self._probe_batch = None

    @property
    def probe_batch(self):
        if self._probe_batch is None:
            self._probe_batch = self.data.fixed_train_batch(self.batch_size, self.seed)
        return self._probe_batch

    def due(self, step: int) -> bool:
        return any(p.due(step) for p in self.probes)

    def run(self, step: int, batch, optimizer) -> list[dict]:
        ctx = StepContext(step, self.model, self.loss_fn, optimizer, batch, self.probe_batch)
        records = []
        for p in self.probes:
            if not p.due(step):
                continue
            start = time.perf_counter()
            with untouched(self.model, optimizer):
                values = p.measure(ctx)
            records.append({"step": step, "split": "probe", "probe": p.name, **values,
                            "seconds": time.perf_counter() - start})
        return records

    def state_dict(self) -> dict:
        return {p.name: p.state_dict() for p in self.probes}

    def load_state_dict(self, state: dict) -> None:
        for p in self.probes:
            p.load_state_dict(state.get(p.name, {}))

