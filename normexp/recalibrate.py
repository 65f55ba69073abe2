"""normexp-recalibrate: recompute a trained run's BN population statistics and compare test error before
and after (Wu & Johnson 2021, "Rethinking 'Batch' in BatchNorm").

    normexp-recalibrate RUN_DIR [--data KEY=VALUE ...] [--samples K] [--batch-size B]
                        [--estimator precise|ioffe] [--source train|test] [--out DIR] [--device cpu|cuda|auto]

Loads RUN_DIR's config.yaml and model.pt (a run trained with train.save_final=true), applies the --data
overrides to the run's data.* keys (Hydra style: --data test_subset=500), recomputes the statistics of every
BN layer (not frozen_batch's) on K images in batches of B (default: the run's data.batch_size) and evaluates
the test set with the running statistics (before) and the recomputed ones (after). --source train (default):
K fixed clean training images (no augmentation; the set of train.eval_train_images); --source test: the
first K test images, unlabeled (a target domain's own images, as Schneider et al. 2020 recalibrate on a
corrupted test set); the whole test set is evaluated either way. Writes DIR/recalibrated.pt (a state dict
as model.pt: train.init_from takes it) and DIR/recalibrate.csv, and prints the table; DIR defaults to
RUN_DIR/recalibrate.
"""

from __future__ import annotations

import argparse
import copy
import sys
from pathlib import Path

import pandas as pd
from omegaconf import OmegaConf

from normexp.checkpoint import save_weights
from normexp.compose import declared_keys
from normexp.config import SCHEMA
from normexp.errors import ConfigError, OneLineParser, choices
from normexp.evaluation import check_stats_batch, evaluate, whole_batches
from normexp.landscape.run import load_run
from normexp.norms import (
    NORMS,
    POPULATION_ESTIMATORS,
    BatchNorm,
    NormSpec,
    recompute_running_stats,
    statistics_layers,
)
from normexp.records import CONFIG, MODEL, atomic_write_text
from normexp.runtime import make_loss

PROG = "normexp-recalibrate"
SOURCES = ("train", "test")
WEIGHTS, TABLE = "recalibrated.pt", "recalibrate.csv"


def parser() -> argparse.ArgumentParser:
    p = OneLineParser(prog=PROG, description=__doc__.splitlines()[0], epilog=__doc__.split("\n\n", 1)[1],
                      formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run_dir", type=Path, help="a run directory with config.yaml and model.pt")
    p.add_argument("--data", nargs="+", action="extend", default=[], metavar="KEY=VALUE",
                   help="overrides of the run's data.* keys")
    p.add_argument("--samples", type=int, default=8192, help="images the statistics are computed on (K)")
    p.add_argument("--batch-size", type=int, default=0, help="batch size B (default: the run's)")
    p.add_argument("--estimator", default="precise", help="precise (default; fvcore's PreciseBN) or ioffe")
    p.add_argument("--source", default="train", help="train (default) or test")
    p.add_argument("--out", type=Path, help="output folder (default RUN_DIR/recalibrate)")
    p.add_argument("--device", default="cpu", help="auto, cpu or cuda (default cpu)")
    return p


def apply_data_overrides(cfg, items: list[str]):
    """``cfg`` with ``KEY=VALUE`` overrides of its data.* keys (values read as YAML, as Hydra reads them);
    each key must be one the run's data group declares."""
    name = cfg.data.name
    allowed = [k for k in declared_keys("data", name) if k != "name"]
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or key not in allowed:
            raise ConfigError(f"--data {key}" if sep else "--data", value if sep else item,
                              f"give KEY=VALUE with a key of data={name}: {', '.join(allowed)}")
    cfg = OmegaConf.merge(cfg, OmegaConf.from_dotlist([f"data.{item}" for item in items]))
    for item in items:
        key = f"data.{item.partition('=')[0]}"
        if key in SCHEMA:
            SCHEMA[key](key, OmegaConf.select(cfg, key))
    return cfg


def _check_arguments(args) -> None:
    if args.estimator not in POPULATION_ESTIMATORS:
        raise ConfigError("--estimator", args.estimator, choices(POPULATION_ESTIMATORS))
    if args.source not in SOURCES:
        raise ConfigError("--source", args.source, choices(SOURCES))
    for key, value, least in (("--samples", args.samples, 1), ("--batch-size", args.batch_size, 0)):
        if value < least:
            raise ConfigError(key, value, f"must be an integer >= {least}")
    for name in (CONFIG, MODEL):
        if not (args.run_dir / name).is_file():
            raise ConfigError("RUN_DIR", str(args.run_dir), f"has no {name}: give the folder of a run "
                              "trained with train.save_final=true")


def _recalibration_batches(data, source: str, samples: int, batch: int) -> tuple[list, int]:
    """The images the statistics are recomputed on, as x batches, and how many they are."""
    if source == "train":
        images, batch = whole_batches(samples, data.n_train, batch)
        return [x for x, _ in data.clean_train_batches(images, batch)], images
    images, batch = whole_batches(samples, len(data.y_test), batch)
    return list(data.target_batches(images, batch)), images  # the K target images WJ-4 recalibrates on


def recalibrate(args) -> pd.DataFrame:
    """The table of ``args`` (see the module's doc); writes the weights and the table."""
    _check_arguments(args)
    cfg = apply_data_overrides(OmegaConf.load(args.run_dir / CONFIG), args.data)
    run = load_run(args.run_dir, "model", args.device, cfg=cfg)
    layers = statistics_layers(run.model)
    if not layers:
        kinds = [n for n, c in NORMS.items() if issubclass(c, BatchNorm) and c.uses_batch_statistics]
        raise ConfigError("norm.name", cfg.norm.name, f"the model of {args.run_dir} has no layers with "
                          "population statistics to recompute; give a run with norm= one of: "
                          + ", ".join(kinds))
    batch = args.batch_size or int(cfg.data.batch_size)
    check_stats_batch("--batch-size", batch, NormSpec.from_config(cfg.norm))
    batches, images = _recalibration_batches(run.data, args.source, args.samples, batch)
    recalibrated = copy.deepcopy(run.model)
    try:
        recompute_running_stats(recalibrated, batches, statistics_layers(recalibrated), args.estimator)
    except ConfigError as error:  # the estimator cannot estimate a layer (lp with precise)
        raise ConfigError("--estimator", args.estimator, error.allowed) from None
    loss_fn = make_loss(run.data.info.task, cfg.data.get("reduction", "mean"))
    settings = {"estimator": args.estimator, "samples": images, "batch_size": min(batch, images),
                "source": args.source, "data": " ".join(args.data)}
    rows = [{"statistics": "running", **_test_values(run, run.model, loss_fn)},
            {"statistics": "recalibrated", **_test_values(run, recalibrated, loss_fn), **settings}]
    out = args.out or args.run_dir / "recalibrate"
    out.mkdir(parents=True, exist_ok=True)
    save_weights(out, recalibrated, WEIGHTS)
    table = pd.DataFrame(rows, columns=["statistics", "test_error", "test_loss", *settings],
                         dtype=object)
    atomic_write_text(out / TABLE, table.to_csv(index=False))
    return table


def _test_values(run, model, loss_fn) -> dict:
    values = evaluate(model, run.data.test_batches(), loss_fn, run.classify)
    return {"test_error": 1 - values["acc"] if "acc" in values else None, "test_loss": values["loss"]}


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        table = recalibrate(args)
    except ConfigError as error:
        print(f"{PROG}: error: {error}", file=sys.stderr)
        return 2
    print(table.to_string(index=False, na_rep=""))
    print(f"-> {args.out or args.run_dir / 'recalibrate'}")
    return 0


def cli() -> None:
    raise SystemExit(main())


if __name__ == "__main__":
    cli()
