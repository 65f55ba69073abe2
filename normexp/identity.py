"""One run identity: what a run computes, read from its resolved config.

Two configs make the same run when they agree on every key but ``RUNTIME_KEYS``, the keys that change how a
run goes (speed, threads, checkpoint cadence, progress bars, where data is read from, trackers, resuming) and
not the numbers it computes. Everything that decides whether a run dir holds "this run" uses
:func:`run_identity`: resuming a run dir or returning its finished summary (``normexp.train.check_same_run``),
a sweep job's folder name (``normexp.sweep.job_key``, :func:`identity_key`) and the reproduction planner's
check of an existing run dir against the planned run (``normexp.reproduce.plan.PlannedRun.stale``).
"""

from __future__ import annotations

import hashlib
import json

from omegaconf import DictConfig, OmegaConf

# Keys that may change when a run dir is resumed or reused: they do not change what is computed.
# ``train.eval_train_images`` only sets how many training images the clean training-set evaluation reads.
# ``train.compile`` and ``train.channels_last`` are not among them: both change which kernels run, and so the
# last bits of every number (a run repeated with the same setting is bit-identical).
RUNTIME_KEYS = ("train.resume", "train.progress", "train.threads", "train.checkpoint_every",
                "train.eval_train_images",
                "train.save_final", "device", "logger", "data.root", "data.download",
                "data.workers")


# Options added after runs were made: each key with the value at which a run computes what a config without
# the key computed, and the keys that matter only when it has another value. At that value they are left out
# of the identity, so adding an option (or an estimator, an evaluation) does not make every earlier run a
# changed one that the planner moves aside and trains again.
NEUTRAL = {
    "norm.population_estimator": ("ioffe", ()),
    "train.eval_modes": (["running"],
                         ("train.precise_images", "train.precise_batch", "train.eval_batch_stats")),
    "train.freeze_bn_at": (None, ("train.freeze_bn_images",)),
    "data.sampler": ("iid", ("data.classes_per_batch",)),
    "data.corruption": (None, ("data.corruption_severity", "data.corruption_seed")),
    "probes.moment_drift.pair": (False, ()),
}


def _without_neutral(identity: dict) -> dict:
    """``identity`` without each ``NEUTRAL`` key at its neutral value (or absent) and the keys it governs."""
    drop = set()
    for key, (neutral, governed) in NEUTRAL.items():
        if identity.get(key + ".", neutral) == neutral:
            drop |= {key, *governed}
    return {k: v for k, v in identity.items() if k.rstrip(".") not in drop}


def flat(node, prefix: str = "") -> dict:
    """``{"a": {"b": 1}}`` -> ``{"a.b.": 1}`` (each key ends with a dot; an empty dict stays as a key of its
    own)."""
    if not isinstance(node, dict):
        return {prefix: node}
    out = {k: v for key, value in node.items() for k, v in flat(value, f"{prefix}{key}.").items()}
    return out or {prefix: {}}


def is_runtime_key(key: str) -> bool:
    """Whether a dotted key (``train.threads``, or :func:`flat`'s ``train.threads.``) is one of
    ``RUNTIME_KEYS`` or below one."""
    key = key.rstrip(".") + "."
    return any(key.startswith(k + ".") for k in RUNTIME_KEYS)


def run_identity(cfg) -> dict:
    """What identifies a run: its resolved config, flat (:func:`flat`), without Hydra's node and
    ``RUNTIME_KEYS``. ``cfg`` is a config (resolved here), a plain dict, or the YAML text of a run dir's
    ``config.yaml``."""
    if isinstance(cfg, str):  # written resolved: read as it is
        cfg = OmegaConf.to_container(OmegaConf.create(cfg))
    elif isinstance(cfg, DictConfig):  # Hydra's node is not resolved (a sweep's subdir is this key)
        task = OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"])
        cfg = OmegaConf.to_container(task, resolve=True)
    cfg = {k: v for k, v in cfg.items() if k != "hydra"}
    return _without_neutral({k: v for k, v in flat(cfg).items() if not is_runtime_key(k)})


def identity_key(cfg) -> str:
    """A short hash of :func:`run_identity`: a sweep job's folder name."""
    text = json.dumps(sorted(run_identity(cfg).items()), default=repr)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


ABSENT = "<absent>"


def identity_changes(old, new) -> list[tuple[str, object, object]]:
    """``(key, old value, new value)`` for every key (without flat's trailing dot) on which two runs'
    identities differ, in key order; ``ABSENT`` stands for a key one of them lacks. Empty: the same run."""
    a, b = run_identity(old), run_identity(new)
    return [(k.rstrip("."), a.get(k, ABSENT), b.get(k, ABSENT)) for k in sorted(set(a) | set(b))
            if a.get(k, ABSENT) != b.get(k, ABSENT)]
