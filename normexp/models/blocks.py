"""The block every model uses where a norm goes: layer -> norm -> activation (or layer -> act -> norm)."""

from __future__ import annotations

from torch import nn

from normexp.errors import ConfigError, choices
from normexp.norms import NormSpec

ACTIVATIONS = {"relu": nn.ReLU, "sigmoid": nn.Sigmoid, "tanh": nn.Tanh, "identity": nn.Identity}


def activation(name: str, key: str = "model.activation") -> nn.Module:
    if name not in ACTIVATIONS:
        raise ConfigError(key, name, choices(ACTIVATIONS))
    return ACTIVATIONS[name]()


class Block(nn.Module):
    """``layer`` (conv or linear), ``norm`` and ``act`` as named submodules, so probes can hook each one:
    the layer's output is the pre-norm activation, ``act``'s input is the input to the nonlinearity."""

    def __init__(self, layer: nn.Module, norm: nn.Module, act: nn.Module, placement: str = "before"):
        super().__init__()
        self.layer, self.norm, self.act, self.placement = layer, norm, act, placement

    def forward(self, x):
        x = self.layer(x)
        if self.placement == "before":
            return self.act(self.norm(x))
        return self.norm(self.act(x))


def conv_block(c_in: int, c_out: int, norm: NormSpec, act: str, kernel: int = 3, stride: int = 1) -> Block:
    conv = nn.Conv2d(c_in, c_out, kernel, stride=stride, padding=kernel // 2, bias=not norm.shifts)
    return Block(conv, norm(c_out), activation(act), norm.placement)


def linear_block(d_in: int, d_out: int, norm: NormSpec, act: str) -> Block:
    return Block(nn.Linear(d_in, d_out, bias=not norm.shifts), linear_norm(norm, d_out), activation(act),
                 norm.placement)


def linear_norm(norm: NormSpec, width: int) -> nn.Module:
    """The norm after a linear layer, refused at build time where it could not work on (N, C) input."""
    if norm.needs_spatial_input:
        raise ConfigError("norm.name", norm.name, f"norm={norm.name} needs spatial dims and this model has "
                          "fully connected hidden layers; a fully connected layer has no spatial dims (each "
                          "value would be normalized alone)")
    return norm(width)


def parametrized_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """Conv and linear layers in registration order (forward order for the models here)."""
    return [(n, m) for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
