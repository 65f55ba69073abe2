"""Loss surfaces and Hessian spectra of the small VGG, Standard vs BN (a figure section, no claims).

Each hook reads the final weights of the first seed of each cell and computes what it needs once: the
surfaces (``normexp.landscape.surface``, resumable) and spectra (``normexp.landscape.curvature``) are written
under ``<run dir>/landscape/`` in folders named by their settings, and read back from there on the next call
(the plots and the tables share them; evaluating the report again computes nothing). BN is in train mode
(batch statistics of the run's batch size) for the surfaces and the spectra alike.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pandas as pd

from normexp.landscape.curvature import density, density_grid, spectrum_of_run
from normexp.landscape.figures import compare_figure
from normexp.landscape.surface import Surface, SurfaceSpec, surface_of_run
from normexp.plots import figure

LABEL = {"standard": "Standard", "bn": "BN"}
SPECTRUM_OPTIONS = ("top_k", "tol", "max_iter", "trace_samples", "slq_vectors", "slq_steps")
BLOCKS = ("model", "norm")


def _settings(ctx) -> dict:
    if ctx.profile not in ctx.params:
        raise KeyError(f"params has no entry for profile {ctx.profile!r}")
    return ctx.params[ctx.profile]


def _run_dirs(ctx) -> dict[str, Path]:
    """{cell: run dir} of the first seed of each cell whose run completed (with its model.pt)."""
    table = ctx.runs.table
    done = table[table["status"] == "completed"].sort_values("seed")
    return {cell: Path(done.loc[done["cell"] == cell, "run_dir"].iloc[0])
            for cell in LABEL if (done["cell"] == cell).any()}


def _surface(run_dir: Path, dims: int, s: dict):
    spec = SurfaceSpec(dims=dims, points=s[f"points_{dims}d"], span=float(s["span"]), bn="train",
                       subset=s["subset"])
    folder = run_dir / "landscape" / f"surface_{dims}d_{spec.points}p_span{spec.span:g}_{spec.subset}"
    if (folder / "surface.npz").exists():  # finished: read it without loading the run and its data set
        surface = Surface.load(folder)
        if all(surface.spec.get(k) == v for k, v in asdict(spec).items() if k != "batch_size"):
            return surface
    return surface_of_run(run_dir, spec, out=folder, jobs=s["jobs"], figures=False)


def _surfaces(ctx, dims: int) -> dict:
    s = _settings(ctx)
    out = {}
    for cell, run_dir in _run_dirs(ctx).items():
        surface = _surface(run_dir, dims, s)
        surface.label = LABEL[cell]
        out[cell] = surface
    return out


def _spectrum_folder(run_dir: Path, s: dict) -> Path:
    return run_dir / "landscape" / f"spectrum_train_{s['spectrum_subset']}"


def _load_spectrum(folder: Path, options: dict) -> dict | None:
    """The spectrum written by ``spectrum_of_run`` in ``folder`` if it was computed with ``options``."""
    summary_file = folder / "spectrum.json"
    if not summary_file.exists():
        return None
    summary = json.loads(summary_file.read_text())  # the options, with "blocks" holding the results
    if any(summary.get(k) != v for k, v in options.items() if k != "blocks"):
        return None
    with np.load(folder / "spectrum.npz") as arrays:
        return {block: {**r, **{k: list(arrays[f"{block}/{k}"]) for k in ("nodes", "weights")}}
                for block, r in summary["blocks"].items()}


def _spectra(ctx) -> dict[str, dict]:
    """{cell: {block: spectrum}} for the whole model and (BN) the norm layers' gains and shifts."""
    s = _settings(ctx)
    options = {"bn": "train", "blocks": list(BLOCKS), **{k: s[k] for k in SPECTRUM_OPTIONS}}
    out = {}
    for cell, run_dir in _run_dirs(ctx).items():
        folder = _spectrum_folder(run_dir, s)
        out[cell] = _load_spectrum(folder, options) or spectrum_of_run(
            run_dir, folder, subset=s["spectrum_subset"], **(options | {"blocks": BLOCKS}))
    return out


# ---------------------------------------------------------------- figures

def surface_1d(ctx):
    """Train and test loss (log scale) and accuracy along one filter-normalized direction, same y range."""
    return compare_figure(list(_surfaces(ctx, 1).values()))


def surface_2d(ctx):
    """log10 train loss on a filter-normalized plane, Standard and BN on one colour scale."""
    return compare_figure(list(_surfaces(ctx, 2).values()))


def hessian_density(ctx):
    """Spectral density (SLQ) of the Hessian: the whole model, Standard vs BN (left); BN's norm parameters
    alone (right)."""
    spectra = _spectra(ctx)
    fig, axes = figure(1, 2, width=4.2, height=3.2)
    panels = [(axes[0, 0], "whole model", [(LABEL[c], r["model"]) for c, r in spectra.items()]),
              (axes[0, 1], "BN's gains and shifts", [(LABEL[c], r["norm"]) for c, r in spectra.items()
                                                      if "norm" in r])]
    for ax, title, curves in panels:
        for label, r in curves:
            grid, sigma = density_grid(r["nodes"])
            ax.semilogy(grid, np.maximum(density(r["nodes"], r["weights"], grid, sigma), 1e-12),
                        label=f"{label}: top {r['top'][0]:.3g}, trace {r['trace']:.3g}")
        ax.set_ylim(bottom=1e-8)
        ax.set(xlabel="Hessian eigenvalue", ylabel="density", title=title)
        if curves:
            ax.legend(fontsize=7)
    return fig


# ---------------------------------------------------------------- tables

def hessian_table(ctx) -> pd.DataFrame:
    """Per cell and parameter block: size, top-k eigenvalues (Lanczos), Hessian-vector products Lanczos
    used, Hutchinson's trace and its standard error."""
    rows = []
    for cell, blocks in _spectra(ctx).items():
        for block, r in blocks.items():
            rows.append({"cell": cell, "block": block, "parameters": r["size"], "top1": r["top"][0],
                         "top_k": " ".join(f"{v:.4g}" for v in r["top"]), "lanczos_hvps": r["top_products"],
                         "trace": r["trace"], "trace_stderr": r["trace_stderr"]})
    return pd.DataFrame(rows)


def surface_table(ctx) -> pd.DataFrame:
    """Per cell and surface: train loss at the trained weights, its minimum and maximum over the grid, and
    the train accuracy at the centre."""
    rows = []
    for dims in (1, 2):
        for cell, surface in _surfaces(ctx, dims).items():
            loss, acc = surface.values["train_loss"], surface.values["train_acc"]
            centre = tuple(n // 2 for n in loss.shape)
            rows.append({"cell": cell, "surface": f"{dims}D {'x'.join(map(str, loss.shape))}",
                         "span": surface.spec["span"], "subset": surface.spec["subset"],
                         "loss_centre": loss[centre], "loss_min": np.nanmin(loss),
                         "loss_max": np.nanmax(loss), "acc_centre": acc[centre]})
    return pd.DataFrame(rows)
