"""What the hook files of vgg_dln.yaml share: cell names, labels and colours, and panel helpers drawn like the
paper's figures (seed mean line with the min-max band over seeds)."""

from __future__ import annotations

import numpy as np

from normexp.claims import value_at
from normexp.plots import seed_band, seed_curves

LABEL = {"std": "Standard", "bn": "Standard + BatchNorm", "noisy_bn": "Standard + \"Noisy\" BatchNorm",
         "std_noise": "Standard + noise", "l1": "l1 norm", "l2": "l2 norm", "linf": "linf norm"}
COLOR = {"std": "tab:blue", "bn": "tab:orange", "noisy_bn": "tab:green", "std_noise": "tab:purple",
         "l1": "tab:red", "l2": "tab:brown", "linf": "tab:gray"}
VGG_LR, DLN_LR = "0.1", "1e-06"


def vgg(kind: str, lr: str = VGG_LR) -> str:
    return f"{kind}_lr{lr}"


def dln(kind: str, lr: str = DLN_LR) -> str:
    return f"dln_{kind}_lr{lr}"


def train_acc_at(runs, fraction: float):
    """A row -> the logged training accuracy at ``fraction`` of that run's own planned steps (the last record
    at or before; the spec's runs differ in length: the VGG's steps, the DLN's 10,000)."""
    def at(row) -> float:
        step = int(round(fraction * float(row["planned_steps"])))
        return value_at(runs.curve(row["cell"], row["seed"], split="train"), step)
    return at


def band(ax, runs, cell: str, column: str, kind: str, split: str = "test", probe: str | None = None,
         **kw) -> None:
    """One cell's curve: seed mean with the min-max band over seeds (nothing when the cell has no runs)."""
    if runs.has(cell):
        seed_band(ax, runs, cell, column, split=split, probe=probe, label=LABEL[kind], color=COLOR[kind],
                  **kw)


def range_band(ax, runs, cell: str, low: str, high: str, kind: str, probe: str) -> None:
    """The paper's Fig 4 shading: the range between two probe columns (e.g. the smallest and largest loss
    along the gradient), each averaged over the seeds."""
    if not runs.has(cell):
        return
    lo, _ = seed_curves(runs, cell, low, split="probe", probe=probe)
    hi, _ = seed_curves(runs, cell, high, split="probe", probe=probe)
    if lo.empty or hi.empty:
        return
    ax.fill_between(lo.index, lo.mean(axis=1), hi.mean(axis=1), color=COLOR[kind], alpha=0.35, lw=0,
                    label=LABEL[kind])


def layer_columns(runs, cell: str, probe: str, quantity: str) -> list[str]:
    """The probe's per-layer columns ``{layer}/{quantity}`` in layer order (the aggregate ``median/`` left
    out)."""
    curves = runs.curves
    if curves.empty or "probe" not in curves:
        return []
    sub = curves[(curves["cell"] == cell) & (curves["probe"] == probe)].dropna(axis=1, how="all")
    return [c for c in sub.columns if str(c).endswith("/" + quantity) and not str(c).startswith("median/")]


def two_layers(columns: list[str]) -> list[str]:
    """Two layers to draw, as the paper shows two: at about a third and two thirds of the depth."""
    if len(columns) < 2:
        return columns
    idx = sorted({int(np.clip(round(f * (len(columns) - 1)), 0, len(columns) - 1)) for f in (1 / 3, 2 / 3)})
    return [columns[i] for i in idx]
