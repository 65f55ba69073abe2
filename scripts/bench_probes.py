"""Benchmark (not a test): each probe's cost per call in training steps, and the slowdown of a whole run.

    .venv/bin/python scripts/bench_probes.py [--steps 500] [--repeats 2] [overrides ...]

Part 1 builds the run's pieces once (default: model=vgg_small norm=batch data.batch_size=128 probes=all),
trains a few warm-up steps, then times one training step (forward, backward, optimizer step) and one call
of each enabled probe at the same state; it reports the median of ``--calls`` timings, as seconds and in
units of one training step. Part 2 trains the same seeded run with the probes' configured cadences and
without probes, alternating ``--repeats`` times in this one process, and reports the wall-time ratio
(median over repeats). Timings on a shared machine are noisy; read them as rough figures.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import torch
from omegaconf import OmegaConf

from normexp.config import compose
from normexp.data import build_data
from normexp.models import build_model
from normexp.norms import NormSpec
from normexp.optim import build_optimizer
from normexp.probes import ProbeSet
from normexp.train import make_loss, run, seed_everything

BASE = ["model=vgg_small", "norm=batch", "data.batch_size=128", "probes=all", "device=cpu",
        "train.progress=false", "logger=local"]


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def per_call_costs(cfg, calls: int) -> list[tuple[str, float, float]]:
    """(probe, median seconds per call, that over the median seconds of a training step timed alternately
    with the probe's calls, so both see the same machine load)."""
    seed_everything(int(cfg.seed))
    device = torch.device(cfg.device if cfg.device != "auto" else "cpu")
    data = build_data(cfg.data, device, int(cfg.seed))
    model = build_model(cfg.model, NormSpec.from_config(cfg.norm), data.info.in_shape, data.info.num_classes)
    optimizer, loss_fn = build_optimizer(cfg.optim, model), make_loss(data.info.task)
    steps = iter(range(10**9))
    batch = []

    def train_step():  # leaves the step's gradient in .grad and its batch in ``batch``
        batch[:] = data.batch(next(steps))
        optimizer.zero_grad(set_to_none=True)
        loss_fn(model(batch[0]), batch[1]).backward()
        optimizer.step()

    for _ in range(5):
        train_step()
    rows = []
    probes_cfg = OmegaConf.to_container(cfg.probes)
    for name, sub in probes_cfg.items():
        if name == "batch_size" or not sub.get("every"):
            continue
        alone = ProbeSet(OmegaConf.create({"batch_size": probes_cfg.get("batch_size", 128),
                                           name: {**sub, "every": 1}}), model, data, loss_fn, int(cfg.seed))
        train_step()
        alone.run(0, tuple(batch), optimizer)  # warm-up (and moment drift's first call, which only stores)
        step_times, probe_times = [], []
        for _ in range(calls):
            step_times.append(timed(train_step))
            probe_times.append(timed(lambda a=alone: a.run(1, tuple(batch), optimizer)))
        seconds, step = statistics.median(probe_times), statistics.median(step_times)
        rows.append((f"{name} (every {sub['every']})", seconds, seconds / step, step))
    return rows


def slowdown(overrides: list[str], repeats: int) -> tuple[float, float, float]:
    with_probes, without = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(repeats):
            for probes, times in (("all", with_probes), ("none", without)):
                cfg = compose([*overrides, f"probes={probes}"])
                start = time.perf_counter()
                run(cfg, f"{tmp}/{probes}-{r}")
                times.append(time.perf_counter() - start)
    a, b = statistics.median(with_probes), statistics.median(without)
    return a, b, a / b


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=500, help="run length (quick profile: 500)")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--calls", type=int, default=5)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    overrides = [*BASE, "profile=quick", f"train.steps={args.steps}", *args.overrides]
    cfg = compose(overrides)
    print(f"config: {' '.join(overrides)}; torch threads {torch.get_num_threads()}")
    print(f"{'probe':<28}{'s/call':>10}{'train steps':>13}{'s/step':>10}")
    for name, seconds, steps, step in per_call_costs(cfg, args.calls):
        print(f"{name:<28}{seconds:>10.4f}{steps:>13.2f}{step:>10.4f}")
    if args.repeats < 1:
        return
    a, b, ratio = slowdown(overrides, args.repeats)
    print(f"run of {args.steps} steps: {a:.1f} s with probes, {b:.1f} s without: slowdown {ratio:.2f}x")


if __name__ == "__main__":
    main()
