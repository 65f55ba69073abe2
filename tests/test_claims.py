"""normexp.claims: the verdict rule on hand-built cells and run tables, and the Ioffe checks' own arithmetic
(drift, eta0, IS-3) on hand-built runs whose answers are worked out by hand below."""

import math

import pandas as pd
import pytest

from normexp.claims import (
    FAIL,
    INCONCLUSIVE,
    PASS,
    Cell,
    Outcome,
    Pending,
    Runs,
    Verdict,
    combine,
    compare,
    percentile_drift,
    percentile_net_displacement,
    steps_to,
    value_at,
)
from normexp.reproduce.plan import Context
from normexp.reproduce.spec import discover


def test_cell_mean_spread_and_state():
    c = Cell("a", (0.9, 0.8, 0.85))
    assert c.mean == pytest.approx(0.85) and c.spread == pytest.approx(0.1) and c.state == "trained"
    assert Cell("a", (), diverged=2).state == "diverged"
    assert Cell("a", (0.5,), diverged=1).state == "mixed"
    assert Cell("a", (0.5,), missing=1).state == "missing"
    assert Cell("a").state == "missing"
    assert math.isnan(Cell("a", (), diverged=1).mean)


def test_compare_pass_and_fail_when_difference_exceeds_spread():
    bn, nobn = Cell("bn", (0.90, 0.92)), Cell("nobn", (0.80, 0.81))  # difference 0.105, spreads 0.02, 0.01
    assert compare(bn, ">=", nobn).status == PASS
    assert compare(nobn, ">=", bn).status == FAIL
    assert compare(bn, "<", nobn).status == FAIL


def test_compare_inconclusive_when_spread_exceeds_difference():
    a, b = Cell("a", (0.80, 0.90)), Cell("b", (0.84, 0.85))  # difference 0.005 < spread 0.1
    out = compare(a, ">=", b)
    assert out.status == INCONCLUSIVE and "spread" in out.text


def test_compare_threshold_multiple_scales_the_reference_spread():
    # 0.5 x mean(b) = 0.45; spread = max(0, 0.5 x 0.2) = 0.1 > |0.5 - 0.45| -> inconclusive
    a, b = Cell("a", (0.5, 0.5)), Cell("b", (0.8, 1.0))
    assert compare(a, ">", b, factor=0.5).status == INCONCLUSIVE
    # with a tighter reference (spread 0.02 x 0.5 = 0.01 < 0.05) it is decided
    assert compare(a, ">", Cell("b", (0.89, 0.91)), factor=0.5).status == PASS
    # offset: 0.905 >= 0.6 + 0.2 holds by 0.105 with spread 0.01; 0.705 misses 0.8 by 0.095
    assert compare(Cell("a", (0.9, 0.91)), ">=", Cell("b", (0.6, 0.6)), offset=0.2).status == PASS
    assert compare(Cell("a", (0.7, 0.71)), ">=", Cell("b", (0.6, 0.6)), offset=0.2).status == FAIL


def test_compare_with_fixed_number():
    assert compare(Cell("steps", (3000.0, 3500.0)), "<=", 5000).status == PASS
    assert compare(Cell("steps", (4000.0, 6000.0)), "<=", 5000).status == INCONCLUSIVE  # |5000-5000| < 2000


def test_one_seed_cell_against_a_two_seed_cell_is_inconclusive():
    # 0.9 vs 0.51 (spread 0.02): the difference 0.39 would decide it, but one run has no spread
    one, two = Cell("a", (0.9,)), Cell("b", (0.50, 0.52))
    for out in (compare(one, ">=", two), compare(two, "<", one), compare(one, ">=", two, factor=0.5),
                compare(two, ">", one, offset=-1.0)):
        assert out.status == INCONCLUSIVE and out.text.endswith(": one seed") and not out.missing
    # the numbers are shown as for any comparison: mean, spread and seed count of each cell
    assert compare(one, ">=", two).text == \
        "a 0.9 (spread 0, 1 seed) >= b 0.51 (spread 0.02, 2 seeds): one seed"
    # two seeds each decide it
    assert compare(Cell("a", (0.9, 0.9)), ">=", two).status == PASS


def test_one_seed_cell_against_a_fixed_threshold_is_inconclusive_and_the_threshold_is_no_cell():
    out = compare(Cell("steps", (3000.0,)), "<=", 5000, fmt="{:.0f}")
    assert out.status == INCONCLUSIVE and out.text == "steps 3000 (spread 0, 1 seed) <= 5000: one seed"
    # a fixed number has one value but is not a one-seed cell: two seeds against it are decided
    assert compare(Cell("steps", (3000.0, 3500.0)), "<=", 5000).status == PASS
    assert compare(Cell("steps", (6000.0, 6500.0)), "<=", 5000).status == FAIL


def test_both_cells_one_seed_is_inconclusive():
    out = compare(Cell("a", (0.9,)), ">", Cell("b", (0.1,)))
    assert out.status == INCONCLUSIVE and out.text.endswith(": one seed")
    verdict = Verdict.from_outcomes("X-1", [out], [Cell("a", (0.9,)), Cell("b", (0.1,))])
    assert verdict.status == INCONCLUSIVE and verdict.outcomes[0].startswith("[inconclusive]")
    assert verdict.measured["a"]["mean"] == 0.9 and verdict.measured["a"]["spread"] == 0.0


def test_one_seed_leaves_missing_and_diverged_runs_to_decide_as_before():
    one = Cell("a", (0.9,))
    missing = compare(one, ">=", Cell("b", (0.5, 0.6), missing=1))
    assert missing.status == INCONCLUSIVE and missing.missing and missing.text.endswith("runs are missing")
    mixed = compare(one, ">=", Cell("b", (0.5,), diverged=1))
    assert mixed.status == INCONCLUSIVE and mixed.text.endswith("some seeds diverged and some did not")
    # a diverged cell ranks below a trained one whatever the seeds; a lone diverged seed is not "one seed"
    assert compare(one, ">=", Cell("d", (), diverged=2)).status == PASS
    assert compare(Cell("d", (), diverged=1), ">=", Cell("b", (0.5, 0.6))).status == FAIL
    assert compare(Cell("d", (), diverged=1), "<", one).status == PASS


def test_diverged_ranks_below_trained_and_mixed_is_inconclusive():
    trained, diverged = Cell("t", (0.5, 0.6)), Cell("d", (), diverged=2)
    assert compare(diverged, "<", trained, factor=0.5).status == PASS  # "diverges or ends below half"
    assert compare(diverged, ">=", trained, factor=0.8).status == FAIL  # "does not diverge and ends above"
    assert compare(trained, ">=", diverged).status == PASS
    assert compare(diverged, ">=", Cell("d2", (), diverged=1)).status == INCONCLUSIVE
    mixed = Cell("m", (0.9,), diverged=1)
    assert compare(mixed, ">=", trained).status == INCONCLUSIVE


def test_missing_runs_make_the_claim_inconclusive_even_beside_a_fail():
    missing = compare(Cell("a", (0.9,), missing=1), ">=", Cell("b", (0.5,)))
    assert missing.status == INCONCLUSIVE and missing.missing and "missing" in missing.text
    assert combine([missing, Outcome(FAIL, "x")]) == INCONCLUSIVE
    assert combine([Outcome(PASS, "x"), Outcome(FAIL, "y")]) == FAIL
    assert combine([Outcome(PASS, "x"), Outcome(INCONCLUSIVE, "y")]) == INCONCLUSIVE
    assert combine([Outcome(PASS, "x"), Outcome(PASS, "y")]) == PASS
    assert combine([]) == INCONCLUSIVE


def test_verdict_records_cells():
    a, b = Cell("a", (0.9, 0.92)), Cell("b", (0.8,), diverged=1)
    v = Verdict.from_outcomes("X-1", [compare(a, ">=", b)], [a, b], "s")
    d = v.to_dict()
    assert d["status"] == INCONCLUSIVE and d["measured"]["a"]["mean"] == pytest.approx(0.91)
    assert d["measured"]["b"] == {"mean": 0.8, "spread": 0.0, "values": [0.8], "diverged": 1, "missing": 0,
                                  "state": "mixed"}


def hand_runs(rows, curves=None) -> Runs:
    table = pd.DataFrame(rows, columns=["cell", "seed", "status", "test_acc", "steps"])
    return Runs(table, pd.DataFrame(columns=["cell", "seed", "step", "split"]) if curves is None else curves)


def test_runs_cell_counts_diverged_and_missing():
    runs = hand_runs([("a", 0, "completed", 0.9, 100), ("a", 1, "diverged", None, 100),
                      ("a", 2, "failed", None, 100), ("a", 3, "missing", None, 100),
                      ("b", 0, "completed", 0.7, 100)])
    a = runs.cell("a")
    assert (a.values, a.diverged, a.missing, a.state) == ((0.9,), 1, 2, "missing")
    assert runs.cell("b").values == (0.7,)
    assert runs.cell("nope").state == "missing"


def test_value_at_and_steps_to():
    curve = pd.DataFrame({"step": [0, 10, 20, 30], "acc": [0.1, 0.5, 0.7, 0.65]})
    assert value_at(curve, 25) == 0.7 and value_at(curve, 10) == 0.5
    assert steps_to(curve, 0.6) == 20 and steps_to(curve, 0.9) is None


# ---------------------------------------------------------------- Ioffe checks on hand-built runs

def ioffe_hook(name: str, ref: str):
    return next(e for e in discover() if e.id == f"ioffe2015/{name}").hook(ref)


def ioffe_context(name: str, table: pd.DataFrame, curves: pd.DataFrame | None = None) -> Context:
    exp = next(e for e in discover() if e.id == f"ioffe2015/{name}")
    curves = curves if curves is not None else pd.DataFrame(columns=["cell", "seed", "step", "split"])
    return Context(exp, "quick", Runs(table, curves))


def test_drift_matches_hand_computation():
    drift = percentile_drift
    # p15 0 -> 1 -> 1, p50 1 -> 2 -> 3, p85 2 -> 2 -> 4: movement 1 + 2 + 2 = 5, final band 4 - 1 = 3
    curve = pd.DataFrame({"step": [0, 1, 2], "3/u0/p15": [0.0, 1, 1], "3/u0/p50": [1.0, 2, 3],
                          "3/u0/p85": [2.0, 2, 4]})
    assert drift(curve) == pytest.approx(5 / 3)
    # a second unit that never moves (drift 0) halves the average
    curve = curve.assign(**{"3/u1/p15": [0.0] * 3, "3/u1/p50": [1.0] * 3, "3/u1/p85": [2.0] * 3})
    assert drift(curve) == pytest.approx(5 / 6)


def test_net_displacement_matches_hand_computation():
    # from the first record at or after step 15 (step 20) to the last (step 30); final band 4 - 1 = 3:
    # p15 1 -> 1: 0, p50 3 -> 2: 1/3, p85 2 -> 4: 2/3 (the jitter before step 15 does not count)
    curve = pd.DataFrame({"step": [0, 10, 20, 30], "3/u0/p15": [0.0, 9, 1, 1], "3/u0/p50": [1.0, -9, 3, 2],
                          "3/u0/p85": [2.0, 9, 2, 4]})
    assert percentile_net_displacement(curve, 15) == {("3", 0): pytest.approx({15.0: 0, 50.0: 1 / 3,
                                                                                85.0: 2 / 3})}
    # from step 0: p15 0 -> 1, p50 1 -> 2, p85 2 -> 4, over the same band
    assert percentile_net_displacement(curve, 0)[("3", 0)] == pytest.approx({15.0: 1 / 3, 50.0: 1 / 3,
                                                                             85.0: 2 / 3})
    assert percentile_net_displacement(curve, 31) == {}


def search_table(accs: dict[float, list]) -> pd.DataFrame:
    rows = []
    for lr, values in accs.items():
        for seed, v in enumerate(values):
            status = "diverged" if v == "div" else "completed"
            rows.append((f"relu_nobn_lr{lr:g}", seed, status, None if v == "div" else v, 1000))
    return pd.DataFrame(rows, columns=["cell", "seed", "status", "test_acc", "steps"])


def test_eta0_is_the_largest_lr_that_trains():
    eta0 = ioffe_hook("lr_tolerance", "eta0")
    # best mean 0.85 at 0.03 -> half is 0.425: 0.1 ends at 0.43 (trains), 0.3 at 0.4 (does not), 1 diverged
    table = search_table({0.003: [0.5, 0.5], 0.01: [0.8, 0.8], 0.03: [0.85, 0.85], 0.1: [0.43, 0.43],
                          0.3: [0.4, 0.4], 1.0: ["div", "div"]})
    assert eta0(ioffe_context("lr_tolerance", table)) == pytest.approx(0.1)
    # one diverged seed at 0.1 disqualifies it
    table = search_table({0.003: [0.5, 0.5], 0.01: [0.8, 0.8], 0.03: [0.85, 0.85], 0.1: [0.9, "div"],
                          0.3: [0.4, 0.4], 1.0: ["div", "div"]})
    assert eta0(ioffe_context("lr_tolerance", table)) == pytest.approx(0.03)
    failed = pd.DataFrame([("relu_nobn_lr0.3", 0, "failed", None, 1000)], columns=table.columns)
    table = pd.concat([table[table["cell"] != "relu_nobn_lr0.3"], failed], ignore_index=True)
    with pytest.raises(Pending):
        eta0(ioffe_context("lr_tolerance", table))


def test_is3_verdicts_on_hand_built_runs():
    check = ioffe_hook("lr_tolerance", "check_is3")
    search = search_table({0.003: [0.5, 0.5], 0.01: [0.8, 0.8], 0.03: [0.85, 0.86], 0.1: ["div", "div"],
                           0.3: ["div", "div"], 1.0: ["div", "div"]})  # eta0 = 0.03, no-BN@eta0 = 0.855

    def with_stage2(nobn5, bn5):
        rows = [(name, s, "diverged" if v == "div" else "completed", None if v == "div" else v, 1000)
                for name, values in (("relu_nobn_x5", nobn5), ("relu_bn_x5", bn5))
                for s, v in enumerate(values)]
        return pd.concat([search, pd.DataFrame(rows, columns=search.columns)], ignore_index=True)

    # no-BN x5 diverged, BN x5 0.80 >= 0.8 x 0.855 = 0.684 (spread max(0.01, 0.008))
    assert check(ioffe_context("lr_tolerance", with_stage2(["div", "div"], [0.80, 0.81]))).status == PASS
    # BN x5 diverged: fail
    assert check(ioffe_context("lr_tolerance", with_stage2(["div", "div"], ["div", "div"]))).status == FAIL
    # no-BN x5 trains well (0.84 >= 0.4275): fail
    assert check(ioffe_context("lr_tolerance", with_stage2([0.84, 0.84], [0.80, 0.81]))).status == FAIL
    # BN x5 seeds disagree about divergence: inconclusive
    mixed = ioffe_context("lr_tolerance", with_stage2(["div", "div"], [0.8, "div"]))
    assert check(mixed).status == INCONCLUSIVE
    # stage 2 absent: runs are missing
    v = check(ioffe_context("lr_tolerance", search))
    assert v.status == INCONCLUSIVE and "missing" in " ".join(v.outcomes)
