"""Worker processes that start warm, for the parallel launcher and ``normexp-reproduce --jobs``.

Both run jobs in joblib's loky workers. By default each worker is a fresh interpreter that imports torch and
the training code, then ``torch._dynamo`` (the first ``torch.optim`` optimizer pulls it in): about 4 s per
worker on a 2-core machine, paid again by every worker of every sweep. Here loky forks its workers from one
``multiprocessing`` forkserver that has imported all of that once. The server is a fresh single-threaded
interpreter, so unlike forking this process it is safe whatever this process holds (threads, a CUDA
context). Its objects are frozen for the collector and it exits without tearing torch down
(normexp/warm_server.py). Linux only; elsewhere loky keeps its default start.
"""

from __future__ import annotations

import fcntl
import itertools
import multiprocessing
import multiprocessing.forkserver
import os
import sys

import torch
from hydra.experimental.callback import Callback

from normexp import warm_server
from normexp.compose import compose, expand_sweep, job_overrides

PRELOAD = ["normexp.train", "torch._dynamo"]


def use_warm_workers(also: tuple[str, ...] = ()) -> bool:
    """Make loky fork its workers from a forkserver with ``PRELOAD`` (and ``also``) imported, and start that
    server now so its imports overlap this process's own work. Returns whether it did."""
    if sys.platform != "linux":
        return False
    from joblib.externals.loky.backend.context import set_start_method  # lazy: start-up

    # by module object, not a string: the server skips preloads that fail to import, silently
    multiprocessing.set_forkserver_preload([*PRELOAD, *also, warm_server.__name__])
    set_start_method("forkserver", force=True)
    os.environ[warm_server.SERVER_ENV] = str(os.getpid())  # the server's parent; the server pops it
    try:
        multiprocessing.forkserver.ensure_running()
    finally:
        del os.environ[warm_server.SERVER_ENV]
    return True


def start_warm_workers_early(overrides: list[str]) -> None:
    """If the sweep's launcher asks for warm workers (``launcher=parallel``), start their server before the
    command checks every job, so the server's imports overlap those checks instead of following them."""
    first_job = expand_sweep(job_overrides(overrides))[0]
    callbacks = compose(first_job, return_hydra_config=True).hydra.get("callbacks") or {}
    if any(c.get("_target_") == f"{__name__}.{WarmWorkers.__name__}" for c in callbacks.values()):
        use_warm_workers()


class WarmWorkers(Callback):
    """Hydra callback for ``launcher=parallel``: warm workers before the sweep launches its jobs."""

    def on_multirun_start(self, config, **kwargs) -> None:
        use_warm_workers()


# ---------------------------------------------------------------- one device per worker

SLOTS_ENV = "NORMEXP_DEVICE_SLOTS"  # a folder of slot locks; launcher=parallel sets it (hydra.job.env_set)
FAKE_DEVICES_ENV = "NORMEXP_FAKE_DEVICES"  # tests on CPU: the number of GPUs to spread the workers over
_held_slot: tuple[int, object] | None = None  # (slot, its open lock file) for this process's lifetime


def pinned_device() -> str | None:
    """``cuda:<i>`` for every job of this parallel-launcher worker, so that N workers on N GPUs use one each
    (None outside that launcher or without GPUs). A worker takes the lowest slot nobody holds: an exclusive
    ``flock`` on ``<slots folder>/<slot>``, released by the kernel when the worker ends; slot k is GPU k
    modulo the GPU count."""
    global _held_slot
    folder = os.environ.get(SLOTS_ENV)
    if not folder:
        return None
    count = int(os.environ.get(FAKE_DEVICES_ENV) or 0) or torch.cuda.device_count()
    if count == 0:
        return None
    if _held_slot is None:
        os.makedirs(folder, exist_ok=True)
        for slot in itertools.count():
            lock = open(os.path.join(folder, str(slot)), "a")  # noqa: SIM115 - held until the process ends
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                lock.close()
                continue
            _held_slot = (slot, lock)
            break
    return f"cuda:{_held_slot[0] % count}"
