"""normexp-bench: the speed figures, each a ratio of two things timed side by side in this one run.

    normexp-bench [--only overhead,probes,sweep,options,fold,suite] [--repeats 5] [--threads 1]
                  [--device cpu] [--markdown FILE]

- overhead: harness step time over a minimal hand-written loop (same model built by the registry, same
  data already in memory, same batch; probes off), MLP and small VGG at batch 4 and 128. The harness time
  is its summary's training time (evaluation excluded, logging and the divergence check included).
- probes: each probe's cost per call in training steps, and a quick-profile run with ``probes=all`` over
  the same run without probes.
- sweep: runs per second of a small-batch sweep with ``launcher=parallel`` over ``launcher=basic``
  (both through the real command line, start-up included), and over ``launcher=basic train.threads=1``.
- options: ``train.channels_last`` and ``train.compile``: step time without the option over with it.
- wholerun: the same options, and ``data.eval_batch_size=250`` (over channels_last, the quick suite's
  layout), judged as the suite pays for them: a whole ``normexp-train`` run's wall time without the option
  over with it (start-up, compiling and evaluations included), at the quick suite's run lengths and
  evaluation cadences of each conv net and batch size, the two runs side by side on the two cores.
- layouts: ``train.channels_last`` per norm on the quick suite's nets (Wu & He's ResNet at depth 8, N = 32
  and 2; Santurkar's small VGG with BN, noisy BN and noise): step time without it over with it.
- fold: eval-mode inference with BN folded into the conv before it (SD-3), over the unfolded net.
- suite: wall time of ``normexp-reproduce --profile quick`` per experiment (fresh output folders).
- landscape: loss-surface points per second over bare forward passes of the same model on the same 1,000
  training and 1,000 test examples (small VGG, BN in eval mode, one thread, interleaved); the wall time of
  a 7x7 surface in one process with 2 torch threads and on 2 worker processes of one thread, scaled to
  51x51; and the Hessian-vector products Lanczos and power iteration need for the top eigenvalue at
  tol 1e-3 (MLP with and without BN trained 500 steps on mnist5k, 512 training examples, BN train mode).
- norms: what each norm costs on Wu & He's ResNet (depth 14, Fashion-MNIST, N images per virtual device,
  optimizer batch 8N, N = 32 and 2): training images per second of plain BN (statistics over the whole
  batch), ghost BN (D = 8), GN (G = 4), LN, IN and Batch Renorm (D = 8), each over BN's, the norms taking
  turns in blocks of steps; the absolute images per second; and each norm's peak memory of a few training
  steps above the memory before them, gradients included (CUDA: ``torch.cuda.max_memory_allocated`` after
  ``reset_peak_memory_stats``; CPU: the peak resident set size, reset through /proc/self/clear_refs, in a
  fresh process per N whose glibc unmaps freed tensors and is trimmed before each norm, so no norm reuses
  another's freed memory; these agree with a fresh process per norm to 0.2 MiB).
- augment: the data pipeline's vectorized random crop (``data.crop_padding=2``) without and with flip, on
  the same ResNet (ghost BN) at N = 32 and 2: step time with augmentation over without, taking turns; and
  the milliseconds each adds to a batch fetch alone (a small cost can hide in a step's noise).
The norms and augment sections run on ``--device`` (cpu, cuda or auto); the others on the CPU.

Each figure is repeated and reported as min / median / max; a machine's noise moves both sides of a ratio
together more than it moves either alone. Figures are not assertions: the tests never time anything.
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pandas as pd
import torch
import torch.nn.functional as F
from joblib import Parallel, delayed
from omegaconf import OmegaConf
from torch.utils.benchmark import Timer

from normexp.compose import compose
from normexp.data import TensorData, build_data
from normexp.fold import fold_batch_norms
from normexp.landscape.curvature import HessianOperator, top_eigenvalues
from normexp.landscape.directions import random_direction
from normexp.landscape.hvp import power_iteration
from normexp.landscape.run import fixed_subset, load_run
from normexp.landscape.surface import PointEvaluator, SurfaceSpec, compute_surface
from normexp.models import build_model
from normexp.norms import NormSpec
from normexp.optim import build_optimizer
from normexp.probes import ProbeSet
from normexp.runtime import configure_torch, make_loss, seed_everything
from normexp.train import run

QUIET = ["device=cpu", "train.progress=false", "logger=local", "probes=none"]
OVERHEAD_CASES = [("mlp", 4, 2000), ("mlp", 128, 1000), ("vgg_small", 4, 600), ("vgg_small", 128, 100)]
OPTION_CASES = [("vgg_small", 4), ("vgg_small", 128), ("resnet_cifar", 128)]
BIN = Path(sys.executable).parent
DEVICES = ("auto", "cpu", "cuda")
ON_DEVICE = ("norms", "augment")  # the sections that run on --device
# Wu & He's ResNet cell (experiments/wuhe2018/defaults.yaml: base and params.resnet.full), N per device
WUHE_RESNET = ["data=fashion_mnist", "optim=momentum", "schedule=cosine", "model=resnet_cifar",
               "model.stem_stride=2", "model.zero_init_last=true"]
WUHE_DEVICES = 8  # D: the optimizer batch is D x N
WUHE_NORMS = {  # label -> overrides; the first is the reference of the ratios
    "BN (whole batch)": ["norm=batch"],
    "ghost BN (D = 8)": ["norm=ghost_batch", f"norm.virtual_devices={WUHE_DEVICES}"],
    "GN (G = 4)": ["norm=group", "norm.groups=4"],
    "LN": ["norm=layer"],
    "IN": ["norm=instance"],
    "BRN (D = 8)": ["norm=batch_renorm", f"norm.virtual_devices={WUHE_DEVICES}"],
}
NORM_SIZES = (32, 2)  # N, images per virtual device
NORM_DEPTH = 14
IMAGES_PER_BLOCK = 1024  # a timed block: 4 steps at N = 32, 64 at N = 2
WARMUP_STEPS = 2  # per step function, before any block
MEMORY_STEPS = 3
FREEING_MALLOC = {"MALLOC_MMAP_THRESHOLD_": "65536"}  # a fixed threshold: freed blocks above it are unmapped


def timed_run(model: str, batch: int, steps: int, threads: int) -> list[str]:
    """Overrides of a quiet BN training run for step timings: no evaluation until the end, no probes."""
    return [
        *QUIET,
        f"model={model}",
        "norm=batch",
        f"data.batch_size={batch}",
        f"train.steps={steps}",
        "train.eval_every=0",
        "data.test_subset=100",
        f"train.threads={threads}",
    ]


def spread(values: list[float]) -> tuple[float, float, float]:
    return min(values), statistics.median(values), max(values)


def built(cfg, device: torch.device = torch.device("cpu")):
    """The run's data, model and optimizer exactly as ``normexp-train`` builds them."""
    seed_everything(int(cfg.seed))
    data = build_data(cfg.data, device, int(cfg.seed))
    model = build_model(cfg.model, NormSpec.from_config(cfg.norm), data.info.in_shape, data.info.num_classes)
    model = model.to(device)
    return data, model, build_optimizer(cfg.optim, model)


def bare_loop(cfg):
    """What a researcher would write: index the in-memory tensors, forward, backward, step. Returns the
    step function (its own model, optimizer and copy of the data)."""
    data, model, opt = built(cfg)
    x_all, y_all, b = data.x_train, data.y_train, data.batch_size
    order = torch.randperm(len(y_all))
    per_epoch = len(y_all) // b

    def step(i: int) -> None:
        idx = order[(i % per_epoch) * b : (i % per_epoch + 1) * b]
        loss = F.cross_entropy(model(x_all[idx]), y_all[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step


def run_calling_before_each_batch(cfg, run_dir: Path, before) -> None:
    """Run the harness, calling ``before(i)`` each time it fetches its training batch ``i``."""
    fetch = TensorData.batch

    def hooked(self, i: int):
        before(i)
        return fetch(self, i)

    TensorData.batch = hooked
    try:
        run(cfg, run_dir)
    finally:
        TensorData.batch = fetch


def interleaved_step_times(cfg, run_dir: Path) -> tuple[float, float]:
    """(harness, bare) seconds per step, measured in lockstep: every time the harness fetches a batch, one
    bare-loop step runs first. A harness step is the time from the end of one bare step to the start of the
    next, so both sides see the same moments of a noisy machine (milliseconds apart)."""
    bare_step, marks = bare_loop(cfg), []

    def bare_step_first(i: int) -> None:
        t0 = time.perf_counter()
        bare_step(i)
        marks.append((t0, time.perf_counter()))

    run_calling_before_each_batch(cfg, run_dir, bare_step_first)
    marks = marks[5:]  # warm-up
    harness = sum(nxt[0] - cur[1] for cur, nxt in zip(marks, marks[1:], strict=False))
    bare = sum(end - start for start, end in marks[:-1])
    return harness / (len(marks) - 1), bare / (len(marks) - 1)


def bench_overhead(repeats: int, threads: int) -> list[tuple]:
    rows = []
    for model, batch, steps in OVERHEAD_CASES:
        cfg = compose(timed_run(model, batch, steps, threads))
        with tempfile.TemporaryDirectory() as tmp:
            pairs = [interleaved_step_times(cfg, Path(tmp) / str(r)) for r in range(repeats)]
        ratios = [harness / bare for harness, bare in pairs]
        rows.append((f"harness / bare loop, {model} batch {batch}", "<= 1.05", *spread(ratios)))
    return rows


def probe_costs(cfg, calls: int) -> list[tuple[str, float]]:
    """(probe, median cost of a call in units of a training step timed alternately with its calls)."""
    data, model, optimizer = built(cfg)
    loss_fn, batch, steps = make_loss(data.info.task), [], iter(range(10**9))

    def train_step():  # leaves the step's gradient in .grad and its batch in ``batch``
        batch[:] = data.batch(next(steps))
        optimizer.zero_grad(set_to_none=True)
        loss_fn(model(batch[0]), batch[1]).backward()
        optimizer.step()

    for _ in range(5):
        train_step()
    probes_cfg, rows = OmegaConf.to_container(cfg.probes), []
    for name, sub in probes_cfg.items():
        if name == "batch_size" or not sub.get("every"):
            continue
        alone = ProbeSet(
            OmegaConf.create({"batch_size": probes_cfg.get("batch_size", 128), name: {**sub, "every": 1}}),
            model,
            data,
            loss_fn,
            int(cfg.seed),
        )
        train_step()
        alone.run(0, tuple(batch), optimizer)  # warm-up (moment drift's first call only stores)
        step_times, probe_times = [], []
        for _ in range(calls):
            t0 = time.perf_counter()
            train_step()
            t1 = time.perf_counter()
            alone.run(1, tuple(batch), optimizer)
            step_times.append(t1 - t0)
            probe_times.append(time.perf_counter() - t1)
        rows.append(
            (f"{name} (every {sub['every']})", statistics.median(probe_times) / statistics.median(step_times))
        )
    return rows


def bench_probes(repeats: int, threads: int) -> list[tuple]:
    base = [
        "device=cpu",
        "train.progress=false",
        "logger=local",
        "model=vgg_small",
        "norm=batch",
        "data.batch_size=128",
        "profile=quick",
        f"train.threads={threads}",
    ]
    rows = [
        (f"probe call / training step: {name}", "", cost, cost, cost)
        for name, cost in probe_costs(compose([*base, "probes=all"]), calls=5)
    ]
    ratios = []
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(repeats):
            wall = {}
            for probes in ("all", "none") if r % 2 == 0 else ("none", "all"):
                start = time.perf_counter()
                run(compose([*base, f"probes={probes}"]), Path(tmp) / f"{probes}-{r}")
                wall[probes] = time.perf_counter() - start
            ratios.append(wall["all"] / wall["none"])
    steps = compose(base).train.steps
    rows.append(
        (
            f"{steps}-step run with probes=all / without probes (vgg_small, batch 128)",
            "<= 1.3",
            *spread(ratios),
        )
    )
    return rows


def bench_sweep(repeats: int, runs: int = 16, steps: int = 1000) -> list[tuple]:
    """Sweeps of small-batch runs through the command line, sequential vs parallel launcher, each at
    ``runs // 2`` and ``runs`` runs: the whole command's throughput at ``runs``, and the marginal throughput
    (the extra runs over the extra seconds), which is what a sweep of hundreds of runs sees once the
    fixed start-up (imports, worker processes) is paid. The sequential launcher runs with torch's default
    threads (all cores); as a reference, also sequential with ``train.threads=1`` (whole command only),
    which at batch 4 can be the faster of the two."""
    args = [
        str(BIN / "normexp-train"),
        "-m",
        "model=vgg_small",
        "data.batch_size=4",
        f"train.steps={steps}",
        "train.eval_every=0",
        "data.test_subset=500",
        "train.progress=false",
    ]
    variants = {
        "sequential": ["launcher=basic"],
        "parallel": ["launcher=parallel"],
        "sequential, 1 thread": ["launcher=basic", "train.threads=1"],
    }
    whole, whole_one_thread, marginal, per_run = [], [], [], {"sequential": [], "parallel": []}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(repeats):
            order = list(variants) if r % 2 == 0 else list(reversed(variants))
            wall = {}
            for name in order:
                for n in (runs // 2, runs) if name in per_run else (runs,):
                    start = time.perf_counter()
                    subprocess.run(
                        [
                            *args,
                            *variants[name],
                            f"seed={','.join(str(s) for s in range(n))}",
                            f"hydra.sweep.dir={tmp}/{r}-{n}-{name.replace(', ', '-').replace(' ', '')}",
                        ],
                        check=True,
                        capture_output=True,
                    )
                    wall[name, n] = time.perf_counter() - start
                if name in per_run:
                    per_run[name].append((wall[name, runs] - wall[name, runs // 2]) / (runs - runs // 2))
            whole.append(wall["sequential", runs] / wall["parallel", runs])
            whole_one_thread.append(wall["sequential, 1 thread", runs] / wall["parallel", runs])
            marginal.append(per_run["sequential"][-1] / per_run["parallel"][-1])
    what = f"{runs} runs of vgg_small, batch 4, {steps} steps"
    return [
        (f"sweep throughput, parallel / sequential, whole command ({what})", ">= 1.7", *spread(whole)),
        (
            f"sweep throughput, parallel / sequential, marginal (runs {runs // 2 + 1}-{runs})",
            ">= 1.7",
            *spread(marginal),
        ),
        ("sweep throughput, parallel / sequential at 1 thread, whole command", "", *spread(whole_one_thread)),
        ("seconds per run, sequential (marginal)", "", *spread(per_run["sequential"])),
        ("seconds per run, parallel (marginal)", "", *spread(per_run["parallel"])),
    ]


def harness_step_seconds(cfg, run_dir: Path, warmup: int = 10) -> float:
    """Median seconds per training step after ``warmup`` steps of one harness run, from the moments it
    fetches its batches."""
    marks = []
    run_calling_before_each_batch(cfg, run_dir, lambda i: marks.append(time.perf_counter()))
    return statistics.median(b - a for a, b in zip(marks[warmup:], marks[warmup + 1 :], strict=False))


def bench_options(repeats: int, threads: int, steps: int = 60) -> list[tuple]:
    """``train.channels_last`` and ``train.compile`` on this machine: the training step time without the
    option over with it (above 1: the option pays), after the first steps (which compile), runs alternated.
    Compiling time itself is not a figure here: torch caches compiled graphs in this process and on disk."""
    rows = []
    for model, batch in OPTION_CASES:
        base = timed_run(model, batch, steps, threads)
        for option in ("train.channels_last", "train.compile"):
            speedups = []
            with tempfile.TemporaryDirectory() as tmp:
                for r in range(repeats):
                    off = harness_step_seconds(compose(base), Path(tmp) / f"off{r}")
                    on = harness_step_seconds(compose([*base, f"{option}=true"]), Path(tmp) / f"on{r}")
                    speedups.append(off / on)
            rows.append(
                (f"{option}=true speed-up of a training step, {model} batch {batch}", "", *spread(speedups))
            )
    return rows


LAYOUT_CASES = {  # the quick suite's conv nets and norms, where train.channels_last is on
    **{f"Wu & He ResNet depth 8, {label}, N = {n} (batch {WUHE_DEVICES * n})":
       [*WUHE_RESNET, "model.depth=8", *norm, f"data.batch_size={WUHE_DEVICES * n}"]
       for n in (32, 2) for label, norm in WUHE_NORMS.items() if label != "LN"},
    **{f"Santurkar vgg_small, {label}, batch 128": ["model=vgg_small", "data=fashion_mnist", f"norm={norm}",
                                                   "data.batch_size=128"]
       for label, norm in {"BN": "batch", "noisy BN": "batch_noisy", "noise": "noise"}.items()},
}


def bench_layouts(repeats: int, threads: int, steps: int = 40) -> list[tuple]:
    """``train.channels_last`` per norm on the quick suite's nets: the harness's training step time without
    it over with it (above 1: channels last pays), runs alternated. The norms' own channels-last paths are
    in these figures (ghost BN's slice columns, IN's copies, the noise's draw order)."""
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for label, overrides in LAYOUT_CASES.items():
            base = [*QUIET, *overrides, f"train.steps={steps}", "train.eval_every=0",
                    "data.train_subset=4096", "data.test_subset=100", f"train.threads={threads}"]
            speedups = []
            for r in range(repeats):
                off = harness_step_seconds(compose(base), Path(tmp, f"{len(rows)}-off{r}"))
                on = harness_step_seconds(compose([*base, "train.channels_last=true"]),
                                          Path(tmp, f"{len(rows)}-on{r}"))
                speedups.append(off / on)
            rows.append((f"train.channels_last=true speed-up of a training step, {label}", "",
                         *spread(speedups)))
    return rows


def bench_fold(repeats: int, batch: int = 256) -> list[tuple]:

    rows = []
    for name, shape, extra in [
        ("vgg_small", (1, 28, 28), []),
        ("resnet_cifar", (3, 32, 32), []),
        ("resnet18", (3, 32, 32), ["model.small_input_stem=true"]),
    ]:
        cfg = compose([f"model={name}", "norm=batch", *extra])
        model = build_model(cfg.model, NormSpec.from_config(cfg.norm), shape, 10).train()
        with torch.no_grad():  # running statistics of some data, so BN is not the identity
            for _ in range(3):
                model(torch.randn(32, *shape) * 2 + 0.5)
        folded, x = fold_batch_norms(model), torch.randn(batch, *shape)
        model.eval()
        ratios = []
        for _ in range(repeats):
            ms = [
                Timer("with torch.no_grad(): net(x)", globals={"net": net, "x": x, "torch": torch})
                .blocked_autorange(min_run_time=0.5)
                .median
                for net in (model, folded)
            ]
            ratios.append(ms[0] / ms[1])
        rows.append((f"SD-3 folded BN speed-up, eval forward, {name} batch {batch}", "", *spread(ratios)))
    return rows


def _vgg_evaluator(subset: int = 1000):
    """A surface evaluator of the small VGG (BN, eval mode) on mnist5k subsets, and its (x, y) batches."""
    cfg = compose(["model=vgg_small", "norm=batch"])
    data, model, _ = built(cfg)
    with torch.no_grad():  # running statistics of real data, so eval-mode BN is not the identity
        for i in range(5):
            model(data.batch(i)[0])
    train = fixed_subset(data.x_train, data.y_train, subset, 0)
    test = fixed_subset(data.x_test, data.y_test, subset, 1)
    named, gen = list(model.named_parameters()), torch.Generator().manual_seed(0)
    directions = [random_direction(named, "weights", gen) for _ in range(2)]
    evaluator = PointEvaluator(model, F.cross_entropy, True, train, test, directions, "eval", 128)
    return evaluator, model


def _trained_mlp(norm: str, folder: Path):
    cfg = compose([*QUIET, "model=mlp", f"norm={norm}", "train.steps=500", "train.eval_every=0",
                   "train.save_final=true", "optim.lr=0.1"])
    run(cfg, folder)
    return load_run(folder, "model", "cpu")


def bench_landscape(repeats: int, grid: int = 7) -> list[tuple]:

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    evaluator, model = _vgg_evaluator()
    ratios, points = [], []
    for r in range(repeats + 1):
        t0 = time.perf_counter()
        evaluator(0.1 * r, -0.1 * r)
        point = time.perf_counter() - t0
        points.append(point)
        t0 = time.perf_counter()
        with torch.no_grad():
            model.eval()
            for x, _ in evaluator.train + evaluator.test:
                model(x)
        if r:  # the first pair warms up
            ratios.append((time.perf_counter() - t0) / point)
    rows = [("surface points per second / bare forward passes per second, small VGG, 2x1000 examples",
             ">= 0.9", *spread(ratios)),
            ("seconds per surface point, one thread (the same timings)", "", *spread(points[1:]))]
    spec = SurfaceSpec(dims=2, points=grid, span=1.0)
    times = {}
    with tempfile.TemporaryDirectory() as tmp:
        Parallel(n_jobs=2)(delayed(time.sleep)(0) for _ in range(2))  # worker processes started, as in use
        for jobs in (1, 2):
            torch.set_num_threads(2 if jobs == 1 else 1)
            t0 = time.perf_counter()
            compute_surface(evaluator, spec, Path(tmp) / str(jobs), jobs=jobs)
            times[jobs] = (time.perf_counter() - t0) / grid**2
    torch.set_num_threads(threads)
    scale = 51**2 / 60
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else math.nan  # the other jobs on the machine
    rows += [(f"51x51 surface, minutes, estimated from {grid}x{grid}: one process, 2 torch threads "
              f"(load average {load:.1f})", "",
              *(times[1] * scale,) * 3),
             (f"51x51 surface, minutes, estimated from {grid}x{grid}: 2 processes of 1 thread", "",
              *(times[2] * scale,) * 3)]
    with tempfile.TemporaryDirectory() as tmp:
        for norm in ("batch", "none"):
            loaded = _trained_mlp(norm, Path(tmp) / norm)
            x, y = loaded.data.fixed_train_batch(512, seed=0)
            loaded.model.train()
            op = HessianOperator(loaded.model, loaded.loss_fn, [(x, y)], list(loaded.model.parameters()))
            (top,), lanczos = top_eigenvalues(op, 1, 1e-3, 200)
            power, iters = power_iteration(op.grads[0], op.params, 1e-3, 200)
            rows += [(f"HVPs for the top eigenvalue at tol 1e-3, MLP norm={norm}: Lanczos "
                      f"(lambda {top:.4g})", "", *(lanczos,) * 3),
                     (f"HVPs for the top eigenvalue at tol 1e-3, MLP norm={norm}: power iteration "
                      f"(lambda {power:.4g})", "", *(iters,) * 3)]
    return rows


def bench_suite() -> list[tuple]:
    """``normexp-reproduce --profile quick`` from nothing: total wall time, and each experiment's run time
    (the sum of its runs' wall seconds: experiments share the workers, so have no wall time of their own)."""

    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        subprocess.run(
            [
                str(BIN / "normexp-reproduce"),
                "--profile",
                "quick",
                "--outputs",
                f"{tmp}/o",
                "--results",
                f"{tmp}/r",
            ],
            check=True,
            capture_output=True,
        )
        total = (time.perf_counter() - start) / 60
        rows = []
        for table in sorted(Path(tmp, "r", "quick").glob("*/*/runs.csv")):
            minutes = pd.read_csv(table)["wall_seconds"].sum() / 60
            name = (
                f"quick suite: run time of {table.parent.parent.name}/{table.parent.name} (minutes, 2 jobs)"
            )
            rows.append((name, "", minutes, minutes, minutes))
    return [*rows, ("quick reproduction suite, whole wall time (minutes)", "<= 20", total, total, total)]


# the quick suite's conv-net runs, lengths and cadences as its specs plan them: label -> overrides
WHOLE_RUN_CASES = {
    "Ioffe lr tolerance: vgg_small, BN (population statistics), batch 60, 1000 steps": [
        "model=vgg_small", "model.init=glorot", "data=fashion_mnist", "norm=batch", "norm.stats=population",
        "data.batch_size=60", "train.steps=1000", "train.eval_every=100", "data.test_subset=2000"],
    "Santurkar: vgg_small, BN, batch 128, 300 steps": [
        "model=vgg_small", "model.init=glorot", "data=fashion_mnist", "norm=batch", "data.batch_size=128",
        "optim.lr=0.1", "train.steps=300", "train.eval_every=30", "data.test_subset=2000"],
    "Wu & He: resnet_cifar depth 8, ghost BN, N = 32 (batch 256), 351 steps": [
        *WUHE_RESNET, "model.depth=8", "norm=ghost_batch", f"norm.virtual_devices={WUHE_DEVICES}",
        "data.batch_size=256", "optim.lr=0.2", "train.steps=351", "train.eval_every=176"],
    "Wu & He: resnet_cifar depth 8, ghost BN, N = 2 (batch 16), 2812 of its 5625 steps, evaluated at end": [
        *WUHE_RESNET, "model.depth=8", "norm=ghost_batch", f"norm.virtual_devices={WUHE_DEVICES}",
        "data.batch_size=16", "optim.lr=0.0125", "train.steps=2812", "train.eval_every=0"],
}
WHOLE_RUN_OPTIONS = {  # option -> what both runs of a pair set already (the quick suite's settings before it)
    "train.channels_last=true": [],
    "train.compile=true": [],
    "data.eval_batch_size=250": ["train.channels_last=true"],
}


def whole_run_seconds(overrides: list[str], folder: Path) -> float:
    """Wall seconds of one ``normexp-train`` process (start-up, compiling and evaluations included)."""
    start = time.perf_counter()
    subprocess.run([str(BIN / "normexp-train"), *overrides, "device=cpu", "train.progress=false",
                    "train.threads=1", f"hydra.run.dir={folder}"], check=True, capture_output=True)
    return time.perf_counter() - start


def bench_whole_runs(repeats: int) -> list[tuple]:
    """Each option over the default, by whole-run wall time at the quick suite's run lengths: the run
    without the option and the run with it start together, one thread each on the two cores (as the
    suite's two jobs do), so the machine's noise falls on both; above 1: the option pays."""

    rows = []
    with tempfile.TemporaryDirectory() as tmp, ThreadPoolExecutor(2) as pool:
        for label, overrides in WHOLE_RUN_CASES.items():
            for option, before in WHOLE_RUN_OPTIONS.items():
                speedups = []
                for r in range(repeats):
                    tag = f"{len(rows)}-{r}"
                    off = pool.submit(whole_run_seconds, [*overrides, *before], Path(tmp, f"off{tag}"))
                    on = pool.submit(whole_run_seconds, [*overrides, *before, option], Path(tmp, f"on{tag}"))
                    speedups.append(off.result() / on.result())
                over = f" (both with {', '.join(before)})" if before else ""
                rows.append((f"{option} speed-up of a whole run{over}, {label}", "", *spread(speedups)))
    return rows


# ---------------------------------------------------------------- norms and augmentation on Wu & He's ResNet

def wuhe_cell(norm: list[str], n: int, depth: int, threads: int, extra: tuple[str, ...] = ()) -> list[str]:
    """Overrides of a Wu & He ResNet cell at N images per virtual device (optimizer batch D x N), on a small
    training subset (its size does not change a step's cost), no probes."""
    return [*QUIET, *WUHE_RESNET, f"model.depth={depth}", *norm, *extra,
            f"data.batch_size={WUHE_DEVICES * n}", "data.train_subset=2048", "data.test_subset=100",
            f"train.threads={threads}"]


def step_function(cfg, device: torch.device):
    """A training step of ``cfg`` as the harness takes it: ``step(i)`` fetches batch ``i`` from the run's data
    (augmentation included), forward, backward, optimizer step (no logging, no schedule). Its own model,
    optimizer and data; returns (step, optimizer, data)."""
    data, model, optimizer = built(cfg, device)
    loss_fn = make_loss(data.info.task)

    def step(i: int) -> None:
        x, y = data.batch(i)
        loss = loss_fn(model(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return step, optimizer, data


def interleaved_seconds(steps: dict, block: int, repeats: int, device: torch.device, warmup: int
                        ) -> dict[str, list[float]]:
    """Seconds per step of each step function, in blocks of ``block`` steps that take turns (the order
    reversed every other repeat), so a machine's drift hits them all alike; ``warmup`` steps each first."""
    sync = torch.cuda.synchronize if device.type == "cuda" else lambda: None
    for step in steps.values():
        for i in range(warmup):
            step(i)
    seconds, start = {name: [] for name in steps}, warmup
    for r in range(repeats):
        for name in list(steps) if r % 2 == 0 else list(reversed(steps)):
            sync()
            t0 = time.perf_counter()
            for i in range(start, start + block):
                steps[name](i)
            sync()
            seconds[name].append((time.perf_counter() - t0) / block)
        start += block
    return seconds


def _status_kib(key: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise KeyError(key)


def steps_rss_mib(steps: int, cells: list[list[str]]) -> list[float]:
    """Of each cell in turn: the peak resident set size over ``steps`` training steps above the RSS before
    them (weights, optimizer state, data), MiB, after a warm-up step (torch's one-time initialisations are no
    norm's) and with the gradients freed (as on CUDA). For a fresh process whose glibc unmaps freed tensors
    (:data:`FREEING_MALLOC`), trimmed before each cell: memory an allocator keeps would hide the next peak.
    NaN where Linux's peak-RSS reset (/proc/self/clear_refs) is missing."""
    mib = []
    for overrides in cells:
        cfg = compose(overrides)
        configure_torch(cfg)
        step, optimizer, _ = step_function(cfg, torch.device("cpu"))
        step(0)
        optimizer.zero_grad(set_to_none=True)
        gc.collect()
        try:
            ctypes.CDLL("libc.so.6").malloc_trim(0)
            Path("/proc/self/clear_refs").write_text("5")  # VmHWM := VmRSS
            before = _status_kib("VmRSS")
        except (OSError, KeyError):
            return [math.nan] * len(cells)
        for i in range(1, steps + 1):
            step(i)
        mib.append((_status_kib("VmHWM") - before) / 1024)
    return mib


def steps_memory_mib(cells: list[list[str]], device: torch.device, steps: int, built_steps: list
                     ) -> list[float]:
    """Each cell's peak memory of ``steps`` training steps, MiB. CUDA: ``max_memory_allocated`` above what was
    allocated before them (weights, optimizer state, data; the gradients freed first), of the step functions
    ``built_steps`` [(step, optimizer, data)]. CPU: :func:`steps_rss_mib` in a fresh process."""
    if device.type != "cuda":
        code = "import json, sys; from normexp.bench import steps_rss_mib; " \
               "print(json.dumps(steps_rss_mib(*json.loads(sys.argv[1]))))"
        args, env = [sys.executable, "-c", code, json.dumps([steps, cells])], {**os.environ, **FREEING_MALLOC}
        out = subprocess.run(args, check=True, capture_output=True, text=True, env=env).stdout
        return json.loads(out.splitlines()[-1])
    mib = []
    for step, optimizer, _ in built_steps:
        optimizer.zero_grad(set_to_none=True)
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        for i in range(steps):
            step(i)
        torch.cuda.synchronize()
        mib.append((torch.cuda.max_memory_allocated() - before) / 2**20)
    return mib


def ratios(a: list[float], b: list[float]) -> tuple[float, float, float]:
    return spread([x / y for x, y in zip(a, b, strict=True)])


def bench_norms(repeats: int, device: torch.device, threads: int, depth: int = NORM_DEPTH,
                sizes: tuple[int, ...] = NORM_SIZES, images: int = IMAGES_PER_BLOCK,
                warmup: int = WARMUP_STEPS, memory_steps: int = MEMORY_STEPS) -> list[tuple]:
    """What each norm costs: per N, images per second of each norm over BN's (the norms taking turns in
    blocks of about ``images`` images), the absolute images per second, and each norm's peak memory of a
    training step."""
    memory = f"peak RSS of {memory_steps} steps above before them (a fresh process: bench.steps_rss_mib)"
    if device.type == "cuda":
        memory = f"peak CUDA memory allocated in {memory_steps} steps above before them"
    rows = []
    for n in sizes:
        batch = WUHE_DEVICES * n
        cells = {label: wuhe_cell(norm, n, depth, threads) for label, norm in WUHE_NORMS.items()}
        configure_torch(compose(cells["BN (whole batch)"]))
        built_steps = {label: step_function(compose(cell), device) for label, cell in cells.items()}
        steps = {label: step for label, (step, _, _) in built_steps.items()}
        seconds = interleaved_seconds(steps, max(1, images // batch), repeats, device, warmup)
        where = f"N = {n} (batch {batch}), resnet_cifar depth {depth}, {device.type}"
        bn = seconds["BN (whole batch)"]
        rows += [(f"images/s, {label} / BN, {where}", "", *ratios(bn, s)) for label, s in seconds.items()]
        rows += [(f"images/s, {label}, {where}", "", *spread([batch / t for t in s]))
                 for label, s in seconds.items()]
        mib = steps_memory_mib(list(cells.values()), device, memory_steps, list(built_steps.values()))
        rows += [(f"MiB, {label}, N = {n}: {memory}", "", m, m, m)
                 for label, m in zip(cells, mib, strict=True)]
    return rows


def bench_augment(repeats: int, device: torch.device, threads: int, depth: int = NORM_DEPTH,
                  sizes: tuple[int, ...] = NORM_SIZES, images: int = IMAGES_PER_BLOCK,
                  warmup: int = WARMUP_STEPS) -> list[tuple]:
    """The vectorized random crop (pad 2), without and with flip: training step time with it over without,
    the three taking turns (ghost BN, each its own model built from the same seed); and the milliseconds it
    adds to a batch, timed the same way on the batches alone (a step's noise can hide a small cost)."""
    variants = {"none": ["data.crop_padding=0", "data.flip=false"],
                "crop": ["data.crop_padding=2", "data.flip=false"],
                "crop + flip": ["data.crop_padding=2", "data.flip=true"]}
    rows = []
    for n in sizes:
        batch = WUHE_DEVICES * n
        ghost = WUHE_NORMS["ghost BN (D = 8)"]
        cells = {k: wuhe_cell(ghost, n, depth, threads, v) for k, v in variants.items()}
        configure_torch(compose(cells["none"]))
        built_steps = {k: step_function(compose(cell), device) for k, cell in cells.items()}
        steps = {k: step for k, (step, _, _) in built_steps.items()}
        batches = {k: data.batch for k, (_, _, data) in built_steps.items()}
        block = max(1, images // batch)
        seconds = interleaved_seconds(steps, block, repeats, device, warmup)
        fetch = interleaved_seconds(batches, 16 * block, repeats, device, warmup)
        where = f"ghost BN, N = {n} (batch {batch}), resnet_cifar depth {depth}, {device.type}"
        for k in ("crop", "crop + flip"):
            added = [1e3 * (a - b) for a, b in zip(fetch[k], fetch["none"], strict=True)]
            rows += [(f"step time with {k} (data.crop_padding=2) / without, {where}", "",
                      *ratios(seconds[k], seconds["none"])),
                     (f"ms {k} adds per batch, data.batch alone, N = {n}, {device.type}", "", *spread(added))]
        ms = [1e3 * t for t in seconds["none"]]
        rows.append((f"ms per step without augmentation, {where}", "", *spread(ms)))
    return rows


SECTIONS = {
    "overhead": lambda a: bench_overhead(a.repeats, a.threads),
    "probes": lambda a: bench_probes(a.repeats, a.threads),
    "sweep": lambda a: bench_sweep(max(1, a.repeats // 2)),
    "options": lambda a: bench_options(max(1, a.repeats // 2), a.threads),
    "fold": lambda a: bench_fold(a.repeats),
    "suite": lambda a: bench_suite(),
    "landscape": lambda a: bench_landscape(a.repeats),
    "norms": lambda a: bench_norms(a.repeats, a.device, a.threads),
    "augment": lambda a: bench_augment(a.repeats, a.device, a.threads),
    "wholerun": lambda a: bench_whole_runs(max(1, a.repeats // 2)),
    "layouts": lambda a: bench_layouts(max(1, a.repeats // 2), a.threads),
}


def section_markdown(section: str, rows: list[tuple], command: str, device: torch.device | None = None
                     ) -> str:
    """The section's table; ``device``: the one its figures ran on, named when a GPU."""
    cuda = device is not None and device.type == "cuda"
    gpu = f", GPU {torch.cuda.get_device_name(device)}" if cuda else ""
    lines = [
        f"## {section}",
        "",
        f"`{command}` on {time.strftime('%Y-%m-%d')}, torch {torch.__version__}, "
        f"{os.cpu_count()} CPU cores, {torch.get_num_threads()} torch threads in the benchmark process{gpu}.",
        "",
        "| figure | target | min | median | max |",
        "| --- | --- | --- | --- | --- |",
    ]
    for name, target, lo, mid, hi in rows:
        cells = [f"{v:.3g}" if v == v else "" for v in (lo, mid, hi)]
        lines.append(f"| {name} | {target} | {' | '.join(cells)} |")
    return "\n".join(lines) + "\n"


def write_markdown(path: Path, sections: dict[str, str]) -> None:
    """Replace the given sections of ``path`` (kept in SECTIONS order); the other sections stay as they were,
    each with the command and date that produced it."""
    old = {}
    if path.exists():
        for chunk in path.read_text().split("\n## ")[1:]:
            old[chunk.split("\n", 1)[0].strip()] = "## " + chunk.rstrip("\n") + "\n"
    merged = {**old, **sections}
    body = "\n".join(merged[name] for name in SECTIONS if name in merged)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        f"# Benchmarks\n\nRatios timed side by side in one run of `normexp-bench` (see its --help).\n\n{body}"
    )


def cli() -> int:
    parser = argparse.ArgumentParser(prog="normexp-bench", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--only", default="overhead,probes,sweep,options,fold", help=f"comma list of {', '.join(SECTIONS)}"
    )
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1, help="torch threads for the in-process figures")
    parser.add_argument("--device", default="cpu",
                        help=f"{', '.join(DEVICES)}: where the norms and augment sections run (others: cpu)")
    parser.add_argument(
        "--markdown",
        type=Path,
        help="also write the tables to this file (sections not run keep their old tables)",
    )
    args = parser.parse_args()
    unknown = [s for s in args.only.split(",") if s not in SECTIONS]
    if unknown:
        print(
            f"normexp-bench: error: --only={unknown[0]!r} is not valid: choose from {', '.join(SECTIONS)}",
            file=sys.stderr,
        )
        return 2
    cuda = torch.cuda.is_available()
    if args.device not in DEVICES or (args.device == "cuda" and not cuda):
        why = "CUDA is not available on this machine: choose from auto, cpu" if args.device == "cuda" else (
            f"choose from {', '.join(DEVICES)}")
        print(f"normexp-bench: error: --device={args.device!r} is not valid: {why}", file=sys.stderr)
        return 2
    args.device = torch.device("cuda" if args.device == "cuda" or (args.device == "auto" and cuda) else "cpu")
    torch.set_num_threads(args.threads)
    command, done = ("normexp-bench " + " ".join(sys.argv[1:])).strip(), {}
    for section in args.only.split(","):
        rows = []
        for row in SECTIONS[section](args):
            rows.append(row)
            print(
                f"{row[0]:<90} {row[1]:>8}  min {row[2]:.3g}  median {row[3]:.3g}  max {row[4]:.3g}",
                flush=True,
            )
        device = args.device if section in ON_DEVICE else None
        done[section] = section_markdown(section, rows, command, device)
        if args.markdown:  # after each section, so a long benchmark keeps what it measured
            write_markdown(args.markdown, done)
    return 0


if __name__ == "__main__":
    raise SystemExit(cli())
