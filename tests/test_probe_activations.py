"""Activation percentiles against activations recomputed by hand (torch.nn.functional, torch.quantile)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from _probe_helpers import batch, measure, model

from normexp.compose import compose
from normexp.config import validate
from normexp.errors import ConfigError


def quantiles(values: torch.Tensor, qs) -> list[float]:
    return torch.quantile(values.double().flatten(), torch.tensor(qs, dtype=torch.double) / 100).tolist()


def bn_train(z, bn):
    dims = [0, *range(2, z.dim())]
    shape = (1, -1) + (1,) * (z.dim() - 2)
    mean, var = z.mean(dims, keepdim=True), z.var(dims, unbiased=False, keepdim=True)
    return (z - mean) / torch.sqrt(var + bn.eps) * bn.weight.view(shape) + bn.bias.view(shape)


def test_mlp_last_hidden_units_match_manual_sigmoid_inputs():
    net = model("mlp", "batch", widths=[7, 5], activation="sigmoid")
    x, y = batch(40)
    cfg = {"batch_size": 32, "activations": {"every": 1, "layers": [-1], "site": "pre_act",
                                             "units": [0, 2, 4], "percentiles": [15, 50, 85]}}
    record = measure(net, cfg, x, y)["activations"]
    with torch.no_grad():  # 784-style MLP by hand: Flatten, Block "1", Block "2" (the last hidden), Linear
        h = torch.sigmoid(bn_train(F.linear(x[:32].flatten(1), net[1].layer.weight), net[1].norm))
        pre_act = bn_train(F.linear(h, net[2].layer.weight), net[2].norm)
    expected = {f"2/u{u}/p{q:g}": v for u in (0, 2, 4)
                for q, v in zip((15, 50, 85), quantiles(pre_act[:, u], (15, 50, 85)), strict=True)}
    assert set(record) == set(expected) | {"step", "split", "probe", "seconds"}
    for key, value in expected.items():
        assert record[key] == pytest.approx(value, rel=1e-5, abs=1e-6)


def test_conv_pre_norm_all_units_pools_channels_and_positions():
    net = model("vgg", "batch", layout=[4, "M", 6])
    x, y = batch(8)
    cfg = {"activations": {"every": 1, "layers": ["0.2"], "site": "pre_norm", "units": "all",
                           "percentiles": [1, 20, 80, 99]}}
    record = measure(net, cfg, x, y)["activations"]
    with torch.no_grad():
        h = F.max_pool2d(F.relu(bn_train(F.conv2d(x, net[0][0].layer.weight, padding=1), net[0][0].norm)), 2)
        z = F.conv2d(h, net[0][2].layer.weight, padding=1)
    for q, v in zip((1, 20, 80, 99), quantiles(z, (1, 20, 80, 99)), strict=True):
        assert record[f"0.2/all/p{q:g}"] == pytest.approx(v, rel=1e-5, abs=1e-6)


@pytest.mark.parametrize("mode", ["train", "eval"])
def test_conv_post_norm_per_channel_in_train_and_eval_mode(mode):
    net = model("vgg", "batch", layout=[4])
    for m in net.modules():  # running statistics away from (0, 1), so eval and train mode differ
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.running_mean.fill_(0.3)
            m.running_var.fill_(2.0)
    x, y = batch(8)
    cfg = {"activations": {"every": 1, "layers": "all", "site": "post_norm", "units": [1, 3],
                           "percentiles": [50, 85], "mode": mode}}
    record = measure(net, cfg, x, y)["activations"]
    bn = net[0][0].norm
    with torch.no_grad():
        z = F.conv2d(x, net[0][0].layer.weight, padding=1)
        eval_mode = F.batch_norm(z, bn.running_mean, bn.running_var, bn.weight, bn.bias, False, 0.0, bn.eps)
        a = bn_train(z, bn) if mode == "train" else eval_mode
    for u in (1, 3):
        for q, v in zip((50, 85), quantiles(a[:, u], (50, 85)), strict=True):
            assert record[f"0.0/u{u}/p{q:g}"] == pytest.approx(v, rel=1e-5, abs=1e-6)
    assert net.training and bn.training


def test_running_stats_and_rng_untouched():
    net = model("mlp", "batch_noisy", widths=[6, 6])
    x, y = batch(12)
    stats = {k: v.clone() for k, v in net.state_dict().items()}
    rng = torch.get_rng_state()
    probes = {"activations": {"every": 1, "units": "all"}}
    from _probe_helpers import probe_set

    probe_set(net, probes, x, y).run(0, (x, y), torch.optim.SGD(net.parameters(), lr=0.1))
    assert all(torch.equal(v, net.state_dict()[k]) for k, v in stats.items())
    assert torch.equal(rng, torch.get_rng_state())


@pytest.mark.parametrize("override, key", [
    ("probes.activations.layers=[8]", "probes.activations.layers"),
    ("probes.activations.layers=[nope]", "probes.activations.layers"),
    ("probes.activations.site=post_act", "probes.activations.site"),
    ("probes.activations.units=[100]", "probes.activations.units"),
    ("probes.activations.percentiles=[101]", "probes.activations.percentiles"),
    ("probes.activations.every=-1", "probes.activations.every"),
    ("+probes.activations.unit=[1]", "probes.activations.unit"),
    ("+probes.activation.every=5", "probes.activation"),
])
def test_bad_probe_config_is_one_line_config_error(override, key):
    cfg = compose(["model=mlp", "probes=activations", override])
    with pytest.raises(ConfigError) as info:
        validate(cfg)
    assert info.value.key == key and "\n" not in str(info.value)
