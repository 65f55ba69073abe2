"""What the probes cost: per cell and probe, the calls, seconds per call and their share of the run time."""

from __future__ import annotations

from normexp.claims import probe_costs


def probe_cost_table(ctx):
    return probe_costs(ctx.runs)
