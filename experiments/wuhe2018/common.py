"""What the Wu & He experiments share: the cells of the ResNet runs (built here so that the same cell in
two experiments has the same overrides, and normexp-reproduce trains it once for both), error numbers, the
paper's own numbers, and the error-vs-N figure."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from normexp.claims import Cell, error_percent, format_value
from normexp.claims.regime import Regime, check_regime
from normexp.plots import seed_band

# the paper's ImageNet validation error (%), ResNet-50 (docs/claims.md, Wu & He 2018)
PAPER_BY_N = {"BN": {32: 23.6, 16: 23.7, 8: 24.8, 4: 27.3, 2: 34.7},
              "GN": {32: 24.1, 16: 24.2, 8: 24.0, 4: 24.2, 2: 24.1}}
PAPER_BY_NORM = {"BN": 23.6, "LN": 25.3, "IN": 28.4, "GN": 24.1}
PAPER_BY_GROUPS = {64: 24.6, 32: 24.1, 16: 24.6, 8: 24.4, 4: 24.6, 2: 24.7, 1: 25.3}
PAPER_RENORM = {"BN": 27.3, "BRN": 26.3, "GN": 24.2}

NORMS = {  # cell prefix -> the overrides of that normalization
    "bn": ["norm=ghost_batch"],  # BN with statistics per virtual device (norm.virtual_devices = devices)
    "gn": ["norm=group"],        # G = params.gn_groups
    "ln": ["norm=layer"],
    "in": ["norm=instance"],
    "brn": ["norm=batch_renorm"],
    "bn_plain": ["norm=batch"],  # plain BN over the whole (optimizer) batch: D = 1
}
LABELS = {"bn": "BN", "gn": "GN", "ln": "LN", "in": "IN", "brn": "BRN", "bn_plain": "BN, D = 1"}


def cell(ctx, norm: str, n: int, extra: tuple[str, ...] = (), name: str | None = None,
         devices: int | None = None) -> dict:
    """One ResNet cell at N images per (virtual) device: the optimizer batch is D x N (D = 1 for plain BN;
    ``devices``, default ``params.devices``) and the lr is ``base_lr`` x (D x N) / (params.devices x 32):
    base_lr x N / 32 at D = params.devices (the paper's rule), the same lr per image of the optimizer batch
    at any other D."""
    p = ctx.params
    devices = 1 if norm == "bn_plain" else int(devices or p["devices"])
    lr = float(p["base_lr"][ctx.profile]) * devices * n / (int(p["devices"]) * 32)
    per_slice = [f"norm.virtual_devices={devices}"] if norm in ("bn", "brn") else []
    if norm == "gn" and not any(o.startswith("norm.groups=") for o in extra):
        per_slice = [f"norm.groups={p['gn_groups'][ctx.profile]}"]
    # images per run, where a profile gives them (part of an epoch; a folder not read before planning): as
    # steps, the same images for every N
    images = (p.get("train_images") or {}).get(ctx.profile)
    steps = [f"train.steps={int(images) // (devices * n)}"] if images else []
    return {"name": name or f"{norm}_n{n}",
            "overrides": [*p["resnet"][ctx.profile], *NORMS[norm], *per_slice, *extra,
                          f"data.batch_size={devices * n}", f"optim.lr={format_value(lr)}", *steps]}


SWEEP_NORMS = ("bn", "gn")  # the norms trained at every N: R2 compares each one across N


def sizes(ctx) -> list[int]:
    """The N of the batch sweep at this profile."""
    return [int(n) for n in ctx.params["per_device"][ctx.profile]]


def with_sweep_cells(ctx, cells: list[dict]) -> list[dict]:
    """``cells`` plus BN and GN at every N of the sweep, so that a claim on some of them can check R2 across
    N. They are the batch sweep's runs (the same overrides): trained once."""
    sweep = [cell(ctx, norm, n) for n in sorted(sizes(ctx), reverse=True) for norm in SWEEP_NORMS]
    return list({c["name"]: c for c in [*cells, *sweep]}.values())


def regime(ctx, used: list[str]) -> Regime:
    """R1 for the cells a claim uses, R2 for those of BN and GN across the N this experiment trained."""
    names = list(dict.fromkeys(ctx.runs.table["cell"])) if len(ctx.runs.table) else []
    groups = [[n for n in names if n.startswith(f"{norm}_n") and n[len(norm) + 2:].isdigit()]
              for norm in SWEEP_NORMS]
    return check_regime(ctx.runs, used, groups)


def completed_run_dirs(runs, name: str) -> tuple[str, ...]:
    """Run dirs of the cell's completed runs that saved their weights (model.pt)."""
    rows = runs.rows(name)
    if "run_dir" not in rows:
        return ()
    dirs = rows.loc[rows["status"] == "completed", "run_dir"].astype(str)
    return tuple(d for d in dirs if (Path(d) / "model.pt").exists())


def error_cell(runs, name: str, label: str | None = None) -> Cell:
    return runs.cell(name, error_percent, label or f"{name} error %")


def mean_error(runs, name: str) -> float:
    c = error_cell(runs, name)
    return c.mean if c.values else math.nan


def fmt(x: float) -> str:
    return "" if x is None or not math.isfinite(x) else f"{x:.1f}"


def by_n_table(rows: dict[str, dict[int, float]], sizes: list[int], paper: dict[str, dict[int, float]]
               ) -> pd.DataFrame:
    """The paper's layout: one row per method, one column per N; the paper's rows below ours."""
    out = [{"source": "ours", "method": label, **{f"N={n}": fmt(values.get(n, math.nan)) for n in sizes}}
           for label, values in rows.items()]
    out += [{"source": "paper (ImageNet)", "method": label, **{f"N={n}": fmt(v) for n, v in values.items()}}
            for label, values in paper.items()]
    return pd.DataFrame(out)


def error_vs_n(ax, runs, norms: list[str], sizes: list[int], extra: dict | None = None):
    """Error (%) vs images per device on a log2 axis; seed mean with the min-max band."""
    for norm in norms:
        ns = [n for n in sizes if runs.has(f"{norm}_n{n}")]
        cells = [error_cell(runs, f"{norm}_n{n}") for n in ns]
        mean = [c.mean if c.values else np.nan for c in cells]
        line = ax.plot(ns, mean, marker="o", label=LABELS[norm])[0]
        low = [min(c.values) if c.values else np.nan for c in cells]
        high = [max(c.values) if c.values else np.nan for c in cells]
        ax.fill_between(ns, low, high, alpha=0.2, color=line.get_color())
    for label, values in (extra or {}).items():
        ns = sorted(values)
        ax.plot(ns, [values[n] for n in ns], marker="s", linestyle="--", label=label)
    ax.set_xscale("log", base=2)
    ax.set_xticks(sizes, [str(n) for n in sizes])
    ax.invert_xaxis()
    ax.set(xlabel="images per (virtual) device, N", ylabel="test error (%)")
    ax.legend(fontsize=8)


def error_curves(ax, runs, cells: dict[str, str], split: str = "test"):
    """Error (%) over training steps, one line per cell (seed mean, min-max band)."""
    curves = runs.curves
    if len(curves) and "acc" in curves:
        runs.curves = curves.assign(err=100.0 * (1.0 - curves["acc"]))
    for name, label in cells.items():
        if runs.has(name):
            seed_band(ax, runs, name, "err", split=split, label=label)
    ax.set(xlabel="training steps", ylabel=f"{'validation' if split == 'test' else 'training'} error (%)")
    ax.legend(fontsize=7)


def method_table(runs, cells: dict[str, str], paper: dict[str, float]) -> pd.DataFrame:
    """One row per cell: its label, our error (%) seed mean and spread, and the paper's number."""
    rows = []
    for name, label in cells.items():
        c = error_cell(runs, name)
        rows.append({"method": label, "ours": fmt(c.mean) if c.values else c.state,
                     "ours spread": fmt(c.spread) if c.values else "", "paper (ImageNet)": paper.get(label)})
    return pd.DataFrame(rows)
