"""Wu & He 2018 (experiments/wuhe2018): the checks WH-1..WH-5 on hand-built run tables whose answers are
worked out by hand below, the batch-noise diagnostic against a closed form and against torch's own BatchNorm
statistics, Batch Renorm per virtual device against one BRN per slice, runs shared between experiments, and
one paper-profile cell (torchvision ResNet-50, ghost BN) trained for two steps on a tiny ImageNet folder."""

import math

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from normexp.claims import FAIL, INCONCLUSIVE, PASS, Runs, batch_stat_noise, paired_difference, spread_ratio
from normexp.norms import create_norm
from normexp.reproduce import plan
from normexp.reproduce.plan import Context
from normexp.reproduce.spec import discover


def wuhe(name: str):
    return next(e for e in discover() if e.id == f"wuhe2018/{name}")


def context(name: str, errors: dict[str, list], curves: pd.DataFrame | None = None,
            regime: dict[str, tuple[float, float]] | None = None) -> Context:
    """A run table of completed runs with these test errors (%) per cell, one seed per value; 'div' is a
    diverged run. Inside the regime unless ``regime`` says otherwise: cell -> (clean training accuracy minus
    test accuracy in points, clean training loss); by default (+1 point, 0.1) for every cell."""
    rows = []
    for cell, values in errors.items():
        gap, loss = (regime or {}).get(cell, (1.0, 0.1))
        for seed, e in enumerate(values):
            acc = None if e == "div" else 1 - e / 100
            rows.append((cell, seed, "diverged" if e == "div" else "completed", acc,
                         None if acc is None else acc + gap / 100, None if acc is None else loss))
    table = pd.DataFrame(rows, columns=["cell", "seed", "status", "test_acc", "train_clean_acc",
                                        "train_clean_loss"])
    curves = curves if curves is not None else pd.DataFrame(columns=["cell", "seed", "step", "split"])
    return Context(wuhe(name), "quick", Runs(table, curves))


def check(name: str, ref: str, errors: dict, curves=None, regime=None):
    return wuhe(name).hook(ref)(context(name, errors, curves, regime))


# ---------------------------------------------------------------- checks on hand-built runs

def test_wh1_rise_and_gap():
    # BN rises 6 points (10 -> 16, 11 -> 17), GN 0.5 (12 -> 12.5, 12.5 -> 13): 6 >= 3 x 0.5; at N=2 GN 12.75
    # <= BN 16.5 - 2 = 14.5
    base = {"bn_n32": [10, 11], "bn_n2": [16, 17], "gn_n32": [12, 12.5], "gn_n2": [12.5, 13]}
    v = check("batch_sweep", "check_wh1", base)
    assert v.status == PASS, v.outcomes
    assert v.measured["BN error rise N=32->2 (points)"]["mean"] == pytest.approx(6)
    assert v.measured["GN error rise N=32->2 (points)"]["mean"] == pytest.approx(0.5)
    assert v.regime["gated"] and v.regime["inside"]
    # GN rises 2.5 (12 -> 14.5, 12.5 -> 15): 6 < 3 x 2.5 = 7.5 fails
    v = check("batch_sweep", "check_wh1", base | {"gn_n2": [14.5, 15]})
    assert v.status == FAIL and v.outcomes[0].startswith("[pass]") and v.outcomes[1].startswith("[fail]")
    # the gap: GN at N=2 15.6 > BN 16.5 - 2 = 14.5 by 1.1, more than BN's spread 1: fails (GN's rise 1.1 x 3
    # = 3.3 <= 6 still holds); at 15 the difference 0.5 is within the spread: inconclusive
    v = check("batch_sweep", "check_wh1", base | {"gn_n32": [14.5, 14.5], "gn_n2": [15.6, 15.6]})
    assert v.status == FAIL and v.outcomes[1].startswith("[pass]") and v.outcomes[2].startswith("[fail]")
    # seeds disagree by more than the rise: BN rises 0 and 12 (mean 6, spread 12) -> inconclusive
    v = check("batch_sweep", "check_wh1", base | {"bn_n2": [10, 23]})
    assert v.status == INCONCLUSIVE
    v = check("batch_sweep", "check_wh1", base | {"gn_n32": [14.5, 14.5], "gn_n2": [15, 15]})
    assert v.status == INCONCLUSIVE and v.outcomes[2].startswith("[inconclusive]")
    # a missing N=2 run
    without = {k: v for k, v in base.items() if k != "gn_n2"}
    assert check("batch_sweep", "check_wh1", without).status == INCONCLUSIVE


def test_wh1_bn_falling_with_gn_falling_faster_fails():
    # the case the first rule passed vacuously: BN falls 2.9 (18 -> 15.1, 19 -> 16.1), GN falls 11.15
    # (30 -> 18.85, 31 -> 19.85): -2.9 >= 3 x -11.15 held; now BN's rise must be positive: -2.9 < 0 beyond
    # the spread 0 fails; against 3 x max(GN's rise, 0) = 0 too
    v = check("batch_sweep", "check_wh1", {"bn_n32": [18, 19], "bn_n2": [15.1, 16.1], "gn_n32": [30, 31],
                                            "gn_n2": [18.85, 19.85]})
    assert v.status == FAIL and v.outcomes[0].startswith("[fail]") and v.outcomes[1].startswith("[fail]")
    assert v.measured["BN error rise N=32->2 (points)"]["mean"] == pytest.approx(-2.9)
    assert v.measured["max(GN error rise, 0) per seed"]["values"] == [0.0, 0.0]


def test_wh1_bn_rise_within_its_spread_is_inconclusive():
    # BN rises 1 and -0.5 (mean 0.25, spread 1.5): not positive beyond its spread; GN flat, gap 3 points
    v = check("batch_sweep", "check_wh1", {"bn_n32": [15, 15], "bn_n2": [16, 14.5], "gn_n32": [12, 12],
                                            "gn_n2": [12, 12]})
    assert v.outcomes[0].startswith("[inconclusive]") and v.status == INCONCLUSIVE
    assert "within the seed spread 1.50" in v.outcomes[0]


def test_wh1_gn_rise_is_clipped_at_zero_per_seed():
    # GN falls 1 in one seed and rises 1 in the other: max(., 0) gives 0 and 1 (mean 0.5, spread 1);
    # BN rises 2 and 2.4 (mean 2.2): 2.2 >= 3 x 0.5 = 1.5 by 0.7, within 3 x 1 = 3: inconclusive
    v = check("batch_sweep", "check_wh1", {"bn_n32": [15, 15], "bn_n2": [17, 17.4], "gn_n32": [12, 12],
                                            "gn_n2": [11, 13]})
    assert v.measured["max(GN error rise, 0) per seed"]["values"] == [0.0, 1.0]
    assert v.outcomes[0].startswith("[pass]") and v.outcomes[1].startswith("[inconclusive]")


def test_wh1_outside_the_regime_is_inconclusive_with_its_numbers():
    passing = {"bn_n32": [10, 11], "bn_n2": [16, 17], "gn_n32": [12, 12.5], "gn_n2": [12.5, 13]}
    # R1: BN at N=32 memorizes (clean training accuracy 4 points above test)
    v = check("batch_sweep", "check_wh1", passing, regime={"bn_n32": (4.0, 0.1)})
    assert v.status == INCONCLUSIVE and v.sentence.startswith("outside the paper's regime: R1: bn_n32")
    assert "gap +4.00 > 3 points" in v.sentence and not v.regime["inside"]
    assert any(o.startswith("(not decided") and "[pass]" in o for o in v.outcomes)  # the numbers stay
    assert v.measured["BN error rise N=32->2 (points)"]["mean"] == pytest.approx(6)
    # R2: GN at N=32 ends at 0.13 vs its lowest 0.1 over N: 1.3 > 1.25
    v = check("batch_sweep", "check_wh1", passing, regime={"gn_n32": (1.0, 0.13)})
    assert v.status == INCONCLUSIVE and "R2: gn_n32 trained less" in v.sentence and "1.30 x" in v.sentence
    # 1.25 exactly is inside; a third N of the same norm counts toward the lowest (BN at N=8: 0.08)
    assert check("batch_sweep", "check_wh1", passing, regime={"gn_n32": (1.0, 0.125)}).status == PASS
    v = check("batch_sweep", "check_wh1", passing | {"bn_n8": [12, 12]}, regime={"bn_n8": (1.0, 0.079)})
    assert v.status == INCONCLUSIVE and "R2: bn_n32" in v.sentence and "R2: bn_n2" in v.sentence
    # a failing claim outside the regime is not a fail either
    v = check("batch_sweep", "check_wh1", passing | {"gn_n2": [14.5, 15]}, regime={"gn_n2": (3.5, 0.1)})
    assert v.status == INCONCLUSIVE and "(not decided, outside the paper's regime) [fail]" in v.outcomes[2]


def test_wh_claims_without_the_regime_measures_are_inconclusive():
    ctx = context("renorm", {"bn_n4": [14, 14], "gn_n4": [12, 12], "brn_n4": [13, 13]})
    ctx.runs.table = ctx.runs.table.drop(columns=["train_clean_acc", "train_clean_loss"])
    v = wuhe("renorm").hook("check_wh5")(ctx)
    assert v.status == INCONCLUSIVE and v.sentence.startswith("regime not measured for bn_n4, brn_n4, gn_n4")


def test_paired_difference_pairs_seeds_and_counts_diverged():
    ctx = context("batch_sweep", {"a": [10, 20, "div"], "b": [5, 5, 5]})
    d = paired_difference(ctx.runs, "a", "b", "a - b")
    assert d.values == pytest.approx((5, 15)) and d.diverged == 1 and d.missing == 0


def test_wh2_order_and_gap():
    ok = {"bn_n32": [11, 11], "gn_n32": [12, 12.2], "ln_n32": [15, 15], "in_n32": [20, 20]}
    assert check("norms", "check_wh2", ok).status == PASS  # 20 > 15 > 12.1, 12.1 - 11 = 1.1 <= 1.5
    v = check("norms", "check_wh2", ok | {"gn_n32": [13, 13]})  # 13 - 11 = 2 > 1.5
    assert v.status == FAIL and v.outcomes[2].startswith("[fail]")
    assert check("norms", "check_wh2", ok | {"ln_n32": [21, 21]}).status == FAIL  # LN above IN
    # IN memorizes: outside the regime; GN at N=32 less trained than GN at N=2 (R2 reads the sweep's cells)
    assert check("norms", "check_wh2", ok, regime={"in_n32": (3.2, 0.1)}).status == INCONCLUSIVE
    v = check("norms", "check_wh2", ok | {"gn_n2": [11, 11]}, regime={"gn_n32": (1.0, 0.2)})
    assert v.status == INCONCLUSIVE and "R2: gn_n32" in v.sentence


def test_wh3_in_highest_and_best_in_between():
    ok = {"ln_n32": [14, 14], "g2_n32": [12, 12], "gn_n32": [12.5, 12.5], "g8_n32": [13, 13],
          "in_n32": [16, 16]}
    # quick's G = 1, 4, C (g2 and g8 are not read there): G = 4 (12.5) < LN 14, < IN 16
    assert check("group_sweep", "check_wh3", ok).status == PASS
    assert check("group_sweep", "check_wh3", ok | {"ln_n32": [11, 11]}).status == FAIL  # LN is lowest
    assert check("group_sweep", "check_wh3", ok | {"gn_n32": [17, 17]}).status == FAIL  # IN not highest


def percentile_curves(widths: dict[str, tuple[float, float]]) -> pd.DataFrame:
    """Per cell (two seeds), a probe curve whose 1-99 spread goes from widths[cell][0] to widths[cell][1]."""
    rows = []
    for cell, (first, last) in widths.items():
        for seed in (0, 1):
            for step, w in ((0, first), (50, (first + last) / 2), (100, last)):
                rows.append({"cell": cell, "seed": seed, "step": step, "split": "probe",
                             "probe": "activations", "0.9/all/p1": -w / 2, "0.9/all/p20": -w / 4,
                             "0.9/all/p80": w / 4, "0.9/all/p99": w / 2})
    return pd.DataFrame(rows)


def test_spread_ratio_is_final_over_initial_1_99_width():
    curve = percentile_curves({"none": (2.0, 8.0)})
    assert spread_ratio(curve[curve["seed"] == 0]) == pytest.approx(4.0)


def test_wh4_spread_grows_more_without_normalization():
    errors = {"none": [10, 10], "bn": [10, 10], "gn": [10, 10]}
    # ratios: none 8 / 2 = 4, BN 2.2 / 2 = 1.1, GN 2.4 / 2 = 1.2
    curves = percentile_curves({"none": (2, 8), "bn": (2, 2.2), "gn": (2, 2.4)})
    assert check("percentiles", "check_wh4", errors, curves).status == PASS
    curves = percentile_curves({"none": (2, 2), "bn": (2, 2.2), "gn": (2, 2.4)})  # 1 < 1.1
    assert check("percentiles", "check_wh4", errors, curves).status == FAIL


def test_wh5_renorm_below_bn():
    others = {"bn_n4": [14, 14], "gn_n4": [12, 12]}
    assert check("renorm", "check_wh5", others | {"brn_n4": [13, 13]}).status == PASS
    assert check("renorm", "check_wh5", others | {"brn_n4": [15, 15]}).status == FAIL
    assert check("renorm", "check_wh5", others | {"brn_n4": [12, 16]}).status == INCONCLUSIVE  # spread 4 > 0


def test_wh5_shows_gn_beside_only_where_it_was_trained():
    v = check("renorm", "check_wh5", {"bn_n4": [14, 14], "brn_n4": [13, 13]})
    assert v.status == PASS and v.sentence == "error at N=4: BRN 13.00, BN 14.00 %"
    v = check("renorm", "check_wh5", {"bn_n4": [14, 14], "brn_n4": [13, 13], "gn_n4": [12, 11]})
    assert v.status == PASS and v.sentence == "error at N=4: BRN 13.00, BN 14.00, GN 11.50 %"
    assert check("renorm", "check_wh5", {"bn_n4": [14, 14]}).status == INCONCLUSIVE  # BRN missing


@pytest.mark.parametrize("profile, with_gn", [("quick", False), ("full", True)])
def test_renorm_trains_gn_at_n4_only_where_the_profile_lists_it(profile, with_gn, tmp_path):
    """Quick's sweep has no N = 4: WH-5 adds BN and BRN there, not GN (no quick verdict needs it)."""
    exp = next(e for e in discover() if e.id == "wuhe2018/renorm")
    cells = {r.cell for r in plan.plan_experiment(exp, plan.Planner(profile, tmp_path, jobs=1))[0]}
    assert {"bn_n4", "brn_n4"} <= cells and ("gn_n4" in cells) is with_gn


# ---------------------------------------------------------------- the batch-noise diagnostic

def test_batch_noise_of_gaussian_input_matches_the_closed_form():
    """A BN layer fed i.i.d. Gaussian values: around the sample's own mean and variance (T images), a batch of
    m = N x positions values has RMS relative mean error sqrt((1 - N / T) / m) and variance error close to
    sqrt(2m - 1) / m."""
    torch.manual_seed(0)
    images, positions = 2048, 16
    x = 3.0 + 2.5 * torch.randn(images, 32, 4, 4)
    table = batch_stat_noise(nn.Sequential(nn.BatchNorm2d(32)), x, [2, 32]).set_index("N")
    for n in (2, 32):
        m = n * positions
        assert table.loc[n, "values_per_batch"] == m and table.loc[n, "batches"] == images // n
        assert table.loc[n, "mean_error"] == pytest.approx(math.sqrt((1 - n / images) / m), rel=0.05)
        assert table.loc[n, "var_error"] == pytest.approx(math.sqrt(2 * m - 1) / m, rel=0.07)


def test_batch_noise_matches_torch_batchnorm_statistics_in_a_small_net():
    """Independently: the input of the second BN (the net's first four layers in eval mode), cut into
    batches of N; torch's BatchNorm2d with momentum 1 gives each batch's mean and unbiased variance."""
    torch.manual_seed(1)
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                        nn.Conv2d(8, 6, 3, stride=2, padding=1), nn.BatchNorm2d(6))
    net[1].running_mean.uniform_(-0.5, 0.5)
    net[1].running_var.uniform_(0.5, 2.0)
    x = torch.randn(512, 3, 8, 8)
    table = batch_stat_noise(net, x, [4, 16], chunk=128).set_index(["layer", "N"])
    net.eval()
    with torch.no_grad():
        h = net[:4](x).double()
    pop_mean, pop_var = h.mean(dim=(0, 2, 3)), h.var(dim=(0, 2, 3), unbiased=False)
    for n in (4, 16):
        mean_sq, var_sq = [], []
        for b in h.split(n):
            bn = nn.BatchNorm2d(6, momentum=1.0).double().train()
            bn(b)
            m = b.numel() // 6
            mean_sq.append((bn.running_mean - pop_mean) ** 2 / pop_var)
            var_sq.append((bn.running_var * (m - 1) / m / pop_var - 1) ** 2)
        expected_mean = torch.stack(mean_sq).mean().sqrt().item()
        expected_var = torch.stack(var_sq).mean().sqrt().item()
        assert table.loc[("4", n), "mean_error"] == pytest.approx(expected_mean, rel=1e-6)
        assert table.loc[("4", n), "var_error"] == pytest.approx(expected_var, rel=1e-6)
    assert list(table.reset_index()["depth"].unique()) == [0, 1]
    assert net.training is False  # batch_stat_noise restores the mode it found (eval here)


# ---------------------------------------------------------------- Batch Renorm per virtual device

@pytest.mark.parametrize("memory_format", [torch.contiguous_format, torch.channels_last])
def test_batch_renorm_per_virtual_device_equals_one_brn_per_slice(memory_format):
    torch.manual_seed(2)
    x = torch.randn(8, 3, 4, 4) * 2 + 1
    ghost = create_norm("batch_renorm", 3, virtual_devices=2)
    ghost.running_mean.fill_(0.8)
    ghost.running_var.fill_(3.0)
    y = ghost(x.contiguous(memory_format=memory_format))
    halves = []
    for part in x.split(4):
        one = create_norm("batch_renorm", 3)
        one.running_mean.fill_(0.8)
        one.running_var.fill_(3.0)
        halves.append(one(part))
    torch.testing.assert_close(y, torch.cat(halves))
    # running statistics: the slices' mean of means and of unbiased variances, at momentum 0.01
    slices = x.reshape(2, 4, 3, -1)
    mean = slices.mean(dim=(1, 3)).mean(0)
    var = slices.var(dim=(1, 3), unbiased=True).mean(0)
    torch.testing.assert_close(ghost.running_mean, 0.99 * 0.8 + 0.01 * mean)
    torch.testing.assert_close(ghost.running_var, 0.99 * 3.0 + 0.01 * var)


# ---------------------------------------------------------------- shared runs, the paper profile

def test_cells_shared_between_experiments_train_once(tmp_path):
    planner = plan.Planner("smoke", tmp_path, jobs=1)
    runs = {e.id: plan.plan_experiment(e, planner)[0] for e in discover() if e.id.startswith("wuhe2018/")}
    sweep = {r.cell: r for r in runs["wuhe2018/batch_sweep"]}
    norms = {r.cell: r for r in runs["wuhe2018/norms"]}
    assert norms["bn_n32"].run_dir == sweep["bn_n32"].run_dir and norms["gn_n32"].overrides == \
        sweep["gn_n32"].overrides
    assert "batch_sweep" not in str(norms["ln_n32"].run_dir)
    # the lr follows N (base_lr 0.8 at N = 32), the optimizer batch is 8 N, plain BN's is N
    assert "optim.lr=0.05" in sweep["bn_n2"].overrides and "data.batch_size=16" in sweep["bn_n2"].overrides
    plain = sweep["bn_plain_n8"].overrides  # 0.8 x 8 / 256
    assert "data.batch_size=8" in plain and "norm=batch" in plain and "optim.lr=0.025" in plain


def _regime_pilot():
    import importlib.util

    from conftest import REPO

    path = REPO / "experiments/wuhe2018/regime_pilot.py"
    spec = importlib.util.spec_from_file_location("regime_pilot", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_regime_pilot_runs_the_profiles_cells_at_each_design(tmp_path):
    pilot = _regime_pilot()
    runs = {(r.experiment, r.cell): r for r in pilot.planned_runs("quick", tmp_path)}
    assert len(runs) == 6 * 4
    quick = runs[("30k_lr0.8", "gn_n2")]
    # 30,000 images at an optimizer batch of 8 x 2: 1,875 steps; lr 0.8 x 2 / 32
    assert {"norm=group", "data.batch_size=16", "model.depth=8", "train.steps=1875", "optim.lr=0.05",
            "data.train_subset=null", "seed=0", "train.eval_every=0"} <= set(quick.overrides)
    assert quick.cfg.train.steps == 1875 and quick.cfg.data.train_subset is None
    full = {(r.experiment, r.cell): r for r in pilot.planned_runs("full", tmp_path)}[("2ep_lr0.4", "bn_n32")]
    assert {"train.epochs=2", "optim.lr=0.4", "model.depth=14", "data.test_subset=null"} \
        <= set(full.overrides)


def test_regime_pilot_rule_reads_the_regime_and_the_cost_only():
    pilot = _regime_pilot()

    def rows(design, images, losses, gaps=(1, 1, 1, 1)):
        return [{"design": design, "images_per_run": images, "cell": c, "status": "completed",
                 "clean_train_loss": loss, "gap_points": g, "seconds": 10}
                for c, loss, g in zip(pilot.CELLS, losses, gaps, strict=True)]

    # cells: bn_n32, gn_n32, bn_n2, gn_n2
    table = pd.DataFrame(rows("a", 30000, (0.30, 0.40, 0.30, 0.30))       # GN 0.40 / 0.30 = 1.33: no R2
                         + rows("b", 30000, (0.30, 0.36, 0.30, 0.30))     # 1.2: admissible, worst 0.36
                         + rows("c", 60000, (0.20, 0.22, 0.20, 0.20))     # admissible, worst 0.22, dearer
                         + rows("d", 30000, (0.28, 0.30, 0.28, 0.29), gaps=(1, 1, 3.5, 1)))  # no R1
    judged = pilot.judge(table).set_index("design")
    assert list(judged["admissible"]) == [False, True, True, False]
    assert judged.loc["a", "worst R2 ratio"] == pytest.approx(1.333, abs=1e-3)
    assert pilot.choose(judged.reset_index(), "quick") == "b"  # the cheapest admissible
    assert pilot.choose(judged.reset_index(), "full") == "c"   # the lowest worst loss
    # nothing admissible: the smallest worst R2 ratio among the designs with R1 (d has none)
    none = judged.reset_index().assign(admissible=False)
    assert pilot.choose(none, "full") == "c"


@pytest.mark.slow
def test_paper_profile_cell_trains_two_steps_on_a_tiny_imagenet_folder(tmp_path):
    """The paper profile's bn_n2 cell (torchvision ResNet-50, BN per virtual device of 2 images, optimizer
    batch 16): composed as planned, with the data root pointed at a tiny folder and two steps."""
    from PIL import Image

    from normexp.compose import compose
    from normexp.models import build_model
    from normexp.norms import NormSpec
    from normexp.train import run

    rng = np.random.default_rng(0)
    for split, n in (("train", 8), ("val", 2)):
        for cls in ("a", "b"):
            (tmp_path / "imagenet" / split / cls).mkdir(parents=True)
            for i in range(n):
                pixels = rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(tmp_path / "imagenet" / split / cls / f"{i}.png")
    planner = plan.Planner("paper", tmp_path / "out", jobs=1, check_data=False)
    planned = {r.cell: r for r in plan.plan_experiment(wuhe("batch_sweep"), planner)[0] if r.seed == 0}
    r = planned["bn_n2"]
    assert "model=resnet50" in r.overrides and "norm.virtual_devices=8" in r.overrides
    assert "data.batch_size=16" in r.overrides and "train.steps=8007293" in r.overrides  # 100 x 1281167 // 16
    small = [f"data.root={tmp_path / 'imagenet'}", "data.crop=32", "data.num_classes=2", "data.workers=0",
             "data.eval_batch_size=4", "train.steps=2", "train.eval_every=0", "train.log_every=1",
             "train.checkpoint_every=0", "train.threads=1"]
    cfg = compose([o for o in r.overrides if not o.startswith("train.")] + small)
    torch.manual_seed(0)
    summary = run(cfg, tmp_path / "run", overrides=r.overrides)
    assert summary["status"] == "completed" and summary["step"] == 2 and math.isfinite(summary["train_loss"])
    # every other paper-profile ResNet cell builds (one model per distinct norm config)
    norms = {}
    for exp in ("batch_sweep", "norms", "group_sweep", "renorm"):
        for r in plan.plan_experiment(wuhe(exp), planner)[0]:
            norms.setdefault(str(dict(r.cfg.norm)), r.cfg)
    assert len(norms) >= 10  # BN per device, plain BN, GN G = 32, LN, IN, G = 2..64, channels per group, BRN
    for cfg in norms.values():
        model = build_model(cfg.model, NormSpec.from_config(cfg.norm), (3, 32, 32), 2)
        assert sum(p.numel() for p in model.parameters()) > 2e7
