"""normexp-lrmap: the search on a synthetic oracle (no training), resuming, the range test, the CLI."""

from __future__ import annotations

import copy
import math

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
