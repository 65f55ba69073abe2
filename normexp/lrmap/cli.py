"""normexp-lrmap: how large a learning rate each cell of a grid tolerates, and an lr range test.

The command line: the map (:mod:`normexp.lrmap`), the range test and the search-vs-dense check, written as
CSVs and figures under ``--out``.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

import pandas as pd

from normexp.errors import ConfigError, choices
from normexp.lrmap.figures import map_figures, range_test_figure
from normexp.lrmap.range_test import SUGGESTION_RULES, range_test_column
from normexp.lrmap.run import MapFailed, MapRun
from normexp.lrmap.search import LOSS_KEYS, LrGrid, LrMap, cells_from_axes, parse_overrides, search_vs_dense
from normexp.plots import save_figure


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="normexp-lrmap", description=__doc__.splitlines()[0],
                                epilog="example: normexp-lrmap norm=none,batch,group,layer "
                                       "data.batch_size=4,32,128 model=vgg_small profile=quick --seeds 0,1")
    p.add_argument("overrides", nargs="*", help="key=v1,v2 (a swept key: the cells are their cartesian "
                   "product) or key=value (the same in every cell)")
    p.add_argument("--seeds", default="0", help="comma-separated seeds per (cell, lr) (default 0)")
    p.add_argument("--lr-min", type=float, default=1e-3, help="lowest lr of the grid (default 1e-3)")
    p.add_argument("--lr-max", type=float, default=10.0, help="highest lr of the grid (default 10)")
    p.add_argument("--resolution", type=float, default=1.25,
                   help="grid factor (default 1.25): the edge is found to within it")
    p.add_argument("--points-per-decade", type=float, default=2.0, help="of the coarse scan (default 2)")
    p.add_argument("--fraction", type=float, default=0.5,
                   help="an lr trains when no seed diverged and its seed-mean final test accuracy is at "
                        "least this fraction of the cell's best (default 0.5)")
    p.add_argument("--loss", default="train_loss", help="final loss for the best lr: " + ", ".join(LOSS_KEYS))
    p.add_argument("--dense", action="store_true", help="run every grid point (to check the search)")
    p.add_argument("--jobs", type=int, default=2, help="runs in parallel (joblib workers)")
    p.add_argument("--range-test", action="store_true", help="also run the lr range test per cell")
    p.add_argument("--range-steps", type=int, default=100)
    p.add_argument("--rule", default="steepest", help="range-test suggestion: " + ", ".join(SUGGESTION_RULES))
    p.add_argument("--out", type=Path, default=Path("outputs/lrmap"), help="run dirs, table and figures")
    return p.parse_args(argv)


def _seeds(text: str) -> list[int]:
    try:
        seeds = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise ConfigError("--seeds", text, "comma-separated integers, e.g. 0,1") from None
    if not seeds:
        raise ConfigError("--seeds", text, "at least one seed")
    return seeds


def main(argv=None) -> int:
    args = parse_args(argv)
    command = "normexp-lrmap " + " ".join(map(shlex.quote, sys.argv[1:] if argv is None else argv))
    if args.loss not in LOSS_KEYS:
        raise ConfigError("--loss", args.loss, choices(LOSS_KEYS))
    if args.rule not in SUGGESTION_RULES:
        raise ConfigError("--rule", args.rule, choices(SUGGESTION_RULES))
    if not 0 < args.fraction <= 1:
        raise ConfigError("--fraction", args.fraction, "must be in (0, 1]")
    if args.jobs < 1:
        raise ConfigError("--jobs", args.jobs, "must be an integer >= 1")
    axes, fixed = parse_overrides(args.overrides)
    grid = LrGrid(args.lr_min, args.lr_max, args.resolution, args.points_per_decade)
    cells = cells_from_axes(axes)
    lrmap = LrMap(cells, _seeds(args.seeds), grid, args.fraction, args.loss, args.dense)
    run = MapRun(lrmap, fixed, args.out, args.jobs, log=lambda s: print(s, flush=True))
    table, points = run.run()
    figures = map_figures(table, points, cells, args.loss)
    if args.range_test:
        table, curves = range_test_column(run, table, args.range_steps, args.rule)
        curves.to_csv(args.out / "range_test.csv", index=False)
        figures["range_test"] = range_test_figure(curves, table)
    if args.dense:
        check = search_vs_dense(lrmap, run.points_of)
        check.to_csv(args.out / "lrmap_search_vs_dense.csv", index=False)
        print(check.to_string(index=False, float_format="{:.4g}".format))
        needed, grid_runs = check["search_runs"].sum(), check["dense_runs"].sum()
        print(f"normexp-lrmap: the search needs {needed} of the dense grid's {grid_runs} runs "
              f"({needed / grid_runs:.0%}); "
              f"largest stable lr within one step of the dense grid's in {int(check['agree'].sum())} of "
              f"{len(check)} cells")
    name = "lrmap_dense" if args.dense else "lrmap"
    table.to_csv(args.out / f"{name}.csv", index=False)
    points.to_csv(args.out / f"{name}_points.csv", index=False)
    for fig_name, fig in figures.items():
        save_figure(fig, args.out / (fig_name.replace("lrmap", name)), command)
    shown = table.drop(columns=["cell"] if axes else [])
    with pd.option_context("display.width", 200, "display.max_columns", 30, "display.float_format",
                           "{:.4g}".format):
        print(shown.to_string(index=False))
    used, dense = int(table["runs"].sum()), int(table["dense_runs"].sum())
    print(f"normexp-lrmap: {used} runs used ({run.ran} run now), {used / dense:.0%} of the dense grid's "
          f"{dense}; wrote {args.out / name}.csv and figures")
    return 0


def cli() -> None:
    try:
        raise SystemExit(main())
    except ConfigError as error:
        print(f"normexp-lrmap: error: {error}", file=sys.stderr)
        raise SystemExit(2) from None
    except MapFailed as error:
        print(f"normexp-lrmap: a run failed: {error}", file=sys.stderr)
        raise SystemExit(1) from None

