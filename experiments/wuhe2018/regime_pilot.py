"""The regime pilot (README, "The regime pilot"): which design puts a profile's ResNet cells in the paper's
regime (docs/claims.md, "The regime"), chosen by a rule fixed before the pilot ran.

    .venv/bin/python experiments/wuhe2018/regime_pilot.py ROUND [OUT]   # outputs/wuhe2018_pilot

ROUND: quick, quick2, quick3, quick4 or full.

Pilot cells: BN and GN at N = 32 and N = 2 as the profile plans them (``normexp-reproduce --profile P``),
seed 0, with the design's base lr (lr = base x N / 32) and length; the test set is read once, at the end,
with the clean training set. A design is **admissible** when every cell has R1 (clean training accuracy minus
test accuracy at most 3 points) and, for BN and for GN, the larger of the two clean training losses is at
most 1.25x the smaller (R2 between the ends of the sweep). The rule, per profile:

- quick: the admissible design with the fewest images per run (the budget), then the lowest worst clean
  training loss over the four cells;
- full: every design trains 2 epochs (the most that the full cell list holds within its 90 minutes, from the
  hand pilot's per-run cost): the admissible design with the lowest worst clean training loss;
- no admissible design: among those with R1, the smallest worst R2 ratio (the profile is then outside the
  regime, and its regime-gated verdicts say so).
- quick2, a second round written after round 1 found no admissible quick design and before it ran: the same
  rule over its designs; if none is admissible, round 1's choice stands.
- quick3, a third round written after the quick suite's second seed put round 2's choice outside R2 (GN at
  N = 32, seed 1) and before it ran: one epoch with a linear lr warm-up over the first 5% of each run's
  steps (Goyal et al.'s large-batch recipe, cosine after it), base lr 0.4 or 0.8, seeds 0 and 1; a design is
  admissible when it is admissible at each seed; the same rule over the admissible ones; if none is
  admissible, round 2's choice stands.
- quick4, a fourth round written after round 3 and before it ran: BN and GN at N = 32 and N = 2 only (the
  issue's first cut: quick's sweep drops N = 4, which pays for longer runs), 90,000 or 120,000 images per run
  (1.5 or 2 epochs) at full's base lr 0.2, R1 on all 10,000 test images, seeds 0 and 1; a design is
  admissible when it is admissible at each seed; among those, the fewest images per run, then the lowest
  worst clean training loss; if none is admissible, round 2's choice stands.

No test error enters the choice except through R1's gap. Writes
``results/<profile>/wuhe2018/regime_pilot/pilot.csv`` (round 2: ``round2.csv``; one row per design and cell),
its ``*_designs.csv`` (the rule's measures per design), and prints the choice.
"""
import sys
from pathlib import Path

import pandas as pd

from normexp.claims import format_value
from normexp.claims.regime import R1_MAX_GAP, R2_MAX_RATIO
from normexp.reproduce import plan
from normexp.reproduce.execute import execute
from normexp.reproduce.spec import discover, merge_overrides, override_key

CELLS = ("bn_n32", "gn_n32", "bn_n2", "gn_n2")
ALL_TEST = ("data.test_subset=null",)
DESIGNS = {  # round -> {design: (images per run or None for the profile's epochs, base lr, more overrides)}
    "quick": {f"{images // 1000}k_lr{base:g}": (images, base, ()) for images in (30000, 60000)
              for base in (0.4, 0.8, 1.6)},
    # round 2 (README): no round-1 design was admissible; one epoch at the lowest lrs, R1 on all 10,000
    # test images (2,000 leave the gap's estimate about a point of noise)
    "quick2": {f"60k_lr{base:g}_test10k": (60000, base, ALL_TEST) for base in (0.2, 0.4)},
    # round 3 (README): a 5% linear warm-up, two seeds (round 2's choice left R2 at the suite's seed 1)
    "quick3": {f"60k_lr{base:g}_warmup5": (60000, base, ALL_TEST) for base in (0.4, 0.8)},
    # round 4 (README): longer runs at full's base lr, the sweep's ends only (N = 4 leaves quick's sweep)
    "quick4": {f"{images // 1000}k_lr0.2_test10k": (images, 0.2, ALL_TEST) for images in (90000, 120000)},
    "full": {f"2ep_lr{base:g}": (None, base, ()) for base in (0.2, 0.4, 0.8)},
}
WARMUP = {"quick3": 0.05}  # the round's warm-up, a fraction of each run's steps
SEEDS = {"quick3": (0, 1), "quick4": (0, 1)}  # the round's seeds (others: seed 0)
PROFILE = {"quick": "quick", "quick2": "quick", "quick3": "quick", "quick4": "quick",
           "full": "full"}  # the round's profile
RESULT_NAME = {"quick": "pilot", "quick2": "round2", "quick3": "round3", "quick4": "round4", "full": "pilot"}
SET_HERE = {"optim.lr", "seed", "hydra.run.dir", "train.eval_every", "train.save_final", "train.steps"}
ROOT = Path(__file__).resolve().parents[2]
DEVICES = 8


def per_device(cell: str) -> int:
    return int(cell.rsplit("_n", 1)[1])


def planned_cells(profile: str) -> dict[str, list[str]]:
    """Seed 0's overrides of each pilot cell at the profile, without the keys the pilot sets."""
    planner = plan.Planner(profile, ROOT / "outputs/reproduce", jobs=2)
    exp = next(e for e in discover() if e.id == "wuhe2018/batch_sweep")
    return {r.cell: [o for o in r.overrides if override_key(o) not in SET_HERE]
            for r in plan.plan_experiment(exp, planner)[0] if r.cell in CELLS and r.seed == 0}


def design_overrides(cell: str, overrides: list[str], images: int | None, base_lr: float,
                     more: tuple[str, ...] = (), warmup: float = 0.0, seed: int = 0) -> list[str]:
    n = per_device(cell)
    steps = images // (DEVICES * n) if images else None
    length = [f"train.steps={steps}"] if steps else []
    warm = [f"schedule.warmup_steps={int(warmup * steps)}"] if warmup and steps else []
    return merge_overrides(overrides, [f"optim.lr={format_value(base_lr * n / 32)}", *length, *warm, *more,
                                       "train.eval_every=0", "train.eval_train_images=10000", f"seed={seed}"])


def planned_runs(pilot_round: str, out: Path) -> list[plan.PlannedRun]:
    profile = PROFILE[pilot_round]
    planner = plan.Planner(profile, out, jobs=2)
    runs = []
    warmup = WARMUP.get(pilot_round, 0.0)
    for design, (images, base_lr, more) in DESIGNS[pilot_round].items():
        for seed in SEEDS.get(pilot_round, (0,)):
            for cell, overrides in planned_cells(profile).items():
                o = design_overrides(cell, overrides, images, base_lr, more, warmup, seed)
                cfg, chosen = planner.compose(o)
                folder = out / profile / design / (cell if seed == 0 else f"{cell}_seed{seed}")
                runs.append(plan.PlannedRun(design, cell, seed, o, folder, cfg, chosen))
    return runs


def pilot_table(runs: list[plan.PlannedRun], summaries: list[dict]) -> pd.DataFrame:
    rows = []
    for r, s in zip(runs, summaries, strict=True):
        images, base_lr, _ = DESIGNS_BY_NAME[r.experiment]
        acc, clean_acc = s.get("test_acc"), s.get("train_clean_acc")
        rows.append({"design": r.experiment, "images_per_run": images, "base_lr": base_lr, "cell": r.cell,
                     "seed": r.seed,
                     "status": s.get("status"), "clean_train_loss": s.get("train_clean_loss"),
                     "clean_train_acc": clean_acc, "gap_points": None if acc is None or clean_acc is None
                     else round(100 * (clean_acc - acc), 3), "seconds": round(s.get("wall_seconds") or 0, 1)})
    return pd.DataFrame(rows)


DESIGNS_BY_NAME = {name: d for designs in DESIGNS.values() for name, d in designs.items()}


def judge(table: pd.DataFrame) -> pd.DataFrame:
    """Per design: R1, the worst R2 ratio (per norm and seed, the larger loss over the smaller), the worst
    clean training loss, the cost, and whether it is admissible (at every seed)."""
    out = []
    if "seed" not in table:
        table = table.assign(seed=0)
    for design, rows in table.groupby("design", sort=False):
        loss = rows.set_index(["seed", "cell"])["clean_train_loss"].astype(float)
        trained = (rows["status"] == "completed").all() and loss.notna().all()
        ratios = [max(loss[s, f"{n}_n32"], loss[s, f"{n}_n2"]) / min(loss[s, f"{n}_n32"], loss[s, f"{n}_n2"])
                  for n in ("bn", "gn") for s in rows["seed"].unique()] if trained else [float("inf")]
        r1 = trained and bool((rows["gap_points"] <= R1_MAX_GAP).all())
        out.append({"design": design, "R1": r1, "worst R2 ratio": round(max(ratios), 3),
                    "worst clean train loss": round(loss.max(), 4) if trained else None,
                    "largest gap": rows["gap_points"].max(), "seconds": rows["seconds"].sum(),
                    "images_per_run": rows["images_per_run"].iloc[0],
                    "admissible": r1 and max(ratios) <= R2_MAX_RATIO})
    return pd.DataFrame(out)


def choose(judged: pd.DataFrame, profile: str) -> str | None:
    """The design by the rule; None where round 2, 3 or 4 finds nothing admissible (the choice before it
    stands)."""
    ok = judged[judged["admissible"]]
    if len(ok):
        keys = (["images_per_run"] if profile.startswith("quick") else []) + ["worst clean train loss"]
        return ok.sort_values(keys).iloc[0]["design"]
    if RESULT_NAME[profile] != "pilot":  # a later round: the choice before it stands
        return None
    return judged[judged["R1"]].sort_values("worst R2 ratio").iloc[0]["design"]


def main(pilot_round: str, out: Path) -> None:
    runs = planned_runs(pilot_round, out)
    summaries = execute(runs, jobs=2)
    table = pilot_table(runs, summaries)
    name = RESULT_NAME[pilot_round]
    result = ROOT / f"results/{PROFILE[pilot_round]}/wuhe2018/regime_pilot/{name}.csv"
    result.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(result, index=False)
    judged = judge(table)
    judged.to_csv(result.with_name(f"{name}_designs.csv"), index=False)
    print(table.to_string(index=False), judged.to_string(index=False), sep="\n\n")
    print(f"\nchosen ({pilot_round}): {choose(judged, pilot_round)}")


if __name__ == "__main__":
    if len(sys.argv) < 2 or sys.argv[1] not in DESIGNS:
        given = sys.argv[1] if len(sys.argv) > 1 else None
        sys.exit(f"regime_pilot.py: error: profile={given!r} is not valid: choose one of: "
                 + ", ".join(DESIGNS))
    main(sys.argv[1], Path(sys.argv[2]) if len(sys.argv) > 2 else ROOT / "outputs/wuhe2018_pilot")
