"""One experiment's results: checks, figures and tables from its hooks, written with the run table and
curves into ``<results>/<profile>/<experiment>/`` and summed up in ``claims.json``."""

from __future__ import annotations

import math
import os
import platform
import shutil
import subprocess
import time
import traceback
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import pandas as pd
import torch

from normexp.claims import Verdict
from normexp.claims.regime import regime_table
from normexp.records import META, atomic_write_json, read_json

from .plan import Context
from .spec import ROOT, Experiment


def evaluate(exp: Experiment, ctx: Context, out: Path) -> dict:
    """Checks, figures and tables of one experiment into ``out``; returns the claims.json content."""
    from normexp.plots import plt  # lazy: matplotlib

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
        fig = _call(exp, ref, ctx, errors)
        if fig is None:
            continue
        for ext in ("png", "pdf"):
            fig.savefig(out / f"{name}.{ext}", dpi=130, bbox_inches="tight")
        plt.close(fig)
        figures.append(f"{name}.png")
    tables = []
    for name, ref in (exp.spec.get("tables") or {}).items():
        frame = _call(exp, ref, ctx, errors)
        if frame is None:
            continue
        frame.to_csv(out / f"{name}.csv", index=False)
        tables.append({"name": name, "csv": f"{name}.csv", "markdown": markdown_table(frame)})
    return {"claims": [v.to_dict() for v in verdicts], "figures": figures, "tables": tables, "errors": errors}


def _call(exp: Experiment, ref: str, ctx: Context, errors: list[str]):
    """A plot or table hook's result; a hook that raises is reported with its traceback."""
    try:
        return exp.hook(ref)(ctx)
    except Exception:  # noqa: BLE001
        errors.append(traceback.format_exc())
        return None


def markdown_table(frame: pd.DataFrame) -> str:
    def text(x) -> str:
        if isinstance(x, float):
            return "" if math.isnan(x) else f"{x:.4g}"
        return str(x).replace("|", "\\|").replace("\n", " ")

    line = lambda row: "| " + " | ".join(text(x) for x in row) + " |"
    return "\n".join([line(frame.columns), "| " + " | ".join("---" for _ in frame.columns) + " |",
                      *(line(row) for row in frame.itertuples(index=False))])


def _git(*args: str) -> str:
    try:
        out = subprocess.run(["git", *args], capture_output=True, text=True, timeout=5, cwd=ROOT)
        return out.stdout.rstrip()  # not strip(): a status line starts with a space
    except (OSError, subprocess.SubprocessError):
        return ""


def code_version() -> str:
    """The commit, with ``-dirty`` when a file that computes results differs from it (a README does not)."""
    commit = _git("describe", "--always", "--abbrev=10") or "unknown"
    return commit + ("-dirty" if uncommitted_code() else "")


CODE_FOLDERS = ("normexp", "experiments", "configs")  # what computes a result


def uncommitted_code() -> list[str]:
    """Files under the code folders that differ from the commit (changed, added or untracked)."""
    lines = _git("status", "--porcelain", "--untracked-files=all", "--", *CODE_FOLDERS).splitlines()
    return sorted(line[3:] for line in lines if line.strip() and "__pycache__" not in line)


LIBRARIES = ("torch", "torchvision", "numpy", "scipy", "pandas", "matplotlib", "hydra-core", "omegaconf")


def environment() -> dict:
    """The library versions and the processor (and GPU) the runs of an invocation were made with."""
    def installed(name: str) -> str | None:
        try:
            return version(name)
        except PackageNotFoundError:
            return None

    cpu = next((line.split(":", 1)[1].strip() for line in _read_lines("/proc/cpuinfo")
                if line.startswith("model name")), platform.processor() or platform.machine())
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {"python": platform.python_version(), **{name: installed(name) for name in LIBRARIES},
            "cpu": cpu, "cores": os.cpu_count(), "gpu": gpu}


def _read_lines(path: str) -> list[str]:
    try:
        return Path(path).read_text().splitlines()
    except OSError:
        return []


def run_counts(table: pd.DataFrame) -> dict:
    return {"planned": len(table), **table["status"].value_counts().to_dict()}


def write_experiment(exp: Experiment, ctx: Context, out: Path, invocation: dict) -> dict:
    """Everything of one experiment at one profile into ``out`` (replacing what was there)."""
    started = time.perf_counter()
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
              "evidence": exp.evidence(ctx.profile), **invocation,
              "run_seconds": float(pd.to_numeric(table.get("wall_seconds"), errors="coerce").sum()),
              "runs": run_counts(table), "run_commits": commits.dropna().value_counts().to_dict(),
              "notices": ctx.notices, **evaluated, "regime": regime_table(ctx.runs).to_dict("records")}
    record["analysis_seconds"] = time.perf_counter() - started  # the next invocation writes slow ones first
    atomic_write_json(out / "claims.json", record)
    return record
