"""SD-3's speed figure: eval-mode inference with BN as its own layer vs folded into the conv before it.

    .venv/bin/python scripts/bench_fold.py [--models vgg_small resnet_cifar resnet18] [--batch 256]

Prints one markdown row per model: milliseconds per batch (median of torch.utils.benchmark's blocked
runs) and the speed-up. The outputs are checked equal (within 1e-4) before timing.
"""

from __future__ import annotations

import argparse

import torch
from torch.utils.benchmark import Timer

from normexp.config import compose
from normexp.fold import fold_batch_norms
from normexp.models import build_model
from normexp.norms import NormSpec

SHAPES = {"vgg_small": (1, 28, 28), "resnet_cifar": (3, 32, 32), "resnet18": (3, 32, 32),
          "vgg11": (3, 32, 32)}
EXTRA = {"resnet18": ["model.small_input_stem=true"]}


def bench(name: str, batch: int, seconds: float) -> tuple[float, float]:
    cfg = compose([f"model={name}", "norm=batch", *EXTRA.get(name, [])])
    shape = SHAPES[name]
    model = build_model(cfg.model, NormSpec.from_config(cfg.norm), shape, 10).train()
    with torch.no_grad():  # running statistics of some data, so BN is not the identity
        for _ in range(3):
            model(torch.randn(32, *shape) * 2 + 0.5)
    folded = fold_batch_norms(model)
    model.eval()
    x = torch.randn(batch, *shape)
    with torch.no_grad():
        torch.testing.assert_close(folded(x), model(x), atol=1e-4, rtol=1e-4)
    times = []
    for net in (model, folded):
        timer = Timer("with torch.no_grad(): net(x)", globals={"net": net, "x": x, "torch": torch})
        times.append(timer.blocked_autorange(min_run_time=seconds).median * 1e3)
    return times[0], times[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", choices=SHAPES,
                        default=["vgg_small", "resnet_cifar", "resnet18"])
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--seconds", type=float, default=2.0, help="minimum timing per variant")
    parser.add_argument("--threads", type=int, default=0, help="torch threads; 0 leaves torch's default")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    threads = torch.get_num_threads()
    print(f"eval-mode forward, batch {args.batch}, {threads} CPU threads, torch {torch.__version__}")
    print("| model | BN (ms) | folded (ms) | speed-up |\n|---|---|---|---|")
    for name in args.models:
        plain, folded = bench(name, args.batch, args.seconds)
        print(f"| {name} | {plain:.2f} | {folded:.2f} | {plain / folded:.2f}x |")


if __name__ == "__main__":
    main()
