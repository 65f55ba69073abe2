"""Non-interference: probes leave training exactly as it would have been without them."""

from __future__ import annotations

import json

import pytest
import torch
from _probe_helpers import batch, model, probe_set

import normexp.train as train
from normexp.compose import compose
from normexp.config import validate
from normexp.errors import ConfigError
from normexp.probes import PROBES

EVERY_PROBE = {"batch_size": 10,
               "activations": {"every": 1, "layers": "all", "units": "all"},
               "moment_drift": {"every": 1},
               "ics": {"every": 1},
               "landscape": {"every": 1, "points": 3},
               "hessian": {"every": 1, "layers": [0], "max_iter": 5},
               "param_norms": {"every": 1}}


def snapshot(net, optimizer) -> dict:
    return {"params": [p.detach().clone() for p in net.parameters()],
            "grads": [p.grad.clone() for p in net.parameters()],
            "buffers": {k: v.clone() for k, v in net.named_buffers()},
            "modes": [m.training for m in net.modules()],
            "optimizer": json.dumps({k: v.tolist() for k, v in _flat_state(optimizer).items()}),
            "lr": [g["lr"] for g in optimizer.param_groups],
            "rng": torch.get_rng_state()}


def _flat_state(optimizer) -> dict:
    return {f"{i}/{k}": v for i, s in optimizer.state_dict()["state"].items() for k, v in s.items()
            if torch.is_tensor(v)}


def same(a: dict, b: dict) -> bool:
    tensors = lambda d: [*d["params"], *d["grads"], *d["buffers"].values(), d["rng"]]
    return (all(torch.equal(x, y) for x, y in zip(tensors(a), tensors(b), strict=True))
            and a["buffers"].keys() == b["buffers"].keys()
            and (a["modes"], a["optimizer"], a["lr"]) == (b["modes"], b["optimizer"], b["lr"]))


@pytest.mark.parametrize("name", sorted(PROBES))
def test_each_probe_leaves_everything_bit_identical(name):
    """Noisy BN (draws noise in train mode), momentum with state, a conv net: every buffer (BN running
    statistics, num_batches_tracked), parameter, gradient, optimizer state and RNG state is unchanged."""
    net = model("vgg", "batch_noisy", layout=[3, "M", 4], seed=2)
    x, y = batch(10)
    optimizer = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-3)
    for _ in range(2):  # a step with momentum state, then this step's gradient in .grad
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(net(x), y).backward()
        optimizer.step()
    optimizer.zero_grad()
    torch.nn.functional.cross_entropy(net(x), y).backward()
    before = snapshot(net, optimizer)
    probes = probe_set(net, {"batch_size": 10, name: EVERY_PROBE[name]}, x, y)
    records = probes.run(0, (x, y), optimizer) + probes.run(1, (x, y), optimizer)
    assert [r["probe"] for r in records] == [name, name] and all(r["seconds"] > 0 for r in records)
    assert same(before, snapshot(net, optimizer))


def _run(tmp_path, probes: str, monkeypatch) -> tuple[list[dict], dict]:
    built = []

    def build_and_keep(*args, **kwargs):
        built.append(train_build_model(*args, **kwargs))
        return built[-1]

    train_build_model = train.build_model
    monkeypatch.setattr(train, "build_model", build_and_keep)
    overrides = ["model=vgg_small", "model.layout=[4,M,6,6]", "norm=batch_noisy", "optim=momentum",
                 "data.train_subset=96", "data.test_subset=32", "data.batch_size=16", "train.steps=9",
                 "train.log_every=1", "train.eval_every=4", "train.progress=false", "device=cpu",
                 f"probes={probes}"]
    if probes == "all":
        overrides += [f"probes.{k}={v}" for k, v in {
            "batch_size": 12, "activations.every": 2, "moment_drift.every": 3, "ics.every": 3,
            "landscape.every": 4, "landscape.points": 3, "hessian.every": 5, "hessian.max_iter": 10,
            "param_norms.every": 2}.items()]
    train.run(compose(overrides), tmp_path / probes)
    lines = [json.loads(line) for line in (tmp_path / probes / "metrics.jsonl").read_text().splitlines()]
    monkeypatch.undo()
    return lines, built[0].state_dict()


def test_seeded_run_with_all_probes_trains_exactly_as_without(tmp_path, monkeypatch):
    with_probes, weights_with = _run(tmp_path, "all", monkeypatch)
    without, weights_without = _run(tmp_path, "none", monkeypatch)
    losses = lambda lines, split: [(r["step"], r["loss"]) for r in lines if r["split"] == split]
    assert len(losses(without, "train")) == 9
    assert losses(with_probes, "train") == losses(without, "train")
    assert losses(with_probes, "test") == losses(without, "test")
    assert weights_with.keys() == weights_without.keys()
    assert all(torch.equal(weights_with[k], weights_without[k]) for k in weights_with)
    series = {}
    for r in with_probes:
        if r["split"] == "probe":
            series.setdefault(r["probe"], []).append(r["step"])
    assert series == {"activations": [0, 2, 4, 6, 8], "moment_drift": [0, 3, 6], "ics": [0, 3, 6],
                      "landscape": [0, 4, 8], "hessian": [0, 5], "param_norms": [0, 2, 4, 6, 8]}


@pytest.mark.parametrize("override, key", [
    ("probes.ics.layers=[9]", "probes.ics.layers"),
    ("probes.ics.layers=[0.1]", "probes.ics.layers"),
    ("probes.landscape.spacing=cubic", "probes.landscape.spacing"),
    ("probes.landscape.low=0", "probes.landscape.low"),
    ("probes.landscape.high=0.1", "probes.landscape.high"),
    ("probes.hessian.bn_mode=frozen", "probes.hessian.bn_mode"),
    ("probes.hessian.max_iter=0", "probes.hessian.max_iter"),
    ("probes.moment_drift.layers=[bogus]", "probes.moment_drift.layers"),
    ("probes.param_norms.every=often", "probes.param_norms.every"),
    ("probes.batch_size=0", "probes.batch_size"),
])
def test_bad_probe_config_is_one_line_config_error(override, key):
    with pytest.raises(ConfigError) as info:
        validate(compose(["model=mlp", "probes=all", override]))
    assert info.value.key == key and "\n" not in str(info.value)
