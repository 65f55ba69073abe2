"""The full profile's base-lr pilot (README, "Base lr"): five of the full profile's ResNet cells (BN, GN, LN
at N = 32; BN, GN at N = 2), seed 0, at base lr 0.1 / 0.2 / 0.4 / 0.8 (lr = base x N / 32), every grid point
run (``normexp-lrmap --dense``), the test set read once at the end. 13.5 min on 2 idle cores.

    .venv/bin/python experiments/wuhe2018/lr_pilot.py [OUT]   # default outputs/wuhe2018_lr_pilot

Each cell's overrides are the planned run's (``normexp-reproduce --profile full``), so the pilot follows the
spec. Writes one normexp-lrmap folder per cell under OUT and ``results/full/wuhe2018/lr_pilot/pilot.csv``
(final training loss and test error per cell and base lr), the table the choice is read from.
"""
import sys
from pathlib import Path

import pandas as pd

from normexp import lrmap
from normexp.reproduce import plan
from normexp.reproduce.spec import discover, override_key

CELLS = {"wuhe2018/batch_sweep": ("bn_n32", "gn_n32", "bn_n2", "gn_n2"), "wuhe2018/norms": ("ln_n32",)}
BASE_LRS = (0.1, 0.8)  # the grid's ends at N = 32; its points are a factor 2 (--resolution) apart
SET_HERE = {"optim.lr", "seed", "hydra.run.dir", "train.eval_every", "train.log_every", "train.save_final"}
ROOT = Path(__file__).resolve().parents[2]
RESULT = ROOT / "results/full/wuhe2018/lr_pilot/pilot.csv"


def per_device(cell: str) -> int:
    return int(cell.rsplit("_n", 1)[1])


def planned_cells() -> dict[str, list[str]]:
    """Seed 0's overrides of each pilot cell at the full profile, without the keys the pilot sets."""
    planner = plan.Planner("full", ROOT / "outputs/reproduce", jobs=2)
    cells = {}
    for exp in discover():
        if exp.id in CELLS:
            for run in plan.plan_experiment(exp, planner)[0]:
                if run.cell in CELLS[exp.id] and run.seed == 0:
                    cells[run.cell] = [o for o in run.overrides if override_key(o) not in SET_HERE]
    return cells


def lrmap_args(cell: str, overrides: list[str], out: Path) -> list[str]:
    n = per_device(cell)
    lo, hi = (base * n / 32 for base in BASE_LRS)
    return [*overrides, "train.eval_every=0", f"train.log_every={160 // n}", "--dense", "--jobs", "2",
            "--resolution", "2", "--lr-min", f"{lo:g}", "--lr-max", f"{hi:g}", "--out", str(out / cell)]


def pilot_table(out: Path, cells) -> pd.DataFrame:
    rows = []
    for cell in cells:
        points = pd.read_csv(out / cell / "lrmap_dense_points.csv").drop(columns=["run_dir"])
        points["cell"] = cell
        points.insert(1, "base_lr", (points["lr"] * 32 / per_device(cell)).round(4))
        rows.append(points)
    return pd.concat(rows)


def main(out: Path) -> None:
    cells = planned_cells()
    for cell, overrides in cells.items():
        lrmap.main(lrmap_args(cell, overrides, out))
    table = pilot_table(out, cells)
    RESULT.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(RESULT, index=False)
    worst = table.groupby("base_lr")["train_loss"].max().rename("worst final training loss")
    print(table.to_string(index=False), worst.to_string(), sep="\n")
    print(f"lowest worst final training loss: base lr {worst.idxmin()}")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "outputs/wuhe2018_lr_pilot")
