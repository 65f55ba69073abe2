"""Every norm against an independent reference: torch's own layers or the formula written out here."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from normexp.errors import ConfigError
from normexp.norms import NORMS, BatchNorm, NormSpec, create_norm, recompute_population_stats

torch.set_default_dtype(torch.float32)


def _randomize_affine(layer: nn.Module, seed: int = 0) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in layer.parameters():
            centre = 1.0 if p is getattr(layer, "weight", None) else 0.0
            p.copy_(torch.randn(p.shape, generator=g) * 0.5 + centre)


def _input(*shape, seed: int = 0, scale: float = 3.0, shift: float = 1.0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g) * scale + shift


def _copy_params(src: nn.Module, dst: nn.Module) -> None:
    dst.load_state_dict({k: v for k, v in src.state_dict().items() if k in dst.state_dict()}, strict=False)


def _per_channel(v, x):
    return v.view(1, -1, *([1] * (x.dim() - 2)))


def test_registry_has_every_configured_norm():
    from normexp.compose import group_options

    assert set(group_options("norm")) == set(NORMS)


# ---------------------------------------------------------------- BN and torch's references

@pytest.mark.parametrize("shape", [(16, 5), (8, 5, 4, 3)])
def test_batch_norm_matches_torch_in_train_and_eval(shape):
    ours = create_norm("batch", shape[1])
    ref = (nn.BatchNorm1d if len(shape) == 2 else nn.BatchNorm2d)(shape[1])
    _randomize_affine(ours)
    _copy_params(ours, ref)
    for seed in range(3):  # a few steps of running statistics
        x1 = _input(*shape, seed=seed).requires_grad_()
        x2 = x1.detach().clone().requires_grad_()
        y1, y2 = ours(x1), ref(x2)
        torch.testing.assert_close(y1, y2)
        w = _input(*shape, seed=100 + seed)
        (y1 * w).sum().backward()
        (y2 * w).sum().backward()
        torch.testing.assert_close(x1.grad, x2.grad)
    torch.testing.assert_close(ours.weight.grad, ref.weight.grad)
    torch.testing.assert_close(ours.running_mean, ref.running_mean)
    torch.testing.assert_close(ours.running_var, ref.running_var)
    ours.eval(), ref.eval()
    x = _input(*shape, seed=9)
    torch.testing.assert_close(ours(x), ref(x))


def test_is5_train_statistics_are_per_channel_over_n_h_w():
    bn = BatchNorm(4, momentum=0.5)
    _randomize_affine(bn)
    x = _input(6, 4, 5, 3)
    mean = x.transpose(0, 1).reshape(4, -1).mean(1)
    var = x.transpose(0, 1).reshape(4, -1).var(1, unbiased=False)
    expected = (x - _per_channel(mean, x)) / _per_channel((var + bn.eps).sqrt(), x)
    expected = expected * _per_channel(bn.weight, x) + _per_channel(bn.bias, x)
    torch.testing.assert_close(bn(x), expected.detach())
    m = 6 * 5 * 3
    torch.testing.assert_close(bn.running_mean, 0.5 * mean)
    torch.testing.assert_close(bn.running_var, 0.5 + 0.5 * var * m / (m - 1))


def test_is5_eval_uses_population_statistics_and_ignores_the_rest_of_the_batch():
    bn = BatchNorm(4)
    _randomize_affine(bn)
    with torch.no_grad():
        bn.running_mean.copy_(torch.tensor([0.5, -1.0, 2.0, 0.0]))
        bn.running_var.copy_(torch.tensor([4.0, 0.25, 1.0, 9.0]))
    bn.eval()
    x = _input(6, 4, 5, 3)
    expected = (x - _per_channel(bn.running_mean, x)) / _per_channel((bn.running_var + bn.eps).sqrt(), x)
    expected = expected * _per_channel(bn.weight, x) + _per_channel(bn.bias, x)
    out = bn(x)
    torch.testing.assert_close(out, expected.detach())
    other = torch.cat([x[2:3], _input(5, 4, 5, 3, seed=1, scale=10.0)])
    torch.testing.assert_close(bn(other)[0], out[2])


@pytest.mark.parametrize("a", [0.1, 3.0, 250.0])
def test_is5_scale_invariance_of_bn_and_its_gradient(a):
    torch.manual_seed(0)
    u = torch.randn(32, 7, dtype=torch.float64)
    w = torch.randn(5, 7, dtype=torch.float64)
    r = torch.randn(32, 5, dtype=torch.float64)
    bn = BatchNorm(5, eps=1e-12).double()  # torch refuses eps = 0 in training
    _randomize_affine(bn)

    def loss_and_grad(weight):
        weight = weight.clone().requires_grad_()
        out = bn(u @ weight.T)
        (out * r).pow(2).sum().backward()  # any loss of the BN output
        return out.detach(), weight.grad

    out1, g1 = loss_and_grad(w)
    out_a, g_a = loss_and_grad(a * w)
    torch.testing.assert_close(out_a, out1)
    torch.testing.assert_close(g_a, g1 / a)


# ---------------------------------------------------------------- group, layer, instance, rms

def _group_norm_formula(x, groups, weight, bias, eps=1e-5):
    n, c = x.shape[:2]
    g = x.reshape(n, groups, -1)
    y = (g - g.mean(-1, keepdim=True)) / (g.var(-1, unbiased=False, keepdim=True) + eps).sqrt()
    return y.reshape(x.shape) * _per_channel(weight, x) + _per_channel(bias, x)


@pytest.mark.parametrize("groups", [1, 2, 6])
def test_group_norm_matches_formula_and_torch(groups):
    x = _input(3, 6, 4, 5)
    gn = create_norm("group", 6, groups=groups)
    _randomize_affine(gn)
    torch.testing.assert_close(gn(x), _group_norm_formula(x, groups, gn.weight, gn.bias).detach())
    ref = nn.GroupNorm(groups, 6)
    _copy_params(gn, ref)
    torch.testing.assert_close(gn(x), ref(x))
    by_size = create_norm("group", 6, channels_per_group=6 // groups, groups=None)
    assert by_size.num_groups == groups


def test_layer_norm_is_layer_norm_over_c_h_w_with_per_channel_affine():
    x = _input(3, 6, 4, 5)
    ln = create_norm("layer", 6)
    _randomize_affine(ln)
    expected = F.layer_norm(x, x.shape[1:], eps=1e-5) * _per_channel(ln.weight, x) + _per_channel(ln.bias, x)
    torch.testing.assert_close(ln(x), expected.detach())
    flat = _input(4, 6)
    expected = F.layer_norm(flat, (6,), ln.weight, ln.bias, eps=1e-5)
    torch.testing.assert_close(ln(flat), expected.detach())


def _output_and_grads(layer, x: torch.Tensor, memory_format=torch.contiguous_format, params=()):
    """layer(x) with x stored in ``memory_format``, and the gradients of a fixed weighting of it wrt x and
    ``params``."""
    x = x.detach().contiguous(memory_format=memory_format).requires_grad_()
    out = layer(x)
    return out, torch.autograd.grad((out * _input(*x.shape, seed=3)).sum(), [x, *params])


MEMORY_FORMATS = [torch.contiguous_format, torch.channels_last]  # channels last: train.channels_last


@pytest.mark.parametrize("memory_format", MEMORY_FORMATS)
def test_instance_norm_matches_torch_and_refuses_flat_input(memory_format):
    x = _input(3, 6, 4, 5)
    inorm = create_norm("instance", 6)
    _randomize_affine(inorm)
    ref = nn.InstanceNorm2d(6, affine=True)
    _copy_params(inorm, ref)
    out, grads = _output_and_grads(inorm, x, memory_format, [inorm.weight, inorm.bias])
    expected, expected_grads = _output_and_grads(ref, x, params=[ref.weight, ref.bias])
    torch.testing.assert_close(out, expected)
    torch.testing.assert_close(grads, expected_grads)
    assert out.is_contiguous(memory_format=memory_format)  # the next conv gets the layout it was given
    with pytest.raises(ValueError, match="spatial"):
        inorm(_input(4, 6))


def test_group_norm_rejects_groups_that_do_not_divide_the_channels():
    with pytest.raises(ConfigError) as err:
        create_norm("group", 12, groups=5)
    msg = str(err.value)
    assert "norm.groups=5" in msg and "1, 2, 3, 4, 6, 12" in msg and "\n" not in msg
    with pytest.raises(ConfigError, match="norm.channels_per_group=5"):
        create_norm("group", 12, channels_per_group=5)


def test_rms_norm_matches_formula():
    x = _input(3, 6, 4, 5)
    rms = create_norm("rms", 6)
    _randomize_affine(rms)
    expected = x / (x.pow(2).mean(dim=(1, 2, 3), keepdim=True) + 1e-5).sqrt() * _per_channel(rms.weight, x)
    torch.testing.assert_close(rms(x), expected.detach())
    assert not NormSpec("rms").shifts and NormSpec("batch").shifts


# ---------------------------------------------------------------- Santurkar's lp and noisy BN

@pytest.mark.parametrize("p", [1, 2, math.inf])
def test_lp_norm_matches_formula_in_train_and_eval(p):
    x = _input(8, 4, 3, 3)
    lp = create_norm("lp", 4, p=p)
    _randomize_affine(lp)
    xc = x.transpose(0, 1).reshape(4, -1)
    mean = xc.mean(1)
    dev = (xc - mean[:, None]).abs()
    scale = dev.amax(1) if p == math.inf else dev.pow(p).mean(1).pow(1 / p)
    expected = (x - _per_channel(mean, x)) / (_per_channel(scale, x) + 1e-5)
    expected = expected * _per_channel(lp.weight, x) + _per_channel(lp.bias, x)
    torch.testing.assert_close(lp(x), expected.detach())
    lp.eval()
    running_mean, running_scale = 0.1 * mean, 0.9 + 0.1 * scale
    expected = (x - _per_channel(running_mean, x)) / (_per_channel(running_scale, x) + 1e-5)
    expected = expected * _per_channel(lp.weight, x) + _per_channel(lp.bias, x)
    torch.testing.assert_close(lp(x), expected.detach())
    with pytest.raises(ConfigError, match="norm.p"):
        create_norm("lp", 4, p=3)


def test_noisy_bn_noise_has_the_moments_of_santurkar_alg1():
    """x takes -1, 0, 1 in equal thirds per channel, so BN's output a is exactly -k, 0 or k: where a = 0 the
    output is the shift noise m alone, and the two other levels give the scale noise s."""
    c, per_level = 128, 1000
    levels = torch.tensor([-1.0, 0.0, 1.0]).repeat_interleave(per_level)
    g = torch.Generator().manual_seed(0)
    x = torch.stack([levels[torch.randperm(len(levels), generator=g)] for _ in range(c)])  # (C, 3000)
    x = x.view(c, -1, 10, 10).transpose(0, 1)  # (30, C, 10, 10): positions count as batch
    layer = create_norm("batch_noisy", c)
    torch.manual_seed(1)
    out = layer(x).detach().transpose(0, 1).reshape(c, -1)
    a = x.transpose(0, 1).reshape(c, -1) / math.sqrt(2 / 3 + layer.eps)
    k = a.max()
    m = torch.stack([out[j][a[j] == 0] for j in range(c)])  # per element shift m
    plus = torch.stack([out[j][a[j] == k] for j in range(c)])  # s * k + m
    minus = torch.stack([out[j][a[j] == -k] for j in range(c)])  # -s * k + m
    mu = m.mean(1)  # per-unit mu_j
    sigma = (plus.mean(1) - minus.mean(1)) / (2 * k)  # per-unit sigma_j
    # mu_j ~ U(-0.5, 0.5), sigma_j ~ U(1, 1.25): range, mean and variance over 128 units
    assert mu.min() > -0.51 and mu.max() < 0.51 and abs(mu.mean()) < 0.1 and abs(mu.var() - 1 / 12) < 0.03
    assert sigma.min() > 0.99 and sigma.max() < 1.26
    assert abs(sigma.mean() - 1.125) < 0.02 and abs(sigma.var() - 0.25**2 / 12) < 0.002
    # m ~ U(mu_j - 0.1, mu_j + 0.1): bounded by 0.1 around mu_j, variance 0.2^2 / 12
    assert (m - mu[:, None]).abs().max() < 0.1 + 0.01
    assert abs(m.var(1).mean() - 0.2**2 / 12) < 3e-4
    # s ~ N(sigma_j, 0.1): Var(s k + m) = 0.01 k^2 + Var(m)
    assert abs(plus.var(1).mean() - (0.01 * k**2 + 0.2**2 / 12)) < 1.5e-3
    assert abs(minus.var(1).mean() - (0.01 * k**2 + 0.2**2 / 12)) < 1.5e-3
    # fresh noise every step; none in eval mode, where it is plain BN
    assert not torch.equal(layer(x), layer(x))
    layer.eval()
    ref = nn.BatchNorm2d(c).eval()
    _copy_params(layer, ref)
    torch.testing.assert_close(layer(x), ref(x))


def test_noise_norm_is_the_noise_of_noisy_bn_without_the_normalization():
    """Santurkar's "Standard + noise": the same draws as noisy BN's (same RNG state) applied to the raw input,
    so noise(BN(x)) with BN a plain torch BatchNorm equals batch_noisy(x); eval mode passes x through."""
    x = _input(6, 4, 3, 3)
    noisy, noise = create_norm("batch_noisy", 4), create_norm("noise", 4)
    _randomize_affine(noisy)
    ref = nn.BatchNorm2d(4)
    _copy_params(noisy, ref)
    torch.manual_seed(3)
    expected = noisy(x)
    torch.manual_seed(3)
    torch.testing.assert_close(noise(ref(x)), expected)
    # shift noise alone on a zero input: per unit within mu_j +- 0.1, mu_j within +-0.5
    out = noise(torch.zeros(500, 4))
    assert out.abs().max() < 0.6 + 1e-6 and (out.amax(0) - out.amin(0)).max() < 0.2 + 1e-6
    assert NormSpec.from_config({"name": "noise"}).shifts is False  # the preceding layer keeps its bias
    noise.eval()
    assert torch.equal(noise(x), x)


@pytest.mark.parametrize("memory_format", MEMORY_FORMATS)
def test_noise_gradient_is_the_drawn_scale(memory_format):
    """out = s * a + m with m and s drawn fresh: with the same draws (same RNG state) a = 0 gives m and a = 1
    gives s + m, and the gradient of sum(out) with respect to a must be that s, element by element. A
    channels-last a gets the draws of a contiguous one, and its output stays channels last."""
    noise = create_norm("noise", 4)
    shape = (5, 4, 3, 3)
    draws = []
    for a in (torch.zeros(shape), torch.ones(shape)):
        torch.manual_seed(11)
        draws.append(noise(a))
    m, s = draws[0], draws[1] - draws[0]
    a = torch.randn(shape).contiguous(memory_format=memory_format).requires_grad_()
    torch.manual_seed(11)
    out = noise(a)
    out.sum().backward()
    torch.testing.assert_close(a.grad, s)
    torch.testing.assert_close(out, s * a.detach() + m)
    assert out.is_contiguous(memory_format=memory_format)


# ---------------------------------------------------------------- ghost, renorm, frozen, sync without a group

@pytest.mark.parametrize("memory_format", MEMORY_FORMATS)
def test_ghost_batch_norm_is_bn_per_slice(memory_format):
    x = _input(12, 3, 2, 2)
    ghost = create_norm("ghost_batch", 3, virtual_devices=3)
    _randomize_affine(ghost)
    refs = [nn.BatchNorm2d(3) for _ in range(3)]
    for r in refs:
        _copy_params(ghost, r)
    out, grads = _output_and_grads(ghost, x, memory_format, [ghost.weight, ghost.bias])
    expected, expected_grads = _output_and_grads(
        lambda t: torch.cat([r(s) for r, s in zip(refs, t.chunk(3), strict=True)]), x,
        params=[p for r in refs for p in (r.weight, r.bias)])
    torch.testing.assert_close(out, expected)
    assert out.is_contiguous(memory_format=memory_format)
    torch.testing.assert_close(grads[0], expected_grads[0])
    torch.testing.assert_close(grads[1], sum(expected_grads[1::2]))  # one gamma shared by the slices
    torch.testing.assert_close(grads[2], sum(expected_grads[2::2]))
    slices = x.view(3, 4, 3, 4).transpose(1, 2).reshape(3, 3, -1)  # (slice, channel, values)
    torch.testing.assert_close(ghost.running_mean, 0.1 * slices.mean(-1).mean(0))
    torch.testing.assert_close(ghost.running_var, 0.9 + 0.1 * slices.var(-1, unbiased=True).mean(0))
    with pytest.raises(ValueError, match="virtual_devices"):
        ghost(_input(10, 3, 2, 2))


@pytest.mark.parametrize("memory_format", MEMORY_FORMATS)
def test_batch_renorm_matches_ioffe_2017_with_clipped_r_and_d(memory_format):
    x = _input(8, 3, 2, 2)
    brn = create_norm("batch_renorm", 3, r_max=1.5, d_max=0.5)
    _randomize_affine(brn)
    with torch.no_grad():
        brn.running_mean.copy_(torch.tensor([0.0, 1.0, 5.0]))  # channel 2: d clipped
        brn.running_var.copy_(torch.tensor([1.0, 100.0, 9.0]))  # channel 1: r clipped
    xc = x.transpose(0, 1).reshape(3, -1)
    mean, std = xc.mean(1), (xc.var(1, unbiased=False) + 1e-5).sqrt()
    sigma = (brn.running_var + 1e-5).sqrt()
    r = (std / sigma).clamp(1 / 1.5, 1.5)
    d = ((mean - brn.running_mean) / sigma).clamp(-0.5, 0.5)
    assert r[1] == 1 / 1.5 and d[2] == -0.5

    def reference(t):  # r and d constants of the backward pass
        tc = t.transpose(0, 1).reshape(3, -1)
        t_hat = (t - _per_channel(tc.mean(1), t)) / _per_channel((tc.var(1, unbiased=False) + 1e-5).sqrt(), t)
        y = t_hat * _per_channel(r, t) + _per_channel(d, t)
        return y * _per_channel(brn.weight, t) + _per_channel(brn.bias, t)

    expected, expected_grads = _output_and_grads(reference, x, params=[brn.weight, brn.bias])
    out, grads = _output_and_grads(brn, x, memory_format, [brn.weight, brn.bias])
    torch.testing.assert_close(out, expected)
    assert out.is_contiguous(memory_format=memory_format)
    for g, g_expected in zip(grads, expected_grads, strict=True):
        torch.testing.assert_close(g, g_expected)
    torch.testing.assert_close(brn.running_mean, torch.tensor([0.0, 1.0, 5.0]) * 0.99 + 0.01 * mean)
    torch.testing.assert_close(brn.running_var, torch.tensor([1.0, 100.0, 9.0]) * 0.99 + 0.01 * xc.var(1))


def test_frozen_batch_norm_uses_running_statistics_in_train_mode():
    frozen = create_norm("frozen_batch", 3, freeze_affine=True)
    _randomize_affine(frozen)
    with torch.no_grad():
        frozen.running_mean.copy_(torch.tensor([1.0, -2.0, 0.5]))
        frozen.running_var.copy_(torch.tensor([4.0, 0.5, 2.0]))
    frozen.train()
    x = _input(4, 3, 2, 2)
    std = (frozen.running_var + 1e-5).sqrt()
    expected = (x - _per_channel(frozen.running_mean, x)) / _per_channel(std, x)
    expected = expected * _per_channel(frozen.weight, x) + _per_channel(frozen.bias, x)
    torch.testing.assert_close(frozen(x), expected.detach())
    torch.testing.assert_close(frozen.running_mean, torch.tensor([1.0, -2.0, 0.5]))
    assert not any(p.requires_grad for p in frozen.parameters())


def test_sync_batch_norm_without_a_process_group_is_bn():
    x = _input(8, 3, 2, 2)
    sync = create_norm("sync_batch", 3)
    ref = nn.BatchNorm2d(3)
    _randomize_affine(sync)
    _copy_params(sync, ref)
    torch.testing.assert_close(sync(x), ref(x))
    torch.testing.assert_close(sync.running_var, ref.running_var)


@pytest.mark.slow  # two spawned processes importing torch: 5-15 s
def test_sd4_sync_bn_on_two_gloo_processes_equals_one_process_with_the_whole_batch(tmp_path, monkeypatch):
    import sys

    import torch.multiprocessing as mp
    from _syncbn_worker import BATCH, CHANNELS, inputs, worker

    # spawned children re-run the launcher script when it has no main guard (a bare `pytest` wrapper)
    monkeypatch.delattr(sys.modules["__main__"], "__file__", raising=False)
    mp.spawn(worker, args=(2, str(tmp_path)), nprocs=2, join=True)
    x, r = inputs()
    x = x.requires_grad_()
    ref = nn.BatchNorm2d(CHANNELS)
    _randomize_affine(ref, seed=5)
    out = ref(x)
    (out * r).sum().backward()
    parts = [torch.load(tmp_path / f"rank{i}.pt") for i in range(2)]
    torch.testing.assert_close(torch.cat([p["out"] for p in parts]), out.detach())
    torch.testing.assert_close(torch.cat([p["x_grad"] for p in parts]), x.grad)
    for p in parts:
        assert p["out"].shape[0] == BATCH
        torch.testing.assert_close(p["running_mean"], ref.running_mean)
        torch.testing.assert_close(p["running_var"], ref.running_var)
    # each process holds the gradient of its own part of the loss; DDP sums them
    torch.testing.assert_close(parts[0]["weight_grad"] + parts[1]["weight_grad"], ref.weight.grad)
    torch.testing.assert_close(parts[0]["bias_grad"] + parts[1]["bias_grad"], ref.bias.grad)


# ---------------------------------------------------------------- population statistics (Ioffe's Alg. 2)

def test_population_statistics_are_mean_of_batch_means_and_unbiased_mean_of_batch_variances():
    torch.manual_seed(0)
    conv1, conv2 = nn.Conv2d(2, 3, 3, padding=1), nn.Conv2d(3, 4, 3, padding=1)
    bn1, bn2 = BatchNorm(3, stats="population"), BatchNorm(4, stats="population")
    model = nn.Sequential(conv1, bn1, nn.ReLU(), conv2, bn2).train()
    for _ in range(3):  # move the running statistics away from their reset values first
        model(_input(5, 2, 4, 4, seed=50))
    batches = [_input(5, 2, 4, 4, seed=s, shift=s) for s in range(4)]
    m = 5 * 4 * 4

    def batch_stats(h):
        flat = h.transpose(0, 1).reshape(h.size(1), -1)
        return flat.mean(1), flat.var(1, unbiased=False)

    stats1, stats2 = [], []
    with torch.no_grad():
        for x in batches:
            h = conv1(x)
            mean, var = batch_stats(h)
            stats1.append((mean, var))
            h = (h - _per_channel(mean, h)) / _per_channel((var + 1e-5).sqrt(), h)
            h = torch.relu(h * _per_channel(bn1.weight, h) + _per_channel(bn1.bias, h))
            stats2.append(batch_stats(conv2(h)))
    rng = torch.get_rng_state()
    assert recompute_population_stats(model, batches)
    for bn, stats in ((bn1, stats1), (bn2, stats2)):
        torch.testing.assert_close(bn.running_mean, torch.stack([s[0] for s in stats]).mean(0))
        torch.testing.assert_close(bn.running_var, m / (m - 1) * torch.stack([s[1] for s in stats]).mean(0))
        assert bn.momentum == 0.1
    assert torch.equal(torch.get_rng_state(), rng)
    assert model.training
    assert not recompute_population_stats(nn.Sequential(nn.BatchNorm2d(3)), batches)


# ---------------------------------------------------------------- SD-2: the eval-mode pitfall

def test_sd2_batch_of_one_in_train_mode_differs_from_eval_mode_and_eval_ignores_the_batch():
    from omegaconf import OmegaConf

    from normexp.models import build_model

    torch.manual_seed(0)
    cfg = OmegaConf.create({"name": "vgg", "layout": [8, "M", 16], "init": "torch"})
    model = build_model(cfg, NormSpec("batch"), (1, 8, 8), 10)
    x = _input(16, 1, 8, 8)
    with torch.no_grad():
        for i in range(20):  # running statistics of training data
            model(x + 0.1 * _input(16, 1, 8, 8, seed=i))
        train_one = model(x[:1])
        model.eval()
        eval_one = model(x[:1])
        eval_batch = model(x)
        eval_other = model(torch.cat([_input(7, 1, 8, 8, seed=99, scale=5), x[:1]]))
    assert (train_one - eval_one).abs().max() > 0.05
    torch.testing.assert_close(eval_batch[:1], eval_one)
    torch.testing.assert_close(eval_other[-1:], eval_one)


# ---------------------------------------------------------------- ST-6: Santurkar's Theorem 4.1

@settings(max_examples=25, deadline=None)
@given(m=st.integers(4, 64), units=st.integers(1, 6), seed=st.integers(0, 2**16))
def test_st6_gradient_norm_identity_of_theorem_4_1(m, units, seed):
    """For y = W x followed by BN with fixed gamma (eps ~ 0), per unit j, with g = dL/dz at the BN output z:
    ||grad_y L_hat||^2 = gamma^2 / sigma^2 (||g||^2 - <1, g>^2 / m - <g, y_hat>^2 / m)."""
    g_ = torch.Generator().manual_seed(seed)
    x = torch.randn(m, 5, generator=g_, dtype=torch.float64)
    w = torch.randn(units, 5, generator=g_, dtype=torch.float64)
    c = torch.randn(m, units, generator=g_, dtype=torch.float64)
    bn = BatchNorm(units, eps=1e-12).double()  # torch refuses eps = 0
    with torch.no_grad():
        bn.weight.copy_(torch.rand(units, generator=g_, dtype=torch.float64) * 2 + 0.1)
        bn.bias.copy_(torch.randn(units, generator=g_, dtype=torch.float64))
    bn.weight.requires_grad_(False)
    loss_of = lambda z: (torch.tanh(z) * c).sum() + z.pow(2).sum() / 7  # any smooth loss of the BN output

    y = (x @ w.T).requires_grad_()
    z = bn(y)
    (grad_y,) = torch.autograd.grad(loss_of(z), y)
    z_leaf = z.detach().requires_grad_()
    (g,) = torch.autograd.grad(loss_of(z_leaf), z_leaf)
    y = y.detach()
    var = y.var(0, unbiased=False)
    y_hat = (y - y.mean(0)) / var.sqrt()
    rhs = bn.weight**2 / var * (g.pow(2).sum(0) - g.sum(0) ** 2 / m - (g * y_hat).sum(0) ** 2 / m)
    torch.testing.assert_close(grad_y.pow(2).sum(0), rhs, rtol=1e-7, atol=1e-9)


# ---------------------------------------------------------------- NormSpec

def test_norm_spec_rejects_unknown_names_placements_and_options():
    from omegaconf import OmegaConf

    with pytest.raises(ConfigError, match=r"norm.name='bogus'.*batch.*group"):
        NormSpec("bogus").check()
    with pytest.raises(ConfigError, match=r"norm.placement='middle'.*after, before"):
        NormSpec("batch", "middle").check()
    with pytest.raises(ConfigError, match=r"norm.groups=4.*norm=batch takes options"):
        NormSpec.from_config(OmegaConf.create({"name": "batch", "groups": 4}))
    assert not NormSpec("batch", "after").shifts
    assert not NormSpec("batch", options={"affine": False}).shifts
    assert NormSpec("ghost_batch").uses_batch_statistics and not NormSpec("group").uses_batch_statistics


def test_the_loop_reads_population_batches_off_the_models_layers():
    from omegaconf import OmegaConf

    from normexp.models import build_model
    from normexp.norms import population_batches

    cfg = OmegaConf.create({"name": "mlp", "widths": [4]})
    spec = NormSpec("batch", options={"stats": "population", "population_batches": 3})
    assert population_batches(build_model(cfg, spec, (1, 2, 2), 10)) == 3
    assert population_batches(build_model(cfg, NormSpec("batch"), (1, 2, 2), 10)) == 0  # stats=ema
    assert population_batches(build_model(cfg, NormSpec("group", options={"groups": 1}), (1, 2, 2), 10)) == 0


def test_a_run_with_population_statistics_completes(compose, tmp_path):
    from normexp.train import run

    summary = run(compose(["norm=batch", "norm.stats=population", "norm.population_batches=3",
                           "train.steps=10", "data.train_subset=256", "data.test_subset=100"]), tmp_path)
    assert summary["status"] == "completed" and summary["test_acc"] is not None
