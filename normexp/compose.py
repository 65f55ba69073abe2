"""Hydra composition and sweeps: the config a command line's job gets (``compose``), a multirun's job list
(``expand_sweep``), and the names each config group offers. Hydra's multi-line errors become one-line
ConfigErrors naming the override. Checking the composed values is ``normexp.config``'s job.
"""

from __future__ import annotations

import functools
import itertools
import os
import re
import time
import uuid
from pathlib import Path

from hydra import compose as hydra_compose
from hydra import initialize_config_dir
from hydra._internal.config_loader_impl import ConfigLoaderImpl
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import DictConfig, OmegaConf

from normexp.errors import ConfigError, choices, first_line

CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"
MAX_JOBS_CHECKED = 2000


def new_run_stamp() -> str:
    """Date/time plus a random suffix: run dirs stay unique for jobs started in the same second."""
    return time.strftime("%Y-%m-%d/%H-%M-%S-") + uuid.uuid4().hex[:6]


# The stamp travels in the environment so parallel launcher workers put a sweep's jobs in one folder.
if not OmegaConf.has_resolver("normexp_stamp"):
    OmegaConf.register_new_resolver(
        "normexp_stamp", lambda: os.environ.get("NORMEXP_RUN_STAMP") or new_run_stamp(), use_cache=True)


def group_options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONFIG_DIR / group).glob("*.yaml"))


def config_groups() -> list[str]:
    return sorted(p.name for p in CONFIG_DIR.iterdir() if p.is_dir() and p.name != "hydra")


@functools.lru_cache
def declared_keys(group: str, name: str) -> tuple[str, ...]:
    """The keys the group's yaml files declare for ``name`` (e.g. data=gaussian_linear: dim, n_train, ...)."""
    keys: dict = {}
    for path in sorted((CONFIG_DIR / group).glob("*.yaml")):
        node = OmegaConf.load(path)
        if node.get("name") == name:
            keys.update(dict.fromkeys(node.keys()))
    return tuple(keys)


def _hydra_error_to_config_error(error: Exception, overrides: list[str]) -> ConfigError:
    message = first_line(error)
    m = re.search(r"override '([^']+)'", message) or re.search(r"[Kk]ey '([^']+)'", message)
    keys = [o.lstrip("+~").split("=", 1)[0] for o in overrides]
    key = m.group(1) if m else next((k for k in keys if k and k in message), None)
    if key is None:
        return ConfigError("overrides", " ".join(overrides), message)
    value = next((o.partition("=")[2] for o in overrides if o.lstrip("+~").partition("=")[0] == key), None)
    if m and ("not in struct" in message or "Could not override" in message or "Could not append" in message):
        parent = key.rsplit(".", 1)[0] if "." in key else ""
        return ConfigError(key, value, f"no such config key{f' under {parent}' if parent else ''} "
                                       "(use +key=value to add one)")
    return ConfigError(key, value, message)


def _parse(overrides: list[str]):
    """Hydra's parse of each override; a syntax error names the override that has it."""
    parser = OverridesParser.create()
    parsed = []
    for item in overrides:
        try:
            parsed.extend(parser.parse_overrides([item]))
        except Exception as e:  # noqa: BLE001 - Hydra's parse errors are multi-line
            key, _, value = item.lstrip("+~").partition("=")
            raise ConfigError(key or item, value or None, f"cannot be parsed: {first_line(e)}") from None
    return parsed


def expand_sweep(overrides: list[str]) -> list[list[str]]:
    """The job list of a multirun command line, as Hydra's basic sweeper builds it (cartesian product)."""
    axes = []
    for o in _parse(overrides):
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
    _refuse_sweeps(_parse(overrides))
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


def _refuse_sweeps(parsed: list) -> None:
    for o in parsed:
        if o.is_sweep_override():
            raise ConfigError(o.get_key_element(), o.input_line.partition("=")[2],
                              "is a sweep: add -m (--multirun) to run one job per value")


def compose_sharing(job: list[str], bases: dict, return_hydra_config: bool = False) -> DictConfig:
    """``compose(job)`` from the composition of the job's config-group choices alone, kept in ``bases``
    for the next job that makes the same choices, with the job's other overrides applied to a copy the way
    Hydra applies them (after the groups, in order). A composition takes ~0.1 s, which a sweep or a suite
    of hundreds of jobs feels."""
    groups = set(config_groups())
    chosen = tuple(o for o in job if o.lstrip("+~").partition("=")[0] in groups)
    if (chosen, return_hydra_config) not in bases:
        bases[chosen, return_hydra_config] = compose(list(chosen), return_hydra_config)
    cfg = bases[chosen, return_hydra_config].copy()
    rest = _parse([o for o in job if o not in chosen])
    _refuse_sweeps(rest)
    try:
        ConfigLoaderImpl._apply_overrides_to_config(rest, cfg)
    except ConfigError:
        raise
    except Exception as e:  # noqa: BLE001
        raise _hydra_error_to_config_error(e, job) from None
    return cfg


def compose_jobs(jobs: list[list[str]]):
    """Each job's config, as ``compose`` gives it, one at a time (``compose_sharing``)."""
    bases: dict = {}
    for job in jobs:
        yield compose_sharing(job, bases)


def job_overrides(overrides: list[str]) -> list[str]:
    """A command line's overrides without those of ``hydra.*`` (launcher, sweep dir, ...): Hydra's own."""
    return [o for o in overrides if not o.lstrip("+~").startswith("hydra")]
