"""Sweeps that resume: a job's folder is named by its config, and a finished job is not launched again.

``hydra.sweep.subdir`` is ``${normexp_job_key:}``, a short hash of the job's run identity (its resolved
config without the keys that do not change what is computed: ``normexp.identity``). Running a sweep command
again into the same sweep dir (``hydra.sweep.dir=...``) therefore finds each job's earlier folder whatever its
job number: adding a value to a swept key or reordering values reuses the finished runs. Hydra's basic sweeper
with ``SkipFinished`` around its launcher (hydra_plugins/normexp_sweeper) launches only the jobs whose folder
holds no finished run; an unfinished one resumes from its checkpoint, a failed one starts over
(``normexp.train.run``).
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

from hydra.core.utils import JobReturn, JobStatus
from omegaconf import DictConfig, OmegaConf

from normexp.errors import ConfigError
from normexp.identity import identity_key
from normexp.records import FINISHED, SUMMARY, read_json

log = logging.getLogger(__name__)

def job_key(cfg: DictConfig) -> str:
    """A job's folder: the hash of its run identity (``normexp.identity``)."""
    return identity_key(cfg)


if not OmegaConf.has_resolver("normexp_job_key"):
    OmegaConf.register_new_resolver("normexp_job_key", lambda *, _root_: job_key(_root_))


def job_dir(sweep_config: DictConfig) -> Path:
    return Path(str(sweep_config.hydra.sweep.dir)) / str(sweep_config.hydra.sweep.subdir)


class SkipFinished:
    """A Hydra launcher's stand-in that launches only the jobs without a finished run in their folder and
    returns the finished ones' results as they are."""

    def __init__(self, launcher, config_loader, config: DictConfig):
        self.launcher, self.config_loader, self.config = launcher, config_loader, config

    def launch(self, job_overrides, initial_job_idx: int):
        first_of_dir, same_as, finished = {}, {}, {}
        for i, overrides in enumerate(job_overrides):
            run_dir = job_dir(self.config_loader.load_sweep_config(self.config, list(overrides)))
            summary = read_json(run_dir / SUMMARY) or {}
            if summary.get("status") in FINISHED:
                finished[i] = JobReturn(overrides=list(overrides), _return_value=summary.get("test_acc"),
                                        working_dir=str(run_dir), status=JobStatus.COMPLETED)
            else:  # jobs that differ only in RUNTIME_KEYS share a folder: the first one runs
                same_as[i] = first_of_dir.setdefault(run_dir, i)
        todo = sorted(set(same_as.values()))
        if len(todo) < len(job_overrides):
            log.info(f"normexp: {len(finished)} of {len(job_overrides)} jobs already finished in "
                     f"{self.config.hydra.sweep.dir}; launching {len(todo)}")
        launched = self.launcher.launch([job_overrides[i] for i in todo], initial_job_idx) if todo else []
        results = dict(zip(todo, launched, strict=True))
        return [finished[i] if i in finished else results[same_as[i]] for i in range(len(job_overrides))]


def check_launcher(hydra_config: DictConfig) -> None:
    """``launcher=slurm`` needs Slurm's commands on this machine: without them, one line instead of
    submitit's traceback."""
    target = str(hydra_config.hydra.launcher.get("_target_", ""))
    if target.endswith(".SlurmLauncher") and shutil.which("sbatch") is None:
        raise ConfigError("launcher", "slurm", "Slurm's sbatch is not on this machine's PATH; choose one of: "
                          "basic, parallel, submitit_local (or run from a Slurm login node)")
