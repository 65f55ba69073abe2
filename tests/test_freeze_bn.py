"""train.freeze_bn_at: PreciseBN statistics at a fraction of the run, then frozen BN (norm=frozen_batch's
eval-mode affine, gamma and beta still trained) to the end: the statistics and the layers' outputs against
a computation by hand, the optimizer's momentum carried on, resumes across the freeze bit-identical, and
one-line refusals for norms with nothing to freeze."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from normexp import train as train_module
from normexp.compose import compose as compose_config
from normexp.config import validate
from normexp.data import build_data, clean_train_indices
from normexp.errors import ConfigError
from normexp.norms import BatchNorm, FrozenBatchNorm, freeze_with_precise_stats
from normexp.records import CHECKPOINT, SUMMARY, read_json
from normexp.train import run
from tests.test_reliability import FAST, assert_same_run

EPS = 1e-5


def _net() -> nn.Sequential:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(3, 4), BatchNorm(4), nn.ReLU(), nn.Linear(4, 2), BatchNorm(2))
    with torch.no_grad():
        for bn in (net[1], net[4]):
            bn.weight.uniform_(0.5, 2.0)
            bn.bias.uniform_(-1.0, 1.0)
    return net


def _pooled(values: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and biased variance per channel of every row of every batch (float64)."""
    rows = torch.cat(values).double()
    return rows.mean(dim=0), rows.var(dim=0, unbiased=False)


def _train_mode_bn(h: torch.Tensor, bn: nn.Module) -> torch.Tensor:
    mean, var = h.mean(dim=0), h.var(dim=0, unbiased=False)
    return (h - mean) / torch.sqrt(var + EPS) * bn.weight + bn.bias


def _frozen_bn(h: torch.Tensor, mean, var, bn: nn.Module) -> torch.Tensor:
    return (h - mean.float()) / torch.sqrt(var.float() + EPS) * bn.weight + bn.bias


@torch.no_grad()
def test_frozen_layers_normalize_with_the_pooled_statistics_of_their_inputs_worked_out_by_hand():
    net = _net()
    g = torch.Generator().manual_seed(1)
    batches = [torch.randn(5, 3, generator=g) * 2 + k for k in range(3)]  # batch means differ
    h1 = [net[0](x) for x in batches]
    h2 = [net[3](torch.relu(_train_mode_bn(h, net[1]))) for h in h1]  # layer 1 normalizes each batch
    (m1, v1), (m2, v2) = _pooled(h1), _pooled(h2)
    params = [id(p) for p in net.parameters()]

    assert freeze_with_precise_stats(net, iter(batches)) == 2
    assert isinstance(net[1], FrozenBatchNorm) and isinstance(net[4], FrozenBatchNorm)
    assert [id(p) for p in net.parameters()] == params and all(p.requires_grad for p in net.parameters())
    torch.testing.assert_close(net[1].running_mean, m1.float(), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(net[1].running_var, v1.float(), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(net[4].running_mean, m2.float(), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(net[4].running_var, v2.float(), rtol=1e-5, atol=1e-6)

    x = torch.randn(4, 3, generator=g)
    net.train()
    expected = _frozen_bn(net[3](torch.relu(_frozen_bn(net[0](x), m1, v1, net[1]))), m2, v2, net[4])
    torch.testing.assert_close(net(x), expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(net[4].running_mean, m2.float(), rtol=1e-5, atol=1e-6)  # never updated
    with torch.enable_grad():
        net(x).sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in (net[1].weight, net[4].bias))


# ---------------------------------------------------------------- in a run

FREEZING = [*FAST, "norm=batch", "optim=momentum", "optim.weight_decay=0", "train.steps=20",
            "train.freeze_bn_at=0.95"]  # frozen after 19 steps: the 20th step trains frozen


def test_a_run_freezes_after_its_fraction_with_precise_stats_of_clean_whole_batches_and_momentum_goes_on(
        tmp_path, monkeypatch):
    seen = {}
    real_freeze, real_optimizer = train_module.freeze_with_precise_stats, train_module.build_optimizer

    def build_optimizer(cfg, model):
        seen["optimizer"] = real_optimizer(cfg, model)
        return seen["optimizer"]

    def freeze(model, batches):
        batches = list(batches)
        state = seen["optimizer"].state
        seen.update(model=model, before=copy.deepcopy(model), batches=batches,
                    buffers={p: state[p]["momentum_buffer"].clone() for p in model.parameters()})
        return real_freeze(model, iter(batches))

    monkeypatch.setattr(train_module, "build_optimizer", build_optimizer)
    monkeypatch.setattr(train_module, "freeze_with_precise_stats", freeze)
    cfg = compose_config(FREEZING)
    assert run(cfg, tmp_path)["status"] == "completed"
    model, optimizer, batches = seen["model"], seen["optimizer"], seen["batches"]

    data = build_data(cfg.data, torch.device("cpu"), 0)  # 512 training images, batches of 60: 8 whole ones
    assert [len(x) for x in batches] == [60] * 8
    order = clean_train_indices(data.n_train, 8192)
    torch.testing.assert_close(torch.cat(batches), data.x_train[order[:480]], rtol=0, atol=0)

    before, inputs = seen["before"].train(), {}
    layers = [m for m in before.modules() if isinstance(m, BatchNorm)]
    hooks = [m.register_forward_pre_hook(lambda m, i: inputs.setdefault(m, []).append(i[0].detach()))
             for m in layers]
    with torch.no_grad():
        for x in batches:
            before(x)
    for h in hooks:
        h.remove()
    frozen = [m for m in model.modules() if isinstance(m, BatchNorm)]
    assert len(frozen) == 3 and all(type(m) is FrozenBatchNorm for m in frozen)
    for layer, original in zip(frozen, layers, strict=True):
        mean, var = _pooled(inputs[original])
        torch.testing.assert_close(layer.running_mean, mean.float(), rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(layer.running_var, var.float(), rtol=1e-4, atol=1e-5)
        h = torch.randn(7, layer.num_features)
        torch.testing.assert_close(layer.train()(h), _frozen_bn(h, mean, var, layer), rtol=1e-4, atol=1e-4)

    params = list(model.parameters())
    assert {id(p) for group in optimizer.param_groups for p in group["params"]} == {id(p) for p in params}
    for p in params:  # SGD's momentum at the one frozen step: buffer = 0.9 buffer + gradient, not reset
        torch.testing.assert_close(optimizer.state[p]["momentum_buffer"], 0.9 * seen["buffers"][p] + p.grad)
        assert seen["buffers"][p].abs().sum() > 0


# ---------------------------------------------------------------- resume (as in test_reliability.py)

RESUMING = [*FAST, "norm=batch", "train.steps=30", "train.checkpoint_every=10", "train.save_final=true",
            "train.freeze_bn_at=0.5"]  # frozen after 15 steps


@pytest.fixture(scope="module")
def frozen_reference(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("frozen") / "run"
    assert run(compose_config(RESUMING), run_dir)["status"] == "completed"
    return run_dir


@pytest.mark.parametrize("fault_step, checkpoint_step", [(25, 20), (12, 10)])  # after and before the freeze
def test_a_run_resumed_across_the_freeze_is_bit_identical(tmp_path, monkeypatch, frozen_reference,
                                                          fault_step, checkpoint_step):
    real_batch = train_module.build_data

    def build_data(cfg, device, seed):
        data = real_batch(cfg, device, seed)
        batch = data.batch

        def faulty(step):
            if step == fault_step:
                raise RuntimeError(f"injected fault at step {fault_step}")
            return batch(step)

        data.batch = faulty
        return data

    monkeypatch.setattr(train_module, "build_data", build_data)
    with pytest.raises(RuntimeError, match="injected fault"):
        run(compose_config(RESUMING), tmp_path)
    assert read_json(tmp_path / SUMMARY)["status"] == "failed"
    checkpoint = torch.load(tmp_path / CHECKPOINT, weights_only=True)
    assert checkpoint["step"] == checkpoint_step and checkpoint["bn_frozen"] == (checkpoint_step > 15)
    monkeypatch.setattr(train_module, "build_data", real_batch)
    assert run(compose_config(RESUMING), tmp_path)["status"] == "completed"
    assert read_json(tmp_path / "meta.json")["resumed_from_step"] == checkpoint_step
    assert_same_run(frozen_reference, tmp_path)


# ---------------------------------------------------------------- refusals

@pytest.mark.parametrize("extra, says", [
    (["norm=group"], "norm=group has no batch statistics that population statistics could replace: "
                     "use null, or one of norm=batch, batch_renorm, ghost_batch, sync_batch"),
    (["norm=layer"], "norm=layer has no batch statistics"),
    (["norm=none"], "norm=none has no batch statistics"),
    (["norm=frozen_batch"], "norm=frozen_batch has no batch statistics"),
    (["norm=lp"], "norm=lp has no batch statistics"),
    (["norm=batch_noisy"], "norm=batch_noisy has no batch statistics"),
    (["train.freeze_bn_at=1"], "must be a number > 0 and < 1 or null"),
    (["train.steps=1"], "freezes after round(0.5 x 1) = 0 of the 1 steps"),
    (["train.freeze_bn_images=0"], "must be an integer >= 1"),
])
def test_freezing_what_cannot_be_frozen_is_a_one_line_error(compose, extra, says):
    error = None
    try:
        validate(compose(["model=mlp", "train.freeze_bn_at=0.5", *extra]))
    except ConfigError as e:
        error = e
    assert error is not None and says in str(error) and "\n" not in str(error)
    assert error.key.startswith("train.freeze_bn_")


@pytest.mark.parametrize("norm", ["batch", "ghost_batch", "batch_renorm", "sync_batch"])
def test_freezing_the_batch_norms_passes_validation(compose, norm):
    validate(compose(["model=mlp", f"norm={norm}", "data.batch_size=64", "train.freeze_bn_at=0.5"]))
