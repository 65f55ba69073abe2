"""A run directory on disk: ``config.yaml``, ``meta.json``, ``metrics.jsonl``, ``summary.json``,
``checkpoint.pt`` (while unfinished), ``model.pt`` (with ``train.save_final``) and ``run.lock``.

Crash safety: every whole-file write goes to a temporary file that is renamed over the target, so a reader
never sees half a file; ``metrics.jsonl`` is appended and flushed line by line, so a killed run keeps what it
logged; ``summary.json`` appears only when a run ends (completed, diverged, failed or interrupted), so a run
without one is unfinished. One process writes a run dir at a time: it holds ``run.lock`` for the whole run.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import math
import os
import warnings
from pathlib import Path

CONFIG, META, METRICS, SUMMARY = "config.yaml", "meta.json", "metrics.jsonl", "summary.json"
CHECKPOINT, MODEL, LOCK = "checkpoint.pt", "model.pt", "run.lock"
FINISHED = ("completed", "diverged")  # "failed" (an error) and "interrupted" (a signal) are retried, as is a
# run without a summary (killed, or running now)
SUMMARY_KEYS = ("status", "step", "steps", "train_loss", "train_acc", "test_loss", "test_acc",
                "train_clean_loss", "train_clean_acc", "diverged_step", "wall_seconds", "steps_per_second")
NON_FINITE = {"nan": math.nan, "inf": math.inf, "-inf": -math.inf}


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write to a temporary file, fsync, rename over ``path``: readers see the old file or the new one, never
    a part. On failure (a full disk) the temporary file is removed and the old file stays as it was."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def _jsonable(v):
    if isinstance(v, float) and not math.isfinite(v):
        return str(v)  # "nan", "inf": JSON has no literal for them; read_metrics and read_json turn them back
    if hasattr(v, "item"):
        return _jsonable(v.item())
    return v


def _decoded(obj: dict) -> dict:
    return {k: NON_FINITE.get(v, v) if isinstance(v, str) else v for k, v in obj.items()}


def to_json(obj: dict) -> str:
    return json.dumps({k: _jsonable(v) for k, v in obj.items()}, sort_keys=False)


def atomic_write_json(path: Path, obj: dict) -> None:
    atomic_write_text(path, json.dumps({k: _jsonable(v) for k, v in obj.items()}, indent=2) + "\n")


def read_json(path: Path) -> dict | None:
    try:
        return _decoded(json.loads(Path(path).read_text()))
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def read_metrics(run_dir: Path) -> list[dict]:
    """Every record of ``metrics.jsonl``. A torn last line (a run killed mid-write) is skipped with a warning,
    as is any other line that does not parse; "nan" and "inf" values come back as floats."""
    path = Path(run_dir) / METRICS
    if not path.exists():
        return []
    records, lines = [], path.read_text().splitlines()
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            records.append(_decoded(json.loads(line)))
        except json.JSONDecodeError:
            where = "last line" if i == len(lines) - 1 else f"line {i + 1}"
            warnings.warn(f"{path}: skipping torn {where}", stacklevel=2)
    return records


class RunDirBusy(RuntimeError):
    """Another live process holds the run dir."""

    def __init__(self, run_dir: Path, holder: str):
        self.run_dir, self.holder = Path(run_dir), holder
        super().__init__(f"{run_dir} is in use by process {holder} (one process writes a run dir at a time)")


@contextlib.contextmanager
def writing(run_dir: Path):
    """Hold ``run.lock`` of ``run_dir`` while the block runs, or raise :class:`RunDirBusy` at once. The lock
    is an ``flock``, which the kernel drops when its holder ends, however it ends: a lock left by a dead
    process is free to take. The file only names the holder's pid, for the message of whoever finds it held
    (it stays: removing it would let two processes lock two different files)."""
    path = Path(run_dir) / LOCK
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").split("\n")[0].strip()
            raise RunDirBusy(run_dir, holder or "(pid not written yet)") from None
        pid = f"{os.getpid()}\n".encode()
        os.pwrite(fd, pid, 0)  # then truncate: a reader meanwhile still finds a whole pid on the first line
        os.ftruncate(fd, len(pid))
        yield
    finally:
        os.close(fd)


class RunRecord:
    """Writes one run's records. ``log`` appends and flushes; ``finish`` writes the summary atomically."""

    def __init__(self, run_dir: Path):
        self.dir = Path(run_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self._metrics = None
        self.lines_logged = 0

    @property
    def summary(self) -> dict | None:
        return read_json(self.dir / SUMMARY)

    @property
    def config_yaml(self) -> str | None:
        path = self.dir / CONFIG
        return path.read_text() if path.exists() else None

    def start(self, config_yaml: str, meta: dict, keep_lines: int | None = None) -> None:
        """Write config and meta. Fresh run: empty metrics, no checkpoint or weights of an earlier attempt.
        Resumed run: keep the first ``keep_lines`` lines, those logged before the checkpoint; later ones came
        from the attempt that was cut off."""
        (self.dir / SUMMARY).unlink(missing_ok=True)
        for stale in self.dir.glob(".*.tmp"):  # left by a process killed mid-write
            stale.unlink(missing_ok=True)
        if keep_lines is None:
            (self.dir / CHECKPOINT).unlink(missing_ok=True)
            (self.dir / MODEL).unlink(missing_ok=True)
        atomic_write_text(self.dir / CONFIG, config_yaml)
        self.write_meta(meta)
        path = self.dir / METRICS
        kept = path.read_text().splitlines(keepends=True)[:keep_lines] if keep_lines and path.exists() else []
        if keep_lines and len(kept) < keep_lines:
            warnings.warn(f"{path}: the checkpoint counts {keep_lines} lines logged before it; "
                          f"{len(kept)} are left", stacklevel=2)
        atomic_write_text(path, "".join(kept))
        self.lines_logged = len(kept)
        self._metrics = open(path, "a", buffering=1)

    def write_meta(self, meta: dict) -> None:
        atomic_write_json(self.dir / META, meta)

    def log(self, record: dict) -> None:
        self._metrics.write(to_json(record) + "\n")
        self._metrics.flush()
        self.lines_logged += 1

    def sync(self) -> None:
        """Make the logged lines durable (before a checkpoint that counts them)."""
        if self._metrics is not None:
            os.fsync(self._metrics.fileno())

    def finish(self, summary: dict) -> None:
        """Close the metrics, write the summary; a finished run drops its checkpoint (never resumed)."""
        if self._metrics is not None:
            self._metrics.close()
            self._metrics = None
        atomic_write_json(self.dir / SUMMARY, summary)
        if summary.get("status") in FINISHED:
            (self.dir / CHECKPOINT).unlink(missing_ok=True)


class QuietRecord(RunRecord):
    """Held by the processes other than 0 of a multi-process run: reads the run dir, writes nothing."""

    def __init__(self, run_dir: Path):
        self.dir, self._metrics, self.lines_logged = Path(run_dir), None, 0

    def start(self, config_yaml: str, meta: dict, keep_lines: int | None = None) -> None:
        self.lines_logged = keep_lines or 0

    def write_meta(self, meta: dict) -> None:
        pass

    def log(self, record: dict) -> None:
        self.lines_logged += 1

    def sync(self) -> None:
        pass

    def finish(self, summary: dict) -> None:
        pass
