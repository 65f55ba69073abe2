"""Figures of surfaces and spectra: a 1D curve (loss and accuracy, train and test), a 2D contour of log10
loss with a 3D view, several runs side by side on one colour scale, and the Hessian's spectral density."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from normexp.errors import ConfigError
from normexp.plots import figure, plt


def _log_loss(surface, key: str) -> np.ndarray:
    return np.log10(np.maximum(surface.values[key], 1e-12))


def _curve(ax, surface, key: str = "loss") -> None:
    for split, style in (("train", "-"), ("test", "--")):
        ax.plot(surface.axis, surface.values[f"{split}_loss"], style, color="C0", label=f"{split} loss")
    ax.set_yscale("log")
    ax.set_xlabel("alpha (filter-normalized direction)")
    ax.set_ylabel("loss")
    if np.isfinite(surface.values["train_acc"]).any():
        acc = ax.twinx()
        for split, style in (("train", "-"), ("test", "--")):
            acc.plot(surface.axis, surface.values[f"{split}_acc"], style, color="C1", label=f"{split} acc")
        acc.set_ylim(0, 1)
        acc.set_ylabel("accuracy", color="C1")
    ax.legend(loc="upper center", fontsize=7)
    ax.set_title(surface.label, fontsize=9)


def _contour(ax, surface, levels, key: str = "train_loss"):
    a = surface.axis
    filled = ax.contourf(a, a, _log_loss(surface, key).T, levels=levels, cmap="viridis", extend="both")
    ax.contour(a, a, _log_loss(surface, key).T, levels=levels, colors="k", linewidths=0.3)
    ax.plot([0], [0], "r+", ms=8)
    ax.set_xlabel("alpha (d1)")
    ax.set_ylabel("beta (d2)")
    ax.set_aspect("equal")
    ax.set_title(surface.label, fontsize=9)
    return filled


def _levels(surfaces, key: str, count: int = 25) -> np.ndarray:
    values = np.concatenate([_log_loss(s, key).ravel() for s in surfaces])
    values = values[np.isfinite(values)]
    return np.linspace(values.min(), values.max(), count) if np.ptp(values) > 0 else count


def draw_surface(surface, folder) -> list[Path]:
    """``curve.png`` (1D) or ``contour.png`` and ``surface3d.png`` (2D) in ``folder``; returns the paths."""
    folder = Path(folder)
    if surface.dims == 1:
        fig, axes = figure()
        _curve(axes[0, 0], surface)
        paths = [folder / "curve.png"]
        fig.savefig(paths[0], dpi=120, bbox_inches="tight")
        plt.close(fig)
        return paths
    fig, axes = figure(width=4.2, height=3.8)
    filled = _contour(axes[0, 0], surface, _levels([surface], "train_loss"))
    fig.colorbar(filled, ax=axes[0, 0], label="log10 train loss")
    fig.savefig(folder / "contour.png", dpi=120, bbox_inches="tight")
    plt.close(fig)
    fig = plt.figure(figsize=(5, 4))
    ax = fig.add_subplot(projection="3d")
    a, b = np.meshgrid(surface.axis, surface.axis, indexing="ij")
    ax.plot_surface(a, b, _log_loss(surface, "train_loss"), cmap="viridis", linewidth=0)
    ax.set_xlabel("alpha")
    ax.set_ylabel("beta")
    ax.set_zlabel("log10 train loss")
    ax.set_title(surface.label, fontsize=9)
    fig.savefig(folder / "surface3d.png", dpi=120, bbox_inches="tight")
    plt.close(fig)
    return [folder / "contour.png", folder / "surface3d.png"]


def compare(surfaces, path, key: str = "train_loss") -> Path:
    """The surfaces side by side (e.g. BN and Standard), on one colour scale (2D) or one y range (1D)."""
    fig = compare_figure(surfaces, key)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)
    return path


def compare_figure(surfaces, key: str = "train_loss"):
    """The matplotlib Figure of :func:`compare`."""
    dims = {s.dims for s in surfaces}
    if len(dims) != 1:
        raise ConfigError("--compare", [s.label for s in surfaces], "surfaces must have the same --dims")
    fig, axes = figure(1, len(surfaces), width=4.2, height=3.8, sharey=True)
    if dims == {1}:
        for ax, s in zip(axes[0], surfaces, strict=True):
            _curve(ax, s)
    else:
        levels = _levels(surfaces, key)
        for ax, s in zip(axes[0], surfaces, strict=True):
            filled = _contour(ax, s, levels, key)
        fig.colorbar(filled, ax=list(axes[0]), label=f"log10 {key.replace('_', ' ')}")
    return fig


def draw_density(results: dict, curves: dict, path) -> Path:
    """Each block's spectral density (log scale, as Ghorbani et al. plot it), one panel per block; ``curves``:
    {block: (grid, density)}, ``results``: the spectrum's blocks (their top eigenvalue and trace)."""
    fig, axes = figure(1, len(results), width=4.0, height=3.0)
    for ax, (name, r) in zip(axes[0], results.items(), strict=True):
        grid, values = curves[name]
        ax.semilogy(grid, np.maximum(values, 1e-12))
        ax.set_ylim(bottom=1e-8)
        ax.set_xlabel("eigenvalue")
        ax.set_title(f"{name} (top {r['top'][0]:.3g}, trace {r['trace']:.3g})", fontsize=9)
    axes[0, 0].set_ylabel("density")
    path = Path(path)
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)
    return path
