"""Models: every model with every norm trains, biases drop where a shift follows, inits have their variance,
and BN folds into the conv before it (SD-3)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import nn

from normexp.config import validate
from normexp.errors import ConfigError
from normexp.fold import fold_batch_norms, foldable
from normexp.models import build_model
from normexp.models.blocks import Block
from normexp.norms import NORMS, NormSpec

# model -> (overrides, input shape, classes); the 32x32 models "download" only so validate finds their data
# present (validate loads nothing). resnet18 runs at 16x16 to keep the test fast.
MODELS = {
    "mlp": (["model=mlp", "data=mnist5k"], (1, 28, 28), 10),
    "dln": (["model=dln", "data=gaussian_linear"], (10,), 10),
    "vgg_small": (["model=vgg_small", "data=mnist5k"], (1, 28, 28), 10),
    "vgg11": (["model=vgg11", "data=cifar10", "data.download=true"], (3, 32, 32), 10),
    "resnet_cifar": (["model=resnet_cifar", "model.depth=8", "data=cifar10", "data.download=true"],
                     (3, 32, 32), 10),
    "resnet18": (["model=resnet18", "model.small_input_stem=true", "data=cifar10", "data.download=true"],
                 (3, 16, 16), 10),
}
NORM_OVERRIDES = {"ghost_batch": ["norm.virtual_devices=2"]}
REJECTED = {("mlp", "instance"), ("dln", "instance"), ("dln", "group")}  # flat inputs; 4 groups of 10 units
BATCH = 8


def _config(compose, model: str, norm: str, extra=()):
    overrides, _, _ = MODELS[model]
    return compose([*overrides, f"norm={norm}", *NORM_OVERRIDES.get(norm, []), f"data.batch_size={BATCH}",
                    *extra])


def _batch(model: str, seed: int = 0):
    _, shape, classes = MODELS[model]
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(BATCH, *shape, generator=g)
    if model == "dln":
        return x, x @ torch.randn(10, 10, generator=g).T
    return x, torch.randint(0, classes, (BATCH,), generator=g)


def _loss(model_name: str, net: nn.Module, x, y) -> torch.Tensor:
    torch.manual_seed(7)  # the same noise draws (noisy BN) in every evaluation
    out = net(x)
    return (out - y).pow(2).sum(1).mean() if model_name == "dln" else F.cross_entropy(out, y)


@pytest.mark.parametrize("norm", sorted(NORMS))
@pytest.mark.parametrize("model", list(MODELS))
def test_every_model_builds_with_every_norm_and_one_sgd_step_lowers_the_loss(compose, model, norm):
    cfg = _config(compose, model, norm)
    if (model, norm) in REJECTED:
        with pytest.raises(ConfigError):
            validate(cfg)
        return
    validate(cfg)
    _, shape, classes = MODELS[model]
    torch.manual_seed(0)
    net = build_model(cfg.model, NormSpec.from_config(cfg.norm), shape, classes).train()
    x, y = _batch(model)
    torch.manual_seed(1)  # the noisy norms draw the same noise before and after the step
    before = _loss(model, net, x, y)
    assert torch.isfinite(before)
    net.zero_grad()
    before.backward()
    lr = 1e-6 if (model, norm) == ("dln", "noise") else 1e-3  # 24 noise layers of scale ~1.125, no norm
    with torch.no_grad():
        for p in net.parameters():
            if p.grad is not None:
                p -= lr * p.grad
    torch.manual_seed(1)
    after = _loss(model, net, x, y)
    assert after < before


def test_instance_norm_is_refused_before_fully_connected_hidden_layers(compose):
    with pytest.raises(ConfigError, match="norm.name='instance'.*fully connected"):
        validate(compose(["model=vgg_small", "model.classifier=[16]", "norm=instance"]))


# ---------------------------------------------------------------- bias dropping and placement

class _NormsAsLeaves(fx.Tracer):
    def is_leaf_module(self, m, qualname):
        return isinstance(m, tuple(NORMS.values())) or super().is_leaf_module(m, qualname)


def _layers_and_whether_a_shift_follows(net: nn.Module):
    """From the traced graph: each conv/linear layer, and whether its only consumer is a norm with a shift."""
    graph = _NormsAsLeaves().trace(net)
    modules = dict(net.named_modules())
    for node in graph.nodes:
        if node.op == "call_module" and isinstance(modules[node.target], (nn.Conv2d, nn.Linear)):
            users = list(node.users)
            only = users[0] if len(users) == 1 and users[0].op == "call_module" else None
            follower = modules.get(only.target) if only is not None else None
            is_norm = isinstance(follower, tuple(NORMS.values()))
            shifted = is_norm and getattr(follower, "bias", None) is not None
            yield node.target, modules[node.target], shifted


@pytest.mark.parametrize("norm", ["batch", "group", "none", "rms", "batch.affine=false",
                                  "batch.placement=after"])
@pytest.mark.parametrize("model", ["mlp", "vgg_small", "resnet_cifar", "resnet18"])
def test_a_layer_has_no_bias_exactly_when_a_shifting_norm_directly_follows(compose, model, norm):
    name, _, option = norm.partition(".")
    if model.startswith("resnet") and option == "placement=after":
        with pytest.raises(ConfigError, match="norm.placement"):
            validate(_config(compose, model, name, [f"norm.{option}"]))
        return
    cfg = _config(compose, model, name, [f"norm.{option}"] if option else [])
    _, shape, classes = MODELS[model]
    net = build_model(cfg.model, NormSpec.from_config(cfg.norm), shape, classes)
    layers = list(_layers_and_whether_a_shift_follows(net))
    assert len(layers) >= 3
    for layer_name, layer, shifted in layers:
        assert (layer.bias is None) == shifted, layer_name
    if name in ("batch", "group") and not option:
        assert sum(shifted for *_, shifted in layers) == len(layers) - 1  # all but the classifier


def _record(seen: dict):
    def hook(module, inputs, output):
        seen[module] = (inputs[0], output)

    return hook


@pytest.mark.parametrize("placement", ["before", "after"])
def test_placement_puts_the_norm_before_or_after_the_nonlinearity(compose, placement):
    cfg = compose(["model=vgg_small", "norm=batch", f"norm.placement={placement}"])
    net = build_model(cfg.model, NormSpec.from_config(cfg.norm), (1, 28, 28), 10)
    seen = {}
    blocks = [m for m in net.modules() if isinstance(m, Block)]
    for b in blocks:
        b.norm.register_forward_hook(_record(seen))
        b.act.register_forward_hook(_record(seen))
    net(torch.randn(4, 1, 28, 28))
    for b in blocks:
        norm_in, norm_out = seen[b.norm]
        act_in, act_out = seen[b.act]
        if placement == "before":
            assert torch.equal(act_in, norm_out)
        else:
            assert torch.equal(norm_in, act_out) and norm_in.min() >= 0


# ---------------------------------------------------------------- initialization

def _fans(w: torch.Tensor):
    receptive = w[0, 0].numel()
    return w.size(1) * receptive, w.size(0) * receptive


@pytest.mark.parametrize("init,variance", [
    ("glorot", lambda fan_in, fan_out: 2 / (fan_in + fan_out)),
    ("kaiming", lambda fan_in, fan_out: 2 / fan_in),
    ("torch", lambda fan_in, fan_out: 1 / (3 * fan_in)),  # kaiming_uniform with a = sqrt(5)
])
@pytest.mark.parametrize("model", ["mlp", "vgg11"])
def test_init_schemes_give_their_weight_variance(compose, init, variance, model):
    cfg = _config(compose, model, "batch", [f"model.init={init}"])
    _, shape, classes = MODELS[model]
    torch.manual_seed(0)
    net = build_model(cfg.model, NormSpec.from_config(cfg.norm), shape, classes)
    for m in net.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)) and m.weight.numel() >= 20_000:
            ratio = m.weight.var().item() / variance(*_fans(m.weight))
            assert abs(ratio - 1) < 0.05, (m, ratio)
            if init != "torch" and m.bias is not None:
                assert torch.count_nonzero(m.bias) == 0


def test_init_scale_multiplies_every_weight(compose):
    nets = []
    for scale in (1.0, 3.0):
        cfg = compose(["model=vgg_small", "norm=none", "model.init=glorot", f"model.init_scale={scale}"])
        torch.manual_seed(0)
        nets.append(build_model(cfg.model, NormSpec("none"), (1, 28, 28), 10))
    layers = [[m for m in n.modules() if isinstance(m, (nn.Conv2d, nn.Linear))] for n in nets]
    assert len(layers[0]) == 9
    for a, b in zip(*layers, strict=True):
        torch.testing.assert_close(b.weight, 3.0 * a.weight)
        torch.testing.assert_close(b.bias, a.bias)


@pytest.mark.parametrize("model", ["resnet_cifar", "resnet18"])
@pytest.mark.parametrize("norm", ["batch", "group"])
def test_zero_init_last_makes_every_residual_block_start_as_its_shortcut(compose, model, norm):
    import torchvision

    cfg = _config(compose, model, norm, ["model.zero_init_last=true"])
    _, shape, classes = MODELS[model]
    net = build_model(cfg.model, NormSpec.from_config(cfg.norm), shape, classes).train()
    from normexp.models.resnet import BasicBlock

    block_types = (BasicBlock, torchvision.models.resnet.BasicBlock)
    blocks = [m for m in net.modules() if isinstance(m, block_types)]
    assert len(blocks) >= 3
    inputs = {}
    for b in blocks:
        b.register_forward_hook(_record(inputs))
    net(torch.randn(4, *shape))
    for b in blocks:
        x, out = inputs[b]
        shortcut = getattr(b, "shortcut", None) or getattr(b, "downsample", None) or nn.Identity()
        torch.testing.assert_close(out, torch.relu(shortcut(x)))


# ---------------------------------------------------------------- SD-3: folding BN into the conv

@pytest.mark.parametrize("model,norm", [
    ("vgg_small", "batch"), ("resnet_cifar", "batch"), ("resnet18", "batch"), ("mlp", "batch"),
    ("vgg_small", "batch_renorm"), ("vgg_small", "batch.placement=after"), ("vgg_small", "lp")])
def test_sd3_folded_model_equals_eval_mode_output(compose, model, norm):
    name, _, option = norm.partition(".")
    cfg = _config(compose, model, name, [f"norm.{option}"] if option else [])
    _, shape, classes = MODELS[model]
    torch.manual_seed(0)
    net = build_model(cfg.model, NormSpec.from_config(cfg.norm), shape, classes).train().double()
    _move_statistics(net, shape)
    folded = fold_batch_norms(net)
    assert net.training  # the model itself is untouched
    norms_before = [m for m in net.modules() if foldable(m)]
    norms_after = [m for m in folded.modules() if foldable(m)]
    if option == "placement=after" or name == "lp":
        assert len(norms_after) == len(norms_before)  # a ReLU sits between, or not BN's eval formula
    else:
        assert norms_before and not norms_after
    net.eval()
    x = torch.randn(8, *shape, dtype=torch.float64)
    with torch.no_grad():  # float64: checks the folding's arithmetic, not float32 rounding over 20 layers
        expected = net(x)
        torch.testing.assert_close(folded(x), expected, atol=1e-10, rtol=1e-10)
    assert not math.isclose(expected.std().item(), 0.0)


def test_sd3_one_conv_and_bn_folded_equal_eval_mode_within_1e_5():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1, bias=False), NORMS["batch"](16)).train()
    _move_statistics(net, (3, 8, 8))
    folded = fold_batch_norms(net)
    assert [type(m) for m in folded.children()] == [nn.Conv2d]
    x = torch.randn(8, 3, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(folded(x), net.eval()(x), atol=1e-5, rtol=0)


def _move_statistics(net: nn.Module, shape) -> None:
    """Running statistics and affine parameters far from their initial values."""
    dtype = next(net.parameters()).dtype
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.affine:
                m.weight.uniform_(0.5, 2.0)
                m.bias.uniform_(-1.0, 1.0)
        for _ in range(3):
            net(torch.randn(8, *shape, dtype=dtype) * 2 + 0.5)
