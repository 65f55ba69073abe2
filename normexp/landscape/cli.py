"""normexp-landscape: loss surfaces and Hessian spectra of a trained run.

    normexp-landscape RUN_DIR [--dims 1|2] [--points N] [--span S] [--out DIR] [--directions weights|all]
                      [--bn eval|train|recompute] [--checkpoint model|checkpoint|FILE.pt] [--subset N]
                      [--batch-size B] [--seed S] [--jobs J] [--device auto|cpu|cuda]
    normexp-landscape RUN_DIR --spectrum [--bn train|eval] [--blocks model,layers,norm] [--top-k K]
                      [--tol T] [--max-iter M] [--trace-samples S] [--slq-vectors V] [--slq-steps L]
    normexp-landscape --compare DIR DIR [...] [--labels A B ...] --out FILE.png

A surface goes to RUN_DIR/landscape/surface_<dims>d_<bn>_<directions>/ unless --out says otherwise; run the
same command again to continue one that was stopped. --compare draws finished surfaces (their folders)
side by side on one colour scale.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from normexp.errors import ConfigError, OneLineParser, choices

PROG = "normexp-landscape"


def parser() -> argparse.ArgumentParser:
    p = OneLineParser(prog=PROG, description=__doc__.splitlines()[0], epilog=__doc__.split("\n\n", 1)[1],
                      formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run_dir", nargs="?", type=Path, help="a run directory (config.yaml and weights)")
    p.add_argument("--out", type=Path, help="output folder (a .png file with --compare)")
    p.add_argument("--checkpoint", default="model",
                   help="model (model.pt), checkpoint (checkpoint.pt) or a .pt file")
    p.add_argument("--subset", type=int, default=1000, help="fixed train and test examples (default 1000)")
    p.add_argument("--batch-size", type=int, default=0,
                   help="batches in BN train and recompute modes (default: the run's)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu", help="auto, cpu or cuda (default cpu)")
    p.add_argument("--bn", help="surface: eval (default), train, recompute; spectrum: train (default), eval")
    s = p.add_argument_group("surface")
    s.add_argument("--dims", type=int, default=2)
    s.add_argument("--points", type=int, default=21, help="points per axis (default 21)")
    s.add_argument("--span", type=float, default=1.0, help="the grid covers [-span, span] (default 1)")
    s.add_argument("--directions", default="weights", help="weights (default) or all")
    s.add_argument("--jobs", type=int, default=0,
                   help="worker processes of one torch thread each (default: one per CPU core; 1 on a GPU)")
    c = p.add_argument_group("spectrum")
    c.add_argument("--spectrum", action="store_true", help="Hessian eigenvalues, trace and density instead")
    c.add_argument("--blocks", default="model,norm", help="comma list of model, layers, norm")
    c.add_argument("--top-k", type=int, default=5)
    c.add_argument("--tol", type=float, default=1e-3)
    c.add_argument("--max-iter", type=int, default=100)
    c.add_argument("--trace-samples", type=int, default=50)
    c.add_argument("--slq-vectors", type=int, default=4)
    c.add_argument("--slq-steps", type=int, default=80)
    m = p.add_argument_group("compare")
    m.add_argument("--compare", nargs="+", type=Path, metavar="DIR", help="finished surface folders")
    m.add_argument("--labels", nargs="+", help="one label per --compare folder")
    return p


def _positive(key: str, value, least: int = 1) -> None:
    if value < least:
        raise ConfigError(key, value, f"must be >= {least}")


def _spectrum(args) -> str:
    from normexp.landscape.curvature import BLOCKS, BN_MODES, spectrum_of_run  # lazy: torch

    bn = args.bn or "train"
    if bn not in BN_MODES:
        raise ConfigError("--bn", bn, choices(BN_MODES) + " (the spectrum needs gradients: no recompute)")
    for key in ("top_k", "max_iter", "trace_samples", "slq_vectors", "slq_steps", "subset"):
        _positive(f"--{key.replace('_', '-')}", getattr(args, key), 2 if key == "trace_samples" else 1)
    for block in args.blocks.split(","):
        if block not in BLOCKS:
            raise ConfigError("--blocks", block, choices(BLOCKS))
    if not 0 < args.tol < 1:
        raise ConfigError("--tol", args.tol, "must be a number in (0, 1)")
    results = spectrum_of_run(args.run_dir, args.out, args.checkpoint, args.subset, args.batch_size,
                              args.device, args.seed, blocks=tuple(args.blocks.split(",")), bn=bn,
                              top_k=args.top_k, tol=args.tol, max_iter=args.max_iter,
                              trace_samples=args.trace_samples, slq_vectors=args.slq_vectors,
                              slq_steps=args.slq_steps)
    out = args.out or args.run_dir / "landscape" / f"spectrum_{bn}"
    lines = [f"{name}: top {', '.join(f'{v:.4g}' for v in r['top'])}; trace {r['trace']:.4g} "
             f"+- {r['trace_stderr']:.2g}; {r['top_products']} HVPs for the top {len(r['top'])}"
             for name, r in results.items()]
    return "\n".join([*lines, f"-> {out}"])


def _surface(args) -> str:
    from normexp.landscape.surface import SurfaceSpec, default_folder, surface_of_run  # lazy: torch

    spec = SurfaceSpec(args.dims, args.points, args.span, args.directions, args.bn or "eval", args.subset,
                       args.batch_size, args.seed, args.checkpoint)
    spec.check()
    _positive("--jobs", args.jobs, 0)
    surface = surface_of_run(args.run_dir, spec, args.out, args.jobs or None, args.device)
    folder = args.out or default_folder(args.run_dir, spec)
    v = surface.values
    center = (spec.points // 2,) * spec.dims
    return (f"surface of {surface.label}: {spec.points}{'x' + str(spec.points) if spec.dims == 2 else ''} "
            f"points, train loss at the weights {v['train_loss'][center]:.4g}, over the grid "
            f"{v['train_loss'].min():.4g}..{v['train_loss'].max():.4g} -> {folder}")


def _compare(args) -> str:
    from normexp.landscape.figures import compare  # lazy: matplotlib
    from normexp.landscape.surface import SURFACE, Surface  # lazy: torch

    if args.out is None or args.out.suffix != ".png":
        raise ConfigError("--out", str(args.out), "with --compare, a .png file to write")
    labels = args.labels or [None] * len(args.compare)
    if len(labels) != len(args.compare):
        raise ConfigError("--labels", labels, f"give one label per --compare folder ({len(args.compare)})")
    for folder in args.compare:
        if not (folder / SURFACE).is_file():
            raise ConfigError("--compare", str(folder), f"not a finished surface folder (no {SURFACE})")
    surfaces = [Surface.load(f, label) for f, label in zip(args.compare, labels, strict=True)]
    return f"-> {compare(surfaces, args.out)}"


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        if args.compare:
            print(_compare(args))
            return 0
        if args.run_dir is None:
            raise ConfigError("RUN_DIR", None, "give a run directory (or --compare)")
        print(_spectrum(args) if args.spectrum else _surface(args))
    except ConfigError as error:
        print(f"{PROG}: error: {error}", file=sys.stderr)
        return 2
    return 0


def cli() -> None:
    raise SystemExit(main())
