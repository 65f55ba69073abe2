"""Bad input: every key is checked before any work starts; the answer is one line naming the key, the value
and what is allowed, and the console script exits with status 2 leaving no run dir behind."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from omegaconf import OmegaConf

from normexp.compose import CONFIG_DIR, compose, compose_jobs, config_groups, expand_sweep, group_options
from normexp.config import SECTIONS, check_jobs, validate
from normexp.errors import ConfigError

REPO = Path(__file__).resolve().parent.parent


def error_of(overrides: list[str]) -> ConfigError | None:
    try:
        validate(compose(overrides))
    except ConfigError as error:
        return error
    return None


# ---------------------------------------------------------------- many jobs

def test_jobs_that_share_a_composition_get_the_configs_hydra_composes_for_each():
    jobs = expand_sweep(["model=vgg_small,mlp", "norm=group", "norm.groups=2", "optim=adam",
                         "+optim.betas=[0.8,0.9]", "data.batch_size=4,8", "~train.threads",
                         "profile=quick,smoke", "train.steps=7", "seed=0,1"])
    jobs += [["norm.name=layer", "norm=batch"], ["data.batch_size=3", "data.batch_size=5"]]
    shared = [OmegaConf.to_container(cfg) for cfg in compose_jobs(jobs)]
    assert shared == [OmegaConf.to_container(compose(job)) for job in jobs]
    assert len({repr(c) for c in shared}) == len(jobs)  # no two jobs get the same config


@pytest.mark.parametrize("job", [["model=mlp", "model.depth=7"], ["norm=group", "norm.groupz=2"],
                                 ["~train.nope"], ["+train.steps=3"], ["norm=batch", "norm=nope"]])
def test_a_bad_override_fails_the_same_way_in_a_shared_composition(job):
    with pytest.raises(ConfigError) as alone:
        compose(job)
    with pytest.raises(ConfigError) as shared:
        list(compose_jobs([["seed=1"], job]))
    assert str(shared.value) == str(alone.value)


# ---------------------------------------------------------------- one bad value at a time

@pytest.mark.parametrize("overrides, key, says", [
    (["optim.lr=abc"], "optim.lr", "must be a number > 0"),
    (["optim.lr=0"], "optim.lr", "must be a number > 0"),
    (["train.steps=1.5"], "train.steps", "must be an integer >= 1"),
    (["data.batch_size=-3"], "data.batch_size", "must be an integer >= 1"),
    (["norm=lp", "norm.p=3"], "norm.p", "choose one of: 1, 2, inf"),
    (["device=tpu"], "device", "choose one of: auto, cpu, cuda"),
    (["model.depth=7"], "model.depth", "no such config key under model"),
    (["+model.depth=7"], "model.depth", "model=vgg takes options: layout, activation, classifier, head"),
    (["model=resnet_cifar", "model.depth=7"], "model.depth", "must be 6n+2"),
    (["norm=group", "norm.groups=3"], "norm.groups", "must divide the layer's 8 channels"),
    (["norm=batch", "data.batch_size=1"], "data.batch_size", "needs at least 2 examples per batch"),
    (["norm=ghost_batch", "data.batch_size=60"], "data.batch_size", "multiple of norm.virtual_devices=8"),
    (["norm=grup"], "norm", "choose one of: batch, batch_noisy"),
    (["+train.foo=1"], "train.foo", "no such config key; train takes: steps"),
    (["+foo=1"], "foo", "no such config key; the top level takes"),
    (["+data.dim=3"], "data.dim", "data=mnist5k takes: name, root"),
    (["~train.steps"], "train.steps", "is required"),
    (["train.resume=maybe"], "train.resume", "choose one of: true, false"),
    (["train.log_every=0"], "train.log_every", "must be an integer >= 1"),
    (["train.diverge_loss=nan"], "train.diverge_loss", "must be a number > 0"),
    (["seed=-1"], "seed", "must be an integer >= 0"),
    (["model=mlp", "model.widths=[100,-3]"], "model.widths[1]", "must be a positive integer"),
    (["model=mlp", "norm=instance"], "norm.name", "has no spatial dims"),
    (["model=vgg11"], "model", "fails with norm=batch on data=mnist5k inputs (1, 28, 28)"),
    (["norm.eps=0"], "norm.eps", "must be a number > 0"),
    (["norm.momentum=2"], "norm.momentum", "must be a number >= 0 and <= 1"),
    (["norm.affine=1"], "norm.affine", "choose one of: true, false"),
    (["norm.population_estimator=pooled"], "norm.population_estimator", "choose one of: ioffe, precise"),
    (["optim=adam", "+optim.momentum=0.9"], "optim.momentum", "Adam takes: lr, betas"),
    (["optim.nesterov=true"], "optim.momentum", "Nesterov momentum requires a momentum"),
    (["optim._target_=torch.nn.Linear"], "optim._target_", "must name a torch.optim.Optimizer"),
    (["schedule=step", "schedule.milestones=[0.5,2]"], "schedule.milestones[1]", "a number >= 0 and <= 1"),
    (["logger=wandb", "logger.mode=loud"], "logger.mode", "choose one of: disabled, offline, online"),
    (["data.train_subset=30"], "data.batch_size", "must be <= the 30 training examples"),
    (["data=cifar10", "data.root=/nonexistent"], "data.name", "files are not under data.root='/nonexistent'"),
    (["data.root=${oc.env:NORMEXP_NO_VAR}"], "data.root", "Environment variable 'NORMEXP_NO_VAR' not found"),
    (["norm=batch,group"], "norm", "is a sweep: add -m"),
    (["norm.eps=[1"], "norm.eps", "cannot be parsed"),
])
def test_a_bad_value_names_its_key_and_what_is_allowed(overrides, key, says):
    error = error_of(overrides)
    assert error is not None, f"{overrides} passed validation"
    assert error.key == key and says in error.allowed
    assert str(error).startswith(f"{key}=") and "\n" not in str(error)


@pytest.mark.parametrize("overrides", [
    [], ["model=mlp", "norm=none"], ["model=resnet_cifar", "norm=group", "model.depth=8"],
    ["model=dln", "data=gaussian_linear", "norm=batch"], ["norm=lp", "norm.p=inf"],
    ["norm=ghost_batch", "data.batch_size=64"], ["optim=adam", "+optim.betas=[0.8,0.9]"], ["train.steps=1e3"],
    ["train.steps=null", "train.epochs=2"], ["schedule=step", "schedule.milestones=[0.5]"],
    ["logger=wandb", "logger.tags=[a,b]"], ["launcher=parallel"],
])
def test_good_configs_pass(overrides):
    assert error_of(overrides) is None


def test_cuda_is_refused_where_there_is_none():
    import torch

    error = error_of(["device=cuda"])
    assert (error is None) == torch.cuda.is_available()
    if error is not None:
        assert error.key == "device" and "CUDA is not available" in str(error)


# ---------------------------------------------------------------- random override lists

def _keys(node, prefix="") -> dict:
    if not isinstance(node, dict):
        return {prefix.rstrip("."): node}
    return {k: v for key, value in node.items() for k, v in _keys(value, f"{prefix}{key}.").items()}


def _real_keys() -> dict:
    """Every key of config.yaml and of every group option (norm.p, data.dim, ...) -> its values there."""
    top = OmegaConf.to_container(OmegaConf.load(CONFIG_DIR / "config.yaml"))
    top = {k: v for k, v in top.items() if k not in ("defaults", "hydra")}
    keys = {k: [v] for k, v in _keys(top).items()}
    for group in config_groups():
        for path in sorted((CONFIG_DIR / group).glob("*.yaml")):
            if "@package _global_" not in path.read_text():
                for k, v in _keys(OmegaConf.to_container(OmegaConf.load(path)) or {}).items():
                    keys.setdefault(f"{group}.{k}", []).append(v)
    return {**keys, "optim.betas": [[0.9, 0.999]], "optim.eps": [1e-8]}


REAL_KEYS = _real_keys()
GROUPS = config_groups()
OPTIONS = {g: group_options(g) for g in GROUPS}


def _render(value) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, list):
        return "[" + ",".join(_render(v) for v in value) + "]"
    return str(value)


def _like(example):
    """Values of the example's type, in and around the range that makes sense, plus a few of other types."""
    if isinstance(example, bool):
        return st.booleans()
    if isinstance(example, int):
        return st.one_of(st.integers(-2, 2 * max(example, 8)), st.sampled_from([1.0, 1e3, 2.5]))
    if isinstance(example, float):
        return st.one_of(st.floats(-0.5, 2 * max(example, 1.0)), st.sampled_from([0, 1e-9, 1e4, math.inf]))
    if isinstance(example, list):
        return st.lists(_like(example[0]) if example else st.integers(-1, 64), max_size=5)
    return st.sampled_from([example, "M", "relu", "none", "unit", "kaiming", "resnet18", "torch.optim.Adam"])


plausible = st.sampled_from(sorted(REAL_KEYS)).flatmap(
    lambda key: st.sampled_from(REAL_KEYS[key]).flatmap(_like).map(lambda v: f"{key}={_render(v)}"))
scalars = st.one_of(
    st.integers(-(10**12), 10**12), st.floats(allow_nan=True, allow_infinity=True), st.booleans(), st.none(),
    st.sampled_from(["M", "inf", "abc", "", "-0", "${seed}", "${oc.env:NOPE}", "a,b", "'q'", "[1", "x=y", "}",
                     "\\", "é", "\r"]),
    st.text(max_size=6),
)
hostile = st.one_of(scalars, st.lists(scalars, max_size=4)).map(_render)
bogus_keys = st.from_regex(r"[a-z_]{1,8}(\.[a-z_]{1,8}){0,2}", fullmatch=True)
choice = st.sampled_from(GROUPS).flatmap(
    lambda g: st.tuples(st.just(g), st.one_of(st.sampled_from(OPTIONS[g]), bogus_keys))).map("=".join)
overrides = st.one_of(
    plausible, plausible, plausible, choice, choice,
    st.tuples(st.sampled_from(sorted(REAL_KEYS)), hostile).map("=".join),
    st.tuples(st.sampled_from(["+", "++", "~"]), st.one_of(st.sampled_from(sorted(REAL_KEYS)), bogus_keys),
              hostile).map(lambda t: f"{t[0]}{t[1]}" if t[0] == "~" else f"{t[0]}{t[1]}={t[2]}"),
    st.text(max_size=12),
)
sweeps = st.one_of(
    st.sampled_from(GROUPS).flatmap(lambda g: st.lists(st.sampled_from(OPTIONS[g]), min_size=2, max_size=2)
                                    .map(lambda v, g=g: f"{g}={','.join(v)}")),
    st.lists(plausible, min_size=2, max_size=2).filter(lambda v: v[0].split("=")[0] == v[1].split("=")[0])
    .map(lambda v: f"{v[0]},{v[1].split('=', 1)[1]}"),
)


@settings(max_examples=60, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(items=st.lists(overrides, max_size=4), sweep=st.one_of(st.none(), sweeps))
def test_random_override_lists_give_a_valid_config_or_one_clear_line(items, sweep):
    items = [o for o in items if not o.lstrip("+~").startswith("hydra")]  # Hydra's own keys are Hydra's
    multirun = sweep is not None
    try:
        check_jobs([*items, *([sweep] if multirun else [])], multirun=multirun)
    except ConfigError as error:
        message = str(error)
        assert message.isprintable() and " is not valid: " in message and error.allowed  # one line
        root = lambda key: key.lstrip("+~").split("=", 1)[0].split(".")[0].split("[")[0]
        assert root(error.key) in {*SECTIONS, *GROUPS, *map(root, [*items, sweep or ""])}, message


# ---------------------------------------------------------------- the console script

@pytest.mark.slow
def test_a_job_that_fails_validation_inside_hydra_leaves_no_run_dir(tmp_path):
    """The check inside each job (launcher workers, ``main`` called directly) behaves as the console
    script's check of the whole command line before Hydra starts (tested in test_cli.py)."""
    code = "import sys; from normexp.train import main; sys.argv[0] = 'normexp-train'; main()"
    env = {**os.environ, "NORMEXP_DATA": os.environ.get("NORMEXP_DATA", str(REPO / "data"))}
    done = subprocess.run([sys.executable, "-c", code, "profile=smoke", "data.batch_size=0",
                           f"hydra.run.dir={tmp_path / 'run'}"], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 2
    assert done.stderr.splitlines() == ["normexp-train: error: data.batch_size=0 is not valid: must be an "
                                        "integer >= 1"]
    assert not (tmp_path / "run").exists()


# ---------------------------------------------------------------- one check per rule, reused

@pytest.mark.parametrize("overrides, key, says", [
    (["probes=hessian", "probes.hessian.tol=1"], "probes.hessian.tol", "must be a number > 0 and < 1"),
    (["probes=hessian", "probes.hessian.max_iter=2.0"], "probes.hessian.max_iter", "must be an integer >= 1"),
    (["probes=landscape", "probes.landscape.points=0"], "probes.landscape.points", "must be an integer >= 1"),
    (["probes=landscape", "probes.landscape.low=inf"], "probes.landscape.low", "must be a number > 0"),
    (["probes=activations", "probes.activations.percentiles=[50,101]"], "probes.activations.percentiles",
     "must be a number >= 0 and <= 100"),
    (["probes=all", "probes.ics.every=true"], "probes.ics.every", "must be an integer >= 0"),
    (["data.normalize=zscore"], "data.normalize", "choose one of: none, standardize, unit"),
    (["schedule.name=exp"], "schedule.name", "choose one of: constant, cosine, linear, step"),
    (["norm.name=bogus"], "norm.name", "choose one of: batch, batch_noisy"),
])
def test_probes_data_and_schedules_use_the_config_checks(overrides, key, says):
    error = error_of(["model=mlp", *overrides])
    assert error is not None, f"{overrides} passed validation"
    assert error.key == key and says in error.allowed


def test_the_batch_a_norm_sees_is_checked_by_its_class():
    from normexp.norms import NormSpec

    NormSpec("batch").check_batch(2)
    NormSpec("frozen_batch").check_batch(1)  # running statistics only
    NormSpec("group").check_batch(1)
    with pytest.raises(ConfigError, match="norm=batch needs at least 2 examples per batch"):
        NormSpec("batch").check_batch(1)
    with pytest.raises(ConfigError, match="norm=ghost_batch needs at least 2 examples per slice"):
        NormSpec("ghost_batch", options={"virtual_devices": 4}).check_batch(4)
    with pytest.raises(ConfigError, match="multiple of norm.virtual_devices=8"):  # the class's default
        NormSpec("ghost_batch").check_batch(12)
    NormSpec("ghost_batch").check_batch(16)
