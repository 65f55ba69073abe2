"""Ioffe & Szegedy 2015 (experiments/ioffe2015): the checks IS-1, IS-2 and IS-4 on hand-built run tables and
curves, each to pass, fail and inconclusive, with the numbers they compare worked out by hand below (the rules
are in docs/claims.md)."""

from __future__ import annotations

import pandas as pd
import pytest

from normexp.claims import FAIL, INCONCLUSIVE, PASS, Runs
from normexp.reproduce.plan import Context
from normexp.reproduce.spec import discover

COLUMNS = ["cell", "seed", "status", "test_acc", "steps"]
STEPS = 1000  # every run's planned steps: IS-1 reads accuracy at 20% (step 200) and compares with half (500)
EVAL_STEPS = [0, 200, 400, 600, 800, 1000]  # the test curve's records


def ioffe(name: str):
    return next(e for e in discover() if e.id == f"ioffe2015/{name}")


def context(name: str, rows: list[tuple], curves: list[dict] | None = None) -> Context:
    table = pd.DataFrame(rows, columns=COLUMNS)
    curves = pd.DataFrame(curves) if curves else pd.DataFrame(columns=["cell", "seed", "step", "split"])
    return Context(ioffe(name), "quick", Runs(table, curves))


def check(name: str, ref: str, rows, curves=None):
    return ioffe(name).hook(ref)(context(name, rows, curves))


def run_row(cell: str, seed: int, acc) -> tuple:
    """A finished run: completed with final test accuracy ``acc``, or diverged when ``acc`` is 'div'."""
    return (cell, seed, "diverged" if acc == "div" else "completed", None if acc == "div" else acc, STEPS)


# ---------------------------------------------------------------- IS-1

def is1(accs: dict[str, list[list[float]]]):
    """Per cell and seed, the test accuracy logged at EVAL_STEPS; the last one is the run's final accuracy."""
    rows, curves = [], []
    for cell, per_seed in accs.items():
        for seed, values in enumerate(per_seed):
            rows.append(run_row(cell, seed, values[-1]))
            curves += [{"cell": cell, "seed": seed, "step": s, "split": "test", "acc": a}
                       for s, a in zip(EVAL_STEPS, values, strict=True)]
    return check("fig1_mnist", "check_is1", rows, curves)


# no-BN: 0.50 and 0.52 at step 200 (mean 0.51, spread 0.02), final 0.90 and 0.92 (target: mean 0.91)
NOBN = [[0.1, 0.50, 0.70, 0.80, 0.85, 0.90], [0.1, 0.52, 0.72, 0.81, 0.86, 0.92]]


def test_is1_passes_when_bn_leads_at_20_percent_and_reaches_the_target_by_half_the_steps():
    # BN at step 200: 0.80, 0.82 (mean 0.81) >= 0.51 by 0.30 > spread 0.02; reaches 0.91 at step 400 in both
    # seeds (0.92, 0.93 there): 400 <= 500 by 100, spread 0
    bn = [[0.1, 0.80, 0.92, 0.95, 0.96, 0.97], [0.1, 0.82, 0.93, 0.95, 0.96, 0.97]]
    v = is1({"nobn": NOBN, "bn": bn})
    assert v.status == PASS, v.outcomes
    assert v.measured["BN acc@200"]["mean"] == pytest.approx(0.81)
    assert v.measured["no-BN acc@200"]["mean"] == pytest.approx(0.51)
    assert v.measured["no-BN acc@200"]["spread"] == pytest.approx(0.02)
    assert v.measured["no-BN final acc"]["mean"] == pytest.approx(0.91)
    assert v.measured["BN steps to 0.9100"]["values"] == [400.0, 400.0]


def test_is1_fails_when_bn_is_behind_at_20_percent_or_slow_to_the_target():
    # BN at step 200: 0.40, 0.42 (mean 0.41) < 0.51 by 0.10 > spread 0.02; it still reaches 0.91 at 400
    behind = [[0.1, 0.40, 0.92, 0.95, 0.96, 0.97], [0.1, 0.42, 0.93, 0.95, 0.96, 0.97]]
    v = is1({"nobn": NOBN, "bn": behind})
    assert v.status == FAIL and v.outcomes[0].startswith("[fail]") and v.outcomes[1].startswith("[pass]")
    assert v.measured["BN acc@200"]["mean"] == pytest.approx(0.41)
    # BN leads at step 200 but first reaches 0.91 at step 800 in both seeds: 800 > 500
    slow = [[0.1, 0.80, 0.85, 0.88, 0.95, 0.97], [0.1, 0.82, 0.86, 0.89, 0.94, 0.97]]
    v = is1({"nobn": NOBN, "bn": slow})
    assert v.status == FAIL and v.outcomes[1].startswith("[fail]")
    assert v.measured["BN steps to 0.9100"]["mean"] == pytest.approx(800)
    # BN never reaches 0.91 in any seed (it ends at 0.90, 0.89)
    never = [[0.1, 0.80, 0.85, 0.88, 0.89, 0.90], [0.1, 0.82, 0.86, 0.87, 0.88, 0.89]]
    v = is1({"nobn": NOBN, "bn": never})
    assert v.status == FAIL and "never reached" in v.outcomes[1]


def test_is1_is_inconclusive_when_the_seeds_disagree_by_more_than_the_difference():
    # BN at step 200: 0.45, 0.60 (mean 0.525) vs 0.51: difference 0.015 < spread 0.15; the target holds (400)
    spread_out = [[0.1, 0.45, 0.92, 0.95, 0.96, 0.97], [0.1, 0.60, 0.93, 0.95, 0.96, 0.97]]
    v = is1({"nobn": NOBN, "bn": spread_out})
    assert v.status == INCONCLUSIVE and v.outcomes[0].startswith("[inconclusive]")
    assert v.measured["BN acc@200"]["mean"] == pytest.approx(0.525)
    assert v.measured["BN acc@200"]["spread"] == pytest.approx(0.15)
    # BN reaches 0.91 at step 400 in one seed and 600 in the other: mean 500 <= 500 by 0, spread 200
    split = [[0.1, 0.80, 0.92, 0.95, 0.96, 0.97], [0.1, 0.82, 0.90, 0.95, 0.96, 0.97]]
    v = is1({"nobn": NOBN, "bn": split})
    assert v.status == INCONCLUSIVE and v.outcomes[1].startswith("[inconclusive]")
    assert v.measured["BN steps to 0.9100"]["mean"] == pytest.approx(500)
    # one BN seed never reaches 0.91 (it ends at 0.90)
    v = is1({"nobn": NOBN, "bn": [split[0], [0.1, 0.82, 0.86, 0.87, 0.88, 0.90]]})
    assert v.status == INCONCLUSIVE and "never reached" in v.outcomes[1]


def test_is1_with_one_seed_per_cell_is_inconclusive():
    # the tables of the passing test, seed 0 only: the same signs, and no spread to judge them by
    bn = [[0.1, 0.80, 0.92, 0.95, 0.96, 0.97]]
    v = is1({"nobn": NOBN[:1], "bn": bn})
    assert v.status == INCONCLUSIVE
    assert all(o.startswith("[inconclusive]") and o.endswith(": one seed") for o in v.outcomes), v.outcomes


# ---------------------------------------------------------------- IS-2

STILL = ([-1, -1, -1], [0, 0, 0], [1, 1, 1])  # p15, p50, p85: movement 0, final band 2 -> drift 0
WOBBLE = ([-1, -1.2, -1], [0, 0, 0], [1, 1, 1])  # movement 0.2 + 0.2 = 0.4, band 2 -> drift 0.2
WANDER = ([0, 1, 2], [1, 2, 3], [2, 3, 5])  # movement 2 + 2 + 3 = 7, band 5 - 2 = 3 -> drift 7/3
CLIMB = ([0, 1, 2], [1, 2, 3], [2, 3, 4])  # movement 2 + 2 + 2 = 6, band 4 - 2 = 2 -> drift 3


def is2(percentiles: dict[str, list[tuple]]):
    """Per cell and seed, the 15/50/85 percentile curves of one probed unit at steps 0, 50, 100."""
    rows, curves = [], []
    for cell, per_seed in percentiles.items():
        for seed, (p15, p50, p85) in enumerate(per_seed):
            rows.append(run_row(cell, seed, 0.9))
            curves += [{"cell": cell, "seed": seed, "step": step, "split": "probe", "probe": "activations",
                        "3/u0/p15": p15[i], "3/u0/p50": p50[i], "3/u0/p85": p85[i]}
                       for i, step in enumerate((0, 50, 100))]
    return check("fig1_mnist", "check_is2", rows, curves)


def test_is2_passes_when_bn_drifts_less():
    # BN drift 0 and 0.2 (mean 0.1, spread 0.2); no-BN 7/3 and 3 (mean 8/3, spread 2/3): 0.1 < 8/3 by 2.57
    v = is2({"bn": [STILL, WOBBLE], "nobn": [WANDER, CLIMB]})
    assert v.status == PASS, v.outcomes
    assert v.measured["BN drift"]["values"] == pytest.approx([0.0, 0.2])
    assert v.measured["BN drift"]["mean"] == pytest.approx(0.1)
    assert v.measured["no-BN drift"]["mean"] == pytest.approx(8 / 3)
    assert v.measured["no-BN drift"]["spread"] == pytest.approx(2 / 3)


def test_is2_fails_when_bn_drifts_more():
    # the cells swapped: BN 8/3 is not below no-BN 0.1 (difference 2.57 > spread 2/3)
    v = is2({"bn": [WANDER, CLIMB], "nobn": [STILL, WOBBLE]})
    assert v.status == FAIL, v.outcomes
    assert v.measured["BN drift"]["mean"] == pytest.approx(8 / 3)
    assert v.measured["no-BN drift"]["mean"] == pytest.approx(0.1)


def test_is2_is_inconclusive_when_no_bn_seeds_disagree():
    # no-BN drift 0 and 3 (mean 1.5, spread 3); BN 0.1: difference 1.4 < spread 3
    v = is2({"bn": [STILL, WOBBLE], "nobn": [STILL, CLIMB]})
    assert v.status == INCONCLUSIVE and "within the seed spread" in v.outcomes[0]
    assert v.measured["no-BN drift"]["mean"] == pytest.approx(1.5)
    assert v.measured["no-BN drift"]["spread"] == pytest.approx(3)
    # one seed per cell: 0 < 3 would hold, but there is no spread to judge it by
    v = is2({"bn": [STILL], "nobn": [CLIMB]})
    assert v.status == INCONCLUSIVE and v.outcomes[0].endswith(": one seed")


def test_is2_net_displacement_table_beside_the_drift():
    # STEPS = 1000, so the net displacement starts at the first record at or after step 100: the last one.
    # Rebuild WANDER at steps 0, 50, 100, 1000: p15 0, 1, 2, 2.5; p50 1, 2, 3, 3; p85 2, 3, 5, 6.
    # Final band 6 - 2.5 = 3.5; net from step 100: p15 0.5, p50 0, p85 1 (over 3.5); drift: movement
    # 2.5 + 2 + 4 = 8.5 over 3.5
    steps, p15, p50, p85 = (0, 50, 100, 1000), (0, 1, 2, 2.5), (1, 2, 3, 3), (2, 3, 5, 6)
    curves = [{"cell": "nobn", "seed": 0, "step": s, "split": "probe", "probe": "activations",
               "3/u0/p15": p15[i], "3/u0/p50": p50[i], "3/u0/p85": p85[i]} for i, s in enumerate(steps)]
    table = ioffe("fig1_mnist").hook("net_displacement_table")(
        context("fig1_mnist", [run_row("nobn", 0, 0.9), run_row("bn", 0, 0.9)], curves))
    assert list(table["unit"]) == ["3/u0"]  # the BN run has no probe records: no row
    row = table.iloc[0]
    assert row["drift"] == pytest.approx(8.5 / 3.5)
    assert [row["net_p15"], row["net_p50"], row["net_p85"]] == pytest.approx([0.5 / 3.5, 0, 1 / 3.5])
    assert row["net_mean"] == pytest.approx(1.5 / 3.5 / 3)


# ---------------------------------------------------------------- IS-4

def is4(sigmoid_bn_x5: list, sigmoid_nobn_x1: list):
    """The eta0 search (eta0 = 0.03: the best mean is 0.855 at 0.03, half of it 0.4275; 0.1 and up diverge)
    and the two sigmoid cells with these final test accuracies per seed ('div': diverged)."""
    search = {0.003: [0.5, 0.5], 0.01: [0.8, 0.8], 0.03: [0.85, 0.86], 0.1: ["div", "div"],
              0.3: ["div", "div"], 1.0: ["div", "div"]}
    rows = [run_row(f"relu_nobn_lr{lr:g}", s, a) for lr, accs in search.items() for s, a in enumerate(accs)]
    rows += [run_row("sigmoid_bn_x5", s, a) for s, a in enumerate(sigmoid_bn_x5)]
    rows += [run_row("sigmoid_nobn_x1", s, a) for s, a in enumerate(sigmoid_nobn_x1)]
    return check("lr_tolerance", "check_is4", rows)


BN5, NOBN1 = "sigmoid BN@5eta0", "sigmoid no-BN@eta0=0.03"


def test_is4_passes_when_bn_at_5_eta0_is_20_points_above():
    # BN x5 0.80, 0.82 (mean 0.81) >= no-BN 0.10, 0.11 (mean 0.105) + 0.20 = 0.305: by 0.505 > spread 0.02
    v = is4([0.80, 0.82], [0.10, 0.11])
    assert v.status == PASS, v.outcomes
    assert v.measured["eta0"] == pytest.approx(0.03)
    assert v.measured[BN5]["mean"] == pytest.approx(0.81)
    assert v.measured[NOBN1]["mean"] == pytest.approx(0.105)
    # no-BN diverged, BN trained: a diverged run ranks below
    assert is4([0.80, 0.82], ["div", "div"]).status == PASS


def test_is4_fails_when_bn_at_5_eta0_is_less_than_20_points_above():
    # BN x5 0.25, 0.26 (mean 0.255) < 0.305: 0.05 short, more than the spread 0.01
    v = is4([0.25, 0.26], [0.10, 0.11])
    assert v.status == FAIL, v.outcomes
    assert v.measured[BN5]["mean"] == pytest.approx(0.255)
    # BN x5 diverged while no-BN trained
    v = is4(["div", "div"], [0.10, 0.11])
    assert v.status == FAIL and v.measured[BN5]["state"] == "diverged"


def test_is4_is_inconclusive_on_spread_mixed_seeds_missing_runs_or_one_seed():
    # BN x5 0.20, 0.45 (mean 0.325) vs 0.305: difference 0.02 < spread 0.25
    v = is4([0.20, 0.45], [0.10, 0.11])
    assert v.status == INCONCLUSIVE and "within the seed spread" in v.outcomes[0]
    assert v.measured[BN5]["mean"] == pytest.approx(0.325)
    assert v.measured[BN5]["spread"] == pytest.approx(0.25)
    assert is4([0.80, "div"], [0.10, 0.11]).status == INCONCLUSIVE  # BN's seeds disagree about divergence
    v = is4([0.80, 0.82], [])  # no-BN's sigmoid runs absent
    assert v.status == INCONCLUSIVE and "runs are missing" in v.outcomes[0]
    v = is4([0.80], [0.10])  # one seed each: 0.80 >= 0.30 would hold
    assert v.status == INCONCLUSIVE and v.outcomes[0].endswith(": one seed")
