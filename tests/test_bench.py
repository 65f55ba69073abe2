"""normexp-bench's markdown: a run of some sections replaces those and keeps the others; the norms and augment
sections' rows at a tiny size; --device's errors; the layouts and wholerun cases are the quick suite's runs
(no timing here)."""

import math
import sys
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from normexp.bench import (
    LAYOUT_CASES,
    NORM_DEPTH,
    SECTIONS,
    WHOLE_RUN_CASES,
    WUHE_DEVICES,
    WUHE_NORMS,
    WUHE_RESNET,
    bench_augment,
    bench_norms,
    cli,
    section_markdown,
    write_markdown,
)
from normexp.data import fashion_mnist_available


def test_writing_some_sections_keeps_the_others_in_section_order(tmp_path):
    path = tmp_path / "bench.md"
    write_markdown(path, {"sweep": section_markdown("sweep", [("s", ">= 1.7", 1.6, 1.7, 1.8)], "cmd a")})
    overhead = section_markdown("overhead", [("o", "<= 1.05", 1.0, 1.01, 1.02)], "cmd b")
    write_markdown(path, {"overhead": overhead})
    text = path.read_text()
    assert text.count("## sweep") == 1 and text.count("## overhead") == 1
    assert text.index("## overhead") < text.index("## sweep")  # SECTIONS order, not writing order
    assert "| s | >= 1.7 | 1.6 | 1.7 | 1.8 |" in text and "`cmd a`" in text
    write_markdown(path, {"sweep": section_markdown("sweep", [("s", ">= 1.7", 1.9, 2.0, 2.1)], "cmd c")})
    text = path.read_text()
    assert "| s | >= 1.7 | 1.9 | 2 | 2.1 |" in text and "`cmd a`" not in text and "`cmd b`" in text
    assert list(SECTIONS)[:2] == ["overhead", "probes"]


def _finite_positive(*values) -> bool:
    return all(math.isfinite(v) and v > 0 for v in values)


@pytest.mark.skipif(not fashion_mnist_available(OmegaConf.create({"root": "data"})),
                    reason="Fashion-MNIST is not installed (make test installs Debian's package as root)")
def test_the_norms_and_augment_sections_at_a_tiny_size_give_well_formed_rows():
    """Depth 8, N = 2, two blocks of one step: the rows' shape and sense, not their values (no timing)."""
    cpu = torch.device("cpu")
    rows = bench_norms(2, cpu, 1, depth=8, sizes=(2,), images=16, warmup=1, memory_steps=1)
    assert all(len(r) == 5 and isinstance(r[0], str) and r[1] == "" and r[2] <= r[3] <= r[4] for r in rows)
    labels = list(WUHE_NORMS)
    ratio, absolute, memory = rows[:6], rows[6:12], rows[12:]
    assert len(memory) == 6 and [r[0].split(", ")[1] for r in memory] == labels
    assert all(f", {label} / BN, N = 2 (batch 16)" in r[0] for r, label in zip(ratio, labels, strict=True))
    assert ratio[0][2:] == (1.0, 1.0, 1.0)  # BN over itself, from the same timings
    assert all(_finite_positive(*r[2:]) for r in ratio[1:] + absolute)
    if Path("/proc/self/clear_refs").exists():  # Linux: the peak RSS can be reset
        assert all(_finite_positive(*r[2:]) and r[2] == r[4] and "peak RSS" in r[0] for r in memory)

    rows = bench_augment(2, cpu, 1, depth=8, sizes=(2,), images=16, warmup=1)
    assert [r[0].split(",")[0] for r in rows] == [
        "step time with crop (data.crop_padding=2) / without", "ms crop adds per batch",
        "step time with crop + flip (data.crop_padding=2) / without", "ms crop + flip adds per batch",
        "ms per step without augmentation"]
    assert all(len(r) == 5 and r[2] <= r[3] <= r[4] and all(map(math.isfinite, r[2:])) for r in rows)
    assert all(_finite_positive(*r[2:]) for r in rows[::2])  # a difference of two timings may be < 0


def test_the_norms_section_trains_the_wuhe_resnet_cell_of_the_full_profile():
    from normexp.reproduce.spec import discover

    spec = next(e for e in discover() if e.id == "wuhe2018/norms").spec
    full, params = [*spec["base"], *spec["params"]["resnet"]["full"]], spec["params"]
    assert [o for o in full if not o.startswith(("train.", "model.depth="))] == WUHE_RESNET
    assert f"model.depth={NORM_DEPTH}" in full and params["devices"] == WUHE_DEVICES
    assert f"norm.groups={params['gn_groups']['full']}" in WUHE_NORMS["GN (G = 4)"]


@pytest.mark.parametrize("device", ["gpu", "cuda"])
def test_a_bad_device_is_a_one_line_error(device, monkeypatch, capsys):
    if device == "cuda" and torch.cuda.is_available():
        pytest.skip("CUDA is there")
    monkeypatch.setattr(sys, "argv", ["normexp-bench", "--only", "norms", "--device", device])
    assert cli() == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"normexp-bench: error: --device={device!r} is not valid")


def test_the_layouts_section_times_the_quick_suites_cells(compose):
    """Its Wu & He cases are quick's ResNet (depth 8) and each composes to a valid run with channels last."""
    from normexp.config import validate
    from normexp.reproduce.spec import discover

    spec = next(e for e in discover() if e.id == "wuhe2018/batch_sweep").spec
    quick = [*spec["base"], *spec["params"]["resnet"]["quick"]]
    for label, overrides in LAYOUT_CASES.items():
        if label.startswith("Wu & He"):
            assert {o for o in overrides if o.startswith(("model", "data=", "optim", "schedule"))} == {
                o for o in quick if not o.startswith("train.")}
        validate(compose([*overrides, "train.channels_last=true", "train.steps=2"]))


def test_the_wholerun_cases_are_the_quick_suites_runs(tmp_path):
    """Each case's net, norm, batch, lr, test set, length and evaluation cadence are those of a run the quick
    suite plans (Wu & He's N = 2 case: half the run, evaluated at its end alone)."""
    from normexp.compose import compose  # as normexp-train composes them, not the tests' smoke size
    from normexp.reproduce import plan
    from normexp.reproduce.spec import discover

    planner, exps = plan.Planner("quick", tmp_path, jobs=1, check_data=False), {e.id: e for e in discover()}
    planned = {(e, r.cell): r.cfg for e in ("ioffe2015/lr_tolerance", "santurkar2018/vgg_dln",
                                            "wuhe2018/batch_sweep")
               for r in plan.plan_experiment(exps[e], planner)[0]}
    suite_runs = [("ioffe2015/lr_tolerance", "relu_nobn_lr0.1"), ("santurkar2018/vgg_dln", "bn_lr0.1"),
                  ("wuhe2018/batch_sweep", "bn_n32"), ("wuhe2018/batch_sweep", "bn_n2")]
    keys = ["model.name", "model.depth", "model.init", "data.name", "data.batch_size", "data.train_subset",
            "data.test_subset", "optim.lr", "optim.momentum", "train.steps", "train.eval_every"]
    for (label, overrides), suite_run in zip(WHOLE_RUN_CASES.items(), suite_runs, strict=True):
        case, run = compose(overrides), planned[suite_run]
        expected = {k: OmegaConf.select(run, k) for k in keys}
        if suite_run[0] == "ioffe2015/lr_tolerance":  # the BN cells (stage 2, after the search) run the same
            expected["optim.lr"] = OmegaConf.select(case, "optim.lr")
        if suite_run[1] == "bn_n2":
            assert f"{run.train.steps // 2} of its {run.train.steps} steps" in label
            expected.update({"train.steps": run.train.steps // 2, "train.eval_every": 0})
        assert {k: OmegaConf.select(case, k) for k in keys} == expected, label
        assert case.norm.name in (run.norm.name, "batch"), label
