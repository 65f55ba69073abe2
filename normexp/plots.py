"""Plot helpers for the reproduction figures: curves as seed mean and spread, diverged runs marked.

Each helper draws on a matplotlib ``Axes`` from an experiment's :class:`normexp.claims.Runs`; the
experiments' plot hooks compose them into the papers' panels.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import matplotlib.transforms as mtransforms  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from normexp.errors import ConfigError, choices  # noqa: E402
from normexp.results import aggregate, group_keys, load_metrics, load_runs, swept_columns  # noqa: E402

DIVERGED_MARKER = {"marker": "x", "s": 40, "linewidths": 1.5, "zorder": 5}


def figure(rows: int = 1, cols: int = 1, width: float = 4.6, height: float = 3.4, **kw):
    return plt.subplots(rows, cols, figsize=(width * cols, height * rows), squeeze=False, **kw)


def save_figure(fig, stem, command: str, dpi: int = 130) -> list[Path]:
    """``stem``.png and ``stem``.pdf, each with the command that made it in its metadata (PNG text chunk
    ``Command``; PDF ``Subject``), then close the figure."""
    stem = Path(stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    paths = []
    for ext, metadata in (("png", {"Command": command, "Software": "normexp"}),
                          ("pdf", {"Subject": command, "Creator": "normexp"})):
        path = stem.with_name(f"{stem.name}.{ext}")
        fig.savefig(path, dpi=dpi, bbox_inches="tight", metadata=metadata)
        paths.append(path)
    plt.close(fig)
    return paths


def mark_diverged_at_top(ax, xs, color) -> None:
    """An x at the top of the panel at each of ``xs`` (runs that diverged have no value to plot); the x axis
    is widened to show them."""
    xs = np.asarray(list(xs), dtype=float)
    if not len(xs):
        return
    top = mtransforms.blended_transform_factory(ax.transData, ax.transAxes)
    ax.scatter(xs, np.full(len(xs), 0.97), transform=top, color=color, clip_on=False, **DIVERGED_MARKER)
    ax.dataLim.update_from_data_xy(np.column_stack([xs, np.zeros(len(xs))]), ignore=False, updatey=False)
    ax.autoscale_view()


def mean_band(ax, x, mean, low=None, high=None, label=None, color=None, linestyle="-", marker=None):
    """A line of means with a shaded band from ``low`` to ``high`` (drawn where they differ); returns the
    line's color."""
    line, = ax.plot(x, mean, color=color, linestyle=linestyle, marker=marker, label=label)
    if low is not None and high is not None:
        ax.fill_between(x, low, high, color=line.get_color(), alpha=0.2, lw=0)
    return line.get_color()


def seed_curves(runs, cell: str, column: str, split: str = "test", probe: str | None = None):
    """(steps x seeds table of the seeds that completed, {seed: (curve, divergence step)} of those that
    diverged)."""
    done, diverged = {}, {}
    for _, row in runs.rows(cell).iterrows():
        curve = runs.curve(cell, row["seed"], split=split, probe=probe)
        if column not in curve:
            continue
        series = curve.set_index("step")[column].astype(float)
        series = series[~series.index.duplicated(keep="last")]
        if row["status"] == "completed":
            done[row["seed"]] = series.dropna()  # a record without this value (e.g. an extra probe call)
        elif row["status"] == "diverged":
            at = row.get("diverged_step")
            diverged[row["seed"]] = (series, at if pd.notna(at) else (series.index[-1] if len(series) else 0))
    return pd.DataFrame(done), diverged


def seed_band(ax, runs, cell: str, column: str = "acc", split: str = "test", probe: str | None = None,
              label: str | None = None, color=None, linestyle="-", mark_diverged: bool = True):
    """Mean over the seeds that completed (line) with their min-max band; a diverged seed is drawn thin up
    to its last record and marked with an x. Returns the line's color."""
    table, diverged = seed_curves(runs, cell, column, split, probe)
    n = table.shape[1]
    text = f"{label or cell} ({n} seed{'s' if n != 1 else ''}" + (f", {len(diverged)} diverged)"
                                                                  if diverged else ")")
    if n:
        color = mean_band(ax, table.index, table.mean(axis=1), *((table.min(axis=1), table.max(axis=1))
                                                                 if n > 1 else ()), label=text, color=color,
                          linestyle=linestyle)
    for i, (series, at) in enumerate(diverged.values()):
        if mark_diverged and len(series):
            line, = ax.plot(series.index, series.values, color=color, lw=0.8, alpha=0.7, linestyle=":",
                            label=None if (n or i) else text)
            color = line.get_color()
            ax.scatter([at], [series.values[-1]], color=color, **DIVERGED_MARKER)
    return color


def note_diverged(ax, runs) -> None:
    """A key for the x markers, on panels of experiments where some run diverged."""
    if not (runs.table["status"] == "diverged").any():
        return
    ax.text(0.99, 0.01, "x: run diverged", transform=ax.transAxes, ha="right", va="bottom", fontsize=7,
            color="0.4")


# ---------------------------------------------------------------- normexp-plot: figures of any sweep

METRIC_CURVES = {"test_acc": ("test", "acc"), "test_loss": ("test", "loss"), "train_acc": ("train", "acc"),
                 "train_loss": ("train", "loss")}


def _numeric(values: pd.Series) -> pd.Series | None:
    numbers = pd.to_numeric(values, errors="coerce")
    return numbers if numbers.notna().all() else None


def default_axes(table: pd.DataFrame, x: str | None, hue: str | None) -> tuple[str, str | None]:
    """What the sweep swept: ``x`` defaults to a numeric swept key (a batch size or lr first), ``hue`` to the
    next swept key."""
    swept = [k for k in swept_columns(table) if k != "seed" and k not in (x, hue)]
    if x is None:
        numeric = [k for k in swept if _numeric(table[k]) is not None]
        ranked = sorted(numeric, key=lambda k: not ("batch_size" in k or k.endswith("lr")))
        x = (ranked or swept or [None])[0]
        if x is None:
            raise ConfigError("--x", None, "the runs sweep no key (besides seed): name one with --x")
        swept.remove(x)
    if hue is None and swept:
        hue = swept[0]
    return x, hue


def sweep_figure(table: pd.DataFrame, x: str, hue: str | None, y: str):
    """``y`` (seed mean, min-max band over completed runs) against ``x``, one line per value of ``hue``; an x
    at the top where runs diverged. Log2 axis for positive numbers spanning more than 4x."""
    agg = aggregate(table, [k for k in (hue, x) if k], [y], stats=("mean", "min", "max"))
    numbers = _numeric(agg[x])
    order = list(dict.fromkeys(agg[x]))
    agg["_pos"] = numbers if numbers is not None else agg[x].map(order.index)
    fig, axes = figure(width=5.0, height=3.6)
    ax = axes[0][0]
    for value, g in (agg.groupby(hue, sort=False, dropna=False) if hue else [(None, agg)]):
        g = g.sort_values("_pos")
        done = g[g["completed"] > 0]
        n = int(g["runs"].max()) if len(g) else 0
        some = "up to " if g["runs"].nunique() > 1 else ""
        label = (f"{hue}={value}" if hue else y) + f" ({some}{n} run{'s' if n != 1 else ''} per point)"
        color = mean_band(ax, done["_pos"], done[f"{y}_mean"], done[f"{y}_min"], done[f"{y}_max"],
                          label=label, marker="o")
        mark_diverged_at_top(ax, g.loc[g["diverged"] > 0, "_pos"], color)
    if numbers is not None and (numbers > 0).all() and numbers.max() > 4 * numbers.min():
        ax.set_xscale("log", base=2)
    if numbers is None:
        ax.set_xticks(range(len(order)), [str(v) for v in order])
    ax.set_xlabel(x)
    ax.set_ylabel(f"final {y.replace('_', ' ')}")
    ax.legend(fontsize=7, title="x at top: diverged runs" if (agg["diverged"] > 0).any() else None,
              title_fontsize=7)
    return fig


def curves_figure(table: pd.DataFrame, x: str, hue: str | None, y: str):
    """``y`` against steps, one panel per value of ``x``, one line per value of ``hue`` (seed mean and min-max
    band, diverged runs dotted with an x where they stopped)."""
    from normexp.claims import Runs  # lazy: torch

    split, column = METRIC_CURVES[y]
    label = table[hue].map(lambda v: f"{hue}={v}") if hue else pd.Series(y, index=table.index)
    runs_table = table.assign(cell=label, seed=range(len(table)))
    curves = load_metrics(list(runs_table["run_dir"]))
    curves = curves.join(runs_table.set_index("run_dir")[["cell", "seed"]], on="run_dir")
    panels = list(dict.fromkeys(table[x]))
    fig, axes = figure(1, len(panels), width=3.8, height=3.2, sharey=True)
    for ax, value in zip(axes[0], panels, strict=True):
        rows = runs_table[runs_table[x] == value]
        runs = Runs(rows, curves[curves["seed"].isin(rows["seed"])])
        for cell in dict.fromkeys(rows["cell"]):
            seed_band(ax, runs, cell, column, split)
        ax.set_title(f"{x}={value}", fontsize=9)
        ax.set_xlabel("step")
        ax.legend(fontsize=6)
    axes[0][0].set_ylabel(f"{split} {column}")
    return fig


def plot_args(argv=None):
    p = argparse.ArgumentParser(prog="normexp-plot", description="Figures of a sweep: a final metric against "
                                "one swept key, one line per value of another; its curves vs steps")
    p.add_argument("dir", type=Path, help="a multirun sweep dir or any folder of runs")
    p.add_argument("--x", help="the swept key on the x axis (default: a swept batch size or lr, else the "
                   "first numeric swept key)")
    p.add_argument("--hue", help="one line per value of this key (default: the next swept key)")
    p.add_argument("--y", default="test_acc", help="metric: " + ", ".join(METRIC_CURVES) + " (default "
                   "test_acc)")
    p.add_argument("--out", type=Path, help="folder for the figures (default DIR/plots)")
    return p.parse_args(argv)


def plot_main(argv=None) -> list[Path]:
    args = plot_args(argv)
    command = "normexp-plot " + " ".join(map(shlex.quote, sys.argv[1:] if argv is None else argv))
    if not args.dir.exists():
        raise ConfigError("dir", str(args.dir), "no such folder")
    table = load_runs(args.dir)
    if table.empty:
        raise ConfigError("dir", str(args.dir), "holds no runs (folders with config.yaml and meta.json)")
    if args.y not in METRIC_CURVES:
        raise ConfigError("--y", args.y, choices(METRIC_CURVES))
    for option, key in (("--x", args.x), ("--hue", args.hue)):
        if key is not None:
            group_keys(table, [key], option)
    x, hue = default_axes(table, args.x, args.hue)
    out = args.out or args.dir / "plots"
    paths = save_figure(sweep_figure(table, x, hue, args.y), out / f"{args.y}_vs_{x}", command)
    paths += save_figure(curves_figure(table, x, hue, args.y), out / f"{args.y}_curves_by_{x}", command)
    return paths


def cli(argv=None) -> None:
    try:
        for path in plot_main(argv):
            print(f"wrote {path}")
    except ConfigError as error:
        print(f"normexp-plot: error: {error}", file=sys.stderr)
        raise SystemExit(2) from None
