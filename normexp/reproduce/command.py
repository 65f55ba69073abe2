"""normexp-reproduce: run experiments at a profile, aggregate, plot, check the claims, write results/."""

from __future__ import annotations

import argparse
import os
import sys
import time
from functools import partial
from pathlib import Path

import torch

from normexp import lifecycle
from normexp.errors import ConfigError, choices

from .evaluate import CODE_FOLDERS, code_version, environment, uncommitted_code, write_experiment
from .execute import start_workers
from .pipeline import Pipeline
from .plan import Context, Planner, plan_experiment
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
    invocation = {"command": "normexp-reproduce " + " ".join(
                      ["--profile", args.profile] + (["--spec", str(args.spec)] if args.spec else [])
                      + (["--only", args.only] if args.only else [])),
                  "code_version": code_version(), "uncommitted": uncommitted_code(),  # what makes the runs
                  "environment": environment(), "date": time.strftime("%Y-%m-%d %H:%M %Z"),
                  "jobs": args.jobs, "host": os.uname().nodename}
    write = partial(write_one, profile=args.profile, results=args.results, invocation=invocation,
                    threads=1 if args.jobs > 1 else None)
    pipeline = Pipeline(experiments, planner, args.jobs, write, args.results,
                        log=lambda s: print(s, flush=True), started=started)
    records = pipeline.run()
    seconds = pipeline.stamp_wall_time()
    status = 0
    for record in records:
        flag = "" if record["evidence"] else f" ({args.profile}: not evidence)"
        for c in record["claims"]:
            print(f"{c['id']}: {c['status'].upper()}{flag}: {c['sentence']}")
        unfinished = sum(record["runs"].get(s, 0) for s in ("failed", "interrupted", "incomplete", "missing"))
        status = status or int(bool(unfinished or record["errors"]))
    report = write_report(args.results)
    print(f"normexp-reproduce: wrote {report} ({seconds / 60:.1f} min)")
    return status


def write_one(exp, runs: list, notices: list[str], extra: dict, *, profile: str, results: Path,
              invocation: dict, threads: int | None = None) -> dict:
    """One experiment's results, in a pipeline worker (``threads``: a worker of its own core) or here."""
    if threads:
        torch.set_num_threads(threads)
    ctx = Context(exp, profile, LazyRuns(run_table(runs)), notices)
    return write_experiment(exp, ctx, results / profile / exp.id, invocation | extra)


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
