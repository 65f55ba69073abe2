"""A planned run: one (cell, seed) of an experiment, its overrides, composed config and run dir, and what the
run dir holds so far."""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field
from pathlib import Path

from normexp.compose import compose
from normexp.identity import identity_changes
from normexp.records import CONFIG, FINISHED, SUMMARY, read_json


@dataclass
class PlannedRun:
    experiment: str
    cell: str
    seed: int
    overrides: list[str]
    run_dir: Path
    cfg: object = None
    choices: dict = field(default_factory=dict)
    steps: int | None = None

    @property
    def status(self) -> str:
        summary = read_json(self.run_dir / SUMMARY)
        if summary:
            return summary.get("status", "failed")
        return "incomplete" if (self.run_dir / CONFIG).exists() else "missing"

    @property
    def finished(self) -> bool:
        return self.status in FINISHED

    @property
    def changes(self) -> list[tuple[str, object, object]]:
        """``(key, recorded, planned)`` for each key on which the run dir's recorded ``config.yaml`` and the
        planned config differ in what they compute (``normexp.identity``); empty without a recorded config.
        Other override text (another order, another checkpoint cadence or thread count) is the same run."""
        path = self.run_dir / CONFIG
        if not path.exists():
            return []
        planned = self.cfg if self.cfg is not None else compose(self.overrides)
        return identity_changes(path.read_text(), planned)

    @property
    def stale(self) -> bool:
        """The run dir holds another computation than planned (the spec changed since)."""
        return bool(self.changes)

    def command(self) -> str:
        return " ".join(["normexp-train", *map(shlex.quote, self.overrides),
                         shlex.quote(f"hydra.run.dir={self.run_dir}")])
