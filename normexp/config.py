"""Config composition and validation: every key is checked before any work starts.

``validate(cfg)`` raises :class:`ConfigError` (one line: key, bad value, what is allowed). ``check_command_line``
composes every job of a command line (sweeps expanded) and validates each, so a typo in the 40th job of a
sweep stops the sweep before the first job trains.
"""

from __future__ import annotations

import itertools
import math
import os
import re
import time
import uuid
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

from normexp.errors import ConfigError, choices

CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"
DEVICES = ("auto", "cpu", "cuda")
MAX_JOBS_CHECKED = 2000


def new_run_stamp() -> str:
    """Date/time plus a random suffix: run dirs stay unique for jobs started in the same second."""
    return time.strftime("%Y-%m-%d/%H-%M-%S-") + uuid.uuid4().hex[:6]


# The stamp travels in the environment so parallel launcher workers put a sweep's jobs in one folder.
if not OmegaConf.has_resolver("normexp_stamp"):
    OmegaConf.register_new_resolver("normexp_stamp", lambda: os.environ.get("NORMEXP_RUN_STAMP") or new_run_stamp(),
                                    use_cache=True)


def group_options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONFIG_DIR / group).glob("*.yaml"))


def config_groups() -> list[str]:
    return sorted(p.name for p in CONFIG_DIR.iterdir() if p.is_dir() and p.name != "hydra")


# ---------------------------------------------------------------- value checks

def _number(cfg, key: str, kind=float, low=None, strict=False, optional=False):
    value = OmegaConf.select(cfg, key)
    if value is None and optional:
        return None
    want = ("an integer" if kind is int else "a number") + (
        "" if low is None else f" {'>' if strict else '>='} {low}") + (" or null" if optional else "")
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    if ok and kind is int and not float(value).is_integer():
        ok = False
    if ok and not math.isfinite(float(value)):
        ok = False
    if ok and low is not None:
        ok = value > low if strict else value >= low
    if not ok:
        raise ConfigError(key, value, f"must be {want}")
    return kind(value)


def _one_of(cfg, key: str, allowed) -> str:
    value = OmegaConf.select(cfg, key)
    if value not in allowed:
        raise ConfigError(key, value, choices(allowed))
    return value


def _flag(cfg, key: str, allowed=(True, False)):
    value = OmegaConf.select(cfg, key)
    if not any(value is a or (isinstance(a, str) and value == a) for a in allowed):
        raise ConfigError(key, value, "choose one of: " + ", ".join(str(a).lower() for a in allowed))
    return value


def resolve_device(name: str) -> torch.device:
    if name not in DEVICES:
        raise ConfigError("device", name, choices(DEVICES))
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device", name, "CUDA is not available on this machine; choose one of: auto, cpu")
    return torch.device("cuda" if name == "auto" and torch.cuda.is_available() else ("cpu" if name == "auto" else name))


def total_steps(cfg, n_train: int) -> int:
    epochs = cfg.train.get("epochs")
    if epochs:
        return int(epochs) * max(n_train // int(cfg.data.batch_size), 1)
    return int(cfg.train.steps)


def validate(cfg: DictConfig) -> None:
    """Check every key a run reads; raise ConfigError on the first bad one. Cheap: the model is built on
    the meta device and no data is loaded (only its presence is checked)."""
    from normexp.data import check_available, data_info
    from normexp.loggers import LOGGERS
    from normexp.models import FLAT_INPUT_MODELS, build_model
    from normexp.norms import NormSpec
    from normexp.optim import lr_factor

    resolve_device(cfg.get("device"))
    _number(cfg, "seed", int, 0)
    _one_of(cfg, "profile", group_options("profile"))
    _number(cfg, "train.steps", int, 0, strict=True, optional=cfg.train.get("epochs") is not None)
    _number(cfg, "train.epochs", int, 0, strict=True, optional=True)
    for key in ("log_every", "eval_every", "checkpoint_every", "threads"):
        _number(cfg, f"train.{key}", int, 0)
    if int(cfg.train.log_every) == 0:
        raise ConfigError("train.log_every", 0, "must be an integer >= 1")
    _number(cfg, "train.diverge_loss", float, 0, strict=True)
    for key in ("compile", "channels_last", "deterministic", "progress"):
        _flag(cfg, f"train.{key}")
    _flag(cfg, "train.resume", (True, False, "auto"))

    _number(cfg, "optim.lr", float, 0, strict=True)
    for key in ("momentum", "weight_decay"):
        if OmegaConf.select(cfg, f"optim.{key}") is not None:
            _number(cfg, f"optim.{key}", float, 0)
    lr_factor(cfg.schedule, 1)(0)
    _number(cfg, "schedule.warmup_steps", int, 0)

    batch = _number(cfg, "data.batch_size", int, 1)
    for key in ("train_subset", "test_subset"):
        _number(cfg, f"data.{key}", int, 1, optional=True)
    info = data_info(cfg.data)
    check_available(cfg.data)

    norm = NormSpec.from_config(cfg.norm)
    slices = int(norm.options.get("virtual_devices", 1)) if norm.name == "ghost_batch" else 1
    if norm.name == "ghost_batch" and batch % slices:
        raise ConfigError("data.batch_size", batch,
                          f"norm=ghost_batch needs a multiple of norm.virtual_devices={slices}")
    if norm.uses_batch_statistics and batch // slices < 2:
        raise ConfigError("data.batch_size", batch, f"norm={norm.name} needs at least 2 examples per "
                          f"{'slice' if slices > 1 else 'batch'} to compute batch statistics")
    if norm.name == "instance" and (len(info.in_shape) == 1 or cfg.model.get("name") in FLAT_INPUT_MODELS):
        raise ConfigError("norm.name", "instance", f"model={cfg.model.get('name')} has no spatial dims; "
                          "instance norm would normalize each value alone")
    with torch.device("meta"):
        model = build_model(cfg.model, norm, info.in_shape, info.num_classes)

    _one_of(cfg, "logger.name", LOGGERS)
    from normexp.probes import ProbeSet

    ProbeSet.check_config(cfg.get("probes"), model)


# ---------------------------------------------------------------- command lines

def _hydra_error_to_config_error(error: Exception, overrides: list[str]) -> ConfigError:
    text = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    m = re.search(r"override '([^']+)'", text) or re.search(r"[Kk]ey '([^']+)'", text)
    if m:
        key = m.group(1)
        value = next((o.split("=", 1)[1] for o in overrides if o.lstrip("+~").split("=", 1)[0] == key), None)
        parent = key.rsplit(".", 1)[0] if "." in key else ""
        return ConfigError(key, value, f"no such config key{f' under {parent}' if parent else ''} "
                                       "(use +key=value to add one)")
    return ConfigError("overrides", " ".join(overrides), text)


def expand_sweep(overrides: list[str]) -> list[list[str]]:
    """The job list of a multirun command line, as Hydra's basic sweeper builds it (cartesian product)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    try:
        parsed = OverridesParser.create().parse_overrides(overrides)
    except Exception as e:  # noqa: BLE001 - Hydra's parse errors are multi-line
        raise ConfigError("overrides", " ".join(overrides), str(e).strip().splitlines()[0]) from None
    axes = []
    for o in parsed:
        if o.is_sweep_override() and o.is_discrete_sweep():
            key = o.get_key_element()
            axes.append([f"{key}={v}" for v in o.sweep_string_iterator()])
        else:
            axes.append([o.input_line])
    return [list(job) for job in itertools.islice(itertools.product(*axes), MAX_JOBS_CHECKED)]


def check_group_choices(job: list[str]) -> None:
    groups = config_groups()
    for item in job:
        key, _, value = item.lstrip("+~").partition("=")
        if key in groups and value and value not in group_options(key):
            raise ConfigError(key, value, choices(group_options(key)))


def compose(overrides: list[str], return_hydra_config: bool = False) -> DictConfig:
    """The config a job with these overrides gets (Hydra's compose API), errors as ConfigError."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    check_group_choices(overrides)
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
            return hydra_compose("config", overrides=overrides, return_hydra_config=return_hydra_config)
    except ConfigError:
        raise
    except Exception as e:  # noqa: BLE001
        raise _hydra_error_to_config_error(e, overrides) from None
    finally:
        GlobalHydra.instance().clear()


def check_jobs(overrides: list[str], multirun: bool) -> int:
    """Compose and validate every job of a command line; return the number of jobs checked."""
    job_overrides = [o for o in overrides if not o.lstrip("+~").startswith("hydra")]
    jobs = expand_sweep(job_overrides) if multirun else [job_overrides]
    for job in jobs:
        validate(compose(job))
    return len(jobs)
