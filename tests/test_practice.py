"""experiments/practice hooks on hand-built run tables: SD-1's check, and the lr map's stages hook driving
normexp.lrmap's search through the experiment's own run table."""

from __future__ import annotations

import math
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest

from normexp.claims import FAIL, PASS, Runs
from normexp.lrmap import LrMap, MapCell
from normexp.reproduce.spec import Experiment
from tests.test_lrmap import oracle, search

PRACTICE = Path(__file__).resolve().parents[1] / "experiments" / "practice"
SCALES = [0.1, 0.3, 1.0, 3.0, 10.0]
SCALE_NAMES = ["0.1", "0.3", "1", "3", "10"]


def context(spec: str, table: pd.DataFrame, seeds=(0, 1), profile="quick"):
    exp = Experiment.load(PRACTICE / f"{spec}.yaml")
    ctx = SimpleNamespace(runs=Runs(table, pd.DataFrame()), params=exp.params, seeds=list(seeds),
                          profile=profile, experiment=exp)
    return exp, ctx


def sd1_table(accs: dict[str, list[list[float | None]]]) -> pd.DataFrame:
    """accs[kind][seed][scale index]; None is a diverged run."""
    rows = []
    for kind, per_seed in accs.items():
        for seed, values in enumerate(per_seed):
            for name, acc in zip(SCALE_NAMES, values, strict=True):
                rows.append({"cell": f"{kind}_scale{name}", "seed": seed, "test_acc": acc,
                             "status": "diverged" if acc is None else "completed"})
    return pd.DataFrame(rows)


NONE = [[None, 0.5, 0.8, 0.7, 0.3], [0.2, 0.6, 0.8, 0.6, 0.4]]  # spreads 0.8 - 0.1 (chance) = 0.7, 0.6


@pytest.mark.parametrize("bn, status, bn_mean", [
    ([[0.78, 0.80, 0.82, 0.81, 0.79], [0.80, 0.80, 0.83, 0.80, 0.77]], PASS, 0.05),  # 0.05 <= 0.5 x 0.65
    ([[0.40, 0.60, 0.80, 0.70, 0.60], [0.41, 0.60, 0.83, 0.80, 0.70]], FAIL, 0.41),  # 0.41 > 0.325
])
def test_sd1_compares_the_spread_across_scales_with_half_of_that_without_bn(bn, status, bn_mean):
    exp, ctx = context("sd1_init_scale", sd1_table({"none": NONE, "bn": bn}))
    assert exp.params["scales"] == SCALES
    verdict = exp.hook("check_sd1")(ctx)
    assert verdict.status == status
    measured = verdict.measured
    assert measured["BN spread across scales"]["mean"] == pytest.approx(bn_mean)
    assert measured["no norm spread across scales"]["values"] == pytest.approx([0.7, 0.6])


def test_sd1_is_inconclusive_while_a_run_is_missing():
    table = sd1_table({"none": NONE, "bn": [[0.8] * 5, [0.8] * 5]})
    exp, ctx = context("sd1_init_scale", table[table["cell"] != "bn_scale3"])
    assert exp.hook("check_sd1")(ctx).status == "inconclusive"


def test_the_stages_hook_drives_the_lr_map_to_the_edges_of_the_search_itself():
    edges = {"none": 0.07, "batch": 1.9, "group": 0.5, "layer": 0.011}
    exp, ctx = context("lr_tolerance_map", pd.DataFrame(), seeds=(0,), profile="full")
    plan = exp.hook("plan_map")
    table = pd.DataFrame(columns=["cell", "seed", "status", "test_acc", "train_loss"])
    rounds = 0
    while True:  # what normexp-reproduce does: plan, run what is new, plan again until nothing is new
        ctx.runs = Runs(table, pd.DataFrame())
        new = [c for c in plan(ctx) if c["name"] not in set(table["cell"])]
        if not new:
            break
        rounds += 1
        rows = []
        for c in new:
            keys = dict(o.split("=", 1) for o in c["overrides"])
            point = oracle(edges[keys["norm"]])[0](MapCell(()), [float(keys["optim.lr"])])
            rows.append({"cell": c["name"], "seed": 0, **point.iloc[0][["status", "test_acc", "train_loss"]]})
        table = pd.concat([table, pd.DataFrame(rows)], ignore_index=True)
    ctx.runs = Runs(table, pd.DataFrame())
    got = exp.hook("map_table")(ctx).set_index("cell")
    lrmap = exp.hook("lr_map")(ctx)
    grid = lrmap.grid.values
    for cell in lrmap.cells:
        norm = dict(cell.axes)["norm"]
        direct, _ = search(LrMap([cell], [0], lrmap.grid), oracle(edges[norm])[0])
        assert got.loc[cell.name, "largest_stable_lr"] == direct.loc[0, "largest_stable_lr"]
        assert got.loc[cell.name, "runs"] == direct.loc[0, "runs"]
        assert got.loc[cell.name, "largest_stable_lr"] == max(v for v in grid if v < edges[norm])  # by hand
    assert rounds > 2  # the coarse scan, then bisection rounds
    ratios = exp.hook("tolerance_ratios")(ctx).set_index("data.batch_size")
    below = {n: max(v for v in grid if v < e) for n, e in edges.items()}
    for batch in (8, 64):
        assert ratios.loc[str(batch), "batch/none"] == pytest.approx(below["batch"] / below["none"])
        assert ratios.loc[str(batch), "layer/none"] == pytest.approx(below["layer"] / below["none"])
    assert not math.isnan(ratios.loc["8", "group/none"])
