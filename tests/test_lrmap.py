"""normexp-lrmap: the search on a synthetic oracle (no training), resuming, the range test, the CLI."""

from __future__ import annotations

import copy
import math
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch

from normexp import lrmap
from normexp.lrmap import LrGrid, LrMap, MapCell


def oracle(edge: float, seeds=(0,), low_acc_band: float = 1.0):
    """trains iff lr < edge; between edge and ``low_acc_band`` x edge a run completes at a poor accuracy
    (below the fraction), above it diverges. Counts the distinct (lr, seed) points it was asked for."""
    asked = set()

    def points_of(cell, lrs):
        rows = []
        for lr in lrs:
            for seed in seeds:
                asked.add((cell.name, lr, seed))
                if lr < edge:
                    row = {"status": "completed", "test_acc": 0.9, "train_loss": 1 / lr}
                elif lr < low_acc_band * edge:
                    row = {"status": "completed", "test_acc": 0.2, "train_loss": 1e4}
                else:
                    row = {"status": "diverged", "test_acc": None, "train_loss": None}
                rows.append({"cell": cell.name, "lr": lr, "seed": seed, **row})
        return pd.DataFrame(rows, columns=["cell", "lr", "seed", "status", "test_acc", "train_loss"])

    return points_of, asked


def search(lrm, points_of):
    while lrm.next_round(points_of):
        pass  # the oracle "runs" a point when it is asked for it
    return lrm.summarize(points_of)


@pytest.mark.parametrize("edge", [0.0013, 0.021, 0.5, 3.3, 9.0])
@pytest.mark.parametrize("band", [1.0, 3.0])
def test_search_finds_the_edge_within_resolution_with_few_runs(edge, band):
    grid = LrGrid(1e-3, 10.0, 1.25, 2)
    cell = MapCell((("norm", "batch"),))
    points_of, asked = oracle(edge, low_acc_band=band)
    table, points = search(LrMap([cell], [0], grid), points_of)
    found = table.loc[0, "largest_stable_lr"]
    assert found < edge <= found * 1.25 * (1 + 1e-5)  # the largest grid lr below the edge
    dense = len(grid.values)
    assert table.loc[0, "dense_runs"] == dense == 42  # 1e-3 * 1.25**41 = 9.4
    assert table.loc[0, "runs"] == len(asked) <= 0.4 * dense
    # the dense grid agrees
    dense_table, _ = search(LrMap([cell], [0], grid, dense=True), oracle(edge, low_acc_band=band)[0])
    assert dense_table.loc[0, "largest_stable_lr"] == found and dense_table.loc[0, "runs"] == dense
    assert table.loc[0, "best_lr"] == found  # the oracle's loss 1/lr is lowest at the largest lr that trains


def test_edges_outside_the_grid_are_reported_as_such():
    grid = LrGrid(1e-2, 1.0, 1.25, 2)
    cell = MapCell(())
    below, _ = search(LrMap([cell], [0], grid), oracle(1e-3)[0])
    assert math.isnan(below.loc[0, "largest_stable_lr"]) and below.loc[0, "edge"] == "below lr_min"
    above, _ = search(LrMap([cell], [0], grid), oracle(100.0)[0])
    assert above.loc[0, "largest_stable_lr"] == grid.values[-1] and above.loc[0, "edge"].startswith(">=")


def test_a_diverged_seed_makes_the_lr_not_train():
    cell = MapCell((("norm", "none"),))
    pts = pd.DataFrame({"lr": [0.1, 0.1, 0.2, 0.2], "seed": [0, 1, 0, 1],
                        "status": ["completed", "completed", "completed", "diverged"],
                        "test_acc": [0.9, 0.8, 0.95, None], "train_loss": [0.3, 0.4, 0.1, None]})
    agg = lrmap.per_lr(pts)
    assert agg.loc[0.1, "score"] == pytest.approx(0.85) and agg.loc[0.2, "diverged"] == 1
    assert lrmap.trains(agg, 0.5).to_dict() == {0.1: True, 0.2: False}
    assert cell.name == "norm=none"


def test_grid_and_overrides_errors_are_one_line():
    with pytest.raises(lrmap.ConfigError, match=r"--resolution=1.0 is not valid"):
        LrGrid(resolution=1.0)
    with pytest.raises(lrmap.ConfigError, match=r"optim.lr='0.1,1' is not valid: set by normexp-lrmap"):
        lrmap.parse_overrides(["optim.lr=0.1,1"])
    axes, fixed = lrmap.parse_overrides(["norm=none,batch", "data.batch_size=4,32", "model=mlp"])
    assert axes == {"norm": ["none", "batch"], "data.batch_size": ["4", "32"]} and fixed == ["model=mlp"]
    assert [c.name for c in lrmap.cells_from_axes(axes)] == [
        "norm=none,data.batch_size=4", "norm=none,data.batch_size=32", "norm=batch,data.batch_size=4",
        "norm=batch,data.batch_size=32"]


# ---------------------------------------------------------------- the range test

def least_squares(seed=0, n=256, d=10):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g) * torch.linspace(0.2, 3.0, d)
    y = x @ torch.randn(d, 1, generator=g)
    top_eig = torch.linalg.eigvalsh(x.T @ x / n).max().item()  # Hessian of 0.5 * mean((xw - y)^2)
    return x, y, top_eig


def half_mse(out, y):
    return 0.5 * (out - y).pow(2).mean()


@pytest.mark.parametrize("rule", ["steepest", "min/10"])
@pytest.mark.parametrize("steps", [100, 300])
def test_range_test_suggestion_is_in_the_stable_range_of_least_squares(rule, steps):
    """Full-batch GD on least squares diverges above 2/L (L: the Hessian's top eigenvalue); the suggestion
    must be below that and not uselessly small."""
    x, y, top_eig = least_squares()
    model = torch.nn.Linear(x.shape[1], 1, bias=False)
    torch.nn.init.zeros_(model.weight)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    result = lrmap.lr_range_test(model, optimizer, half_mse, [(x, y)], start=1e-4, end=10.0, steps=steps,
                                 rule=rule)
    assert 0.02 / top_eig < result.suggestion < 2 / top_eig
    assert result.lrs[-1] > 2 / top_eig  # it went past the edge and stopped there (loss blew up)
    assert len(result.lrs) < steps
    assert result.lrs[0] == pytest.approx(1e-4) and result.lrs[1] / result.lrs[0] == pytest.approx(
        (10.0 / 1e-4) ** (1 / (steps - 1)))


def test_range_test_restores_model_optimizer_and_rng_bit_for_bit():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.BatchNorm1d(8), torch.nn.ReLU(),
                                torch.nn.Dropout(0.2), torch.nn.Linear(8, 3))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    batches = [(torch.randn(16, 6), torch.randint(0, 3, (16,))) for _ in range(3)]
    for x, y in batches:  # momentum buffers and BN running stats exist before the test
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()
    model.eval()
    model_before = copy.deepcopy(model.state_dict())
    optim_before = copy.deepcopy(optimizer.state_dict())
    rng_before = torch.get_rng_state()
    lrmap.lr_range_test(model, optimizer, torch.nn.functional.cross_entropy, batches, 1e-3, 10.0, steps=30)
    assert not model.training and torch.equal(torch.get_rng_state(), rng_before)
    after = model.state_dict()
    assert after.keys() == model_before.keys()
    assert all(torch.equal(after[k], model_before[k]) for k in after)
    optim_after = optimizer.state_dict()
    assert optim_after["param_groups"] == optim_before["param_groups"]  # lr back to 0.05
    for k, state in optim_before["state"].items():
        assert torch.equal(optim_after["state"][k]["momentum_buffer"], state["momentum_buffer"])


# ---------------------------------------------------------------- real runs: resuming, the command lines

TINY = ["model=mlp", "model.widths=[16]", "data=mnist5k", "profile=smoke", "train.steps=10",
        "train.eval_every=0", "device=cpu", "logger=local"]
TINY_GRID = LrGrid(0.01, 2.56, 2.0, 1.0)  # 0.01 x 2**k, k = 0..8; coarse 0, 3, 6, 8


@pytest.fixture(scope="module")
def tiny_map(tmp_path_factory):
    out = tmp_path_factory.mktemp("map")
    cells = lrmap.cells_from_axes({"norm": ["none", "batch"]})
    first = lrmap.MapRun(LrMap(cells, [0], TINY_GRID), TINY, out, jobs=1, log=lambda s: None)
    table, points = first.run()
    return out, cells, first, table, points


@pytest.mark.slow
def test_a_map_resumes_from_its_run_dirs(tiny_map):
    out, cells, first, table, points = tiny_map
    assert first.ran == table["runs"].sum() == len(points) >= 2 * len(TINY_GRID.coarse)
    for _, p in points.iterrows():  # ordinary run dirs at <out>/<cell>/lr<lr>/seed<k>
        assert Path(p["run_dir"]) == out / p["cell"] / f"lr{p['lr']:g}" / "seed0"
        assert (Path(p["run_dir"]) / "summary.json").exists()
        assert f"optim.lr={p['lr']:g}" in (Path(p["run_dir"]) / "meta.json").read_text()
    again = lrmap.MapRun(LrMap(cells, [0], TINY_GRID), TINY, out, jobs=1, log=lambda s: None)
    table2, _ = again.run()
    assert again.ran == 0
    pd.testing.assert_frame_equal(table, table2)
    from normexp.results import load_runs

    assert len(load_runs(out)) == len(points)  # normexp-results reads them like any sweep


@pytest.mark.slow
def test_normexp_plot_writes_png_and_pdf_with_the_command(tiny_map, tmp_path):
    from PIL import Image

    from normexp.plots import plot_main

    out = tiny_map[0]
    paths = plot_main([str(out), "--x", "optim.lr", "--hue", "norm", "--y", "train_loss", "--out",
                       str(tmp_path)])
    names = sorted(p.name for p in paths)
    assert names == ["train_loss_curves_by_optim.lr.pdf", "train_loss_curves_by_optim.lr.png",
                     "train_loss_vs_optim.lr.pdf", "train_loss_vs_optim.lr.png"]
    command = f"normexp-plot {out} --x optim.lr --hue norm --y train_loss --out {tmp_path}"
    assert Image.open(tmp_path / "train_loss_vs_optim.lr.png").text["Command"] == command
    assert f"/Subject ({command})".encode() in (tmp_path / "train_loss_vs_optim.lr.pdf").read_bytes()
    from normexp.plots import default_axes
    from normexp.results import load_runs

    assert default_axes(load_runs(out), None, None) == ("optim.lr", "norm")  # what the map swept


@pytest.mark.parametrize("main, args, needle", [
    (lrmap.main, ["norm=none,bogus", "model=mlp"], "norm='bogus' is not valid: choose one of"),
    (lrmap.main, ["norm=none,batch", "--loss", "acc"], "--loss='acc' is not valid: choose one of"),
    (lrmap.main, ["optim.lr=0.1,1"], "optim.lr='0.1,1' is not valid: set by normexp-lrmap"),
    (lrmap.main, ["--resolution", "0.9"], "--resolution=0.9 is not valid: must be a factor above 1"),
    (lrmap.main, ["--seeds", "0,a"], "--seeds='0,a' is not valid: comma-separated integers"),
    ("plot", ["{map}", "--x", "nrm"], "--x='nrm' is not valid: not a column of the run table"),
    ("plot", ["{map}", "--hue", "nrm"], "--hue='nrm' is not valid: not a column of the run table"),
    ("plot", ["{map}", "--y", "acc"], "--y='acc' is not valid: choose one of"),
])
@pytest.mark.slow
def test_bad_input_is_a_one_line_error(tiny_map, main, args, needle):
    from normexp.plots import plot_main

    with pytest.raises(lrmap.ConfigError) as error:
        (plot_main if main == "plot" else main)([a.replace("{map}", str(tiny_map[0])) for a in args])
    assert needle in str(error.value) and "\n" not in str(error.value)


@pytest.mark.slow
def test_the_commands_exit_2_with_one_line(tiny_map, capsys):
    from normexp.plots import cli as plot_cli
    from normexp.results import cli as results_cli

    assert results_cli([str(tiny_map[0]), "--by", "norm,nrm"]) == 2
    assert capsys.readouterr().err.startswith("normexp-results: error: --by='nrm' is not valid: not a column")
    with pytest.raises(SystemExit) as exit_:
        plot_cli([str(tiny_map[0]), "--x", "nrm"])
    assert exit_.value.code == 2 and capsys.readouterr().err.count("\n") == 1
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run([str(Path(sys.executable).parent / "normexp-lrmap"), "norm=none,batch", "--loss",
                             "acc"], capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 2 and result.stderr == (
        "normexp-lrmap: error: --loss='acc' is not valid: choose one of: test_loss, train_loss\n")


def test_by_aggregation_matches_a_hand_computed_table():
    from normexp.results import aggregate

    table = pd.DataFrame({
        "norm": ["batch", "batch", "batch", "group", "group", "group"],
        "data.batch_size": [4, 4, 32, 4, 4, 4],
        "seed": [0, 1, 0, 0, 1, 2],
        "status": ["completed", "completed", "diverged", "completed", "interrupted", "completed"],
        "test_acc": [0.8, 0.9, None, 0.5, 0.7, 0.6],
        "train_loss": [0.4, 0.2, None, 1.0, 0.1, 1.5]})
    got = aggregate(table, ["norm", "data.batch_size"], ["test_acc", "train_loss"])
    assert got[["norm", "data.batch_size", "runs", "completed", "diverged"]].values.tolist() == [
        ["batch", 4, 2, 2, 0], ["batch", 32, 1, 0, 1], ["group", 4, 3, 2, 0]]
    # means and spreads over completed runs only (the interrupted run's numbers are not used)
    assert got["test_acc_mean"].tolist()[0::2] == pytest.approx([0.85, 0.55])
    assert got["test_acc_spread"].tolist()[0::2] == pytest.approx([0.1, 0.1])
    assert got["train_loss_spread"].tolist()[0::2] == pytest.approx([0.2, 0.5])
    assert got["train_loss_mean"].isna().tolist() == [False, True, False]
    # the same as pandas' groupby over the completed runs
    done = table[table["status"] == "completed"].groupby(["norm", "data.batch_size"])["test_acc"]
    expected = (done.max() - done.min()).reset_index(name="spread")
    merged = got.merge(expected, on=["norm", "data.batch_size"])
    assert merged["test_acc_spread"].tolist() == pytest.approx(merged["spread"].tolist())


def test_search_vs_dense_from_the_same_points():
    cells = [MapCell((("norm", n),)) for n in ("none", "batch")]
    edges = {"norm=none": 0.07, "norm=batch": 1.9}
    grid = LrGrid(1e-3, 10.0, 1.25, 2)

    def points_of(cell, lrs):
        return oracle(edges[cell.name])[0](cell, lrs)

    check = lrmap.search_vs_dense(LrMap(cells, [0], grid), points_of)
    assert check["dense_runs"].tolist() == [42, 42] and (check["run_fraction"] <= 0.4).all()
    assert check["agree"].all() and (check["edge_steps_apart"] == 0).all()
    assert check["dense_edge"].tolist() == [max(v for v in grid.values if v < e) for e in edges.values()]
