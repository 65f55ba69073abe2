"""normexp-lrmap: how large a learning rate each cell of a grid tolerates, and an lr range test.

For each cell (one combination of the swept keys, e.g. ``norm=batch data.batch_size=32``) the map finds

- the **largest stable lr**: the largest lr on a geometric grid (``lr_min * resolution**k``) that *trains*:
  every seed completes (none diverges or fails) and the seed mean of the final **test accuracy** is at least
  ``fraction`` of the best seed mean over the cell's lrs;
- the **best lr**: the lr whose seeds all complete with the lowest seed-mean final loss (``--loss``,
  default the final training loss).

Search: a coarse scan (every ``stride``-th grid point, ``points_per_decade`` per decade), then bisection in
log space between the largest lr that trains and the smallest evaluated lr above it, until they are
neighbours on the grid (one resolution step apart). ``--dense`` runs every grid point instead, for checking
the search. Every run is an ordinary run dir ``<out>/<cell>/lr<lr>/seed<k>`` run through the reproduction
executor (``--jobs`` joblib workers), so a killed map resumes: finished runs are read, not rerun.

The range test (Smith 2017; fastai's ``lr_find``): one run with an exponentially rising lr, its loss vs lr,
and a suggestion; see :func:`lr_range_test` and :func:`suggest_lr`.

Modules: ``search`` (the grid, the search, a map's cells and state; no training), ``run`` (running a map
through the reproduction executor), ``range_test``, ``figures`` and ``cli`` (``normexp-lrmap``). Every name
is importable from here.
"""

from normexp.errors import ConfigError
from normexp.lrmap.cli import cli, main, parse_args
from normexp.lrmap.figures import heatmap, loss_vs_lr, map_figures, range_test_figure
from normexp.lrmap.range_test import (
    SUGGESTION_RULES,
    RangeTest,
    lr_range_test,
    range_test_column,
    suggest,
    suggest_lr,
)
from normexp.lrmap.run import MapFailed, MapRun, lr_map
from normexp.lrmap.search import (
    LOSS_KEYS,
    RESERVED_KEYS,
    SCORE_KEY,
    LrGrid,
    LrMap,
    MapCell,
    cells_from_axes,
    next_indices,
    parse_overrides,
    per_lr,
    read_points,
    run_dir,
    search_vs_dense,
    trains,
)

__all__ = ["LOSS_KEYS", "RESERVED_KEYS", "SCORE_KEY", "SUGGESTION_RULES", "ConfigError", "LrGrid", "LrMap",
           "MapCell", "MapFailed", "MapRun", "RangeTest", "cells_from_axes", "cli", "heatmap", "loss_vs_lr",
           "lr_map", "lr_range_test", "main", "map_figures", "next_indices", "parse_args", "parse_overrides",
           "per_lr", "range_test_column", "range_test_figure", "read_points", "run_dir", "search_vs_dense",
           "suggest", "suggest_lr", "trains"]
