"""The regime measures (docs/claims.md, "The regime"): a run's clean training-set evaluation against an
independent evaluation of its saved weights, the fixed set's independence of the run seed, R1 and R2 at their
boundaries, the report's regime column, and the guard that keeps committed results to committed code."""

from __future__ import annotations

import math

import pandas as pd
import pytest
import torch

from normexp.claims import Runs
from normexp.claims.regime import check_regime, gate, regime_table
from normexp.claims.verdict import PASS, Verdict
from normexp.compose import compose
from normexp.data import TensorData, clean_train_indices
from normexp.errors import ConfigError
from normexp.models import build_model
from normexp.norms import NormSpec
from normexp.records import MODEL, read_json
from normexp.reproduce import command, report
from normexp.train import run

TINY = ["profile=smoke", "model=mlp", "device=cpu", "train.threads=1", "train.progress=false", "data=mnist5k",
        "data.train_subset=300", "train.steps=30", "data.crop_padding=2", "data.flip=true",
        "train.save_final=true"]


def test_clean_training_accuracy_is_the_saved_models_eval_mode_accuracy_on_unaugmented_images(tmp_path):
    """eval_train_images >= the training set: the fixed set is the whole (unaugmented) training subset, so
    its accuracy and loss can be computed from model.pt without the code's own selection or evaluation."""
    cfg = compose([*TINY, "train.eval_train_images=100000"])
    summary = run(cfg, tmp_path)
    data = TensorData(cfg.data, torch.device("cpu"), 0)
    model = build_model(cfg.model, NormSpec.from_config(cfg.norm), data.info.in_shape, data.info.num_classes)
    model.load_state_dict(torch.load(tmp_path / MODEL))
    model.eval()
    with torch.no_grad():
        out = model(data.x_train)
    acc = (out.argmax(1) == data.y_train).double().mean().item()
    loss = torch.nn.functional.cross_entropy(out.double(), data.y_train).item()
    assert len(data.y_train) == 300
    assert summary["train_clean_acc"] == pytest.approx(acc, abs=1e-12)
    assert summary["train_clean_loss"] == pytest.approx(loss, rel=1e-5)
    assert read_json(tmp_path / "summary.json")["train_clean_acc"] == summary["train_clean_acc"]


def test_the_clean_set_is_fixed_whatever_the_seed_and_can_be_switched_off(tmp_path):
    cfg = compose([*TINY, "train.eval_train_images=50"])
    batches = [torch.cat([x for x, _ in TensorData(cfg.data, torch.device("cpu"), seed)
                          .clean_train_batches(50, 16)]) for seed in (0, 7)]
    assert torch.equal(batches[0], batches[1]) and len(batches[0]) == 50
    assert torch.equal(clean_train_indices(300, 50), clean_train_indices(300, 50))
    assert len(set(clean_train_indices(300, 50).tolist())) == 50
    off = run(compose([*TINY, "train.eval_train_images=0", "train.steps=5"]), tmp_path)
    assert off["train_clean_acc"] is None and off["train_clean_loss"] is None


def runs(cells: dict[str, tuple[float, float, float]]) -> Runs:
    """cell -> (clean training accuracy, clean training loss, test accuracy), two identical seeds each."""
    rows = [{"cell": c, "seed": s, "status": "completed", "train_clean_acc": a, "train_clean_loss": loss,
             "test_acc": t} for c, (a, loss, t) in cells.items() for s in (0, 1)]
    return Runs(pd.DataFrame(rows), pd.DataFrame())


def test_r1_holds_at_a_gap_of_three_points_and_breaks_beyond():
    inside = check_regime(runs({"a": (0.93, 0.2, 0.90)}), ["a"])
    assert inside.inside and math.isclose(inside.cells["a"].gap, 3.0)
    outside = check_regime(runs({"a": (0.9301, 0.2, 0.90)}), ["a"])
    assert not outside.inside and outside.broken[0].startswith("R1: a memorizes")


def test_r2_compares_each_cell_with_its_groups_lowest_loss():
    r = runs({"bn_n32": (0.9, 0.100, 0.9), "bn_n8": (0.9, 0.080, 0.9), "bn_n2": (0.9, 0.100, 0.9)})
    regime = check_regime(r, ["bn_n32", "bn_n2"], [["bn_n32", "bn_n8", "bn_n2"]])
    assert regime.ratios == pytest.approx({"bn_n32": 1.25, "bn_n8": 1.0, "bn_n2": 1.25})
    assert regime.inside  # 1.25 is at most 1.25
    r = runs({"bn_n32": (0.9, 0.101, 0.9), "bn_n8": (0.9, 0.080, 0.9), "bn_n2": (0.9, 0.100, 0.9)})
    regime = check_regime(r, ["bn_n32", "bn_n2"], [["bn_n32", "bn_n8", "bn_n2"]])
    assert [b.split(" ")[1] for b in regime.broken] == ["bn_n32"]
    assert "R2 largest loss ratio 1.26 (bn_n32)" in regime.describe()


def test_the_regime_line_speaks_of_the_cells_the_claim_uses():
    """A claim on N = 2 only: the line names N = 2's gap and ratio, not those of the other cells R2 reads
    (GN at N = 32, far less trained and with a wider gap, is in the group but not in the claim)."""
    r = runs({"gn_n32": (0.90, 0.150, 0.86), "gn_n2": (0.90, 0.100, 0.89), "bn_n2": (0.90, 0.100, 0.885)})
    regime = check_regime(r, ["gn_n2", "bn_n2"], [["gn_n32", "gn_n2"]])
    assert regime.inside and regime.ratios["gn_n32"] == pytest.approx(1.5)
    assert regime.describe() == ("inside the paper's regime: R1 largest gap +1.50 points (bn_n2), "
                                 "R2 largest loss ratio 1.00 (gn_n2)")


def test_gate_keeps_the_numbers_and_makes_a_claim_outside_the_regime_inconclusive():
    v = Verdict("X-1", PASS, "a beats b", {"a": 1.0}, ["[pass] a > b"])
    outside = gate(v, check_regime(runs({"a": (1.0, 0.0, 0.5)}), ["a"]))
    assert outside.status == "inconclusive" and outside.measured == {"a": 1.0}
    assert outside.outcomes[1] == "(not decided, outside the paper's regime) [pass] a > b"
    assert gate(Verdict("X-1", PASS, "s", {}, []), check_regime(runs({"a": (0.9, 0.1, 0.9)}), ["a"])).status \
        == PASS


def test_report_shows_the_regime_beside_gated_and_ungated_verdicts():
    table = regime_table(runs({"a": (0.95, 0.2, 0.90), "b": (0.91, 0.3, 0.90)}))
    record = {"regime": table.to_dict("records")}
    assert list(table["gap (points)"]) == [5.0, 1.0]
    text = report.regime_text({"regime": {}}, record)
    assert text == "not gated: largest clean-train minus test gap +5.00 points (a: 95.00 vs 90.00%)"
    gated = {"regime": {"gated": True, "text": "inside the paper's regime: R1 largest gap +1.00 points (b)"}}
    assert report.regime_text(gated, record) == "gated: " + gated["regime"]["text"]
    assert report.regime_text({}, {"regime": []}) == "not measured"


def test_committed_results_need_committed_code(monkeypatch, tmp_path):
    monkeypatch.setattr(command, "uncommitted_code", lambda: ["normexp/train.py"])
    args = command.parse_args(["--profile", "quick", "--results", str(command.ROOT / "results")])
    with pytest.raises(ConfigError, match=r"^--results=.* 1 file\(s\) under normexp, experiments, configs "
                                          r"differ from the commit \(normexp/train.py\)"):
        command.check_args(args)
    command.check_args(command.parse_args(["--results", str(command.ROOT / "results"), "--allow-dirty"]))
    command.check_args(command.parse_args(["--results", str(tmp_path)]))  # results elsewhere: a user's own


def test_uncommitted_files_are_named_whole(monkeypatch):
    """git's status lines start with a space for a file changed in the work tree: the first one too."""
    from types import SimpleNamespace

    from normexp.reproduce import evaluate

    status = " M normexp/train.py\n M experiments/a/b.py\n?? configs/x.yaml\n"
    monkeypatch.setattr(evaluate.subprocess, "run", lambda *a, **k: SimpleNamespace(stdout=status))
    assert evaluate.uncommitted_code() == ["configs/x.yaml", "experiments/a/b.py", "normexp/train.py"]


def test_the_environment_names_the_libraries_that_made_the_numbers():
    from normexp.reproduce.evaluate import environment

    env = environment()
    assert env["torch"] == torch.__version__.split("+")[0] and env["numpy"] and env["cpu"]
