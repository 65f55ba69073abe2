"""normexp-reproduce: run experiments at a profile, aggregate, plot, check the claims, write results/.

An experiment is a YAML file under ``experiments/<paper>/`` (base overrides, cells, per-profile seeds and
overrides, claim ids with their check functions, plots, tables) plus Python hooks in the same folder
(``claims.py``, ``plots.py``). For each selected experiment this module

1. plans one run per (cell, seed) into ``<outputs>/<profile>/<paper>/<experiment>/<cell>/seed<k>``; an
   experiment's ``stages`` hook may add cells once earlier runs are finished (e.g. runs at 5 x eta0 once the
   eta0 search is done);
2. runs what is not finished yet in this process or in joblib workers (``--jobs``), each through
   ``normexp.train.run``: completed and diverged runs are skipped, interrupted ones resume, a run that raises
   is recorded as failed and the rest go on;
3. writes ``<results>/<profile>/<paper>/<experiment>/``: ``runs.csv`` (the run table), ``curves.csv`` (every
   metric record), the figures (PNG and PDF), the tables (CSV) and ``claims.json``;
4. rebuilds ``<results>/REPORT.md`` from every ``claims.json`` under ``<results>`` (full first, quick next).
"""

from __future__ import annotations

import argparse
import importlib
import json
import math
import os
import shlex
import shutil
import subprocess
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import yaml
from omegaconf import OmegaConf

from normexp import lifecycle
from normexp.claims import Runs, Verdict
from normexp.config import CONFIG_DIR, compose, validate
from normexp.errors import ConfigError, choices
from normexp.records import CONFIG, FINISHED, META, SUMMARY, RunDirBusy, atomic_write_json, read_json
from normexp.workers import use_warm_workers

ROOT = CONFIG_DIR.parent
EXPERIMENTS_DIR = ROOT / "experiments"
PROFILES = ("smoke", "quick", "full", "paper")
REPORT_ORDER = ("full", "quick", "paper", "smoke")
RUNTIME_KEYS = ("train.threads", "train.progress", "train.resume")  # change speed or output, not results
DATA_FALLBACKS = {"fashion_mnist": "mnist5k"}  # offline profiles only
SPEC_KEYS = {"title", "paper", "figure", "base", "cells", "profiles", "claims", "plots", "tables", "stages",
             "params"}


class Pending(Exception):  # noqa: N818 - a state, not an error
    """Raised by a ``stages`` hook whose input runs are not finished yet."""


# ---------------------------------------------------------------- experiment specs

def override_key(override: str) -> str:
    return override.split("=", 1)[0].lstrip("+~")


def merge_overrides(*groups: list[str]) -> list[str]:
    """Later overrides of the same key replace earlier ones (keeping the first one's position)."""
    merged: dict[str, str] = {}
    for group in groups:
        for o in group:
            key = override_key(o)
            if key in merged and not o.startswith("+") and merged[key].startswith("+"):
                o = "+" + o  # the key is still new to the base config
            merged[key] = o
    return list(merged.values())


@dataclass(frozen=True)
class CellSpec:
    name: str
    overrides: tuple[str, ...]


def expand_cells(entries: list[dict], grid_overrides: dict | None = None) -> list[CellSpec]:
    """Cells of a spec: ``{name, overrides, grid}``; a grid expands to one cell per value combination and
    ``{key}`` in the name is replaced by the value. A profile's ``grid`` (``grid_overrides``) replaces axes.
    """
    cells = []
    for entry in entries:
        grid = {k: (grid_overrides or {}).get(k, v) for k, v in (entry.get("grid") or {}).items()}
        combos: list[dict] = [{}]
        for key, values in grid.items():
            combos = [c | {key: v} for c in combos for v in values]
        for combo in combos:
            name = entry["name"]
            for key, v in combo.items():
                name = name.replace("{" + key + "}", format_value(v))
            cells.append(CellSpec(name, (*entry.get("overrides", []), *(f"{k}={format_value(v)}"
                                                                        for k, v in combo.items()))))
    return cells


def format_value(v) -> str:
    return f"{v:.6g}" if isinstance(v, float) else str(v)


@dataclass
class Experiment:
    id: str  # <paper>/<name>
    path: Path
    spec: dict

    @classmethod
    def load(cls, path: Path) -> Experiment:
        spec = yaml.safe_load(path.read_text()) or {}
        unknown = set(spec) - SPEC_KEYS
        exp_id = f"{path.parent.name}/{path.stem}"
        if unknown:
            raise ConfigError(f"{exp_id}: {sorted(unknown)[0]}", spec[sorted(unknown)[0]],
                              "not an experiment key; " + choices(SPEC_KEYS))
        for key in ("title", "cells", "profiles", "claims"):
            if key not in spec:
                raise ConfigError(f"{exp_id}: {key}", None, "every experiment spec needs it")
        return cls(exp_id, path, spec)

    @property
    def claim_ids(self) -> list[str]:
        return list(self.spec["claims"])

    @property
    def params(self) -> dict:
        return self.spec.get("params") or {}

    def profile(self, name: str) -> dict:
        profiles = self.spec["profiles"]
        if name not in profiles:
            raise ConfigError("--profile", name, f"{self.id} has no such profile; " + choices(profiles))
        return profiles[name]

    def cells(self, profile: str) -> list[CellSpec]:
        return expand_cells(self.spec["cells"], self.profile(profile).get("grid"))

    def matches(self, token: str) -> bool:
        t = token.lower()
        names = (self.id.lower(), self.path.stem.lower(), self.path.parent.name.lower())
        return t in names or any(c.lower() == t or c.lower().startswith(t + "-") for c in self.claim_ids)

    def hook(self, ref: str):
        """``file.function`` in the experiment's folder, e.g. ``claims.check_is1``."""
        module, _, func = ref.rpartition(".")
        if str(ROOT) not in sys.path:
            sys.path.insert(0, str(ROOT))
        package = ".".join(self.path.parent.relative_to(ROOT).parts)
        return getattr(importlib.import_module(f"{package}.{module}"), func)


def discover(root: Path = EXPERIMENTS_DIR) -> list[Experiment]:
    return [Experiment.load(p) for p in sorted(root.glob("*/*.yaml"))]


def select(experiments: list[Experiment], only: str | None) -> list[Experiment]:
    if not only:
        return experiments
    tokens = [t.strip() for t in only.split(",") if t.strip()]
    for t in tokens:
        if not any(e.matches(t) for e in experiments):
            valid = sorted({c for e in experiments for c in e.claim_ids} | {e.id for e in experiments})
            raise ConfigError("--only", t, "no experiment or claim id matches; " + choices(valid))
    return [e for e in experiments if any(e.matches(t) for t in tokens)]


# ---------------------------------------------------------------- planned runs

@dataclass
class PlannedRun:
    experiment: str
    cell: str
    seed: int
    overrides: list[str]
    run_dir: Path
    cfg: object = None
    choices: dict = field(default_factory=dict)

    @property
    def status(self) -> str:
        summary = read_json(self.run_dir / SUMMARY)
        if summary:
            return summary.get("status", "failed")
        return "incomplete" if (self.run_dir / CONFIG).exists() else "missing"

    @property
    def finished(self) -> bool:
        return self.status in FINISHED

    def command(self) -> str:
        return " ".join(["normexp-train", *map(shlex.quote, self.overrides),
                         shlex.quote(f"hydra.run.dir={self.run_dir}")])


class Planner:
    """Composes (and caches) the configs of an invocation's runs."""

    def __init__(self, profile: str, outputs: Path, jobs: int, check_data: bool = True,
                 threads: int | None = None):
        self.profile, self.outputs, self.jobs, self.check_data = profile, Path(outputs), jobs, check_data
        self.threads = threads if threads is not None else (1 if jobs > 1 else 0)
        self._composed: dict[tuple, tuple] = {}
        self.notices: dict[str, list[str]] = {}

    def runtime_overrides(self) -> list[str]:
        return ["train.progress=false", *([f"train.threads={self.threads}"] if self.threads else [])]

    def compose(self, overrides: list[str]):
        key = tuple(overrides)
        if key not in self._composed:
            cfg = compose(overrides, return_hydra_config=True)
            chosen = {k: v for k, v in cfg.hydra.runtime.choices.items() if not k.startswith("hydra")}
            OmegaConf.set_struct(cfg, False)
            del cfg["hydra"]
            self._composed[key] = (cfg, chosen)
        return self._composed[key]

    def _with_fallback(self, exp: Experiment, overrides: list[str]) -> list[str]:
        from normexp.data import fashion_mnist_available

        cfg, _ = self.compose(overrides)
        fallback = DATA_FALLBACKS.get(cfg.data.name)
        if self.profile == "paper" or not fallback or fashion_mnist_available(cfg.data):
            return overrides
        notice = (f"{cfg.data.name} is not installed (scripts/setup_data.sh installs it): this experiment "
                  f"ran on {fallback} instead, so its numbers are not from the paper's data set")
        if notice not in self.notices.setdefault(exp.id, []):
            self.notices[exp.id].append(notice)
        return merge_overrides(overrides, [f"data={fallback}"])

    def runs(self, exp: Experiment, cells: list[CellSpec]) -> list[PlannedRun]:
        prof = exp.profile(self.profile)
        planned = []
        for cell in cells:
            overrides = merge_overrides(exp.spec.get("base") or [], list(cell.overrides),
                                        prof.get("overrides") or [], self.runtime_overrides())
            overrides = self._with_fallback(exp, overrides)
            cfg, chosen = self.compose(overrides)
            self._validate(exp, cell, cfg)
            for seed in prof.get("seeds", [0]):
                run_overrides = merge_overrides(overrides, [f"seed={seed}"])
                run_cfg = cfg.copy()
                run_cfg.seed = int(seed)
                run_dir = self.outputs / self.profile / exp.id / cell.name / f"seed{seed}"
                planned.append(PlannedRun(exp.id, cell.name, int(seed), run_overrides, run_dir, run_cfg,
                                          chosen))
        return planned

    def _validate(self, exp: Experiment, cell: CellSpec, cfg) -> None:
        try:
            validate(cfg)
        except ConfigError as error:
            if self.check_data or error.key != "data.name":
                raise ConfigError(f"{exp.id} cell {cell.name}: {error.key}", error.value,
                                  error.allowed) from None
            notice = f"data not here: {error}"
            if notice not in self.notices.setdefault(exp.id, []):
                self.notices[exp.id].append(notice)


def is_stale(run: PlannedRun) -> bool:
    """A run dir made from other overrides than planned (the spec changed since)."""
    meta = read_json(run.run_dir / META)
    if not meta:
        return False
    keep = lambda os_: [o for o in os_ if override_key(o) not in RUNTIME_KEYS]  # noqa: E731
    return keep(meta.get("overrides") or []) != keep(run.overrides)


# ---------------------------------------------------------------- executing runs

def train_one(cfg, run_dir: str, chosen: dict, overrides: list[str]) -> dict:
    """One run in this process; a run that raises comes back as ``failed`` (the rest of the suite goes on)."""
    from normexp import train

    argv, sys.argv = sys.argv, ["normexp-train", *overrides, f"hydra.run.dir={run_dir}"]  # meta's command
    try:
        return train.run(cfg, run_dir, choices=chosen, overrides=overrides)
    except RunDirBusy as busy:  # another process writes it: not this run's failure, leave its dir alone
        return {"status": "skipped", "error": str(busy)}
    except Exception as error:  # noqa: BLE001 - recorded, reported, and the suite goes on
        summary = read_json(Path(run_dir) / SUMMARY)
        if not summary or summary.get("status") != "failed":
            summary = {"status": "failed", "error": f"{type(error).__name__}: {error}"}
            atomic_write_json(Path(run_dir) / SUMMARY, summary)
        summary["traceback"] = traceback.format_exc()
        return summary
    finally:
        sys.argv = argv


def execute(runs: list[PlannedRun], jobs: int, log=print) -> list[dict]:
    if not runs:
        return []
    args = [(r.cfg, str(r.run_dir), r.choices, r.overrides) for r in runs]
    if jobs > 1:
        from joblib import Parallel, delayed

        use_warm_workers(also=("normexp.reproduce",))
        results = Parallel(n_jobs=jobs, return_as="generator_unordered")(
            delayed(_indexed)(i, *a) for i, a in enumerate(args))
    else:
        results = (_indexed(i, *a) for i, a in enumerate(args))
    summaries: list[dict] = [{}] * len(runs)
    for done, (i, summary) in enumerate(results, 1):
        summaries[i] = summary
        log(f"[{done:>3}/{len(runs)}] {describe_run(runs[i], summary)}")
        if summary.get("status") == "failed":
            log(summary.get("traceback") or summary.get("error", ""))
    return summaries


def _indexed(i, *args):
    return i, train_one(*args)


def describe_run(run: PlannedRun, s: dict) -> str:
    acc = s.get("test_acc")
    acc_text = f", test acc {acc:.4f}" if isinstance(acc, float) and math.isfinite(acc) else ""
    where = f" at step {s.get('step')}" if s.get("status") == "diverged" else ""
    secs = f" ({s['wall_seconds']:.0f} s)" if isinstance(s.get("wall_seconds"), (int, float)) else ""
    err = f": {s.get('error')}" if s.get("status") in ("failed", "skipped") else ""
    return f"{run.experiment} {run.cell} seed {run.seed}: {s.get('status')}{where}{acc_text}{secs}{err}"


# ---------------------------------------------------------------- aggregation

def run_table(runs: list[PlannedRun]) -> pd.DataFrame:
    from normexp.results import run_row

    rows = []
    for r in runs:
        row = {"experiment": r.experiment, "cell": r.cell, "seed": r.seed,
               "planned_steps": int(r.cfg.train.steps) if r.cfg is not None else None}
        if (r.run_dir / CONFIG).exists():
            row |= run_row(r.run_dir)
        else:
            row |= {"status": r.status, "run_dir": str(r.run_dir), "error": (read_json(r.run_dir / SUMMARY)
                                                                               or {}).get("error")}
        rows.append(row)
    table = pd.DataFrame(rows)
    for col in ("test_acc", "train_acc", "test_loss", "train_loss", "step", "steps", "diverged_step"):
        if col in table:
            table[col] = pd.to_numeric(table[col], errors="coerce")
    return table


def curve_table(table: pd.DataFrame) -> pd.DataFrame:
    from normexp.results import load_metrics

    dirs = [d for d in table["run_dir"] if (Path(d) / "metrics.jsonl").exists()]
    curves = load_metrics(dirs)
    if curves.empty:
        return pd.DataFrame(columns=["cell", "seed", "step", "split"])
    keys = table.set_index("run_dir")[["cell", "seed"]]
    curves = curves.join(keys, on="run_dir").drop(columns="run_dir")
    front = ["cell", "seed", "step", "split"]
    return curves[front + [c for c in curves.columns if c not in front]]


class LazyRuns(Runs):
    """Runs whose metric records load on first use (stage planning needs only the summaries)."""

    def __init__(self, table: pd.DataFrame):
        super().__init__(table, None)
        self._curves = None

    @property
    def curves(self) -> pd.DataFrame:
        if self._curves is None:
            self._curves = curve_table(self.table)
        return self._curves

    @curves.setter
    def curves(self, value):
        self._curves = value


@dataclass
class Context:
    """What an experiment's hooks see: its spec, the profile and the runs so far."""

    experiment: Experiment
    profile: str
    runs: Runs
    notices: list[str] = field(default_factory=list)

    @property
    def params(self) -> dict:
        return self.experiment.params

    @property
    def seeds(self) -> list[int]:
        return list(self.experiment.profile(self.profile).get("seeds", [0]))


def plan_experiment(exp: Experiment, planner: Planner) -> tuple[list[PlannedRun], str | None]:
    """Every run the experiment needs that can be planned now, and what later stages wait for (or None)."""
    cells = exp.cells(planner.profile)
    runs = planner.runs(exp, cells)
    stages = exp.spec.get("stages")
    if not stages:
        return runs, None
    try:
        ctx = Context(exp, planner.profile, LazyRuns(run_table(runs)))
        more = [CellSpec(c["name"], tuple(c.get("overrides", []))) for c in exp.hook(stages)(ctx)]
    except Pending as waiting:
        return runs, str(waiting)
    known = {c.name for c in cells}
    return runs + planner.runs(exp, [c for c in more if c.name not in known]), None


# ---------------------------------------------------------------- results of one experiment

def evaluate(exp: Experiment, ctx: Context, out: Path) -> dict:
    """Checks, figures and tables of one experiment into ``out``; returns the claims.json content."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    verdicts, errors = [], []
    for claim_id, claim in exp.spec["claims"].items():
        try:
            v = exp.hook(claim["check"])(ctx)
        except Exception as error:  # noqa: BLE001 - a broken check is reported, not hidden
            errors.append(traceback.format_exc())
            v = Verdict.inconclusive(claim_id, f"the check raised {type(error).__name__}: {error}")
        v.id, v.figure, v.paper = claim_id, claim.get("figure", ""), claim.get("paper", "")
        verdicts.append(v)
    figures = []
    for name, ref in (exp.spec.get("plots") or {}).items():
        try:
            fig = exp.hook(ref)(ctx)
        except Exception:  # noqa: BLE001
            errors.append(traceback.format_exc())
            continue
        for ext in ("png", "pdf"):
            fig.savefig(out / f"{name}.{ext}", dpi=130, bbox_inches="tight")
        plt.close(fig)
        figures.append(f"{name}.png")
    tables = []
    for name, ref in (exp.spec.get("tables") or {}).items():
        try:
            frame = exp.hook(ref)(ctx)
        except Exception:  # noqa: BLE001
            errors.append(traceback.format_exc())
            continue
        frame.to_csv(out / f"{name}.csv", index=False)
        tables.append({"name": name, "csv": f"{name}.csv", "markdown": markdown_table(frame)})
    return {"claims": [v.to_dict() for v in verdicts], "figures": figures, "tables": tables, "errors": errors}


def markdown_table(frame: pd.DataFrame) -> str:
    def text(x) -> str:
        if isinstance(x, float):
            return "" if math.isnan(x) else f"{x:.4g}"
        return str(x).replace("|", "\\|").replace("\n", " ")

    line = lambda row: "| " + " | ".join(text(x) for x in row) + " |"  # noqa: E731
    return "\n".join([line(frame.columns), "| " + " | ".join("---" for _ in frame.columns) + " |",
                      *(line(row) for row in frame.itertuples(index=False))])


def code_version() -> str:
    try:
        out = subprocess.run(["git", "describe", "--always", "--dirty", "--abbrev=10"], capture_output=True,
                             text=True, timeout=5, cwd=ROOT)
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def run_counts(table: pd.DataFrame) -> dict:
    return {"planned": len(table), **table["status"].value_counts().to_dict()}


def write_experiment(exp: Experiment, ctx: Context, out: Path, invocation: dict) -> dict:
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    table = ctx.runs.table
    table.to_csv(out / "runs.csv", index=False)
    ctx.runs.curves.to_csv(out / "curves.csv", index=False)
    evaluated = evaluate(exp, ctx, out)
    commits = table["run_dir"].map(lambda d: (read_json(Path(d) / META) or {}).get("git_commit"))
    record = {"experiment": exp.id, "title": exp.spec["title"], "paper": exp.spec.get("paper", ""),
              "figure": exp.spec.get("figure", ""), "profile": ctx.profile, "seeds": ctx.seeds,
              **invocation, "run_seconds": float(pd.to_numeric(table.get("wall_seconds"),
                                                                errors="coerce").sum()),
              "runs": run_counts(table), "run_commits": commits.dropna().value_counts().to_dict(),
              "notices": ctx.notices, **evaluated}
    atomic_write_json(out / "claims.json", record)
    return record


# ---------------------------------------------------------------- the report

VERDICT_MARK = {"pass": "**pass**", "fail": "**FAIL**", "inconclusive": "inconclusive"}


def write_report(results: Path) -> Path:
    records = [json.loads(p.read_text()) for p in sorted(results.glob("*/**/claims.json"))]
    by_profile: dict[str, list[dict]] = {}
    for r in records:
        by_profile.setdefault(r["profile"], []).append(r)
    order = [p for p in REPORT_ORDER if p in by_profile] + sorted(set(by_profile) - set(REPORT_ORDER))
    from normexp.claims import RULE

    lines = ["# Reproduction report", "",
             "Written by `normexp-reproduce` from every `claims.json` under this folder (do not edit). "
             "Claims, setups and thresholds are those of `PAPERS.md`; each experiment's README says what the "
             "papers left unstated and what was chosen.", "",
             f"**Verdict rule.** {RULE}", ""]
    for profile in order:
        lines += profile_section(profile, by_profile[profile])
    path = results / "REPORT.md"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    return path


def profile_section(profile: str, records: list[dict]) -> list[str]:
    smoke = profile == "smoke"
    title = f"## Profile `{profile}`" + (" (smoke: not evidence)" if smoke else "")
    lines = [title, ""]
    invocations = {}
    for r in records:
        invocations.setdefault(r.get("command"), r)
    for command, r in invocations.items():
        same = [x for x in records if x.get("command") == command]
        ran, planned = sum(x.get("runs_run", 0) for x in same), sum(x["runs"]["planned"] for x in same)
        lines += [f"- command: `{command}` ({', '.join(x['experiment'] for x in same)})",
                  f"  - code version `{r.get('code_version')}`, {r.get('date')}, wall time "
                  f"{r.get('wall_seconds', 0) / 60:.1f} min with {r.get('jobs')} jobs on {r.get('host')}; "
                  f"this invocation ran {ran} of the {planned} runs (the others were already finished under "
                  f"the outputs folder); run time of all {planned}: "
                  f"{sum(x['run_seconds'] for x in same) / 60:.1f} min"]
    seeds = sorted({tuple(r["seeds"]) for r in records})
    lines += [f"- seeds per cell: {', '.join(str(list(s)) for s in seeds)}", ""]
    lines += ["| claim | paper figure | the paper reports | we measured (seed mean, spread = max - min) "
              "| verdict |", "| --- | --- | --- | --- | --- |"]
    for r in records:
        for c in r["claims"]:
            verdict = VERDICT_MARK.get(c["status"], c["status"]) + (" (smoke, not evidence)" if smoke else "")
            lines.append(f"| {c['id']} | {c['figure']} | {c['paper']} | {c['sentence']} | {verdict} |")
    lines.append("")
    for r in records:
        rel = f"{profile}/{r['experiment']}"
        runs = r["runs"]
        run_text = ", ".join(f"{v} {k}" for k, v in runs.items() if k != "planned")
        lines += [f"### {r['experiment']}: {r['title']}", "",
                  f"{r['paper']}, {r['figure']}. {runs['planned']} runs ({run_text}), "
                  f"{r['run_seconds'] / 60:.1f} min of run time; run table `{rel}/runs.csv`, "
                  f"curves `{rel}/curves.csv`.", ""]
        lines += [f"> **Notice.** {n}" for n in r.get("notices", [])] + ([""] if r.get("notices") else [])
        commits = ", ".join(f"`{c}` ({n} runs)" for c, n in (r.get("run_commits") or {}).items())
        if commits:
            lines += [f"The runs were made by the code at commit {commits}.", ""]
        for c in r["claims"]:
            details = "; ".join(c.get("outcomes") or [c["sentence"]])
            lines.append(f"- **{c['id']}** ({c['status']}): {details}")
        lines.append("")
        for t in r.get("tables", []):
            lines += [f"**{t['name']}** (`{rel}/{t['csv']}`)", "", t["markdown"], ""]
        for f in r.get("figures", []):
            lines += [f"![{f}]({rel}/{f})", ""]
        for e in r.get("errors", []):
            lines += ["```", e.strip(), "```", ""]
    return lines


# ---------------------------------------------------------------- command line

def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="normexp-reproduce", description=__doc__.splitlines()[0])
    p.add_argument("--profile", default="quick", help=f"one of {', '.join(PROFILES)} (default quick)")
    p.add_argument("--only", help="comma-separated claim ids, id prefixes (IS) or experiment names")
    p.add_argument("--jobs", type=int, default=2, help="runs in parallel (joblib workers)")
    p.add_argument("--threads", type=int, help="torch threads per run (default: 1 with --jobs > 1, else "
                   "torch's default; use 1 on a busy machine: small models crawl when threads wait on cores)")
    p.add_argument("--outputs", type=Path, default=Path("outputs/reproduce"), help="run dirs go here")
    p.add_argument("--results", type=Path, default=Path("results"), help="<profile>/... and REPORT.md")
    p.add_argument("--dry-run", action="store_true", help="list the runs as normexp-train command lines")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    started = time.time()
    if args.profile not in PROFILES:
        raise ConfigError("--profile", args.profile, choices(PROFILES))
    if args.jobs < 1:
        raise ConfigError("--jobs", args.jobs, "must be an integer >= 1")
    if args.threads is not None and args.threads < 1:
        raise ConfigError("--threads", args.threads, "must be an integer >= 1")
    experiments = select(discover(), args.only)
    planner = Planner(args.profile, args.outputs, args.jobs, not args.dry_run, args.threads)
    if args.dry_run:
        return dry_run(experiments, planner)

    attempted: set[Path] = set()
    while True:
        plans = {e.id: plan_experiment(e, planner)[0] for e in experiments}
        todo = [r for runs in plans.values() for r in runs
                if r.run_dir not in attempted and (is_stale(r) or not r.finished)]
        if not todo:
            break
        for r in todo:
            if is_stale(r):
                print(f"normexp-reproduce: {r.run_dir} was made from other overrides; starting it over")
                shutil.rmtree(r.run_dir)
        print(f"normexp-reproduce: {len(todo)} runs to do ({args.profile}, {args.jobs} jobs)", flush=True)
        execute(todo, args.jobs, log=lambda s: print(s, flush=True))
        attempted |= {r.run_dir for r in todo}

    invocation = {"command": "normexp-reproduce " + " ".join(
                      ["--profile", args.profile] + (["--only", args.only] if args.only else [])),
                  "code_version": code_version(), "date": time.strftime("%Y-%m-%d %H:%M %Z"),
                  "jobs": args.jobs, "host": os.uname().nodename, "wall_seconds": time.time() - started}
    status = 0
    for exp in experiments:
        runs = plans[exp.id]
        ctx = Context(exp, args.profile, LazyRuns(run_table(runs)), list(planner.notices.get(exp.id, [])))
        _, waiting = plan_experiment(exp, planner)
        if waiting:
            ctx.notices.append(f"later stages were not run: {waiting}")
        ran = {"runs_run": sum(r.run_dir in attempted for r in runs)}
        record = write_experiment(exp, ctx, args.results / args.profile / exp.id, invocation | ran)
        smoke = " (smoke: not evidence)" if args.profile == "smoke" else ""
        for c in record["claims"]:
            print(f"{c['id']}: {c['status'].upper()}{smoke}: {c['sentence']}")
        failed = record["runs"].get("failed", 0)
        status = status or int(bool(failed or record["errors"]))
    report = write_report(args.results)
    print(f"normexp-reproduce: wrote {report} ({(time.time() - started) / 60:.1f} min)")
    return status


def dry_run(experiments: list[Experiment], planner: Planner) -> int:
    for exp in experiments:
        runs, waiting = plan_experiment(exp, planner)
        print(f"# {exp.id}: {exp.spec['title']} ({', '.join(exp.claim_ids)}), profile {planner.profile}")
        for n in planner.notices.get(exp.id, []):
            print(f"# notice: {n}")
        for r in runs:
            print(("" if not r.finished else "# done: ") + r.command())
        if waiting:
            print(f"# later stage not listed yet: {waiting}")
    return 0


def cli() -> None:
    try:
        with lifecycle.command("normexp-reproduce"):  # SIGTERM stops it as Ctrl-C does
            raise SystemExit(main())
    except ConfigError as error:
        print(f"normexp-reproduce: error: {error}", file=sys.stderr)
        raise SystemExit(2) from None


if __name__ == "__main__":  # python -m: run the imported module, whose Pending the experiment hooks raise
    from normexp.reproduce import cli as module_cli

    module_cli()
