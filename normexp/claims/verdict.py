"""The verdict rule: cells of per-seed numbers, comparisons between them, and a claim's verdict.

A check reads one experiment's runs through :class:`Runs`, turns each cell (one configuration, several
seeds) into a :class:`Cell` of per-seed numbers, compares cells with :func:`compare`, and returns a
:class:`Verdict` built from the comparisons' :class:`Outcome`\\ s. The rule below is the only one; it is
printed in every report.
"""

from __future__ import annotations

import math
import operator
from dataclasses import dataclass, field

PASS, FAIL, INCONCLUSIVE = "pass", "fail", "inconclusive"

RULE = (
    "Each cell (one configuration) is run with several seeds. A cell's number is the mean over its seeds; "
    "its spread is max - min over its seeds (0 for one seed). A comparison of two cells (or of a cell with "
    "a fixed threshold, spread 0; a threshold that is a multiple f of a cell's mean has spread f times that "
    "cell's spread) is decided by the sign of the difference of the means only when that difference is at "
    "least the larger of the two spreads; otherwise it is inconclusive. A comparison of means where either "
    "cell (not a fixed threshold) has one seed is inconclusive ('one seed'): one run has no spread to weigh "
    "the difference against. A diverged run has no number: it "
    "ranks below every run that trained; a cell whose seeds all diverged is 'diverged', and a cell where "
    "only some seeds diverged makes any comparison that uses it inconclusive (its seeds disagree). A run "
    "that failed, was interrupted or is absent is missing: a claim that needs it is inconclusive ('runs "
    "are missing'). "
    "A claim with several conditions fails when one of them fails, passes when all pass, and is "
    "inconclusive otherwise."
)

OPS = {"<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge}


@dataclass(frozen=True)
class Cell:
    """One cell's measurement: a number per seed that trained, plus counts of diverged and missing runs."""

    label: str
    values: tuple[float, ...] = ()
    diverged: int = 0
    missing: int = 0

    @property
    def seeds(self) -> int:
        return len(self.values) + self.diverged + self.missing

    @property
    def state(self) -> str:
        """``missing`` (some run absent or failed), ``diverged`` (every seed), ``mixed`` or ``trained``."""
        if self.missing or not self.seeds:
            return "missing"
        if self.diverged:
            return "diverged" if not self.values else "mixed"
        return "trained"

    @property
    def mean(self) -> float:
        return sum(self.values) / len(self.values) if self.values else math.nan

    @property
    def spread(self) -> float:
        return max(self.values) - min(self.values) if self.values else math.nan

    def describe(self, fmt: str = "{:.4g}") -> str:
        n = f"{self.seeds} seed{'s' if self.seeds != 1 else ''}"
        notes = [f"{k} {what}" for k, what in ((self.diverged, "diverged"), (self.missing, "missing")) if k]
        if not self.values:
            return f"{self.label}: no number ({', '.join(notes)} of {n})"
        extra = f"; {', '.join(notes)}" if notes else ""
        return f"{self.label} {fmt.format(self.mean)} (spread {fmt.format(self.spread)}, {n}{extra})"

    def to_dict(self) -> dict:
        return {"mean": _finite_or_none(self.mean), "spread": _finite_or_none(self.spread),
                "values": list(self.values), "diverged": self.diverged, "missing": self.missing,
                "state": self.state}


def _finite_or_none(x: float):
    return x if isinstance(x, (int, float)) and math.isfinite(x) else None


@dataclass(frozen=True)
class Outcome:
    """One condition of a claim: its status and the sentence that states what was compared."""

    status: str
    text: str
    missing: bool = False


def compare(a: Cell, op: str, b: Cell | float, factor: float = 1.0, offset: float = 0.0,
            fmt: str = "{:.4g}") -> Outcome:
    """Test ``mean(a) op factor * mean(b) + offset`` under :data:`RULE` (``b`` may be a fixed number)."""
    if op not in OPS:
        raise ValueError(f"op must be one of {list(OPS)}")
    ref = b if isinstance(b, Cell) else Cell(fmt.format(b), (float(b),))
    ref_text = b.describe(fmt) if isinstance(b, Cell) else fmt.format(b)
    rhs_text = (f"{factor:g} x " if factor != 1 else "") + ref_text + (
        f" {'+' if offset >= 0 else '-'} {fmt.format(abs(offset))}" if offset else "")
    text = f"{a.describe(fmt)} {op} {rhs_text}"
    states = {a.state, ref.state}
    if "missing" in states:
        return Outcome(INCONCLUSIVE, f"{text}: runs are missing", missing=True)
    if "mixed" in states:
        return Outcome(INCONCLUSIVE, f"{text}: some seeds diverged and some did not")
    if states == {"diverged"}:
        return Outcome(INCONCLUSIVE, f"{text}: both diverged")
    if "diverged" in states:  # a diverged run ranks below every run that trained
        a_higher = ref.state == "diverged"
        holds = a_higher if op in (">", ">=") else not a_higher
        return Outcome(PASS if holds else FAIL, f"{text}: {'holds' if holds else 'does not hold'} "
                       "(a diverged run ranks below one that trained)")
    lhs, rhs = a.mean, factor * ref.mean + offset
    spread = max(a.spread, abs(factor) * ref.spread)
    diff = lhs - rhs
    # Both cells trained here (no diverged or missing seed), so one value means one seed. Only cells count: a
    # fixed number b is wrapped in a one-value Cell above. A diverged cell was decided above by rank, which
    # uses no spread: against it a one-seed cell is decided as before, and one diverged seed is not one seed.
    if len(a.values) == 1 or (isinstance(b, Cell) and len(b.values) == 1):
        return Outcome(INCONCLUSIVE, f"{text}: one seed")
    if spread > abs(diff):
        return Outcome(INCONCLUSIVE, f"{text}: difference {fmt.format(diff)} is within the seed spread "
                       f"{fmt.format(spread)}")
    holds = OPS[op](lhs, rhs)
    return Outcome(PASS if holds else FAIL, f"{text}: {'holds' if holds else 'does not hold'} "
                   f"(difference {fmt.format(diff)}, spread {fmt.format(spread)})")


def combine(outcomes: list[Outcome]) -> str:
    """Missing runs make the claim inconclusive; otherwise any fail fails it, all pass passes it."""
    statuses = [o.status for o in outcomes]
    if not outcomes or any(o.missing for o in outcomes):
        return INCONCLUSIVE
    if FAIL in statuses:
        return FAIL
    return PASS if all(s == PASS for s in statuses) else INCONCLUSIVE


@dataclass
class Verdict:
    """A claim's verdict with the numbers it compared (seed mean and spread per cell)."""

    id: str
    status: str
    sentence: str
    measured: dict = field(default_factory=dict)  # label -> Cell.to_dict() or a plain number/text
    outcomes: list[str] = field(default_factory=list)
    paper: str = ""
    figure: str = ""
    regime: dict = field(default_factory=dict)  # claims.regime: the measures, and whether they gated it

    @classmethod
    def from_outcomes(cls, claim_id: str, outcomes: list[Outcome], cells: list[Cell], sentence: str = "",
                      extra: dict | None = None) -> Verdict:
        status = combine(outcomes)
        measured = {c.label: c.to_dict() for c in cells} | (extra or {})
        lead = sentence or "; ".join(o.text for o in outcomes)
        return cls(claim_id, status, lead, measured, [f"[{o.status}] {o.text}" for o in outcomes])

    @classmethod
    def inconclusive(cls, claim_id: str, sentence: str, measured: dict | None = None) -> Verdict:
        return cls(claim_id, INCONCLUSIVE, sentence, measured or {})

    def to_dict(self) -> dict:
        return {"id": self.id, "status": self.status, "figure": self.figure, "paper": self.paper,
                "sentence": self.sentence, "outcomes": self.outcomes, "measured": self.measured,
                "regime": self.regime}
