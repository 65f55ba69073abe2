"""Loss surfaces: filter normalization by hand, a quadratic's surface in closed form, BN modes against torch's
own evaluation, resuming a stopped surface, the command line and its errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from _probe_helpers import batch, model

from normexp.checkpoint import save_weights
from normexp.landscape.cli import main
from normexp.landscape.directions import filter_normalized, random_direction
from normexp.landscape.surface import (
    POINTS,
    PointEvaluator,
    Surface,
    SurfaceSpec,
    surface_for_model,
)
from normexp.records import atomic_write_text, read_json


def test_filter_normalization_by_hand():
    w = torch.tensor([[[[1.0, 1.0], [1.0, 1.0]]], [[[3.0, 4.0], [0.0, 0.0]]]])  # filter norms 2 and 5
    d = torch.tensor([[[[1.0, 0.0], [0.0, 0.0]]], [[[0.0, 0.0], [0.0, 2.0]]]])  # filter norms 1 and 2
    expected = torch.tensor([[[[2.0, 0.0], [0.0, 0.0]]], [[[0.0, 0.0], [0.0, 5.0]]]])
    assert torch.allclose(filter_normalized(d, w), expected)


@pytest.mark.parametrize("kind", ["weights", "all"])
def test_random_direction_rows_and_one_dimensional_parameters(kind):
    net = model("mlp", "batch", in_shape=(3,), widths=[4], activation="tanh")
    named = list(net.named_parameters())
    d = random_direction(named, kind, torch.Generator().manual_seed(0))
    for name, p in named:
        if p.dim() == 2:  # each row (a unit's incoming weights) has the norm of the weight's row
            assert torch.allclose(d[name].norm(dim=1), p.detach().norm(dim=1), rtol=1e-5)
        elif kind == "weights":  # Li et al.'s default: biases and BN gains/shifts stay where they are
            assert torch.equal(d[name], torch.zeros_like(p))
        else:  # their other choice: each moves along itself
            assert torch.equal(d[name], p.detach())


class Matrix(torch.nn.Module):
    def __init__(self, w):
        super().__init__()
        self.w = torch.nn.Parameter(w)

    def forward(self, x):
        return self.w


def quadratic(H, g):
    return lambda w, y: 0.5 * w.flatten() @ H @ w.flatten() + g @ w.flatten()


def test_quadratic_surface_is_the_closed_form(tmp_path):
    rng = np.random.default_rng(0)
    A = rng.normal(size=(6, 6))
    H, g, w0 = A @ A.T, rng.normal(size=6), rng.normal(size=(2, 3))
    net = Matrix(torch.tensor(w0))
    loss = quadratic(torch.tensor(H), torch.tensor(g))
    data = (torch.zeros(4, 1), torch.zeros(4))
    spec = SurfaceSpec(dims=2, points=5, span=0.8, subset=4)
    surface = surface_for_model(net, loss, False, data, data, spec, tmp_path, batch_size=4, figures=False)
    d1, d2 = (d["w"].numpy() for d in torch.load(tmp_path / "directions.pt", weights_only=True))
    for d in (d1, d2):  # filter-normalized rows
        assert np.allclose(np.linalg.norm(d, axis=1), np.linalg.norm(w0, axis=1))
    for i, a in enumerate(spec.axis):
        for j, b in enumerate(spec.axis):
            w = (w0 + a * d1 + b * d2).ravel()
            closed = 0.5 * w @ H @ w + g @ w
            assert surface.values["train_loss"][i, j] == pytest.approx(closed, rel=1e-12)
            assert surface.values["test_loss"][i, j] == pytest.approx(closed, rel=1e-12)
    assert np.isnan(surface.values["train_acc"]).all()
    assert torch.equal(net.w.detach(), torch.tensor(w0))  # the model is back at its weights


def bn_net():
    net = model("mlp", "batch", in_shape=(3,), num_classes=3, widths=[5], activation="tanh").double()
    with torch.no_grad():
        net[1].norm.running_mean.copy_(torch.linspace(-0.3, 0.4, 5))
        net[1].norm.running_var.copy_(torch.linspace(0.5, 2.0, 5))
    x, y = batch(24, in_shape=(3,))
    return net, (x.double(), y)


def evaluator(net, data, bn, batch_size=8):
    return PointEvaluator(net, F.cross_entropy, True, data, data, [], bn, batch_size)


def test_bn_eval_and_train_modes_against_torch():
    net, (x, y) = bn_net()
    values = evaluator(net, (x, y), "eval")(0.0, 0.0)
    net.eval()
    out = net(x).detach()
    assert values[0] == pytest.approx(float(F.cross_entropy(out, y)), rel=1e-12)
    assert values[1] == pytest.approx(float((out.argmax(1) == y).double().mean()))
    values = evaluator(net, (x, y), "train", batch_size=8)(0.0, 0.0)
    net.train()
    with torch.no_grad():
        losses = [float(F.cross_entropy(net(x[k:k + 8]), y[k:k + 8])) for k in (0, 8, 16)]
    assert values[0] == pytest.approx(np.mean(losses), rel=1e-12)


def test_bn_recompute_mode_uses_the_subset_statistics():
    net, (x, y) = bn_net()
    values = evaluator(net, (x, y), "recompute", batch_size=24)(0.0, 0.0)
    pre = net[1].layer(x)  # the BN layer's input
    with torch.no_grad():
        net[1].norm.running_mean.copy_(pre.mean(0))
        net[1].norm.running_var.copy_(pre.var(0, unbiased=True))
    net.eval()
    with torch.no_grad():
        assert values[2] == pytest.approx(float(F.cross_entropy(net(x), y)), rel=1e-10)


@pytest.mark.parametrize("bn", ["eval", "train", "recompute"])
def test_stopped_surface_resumes_to_the_same_values(tmp_path, bn):
    net, data = bn_net()
    spec = SurfaceSpec(dims=2, points=4, span=0.5, directions="all", bn=bn, subset=24)
    common = dict(loss_fn=F.cross_entropy, classify=True, train=data, test=data, spec=spec, batch_size=8,
                  figures=False)
    whole = surface_for_model(net, folder=tmp_path / "whole", **common)
    assert surface_for_model(net, folder=tmp_path / "cut", max_points=5, **common) is None
    with open(tmp_path / "cut" / POINTS, "a") as f:
        f.write("1,2,-0.17,0.5,9.0,0.5,9.0,0.1")  # a line torn by the kill (in its last number)
    assert surface_for_model(net, folder=tmp_path / "cut", max_points=3, **common) is None
    resumed = surface_for_model(net, folder=tmp_path / "cut", **common)
    for key, grid in whole.values.items():
        assert np.array_equal(grid, resumed.values[key]), key
    assert len((tmp_path / "cut" / POINTS).read_text().splitlines()) == 1 + 16


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["loky", "threading"])
def test_worker_processes_or_threads_give_the_same_surface(tmp_path, backend):
    """jobs = 2 in processes, and in threads (what joblib gives a Parallel nested in a joblib worker, e.g.
    normexp-reproduce writing an experiment's figures in its warm workers): each task moves its own copy of
    the model to its points, so no thread sees another's weights."""
    from joblib import parallel_config

    net, data = bn_net()
    spec = SurfaceSpec(dims=2, points=5, span=0.5, subset=24)
    common = dict(loss_fn=F.cross_entropy, classify=True, train=data, test=data, spec=spec, batch_size=8,
                  figures=False)
    one = surface_for_model(net, folder=tmp_path / "one", **common)
    with parallel_config(backend=backend):
        two = surface_for_model(net, folder=tmp_path / "two", jobs=2, **common)
    for key, grid in one.values.items():
        assert np.allclose(grid, two.values[key], rtol=1e-12, equal_nan=True), key


def write_run(folder, compose, norm):
    """A run dir as normexp-train leaves it (config.yaml, model.pt) for a tiny untrained MLP."""
    from omegaconf import OmegaConf

    from normexp.data import data_info
    from normexp.models import build_model
    from normexp.norms import NormSpec

    cfg = compose(["model=mlp", f"norm={norm}", "model.widths=[8]", "data=mnist5k"])
    info = data_info(cfg.data)
    torch.manual_seed(0)
    net = build_model(cfg.model, NormSpec.from_config(cfg.norm), info.in_shape, info.num_classes)
    atomic_write_text(folder / "config.yaml", OmegaConf.to_yaml(cfg, resolve=True))
    save_weights(folder, net)
    return folder


@pytest.mark.slow
def test_command_line_surfaces_and_compare(tmp_path, compose, capsys):
    runs = {n: write_run(tmp_path / n, compose, n) for n in ("batch", "none")}
    for run in runs.values():
        assert main([str(run), "--points", "3", "--subset", "64", "--span", "0.5"]) == 0
        folder = run / "landscape" / "surface_2d_eval_weights"
        assert (folder / "contour.png").is_file() and (folder / "surface3d.png").is_file()
        assert Surface.load(folder).values["train_loss"].shape == (3, 3)
    assert main([str(runs["batch"]), "--dims", "1", "--points", "3", "--subset", "64", "--jobs", "1"]) == 0
    assert (runs["batch"] / "landscape" / "surface_1d_eval_weights" / "curve.png").is_file()
    folders = [str(r / "landscape" / "surface_2d_eval_weights") for r in runs.values()]
    assert main(["--compare", *folders, "--labels", "BN", "Standard", "--out", str(tmp_path / "c.png")]) == 0
    assert (tmp_path / "c.png").is_file()
    args = ["--spectrum", "--subset", "32", "--top-k", "2", "--trace-samples", "4", "--slq-vectors", "2",
            "--slq-steps", "5", "--blocks", "model,layers,norm"]
    assert main([str(runs["batch"]), *args]) == 0
    spectrum = read_json(runs["batch"] / "landscape" / "spectrum_train" / "spectrum.json")
    assert set(spectrum["blocks"]) == {"model", "layer 1", "layer 2", "norm"}
    assert len(spectrum["blocks"]["model"]["top"]) == 2
    assert (runs["batch"] / "landscape" / "spectrum_train" / "density.png").is_file()
    # the same folder with another grid is refused, naming the option
    assert main([str(runs["batch"]), "--points", "5", "--subset", "64", "--span", "0.5"]) == 2
    assert "--points=5 is not valid" in capsys.readouterr().err


@pytest.mark.parametrize("args, message", [
    (["--dims", "3"], "--dims=3 is not valid: choose one of: 1, 2"),
    (["--bn", "batch"], "--bn='batch' is not valid: choose one of: eval, recompute, train"),
    (["--directions", "bias"], "--directions='bias' is not valid: choose one of: all, weights"),
    (["--points", "1"], "--points=1 is not valid: must be an integer >= 2"),
    (["--span", "0"], "--span=0.0 is not valid"),
    (["--checkpoint", "checkpoint"], "--checkpoint='checkpoint' is not valid"),
    (["--spectrum", "--bn", "recompute"], "--bn='recompute' is not valid"),
    (["--spectrum", "--tol", "2"], "--tol=2.0 is not valid"),
    (["--spectrum", "--blocks", "model,bn"], "--blocks='bn' is not valid"),
    (["--points", "x"], "argument --points: invalid int value: 'x'"),
])
def test_bad_options_give_one_line(tmp_path, compose, capsys, args, message):
    run = write_run(tmp_path, compose, "batch")
    try:
        status = main([str(run), *args])
    except SystemExit as stop:  # argparse's own errors (types)
        status = stop.code
    assert status == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1, err
    assert not (run / "landscape").exists() or args[0] == "--spectrum"


def test_not_a_run_dir(tmp_path, capsys):
    assert main([str(tmp_path)]) == 2
    assert "RUN_DIR=" in capsys.readouterr().err
