"""Adding a norm is its class and its yaml file, nothing else: a norm defined in this file (Karras et al.'s
pixel norm) with a yaml file in a copy of configs/ composes, validates, builds into vgg_small and mlp and
trains; validation, the models' bias handling and the batch checks read its properties off its class."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from normexp import compose, config, norms
from normexp.config import validate
from normexp.errors import ConfigError
from normexp.models import build_model
from normexp.models.blocks import Block
from normexp.norms import NormSpec

PIXEL_YAML = """\
# Karras et al.'s pixelwise feature normalization: each position's features over their RMS; no parameters
name: pixel
placement: before
eps: 1.0e-8
"""


class PixelNorm(norms.Norm, nn.Module):
    """x / sqrt(mean over channels of x^2 + eps) at each position."""

    has_shift = False

    def __init__(self, num_channels: int, eps: float = 1e-8):
        super().__init__()
        self.eps = eps

    def forward(self, x):
        return x * torch.rsqrt(x.pow(2).mean(dim=1, keepdim=True) + self.eps)


@pytest.fixture
def pixel(tmp_path, monkeypatch):
    """``norm=pixel`` available: the class registered, its yaml in a copy of the config dir."""
    configs = tmp_path / "configs"
    shutil.copytree(compose.CONFIG_DIR, configs)
    (configs / "norm" / "pixel.yaml").write_text(PIXEL_YAML)
    monkeypatch.setattr(compose, "CONFIG_DIR", configs)
    monkeypatch.setattr(config, "_CHECKED_MODELS", {})  # validate's cache of built models, kept apart
    monkeypatch.setitem(norms.NORMS, "pixel", None)  # undone after the test: the name leaves the registry
    norms.register("pixel")(PixelNorm)
    return PixelNorm


SHAPES = {"vgg_small": (1, 28, 28), "mlp": (1, 28, 28)}


@pytest.mark.parametrize("model", list(SHAPES))
def test_a_norm_from_its_class_and_yaml_builds_matches_rms_over_channels_and_trains(pixel, compose, model,
                                                                                  tmp_path):
    from normexp.train import run

    cfg = compose([f"model={model}", "norm=pixel", "train.steps=4", "train.log_every=2",
                   "train.eval_every=4"])
    validate(cfg)
    assert cfg.norm.eps == 1e-8  # the default comes from the yaml
    net = build_model(cfg.model, NormSpec.from_config(cfg.norm), SHAPES[model], 10)
    blocks = [m for m in net.modules() if isinstance(m, Block)]
    assert blocks and all(isinstance(b.norm, PixelNorm) for b in blocks)
    assert all(b.layer.bias is not None for b in blocks)  # has_shift = False: the layers keep their bias

    x = torch.randn(5, *SHAPES[model])
    for b in blocks:
        h = b.layer(x if isinstance(b.layer, nn.Conv2d) else x.flatten(1))
        expected = F.rms_norm(h.movedim(1, -1), (h.size(1),), eps=1e-8).movedim(-1, 1)
        torch.testing.assert_close(b.norm(h), expected)
        x = b(x if isinstance(b.layer, nn.Conv2d) else x.flatten(1))

    summary = run(cfg, tmp_path / "run")
    assert summary["status"] == "completed"
    lines = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in lines if r.get("split") == "train"]
    assert [r["step"] for r in train][-1] >= 3 and all(torch.isfinite(torch.tensor(r["loss"])) for r in train)


@pytest.mark.parametrize("model", list(SHAPES))
def test_validation_and_models_read_a_norms_properties_off_its_class(pixel, compose, monkeypatch, model):
    def error(overrides):
        try:
            validate(compose([f"model={model}", "norm=pixel", *overrides]))
        except ConfigError as e:
            return e
        return None

    assert error(["data.batch_size=1"]) is None
    monkeypatch.setattr(pixel, "uses_batch_statistics", True)
    e = error(["data.batch_size=1"])
    assert e.key == "data.batch_size" and "norm=pixel needs at least 2 examples per batch" in e.allowed
    assert error(["data.batch_size=2"]) is None

    monkeypatch.setattr(pixel, "needs_spatial_input", True)
    config._CHECKED_MODELS.clear()  # models built before the change would be taken as checked
    e = error([])
    if model == "mlp":
        assert e.key == "norm.name" and e.value == "pixel" and "fully connected" in e.allowed
    else:
        assert e is None

    monkeypatch.setattr(pixel, "needs_spatial_input", False)
    monkeypatch.setattr(pixel, "has_shift", True)
    net = build_model(compose([f"model={model}", "norm=pixel"]).model, NormSpec("pixel"), SHAPES[model], 10)
    assert all(b.layer.bias is None for b in net.modules() if isinstance(b, Block))
