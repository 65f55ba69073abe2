"""Loss and accuracy on a 1D line or 2D plane around the trained weights w: at grid point (a, b) the model
has weights w + a d1 + b d2, for random filter-normalized directions d1, d2 (:mod:`.directions`), and is
evaluated on fixed subsets of the training and test data.

BN during evaluation (``bn``): ``eval`` uses the model's running statistics; ``train`` the batch
statistics of each evaluation batch (``batch_size``, default the run's; the running statistics are put back
after every point); ``recompute`` recomputes the running statistics at every point (a plain average over
the training subset in batches, as ``torch`` does with momentum=None), then evaluates in eval mode. Random
draws (noisy BN) restart from ``seed`` at every point, so a point's values do not depend on the order.

Output folder: ``spec.json`` (what is computed, and a digest of the weights), ``directions.pt``,
``points.csv`` (one line per point, appended and fsynced as it is computed; a killed surface continues from
it, a torn last line is dropped), and, once every point is in, ``surface.npz`` (the grids) and the figures.
"""

from __future__ import annotations

import copy
import io
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from joblib import Parallel, delayed

from normexp.errors import ConfigError, choices
from normexp.landscape.directions import DIRECTIONS, random_direction
from normexp.landscape.figures import draw_surface
from normexp.landscape.run import CHECKPOINTS, load_run, run_subsets, weights_digest
from normexp.norms import recompute_running_stats
from normexp.records import atomic_write_bytes, atomic_write_json, read_json

BN_MODES = ("eval", "train", "recompute")
COLUMNS = ("i", "j", "alpha", "beta", "train_loss", "train_acc", "test_loss", "test_acc")
VALUES = COLUMNS[4:]
SPEC, DIRECTIONS_FILE, POINTS, SURFACE = "spec.json", "directions.pt", "points.csv", "surface.npz"
EVAL_CHUNK = 1000  # examples per forward pass in eval mode (no statistics depend on it)


def _positive_int(key: str, value, least: int = 1) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < least:
        raise ConfigError(key, value, f"must be an integer >= {least}")


@dataclass(frozen=True)
class SurfaceSpec:
    """What a surface computes. ``batch_size`` 0: the run's batch size (train and recompute modes)."""

    dims: int = 2
    points: int = 21
    span: float = 1.0
    directions: str = "weights"
    bn: str = "eval"
    subset: int = 1000
    batch_size: int = 0
    seed: int = 0
    checkpoint: str = "model"

    def check(self) -> None:
        if self.dims not in (1, 2):
            raise ConfigError("--dims", self.dims, choices([1, 2]))
        _positive_int("--points", self.points, 2)
        if isinstance(self.span, bool) or not isinstance(self.span, (int, float)) or not 0 < self.span < 1e6:
            raise ConfigError("--span", self.span, "must be a number > 0")
        if self.directions not in DIRECTIONS:
            raise ConfigError("--directions", self.directions, choices(DIRECTIONS))
        if self.bn not in BN_MODES:
            raise ConfigError("--bn", self.bn, choices(BN_MODES))
        _positive_int("--subset", self.subset)
        _positive_int("--batch-size", self.batch_size, 0)
        _positive_int("--seed", self.seed, 0)
        if self.checkpoint not in CHECKPOINTS and not str(self.checkpoint).endswith(".pt"):
            raise ConfigError("--checkpoint", self.checkpoint,
                              "choose one of: model, checkpoint, or a .pt file")

    @property
    def axis(self) -> np.ndarray:
        return np.linspace(-self.span, self.span, self.points)

    def coordinates(self) -> list[tuple[int, int, float, float]]:
        """(i, j, alpha, beta) of every grid point, row by row."""
        a = self.axis.tolist()
        if self.dims == 1:
            return [(i, 0, x, 0.0) for i, x in enumerate(a)]
        return [(i, j, x, y) for i, x in enumerate(a) for j, y in enumerate(a)]


@torch.no_grad()
def recompute_bn_statistics(model: torch.nn.Module, batches) -> None:
    """Every BN layer's running statistics as the plain average over ``batches`` (the ``ioffe`` estimator);
    ``frozen_batch`` layers, which never normalize with batch statistics, keep theirs."""
    layers = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)
              and getattr(m, "uses_batch_statistics", True)]
    recompute_running_stats(model, batches, layers)


def _chunks(x: torch.Tensor, y: torch.Tensor, size: int):
    return [(x[i:i + size], y[i:i + size]) for i in range(0, len(y), size)]


class PointEvaluator:
    """Loss and accuracy of ``model`` at w + a d1 (+ b d2) on the fixed ``train`` and ``test`` sets (x, y).
    Picklable, so worker processes get their own copy."""

    def __init__(self, model, loss_fn, classify: bool, train, test, directions: list[dict], bn: str,
                 batch_size: int, seed: int = 0):
        self.model, self.loss_fn, self.classify, self.bn, self.seed = model, loss_fn, classify, bn, seed
        self.names = [n for n, p in model.named_parameters() if p.requires_grad]
        params = dict(model.named_parameters())
        self.base = [params[n].detach().clone() for n in self.names]
        self.directions = [[d[n] for n in self.names] for d in directions]
        self.buffers = {k: v.clone() for k, v in model.named_buffers()}
        eval_size = batch_size if bn == "train" else EVAL_CHUNK
        self.train = _chunks(*train, eval_size)
        self.test = _chunks(*test, eval_size)
        self.stats_batches = [x for x, _ in _chunks(*train, batch_size)]

    @torch.no_grad()
    def set_point(self, coords) -> None:
        params = dict(self.model.named_parameters())
        for k, name in enumerate(self.names):
            value = self.base[k].clone()
            for c, d in zip(coords, self.directions, strict=False):
                value += c * d[k]
            params[name].copy_(value)
        buffers = dict(self.model.named_buffers())
        for k, v in self.buffers.items():
            buffers[k].copy_(v)

    @torch.no_grad()
    def _measure(self, batches) -> tuple[float, float]:
        loss, correct, n = torch.zeros((), dtype=torch.float64), 0, 0
        for x, y in batches:
            out = self.model(x)
            loss += self.loss_fn(out, y).double().cpu() * len(y)
            if self.classify:
                correct += int((out.argmax(dim=1) == y).sum())
            n += len(y)
        return float(loss) / n, (correct / n if self.classify else float("nan"))

    def __call__(self, alpha: float, beta: float) -> tuple[float, float, float, float]:
        self.set_point((alpha, beta))
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            if self.bn == "recompute":
                recompute_bn_statistics(self.model, self.stats_batches)
            self.model.train(self.bn == "train")
            return (*self._measure(self.train), *self._measure(self.test))


def _evaluate_chunk(evaluator: PointEvaluator, points, threads: int) -> list[tuple]:
    if threads:
        torch.set_num_threads(threads)
    return [(i, j, a, b, *evaluator(a, b)) for i, j, a, b in points]


class PointLog:
    """``points.csv``: one line per computed point, appended and fsynced. Opening it keeps the whole lines
    already there (a killed writer may have left a torn last line) and rewrites the file with them."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.rows: dict[tuple[int, int], tuple] = {}
        text = self.path.read_text() if self.path.exists() else ""
        for line in text.splitlines(keepends=True)[1:]:
            if line.endswith("\n"):
                row = self._parse(line)
                if row is not None:
                    self.rows[row[:2]] = row
        lines = [",".join(COLUMNS)] + [self._format(r) for r in self.rows.values()]
        atomic_write_bytes(self.path, ("\n".join(lines) + "\n").encode())
        self._file = open(self.path, "a")

    @staticmethod
    def _format(row) -> str:
        return ",".join([str(int(row[0])), str(int(row[1]))] + [repr(float(v)) for v in row[2:]])

    @staticmethod
    def _parse(line: str):
        parts = line.strip().split(",")
        if len(parts) != len(COLUMNS):
            return None
        try:
            return (int(parts[0]), int(parts[1]), *(float(v) for v in parts[2:]))
        except ValueError:
            return None

    def add(self, row) -> None:
        row = (int(row[0]), int(row[1]), *(float(v) for v in row[2:]))
        self._file.write(self._format(row) + "\n")
        self._file.flush()
        os.fsync(self._file.fileno())
        self.rows[row[:2]] = row

    def close(self) -> None:
        self._file.close()


@dataclass
class Surface:
    """A finished surface: its spec, the axis and the grids (shape (points,) or (points, points), [i, j])."""

    spec: dict
    axis: np.ndarray
    values: dict[str, np.ndarray]
    label: str = ""

    @property
    def dims(self) -> int:
        return int(self.spec["dims"])

    @classmethod
    def load(cls, folder, label: str | None = None) -> Surface:
        folder = Path(folder)
        with np.load(folder / SURFACE) as f:
            spec = json.loads(str(f["spec"]))
            return cls(spec, f["axis"], {k: f[k] for k in VALUES}, label or spec.get("label") or folder.name)

    def save(self, folder: Path) -> None:
        buffer = io.BytesIO()
        np.savez(buffer, spec=json.dumps(self.spec), axis=self.axis, **self.values)
        atomic_write_bytes(Path(folder) / SURFACE, buffer.getvalue())


def _grids(spec: SurfaceSpec, rows: dict) -> dict[str, np.ndarray]:
    shape = (spec.points,) if spec.dims == 1 else (spec.points, spec.points)
    grids = {k: np.full(shape, np.nan) for k in VALUES}
    for (i, j), row in rows.items():
        for k, v in zip(VALUES, row[4:], strict=True):
            grids[k][(i,) if spec.dims == 1 else (i, j)] = v
    return grids


def _check_same_surface(folder: Path, spec: dict) -> None:
    old = read_json(folder / SPEC)
    if old is None:
        return
    for key in spec:
        if old.get(key) != spec[key]:
            flag = "weights" if key == "weights" else f"--{key.replace('_', '-')}"
            raise ConfigError(flag, spec[key], f"{folder} holds a surface with {key}={old.get(key)!r}: "
                              "use another --out, or remove that folder to start over")


def compute_surface(evaluator: PointEvaluator, spec: SurfaceSpec, folder, jobs: int = 1,
                    max_points: int | None = None, label: str = "") -> Surface | None:
    """Evaluate the grid points not yet in ``folder/points.csv`` (at most ``max_points`` of them: a way to
    stop early), on ``jobs`` processes of one torch thread each (``jobs`` 1: this process). Returns the
    finished Surface (also written as surface.npz), or None while points are missing."""
    folder = Path(folder)
    log = PointLog(folder / POINTS)
    try:
        todo = [p for p in spec.coordinates() if (p[0], p[1]) not in log.rows][:max_points]
        if jobs <= 1:
            for i, j, a, b in todo:
                log.add((i, j, a, b, *evaluator(a, b)))
        else:
            size = max(1, min(16, len(todo) // (4 * jobs)))  # small chunks: little is lost when killed
            tasks = [todo[k:k + size] for k in range(0, len(todo), size)]
            run = Parallel(n_jobs=jobs, return_as="generator_unordered")
            # a copy per task: nested in a joblib worker, joblib runs these in threads of one process, which
            # would move one shared model to their points at once (processes get a copy anyway)
            for rows in run(delayed(_evaluate_chunk)(copy.deepcopy(evaluator), chunk, 1) for chunk in tasks):
                for row in rows:
                    log.add(row)
        rows = log.rows
    finally:
        log.close()
    if len(rows) < len(spec.coordinates()):
        return None
    described = read_json(folder / SPEC) or asdict(spec)
    surface = Surface({**described, "label": label}, spec.axis, _grids(spec, rows), label)
    surface.save(folder)
    return surface


def surface_for_model(model, loss_fn, classify: bool, train, test, spec: SurfaceSpec, folder,
                      batch_size: int, jobs: int = 1, max_points: int | None = None, label: str = "",
                      figures: bool = True) -> Surface | None:
    """The surface of ``model`` around its current weights on the (x, y) sets ``train`` and ``test``,
    written to ``folder`` (resumed when it holds part of the same surface); figures drawn once finished.
    ``batch_size``: the evaluation batch in BN train mode and the statistics batch of recompute mode."""
    spec.check()
    folder = Path(folder)
    described = {**asdict(spec), "batch_size": spec.batch_size or batch_size,
                 "weights": weights_digest(model)}
    _check_same_surface(folder, described)
    if (folder / SURFACE).exists():
        return Surface.load(folder, label)
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    if (folder / DIRECTIONS_FILE).exists():
        directions = torch.load(folder / DIRECTIONS_FILE, map_location=train[0].device, weights_only=True)
    else:
        generator = torch.Generator().manual_seed(spec.seed)
        directions = [random_direction(named, spec.directions, generator) for _ in range(spec.dims)]
        buffer = io.BytesIO()
        torch.save(directions, buffer)
        atomic_write_bytes(folder / DIRECTIONS_FILE, buffer.getvalue())
    atomic_write_json(folder / SPEC, described)
    evaluator = PointEvaluator(model, loss_fn, classify, train, test, directions, spec.bn,
                               described["batch_size"], spec.seed)
    try:
        surface = compute_surface(evaluator, spec, folder, jobs, max_points, label)
    finally:
        evaluator.set_point(())  # the model back at its weights and buffers
    if surface is not None and figures:
        draw_surface(surface, folder)
    return surface


def default_folder(run_dir, spec: SurfaceSpec) -> Path:
    return Path(run_dir) / "landscape" / f"surface_{spec.dims}d_{spec.bn}_{spec.directions}"


def surface_of_run(run_dir, spec: SurfaceSpec = SurfaceSpec(), out=None, jobs: int | None = None,
                   device: str = "cpu", max_points: int | None = None, figures: bool = True
                   ) -> Surface | None:
    """The surface of a run dir's model (``spec.checkpoint``), written under ``out`` (default
    RUN_DIR/landscape/surface_<dims>d_<bn>_<directions>). ``jobs`` None: one worker process per CPU core
    (on 2 cores, 2 processes of one thread were 2.7x faster than one process of 2 threads), 1 on a GPU."""
    spec.check()
    run = load_run(run_dir, spec.checkpoint, device)
    if jobs is None:
        cpu = next(run.model.parameters()).device.type == "cpu"
        jobs = len(os.sched_getaffinity(0)) if cpu and hasattr(os, "sched_getaffinity") else 1
    train, test = run_subsets(run, spec.subset, spec.seed)
    folder = Path(out) if out else default_folder(run_dir, spec)
    label = f"{run.cfg.model.get('name')} norm={run.cfg.norm.get('name')}"
    return surface_for_model(run.model, run.loss_fn, run.classify, train, test, spec, folder, run.batch_size,
                             jobs, max_points, label, figures)

