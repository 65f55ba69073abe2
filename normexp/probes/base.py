"""The probe registry and the base classes every probe subclasses (one probe per module of this package)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from omegaconf import OmegaConf

from normexp.probes.layers import select, weight_layers
from normexp.registry import Registry

PROBES = Registry("probes", name_attribute="name")
register = PROBES.register


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
