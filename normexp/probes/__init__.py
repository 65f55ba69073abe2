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

import time
from dataclasses import dataclass

import torch
from omegaconf import DictConfig, OmegaConf

from normexp.config import integer
from normexp.errors import ConfigError, choices
from normexp.probes.guard import untouched
from normexp.probes.layers import select, weight_layers

PROBES: dict[str, type[Probe]] = {}
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


def plain(value):
    return OmegaConf.to_container(value, resolve=True) if OmegaConf.is_config(value) else value


class Probe:
    name = "probe"
    defaults: dict = {}  # the probe's options (besides ``every``) and their defaults

    def __init__(self, cfg, model: torch.nn.Module):
        self.every = int(cfg.get("every", 0))
        self.opts = {k: plain(cfg.get(k, v)) for k, v in self.defaults.items()}

    @classmethod
    def check(cls, opts: dict, model: torch.nn.Module, key: str) -> None:
        """Raise ConfigError for an option value that cannot work on ``model`` (``key``: 'probes.<name>')."""

    def due(self, step: int) -> bool:
        """Whether the probe is called at ``step``: every ``every`` steps, unless a probe adds calls."""
        return step % self.every == 0

    def measure(self, ctx: StepContext) -> dict:
        raise NotImplementedError

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


class WeightLayerProbe(Probe):
    """A probe over a chosen set of the model's weight layers (option ``layers``: indices, names or 'all'),
    kept in ``self.chosen`` as (name, layer) pairs."""

    defaults = {"layers": "all"}

    @classmethod
    def check(cls, opts, model, key):
        select(weight_layers(model), opts["layers"], f"{key}.layers")

    def __init__(self, cfg, model):
        super().__init__(cfg, model)
        self.chosen = select(weight_layers(model), self.opts["layers"], f"probes.{self.name}.layers")


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


from normexp.probes import activations, hessian, ics, landscape, moment_drift, param_norms  # noqa: E402, F401
