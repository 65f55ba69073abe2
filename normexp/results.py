"""Run tables: every run under a folder (one run, a multirun sweep, a reproduction tree) -> one pandas table.

One row per run dir (a folder holding ``config.yaml`` and ``meta.json``): flattened config keys
(``model.name``, ``optim.lr``, ...), the config group choices (``model``, ``norm``, ``data``, ...), and the
summary (``status``, ``test_acc``, ...). ``status`` is ``completed``, ``diverged``, ``failed`` (an error),
``interrupted`` (Ctrl-C, SIGTERM, or its sweep's main process ended) or, for a run without ``summary.json``
(killed, or running now), ``incomplete``; the printed table shows any status but ``completed`` in place of
losses and accuracies. This is the library entry for plots and claim checks too: ``load_runs(dir)`` and
``load_metrics(runs)``.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

import pandas as pd
import yaml

from normexp.errors import ConfigError, choices
from normexp.records import CONFIG, META, SUMMARY, SUMMARY_KEYS, read_json, read_metrics

SUMMARY_COLUMNS = list(SUMMARY_KEYS)
OUTCOME_COLUMNS = ["train_loss", "train_acc", "test_loss", "test_acc", "train_clean_loss", "train_clean_acc"]
GROUPS = ["model", "norm", "data", "optim", "schedule", "probes", "logger", "profile"]


def is_run_dir(path: Path) -> bool:
    """normexp writes both; Hydra's ``.hydra/`` and wandb's ``files/`` have a config.yaml of their own."""
    return (path / CONFIG).exists() and (path / META).exists()


def find_runs(root: Path) -> list[Path]:
    root = Path(root)
    if is_run_dir(root):
        return [root]
    return sorted(p.parent for p in root.rglob(CONFIG) if is_run_dir(p.parent))


def _flatten(prefix: str, value, out: dict) -> None:
    if isinstance(value, dict):
        for k, v in value.items():
            _flatten(f"{prefix}.{k}" if prefix else str(k), v, out)
    else:
        out[prefix] = json.dumps(value) if isinstance(value, list) else value


def run_row(run_dir: Path) -> dict:
    row: dict = {}
    _flatten("", yaml.safe_load((run_dir / CONFIG).read_text()) or {}, row)
    meta = read_json(run_dir / META) or {}
    for group, choice in (meta.get("choices") or {}).items():
        if group in GROUPS and group not in row:
            row[group] = choice
    row["overrides"] = " ".join(meta.get("overrides") or [])
    summary = read_json(run_dir / SUMMARY) or {"status": "incomplete"}
    row.update({k: summary.get(k) for k in SUMMARY_COLUMNS})
    row.update({k: v for k, v in summary.items() if k not in row and k != "error"})  # e.g. test_acc_precise
    if summary.get("error"):
        row["error"] = summary["error"]
    row["run_dir"] = str(run_dir)
    return row


def _natural_key(path: Path):
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", str(path))]


def load_runs(root: Path) -> pd.DataFrame:
    rows = [run_row(d) for d in sorted(find_runs(root), key=_natural_key)]
    table = pd.DataFrame(rows)
    for col in OUTCOME_COLUMNS:
        if col in table:
            table[col] = pd.to_numeric(table[col], errors="coerce")
    return table


def load_metrics(run_dirs) -> pd.DataFrame:
    """All metric records of the given run dirs, long format, with a ``run_dir`` column."""
    if isinstance(run_dirs, (str, Path)):
        run_dirs = [run_dirs]
    frames = [pd.DataFrame(read_metrics(d)).assign(run_dir=str(d)) for d in run_dirs]
    frames = [f for f in frames if len(f)]
    if not frames:
        return pd.DataFrame(columns=["step", "split", "run_dir"])
    return pd.concat(frames, ignore_index=True)


def swept_columns(table: pd.DataFrame) -> list[str]:
    """The keys the runs' command lines set (``norm``, ``data.batch_size``, ...) whose value differs between
    runs: what a sweep swept."""
    lines = table.get("overrides", [])
    keys = dict.fromkeys(o.split("=", 1)[0].lstrip("+~") for line in lines for o in line.split())
    return [k for k in keys if k in table and table[k].astype(str).nunique(dropna=False) > 1]


def group_keys(table: pd.DataFrame, by: list[str] | None, option: str = "--by") -> list[str]:
    """``by`` checked against the table's columns; None: every swept key but ``seed``."""
    if by is None:
        return [k for k in swept_columns(table) if k != "seed"]
    for key in by:
        if key not in table:
            raise ConfigError(option, key, "not a column of the run table; " + choices(
                [c for c in table.columns if c not in ("run_dir", "overrides", "error")]))
    return list(by)


def aggregate(table: pd.DataFrame, by: list[str], metrics=OUTCOME_COLUMNS, stats=("mean", "spread")
              ) -> pd.DataFrame:
    """One row per group of ``by``: ``runs``, how many ``completed`` and ``diverged`` (any other status, e.g.
    ``failed`` or unfinished, is in ``runs`` only), and per metric ``<metric>_<stat>`` over the group's
    completed runs for each of ``stats`` (``mean``, ``spread`` = max - min, ``min``, ``max``)."""
    t = table.assign(completed=table["status"] == "completed", diverged=table["status"] == "diverged")
    metrics = [m for m in metrics if m in t]
    for m in metrics:
        t[m] = pd.to_numeric(t[m], errors="coerce").where(t["completed"])
    if not by:
        t, by = t.assign(group="all"), ["group"]
    functions = {"mean": "mean", "spread": _spread, "min": "min", "max": "max"}
    columns = {f"{m}_{s}": (m, functions[s]) for m in metrics for s in stats}
    out = t.groupby(by, sort=False, dropna=False).agg(
        runs=("status", "size"), completed=("completed", "sum"), diverged=("diverged", "sum"), **columns)
    return out.reset_index()


def _spread(values: pd.Series) -> float:
    return values.max() - values.min()


def display_table(table: pd.DataFrame, root: Path) -> pd.DataFrame:
    columns = ["run_dir", *swept_columns(table), "status", "step", "train_loss", "test_acc",
               "steps_per_second"]
    shown = table[[*dict.fromkeys(columns)]].copy()
    shown["run_dir"] = [str(Path(d).relative_to(root)) if Path(d) != Path(root) else "."
                        for d in shown["run_dir"]]
    unfinished = shown["status"] != "completed"  # a diverged run shows "diverged", not NaN or a number
    for col in ("train_loss", "test_acc"):
        shown[col] = shown[col].astype(object).where(~unfinished, shown["status"])
    return shown


def cli(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="normexp-results", description=__doc__.splitlines()[0])
    parser.add_argument("dir", type=Path, help="a run dir, a multirun sweep dir or any folder of runs")
    parser.add_argument("--csv", type=Path, help="write the full table (every column) to this CSV file")
    parser.add_argument("--by", nargs="?", const="", metavar="KEYS",
                        help="aggregate seeds: one row per group of these comma-separated keys (mean, "
                             "spread = max - min, counts); --by alone: every swept key but seed")
    args = parser.parse_args(argv)
    if not args.dir.exists():
        print(f"normexp-results: error: {args.dir} does not exist", file=sys.stderr)
        return 2
    table = load_runs(args.dir)
    if table.empty:
        print(f"normexp-results: error: no runs (folders with {CONFIG}) under {args.dir}", file=sys.stderr)
        return 2
    if args.by is not None:
        try:
            keys = group_keys(table, [k for k in args.by.split(",") if k] or None)
        except ConfigError as error:
            print(f"normexp-results: error: {error}", file=sys.stderr)
            return 2
        table = aggregate(table, keys)
    shown = table if args.by is not None else display_table(table, args.dir)
    with pd.option_context("display.max_rows", 500, "display.max_columns", 50, "display.width", 200,
                           "display.float_format", "{:.4g}".format):
        print(shown.to_string(index=False))
    if args.csv:
        args.csv.parent.mkdir(parents=True, exist_ok=True)
        table.to_csv(args.csv, index=False)
        print(f"wrote {len(table)} {'groups' if args.by is not None else 'runs'} x {table.shape[1]} columns "
              f"to {args.csv}")
    return 0


if __name__ == "__main__":
    raise SystemExit(cli())
