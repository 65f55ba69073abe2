"""normexp-train: one run, from a Hydra config to a run directory.

Read top to bottom: ``run`` validates the config, decides between a fresh start, a resume from
``checkpoint.pt`` and a finished run dir, and records a failure whatever raised it; ``build_loop`` builds
everything (seed, data on the device, model with its norm, optimizer, probes, trackers); ``Loop.train``
reads loss values from the device only at the log cadence, evaluates, checkpoints and writes records, and
ends a run as ``diverged`` at the first non-finite or too large loss. ``main`` is the Hydra entry, ``cli``
the console script that checks every job of the command line before Hydra starts any.
"""

from __future__ import annotations

import math
import os
import platform
import shutil
import subprocess
import sys
import time
import warnings
from pathlib import Path

import hydra
import torch
from hydra._internal.utils import get_args_parser
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf
from torch.nn.parallel import DistributedDataParallel
from tqdm.auto import tqdm

from normexp import __version__, distributed, lifecycle
from normexp.checkpoint import (
    UnsafeCheckpoint,
    load_checkpoint,
    load_weights,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from normexp.checkpoint import save_weights as save_model_weights
from normexp.compose import CONFIG_DIR, compose, expand_sweep, job_overrides, new_run_stamp
from normexp.config import check_jobs, freeze_bn_step, total_steps, validate
from normexp.data import build_data
from normexp.errors import ConfigError
from normexp.evaluation import Evaluator, extra_summary
from normexp.identity import ABSENT, identity_changes
from normexp.loggers import build_trackers
from normexp.models import build_model
from normexp.norms import (
    NormSpec,
    freeze_batch_norms,
    freeze_with_precise_stats,
    population_batches,
    recompute_population_stats,
)
from normexp.optim import build_optimizer, build_schedule
from normexp.probes import ProbeSet
from normexp.records import CHECKPOINT, FINISHED, METRICS, SUMMARY_KEYS, QuietRecord, RunDirBusy, RunRecord
from normexp.records import writing as writing_run_dir
from normexp.runtime import configure_torch, make_loss, model_device, resolve_device, seed_everything
from normexp.sweep import check_launcher
from normexp.workers import pinned_device, start_warm_workers_early


class Window:
    """The training losses (and predictions) of the steps since the last log. A step only keeps references
    to tensors it made anyway (no kernel, no host sync); a log reads the window in one sync, which is also
    when the first step whose loss is non-finite or above ``bound`` is found."""

    def __init__(self, device: torch.device, bound: float):
        self.device, self.bound = device, bound
        self.losses, self.outputs, self.targets = [], [], []
        self.first_step, self.carried_correct, self.last = 0, 0, {}

    @property
    def count(self) -> int:
        return len(self.losses)

    def add(self, step: int, loss: torch.Tensor, out: torch.Tensor, y: torch.Tensor, classify: bool):
        if not self.losses:
            self.first_step = step
        self.losses.append(loss)
        if classify:
            self.outputs.append(out)
            self.targets.append(y)

    def _read(self) -> tuple[list[float], int]:
        """This window's losses and its total correct count, in one host sync."""
        losses = torch.stack(self.losses).float()
        if self.outputs:
            correct = (torch.cat(self.outputs).argmax(dim=1) == torch.cat(self.targets)).sum()
            losses = torch.cat([losses, correct.view(1).to(losses)])
        values = losses.tolist()
        n = self.count
        return values[:n], self.carried_correct + (int(values[n]) if self.outputs else 0)

    def _first_bad(self, losses: list[float]) -> int | None:
        """The first step whose loss is bad, the earliest over the processes of a multi-process run."""
        bad = next((i for i, v in enumerate(losses) if not math.isfinite(v) or v > self.bound), None)
        step = -1 if bad is None else self.first_step + bad
        step = distributed.first_over_processes(step, self.device)
        return step if step >= 0 else None

    @property
    def diverged_at(self) -> int | None:
        return self._first_bad(self._read()[0]) if self.losses else None

    def flush(self, batch_size: int, classify: bool) -> tuple[dict, int | None]:
        """(mean loss, and accuracy over ``batch_size`` examples a step, since the last flush; the first bad
        step or None). Means are averaged over the processes of a multi-process run."""
        losses, correct = self._read()
        n, bad = self.count, self._first_bad(losses)
        loss, correct = distributed.mean_over_processes([sum(losses), correct], self.device)
        self.last = {"loss": loss / n, **({"acc": correct / (n * batch_size)} if classify else {})}
        self.losses, self.outputs, self.targets, self.carried_correct = [], [], [], 0
        return self.last, bad

    def state_dict(self) -> dict:
        losses, correct = self._read() if self.losses else ([], 0)
        return {"losses": losses, "correct": correct, "first_step": self.first_step, "last": self.last}

    def load_state_dict(self, s: dict) -> None:
        self.losses = [torch.tensor(v, device=self.device) for v in s["losses"]]
        self.outputs, self.targets, self.carried_correct = [], [], s["correct"]
        self.first_step, self.last = s["first_step"], s["last"]


def git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                             timeout=5, cwd=Path(__file__).resolve().parent)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def check_same_run(cfg: DictConfig, record: RunRecord) -> None:
    """Continuing a run dir (or returning its finished summary) is right only for the config that made it."""
    if record.config_yaml is None:
        return
    changes = identity_changes(record.config_yaml, cfg)  # keys of normexp.identity.RUNTIME_KEYS may change
    if changes:
        key, old, new = changes[0]
        raise ConfigError(key, None if new == ABSENT else new, f"{record.dir} holds a run with "
                          f"{None if old == ABSENT else old!r} there; use another run dir, or "
                          "train.resume=false to start over")


def run(cfg: DictConfig, run_dir: str | Path, choices: dict | None = None, overrides: list | None = None
        ) -> dict:
    """Train ``cfg`` into ``run_dir`` and return its summary. Resumes from ``checkpoint.pt`` when present
    (unless ``train.resume=false``); a finished run dir is returned as it is. The run dir is held for the
    whole run (:class:`RunDirBusy` when another live process holds it). Any exception ends the run as
    ``failed`` (``interrupted`` for Ctrl-C or SIGTERM) with the reason in ``summary.json`` and is raised
    again."""
    validate(cfg)
    if distributed.active():  # a process of a multi-process run: the process that launched it holds the dir
        return _run(cfg, run_dir, choices, overrides)
    finished = finished_summary(cfg, QuietRecord(Path(run_dir)))
    if finished:  # returned as it is, without even taking its lock
        return finished
    with writing_run_dir(run_dir), lifecycle.a_run():
        if int(cfg.train.world_size) > 1:
            return distributed.launch(run, cfg, run_dir, choices, overrides)
        return _run(cfg, run_dir, choices, overrides)


def finished_summary(cfg: DictConfig, record: RunRecord) -> dict | None:
    """The summary of a run dir this config finished (with ``train.resume``), else None."""
    summary = record.summary if cfg.train.resume else None
    if not summary or summary.get("status") not in FINISHED:
        return None
    check_same_run(cfg, record)
    return summary


def _run(cfg: DictConfig, run_dir: str | Path, choices: dict | None, overrides: list | None) -> dict:
    record = (RunRecord if distributed.rank() == 0 else QuietRecord)(Path(run_dir))
    finished = finished_summary(cfg, record)  # finished by another process since run() looked
    if finished:
        return finished
    if cfg.train.resume and (record.dir / CHECKPOINT).exists():
        check_same_run(cfg, record)
    checkpoint = load_checkpoint(record.dir) if cfg.train.resume else None

    device, pinned = resolve_device(cfg.device), None if distributed.active() else pinned_device()
    if pinned and device.type == "cuda":  # launcher=parallel: this worker's own GPU
        device = torch.device(pinned)
        torch.cuda.set_device(device)
    configure_torch(cfg)
    meta = {"normexp_version": __version__, "git_commit": git_commit(), "torch_version": torch.__version__,
            "device": str(device), "pinned_device": pinned, "host": platform.node(), "pid": os.getpid(),
            "python": platform.python_version(),
            "choices": {k: v for k, v in (choices or {}).items() if not k.startswith("hydra/")},
            "overrides": overrides or [], "command": " ".join(sys.argv),
            "deterministic_requested": bool(cfg.train.deterministic),
            "resumed_from_step": checkpoint["step"] if checkpoint else None}
    loop = None
    try:
        record.start(OmegaConf.to_yaml(cfg, resolve=True), meta,
                     keep_lines=checkpoint["metric_lines"] if checkpoint else None)
        loop = build_loop(cfg, device, record, checkpoint)
        record.write_meta({**meta, "num_params": sum(p.numel() for p in loop.model.parameters())})
        summary = loop.train()
    except BaseException as error:
        record_failure(record, loop, error)
        raise
    if cfg.train.save_final and summary["status"] == "completed" and distributed.rank() == 0:
        save_model_weights(record.dir, loop.model)
    loop.finish(summary)
    return summary


def record_failure(record: RunRecord, loop: Loop | None, error: BaseException) -> None:
    """``summary.json`` says ``failed`` and why, or ``interrupted`` and by what. When even that cannot be
    written (a full disk), warn: the error being raised is the one that matters."""
    interrupted = lifecycle.interruption(error)
    status = "interrupted" if interrupted else "failed"
    message = interrupted or f"{type(error).__name__}: {error}"
    try:
        if loop is None:
            record.finish({**dict.fromkeys(SUMMARY_KEYS), "status": status, "error": message})
        else:
            loop.finish(loop.summary(status, message))
    except Exception as finish_error:  # noqa: BLE001
        warnings.warn(f"{record.dir}: could not record the failure: {finish_error}", stacklevel=2)


def build_loop(cfg: DictConfig, device: torch.device, record: RunRecord, checkpoint: dict | None) -> Loop:
    seed_everything(int(cfg.seed))
    data = build_data(cfg.data, device, int(cfg.seed))
    model = build_model(cfg.model, NormSpec.from_config(cfg.norm), data.info.in_shape, data.info.num_classes)
    if cfg.train.get("init_from") and checkpoint is None:  # a resumed run has its own weights
        model.load_state_dict(load_weights(cfg.train.init_from))
    model = model.to(device)
    if cfg.train.channels_last:
        model = model.to(memory_format=torch.channels_last)
    steps = total_steps(cfg, data.n_train)
    optimizer = build_optimizer(cfg.optim, model)
    scheduler = build_schedule(cfg.schedule, optimizer, steps)
    loss_fn = make_loss(data.info.task, cfg.data.get("reduction", "mean"))
    probes = ProbeSet(cfg.get("probes"), model, data, loss_fn, int(cfg.seed))
    window = Window(device, float(cfg.train.diverge_loss))
    trackers = build_trackers(cfg, record.dir, run_name=record.dir.name) if distributed.rank() == 0 else []
    loop = Loop(cfg, model, data, optimizer, scheduler, loss_fn, probes, window, record, trackers, steps)
    if checkpoint is not None:
        loop.load_state_dict(checkpoint)  # last: RNG states as at the checkpoint, whatever ran above
    return loop


class Loop:
    """The training loop and its bookkeeping for one run (what ``build_loop`` built, held together)."""

    def __init__(self, cfg, model, data, optimizer, scheduler, loss_fn, probes, window, record, trackers,
                 steps: int):
        self.cfg, self.model, self.data = cfg, model, data
        self.optimizer, self.scheduler, self.loss_fn = optimizer, scheduler, loss_fn
        self.probes, self.window, self.record, self.trackers = probes, window, record, trackers
        self.steps, self.start, self.elapsed_before = steps, 0, 0.0
        self.classify = data.info.task == "classification"
        self.step, self.last_test, self.last_train_clean, self.diverged_step = 0, {}, {}, None
        self.started = time.perf_counter()
        self.overhead = 0.0  # seconds spent in evaluation, probes and checkpoints
        self.trained_steps = 0
        self.freeze_bn_at = freeze_bn_step(cfg.train.get("freeze_bn_at"), steps)
        self.bn_frozen = False
        self.evaluator = Evaluator(cfg.train, data, loss_fn, self.classify)

    def state_dict(self) -> dict:
        """The checkpoint. The data order needs nothing: it is a function of (seed, step)."""
        return {"step": self.step, "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(), "probes": self.probes.state_dict(),
                "window": self.window.state_dict(), "rng": rng_state(), "elapsed": self.wall_seconds,
                "last_test": self.last_test, "metric_lines": self.record.lines_logged,
                "bn_frozen": self.bn_frozen}

    def load_state_dict(self, state: dict) -> None:
        if state.get("bn_frozen"):  # the same parameters and state_dict keys: the order does not matter
            self.bn_frozen = bool(freeze_batch_norms(self.model))
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.probes.load_state_dict(state["probes"])
        self.window.load_state_dict(state["window"])
        set_rng_state(state["rng"])
        self.start = self.step = state["step"]
        self.elapsed_before, self.last_test = state["elapsed"], state.get("last_test", {})

    def log(self, record: dict) -> None:
        self.record.log(record)
        for t in self.trackers:
            t.log(record)

    def train(self) -> dict:
        cfg, model = self.cfg, self.model
        forward = model
        if distributed.active():
            device = model_device(model)
            forward = DistributedDataParallel(model, device_ids=[device] if device.type == "cuda" else None)
        forward = torch.compile(forward) if cfg.train.compile else forward
        model.train()
        if self.start == 0 and cfg.train.eval_every:
            self.evaluate(0)
        bar = tqdm(total=self.steps, initial=self.start, delay=3, leave=False,
                   disable=not cfg.train.progress or distributed.rank() != 0,
                   dynamic_ncols=True, desc=self.record.dir.name)
        with bar:
            return self.steps_from(self.start, forward, bar)

    def steps_from(self, start: int, forward, bar) -> dict:
        cfg, data = self.cfg, self.data
        log_every, eval_every = int(cfg.train.log_every), int(cfg.train.eval_every)
        ckpt_every, channels_last = int(cfg.train.checkpoint_every), bool(cfg.train.channels_last)
        for step in range(start, self.steps):
            if step == self.freeze_bn_at:
                self.freeze_bn()
            x, y = data.batch(step)
            x, y = distributed.shard(x), distributed.shard(y)
            if channels_last and x.dim() == 4:
                x = x.contiguous(memory_format=torch.channels_last)
            out = forward(x)
            loss = self.loss_fn(out, y)
            self.window.add(step, loss.detach(), out.detach(), y, self.classify)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if self.probes.probes and self.probes.due(step):
                bad_step = self.window.diverged_at  # probes sync anyway; don't measure a broken model
                if bad_step is not None:  # the window is not empty then: log it, it shows the divergence
                    self.log_train()
                    return self.end_diverged(bad_step)
                t0 = time.perf_counter()
                for r in self.probes.run(step, (x, y), self.optimizer):
                    self.log(r)
                self.overhead += time.perf_counter() - t0
            self.optimizer.step()
            self.scheduler.step()
            self.step = done = step + 1
            self.trained_steps += 1
            if done % log_every == 0 or done == self.steps:
                values, bad_step = self.log_train()
                if bad_step is not None:
                    return self.end_diverged(bad_step)
                bar.update(done - bar.n)
                bar.set_postfix(loss=f"{values['loss']:.4g}", refresh=False)
            if (eval_every and done % eval_every == 0) or done == self.steps:
                self.evaluate(done)
            if ckpt_every and done % ckpt_every == 0 and done < self.steps:
                self.save_checkpoint()
        return self.summary("completed")

    def freeze_bn(self) -> None:
        """``train.freeze_bn_at``: PreciseBN statistics over ``train.freeze_bn_images`` clean training images
        in whole training batches (as one process's layers see them), then every BN layer frozen with them
        to the end of the run; the optimizer and the schedule go on as they were."""
        t0 = time.perf_counter()
        b = self.data.batch_size // distributed.world_size()
        images = self.data.clean_train_batches(int(self.cfg.train.freeze_bn_images), b)
        self.bn_frozen = bool(freeze_with_precise_stats(self.model, (x for x, _ in images if len(x) == b)))
        self.overhead += time.perf_counter() - t0

    def log_train(self) -> tuple[dict, int | None]:
        """Log the window's training loss (and accuracy); return them and its first bad step, if any."""
        values, bad_step = self.window.flush(self.data.batch_size // distributed.world_size(), self.classify)
        self.log({"step": self.step, "split": "train", **values, "lr": self.scheduler.get_last_lr()[0]})
        return values, bad_step

    def end_diverged(self, bad_step: int) -> dict:
        """The loss went non-finite or above ``train.diverge_loss`` at ``bad_step``: stop there."""
        self.diverged_step = bad_step
        return self.summary("diverged")

    def evaluate(self, step: int) -> None:
        if distributed.rank() != 0:
            return
        t0 = time.perf_counter()
        k = population_batches(self.model)
        if k:
            batch_size = self.data.batch_size
            batches = (self.data.fixed_train_batch(batch_size, seed=10_000 + i)[0] for i in range(k))
            recompute_population_stats(self.model, batches)
        sets = {"test": self.data.test_batches}
        images = int(self.cfg.train.get("eval_train_images") or 0)
        if step == self.steps and images:  # the regime measures: once, at the end, as the test set is
            sets["train_clean"] = lambda: self.data.clean_train_batches(images)
        values = self.evaluator(self.model, sets)  # each mode of train.eval_modes
        self.last_test = values["test"]
        self.log({"step": step, "split": "test", **self.last_test})
        if "train_clean" in values:
            self.last_train_clean = values["train_clean"]
            self.log({"step": step, "split": "train_clean", **self.last_train_clean})
        self.overhead += time.perf_counter() - t0

    def save_checkpoint(self) -> None:
        if distributed.rank() != 0:
            return
        t0 = time.perf_counter()
        self.record.sync()  # the checkpoint counts the metric lines logged so far: make them durable first
        save_checkpoint(self.record.dir, self.state_dict())
        self.overhead += time.perf_counter() - t0

    @property
    def wall_seconds(self) -> float:
        return self.elapsed_before + time.perf_counter() - self.started

    def summary(self, status: str, error: str | None = None) -> dict:
        """The run's outcome (``SUMMARY_KEYS``). A diverged run reports no losses or accuracies: they would be
        numbers without meaning; ``diverged_step`` is the first step whose loss was bad."""
        train_seconds = max(time.perf_counter() - self.started - self.overhead, 1e-9)
        last, test, clean = ((self.window.last, self.last_test, self.last_train_clean) if status != "diverged"
                             else ({}, {}, {}))
        summary = {"status": status, "step": self.step, "steps": self.steps,
                   "train_loss": last.get("loss"), "train_acc": last.get("acc"),
                   "test_loss": test.get("loss"), "test_acc": test.get("acc"),
                   "train_clean_loss": clean.get("loss"), "train_clean_acc": clean.get("acc"),
                   "diverged_step": self.diverged_step, "wall_seconds": self.wall_seconds,
                   "steps_per_second": self.trained_steps / train_seconds if self.trained_steps else None,
                   **extra_summary("test", test), **extra_summary("train_clean", clean)}
        if error:
            summary["error"] = error
        return summary

    def finish(self, summary: dict) -> None:
        self.record.finish(summary)
        for t in self.trackers:
            t.finish(summary)


def _discard_unstarted(run_dir: Path) -> None:
    """A run stopped by bad input leaves nothing behind that could pass for a result."""
    if run_dir.exists() and not (run_dir / METRICS).exists():
        shutil.rmtree(run_dir, ignore_errors=True)


def _exit_error(error: Exception, status: int = 2) -> None:
    print(f"normexp-train: error: {error}", file=sys.stderr)
    raise SystemExit(status)


@hydra.main(config_path=str(CONFIG_DIR), config_name="config", version_base="1.3")
def main(cfg: DictConfig):
    hc = HydraConfig.get()
    run_dir = Path(hc.runtime.output_dir)
    try:
        summary = run(cfg, run_dir, choices=dict(hc.runtime.choices), overrides=list(hc.overrides.task))
    except ConfigError as error:
        _discard_unstarted(run_dir)
        _exit_error(error)
    except UnsafeCheckpoint as error:
        _exit_error(error)
    except RunDirBusy as error:
        if hc.mode != RunMode.MULTIRUN:
            _exit_error(error, status=1)
        print(f"normexp-train: skipped: {error}", flush=True)  # the sweep goes on
        return None
    acc = summary.get("test_acc")
    if distributed.rank() != 0:
        return acc
    print(f"normexp-train: {summary['status']} at step {summary['step']}"
          + (f" (loss bad from step {summary['diverged_step']})" if summary["status"] == "diverged" else "")
          + (f", test acc {acc:.4f}" if isinstance(acc, float) and math.isfinite(acc) else "")
          + f" ({summary['wall_seconds']:.1f}s) -> {run_dir}")
    return acc


def cli() -> None:
    args = get_args_parser().parse_args(sys.argv[1:])
    world = distributed.torchrun_world()
    try:
        if world:
            _join_torchrun(args, world)
        else:
            os.environ["NORMEXP_RUN_STAMP"] = new_run_stamp()
    except ConfigError as error:
        _exit_error(error)
    # Another primary config (--config-name/--config-path/--config-dir) is checked inside each job instead.
    other_config = args.config_name or args.config_path or args.config_dir
    info_only = args.help or args.hydra_help or args.cfg or args.info or args.shell_completion
    with lifecycle.command("normexp-train"):  # SIGTERM stops it as Ctrl-C does
        if not (info_only or other_config):
            try:
                if args.multirun:
                    first_job = expand_sweep(job_overrides(args.overrides))[0]
                    check_launcher(compose(first_job, return_hydra_config=True))
                    start_warm_workers_early(args.overrides)
                check_jobs(args.overrides, args.multirun)
            except ConfigError as error:
                _exit_error(error)
        try:
            main()
        finally:
            if world:
                torch.distributed.destroy_process_group()


def _join_torchrun(args, world: int) -> None:
    """Under ``torchrun --nproc_per_node=N`` every process runs this command line: together they make one run
    with ``train.world_size=N``, in process 0's run dir, where only process 0's Hydra writes its files."""
    if args.multirun:
        raise ConfigError("--multirun", True, "under torchrun run one job; sweep with a launcher instead")
    given = [o.partition("=")[2] for o in args.overrides if o.partition("=")[0] == "train.world_size"]
    if given and given[-1] != str(world):
        raise ConfigError("train.world_size", given[-1], f"torchrun started {world} processes")
    distributed.join_torchrun()
    os.environ["NORMEXP_RUN_STAMP"] = distributed.from_rank0(new_run_stamp())
    extra = [f"train.world_size={world}"]
    if distributed.rank() != 0:
        extra += ["hydra.output_subdir=null", "hydra/job_logging=disabled"]
    sys.argv += extra
    args.overrides += extra


if __name__ == "__main__":
    cli()
