"""``REPORT.md``: every ``claims.json`` under a results folder, profile by profile (the suite's order)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pandas as pd

from normexp.claims import RULE

from .evaluate import markdown_table
from .spec import ROOT, suite_profiles

VERDICT_MARK = {"pass": "**pass**", "fail": "**FAIL**", "inconclusive": "inconclusive"}
CLAIMS_DOC = ROOT / "docs" / "claims.md"


def write_report(results: Path) -> Path:
    records = [json.loads(p.read_text()) for p in sorted(results.glob("*/**/claims.json"))]
    by_profile: dict[str, list[dict]] = {}
    for r in records:
        by_profile.setdefault(r["profile"], []).append(r)
    known = list(suite_profiles())
    order = [p for p in known if p in by_profile] + sorted(set(by_profile) - set(known))
    doc = os.path.relpath(CLAIMS_DOC, results.resolve())
    lines = ["# Reproduction report", "",
             "Written by `normexp-reproduce` from every `claims.json` under this folder (do not edit). "
             f"Each claim's setup, measurement and pass rule are in [{doc}]({doc}); each experiment's README "
             "says what the papers left unstated and what was chosen.", "",
             f"**Verdict rule.** {RULE}", ""]
    lines += findings_table(by_profile, order, doc)
    for profile in order:
        lines += profile_section(profile, by_profile[profile], doc)
    path = results / "REPORT.md"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    return path


def findings_table(by_profile: dict[str, list[dict]], order: list[str], doc: str) -> list[str]:
    """Every claim's verdict at each profile side by side (the details are in the profile sections)."""
    profiles = [p for p in order if not _not_evidence(by_profile[p])]
    verdicts: dict[str, dict[str, str]] = {}
    for profile in profiles:
        for r in by_profile[profile]:
            for c in r["claims"]:
                gated = (c.get("regime") or {}).get("gated")
                regime = "; " + c["regime"]["text"].split(":")[0] if gated else ""
                mark = VERDICT_MARK.get(c["status"], c["status"])
                verdicts.setdefault(c["id"], {})[profile] = mark + regime
    if not verdicts:
        return []
    lines = ["## Findings", "", "Each claim's verdict per profile (numbers, the regime measures and figures: "
             "the profile sections below).", "", "| claim | " + " | ".join(profiles) + " |",
             "| --- |" + " --- |" * len(profiles)]
    for claim, by in sorted(verdicts.items(), key=lambda item: _claim_order(item[0])):
        cells = " | ".join(by.get(p, "") for p in profiles)
        lines.append(f"| [{claim}]({doc}#{claim.lower()}) | {cells} |")
    return lines + [""]


def _claim_order(claim_id: str) -> tuple:
    prefix, _, number = claim_id.partition("-")
    return (prefix, int(number) if number.isdigit() else 0, number)


def _not_evidence(records: list[dict]) -> bool:
    return not all(r.get("evidence", r["profile"] != "smoke") for r in records)


def profile_section(profile: str, records: list[dict], doc: str) -> list[str]:
    smoke = _not_evidence(records)
    lines = [f"## Profile `{profile}`" + (" (not evidence)" if smoke else ""), ""]
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
        lines += environment_lines(r)
    seeds = sorted({tuple(r["seeds"]) for r in records})
    lines += [f"- seeds per cell: {', '.join(str(list(s)) for s in seeds)}", ""]
    if any(r["claims"] for r in records):
        lines += claim_table(records, doc, smoke)
    for r in records:
        lines += experiment_section(profile, r)
    return lines


def environment_lines(r: dict) -> list[str]:
    env, dirty = r.get("environment"), r.get("uncommitted")
    lines = []
    if env:
        libs = ", ".join(f"{k} {v}" for k, v in env.items() if k not in ("cpu", "cores", "gpu") and v)
        lines.append(f"  - environment: {libs}; {env.get('cpu')} ({env.get('cores')} cores)"
                     + (f", GPU {env['gpu']}" if env.get("gpu") else ""))
    if dirty:
        lines.append(f"  - **made from uncommitted code** (--allow-dirty): {', '.join(dirty)}")
    return lines


def claim_table(records: list[dict], doc: str, smoke: bool) -> list[str]:
    lines = ["| claim | paper figure | the paper reports | we measured (seed mean, spread = max - min) "
             "| regime (docs/claims.md) | verdict |", "| --- | --- | --- | --- | --- | --- |"]
    for r in records:
        for c in r["claims"]:
            verdict = VERDICT_MARK.get(c["status"], c["status"]) + (" (not evidence)" if smoke else "")
            claim = f"[{c['id']}]({doc}#{c['id'].lower()})"
            lines.append(f"| {claim} | {c['figure']} | {c['paper']} | {c['sentence']} | {regime_text(c, r)} "
                         f"| {verdict} |")
    return lines + [""]


def regime_text(claim: dict, record: dict) -> str:
    """The regime beside a verdict: R1 and R2 as checked for a claim they govern; for any other claim the
    largest memorization gap over the experiment's cells, shown and not gated."""
    regime = claim.get("regime") or {}
    if regime.get("text"):  # R1 and R2 as the claim's check measured them
        return ("gated: " if regime.get("gated") else "not gated: ") + regime["text"]
    rows = [row for row in record.get("regime") or [] if row.get("clean train loss") is not None]
    if not rows:
        return "not measured"
    gaps = [row for row in rows if row.get("gap (points)") is not None]
    if not gaps:
        worst = max(rows, key=lambda row: row["clean train loss"])
        return (f"not gated: no accuracy; highest clean training loss {worst['clean train loss']:.4g} "
                f"({worst['cell']})")
    widest = max(gaps, key=lambda row: row["gap (points)"])
    return (f"not gated: largest clean-train minus test gap {widest['gap (points)']:+.2f} points "
            f"({widest['cell']}: {widest['clean train acc %']:.2f} vs {widest['test acc %']:.2f}%)")


def regime_lines(r: dict) -> list[str]:
    rows = r.get("regime") or []
    if not any(row.get("clean train loss") is not None for row in rows):
        return []
    return ["**Regime measures** (per cell, seed means at the end of training: a fixed clean set of up to "
            "10,000 training images evaluated as the test set is, and the test set; gap = clean training "
            "accuracy - test accuracy)", "", markdown_table(pd.DataFrame(rows)), ""]


def experiment_section(profile: str, r: dict) -> list[str]:
    rel = f"{profile}/{r['experiment']}"
    runs = r["runs"]
    run_text = ", ".join(f"{v} {k}" for k, v in runs.items() if k != "planned")
    lines = [f"### {r['experiment']}: {r['title']}", "",
             f"{r['paper']}, {r['figure']}. {runs['planned']} runs ({run_text}), "
             f"{r['run_seconds'] / 60:.1f} min of run time; run table `{rel}/runs.csv`, "
             f"curves `{rel}/curves.csv`.", ""]
    lines += [f"> **Notice.** {n}" for n in r.get("notices", [])] + ([""] if r.get("notices") else [])
    commits = ", ".join(f"`{c}` ({n} runs)" for c, n in (r.get("run_commits") or {}).items())
    if commits:
        lines += [f"The runs were made by the code at commit {commits}.", ""]
    for c in r["claims"]:
        details = "; ".join(c.get("outcomes") or [c["sentence"]])
        lines.append(f"- **{c['id']}** ({c['status']}): {details}. Regime: {regime_text(c, r)}")
    if not r["claims"]:
        lines.append("No claims (figures and tables only, no verdict).")
    lines.append("")
    lines += regime_lines(r)
    for t in r.get("tables", []):
        lines += [f"**{t['name']}** (`{rel}/{t['csv']}`)", "", t["markdown"], ""]
    for f in r.get("figures", []):
        lines += [f"![{f}]({rel}/{f})", ""]
    for e in r.get("errors", []):
        lines += ["```", e.strip(), "```", ""]
    return lines
