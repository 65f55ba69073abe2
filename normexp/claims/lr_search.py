"""A learning-rate search as a reproduction stage: cells ``<prefix><lr>`` on a grid, the largest lr at which
a cell trains, and the cells of a later stage at multiples of it."""

from __future__ import annotations

from .runs import Pending
from .verdict import Cell


def format_value(v) -> str:
    """A value as it appears in an override and a cell name (floats with 6 significant digits)."""
    return f"{v:.6g}" if isinstance(v, float) else str(v)


def grid_cells(runs, prefix: str) -> dict[float, str]:
    """lr -> cell name of the cells named ``<prefix><lr>``."""
    cells = runs.table["cell"].drop_duplicates()
    return {float(c[len(prefix):]): c for c in cells if c.startswith(prefix)}


def trains(cells: dict[float, Cell], fraction: float = 0.5) -> dict[float, bool]:
    """A cell trains when it does not diverge and ends above ``fraction`` of the final number of the best
    cell. Decided on seed means (this picks a learning rate; it is not a verdict): a cell where any seed
    diverged does not train."""
    best = max((c.mean for c in cells.values() if c.state == "trained"), default=None)
    return {lr: c.state == "trained" and best is not None and c.mean > fraction * best
            for lr, c in cells.items()}


def largest_training_lr(runs, prefix: str, fraction: float = 0.5) -> float | None:
    """The largest grid lr whose cell trains (see :func:`trains`); None when none does. Raises
    :class:`Pending` until every run of the grid is finished."""
    cells = {lr: runs.cell(name) for lr, name in grid_cells(runs, prefix).items()}
    if not cells or any(c.state == "missing" for c in cells.values()):
        raise Pending(f"the lr search needs every run of its grid ({prefix}*) finished")
    ok = trains(cells, fraction)
    return max((lr for lr, good in ok.items() if good), default=None)


def cells_at_multiples(entries: list[dict], base_lr: float | None) -> list[dict]:
    """Stage cells ``{name, overrides}`` at ``optim.lr = multiple x base_lr`` for entries
    ``{name, multiple, overrides}``; none when there is no base lr."""
    if base_lr is None:
        return []
    lr = lambda e: format_value(e["multiple"] * base_lr)
    return [{"name": e["name"], "overrides": [*e["overrides"], f"optim.lr={lr(e)}"]}
            for e in entries]
