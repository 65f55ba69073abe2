"""Moment drift and per-layer norms against moments and norms computed by hand."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from _probe_helpers import batch, model, probe_set

from normexp.compose import compose
from normexp.data import TensorData
from normexp.errors import ConfigError
from normexp.records import MODEL, read_json, read_metrics
from normexp.train import run
from tests.test_reliability import _failing_batch


@torch.no_grad()
def post_norm_moments(net, x):
    """Post-norm activations of the MLP's two Blocks in train mode, by hand; (mean, var) per unit."""
    moments, h = [], x.detach()
    for block in (net[1], net[2]):
        bn = block.norm
        a = F.batch_norm(F.linear(h, block.layer.weight), None, None, bn.weight, bn.bias, True)
        moments.append((a.mean(0), a.var(0, unbiased=False)))
        h = torch.sigmoid(a)
    return moments


def step(net, optimizer, x, y):
    optimizer.zero_grad()
    F.cross_entropy(net(x), y).backward()


def test_moment_drift_between_calls_and_its_state():
    net = model("mlp", "batch", in_shape=(5,), widths=[6, 4])
    x, y = batch(30, in_shape=(5,))
    optimizer = torch.optim.SGD(net.parameters(), lr=1.0)
    probes = probe_set(net, {"moment_drift": {"every": 2}}, x, y)
    step(net, optimizer, x, y)
    first = probes.run(0, (x, y), optimizer)[0]
    assert set(first) == {"step", "split", "probe", "seconds"}  # nothing to compare with yet
    before = post_norm_moments(net, x)
    optimizer.step()
    step(net, optimizer, x, y)
    restored = probe_set(net, {"moment_drift": {"every": 2}}, x, y)
    restored.load_state_dict(probes.state_dict())  # as after a resume from a checkpoint
    record = restored.run(2, (x, y), optimizer)[0]
    after = post_norm_moments(net, x)
    drifts = []
    for name, (m0, v0), (m1, v1) in zip(("1", "2"), before, after, strict=True):
        close = lambda a, b: pytest.approx(float((a - b).abs().mean()), rel=1e-4, abs=1e-7)
        assert record[f"{name}/mean_drift"] == close(m1, m0)
        assert record[f"{name}/var_drift"] == close(v1, v0)
        drifts.append(record[f"{name}/var_drift"])
    assert record["median/var_drift"] == pytest.approx(sum(drifts) / 2)
    assert record["2/var_drift"] > 0


def test_param_norms():
    net = model("vgg", "batch", layout=[4, "M", 6])
    x, y = batch(8)
    optimizer = torch.optim.SGD(net.parameters(), lr=0.1)
    step(net, optimizer, x, y)
    probes = probe_set(net, {"param_norms": {"every": 1, "layers": [0, -1]}}, x, y)
    record = probes.run(0, (x, y), optimizer)[0]
    first, last = net[0][0].layer, net[3][0]
    norm = lambda t: pytest.approx(float(torch.linalg.vector_norm(t.detach())), rel=1e-6)
    assert record["0.0/weight_norm"] == norm(first.weight)
    assert record["0.0/grad_norm"] == norm(first.weight.grad)
    assert record["3.0/grad_norm"] == norm(last.weight.grad)
    assert record["total/grad_norm"] == norm(torch.cat([p.grad.flatten() for p in net.parameters()]))
    assert "0.2/weight_norm" not in record


# ---------------------------------------------------------------- moment drift with pair: true

def by_hand_drift(before, after) -> dict:
    """Per Block name ("1", "2"): drift of mean and var, and each over the mean |moment| of both calls."""
    out = {}
    for name, (m0, v0), (m1, v1) in zip(("1", "2"), before, after, strict=True):
        for moment, a, b in (("mean", m0, m1), ("var", v0, v1)):
            drift = float((b - a).abs().mean())
            out[f"{name}/{moment}"] = (drift, drift / float((a.abs().mean() + b.abs().mean()) / 2))
    return out


def test_moment_drift_pair_measures_one_step_later_against_moments_by_hand():
    net = model("mlp", "batch", in_shape=(5,), widths=[6, 4])
    x, y = batch(30, in_shape=(5,))
    optimizer = torch.optim.SGD(net.parameters(), lr=1.0)
    probes = probe_set(net, {"moment_drift": {"every": 3, "pair": True}}, x, y)
    assert [s for s in range(8) if probes.due(s)] == [0, 1, 3, 4, 6, 7]
    seen = {}
    for s in range(5):
        step(net, optimizer, x, y)
        seen[s] = post_norm_moments(net, x)
        if probes.due(s):
            records = probes.run(s, (x, y), optimizer)
            assert len(records) == 1
            seen[f"record{s}"] = records[0]
        optimizer.step()
    close = lambda v: pytest.approx(v, rel=1e-4, abs=1e-7)  # noqa: E731
    for s, earlier, suffix in ((1, 0, "_1"), (3, 0, ""), (4, 3, "_1")):
        record = seen[f"record{s}"]
        for key, (drift, relative) in by_hand_drift(seen[earlier], seen[s]).items():
            assert record[key + "_drift" + suffix] == close(drift), (s, key)
            assert record[key + "_drift_rel" + suffix] == close(relative), (s, key)
    # step 1 has only the one-step keys, step 3 only the registered gap (step 2 was not measured)
    assert not [k for k in seen["record1"] if k.endswith(("mean_drift", "var_drift"))]
    assert not [k for k in seen["record3"] if k.endswith("_1")]
    assert seen["record4"]["median/var_drift_1"] == pytest.approx(
        sum(seen["record4"][f"{b}/var_drift_1"] for b in ("1", "2")) / 2)


def test_moment_drift_pair_option_is_checked():
    net = model("mlp", "batch", in_shape=(5,), widths=[6, 4])
    x, y = batch(8, in_shape=(5,))
    with pytest.raises(ConfigError) as info:
        probe_set(net, {"moment_drift": {"every": 3, "pair": "yes"}}, x, y)
    assert info.value.key == "probes.moment_drift.pair" and "true, false" in str(info.value)


PAIR_RUN = ["profile=smoke", "model=mlp", "device=cpu", "train.threads=1", "train.progress=false",
            "norm=batch_noisy", "train.steps=30", "train.checkpoint_every=10", "train.save_final=true",
            "probes=moment_drift", "probes.moment_drift.every=3"]


def probe_records(run_dir) -> list[dict]:
    return [{k: v for k, v in r.items() if k != "seconds"} for r in read_metrics(run_dir)
            if r["split"] == "probe"]


def test_pair_leaves_the_registered_records_and_training_bit_identical_and_resumes_exactly(tmp_path,
                                                                                          monkeypatch):
    off = tmp_path / "off"
    run(compose(PAIR_RUN), off)
    on = [*PAIR_RUN, "probes.moment_drift.pair=true"]
    run(compose(on), tmp_path / "on")
    registered = lambda r: {k: v for k, v in r.items() if "_rel" not in k and not k.endswith("_1")}  # noqa: E731
    paired = probe_records(tmp_path / "on")
    assert [r["step"] for r in paired] == [s for t in range(0, 30, 3) for s in (t, t + 1)]
    assert [registered(r) for r in paired if r["step"] % 3 == 0] == probe_records(off)
    others = lambda d: [r for r in read_metrics(d) if r["split"] != "probe"]  # noqa: E731
    assert [r.get("loss") for r in others(tmp_path / "on")] == [r.get("loss") for r in others(off)]
    weights_on, weights_off = torch.load(tmp_path / "on" / MODEL), torch.load(off / MODEL)
    assert all(torch.equal(weights_on[k], weights_off[k]) for k in weights_off)
    # killed at step 12 and resumed from the checkpoint at step 10: the call at step 10 pairs with step 9's
    monkeypatch.setattr(TensorData, "batch", _failing_batch(TensorData.batch, 12))
    with pytest.raises(RuntimeError):
        run(compose(on), tmp_path / "resumed")
    monkeypatch.undo()
    run(compose(on), tmp_path / "resumed")
    assert read_json(tmp_path / "resumed" / "meta.json")["resumed_from_step"] == 10
    assert probe_records(tmp_path / "resumed") == paired
    assert "median/mean_drift_1" in paired[7] and paired[7]["step"] == 10
