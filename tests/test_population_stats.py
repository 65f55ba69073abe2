"""Population statistics, ``recompute_running_stats(model, batches, layers, estimator)``: the ``ioffe``
estimator (the default, bit for bit the function as it was) and the ``precise`` one (fvcore's PreciseBN),
against statistics computed here by hand, against fvcore's ``update_bn_stats``, and against each other at
batch size 2, where they differ by a closed form.

Both estimators come from one pass of the model in train mode, as training sees the data: a layer's input
is computed with the layers before it normalizing each batch with that batch's own statistics (their new
running statistics do not enter; fvcore's pass is the same)."""

from __future__ import annotations

import copy
import math
from statistics import fmean, pvariance, variance

import pytest
import torch
from torch import nn

from normexp.errors import ConfigError
from normexp.norms import (
    BatchNorm,
    NormSpec,
    create_norm,
    recompute_population_stats,
    recompute_running_stats,
)

EPS = 1e-5


def _bn_layers(model: nn.Module) -> list[nn.Module]:
    return [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


def _randomize(model: nn.Module, seed: int = 0) -> None:
    """The BN layers' gamma ~ N(1, 0.5^2) and beta ~ N(0, 0.5^2) (the other layers keep torch's init)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in _bn_layers(model):
            m.weight.copy_(torch.randn(m.weight.shape, generator=g) * 0.5 + 1.0)
            m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.5)


def _batches(sizes, shape=(2, 4, 4), seed: int = 0) -> list[torch.Tensor]:
    """Batches of ``sizes`` examples whose means differ (batch k shifted by k - 1)."""
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(n, *shape, generator=g) * 2 + (k - 1) for k, n in enumerate(sizes)]


def _state(model: nn.Module) -> dict:
    return {k: v.clone() for k, v in model.state_dict().items()}


# ---------------------------------------------------------------- the default is the old function

@torch.no_grad()
def _old_recompute_running_stats(model, batches, layers) -> None:
    """``recompute_running_stats`` as it was before it had estimators (normexp/norms.py at 9eec233)."""
    momenta = [m.momentum for m in layers]
    was_training = model.training
    with torch.random.fork_rng(devices=[]):
        for m in layers:
            m.reset_running_stats()
            m.momentum = None
        model.train()
        for x in batches:
            model(x)
    for m, momentum in zip(layers, momenta, strict=True):
        m.momentum = momentum
    model.train(was_training)


def _every_kind_net(population: bool = False) -> nn.Sequential:
    """A conv net with every BN kind the ``ioffe`` estimator takes, its statistics moved off (0, 1)."""
    torch.manual_seed(0)
    stats = {"stats": "population"} if population else {}
    model = nn.Sequential(
        nn.Conv2d(2, 4, 3, padding=1), create_norm("batch", 4, **stats), nn.ReLU(),
        nn.Conv2d(4, 4, 3, padding=1), create_norm("ghost_batch", 4, virtual_devices=2), nn.ReLU(),
        nn.Conv2d(4, 4, 3, padding=1), create_norm("batch_renorm", 4, virtual_devices=2), nn.ReLU(),
        nn.Conv2d(4, 4, 3, padding=1), create_norm("batch_noisy", 4), nn.ReLU(),
        nn.Conv2d(4, 4, 3, padding=1), create_norm("sync_batch", 4), nn.ReLU(),
        nn.Conv2d(4, 4, 3, padding=1), create_norm("lp", 4, p=2), nn.ReLU(),
        nn.Conv2d(4, 3, 3, padding=1), nn.BatchNorm2d(3))
    _randomize(model)
    with torch.no_grad():
        for x in _batches([4, 4], seed=9):
            model(x)
    return model.eval()


def test_the_default_estimator_gives_exactly_the_old_functions_buffers():
    batches = _batches([4, 4, 4])
    old, new, explicit = _every_kind_net(), _every_kind_net(), _every_kind_net()
    torch.manual_seed(3)
    _old_recompute_running_stats(old, batches, _bn_layers(old))
    rng = torch.get_rng_state()
    torch.manual_seed(3)
    recompute_running_stats(new, batches, _bn_layers(new))
    assert torch.equal(torch.get_rng_state(), rng)
    torch.manual_seed(3)
    recompute_running_stats(explicit, batches, _bn_layers(explicit), "ioffe")
    for model in (new, explicit):
        assert not model.training
        assert [m.momentum for m in _bn_layers(model)] == [m.momentum for m in _bn_layers(old)]
        for (k, a), b in zip(old.state_dict().items(), model.state_dict().values(), strict=True):
            assert torch.equal(a, b), k
    # the population layers of norm.stats=population: the same through recompute_population_stats
    old, new = _every_kind_net(population=True), _every_kind_net(population=True)
    _old_recompute_running_stats(old, batches, [old[1]])
    assert recompute_population_stats(new, batches)
    for (k, a), b in zip(old.state_dict().items(), new.state_dict().values(), strict=True):
        assert torch.equal(a, b), k


# ---------------------------------------------------------------- both estimators against a hand computation

def _slices(batch: list[float], d: int) -> list[list[float]]:
    n = len(batch) // d
    return [batch[i * n:(i + 1) * n] for i in range(d)]


def _ioffe(batches: list[list[float]], d: int) -> tuple[float, float]:
    """Mean of batch (slice) means, mean of their unbiased variances."""
    slices = [s for b in batches for s in _slices(b, d)]
    return fmean(fmean(s) for s in slices), fmean(variance(s) for s in slices)


def _precise(batches: list[list[float]]) -> tuple[float, float]:
    """Mean and biased variance of every value."""
    values = [v for b in batches for v in b]
    return fmean(values), pvariance(values)


def _train_mode_bn(batch: list[float], d: int, gamma: float, beta: float) -> list[float]:
    out = []
    for s in _slices(batch, d):
        mu, var = fmean(s), pvariance(s)
        out += [gamma * (v - mu) / math.sqrt(var + EPS) + beta for v in s]
    return out


BATCHES = [[0.0, 1.0, 2.0, 5.0], [-1.0, 3.0, 3.0, 7.0], [2.0, 2.5, 4.0, 8.0]]
KINDS = {"batch": lambda: create_norm("batch", 1), "sync_batch": lambda: create_norm("sync_batch", 1),
         "ghost_batch": lambda: create_norm("ghost_batch", 1, virtual_devices=2),
         "torch": lambda: nn.BatchNorm1d(1)}


def _two_layer_net(kind: str) -> nn.Sequential:
    """BN(1) (gamma 2, beta -1), then 3 x + 0.5, then BN(1), on (N, 1) inputs."""
    bn1, linear, bn2 = KINDS[kind](), nn.Linear(1, 1), KINDS[kind]()
    with torch.no_grad():
        bn1.weight.fill_(2.0)
        bn1.bias.fill_(-1.0)
        linear.weight.fill_(3.0)
        linear.bias.fill_(0.5)
    return nn.Sequential(bn1, linear, bn2)


@pytest.mark.parametrize("estimator", ["ioffe", "precise"])
@pytest.mark.parametrize("kind", list(KINDS))
def test_both_estimators_match_the_statistics_worked_out_layer_by_layer(kind, estimator):
    d = 2 if kind == "ghost_batch" else 1  # ghost BN's slices of 2 are its batches under ioffe
    layer2_in = [[3 * h + 0.5 for h in _train_mode_bn(b, d, 2.0, -1.0)] for b in BATCHES]
    if estimator == "ioffe":
        expected = [_ioffe(BATCHES, d), _ioffe(layer2_in, d)]
    else:  # pooled: the slicing does not enter
        expected = [_precise(BATCHES), _precise(layer2_in)]
    model = _two_layer_net(kind)
    recompute_running_stats(model, [torch.tensor(b).view(-1, 1) for b in BATCHES], [model[0], model[2]],
                            estimator)
    for bn, (mean, var) in zip((model[0], model[2]), expected, strict=True):
        torch.testing.assert_close(bn.running_mean, torch.tensor([mean]), rtol=1e-6, atol=1e-6)
        torch.testing.assert_close(bn.running_var, torch.tensor([var]), rtol=1e-6, atol=1e-6)
    # the two differ on this net (the spread of the batch means is in the pooled variance only)
    assert abs(_precise(BATCHES)[1] - _ioffe(BATCHES, d)[1]) > 0.5


def _captured_inputs(model, layers):
    seen = {id(m): [] for m in layers}
    hooks = [m.register_forward_pre_hook(lambda m, i: seen[id(m)].append(i[0].detach().double()))
             for m in layers]
    return seen, hooks


def _per_slice(x: torch.Tensor, d: int):
    slices = x.reshape(d, x.size(0) // d, x.size(1), -1).transpose(1, 2).reshape(d, x.size(1), -1)
    return slices.mean(2), slices.var(2, unbiased=True)


def test_renorm_noisy_and_ghost_layers_get_the_same_inputs_under_both_estimators():
    """The pass is the same under both estimators (Batch Renorm's r, d against the statistics as they
    accumulate; noisy BN's draws from the same RNG state), so each estimator is its formula applied to the
    same inputs; weights, momenta, mode and RNG state are kept; num_batches_tracked as in fvcore."""
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(2, 3, 3, padding=1), create_norm("batch_renorm", 3, virtual_devices=2), nn.ReLU(),
        nn.Conv2d(3, 3, 3, padding=1), create_norm("batch_noisy", 3), nn.ReLU(),
        nn.Conv2d(3, 4, 3, padding=1), create_norm("ghost_batch", 4, virtual_devices=2))
    _randomize(model)
    with torch.no_grad():
        for x in _batches([4, 4], seed=9):
            model(x)
    model.eval()
    copies = {e: copy.deepcopy(model) for e in ("ioffe", "precise")}
    before = _state(model)
    batches = _batches([4, 6, 4])
    seen = {}
    for estimator, net in copies.items():
        layers = _bn_layers(net)
        seen[estimator], hooks = _captured_inputs(net, layers)
        rng = torch.get_rng_state()
        recompute_running_stats(net, batches, layers, estimator)
        for h in hooks:
            h.remove()
        assert torch.equal(torch.get_rng_state(), rng)
        assert not net.training
        assert [m.momentum for m in layers] == [0.01, 0.1, 0.1]
        for k, v in net.named_parameters():
            assert torch.equal(v, before[k]), k
    for a, b in zip(seen["ioffe"].values(), seen["precise"].values(), strict=True):
        for x, y in zip(a, b, strict=True):
            assert torch.equal(x, y)
    for i, (ioffe_bn, precise_bn) in enumerate(zip(_bn_layers(copies["ioffe"]), _bn_layers(copies["precise"]),
                                                   strict=True)):
        xs = list(seen["ioffe"].values())[i]
        d = getattr(ioffe_bn, "virtual_devices", 1)
        stats = [_per_slice(x, d) for x in xs]
        close = dict(rtol=1e-5, atol=1e-6)  # float32 buffers against float64 formulas
        torch.testing.assert_close(ioffe_bn.running_mean.double(), torch.cat([s[0] for s in stats]).mean(0),
                                   **close)
        torch.testing.assert_close(ioffe_bn.running_var.double(), torch.cat([s[1] for s in stats]).mean(0),
                                   **close)
        flat = torch.cat([x.transpose(0, 1).reshape(x.size(1), -1) for x in xs], dim=1)
        torch.testing.assert_close(precise_bn.running_mean.double(), flat.mean(1), **close)
        torch.testing.assert_close(precise_bn.running_var.double(), flat.var(1, unbiased=False), **close)
        assert int(ioffe_bn.num_batches_tracked) == 3
        assert int(precise_bn.num_batches_tracked) == int(before[f"{3 * i + 1}.num_batches_tracked"]) + 3 == 5


# ---------------------------------------------------------------- batch size 2: the closed form

def test_at_batch_size_2_the_pooled_variance_adds_the_spread_of_batch_means():
    """Batches {c_k - a_k, c_k + a_k}: ioffe's variance is mean(2 a_k^2) (the unbiased variance of two
    values), the pooled one mean(a_k^2) + pvar(c_k); they differ by pvar(c) - mean(a^2)."""
    c, a = [-3.0, 0.5, 4.0, 10.0], [1.5, 0.5, 2.0, 1.0]
    batches = [torch.tensor([[ck - ak], [ck + ak]]) for ck, ak in zip(c, a, strict=True)]
    spread, within = pvariance(c), fmean(x * x for x in a)
    out = {}
    for estimator in ("ioffe", "precise"):
        bn = create_norm("batch", 1)
        recompute_running_stats(bn, batches, [bn], estimator)
        out[estimator] = bn
        torch.testing.assert_close(bn.running_mean, torch.tensor([fmean(c)]))
    torch.testing.assert_close(out["ioffe"].running_var, torch.tensor([2 * within]))
    torch.testing.assert_close(out["precise"].running_var, torch.tensor([within + spread]))
    difference = float(out["precise"].running_var - out["ioffe"].running_var)
    assert difference == pytest.approx(spread - within, rel=1e-6) and difference > 20


def test_at_batch_size_2_a_layer_after_bn_gets_twice_the_variance_from_ioffe():
    """After a BN layer at batch size 2 each batch is {b - g s_k, b + g s_k} (s_k = a_k / sqrt(a_k^2 + eps)
    times the gain of the layers between): the batch means do not spread, the two values are as far apart
    as they can be, and ioffe's m/(m-1) = 2 doubles the pooled variance, mean((3 * 2 s_k)^2)."""
    a = [1.5, 0.5, 2.0, 2.0**-8]  # exact in float32; the last one small enough for eps to show
    batches = [torch.tensor([[0.5 - ak], [0.5 + ak]]) for ak in a]
    pooled = fmean((3 * 2 * ak / math.sqrt(ak * ak + EPS)) ** 2 for ak in a)
    var = {}
    for estimator in ("ioffe", "precise"):
        model = _two_layer_net("batch")
        recompute_running_stats(model, batches, [model[0], model[2]], estimator)
        torch.testing.assert_close(model[2].running_mean, torch.tensor([3 * -1.0 + 0.5]))
        var[estimator] = float(model[2].running_var)
    assert var["precise"] == pytest.approx(pooled, rel=1e-6)
    assert var["ioffe"] == pytest.approx(2 * pooled, rel=1e-6)


# ---------------------------------------------------------------- fvcore's update_bn_stats

def _torch_bn_net() -> nn.Sequential:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(2, 3, 3, padding=1), nn.BatchNorm2d(3), nn.ReLU(),
                          nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
                          nn.Flatten(), nn.Linear(64, 5), nn.BatchNorm1d(5))
    _randomize(model)
    return model


def _running(model) -> list[torch.Tensor]:
    return [t.clone() for m in _bn_layers(model) for t in (m.running_mean, m.running_var)]


def _moved(before, after, tol: float = 1e-3) -> bool:
    """The comparison's precondition: some running statistic moved away from where it started."""
    return any((a - b).abs().max() > tol for a, b in zip(before, after, strict=True))


def _fvcore():
    return pytest.importorskip("fvcore.nn.precise_bn",
                               reason="fvcore is not installed (a dev extra: pip install -e '.[dev]')")


def test_precise_equals_fvcores_update_bn_stats_on_torch_batchnorm_layers():
    precise_bn = _fvcore()
    batches = _batches([3, 5, 2, 4])  # unequal sizes: fvcore weights a batch by its values
    ours, theirs = _torch_bn_net(), _torch_bn_net()
    start = _running(theirs)
    precise_bn.update_bn_stats(theirs.train(), batches, num_iters=len(batches))
    assert _moved(start, _running(theirs))
    recompute_running_stats(ours.eval(), batches, _bn_layers(ours), "precise")
    assert not ours.training
    for a, b in zip(_bn_layers(ours), _bn_layers(theirs), strict=True):
        torch.testing.assert_close(a.running_mean, b.running_mean, rtol=1e-6, atol=1e-6)
        torch.testing.assert_close(a.running_var, b.running_var, rtol=1e-6, atol=1e-6)
        assert int(a.num_batches_tracked) == int(b.num_batches_tracked) == 4
        assert a.momentum == b.momentum == 0.1


def test_fvcore_does_not_move_a_net_without_torch_batchnorm_layers():
    """fvcore looks for torch's BatchNorm classes only: on normexp's layers its statistics stay where they
    were, so the precondition of the comparison above fails there (ours moves them)."""
    precise_bn = _fvcore()
    batches = _batches([3, 5, 2, 4])

    def net():
        torch.manual_seed(0)
        return nn.Sequential(nn.Conv2d(2, 3, 3, padding=1), create_norm("batch", 3), nn.ReLU(),
                             nn.Conv2d(3, 4, 3, padding=1), create_norm("batch", 4))

    theirs, ours = net(), net()
    start = _running(theirs)
    precise_bn.update_bn_stats(theirs.train(), batches, num_iters=len(batches))
    assert not _moved(start, _running(theirs))
    recompute_running_stats(ours, batches, _bn_layers(ours), "precise")
    assert _moved(start, _running(ours))


# ---------------------------------------------------------------- what is refused, and the config option

def test_refusals_name_the_norm_and_the_estimator_and_change_nothing():
    model = nn.Sequential(nn.Conv2d(2, 3, 3, padding=1), create_norm("batch", 3), nn.ReLU(),
                          nn.Conv2d(3, 3, 3, padding=1), create_norm("lp", 3, p=1),
                          create_norm("frozen_batch", 3), nn.GroupNorm(1, 3))
    with torch.no_grad():
        model[1].running_mean.fill_(0.3)
        model[5].running_var.fill_(2.0)
    before, batches = _state(model), _batches([4, 4])
    bn, lp, frozen, gn = model[1], model[4], model[5], model[6]
    cases = [
        ([bn], "pooled", r"norm.population_estimator='pooled' is not valid: choose one of: ioffe, precise"),
        ([bn, lp], "precise", r"norm.population_estimator='precise' is not valid: norm=lp keeps an lp scale, "
                              r"not a variance, in running_var: choose one of: ioffe$"),
        ([bn, frozen], "ioffe", r"'ioffe' is not valid: norm=frozen_batch never normalizes with batch "
                                r"statistics.*norm=batch, batch_noisy, batch_renorm, ghost_batch, lp, "
                                r"sync_batch and of torch's BatchNorm$"),
        ([frozen], "precise", r"'precise' is not valid: norm=frozen_batch .*norm=batch, batch_noisy, "
                              r"batch_renorm, ghost_batch, sync_batch and"),
        ([gn], "ioffe", r"GroupNorm keeps no running statistics"),
    ]
    for layers, estimator, says in cases:
        with pytest.raises(ConfigError, match=says) as e:
            recompute_running_stats(model, batches, layers, estimator)
        assert "\n" not in str(e.value)
        for k, v in model.state_dict().items():
            assert torch.equal(v, before[k]), k


def test_norm_population_estimator_selects_the_estimator_of_stats_population():
    with pytest.raises(ConfigError, match=r"norm.population_estimator='pooled' is not valid: choose one of"):
        NormSpec("batch", options={"population_estimator": "pooled"})(4)
    assert NormSpec("batch").settings["population_estimator"] == "ioffe"
    batches = _batches([4, 4, 4])

    def net(estimator):
        torch.manual_seed(0)
        return nn.Sequential(nn.Conv2d(2, 3, 3, padding=1),
                             BatchNorm(3, stats="population", population_estimator=estimator))

    for estimator in ("ioffe", "precise"):
        by_option, by_call = net(estimator), net("ioffe")
        assert recompute_population_stats(by_option, batches)
        recompute_running_stats(by_call, batches, [by_call[1]], estimator)
        for k, v in by_call.state_dict().items():
            assert torch.equal(by_option.state_dict()[k], v), k
    mixed = nn.Sequential(BatchNorm(2, stats="population"),
                          BatchNorm(2, stats="population", population_estimator="precise"))
    with pytest.raises(ConfigError, match="one model's layers share one estimator"):
        recompute_population_stats(mixed, [torch.randn(4, 2)])


def test_the_landscapes_recompute_mode_leaves_frozen_bn_as_it_is():
    from normexp.landscape.surface import recompute_bn_statistics

    model = nn.Sequential(nn.Conv2d(2, 3, 3, padding=1), create_norm("batch", 3),
                          create_norm("frozen_batch", 3))
    with torch.no_grad():
        model[2].running_mean.fill_(0.3)
        model[2].running_var.fill_(2.0)
    frozen = _state(model[2])
    recompute_bn_statistics(model, _batches([4, 4]))
    assert int(model[1].num_batches_tracked) == 2
    for k, v in model[2].state_dict().items():
        assert torch.equal(v, frozen[k]), k


@pytest.mark.slow  # two spawned processes importing torch: 5-15 s
def test_sync_batch_on_two_gloo_processes_equals_one_process_with_the_whole_batches(tmp_path, monkeypatch):
    import sys

    import torch.multiprocessing as mp
    from _syncbn_worker import population_batches, population_net, population_worker

    monkeypatch.delattr(sys.modules["__main__"], "__file__", raising=False)
    mp.spawn(population_worker, args=(2, str(tmp_path)), nprocs=2, join=True)
    for estimator in ("ioffe", "precise"):
        net = population_net()
        recompute_running_stats(net, population_batches(), _bn_layers(net), estimator)
        for rank in range(2):
            part = torch.load(tmp_path / f"population_{estimator}_rank{rank}.pt")
            for k, v in net.state_dict().items():
                torch.testing.assert_close(part[k], v, msg=f"{estimator} rank {rank} {k}")
