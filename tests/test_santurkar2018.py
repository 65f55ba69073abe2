"""Santurkar et al. 2018 (experiments/santurkar2018): the probe-series helpers against independent
computations, each claim's check on hand-built run tables whose answers are worked out by hand below, the
DLN's summed loss (and its test loss in any evaluation batches), and one paper-profile cell started end to
end on tiny CIFAR-10 files in the real format."""

from __future__ import annotations

import json
import statistics

import pandas as pd
import pytest
import torch
import torch.nn.functional as F

from normexp.claims import FAIL, INCONCLUSIVE, PASS, Runs, paired_difference, probe_costs, probe_median
from normexp.compose import compose
from normexp.config import validate
from normexp.errors import ConfigError
from normexp.evaluation import evaluate
from normexp.reproduce.plan import Context
from normexp.reproduce.spec import discover
from normexp.runtime import make_loss

EXPERIMENT = "santurkar2018/vgg_dln"
COLUMNS = ["cell", "seed", "status", "train_acc", "train_loss", "steps", "planned_steps", "wall_seconds",
           "optim.lr"]


def experiment():
    return next(e for e in discover() if e.id == EXPERIMENT)


def context(rows, curves) -> Context:
    table = pd.DataFrame(rows, columns=COLUMNS)
    return Context(experiment(), "quick", Runs(table, pd.DataFrame(curves)))


def row(cell, seed, acc=0.9, loss=1.0, status="completed", wall=100.0, lr=0.1):
    return (cell, seed, status, None if status != "completed" else acc,
            None if status != "completed" else loss, 100, 100, wall, lr)


def probe(cell, seed, step, name, seconds=0.5, **values):
    return {"cell": cell, "seed": seed, "step": step, "split": "probe", "probe": name, "seconds": seconds,
            **values}


def train(cell, seed, step, acc):
    return {"cell": cell, "seed": seed, "step": step, "split": "train", "acc": acc}


# ---------------------------------------------------------------- helpers in normexp.claims

def test_probe_median_pools_calls_and_matching_layers_against_statistics_median():
    curves = [probe("a", 0, s, "ics", **{"0.0/cos": c0, "0.1/cos": c1, "median/cos": 99.0})
              for s, c0, c1 in ((0, 0.9, 0.1), (10, 0.8, 0.3), (20, 0.7, float("nan")))]
    curves += [probe("a", 1, 0, "ics", **{"0.0/cos": 0.2, "0.1/cos": 0.4})]
    runs = Runs(pd.DataFrame([row("a", 0), row("a", 1), row("b", 0)], columns=COLUMNS), pd.DataFrame(curves))
    cell = probe_median(runs, "a", "ics", r"(?!median/)[^/]+/cos", "a cos")
    # seed 0: the median of {0.9, 0.1, 0.8, 0.3, 0.7} (the NaN and the median/ column left out) = 0.7
    assert cell.values == pytest.approx((statistics.median([0.9, 0.1, 0.8, 0.3, 0.7]), 0.3))
    assert probe_median(runs, "b", "ics", r".+/cos", "b").state == "missing"  # completed, no records


def test_paired_difference_pairs_seeds_and_counts_diverged_and_missing():
    rows = [row("x", 0, acc=0.9), row("x", 1, acc=0.8), row("x", 2, acc=0.7),
            row("y", 0, acc=0.5), row("y", 1, status="diverged"), row("y", 2, status="failed")]
    runs = Runs(pd.DataFrame(rows, columns=COLUMNS), pd.DataFrame())
    d = paired_difference(runs, "x", "y", "x - y", value="train_acc")
    assert d.values == pytest.approx((0.4,)) and d.diverged == 1 and d.missing == 1
    ok = paired_difference(Runs(pd.DataFrame(rows[:2] + rows[3:4] + [row("y", 1, acc=0.6)], columns=COLUMNS),
                                pd.DataFrame()), "x", "y", "d", value="train_acc")
    assert ok.values == pytest.approx((0.4, 0.2)) and ok.state == "trained"


def test_probe_costs_per_call_per_run_and_share_of_the_run():
    curves = [probe("a", 0, 0, "ics", seconds=1.0), probe("a", 0, 5, "ics", seconds=3.0),
              probe("a", 1, 0, "ics", seconds=2.0), probe("a", 0, 0, "landscape", seconds=0.5)]
    runs = Runs(pd.DataFrame([row("a", 0, wall=40.0), row("a", 1, wall=10.0)], columns=COLUMNS),
                pd.DataFrame(curves))
    costs = probe_costs(runs).set_index("probe")
    # ics: calls 2 and 1 (mean 1.5), per call (1 + 3 + 2) / 3 = 2, per run (4 + 2) / 2 = 3,
    # share (4 / 40 + 2 / 10) / 2 = 0.15
    assert costs.loc["ics", ["calls", "seconds_per_call", "seconds_per_run", "share_of_run"]].tolist() == \
        pytest.approx([1.5, 2.0, 3.0, 0.15])
    assert costs.loc["landscape", "share_of_run"] == pytest.approx(0.5 / 40)


# ---------------------------------------------------------------- the DLN's loss

def test_dln_loss_sum_and_mean_match_torch_and_bad_values_are_refused():
    out, y = torch.randn(7, 10), torch.randn(7, 10)
    torch.testing.assert_close(make_loss("regression", "sum")(out, y), F.mse_loss(out, y, reduction="sum"))
    torch.testing.assert_close(make_loss("regression")(out, y), F.mse_loss(out, y, reduction="sum") / 7)
    validate(compose(["model=dln", "data=gaussian_linear", "data.reduction=sum"]))
    with pytest.raises(ConfigError, match=r"data.reduction='median'.*mean, sum"):
        validate(compose(["model=dln", "data=gaussian_linear", "data.reduction=median"]))


@pytest.mark.parametrize("eval_batch", [1000, 250, 7])
def test_the_dln_test_loss_is_the_same_in_any_evaluation_batches(eval_batch):
    """Summed: the loss over the whole test set; mean: its per-example mean (the reduction's own scale);
    both computed here by torch on the whole set at once."""
    torch.manual_seed(0)
    net, x, y = torch.nn.Linear(10, 10), torch.randn(1000, 10), torch.randn(1000, 10)
    batches = [(x[i:i + eval_batch], y[i:i + eval_batch]) for i in range(0, 1000, eval_batch)]
    with torch.no_grad():
        whole = F.mse_loss(net(x), y, reduction="sum").item()
    summed = evaluate(net, batches, make_loss("regression", "sum"), classify=False)["loss"]
    mean = evaluate(net, batches, make_loss("regression", "mean"), classify=False)["loss"]
    assert summed == pytest.approx(whole, rel=1e-5)
    assert mean == pytest.approx(whole / 1000, rel=1e-5)


# ---------------------------------------------------------------- checks on hand-built runs

def hook(name):
    return experiment().hook(name)


def st1_runs(std5="train", bn5_acc=0.85):
    """lr 0.1: Standard ends at 0.90/0.92, BN at 0.95/0.95; at 25% (step 25) Standard 0.5, BN 0.8."""
    rows = [row("std_lr0.1", s, acc=a) for s, a in ((0, 0.90), (1, 0.92))]
    rows += [row("bn_lr0.1", s, acc=0.95) for s in (0, 1)]
    rows += [row("bn_lr0.5", s, acc=bn5_acc, lr=0.5) for s in (0, 1)]
    rows += [row("std_lr0.5", s, acc=0.60, lr=0.5) if std5 == "train" else row("std_lr0.5", s,
             status="diverged", lr=0.5) for s in (0, 1)]
    curves = []
    for s in (0, 1):
        for lr in ("0.1", "0.5"):
            curves += [train(f"std_lr{lr}", s, 20, 0.5), train(f"bn_lr{lr}", s, 20, 0.8),
                       train(f"std_lr{lr}", s, 30, 0.99), train(f"bn_lr{lr}", s, 30, 0.99)]
    return rows, curves


def test_st1_on_hand_built_runs():
    check = hook("fig1_vgg.check_st1")
    # drops: Standard 0.90-0.60 = 0.30 and 0.32, BN 0.95-0.85 = 0.10 (spread 0): 0.31 > 0.10 -> pass
    v = check(context(*st1_runs()))
    assert v.status == PASS, v.outcomes
    assert v.measured["Standard train acc drop 0.1->0.5"]["mean"] == pytest.approx(0.31)
    # BN loses more (0.95 - 0.50 = 0.45 > 0.31) -> fail
    assert check(context(*st1_runs(bn5_acc=0.50))).status == FAIL
    # Standard diverges at 0.5 while BN trains -> pass
    assert check(context(*st1_runs(std5="div"))).status == PASS
    # the record at 25% is the last one at or before step 25 (step 20); BN below Standard there -> fail
    rows, curves = st1_runs()
    curves = [dict(c, acc=0.3) if c["cell"] == "bn_lr0.5" and c["step"] == 20 else c for c in curves]
    assert check(context(rows, curves)).status == FAIL
    # 25% is of each run's own planned steps: the spec's DLN runs (10,000 steps) do not move it to the end
    # of the VGG's 100 (where BN and Standard both log 0.99, which would fail the lr-0.1 comparison)
    rows, curves = st1_runs()
    rows += [row("dln_std_lr1e-06", 0, lr=1e-6)[:5] + (10000, 10000) + row("dln_std_lr1e-06", 0)[7:]]
    v = check(context(rows, curves))
    assert v.status == PASS and v.measured["BN train acc@25% lr 0.1"]["mean"] == pytest.approx(0.8)


def drift_curves(cell, seed, mean_drifts, var_drift):
    return [probe(cell, seed, 10 * (i + 1), "moment_drift", **{"0.0/mean_drift": m, "0.1/mean_drift": m,
                                                                "0.0/var_drift": var_drift,
                                                                "median/mean_drift": 99.0})
            for i, m in enumerate(mean_drifts)]


def test_st2_on_hand_built_runs():
    check = hook("fig2_noisy.check_st2")

    def runs(noisy_acc, noisy_drift):
        rows = [row("std_lr0.1", s, acc=0.80) for s in (0, 1)]
        rows += [row("bn_lr0.1", s, acc=0.95) for s in (0, 1)]
        rows += [row("noisy_bn_lr0.1", s, acc=noisy_acc) for s in (0, 1)]
        curves = []
        for s in (0, 1):
            curves += drift_curves("std_lr0.1", s, [0.01, 0.02, 0.03], 0.05)
            curves += drift_curves("noisy_bn_lr0.1", s, noisy_drift, 0.5)
        return context(rows, curves)

    # noisy 0.93 > 0.80 and >= 0.95 - 0.03 = 0.92; drift medians: noisy 0.3 vs Standard 0.02 (mean),
    # 0.5 vs 0.05 (var) -> pass
    assert check(runs(0.93, [0.3, 0.3, 0.4])).status == PASS
    # 0.91 < 0.92: more than 3 points below BN -> fail
    assert check(runs(0.91, [0.3, 0.3, 0.4])).status == FAIL
    # noisy BN's mean drift median 0.01 < Standard's 0.02 -> fail
    v = check(runs(0.93, [0.01, 0.01, 0.5]))
    assert v.status == FAIL
    assert v.measured['Standard + "Noisy" BatchNorm mean drift']["mean"] == pytest.approx(0.01)


def test_st2_drift_diagnostics_table_against_medians_by_hand():
    table_of = hook("fig2_noisy.drift_diagnostics")
    rows = [row(c, s) for c in ("std_lr0.1", "bn_lr0.1", "noisy_bn_lr0.1") for s in (0, 1)]
    curves = []
    for s in (0, 1):  # noisy BN: registered calls at 10, 20, 30 and the pair's calls one step later
        for i, t in enumerate((10, 20, 30)):
            curves.append(probe("noisy_bn_lr0.1", s, t, "moment_drift", **{
                "0.0/mean_drift": 0.1 * (i + 1) + s, "0.1/mean_drift": 0.5 + s, "median/mean_drift": 99.0,
                "0.0/mean_drift_rel": 2.0 * (i + 1), "0.1/mean_drift_rel": 0.0}))
            curves.append(probe("noisy_bn_lr0.1", s, t + 1, "moment_drift", **{
                "0.0/mean_drift_1": 0.01 * (i + 1), "0.1/mean_drift_1": 0.02 * (i + 1),
                "median/mean_drift_1": 99.0}))
    table = table_of(context(rows, curves)).set_index(["cell", "moment"])
    # Fig 8 draws the registered calls only (the pair's records have no registered keys): no NaN gaps
    fig8 = hook("fig2_noisy.fig8_moment_drift")(context(rows, curves))
    noisy_line = next(ln for ln in fig8.axes[0].get_lines() if "Noisy" in ln.get_label())
    assert list(noisy_line.get_xdata()) == [10, 20, 30]
    noisy = table.loc[("noisy_bn_lr0.1", "mean")]
    # per seed the median over calls and Blocks: seed 0 median{0.1, 0.2, 0.3, 0.5, 0.5, 0.5} = 0.4, seed 1
    # the same plus 1 = 1.4: mean 0.9, spread 1
    assert (noisy["drift_k"], noisy["drift_k_spread"]) == pytest.approx((0.9, 1.0))
    assert noisy["drift_1"] == pytest.approx(statistics.median([0.01, 0.02, 0.03, 0.02, 0.04, 0.06]))
    assert noisy["drift_rel_k"] == pytest.approx(statistics.median([2, 4, 6, 0, 0, 0]))
    assert noisy["seeds"] == 2 and pd.isna(noisy["drift_rel_1"])
    assert table.loc[("std_lr0.1", "var")].isna()[["drift_k", "drift_1"]].all()  # completed, no records


def test_st4_beta_vs_sharpness_draws_both_measures_and_2_over_lr():
    rows = [row(c, s) for c in ("std_lr0.1", "bn_lr0.1") for s in (0, 1)]
    curves = [probe(c, s, t, "landscape", beta=b + s) for c, b in (("std_lr0.1", 14.0), ("bn_lr0.1", 7.0))
              for s in (0, 1) for t in (0, 10, 20)]
    curves += [probe(c, s, t, "hessian", **{"model/top_eig": e * (1 + s)})
               for c, e in (("std_lr0.1", 18.0), ("bn_lr0.1", 9.0)) for s in (0, 1) for t in (0, 20)]
    fig = hook("sharpness.beta_vs_sharpness")(context(rows, curves))
    lines = {line.get_label().split(" (")[0]: line for line in fig.axes[0].get_lines()}
    assert list(lines["Standard: effective beta"].get_ydata()) == pytest.approx([14.5] * 3)
    bn_top = lines["Standard + BatchNorm: top Hessian eigenvalue"]
    assert list(bn_top.get_ydata()) == pytest.approx([13.5] * 2)
    assert list(lines["2 / lr = 20"].get_ydata()) == [20, 20]


def ics_curves(cell, seed, cos_values):
    return [probe(cell, seed, 10 * i, "ics", **{"a/cos": c, "b/cos": c, "median/cos": 99.0})
            for i, c in enumerate(cos_values)]


def st3_context(dln_bn_cos, dln_bn_loss, vgg_bn_cos):
    rows = [row("dln_std_lr1e-06", s, loss=500.0, lr=1e-6) for s in (0, 1)]
    rows += [row("dln_bn_lr1e-06", s, loss=dln_bn_loss, lr=1e-6) for s in (0, 1)]
    rows += [row(c, s) for c in ("std_lr0.1", "bn_lr0.1") for s in (0, 1)]
    curves = []
    for s in (0, 1):
        curves += ics_curves("dln_std_lr1e-06", s, [0.99, 0.98, 0.97])
        curves += ics_curves("dln_bn_lr1e-06", s, dln_bn_cos)
        curves += ics_curves("std_lr0.1", s, [0.90, 0.90, 0.90])
        curves += ics_curves("bn_lr0.1", s, vgg_bn_cos)
        curves += [train("std_lr0.1", s, 20, 0.5), train("bn_lr0.1", s, 20, 0.8)]
    return context(rows, curves)


def test_st3_on_hand_built_runs():
    check = hook("fig3_ics.check_st3")
    # DLN: BN median cos 0.5 < 0.98, loss 100 < 500; VGG: BN 0.93 <= 0.90 + 0.05; BN faster -> pass
    assert check(st3_context([0.4, 0.5, 0.6], 100.0, [0.93, 0.93, 0.93])).status == PASS
    # VGG BN cos median 0.96 > 0.95 -> fail (BN reduced ICS)
    assert check(st3_context([0.4, 0.5, 0.6], 100.0, [0.96, 0.96, 0.99])).status == FAIL
    # DLN BN loss above Standard's -> fail
    assert check(st3_context([0.4, 0.5, 0.6], 900.0, [0.93, 0.93, 0.93])).status == FAIL
    # DLN BN's ICS runs absent (completed runs without records) -> inconclusive
    assert check(st3_context([], 100.0, [0.93, 0.93, 0.93])).status == INCONCLUSIVE


def test_st4_on_hand_built_runs():
    check = hook("fig4_landscape.check_st4")

    def runs(bn_beta):
        rows = [row(c, s) for c in ("std_lr0.1", "bn_lr0.1") for s in (0, 1)]
        curves = []
        for s in (0, 1):
            curves += [probe("std_lr0.1", s, i, "landscape", loss_band=b, grad_change_max=6.0, beta=14.0)
                       for i, b in enumerate((0.2, 0.6, 5.0))]
            curves += [probe("bn_lr0.1", s, i, "landscape", loss_band=0.1, grad_change_max=2.0, beta=bn_beta)
                       for i in range(3)]
        return context(rows, curves)

    # medians: band 0.6 vs 0.1, gradient change 6 vs 2, beta 14 vs 7 -> each at most half -> pass
    v = runs(7.0)
    assert check(v).status == PASS
    # beta 11.2 > 7: the pilot's 1.27x -> fail
    assert check(runs(11.2)).status == FAIL


def test_st5_on_hand_built_runs():
    check = hook("lp_norms.check_st5")

    def runs(linf_acc, dln_l1_cos, l1_loss=50.0):
        rows = [row("bn_lr0.1", s, acc=0.95) for s in (0, 1)] + [row("std_lr0.1", s) for s in (0, 1)]
        rows += [row(f"{k}_lr0.1", s, acc=a) for k, a in (("l1", 0.94), ("l2", 0.95), ("linf", linf_acc))
                 for s in (0, 1)]
        rows += [row(f"dln_{k}_lr1e-06", s, loss=l1_loss if k == "l1" else 100.0)
                 for k in ("std", "bn", "l1", "l2", "linf") for s in (0, 1)]
        curves = []
        for s in (0, 1):
            curves += ics_curves("std_lr0.1", s, [0.9]) + ics_curves("dln_std_lr1e-06", s, [0.9])
            for k in ("l1", "l2", "linf"):
                curves += ics_curves(f"{k}_lr0.1", s, [0.8])
                curves += ics_curves(f"dln_{k}_lr1e-06", s, [dln_l1_cos if k == "l1" else 0.5])
        return context(rows, curves)

    # accs 0.94, 0.95, 0.93 >= 0.92; cos 0.8 and 0.5 <= 0.95 -> pass; l1's DLN loss 50 < BN's 100: "yes"
    v = check(runs(0.93, 0.5))
    assert v.status == PASS and v.measured["report: DLN l1 vs BN"]["l1_beats_bn"] == "yes"
    assert check(runs(0.91, 0.5)).status == FAIL  # linf 4 points below BN
    assert check(runs(0.93, 0.97)).status == FAIL  # l1's DLN cos 0.97 > 0.9 + 0.05
    # the report never changes the verdict
    v = check(runs(0.93, 0.5, l1_loss=200.0))
    assert v.status == PASS and v.measured["report: DLN l1 vs BN"]["l1_beats_bn"] == "no"
    # a profile without the DLN's lp cells (quick) compares the VGG alone, and says so
    ctx = runs(0.93, 0.97)
    ctx.runs.table = ctx.runs.table[~ctx.runs.table["cell"].str.match(r"dln_l(1|2|inf)_")]
    v = check(ctx)
    assert v.status == PASS and len(v.outcomes) == 6 and "not run at this profile" in v.sentence


# ---------------------------------------------------------------- the paper profile starts

@pytest.mark.slow
def test_paper_profile_cell_runs_on_tiny_cifar10_files(tmp_path, monkeypatch):
    """A paper-profile cell (VGG-11 on CIFAR-10, every probe) composed by the planner, run for 2 steps on
    CIFAR-10 files written in the real pickle format."""
    from test_data import write_cifar10

    from normexp.reproduce import execute, plan
    from normexp.reproduce.spec import merge_overrides

    write_cifar10(tmp_path / "data", per_batch=4, n_test=6)
    monkeypatch.setenv("NORMEXP_DATA", str(tmp_path / "data"))
    planner = plan.Planner("paper", tmp_path / "out", jobs=1)
    exp = experiment()
    (run, *_) = planner.runs(exp, [c for c in exp.cells("paper") if c.name == "bn_lr0.1"])
    assert run.cfg.model.layout[0] == 64 and run.cfg.data.name == "cifar10" and run.cfg.train.steps == 15000
    assert run.cfg.data.crop_padding == 0 and run.cfg.data.flip is False  # no augmentation
    assert run.cfg.probes.ics.every == 1500 and run.cfg.probes.hessian.every == 3000
    smoke = merge_overrides(run.overrides, ["train.steps=2", "data.batch_size=8", "train.eval_every=1",
                                            "train.log_every=1", "train.checkpoint_every=0",
                                            "probes.hessian.max_iter=3", "train.threads=1"])
    cfg, chosen = planner.compose(smoke)
    summary = execute.train_one(cfg, str(run.run_dir), chosen, smoke)
    assert summary["status"] == "completed", summary
    records = [json.loads(line) for line in (run.run_dir / "metrics.jsonl").read_text().splitlines()]
    assert {r["probe"] for r in records if r["split"] == "probe"} == {"ics", "landscape", "hessian",
                                                                      "moment_drift", "activations"}
