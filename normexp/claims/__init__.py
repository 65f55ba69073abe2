"""What experiment hooks import: the verdict rule, an experiment's runs, and the helpers several papers'
checks share.

A check reads one experiment's runs through :class:`Runs` (``ctx.runs``), turns each cell (one
configuration, several seeds) into a :class:`Cell` of per-seed numbers, compares cells with :func:`compare`,
and returns a :class:`Verdict`. The rule, :data:`RULE`, is the only one; it is printed in every report. A
``stages`` hook raises :class:`Pending` while the runs it needs are unfinished.
"""

from .lr_search import cells_at_multiples, format_value, grid_cells, largest_training_lr, trains
from .measures import percentile_columns, percentile_drift
from .probe_stats import paired_difference, probe_costs, probe_median, probe_values
from .runs import Pending, Runs, steps_to, steps_to_target, value_at
from .verdict import FAIL, INCONCLUSIVE, PASS, RULE, Cell, Outcome, Verdict, combine, compare

__all__ = ["FAIL", "INCONCLUSIVE", "PASS", "RULE", "Cell", "Outcome", "Pending", "Runs", "Verdict",
           "cells_at_multiples", "combine", "compare", "format_value", "grid_cells", "largest_training_lr",
           "paired_difference", "percentile_columns", "percentile_drift", "probe_costs", "probe_median",
           "probe_values", "steps_to", "steps_to_target", "trains", "value_at"]
