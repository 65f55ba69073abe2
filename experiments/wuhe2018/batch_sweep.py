"""Wu & He 2018, Fig 1, Table 2 and Fig 5: BN and GN across images per (virtual) device. Claim WH-1
(docs/claims.md), the table in the paper's layout, and the batch-noise diagnostic: how far the batch
statistics of N images stray from the population's, per BN layer, beside the error."""

from __future__ import annotations

import math
import re
from functools import lru_cache
from pathlib import Path

import pandas as pd

from normexp.claims import Cell, Verdict, compare, paired_difference, population_test_acc, run_batch_noise
from normexp.claims.regime import gate
from normexp.plots import figure

from .common import (
    PAPER_BY_N,
    by_n_table,
    cell,
    completed_run_dirs,
    error_cell,
    error_curves,
    error_vs_n,
    mean_error,
    regime,
    sizes,
)

NOISE_LABELS = {"mean_error": "batch mean: RMS (mean_B - mean) / std",
                "var_error": "batch var: RMS (var_B - var) / var"}


def sweep_cells(ctx) -> list[dict]:
    """bn_n<N> (BN per virtual device) and gn_n<N> at every N of the profile; bn_plain_n<N> (D = 1)."""
    cells = [cell(ctx, norm, n) for n in sizes(ctx) for norm in ("bn", "gn")]
    return cells + [cell(ctx, "bn_plain", n) for n in ctx.params["plain_per_device"][ctx.profile]]


def plain_sizes(ctx) -> list[int]:
    return [int(n) for n in ctx.params["plain_per_device"][ctx.profile]]


# ---------------------------------------------------------------- the diagnostic and population statistics

@lru_cache(maxsize=64)
def _noise(run_dir: str, ns: tuple[int, ...], images: int) -> pd.DataFrame:
    return run_batch_noise(run_dir, list(ns), images)


@lru_cache(maxsize=256)
def _population_error(run_dir: str) -> float:
    return 100.0 * (1.0 - population_test_acc(run_dir))


def noise(ctx) -> pd.DataFrame:
    """Per trained BN model (each N, each seed), the diagnostic at every N of the sweep; ``trained_n`` is
    the N the model trained at. Empty when no BN run finished."""
    frames = []
    for n in sizes(ctx):
        for d in completed_run_dirs(ctx.runs, f"bn_n{n}"):
            seed = int(ctx.runs.table.loc[ctx.runs.table["run_dir"] == d, "seed"].iloc[0])
            frames.append(_noise(d, tuple(sizes(ctx)), int(ctx.params["diagnostic_images"]))
                          .assign(trained_n=n, seed=seed))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def own_noise(ctx) -> pd.DataFrame:
    """The diagnostic of each BN model at the N it trained at, averaged over seeds: layer x N."""
    table = noise(ctx)
    if table.empty:
        return table
    own = table[table["trained_n"] == table["N"]]
    keys = ["layer", "depth", "positions", "N"]
    return own.groupby(keys, as_index=False)[["mean_error", "var_error"]].mean().sort_values(["depth", "N"])


def population_errors(ctx) -> dict[int, float]:
    """N -> seed-mean test error (%) of the BN runs at N with recomputed population statistics."""
    out = {}
    for n in sizes(ctx):
        errors = [_population_error(d) for d in completed_run_dirs(ctx.runs, f"bn_n{n}")]
        if errors:
            out[n] = sum(errors) / len(errors)
    return out


def _last_layer_noise(ctx, n: int) -> dict:
    own = own_noise(ctx)
    if own.empty or not (own["N"] == n).any():
        return {}
    row = own[own["N"] == n].sort_values("depth").iloc[-1]
    return {"layer": row["layer"], "values per batch": int(row["N"] * row["positions"]),
            "mean_error": round(float(row["mean_error"]), 4), "var_error": round(float(row["var_error"]), 4)}


# ---------------------------------------------------------------- the claim

def check_wh1(ctx) -> Verdict:
    """BN's error rises from N = 32 to N = 2 (beyond its spread) and by at least 3x max(GN's rise, 0), and at
    N = 2 GN's error is at least 2 points below BN's; inside the regime (R1, R2) or inconclusive."""
    runs = ctx.runs
    bn_rise = paired_difference(runs, "bn_n2", "bn_n32", "BN error rise N=32->2 (points)")
    gn_rise = paired_difference(runs, "gn_n2", "gn_n32", "GN error rise N=32->2 (points)")
    gn_rise_or_0 = Cell("max(GN error rise, 0) per seed", tuple(max(v, 0.0) for v in gn_rise.values),
                        gn_rise.diverged, gn_rise.missing)
    bn2, gn2 = error_cell(runs, "bn_n2", "BN error % at N=2"), error_cell(runs, "gn_n2", "GN error % at N=2")
    outcomes = [compare(bn_rise, ">", 0.0, fmt="{:.2f}"),
                compare(bn_rise, ">=", gn_rise_or_0, factor=3, fmt="{:.2f}"),
                compare(gn2, "<=", bn2, offset=-2.0, fmt="{:.2f}")]
    diag = {f"batch noise, last BN layer, N={n}": _last_layer_noise(ctx, n) for n in (2, 32)}
    pop = population_errors(ctx)
    extra = {**diag, **{f"BN error % with population statistics, N={n}": round(v, 2) for n, v in pop.items()}}
    num = lambda c: f"{c.mean:.2f}" if c.values else c.state
    noise_text = "; ".join(f"N={n}: mean {d['mean_error']:.3f}, var {d['var_error']:.3f} "
                           f"({d['values per batch']} values)" for n, d in zip((2, 32), diag.values(),
                                                                               strict=True) if d)
    sentence = (f"error rise N=32->2: BN {num(bn_rise)} vs GN {num(gn_rise)} points; at N=2 GN {num(gn2)} vs "
                f"BN {num(bn2)}%" + (f"; batch-statistics noise of the last BN layer (relative) {noise_text}"
                                     if noise_text else ""))
    cells = [bn_rise, gn_rise, gn_rise_or_0, bn2, gn2]
    verdict = Verdict.from_outcomes("WH-1", outcomes, cells, sentence, extra)
    return gate(verdict, regime(ctx, ["bn_n32", "bn_n2", "gn_n32", "gn_n2"]))


# ---------------------------------------------------------------- table and figures

def table2_error_by_n(ctx) -> pd.DataFrame:
    """Test error (%) by N: BN, GN, GN - BN (the paper's rows), then plain BN (D = 1) and BN evaluated with
    population statistics; the paper's ImageNet numbers below."""
    ns = sizes(ctx)
    rows = {"BN": {n: mean_error(ctx.runs, f"bn_n{n}") for n in ns},
            "GN": {n: mean_error(ctx.runs, f"gn_n{n}") for n in ns}}
    rows["GN - BN"] = {n: rows["GN"][n] - rows["BN"][n] for n in ns}
    rows["BN, D = 1 (batch N)"] = {n: mean_error(ctx.runs, f"bn_plain_n{n}") for n in plain_sizes(ctx)}
    rows["BN, population statistics"] = population_errors(ctx)
    bn, gn = PAPER_BY_N["BN"], PAPER_BY_N["GN"]
    paper = {**PAPER_BY_N, "GN - BN": {n: gn[n] - bn[n] for n in bn}}
    return by_n_table(rows, sorted(set(ns) | set(PAPER_BY_N["BN"]), reverse=True), paper)


def _extra_lines(ctx) -> dict[str, dict[int, float]]:
    plain = {n: mean_error(ctx.runs, f"bn_plain_n{n}") for n in plain_sizes(ctx)}
    out = {"BN, population statistics": population_errors(ctx)}
    if any(math.isfinite(v) for v in plain.values()):
        out["BN, D = 1 (batch N)"] = {n: v for n, v in plain.items() if math.isfinite(v)}
    return out


def fig1_error_vs_batch(ctx):
    """Fig 1: test error vs images per (virtual) device, BN vs GN (and plain BN, population statistics)."""
    fig, axes = figure()
    error_vs_n(axes[0, 0], ctx.runs, ["bn", "gn"], sizes(ctx), _extra_lines(ctx))
    axes[0, 0].set_title(f"Fig 1: error vs batch per device (D = {ctx.params['devices']})", fontsize=9)
    return fig


def fig5_validation_curves(ctx):
    """Fig 5: validation error over training for each N, BN (left) and GN (right)."""
    fig, axes = figure(1, 2)
    for ax, norm, label in ((axes[0, 0], "bn", "BN"), (axes[0, 1], "gn", "GN")):
        error_curves(ax, ctx.runs, {f"{norm}_n{n}": f"{label}, N={n}" for n in sizes(ctx)})
        ax.set_title(f"Fig 5: {label}, validation error by N", fontsize=9)
    fig.tight_layout()
    return fig


def batch_noise_vs_error(ctx):
    """The diagnostic: per BN layer (colour: depth), the relative error of batch means and variances of N
    images (each model at the N it trained at), beside the test error vs N."""
    import matplotlib.pyplot as plt

    fig, axes = figure(1, 3)
    own = own_noise(ctx)
    layers = own.drop_duplicates("depth") if len(own) else own
    colors = plt.cm.viridis([i / max(len(layers) - 1, 1) for i in range(len(layers))])
    for ax, key in ((axes[0, 0], "mean_error"), (axes[0, 1], "var_error")):
        for color, (_, layer) in zip(colors, layers.iterrows(), strict=True):
            rows = own[own["depth"] == layer["depth"]].sort_values("N")
            ax.plot(rows["N"], rows[key], marker="o", color=color,
                    label=f"{layer['depth']}: {layer['layer']} ({int(layer['positions'])} pos.)")
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xticks(sizes(ctx), [str(n) for n in sizes(ctx)])
        ax.invert_xaxis()
        ax.set(xlabel="images per (virtual) device, N", ylabel=NOISE_LABELS[key])
        ax.set_title("batch-statistics noise per BN layer", fontsize=9)
    if len(layers):
        axes[0, 0].legend(fontsize=6, title="BN layer (depth)", title_fontsize=6)
    error_vs_n(axes[0, 2], ctx.runs, ["bn", "gn"], sizes(ctx))
    axes[0, 2].set_title("test error vs N", fontsize=9)
    fig.tight_layout()
    return fig


def batch_noise_table(ctx) -> pd.DataFrame:
    """The diagnostic per BN layer and N (each model at the N it trained at, seed mean)."""
    own = own_noise(ctx)
    return own if len(own) else pd.DataFrame([{"note": "no finished BN run with model.pt"}])


PILOT = Path(__file__).resolve().parents[2] / "results" / "{profile}" / "wuhe2018" / "regime_pilot"
def pilot_round(designs: Path) -> int:
    """The round of a pilot's ``<name>_designs.csv``: ``pilot`` is round 1, ``round<k>`` round k."""
    name = designs.name.removesuffix("_designs.csv")
    return 1 if name == "pilot" else int(name.removeprefix("round"))


def regime_pilot(ctx) -> pd.DataFrame:
    """The regime pilot's rule measures per design (``regime_pilot.py``, committed under results/ by its own
    command; README, "The regime pilot"), every round of this profile, in order. Empty: no pilot here."""
    folder = Path(str(PILOT).format(profile=ctx.profile))
    frames = [pd.read_csv(f).assign(round=f"round {pilot_round(f)}")
              for f in sorted(folder.glob("*_designs.csv"), key=pilot_round)]
    if not frames:
        return pd.DataFrame([{"note": f"no regime pilot at profile {ctx.profile}"}])
    table = pd.concat(frames, ignore_index=True)
    return table[["round", *[c for c in table.columns if c != "round"]]]


BENCH = Path(__file__).resolve().parents[2] / "results" / "bench.md"
FIGURES = {"images/s over BN's": re.compile(r"^images/s, (?P<norm>.+?) / BN, N = (?P<n>\d+) "),
           "peak MiB of 3 steps": re.compile(r"^MiB, (?P<norm>.+?), N = (?P<n>\d+): ")}


def norm_costs(ctx) -> pd.DataFrame:
    """What each norm costs on this ResNet: the medians of ``normexp-bench --only norms`` (its CPU section in
    results/bench.md, measured side by side in one run; the GPU's beside it in results/gpu/bench_gpu.md)."""
    text = BENCH.read_text() if BENCH.exists() else ""
    section = text.split("## norms", 1)[1].split("\n## ", 1)[0] if "## norms" in text else ""
    rows: dict[str, dict] = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        for column, pattern in FIGURES.items():
            m = pattern.match(cells[0]) if len(cells) == 5 else None
            if m:
                rows.setdefault(m["norm"], {"norm": m["norm"]})[f"{column}, N = {m['n']}"] = float(cells[3])
    if not rows:
        return pd.DataFrame([{"note": "no norms section in results/bench.md: normexp-bench --only norms "
                                      "--markdown results/bench.md"}])
    return pd.DataFrame(list(rows.values()))
