"""scripts/compare_results.py on folders written here: equal but for timings, paths (also inside a value) and
versions passes; one changed value, a changed row count or a file on one side only fails, naming the file
and the value."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
_spec = importlib.util.spec_from_file_location("compare_results", REPO / "scripts" / "compare_results.py")
compare_results = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(compare_results)

RUNS = ("cell,seed,test_acc,wall_seconds,run_dir,overrides\n"
        "bn,0,0.875,12.5,/a/bn/seed0,init=/a/outputs/bn.pt\n"
        "gn,0,0.8125,9.0,/a/gn/seed0,init=/a/outputs/gn.pt\n")
CLAIMS = {"code_version": "abc", "wall_seconds": 3.0, "claims": [{"id": "X-1", "verdict": "pass", "a": 0.5}]}


def write(root: Path, runs: str = RUNS, claims: dict = CLAIMS) -> Path:
    (root / "exp").mkdir(parents=True)
    (root / "exp" / "runs.csv").write_text(runs)
    (root / "exp" / "claims.json").write_text(json.dumps(claims))
    return root


def test_equal_but_for_timings_paths_and_versions(tmp_path, capsys):
    first = write(tmp_path / "a")
    second = write(tmp_path / "b", RUNS.replace("12.5", "14.0").replace("/a/", "/b/c/"),
                   {**CLAIMS, "code_version": "def", "wall_seconds": 4.0})
    assert compare_results.main([str(first), str(second)]) == 0
    assert "2 of 2 files equal" in capsys.readouterr().out


def test_a_changed_value_a_row_or_a_missing_file_differs(tmp_path, capsys):
    first = write(tmp_path / "a")
    changed = write(tmp_path / "b", RUNS.replace("0.8125", "0.8126"))
    assert compare_results.main([str(first), str(changed)]) == 1
    assert "row 1 test_acc: 0.8125 vs 0.8126" in capsys.readouterr().out
    verdict_changed = {**CLAIMS, "claims": [{"id": "X-1", "verdict": "fail", "a": 0.5}]}
    fewer = write(tmp_path / "c", RUNS.split("\ngn")[0] + "\n", verdict_changed)
    assert compare_results.main([str(first), str(fewer)]) == 1
    out = capsys.readouterr().out
    assert "2 vs 1 rows" in out and "claims[0].verdict: 'pass' vs 'fail'" in out
    (first / "exp" / "extra.csv").write_text("a\n1\n")
    assert compare_results.main([str(first), str(write(tmp_path / "d"))]) == 1
    assert "DIFFERS exp/extra.csv: only in" in capsys.readouterr().out
