"""Fault injection: a run killed with SIGKILL, an exception or Ctrl-C mid-run, a checkpoint whose pickle would
run code, a full disk during a checkpoint, a metrics or a summary write, a forced NaN, a loss above the bound,
a sweep with a diverging job, torn metrics files, and wandb missing, failing or offline. Each fault's outcome
is checked against an uninterrupted run of the same config or against the files it must (not) leave behind."""

from __future__ import annotations

import errno
import io
import json
import math
import os
import random
import signal
import subprocess
import sys
import time
import types
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from normexp import records, results
from normexp.checkpoint import UnsafeCheckpoint, load_checkpoint, rng_state, set_rng_state
from normexp.claims import Runs
from normexp.compose import compose
from normexp.data import TensorData
from normexp.errors import ConfigError
from normexp.probes import PROBES, Probe
from normexp.records import CHECKPOINT, METRICS, MODEL, SUMMARY, read_json, read_metrics
from normexp.train import run

REPO = Path(__file__).resolve().parent.parent
FAST = ["profile=smoke", "model=mlp", "device=cpu", "train.threads=1", "train.progress=false"]
# noisy BN draws from the global torch RNG every step: a resume that lost the RNG state would differ
RESUMABLE = [*FAST, "norm=batch_noisy", "train.steps=30", "train.checkpoint_every=10",
             "train.save_final=true"]
TIMING = ("wall_seconds", "steps_per_second", "seconds")


@pytest.fixture(autouse=True)
def _keep_torch_threads():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def train(run_dir: Path, overrides: list[str]) -> dict:
    return run(compose(overrides), run_dir)


def without_timing(record: dict) -> dict:
    return {k: v for k, v in record.items() if k not in TIMING}


def assert_same_run(a: Path, b: Path) -> None:
    """Same summary and metric records (timings aside) and bit-identical final weights."""
    assert without_timing(read_json(a / SUMMARY)) == without_timing(read_json(b / SUMMARY))
    assert [without_timing(r) for r in read_metrics(a)] == [without_timing(r) for r in read_metrics(b)]
    weights_a, weights_b = torch.load(a / MODEL), torch.load(b / MODEL)
    assert weights_a.keys() == weights_b.keys()
    for name in weights_a:
        assert torch.equal(weights_a[name], weights_b[name]), name


def no_temp_files(run_dir: Path) -> bool:
    return not list(run_dir.glob(".*.tmp"))


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    """An uninterrupted run of RESUMABLE: what every interrupted and resumed run must reproduce."""
    run_dir = tmp_path_factory.mktemp("reference") / "run"
    summary = train(run_dir, RESUMABLE)
    assert summary["status"] == "completed" and (run_dir / MODEL).exists()
    assert not (run_dir / CHECKPOINT).exists()  # a finished run is never resumed: its checkpoint goes
    return run_dir


def cli_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "normexp.train", *args]


def cli_env() -> dict:
    return {**os.environ, "NORMEXP_DATA": os.environ.get("NORMEXP_DATA", str(REPO / "data"))}


# ---------------------------------------------------------------- killed and resumed

@pytest.mark.slow
def test_sigkill_at_a_random_step_then_rerun_gives_the_uninterrupted_results(tmp_path):
    overrides = ["profile=smoke", "device=cpu", "norm=batch_noisy", "train.steps=80", "train.eval_every=20",
                 "train.checkpoint_every=10", "train.save_final=true", "train.threads=1",
                 "train.progress=false"]
    reference_dir, run_dir = tmp_path / "reference", tmp_path / "killed"
    train(reference_dir, overrides)
    kill_after = random.randrange(15, 60)  # any step past the first checkpoint
    command = cli_command(*overrides, f"hydra.run.dir={run_dir}")
    with open(tmp_path / "stderr.txt", "w") as stderr:
        proc = subprocess.Popen(command, cwd=REPO, env=cli_env(), stdout=subprocess.DEVNULL, stderr=stderr)
        deadline, logged = time.monotonic() + 300, 0
        while proc.poll() is None and time.monotonic() < deadline:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # the line being written may be torn
                logged = max([r["step"] for r in read_metrics(run_dir) if r["split"] == "train"], default=0)
            if logged >= kill_after:
                proc.send_signal(signal.SIGKILL)
                break
            time.sleep(0.005)
        proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL, f"the run ended ({proc.returncode}) before step {kill_after}"
    assert not (run_dir / SUMMARY).exists()
    checkpoint_step = load_checkpoint(run_dir)["step"]
    assert 10 <= checkpoint_step <= logged

    done = subprocess.run(command, cwd=REPO, env=cli_env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert read_json(run_dir / "meta.json")["resumed_from_step"] == checkpoint_step
    assert_same_run(reference_dir, run_dir)


def test_exception_mid_run_is_recorded_failed_and_the_rerun_resumes_exactly(tmp_path, monkeypatch, reference):
    real_batch = TensorData.batch
    monkeypatch.setattr(TensorData, "batch", _failing_batch(real_batch, 17))
    with pytest.raises(RuntimeError, match="injected fault"):
        train(tmp_path, RESUMABLE)
    summary = read_json(tmp_path / SUMMARY)
    assert summary["status"] == "failed" and summary["error"] == "RuntimeError: injected fault at step 17"
    assert summary["step"] == 17
    assert load_checkpoint(tmp_path)["step"] == 10
    assert max(r["step"] for r in read_metrics(tmp_path)) == 15  # after the checkpoint: dropped on resume

    monkeypatch.setattr(TensorData, "batch", real_batch)
    assert train(tmp_path, RESUMABLE)["status"] == "completed"
    assert read_json(tmp_path / "meta.json")["resumed_from_step"] == 10
    assert_same_run(reference, tmp_path)


def test_ctrl_c_mid_run_is_recorded_interrupted_counts_as_missing_and_the_rerun_resumes_exactly(
        tmp_path, monkeypatch, reference, capsys):
    real_batch = TensorData.batch

    def batch(self, step):
        if step == 17:
            raise KeyboardInterrupt
        return real_batch(self, step)

    monkeypatch.setattr(TensorData, "batch", batch)
    with pytest.raises(KeyboardInterrupt):
        train(tmp_path, RESUMABLE)
    summary = read_json(tmp_path / SUMMARY)
    assert summary["status"] == "interrupted" and summary["error"] == "interrupted by Ctrl-C (SIGINT)"
    assert summary["step"] == 17 and 0 <= summary["test_acc"] <= 1  # the numbers at the interruption

    table = results.load_runs(tmp_path)  # run tables and claim checks: kept apart from failed, and missing
    assert table["status"].tolist() == ["interrupted"]
    shown = results.display_table(table, tmp_path)
    assert shown[["status", "train_loss", "test_acc"]].values.tolist() == [["interrupted"] * 3]
    cell = Runs(table.assign(cell="a", seed=0), pd.DataFrame()).cell("a")
    assert (cell.values, cell.missing, cell.state) == ((), 1, "missing")

    monkeypatch.setattr(TensorData, "batch", real_batch)
    assert train(tmp_path, RESUMABLE)["status"] == "completed"
    assert read_json(tmp_path / "meta.json")["resumed_from_step"] == 10
    assert_same_run(reference, tmp_path)


class _RunsCode:
    """Unpickling it makes a folder: what a checkpoint from someone else could do instead."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.mkdir, (str(self.marker),)


def test_a_checkpoint_whose_pickle_would_run_code_is_refused_and_nothing_is_run_or_changed(tmp_path):
    run_dir, marker = tmp_path / "shared", tmp_path / "code_ran"
    train(run_dir, [*RESUMABLE, "train.steps=15"])  # a finished run, then a checkpoint that runs code
    (run_dir / SUMMARY).unlink()
    torch.save({"step": 10, "model": {}, "rng": _RunsCode(marker)}, run_dir / CHECKPOINT)
    before = {p.name: p.read_bytes() for p in run_dir.iterdir() if p.is_file()}

    with pytest.raises(UnsafeCheckpoint) as refused:
        train(run_dir, [*RESUMABLE, "train.steps=15"])
    message = str(refused.value)
    assert "\n" not in message and str(run_dir / CHECKPOINT) in message and "mkdir" in message
    assert "train.resume=false" in message
    assert not marker.exists()
    assert {p.name: p.read_bytes() for p in run_dir.iterdir() if p.is_file()} == before
    torch.load(run_dir / CHECKPOINT, weights_only=False)  # what the old loader did: the code runs
    assert marker.is_dir()


def test_checkpoint_rng_states_are_plain_values_that_restore_every_generator():
    torch.manual_seed(1), np.random.seed(2), random.seed(3), np.random.standard_normal()  # a cached gaussian
    buffer = io.BytesIO()
    torch.save(rng_state(), buffer)
    expected = torch.rand(3), np.random.standard_normal(3), random.random()
    buffer.seek(0)
    set_rng_state(torch.load(buffer, weights_only=True))
    got = torch.rand(3), np.random.standard_normal(3), random.random()
    assert torch.equal(got[0], expected[0]) and np.array_equal(got[1], expected[1]) and got[2] == expected[2]


def test_a_checkpoint_inside_a_logging_window_resumes_that_window_exactly(tmp_path, monkeypatch):
    # log every 7 steps, checkpoint every 10: the checkpoint at step 10 holds 3 steps of an open window
    overrides = [*RESUMABLE, "train.log_every=7"]
    _reference_and_resumed(tmp_path, overrides, monkeypatch, fail_at=12)
    train_steps = [r["step"] for r in read_metrics(tmp_path / "resumed") if r["split"] == "train"]
    assert train_steps == [7, 14, 21, 28, 30]
    assert_same_run(tmp_path / "reference", tmp_path / "resumed")


def test_a_run_with_random_crop_and_flip_resumes_bit_identically(tmp_path, monkeypatch, reference):
    # the crop offsets and flips of step i come from a generator seeded with (seed, i), not the global RNG
    overrides = [*RESUMABLE, "data.crop_padding=2", "data.flip=true"]
    _reference_and_resumed(tmp_path, overrides, monkeypatch, fail_at=17)
    assert_same_run(tmp_path / "reference", tmp_path / "resumed")
    plain, augmented = torch.load(reference / MODEL), torch.load(tmp_path / "reference" / MODEL)
    assert any(not torch.equal(plain[k], augmented[k]) for k in plain)  # the augmentation was on


def test_a_finished_run_dir_is_returned_as_it_is(tmp_path):
    first = train(tmp_path, FAST)
    metrics = (tmp_path / METRICS).read_text()
    assert train(tmp_path, FAST) == first
    assert (tmp_path / METRICS).read_text() == metrics


def test_resuming_with_another_config_is_refused_and_resume_false_starts_over(tmp_path, monkeypatch):
    monkeypatch.setattr(TensorData, "batch", _failing_batch(TensorData.batch, at=12))
    with pytest.raises(RuntimeError):
        train(tmp_path, RESUMABLE)
    monkeypatch.undo()
    with pytest.raises(ConfigError) as error:
        train(tmp_path, [*RESUMABLE, "optim.lr=0.1"])
    assert error.value.key == "optim.lr" and "0.01" in str(error.value) and "\n" not in str(error.value)
    # keys that do not change what is computed may change
    assert train(tmp_path, [*RESUMABLE, "train.checkpoint_every=5"])["status"] == "completed"
    assert read_json(tmp_path / "meta.json")["resumed_from_step"] == 10

    assert train(tmp_path, [*RESUMABLE, "optim.lr=0.1", "train.resume=false"])["status"] == "completed"
    assert read_json(tmp_path / "meta.json")["resumed_from_step"] is None
    assert [r["step"] for r in read_metrics(tmp_path) if r["split"] == "test"] == [0, 10, 20, 30]


def _reference_and_resumed(tmp_path, overrides: list[str], monkeypatch, fail_at: int) -> None:
    """A run into reference/, and the same run into resumed/ that fails at step ``fail_at`` and resumes from
    its checkpoint at step 10."""
    train(tmp_path / "reference", overrides)
    monkeypatch.setattr(TensorData, "batch", _failing_batch(TensorData.batch, at=fail_at))
    with pytest.raises(RuntimeError):
        train(tmp_path / "resumed", overrides)
    monkeypatch.undo()
    assert train(tmp_path / "resumed", overrides)["status"] == "completed"
    assert read_json(tmp_path / "resumed" / "meta.json")["resumed_from_step"] == 10


def _failing_batch(real_batch, at: int):
    def batch(self, step):
        if step == at:
            raise RuntimeError(f"injected fault at step {at}")
        return real_batch(self, step)

    return batch


# ---------------------------------------------------------------- a full disk

class _DiskFull:
    """``open`` for normexp.records whose files matching ``name`` take ``room`` bytes and then fail with
    ENOSPC, from the ``after``-th opening on (earlier openings write normally)."""

    def __init__(self, name: str, after: int = 0, room: int = 100):
        self.name, self.after, self.room, self.opened = name, after, room, 0

    def __call__(self, path, mode="r", *args, **kwargs):
        f = open(path, mode, *args, **kwargs)
        if self.name not in Path(path).name or "r" in mode:
            return f
        self.opened += 1
        if self.opened <= self.after:
            return f
        room, real_write = self.room, f.write

        def write(data):
            nonlocal room
            if len(data) > room:
                real_write(data[:room])
                f.flush()
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            room -= len(data)
            return real_write(data)

        f.write = write
        return f


def test_full_disk_during_a_checkpoint_keeps_the_last_one_and_fails_the_run(tmp_path, monkeypatch, reference):
    monkeypatch.setattr(records, "open", _DiskFull(CHECKPOINT, after=1), raising=False)  # the 2nd one fails
    with pytest.raises(OSError, match="No space left"):
        train(tmp_path, RESUMABLE)
    summary = read_json(tmp_path / SUMMARY)
    assert summary["status"] == "failed" and "No space left on device" in summary["error"]
    assert summary["step"] == 20
    assert load_checkpoint(tmp_path)["step"] == 10  # whole, loadable, the last one that was written
    assert no_temp_files(tmp_path)

    monkeypatch.undo()
    assert train(tmp_path, RESUMABLE)["status"] == "completed"
    assert_same_run(reference, tmp_path)


def test_full_disk_during_a_metrics_write_fails_the_run_with_the_error(tmp_path, monkeypatch):
    monkeypatch.setattr(records, "open", _DiskFull(METRICS, room=300), raising=False)
    with pytest.raises(OSError):
        train(tmp_path, FAST)
    summary = read_json(tmp_path / SUMMARY)
    assert summary["status"] == "failed" and "No space left on device" in summary["error"]
    with pytest.warns(UserWarning, match="torn last line"):
        logged = read_metrics(tmp_path)
    assert 0 < len(logged) < 7  # the lines that fit, not the torn one


def test_full_disk_everywhere_raises_the_first_error_and_leaves_no_partial_summary(tmp_path, monkeypatch):
    monkeypatch.setattr(TensorData, "batch", _failing_batch(TensorData.batch, at=7))
    monkeypatch.setattr(records, "open", _DiskFull(SUMMARY, room=10), raising=False)
    with pytest.warns(UserWarning, match="could not record the failure"), pytest.raises(RuntimeError):
        train(tmp_path, FAST)
    assert not (tmp_path / SUMMARY).exists() and no_temp_files(tmp_path)
    assert results.load_runs(tmp_path)["status"].tolist() == ["incomplete"]


# ---------------------------------------------------------------- divergence

def test_a_forced_nan_ends_the_run_as_diverged_at_that_step(tmp_path, monkeypatch):
    monkeypatch.setattr(TensorData, "batch", _nan_batch(TensorData.batch, at=7))
    summary = train(tmp_path, [*FAST, "train.log_every=5", "train.checkpoint_every=5"])
    assert summary["status"] == "diverged" and summary["diverged_step"] == 7
    assert summary["step"] == 10  # noticed at the next log, without a host sync per step
    assert all(summary[k] is None for k in ("train_loss", "train_acc", "test_loss", "test_acc"))
    last = read_metrics(tmp_path)[-1]
    assert last["step"] == 10 and last["split"] == "train" and math.isnan(last["loss"])
    assert read_json(tmp_path / SUMMARY) == summary
    assert not (tmp_path / CHECKPOINT).exists()


def test_divergence_is_caught_before_a_probe_measures_the_broken_model(tmp_path, monkeypatch):
    class FiniteGradients(Probe):
        def measure(self, ctx):
            grads = [p.grad for p in ctx.model.parameters() if p.grad is not None]
            assert all(torch.isfinite(g).all() for g in grads), "a probe saw non-finite gradients"
            return {"grad_norm": float(torch.stack([g.norm() for g in grads]).norm())}

    monkeypatch.setitem(PROBES, "finite_gradients", FiniteGradients)
    monkeypatch.setattr(TensorData, "batch", _nan_batch(TensorData.batch, at=7))
    summary = train(tmp_path, [*FAST, "+probes.finite_gradients.every=1"])
    assert summary["status"] == "diverged" and summary["diverged_step"] == 7 and summary["step"] == 7
    probed = [r["step"] for r in read_metrics(tmp_path) if r["split"] == "probe"]
    assert probed == list(range(7))


def _nan_batch(real_batch, at: int):
    def batch(self, step):
        x, y = real_batch(self, step)
        return (torch.full_like(x, math.nan), y) if step == at else (x, y)

    return batch


def test_a_loss_above_the_bound_diverges_at_the_first_step(tmp_path):
    summary = train(tmp_path, [*FAST, "train.diverge_loss=1.0"])  # cross-entropy of 10 classes starts at ~2.3
    assert summary["status"] == "diverged" and summary["diverged_step"] == 0


@pytest.mark.slow
def test_a_sweep_goes_on_past_a_diverging_job_and_the_table_says_diverged(tmp_path, capsys):
    sweep_dir = tmp_path / "sweep"
    command = cli_command("-m", *FAST, "optim.lr=0.01,1e6", f"hydra.sweep.dir={sweep_dir}")
    done = subprocess.run(command, cwd=REPO, env=cli_env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    # job folders are named by their config (normexp/sweep.py): find each job by its learning rate
    lr = {p.parent: next(o for o in read_json(p)["overrides"] if o.startswith("optim.lr="))
          for p in sweep_dir.glob("*/meta.json")}
    small, large = sorted(lr, key=lambda d: float(lr[d].partition("=")[2]))
    assert [read_json(d / SUMMARY)["status"] for d in (small, large)] == ["completed", "diverged"]
    assert "diverged at step 5 (loss bad from step 1)" in done.stdout

    # the same sweep again into the same folder: finished jobs (diverged ones too) are left as they are
    files = {p: p.read_bytes() for p in sweep_dir.glob("*/*") if p.is_file()}
    again = subprocess.run(command, cwd=REPO, env=cli_env(), capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-2000:]
    assert {p: p.read_bytes() for p in files} == files

    table = results.load_runs(sweep_dir).sort_values("optim.lr").reset_index(drop=True)
    assert table["status"].tolist() == ["completed", "diverged"]
    assert math.isnan(table["test_acc"][1]) and table["diverged_step"][1] >= 0
    assert results.cli([str(sweep_dir)]) == 0
    header, *rows = capsys.readouterr().out.splitlines()
    completed, diverged = sorted(rows, key=lambda row: float(row.split()[1]))
    assert header.split()[:6] == ["run_dir", "optim.lr", "status", "step", "train_loss", "test_acc"]
    assert diverged.split()[:6] == [large.name, "1e+06", "diverged", "5", "diverged", "diverged"]
    assert completed.split()[2] == "completed" and 0 <= float(completed.split()[5]) <= 1


# ---------------------------------------------------------------- torn records

def test_a_torn_last_metrics_line_is_skipped_with_a_warning(tmp_path):
    lines = [{"step": 0, "split": "test", "loss": 2.3, "acc": 0.1},
             {"step": 5, "split": "train", "loss": "nan"}]
    text = "".join(json.dumps(r) + "\n" for r in lines) + '{"step": 10, "split": "train", "lo'
    (tmp_path / METRICS).write_text(text)
    with pytest.warns(UserWarning, match="torn last line"):
        got = read_metrics(tmp_path)
    assert got[0] == lines[0] and got[1]["step"] == 5 and math.isnan(got[1]["loss"]) and len(got) == 2
    with pytest.warns(UserWarning, match="torn last line"):
        assert results.load_metrics(tmp_path)["step"].tolist() == [0, 5]

    (tmp_path / METRICS).write_text(text + "\n" + json.dumps(lines[0]) + "\n")
    with pytest.warns(UserWarning, match="line 3"):
        assert len(read_metrics(tmp_path)) == 3


def test_a_stale_temp_file_from_a_killed_write_is_cleaned_and_ignored(tmp_path):
    (tmp_path / f".{CHECKPOINT}.12345.tmp").write_bytes(b"half a checkpoint")
    assert train(tmp_path, FAST)["status"] == "completed"
    assert no_temp_files(tmp_path)


# ---------------------------------------------------------------- wandb trouble

def _local_records_complete(run_dir: Path, expected: Path | None = None) -> None:
    assert read_json(run_dir / SUMMARY)["status"] == "completed"
    assert (run_dir / "config.yaml").exists() and (run_dir / "meta.json").exists()
    steps = [(r["step"], r["split"]) for r in read_metrics(run_dir)]
    assert steps == [(0, "test"), (5, "train"), (10, "train"), (10, "test"), (15, "train"), (20, "train"),
                     (20, "test"), (20, "train_clean")]
    if expected is not None:  # the tracker changes nothing that is computed
        assert [without_timing(r) for r in read_metrics(run_dir)] == [without_timing(r) for r in
                                                                     read_metrics(expected)]


def test_wandb_not_installed_leaves_the_run_and_its_records_whole(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "wandb", None)  # import wandb -> ImportError
    with pytest.warns(UserWarning, match="wandb disabled"):
        train(tmp_path, [*FAST, "logger=wandb"])
    _local_records_complete(tmp_path)


def test_wandb_init_or_log_raising_leaves_the_run_and_its_records_whole(tmp_path, monkeypatch):
    def init(**kwargs):
        raise RuntimeError("injected: wandb.init failed")

    monkeypatch.setitem(sys.modules, "wandb", types.SimpleNamespace(init=init))
    with pytest.warns(UserWarning, match="injected: wandb.init failed"):
        train(tmp_path / "init", [*FAST, "logger=wandb"])
    _local_records_complete(tmp_path / "init")

    class BrokenRun:
        summary = {}

        def log(self, *args, **kwargs):
            raise ConnectionError("injected: wandb.log failed")

    monkeypatch.setitem(sys.modules, "wandb", types.SimpleNamespace(init=lambda **kwargs: BrokenRun()))
    with pytest.warns(UserWarning, match="injected: wandb.log failed"):
        train(tmp_path / "log", [*FAST, "logger=wandb"])
    _local_records_complete(tmp_path / "log")


@pytest.mark.slow
def test_wandb_offline_writes_its_files_and_changes_nothing_local(tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    monkeypatch.setenv("WANDB_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(tmp_path / "config"))
    train(tmp_path / "local", FAST)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        train(tmp_path / "wandb", [*FAST, "logger=wandb"])
    assert not [w for w in caught if "wandb disabled" in str(w.message)]
    _local_records_complete(tmp_path / "wandb", expected=tmp_path / "local")
    assert list((tmp_path / "wandb" / "wandb").glob("offline-run-*/*.wandb"))
    assert len(results.find_runs(tmp_path)) == 2  # wandb's own files/ folder is not a run
