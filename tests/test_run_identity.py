"""One run identity (normexp/identity.py): a run dir holds the planned run when its recorded config computes
the same thing, whatever the override text says. Resuming (``train.check_same_run``, ``train.run``), a sweep
job's folder (``sweep.job_key``) and the reproduction planner (``PlannedRun.stale``) agree on it, and the
planner never deletes a run dir: one whose computation changed is moved aside, intact, and run again.
Tiny runs of a user's own spec (``normexp-reproduce --spec``), four steps each."""

import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from normexp import train
from normexp.compose import compose
from normexp.errors import ConfigError
from normexp.identity import RUNTIME_KEYS, identity_key, is_runtime_key, run_identity
from normexp.records import CONFIG, LOCK, SUMMARY, RunRecord, read_json
from normexp.reproduce import command as reproduce
from normexp.reproduce import execute, plan, spec
from normexp.sweep import job_key

BASE = ["model=mlp", "data=mnist5k", "norm=none", "optim.lr=0.05"]
# spec variants of the finished run: (the spec's base overrides, more profile keys, --threads)
SAME = {
    "reordered": (BASE[::-1], {}, 1),
    "checkpoint_every": (BASE, {"train.checkpoint_every": 2}, 1),
    "threads": (BASE, {}, 2),
}
CHANGED = {"lr": ([*BASE[:-1], "optim.lr=0.1"], {}, 1)}


def write_spec(folder: Path, base: list[str], more: dict) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    profile = {"seeds": [0], "train.steps": 4, "train.eval_every": 0, **more}
    (folder / "e.yaml").write_text(yaml.safe_dump({
        "title": "one run", "base": base, "cells": [{"name": "c", "overrides": []}],
        "profiles": {"smoke": profile}, "claims": {}}))


def reproduce_spec(tree: SimpleNamespace, threads: int) -> list[str]:
    """``normexp-reproduce --spec`` on the tree; returns the run dirs it trained."""
    calls = []
    real = execute.train_one
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(execute, "train_one", lambda cfg, d, *a: calls.append(d) or real(cfg, d, *a))
        assert reproduce.main(["--profile", "smoke", "--jobs", "1", "--threads", str(threads), "--results",
                               str(tree.root / "results"), "--outputs", str(tree.outputs), "--spec",
                               str(tree.folder)]) == 0
    return calls


def files(run_dir: Path) -> dict:
    """The records of a run dir, each file's bytes and modification time (not ``run.lock``, which names
    whoever last held the dir: moving it aside holds it)."""
    return {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in run_dir.iterdir()
            if p.is_file() and p.name != LOCK}


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A finished run of BASE, made by normexp-reproduce --spec."""
    root = tmp_path_factory.mktemp("identity")
    tree = SimpleNamespace(root=root, folder=root / "mine", outputs=root / "outputs")
    write_spec(tree.folder, BASE, {})
    assert reproduce_spec(tree, 1) == [str(tree.outputs / "smoke" / "mine" / "e" / "c" / "seed0")]
    return tree


@pytest.fixture
def tree(finished, tmp_path):
    """A copy of the finished tree of this test's own."""
    shutil.copytree(finished.root, tmp_path / "t", copy_function=shutil.copy2)
    root = tmp_path / "t"
    tree = SimpleNamespace(root=root, folder=root / "mine", outputs=root / "outputs")
    tree.run_dir = tree.outputs / "smoke" / "mine" / "e" / "c" / "seed0"
    assert read_json(tree.run_dir / SUMMARY)["status"] == "completed"
    return tree


def aside(run_dir: Path) -> list[Path]:
    return sorted(run_dir.parent.glob(f"{run_dir.name}.changed-*"))


@pytest.mark.parametrize("variant", list(SAME))
def test_a_finished_run_whose_computation_is_unchanged_is_reused(tree, variant, capsys):
    base, more, threads = SAME[variant]
    before = files(tree.run_dir)
    write_spec(tree.folder, base, more)
    assert reproduce_spec(tree, threads) == []
    assert files(tree.run_dir) == before and aside(tree.run_dir) == []
    assert "moved it to" not in capsys.readouterr().out


def test_an_unfinished_run_whose_computation_is_unchanged_goes_on_in_its_own_dir(tree):
    (tree.run_dir / SUMMARY).unlink()  # as a killed run leaves it
    base, more, threads = SAME["checkpoint_every"]
    write_spec(tree.folder, base, more)
    assert reproduce_spec(tree, threads) == [str(tree.run_dir)]
    assert aside(tree.run_dir) == [] and read_json(tree.run_dir / SUMMARY)["status"] == "completed"


def test_a_run_whose_computation_changed_is_moved_aside_intact_and_run_again(tree, capsys):
    before = files(tree.run_dir)
    base, more, threads = CHANGED["lr"]
    write_spec(tree.folder, base, more)
    assert reproduce_spec(tree, threads) == [str(tree.run_dir)]
    (moved,) = aside(tree.run_dir)
    assert moved.parent == tree.run_dir.parent and files(moved) == before  # the old run, untouched
    assert sorted(p.name for p in tree.run_dir.parent.iterdir()) == ["seed0", moved.name]
    assert yaml.safe_load((tree.run_dir / CONFIG).read_text())["optim"]["lr"] == 0.1
    assert read_json(tree.run_dir / SUMMARY)["status"] == "completed"
    out = capsys.readouterr().out
    assert f"{tree.run_dir} holds a run with optim.lr=0.05 (planned 0.1): moved it to {moved}" in out
    # the new run is the planned one: nothing more is moved or run
    assert reproduce_spec(tree, threads) == [] and aside(tree.run_dir) == [moved]


def test_a_second_move_aside_gets_a_name_of_its_own(tmp_path):
    run_dir = tmp_path / "seed0"
    first, second = plan.aside_path(run_dir), plan.aside_path(run_dir)
    assert first != second and first.is_dir() and second.is_dir()
    after = tmp_path / "seed1"
    assert sorted([after, second, run_dir, first]) == [run_dir, first, second, after]  # beside the original


@pytest.mark.parametrize("variant", [*SAME, *CHANGED])
def test_sweep_key_resume_and_planner_agree_on_what_is_the_same_run(tree, variant):
    base, more, threads = {**SAME, **CHANGED}[variant]
    same = variant in SAME
    write_spec(tree.folder, base, more)
    exp = spec.load_specs(tree.folder)[0]
    (planned,) = plan.Planner("smoke", tree.outputs, jobs=1, threads=threads).runs(exp, exp.cells("smoke"))
    assert planned.run_dir == tree.run_dir
    recorded = (tree.run_dir / CONFIG).read_text()
    made_with = read_json(tree.run_dir / "meta.json")["overrides"]
    # the planner
    assert planned.stale is not same
    # a sweep's job folder: the same name for the same run, named by the recorded config's identity too
    key = job_key(compose(planned.overrides, return_hydra_config=True))
    assert job_key(compose(made_with, return_hydra_config=True)) == identity_key(recorded)
    assert (key == identity_key(recorded)) is same
    # resuming: the finished run is returned as it is, or the run dir is refused for the other run
    if same:
        train.check_same_run(planned.cfg, RunRecord(tree.run_dir))
        assert train.run(planned.cfg, tree.run_dir) == read_json(tree.run_dir / SUMMARY)
    else:
        with pytest.raises(ConfigError) as refused:
            train.run(planned.cfg, tree.run_dir)
        assert refused.value.key == "optim.lr" and str(tree.run_dir) in str(refused.value)


def test_the_identity_leaves_out_the_runtime_keys_and_only_them():
    cfg = compose(BASE)
    identity = run_identity(cfg)
    assert "train.eval_train_images" in RUNTIME_KEYS and is_runtime_key("train.eval_train_images.")
    assert not any(is_runtime_key(k) for k in identity)
    assert {"optim.lr.", "seed.", "train.steps.", "model.name."} <= set(identity)
    assert identity == run_identity(compose([*BASE, "train.threads=3", "train.checkpoint_every=7",
                                             "device=cpu", "train.eval_train_images=100"]))
    assert identity != run_identity(compose([*BASE, "seed=1"]))
    assert not is_runtime_key("train.threadsx") and not is_runtime_key("devices.")  # whole keys only


def test_an_option_at_its_neutral_value_is_the_same_run_as_a_config_without_it():
    """A run recorded before ``norm.population_estimator`` existed is the same run as one with it at
    ``ioffe``; ``precise`` is another run. Keys governed by a neutral option (an evaluation's image count
    while no extra evaluation is asked for) do not count either."""
    from omegaconf import OmegaConf

    from normexp.identity import NEUTRAL

    new = OmegaConf.to_container(compose([*BASE[:2], "norm=batch", "optim.lr=0.05"]), resolve=True)
    assert new["norm"]["population_estimator"] == "ioffe"
    old = yaml.safe_load(yaml.safe_dump(new))
    del old["norm"]["population_estimator"]
    assert run_identity(old) == run_identity(new)
    new["norm"]["population_estimator"] = "precise"
    assert run_identity(old) != run_identity(new)
    new["norm"]["population_estimator"] = "ioffe"
    new["train"].update(eval_modes=["running"], precise_images=123)
    assert run_identity(old) == run_identity(new)
    new["train"]["eval_modes"] = ["running", "precise"]
    changed = run_identity(new)
    assert changed != run_identity(old) and changed["train.precise_images."] == 123
    assert set(NEUTRAL) >= {"data.sampler", "data.corruption", "train.freeze_bn_at", "train.eval_modes"}
