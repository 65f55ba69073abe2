"""Benchmark (not a test): each probe's cost per call in training steps, and the slowdown of a whole run.

    .venv/bin/python scripts/bench_probes.py [--steps 500] [--repeats 3] [--calls 5] [overrides ...]

Part 1 builds the run's pieces once (default: model=vgg_small norm=batch data.batch_size=128 probes=all),
trains a few warm-up steps, then times training steps (forward, backward, optimizer step) alternating with
calls of each enabled probe; it reports the median of ``--calls`` timings, as seconds and in units of one
training step. Part 2 trains the same seeded quick-profile run with the probes' configured cadences and
without probes, ``--repeats`` pairs side by side in this one process, and reports the wall-time ratio and
the in-run ratio (see ``slowdown``). Timings on a shared machine are noisy; read them as rough figures.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch
from omegaconf import OmegaConf

from normexp.config import compose
from normexp.data import build_data
from normexp.models import build_model
from normexp.norms import NormSpec
from normexp.optim import build_optimizer
from normexp.probes import ProbeSet
from normexp.records import read_metrics
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


def slowdown(overrides: list[str], repeats: int) -> tuple[float, float]:
    """Train the same seeded run with and without probes, ``repeats`` pairs side by side; print each pair.
    Returns the median over pairs of the wall-time ratio, and of the in-run ratio wall / (wall - probe
    seconds) of the run with probes (its probes and training share the machine's load at the same times,
    so it is the steadier figure on a shared machine)."""
    ratios, in_run = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(repeats):
            wall = {}
            for probes in ("all", "none"):
                run_dir = Path(tmp) / f"{probes}-{r}"
                start = time.perf_counter()
                run(compose([*overrides, f"probes={probes}"]), run_dir)
                wall[probes] = time.perf_counter() - start
            records = read_metrics(Path(tmp) / f"all-{r}")
            probe_seconds = sum(m["seconds"] for m in records if m["split"] == "probe")
            ratios.append(wall["all"] / wall["none"])
            in_run.append(wall["all"] / (wall["all"] - probe_seconds))
            print(f"pair {r}: {wall['all']:.1f} s with probes ({probe_seconds:.1f} s in probes), "
                  f"{wall['none']:.1f} s without: ratio {ratios[-1]:.2f}, in-run {in_run[-1]:.2f}",
                  flush=True)
    return statistics.median(ratios), statistics.median(in_run)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=500, help="run length (quick profile: 500)")
    parser.add_argument("--repeats", type=int, default=3, help="run pairs (0: skip part 2)")
    parser.add_argument("--calls", type=int, default=5, help="timed calls per probe (0: skip part 1)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    overrides = [*BASE, "profile=quick", f"train.steps={args.steps}", *args.overrides]
    cfg = compose(overrides)
    print(f"config: {' '.join(overrides)}; torch threads {torch.get_num_threads()}")
    print(f"{'probe':<28}{'s/call':>10}{'train steps':>13}{'s/step':>10}")
    for name, seconds, steps, step in per_call_costs(cfg, args.calls) if args.calls > 0 else []:
        print(f"{name:<28}{seconds:>10.4f}{steps:>13.2f}{step:>10.4f}", flush=True)
    if args.repeats < 1:
        return
    ratio, in_run = slowdown(overrides, args.repeats)
    print(f"slowdown of a {args.steps}-step run with probes: {ratio:.2f}x side by side, {in_run:.2f}x in-run "
          f"(medians over {args.repeats} pairs)")


if __name__ == "__main__":
    main()
