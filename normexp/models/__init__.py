"""One registry of models: ``build_model(model_cfg, norm_spec, in_shape, num_classes)``.

Every builder takes (in_shape, num_classes, norm, **options) and returns an ``nn.Module``. Layers that a
norm follows are built by :class:`normexp.models.blocks.Block`, so placement and bias handling live in one
place.
"""

from __future__ import annotations

from torch import nn

from normexp.errors import ConfigError, choices
from normexp.models.dln import dln
from normexp.models.mlp import mlp
from normexp.models.resnet import resnet_cifar
from normexp.models.vgg import vgg
from normexp.models.zoo import tv_resnet
from normexp.norms import NormSpec
from normexp.registry import Registry

MODELS = Registry("model.name", {"mlp": mlp, "dln": dln, "vgg": vgg, "resnet_cifar": resnet_cifar,
                                 "tv_resnet": tv_resnet})
BUILDER_ARGUMENTS = 3  # in_shape, num_classes, norm: what every builder gets before its options
INITS = ("torch", "glorot", "kaiming")
_NOT_MODEL_OPTIONS = ("name", "variant", "init", "init_scale")


def build_model(cfg, norm: NormSpec, in_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    name = cfg.get("name")
    builder = MODELS.lookup(name)
    options = {k: v for k, v in dict(cfg).items() if k not in _NOT_MODEL_OPTIONS}
    allowed = list(MODELS.options(name, leading=BUILDER_ARGUMENTS))
    for key, value in options.items():
        if key not in allowed:
            raise ConfigError(f"model.{key}", value, f"model={name} takes options: {', '.join(allowed)}")
    model = builder(tuple(in_shape), num_classes, norm, **options)
    init_weights(model, cfg.get("init", "torch"), float(cfg.get("init_scale", 1.0)))
    return model


def init_weights(model: nn.Module, scheme: str, scale: float = 1.0) -> None:
    """Re-initialize conv and linear weights (biases to zero unless ``torch``), then multiply them by
    ``scale``."""
    if scheme not in INITS:
        raise ConfigError("model.init", scheme, choices(INITS))
    for m in model.modules():
        if not isinstance(m, (nn.Conv2d, nn.Linear)):
            continue
        if scheme == "glorot":
            nn.init.xavier_uniform_(m.weight)
        elif scheme == "kaiming":
            nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
        if scheme != "torch" and m.bias is not None:
            nn.init.zeros_(m.bias)
        if scale != 1.0:
            m.weight.data.mul_(scale)
