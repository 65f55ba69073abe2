"""Config schema and validation: every key is checked before any work starts.

``validate(cfg)`` raises :class:`ConfigError` (one line: key, bad value, what is allowed) for the first bad
key: unknown keys, wrong types, out-of-range values, options a model/norm/optimizer does not take, and
combinations that cannot work (group sizes, batch size vs batch statistics, a model too deep for the
input, data missing offline, a device that is not there). ``check_jobs`` composes every job of a command
line (sweeps expanded, ``normexp.compose``) and validates each, so a typo in the 40th job of a sweep stops
the sweep before the first job trains. The value checks themselves are ``normexp.checks``.
"""

from __future__ import annotations

import importlib
import inspect
import math
import warnings

import torch
from omegaconf import DictConfig, OmegaConf

from normexp.checks import flag, integer, is_int, is_number, list_of, number, one_of, steps_or_fraction, text
from normexp.compose import compose_jobs, declared_keys, expand_sweep, job_overrides
from normexp.data import (
    CORRUPTIONS,
    SAMPLERS,
    SOURCES,
    check_available,
    check_corruption,
    check_normalize,
    data_info,
)
from normexp.errors import ConfigError, first_line
from normexp.evaluation import EVAL_MODES, check_eval_modes
from normexp.loggers import LOGGERS
from normexp.models import BUILDER_ARGUMENTS, MODELS, build_model
from normexp.norms import NORMS, NormSpec, check_freezable
from normexp.optim import SCHEDULES
from normexp.probes import ProbeSet
from normexp.runtime import DEVICES, resolve_device

SECTIONS = ("seed", "device", "train", "model", "norm", "data", "optim", "schedule", "probes",
            "logger")
# The registries whose entries a config names by key. Optimizers are named by ``optim._target_``, the
# import path of any torch.optim.Optimizer (Hydra's instantiate is their registry; names would narrow it).
NAMED = (MODELS, NORMS, SOURCES, SCHEDULES, LOGGERS)


# Keys of the fixed sections (top level, train, data, schedule, logger). A key in REQUIRED must be present;
# the others are checked when the chosen group option declares them.
SCHEMA = {
    "seed": integer(0, 2**31 - 1),
    "device": one_of(*DEVICES),
    "train.steps": integer(1, optional=True),
    "train.epochs": integer(1, optional=True),
    "train.log_every": integer(1),
    "train.eval_every": integer(0),
    "train.eval_train_images": integer(0),
    "train.eval_modes": list_of(one_of(*EVAL_MODES), "evaluation modes"),
    "train.precise_images": integer(1),
    "train.checkpoint_every": integer(0),
    "train.resume": flag(),
    "train.save_final": flag(),
    "train.init_from": text(optional=True),
    "train.diverge_loss": number(0, strict=True, finite=False),  # inf: only non-finite losses
    "train.threads": integer(0),
    "train.world_size": integer(1),
    "train.compile": flag(),
    "train.channels_last": flag(),
    "train.deterministic": flag(),
    "train.progress": flag(),
    "train.freeze_bn_at": number(0, 1, strict=True, optional=True),
    "train.freeze_bn_images": integer(1),
    "data.root": text(),
    "data.batch_size": integer(1),
    "data.eval_batch_size": integer(1),
    "data.train_subset": integer(1, optional=True),
    "data.test_subset": integer(1, optional=True),
    "data.normalize": check_normalize,
    "data.reduction": one_of("mean", "sum"),
    "data.binarize": flag(),
    "data.crop_padding": integer(0),
    "data.flip": flag(),
    "data.download": flag(),
    "data.corruption": check_corruption,
    "data.corruption_severity": number(optional=True),
    "data.corruption_seed": integer(0),
    "data.sampler": one_of(*SAMPLERS),
    "data.classes_per_batch": integer(1),
    "data.dim": integer(1),
    "data.n_train": integer(1),
    "data.n_test": integer(1),
    "data.matrix_seed": integer(0),
    "data.crop": integer(1),
    "data.num_classes": integer(2),
    "data.workers": integer(0),
    "schedule.warmup_steps": steps_or_fraction,
    "schedule.milestones": list_of(number(0, 1), "fractions of the run in [0, 1]"),
    "schedule.gamma": number(0, strict=True),
    "logger.mode": one_of("offline", "online", "disabled"),
    "logger.project": text(),
    "logger.entity": text(optional=True),
    "logger.group": text(optional=True),
    "logger.tags": list_of(text(), "strings"),
    "optim._target_": text(),
    "optim.lr": number(0, strict=True),
    "norm.eps": number(0, strict=True),
    "norm.momentum": number(0, 1),
    "model.init_scale": number(),
    "train.precise_batch": integer(1),  # after data.batch_size, their default: a bad one is named first
    "train.eval_batch_stats": integer(1),
}
REQUIRED = ("seed", "device", *(k for k in SCHEMA if k.startswith("train.")),
            "data.name", "data.batch_size", "optim._target_", "optim.lr", "schedule.name", "logger.name",
            "model.name", "norm.name")
_ABSENT = object()


def _select(cfg, key: str):
    value = OmegaConf.select(cfg, key, default=_ABSENT)
    return OmegaConf.to_container(value, resolve=True) if OmegaConf.is_config(value) else value


def _check_option_types(section: str, options: dict, params) -> None:
    """Constructor options against the constructor's annotations (or default types): a bool is a bool, an
    int a positive int, a float a non-negative number, a tuple a list. Values are passed to constructors as
    they are, so integers must be exact here."""
    for key, value in options.items():
        p = params.get(key)
        if p is None or p.default is inspect.Parameter.empty:
            continue
        ann = p.annotation if isinstance(p.annotation, str) else str(p.annotation)
        if ann == str(inspect.Parameter.empty):
            ann = type(p.default).__name__
        optional = "None" in ann or p.default is None
        where = f"{section}.{key}"
        if value is None and optional:
            continue
        if "tuple" in ann or "list" in ann:
            names = any(isinstance(d, str) for d in p.default)  # e.g. vgg's layout: channel counts and "M"
            floats = any(isinstance(d, float) for d in p.default)  # e.g. Adam's betas
            want = "a number >= 0" if floats else "a positive integer" + (" or a name" if names else "")
            if not isinstance(value, (list, tuple)):
                raise ConfigError(where, value, f"must be a list; each item {want}")
            for i, item in enumerate(value):
                ok = (is_number(item) and item >= 0) if floats else (is_int(item) and item >= 1)
                if not (ok or names and isinstance(item, str) and item):
                    raise ConfigError(f"{where}[{i}]", item, f"must be {want}")
        elif "bool" in ann:
            flag(optional)(where, value)
        elif "float" in ann:
            number(0, optional=optional, finite=False)(where, value)
        elif "int" in ann:
            integer(1, optional=optional, exact=True)(where, value)
        elif "str" in ann:
            text(optional)(where, value)


def _check_sections(cfg) -> None:
    for key in cfg:
        if key not in SECTIONS:
            raise ConfigError(key, _select(cfg, key), "no such config key; the top level takes: "
                              + ", ".join(SECTIONS))
    for key in REQUIRED:
        if _select(cfg, key) is _ABSENT:
            raise ConfigError(key, None, "is required (it has no default once removed)")
    closed = {"train": [k.split(".", 1)[1] for k in SCHEMA if k.startswith("train.")],
              **{group: declared_keys(group, cfg[group].name) for group in ("data", "schedule", "logger")}}
    for section, allowed in closed.items():
        if not allowed:  # an unknown name: its own check says what is allowed
            continue
        for key in cfg[section]:
            if key not in allowed:
                where = f"{section}={cfg[section].name}" if section != "train" else "train"
                raise ConfigError(f"{section}.{key}", _select(cfg, f"{section}.{key}"),
                                  f"no such config key; {where} takes: {', '.join(allowed)}")
    for key, check in SCHEMA.items():
        value = _select(cfg, key)
        if value is not _ABSENT:
            check(key, value)


def total_steps(cfg, n_train: int) -> int:
    epochs = cfg.train.get("epochs")
    if epochs:
        return int(epochs) * max(n_train // int(cfg.data.batch_size), 1)
    return int(cfg.train.steps)


def freeze_bn_step(fraction, steps: int) -> int | None:
    """The number of steps trained before ``train.freeze_bn_at`` freezes BN: round(fraction x steps), with
    steps left on both sides (None: no freeze)."""
    if fraction is None:
        return None
    step = round(fraction * steps)
    if not 0 < step < steps:
        raise ConfigError("train.freeze_bn_at", fraction, f"freezes after round({fraction} x {steps}) = "
                          f"{step} of the {steps} steps: choose a fraction that leaves steps on both sides")
    return step


def _check_optimizer(cfg) -> None:
    target = cfg.optim._target_
    module, _, name = target.rpartition(".")
    try:
        cls = getattr(importlib.import_module(module), name)
    except Exception:  # noqa: BLE001 - a module that is not there, or fails to import
        cls = None
    if not (isinstance(cls, type) and issubclass(cls, torch.optim.Optimizer)):
        raise ConfigError("optim._target_", target, "must name a torch.optim.Optimizer, e.g. torch.optim.SGD")
    params = inspect.signature(cls.__init__).parameters
    options = {k: v for k, v in OmegaConf.to_container(cfg.optim, resolve=True).items() if k != "_target_"}
    for key, value in options.items():
        if key not in params or key in ("self", "params"):
            raise ConfigError(f"optim.{key}", value, f"{cls.__name__} takes: {', '.join(list(params)[2:])}")
    _check_option_types("optim", options, params)
    try:
        cls([torch.zeros(1, requires_grad=True)], **options)
    except Exception as e:  # noqa: BLE001 - torch checks values with ValueError and friends
        message = first_line(e)
        key = next((k for k in options if k.replace("_", " ") in message.replace("_", " ").lower()), None)
        key = key or ("lr" if "learning rate" in message else None)
        raise ConfigError(f"optim.{key}" if key else "optim._target_", options.get(key, target),
                          f"{cls.__name__} refuses it: {message}") from None


def validate(cfg: DictConfig) -> None:
    """Check every key a run reads; raise ConfigError on the first bad one. Cheap: the model is built and
    run once on the meta device (no memory, no compute) and no data is loaded, only its presence checked."""
    try:
        OmegaConf.to_container(cfg, resolve=True)
    except Exception as e:  # noqa: BLE001 - an interpolation that does not resolve
        key = getattr(e, "full_key", None) or "config"
        raw = OmegaConf.to_container(cfg)  # unresolved: the interpolation as written
        for part in key.split(".") if key != "config" else ["-"]:
            raw = raw.get(part) if isinstance(raw, dict) else None
        raise ConfigError(key, raw, first_line(e)) from None
    for registry in NAMED:
        value = _select(cfg, registry.key)
        if value is not _ABSENT:
            registry.lookup(value)
    _check_sections(cfg)
    resolve_device(cfg.device)
    if cfg.train.steps is None and cfg.train.epochs is None:
        raise ConfigError("train.steps", None, "set train.steps or train.epochs")

    _check_optimizer(cfg)
    batch = int(cfg.data.batch_size)
    n_train = cfg.data.get("train_subset") or cfg.data.get("n_train")
    if n_train and batch > int(n_train):
        raise ConfigError("data.batch_size", batch, f"must be <= the {int(n_train)} training examples")
    info = data_info(cfg.data)
    _check_data_options(cfg.data, info)
    check_available(cfg.data)
    _check_freeze_bn(cfg)

    plain = OmegaConf.to_container(cfg, resolve=True)
    model_options = {k: v for k, v in plain["model"].items() if k not in ("name", "init", "init_scale")}
    _check_option_types("model", model_options, MODELS.options(cfg.model.name, leading=BUILDER_ARGUMENTS))
    _check_option_types("norm", {k: v for k, v in plain["norm"].items() if k not in ("name", "placement")},
                        NORMS.options(cfg.norm.name, leading=1))
    norm = NormSpec.from_config(cfg.norm)
    norm.check_batch(_check_processes(cfg, batch, norm))
    model = _check_model_runs(cfg, norm, info, batch)
    check_eval_modes(cfg, norm, model)
    ProbeSet.check_config(cfg.get("probes"), model)


def _check_data_options(data, info) -> None:
    """The data options that depend on each other or on the data set: a corruption's severity, the
    class-grouped sampler's classes per batch (each class's image count is checked when the data loads)."""
    name, severity = data.get("corruption"), data.get("corruption_severity")
    if severity is not None:
        if name is None:
            raise ConfigError("data.corruption_severity", severity, "sets the severity of data.corruption, "
                              f"which is null: choose one of {', '.join(sorted(CORRUPTIONS))} there")
        corruption = CORRUPTIONS[name]
        number(corruption.low, strict=corruption.strict)("data.corruption_severity", severity)
        side = min(info.in_shape[1:])
        if name == "blur" and math.ceil(3 * severity) >= side:
            raise ConfigError("data.corruption_severity", severity, "the blur's radius ceil(3 sigma) must be "
                              f"below the {side}-pixel image side: choose sigma < {side / 3:g}")
    if data.get("sampler", "iid") == "class_grouped":
        k, batch = int(data.get("classes_per_batch", 2)), int(data.batch_size)
        if k > info.num_classes or batch % k:
            fits = ", ".join(str(d) for d in range(1, info.num_classes + 1) if batch % d == 0)
            raise ConfigError("data.classes_per_batch", k, f"must divide data.batch_size={batch} and be at "
                              f"most the {info.num_classes} classes: choose one of {fits}")


def _check_freeze_bn(cfg) -> None:
    fraction = cfg.train.get("freeze_bn_at")
    if fraction is None:
        return
    check_freezable(cfg.norm.name, fraction)
    if not cfg.train.get("epochs"):  # else the steps are known once the data is (train.build_loop checks)
        freeze_bn_step(fraction, int(cfg.train.steps))


def _check_processes(cfg, batch: int, norm) -> int:
    """Multi-process runs: the global batch splits evenly, one device each, no probes. Returns the batch
    one process's norms see (the global batch for sync_batch)."""
    world = int(cfg.train.world_size)
    if world == 1:
        return batch
    if batch % world:
        raise ConfigError("data.batch_size", batch, f"must be a multiple of train.world_size={world}")
    if any(OmegaConf.is_dict(p) and p.get("every") for p in (cfg.get("probes") or {}).values()):
        raise ConfigError("train.world_size", world,
                          "probes run in single-process runs only: use 1 or probes=none")
    if resolve_device(cfg.device).type == "cuda" and world > torch.cuda.device_count():
        raise ConfigError("train.world_size", world, f"this machine has {torch.cuda.device_count()} GPUs")
    return batch if norm.cls.syncs_across_processes else batch // world


def _check_model_runs(cfg, norm, info, batch: int):
    """Build the model and run one training batch through it on the meta device (shapes only); return it.
    Jobs of a sweep that differ in other keys (seeds, learning rates) share one check."""
    key = repr((OmegaConf.to_container(cfg.model, resolve=True), norm, tuple(info.in_shape), info.num_classes,
                batch))
    if key not in _CHECKED_MODELS:
        _CHECKED_MODELS[key] = _build_and_run_on_meta(cfg, norm, info, batch)
    return _CHECKED_MODELS[key]


_CHECKED_MODELS: dict = {}


def _build_and_run_on_meta(cfg, norm, info, batch: int):
    try:
        with torch.device("meta"), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # zero-size layers warn; the forward pass says what is wrong
            model = build_model(cfg.model, norm, info.in_shape, info.num_classes)
            model.train()(torch.empty(batch, *info.in_shape))
    except ConfigError:
        raise
    except Exception as e:  # noqa: BLE001 - shape errors from deep inside torch
        where = f"with norm={norm.name} on data={cfg.data.name} inputs {tuple(info.in_shape)}"
        raise ConfigError("model", cfg.model.name, f"fails {where}: {first_line(e)}") from None
    return model


def check_jobs(overrides: list[str], multirun: bool) -> int:
    """Compose and validate every job of a command line; return the number of jobs checked. Overrides of
    ``hydra.*`` are Hydra's to check."""
    jobs = expand_sweep(job_overrides(overrides)) if multirun else [job_overrides(overrides)]
    for cfg in compose_jobs(jobs):
        validate(cfg)
    return len(jobs)
