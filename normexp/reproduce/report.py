"""``REPORT.md``: every ``claims.json`` under a results folder, profile by profile (the suite's order)."""

from __future__ import annotations

import json
import os
from pathlib import Path

from normexp.claims import RULE

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
    for profile in order:
        lines += profile_section(profile, by_profile[profile], doc)
    path = results / "REPORT.md"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    return path


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
    seeds = sorted({tuple(r["seeds"]) for r in records})
    lines += [f"- seeds per cell: {', '.join(str(list(s)) for s in seeds)}", ""]
    if any(r["claims"] for r in records):
        lines += claim_table(records, doc, smoke)
    for r in records:
        lines += experiment_section(profile, r)
    return lines


def claim_table(records: list[dict], doc: str, smoke: bool) -> list[str]:
    lines = ["| claim | paper figure | the paper reports | we measured (seed mean, spread = max - min) "
             "| verdict |", "| --- | --- | --- | --- | --- |"]
    for r in records:
        for c in r["claims"]:
            verdict = VERDICT_MARK.get(c["status"], c["status"]) + (" (not evidence)" if smoke else "")
            claim = f"[{c['id']}]({doc}#{c['id'].lower()})"
            lines.append(f"| {claim} | {c['figure']} | {c['paper']} | {c['sentence']} | {verdict} |")
    return lines + [""]


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
        lines.append(f"- **{c['id']}** ({c['status']}): {details}")
    if not r["claims"]:
        lines.append("No claims (figures and tables only, no verdict).")
    lines.append("")
    for t in r.get("tables", []):
        lines += [f"**{t['name']}** (`{rel}/{t['csv']}`)", "", t["markdown"], ""]
    for f in r.get("figures", []):
        lines += [f"![{f}]({rel}/{f})", ""]
    for e in r.get("errors", []):
        lines += ["```", e.strip(), "```", ""]
    return lines
