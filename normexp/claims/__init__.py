"""What experiment hooks import: the verdict rule, an experiment's runs, and the helpers several papers'
checks share.

A check reads one experiment's runs through :class:`Runs` (``ctx.runs``), turns each cell (one
configuration, several seeds) into a :class:`Cell` of per-seed numbers, compares cells with :func:`compare`,
and returns a :class:`Verdict`. The rule, :data:`RULE`, is the only one; it is printed in every report. A
``stages`` hook raises :class:`Pending` while the runs it needs are unfinished.
"""

from .batch_noise import batch_stat_noise, population_test_acc, run_batch_noise, trained_run
from .lr_search import cells_at_multiples, format_value, grid_cells, largest_training_lr, trains
from .measures import percentile_columns, percentile_drift, percentile_net_displacement
from .probe_stats import probe_costs, probe_median, probe_values
from .runs import Pending, Runs, steps_to, steps_to_target, value_at
from .sweeps import error_percent, paired_difference, spread_ratio
from .verdict import FAIL, INCONCLUSIVE, PASS, RULE, Cell, Outcome, Verdict, combine, compare

__all__ = ["FAIL", "INCONCLUSIVE", "PASS", "RULE", "Cell", "Outcome", "Pending", "Runs", "Verdict",
           "batch_stat_noise", "cells_at_multiples", "combine", "compare", "error_percent", "format_value",
           "grid_cells", "largest_training_lr", "paired_difference", "percentile_columns", "percentile_drift",
           "percentile_net_displacement",
           "population_test_acc", "probe_costs", "probe_median", "probe_values", "run_batch_noise",
           "spread_ratio", "steps_to", "steps_to_target", "trained_run", "trains", "value_at"]
