"""normexp-reproduce: run experiments at a profile, aggregate, plot, check the claims, write results/."""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import torch
from joblib import Parallel, delayed

from normexp import lifecycle
from normexp.errors import ConfigError, choices
from normexp.records import read_json

from .evaluate import CODE_FOLDERS, code_version, environment, uncommitted_code, write_experiment
from .execute import execute, start_workers
from .plan import Context, Planner, move_aside_stale, plan_experiment
from .report import write_report
from .spec import ROOT, discover, load_specs, select, suite_profiles
from .tables import LazyRuns, run_table


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="normexp-reproduce", description=__doc__.splitlines()[0])
    p.add_argument("--profile", default="quick",
                   help="a profile of experiments/defaults.yaml (default quick)")
    p.add_argument("--only", help="comma-separated claim ids, id prefixes (IS) or experiment names")
    p.add_argument("--spec", type=Path, help="run this spec file, or the specs of this folder, instead of "
                   "the experiments/ of the repository (your own experiments, with their hooks beside them)")
    p.add_argument("--jobs", type=int, default=2, help="runs in parallel (joblib workers)")
    p.add_argument("--threads", type=int, help="torch threads per run (default: 1 with --jobs > 1, else "
                   "torch's default; use 1 on a busy machine: small models crawl when threads wait on cores)")
    p.add_argument("--outputs", type=Path, default=Path("outputs/reproduce"), help="run dirs go here")
    p.add_argument("--results", type=Path, default=Path("results"), help="<profile>/... and REPORT.md")
    p.add_argument("--dry-run", action="store_true", help="list the runs as normexp-train command lines")
    p.add_argument("--allow-dirty", action="store_true", help="write into the repository's results/ although "
                   "normexp/, experiments/ or configs/ have uncommitted changes (the report lists them)")
    return p.parse_args(argv)


def check_args(args: argparse.Namespace) -> None:
    profiles = suite_profiles()
    if args.profile not in profiles:
        raise ConfigError("--profile", args.profile, choices(profiles))
    dirty = uncommitted_code() if _is_committed_results(args.results) and not args.dry_run else []
    if dirty and not args.allow_dirty:
        raise ConfigError("--results", str(args.results), "the committed results come from committed code, "
                          f"and {len(dirty)} file(s) under {', '.join(CODE_FOLDERS)} differ from the commit "
                          f"({', '.join(dirty[:3])}{', ...' if len(dirty) > 3 else ''}): commit them, write "
                          "elsewhere (--results DIR), or pass --allow-dirty (the report names the files)")
    if args.jobs < 1:
        raise ConfigError("--jobs", args.jobs, "must be an integer >= 1")
    if args.threads is not None and args.threads < 1:
        raise ConfigError("--threads", args.threads, "must be an integer >= 1")


def _is_committed_results(results: Path) -> bool:
    return results.resolve() == (ROOT / "results").resolve()


def main(argv=None) -> int:
    args = parse_args(argv)
    started = time.time()
    check_args(args)
    experiments = select(load_specs(args.spec) if args.spec else discover(), args.only)
    planner = Planner(args.profile, args.outputs, args.jobs, not args.dry_run, args.threads)
    if args.dry_run:
        return dry_run(experiments, planner)
    start_workers(args.jobs)
    code = {"code_version": code_version(), "uncommitted": uncommitted_code()}  # what the runs are made by
    plans, attempted = run_stages(experiments, planner, args)
    invocation = {"command": "normexp-reproduce " + " ".join(
                      ["--profile", args.profile] + (["--spec", str(args.spec)] if args.spec else [])
                      + (["--only", args.only] if args.only else [])),
                  **code, "environment": environment(), "date": time.strftime("%Y-%m-%d %H:%M %Z"),
                  "jobs": args.jobs, "host": os.uname().nodename, "wall_seconds": time.time() - started}
    status = 0
    writes = []
    for exp in experiments:
        runs = plans[exp.id]
        notices = list(planner.notices.get(exp.id, []))
        _, waiting = plan_experiment(exp, planner)
        if waiting:
            notices.append(f"later stages were not run: {waiting}")
        ran = {"runs_run": sum(r.run_dir in attempted for r in runs)}
        out = args.results / args.profile / exp.id
        writes.append((exp, args.profile, runs, notices, out, invocation | ran))
    for record in write_all(writes, args.jobs):
        flag = "" if record["evidence"] else f" ({args.profile}: not evidence)"
        for c in record["claims"]:
            print(f"{c['id']}: {c['status'].upper()}{flag}: {c['sentence']}")
        unfinished = sum(record["runs"].get(s, 0) for s in ("failed", "interrupted", "incomplete", "missing"))
        status = status or int(bool(unfinished or record["errors"]))
    report = write_report(args.results)
    print(f"normexp-reproduce: wrote {report} ({(time.time() - started) / 60:.1f} min)")
    return status


def write_all(writes: list[tuple], jobs: int) -> list[dict]:
    """Each experiment's results (``write_one``), in order; with ``jobs`` > 1 in the warm workers, one torch
    thread each, so that the experiments' evaluations and figures share the cores as their runs did: the
    slowest first, by the time their last write took (``analysis_seconds`` of the claims.json it replaces)."""
    if jobs == 1 or len(writes) < 2:
        return [write_one(*w) for w in writes]
    start_workers(jobs)
    last = [(read_json(out / "claims.json") or {}).get("analysis_seconds", 0.0) for *_, out, _ in writes]
    order = sorted(range(len(writes)), key=lambda i: -last[i])
    records = Parallel(n_jobs=min(jobs, len(writes)), batch_size=1)(
        delayed(write_one)(*writes[i], threads=1) for i in order)
    return [record for _, record in sorted(zip(order, records, strict=True))]


def write_one(exp, profile: str, runs: list, notices: list[str], out: Path, invocation: dict,
              threads: int | None = None) -> dict:
    if threads:  # a worker of its own core
        torch.set_num_threads(threads)
    ctx = Context(exp, profile, LazyRuns(run_table(runs)), notices)
    return write_experiment(exp, ctx, out, invocation)


def run_stages(experiments, planner: Planner, args) -> tuple[dict, set[Path]]:
    """Run what is unfinished, stage after stage, until no new run appears; each run is tried once."""
    attempted: set[Path] = set()
    while True:
        plans = {e.id: plan_experiment(e, planner)[0] for e in experiments}
        unfinished: dict[Path, object] = {}  # a shared run once, under the experiment that planned it first
        for r in (r for runs in plans.values() for r in runs):
            if r.run_dir not in attempted and (r.stale or not r.finished):
                unfinished.setdefault(r.run_dir, r)
        todo = list(unfinished.values())
        if not todo:
            return plans, attempted
        move_aside_stale(todo, lambda text: print(f"normexp-reproduce: {text}"))
        print(f"normexp-reproduce: {len(todo)} runs to do ({args.profile}, {args.jobs} jobs)", flush=True)
        execute(todo, args.jobs, log=lambda s: print(s, flush=True))
        attempted |= {r.run_dir for r in todo}


def dry_run(experiments, planner: Planner) -> int:
    for exp in experiments:
        runs, waiting = plan_experiment(exp, planner)
        claims = ", ".join(exp.claim_ids) or "no claims: figures and tables only"
        print(f"# {exp.id}: {exp.spec['title']} ({claims}), profile {planner.profile}")
        for n in planner.notices.get(exp.id, []):
            print(f"# notice: {n}")
        for r in runs:
            print(("# done: " if r.finished and not r.stale else "") + r.command())
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
