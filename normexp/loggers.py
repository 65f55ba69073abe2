"""Optional experiment trackers beside the local records. A tracker's trouble never fails a run: every call is
guarded, and after the first error the tracker turns itself off with one warning."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import OmegaConf

from normexp.registry import Registry


class WandbLogger:
    """One wandb run per job, offline unless ``logger.mode=online``; files go under the run dir."""

    def __init__(self, cfg, run_dir: Path, run_name: str):
        self.run = None
        try:
            import wandb  # lazy: optional

            lcfg = cfg.logger
            os.environ.setdefault("WANDB_SILENT", "true")
            self.run = wandb.init(
                project=lcfg.get("project", "normexp"), entity=lcfg.get("entity"),
                group=lcfg.get("group") or sweep_group(),
                tags=list(lcfg.get("tags") or []), name=run_name, mode=lcfg.get("mode", "offline"),
                dir=str(run_dir), config=OmegaConf.to_container(cfg, resolve=True), reinit="finish_previous",
            )
        except Exception as e:  # noqa: BLE001 - any tracker failure must leave the run going
            self._disable(e)

    def _disable(self, error: Exception) -> None:
        warnings.warn(f"wandb disabled for this run: {type(error).__name__}: {error}", stacklevel=3)
        self.run = None

    def log(self, record: dict) -> None:
        if self.run is None:
            return
        split = record.get("split", "train")
        prefix = f"{split}/{record['probe']}" if "probe" in record else split
        values = {f"{prefix}/{k}": v for k, v in record.items()
                  if k not in ("step", "split", "probe") and isinstance(v, (int, float))}
        try:
            self.run.log(values, step=int(record["step"]))
        except Exception as e:  # noqa: BLE001
            self._disable(e)

    def finish(self, summary: dict) -> None:
        if self.run is None:
            return
        try:
            self.run.summary.update({k: v for k, v in summary.items() if isinstance(v, (int, float, str))})
            self.run.finish(exit_code=0 if summary.get("status") != "failed" else 1)
        except Exception as e:  # noqa: BLE001
            self._disable(e)


def sweep_group() -> str | None:
    """The sweep dir of the Hydra multirun this job belongs to: the runs of one sweep share a wandb group."""

    if not HydraConfig.initialized() or HydraConfig.get().mode != RunMode.MULTIRUN:
        return None
    return str(Path(HydraConfig.get().sweep.dir).resolve())


# name -> the tracker beside the run dir's own records (metrics.jsonl, summary.json); local: none
LOGGERS = Registry("logger.name", {"local": None, "wandb": WandbLogger})


def build_trackers(cfg, run_dir: Path, run_name: str) -> list:
    tracker = LOGGERS.lookup(cfg.logger.get("name", "local"))
    return [tracker(cfg, run_dir, run_name)] if tracker else []
