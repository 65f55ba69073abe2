"""What the Wu & Johnson experiments share: their cells, built by Wu & He's ``cell`` (the same overrides, so a
cell both papers train is one run), and the evaluations of a finished run's ``model.pt`` with other BN
statistics (PreciseBN, batch statistics, statistics recomputed on a target domain), cached per run dir."""

from __future__ import annotations

import copy
import math
from functools import lru_cache

from omegaconf import OmegaConf

from normexp.claims.regime import check_regime
from normexp.evaluation import evaluate
from normexp.landscape.run import load_run
from normexp.norms import GhostBatchNorm, recompute_running_stats, statistics_layers
from normexp.recalibrate import apply_data_overrides
from normexp.reproduce.plan import Context
from normexp.reproduce.spec import EXPERIMENTS_DIR, Experiment, import_folder_module

wuhe = import_folder_module(EXPERIMENTS_DIR / "wuhe2018", "common")


def wuhe_context(ctx) -> Context:
    """``ctx`` with Wu & He's params in place of this folder's (their design at every profile, where this
    folder keeps its own at quick): a cell built from it is Wu & He's run, trained once for both papers."""
    norms = Experiment.load(EXPERIMENTS_DIR / "wuhe2018" / "norms.yaml")
    return Context(norms, ctx.profile, ctx.runs, ctx.notices)


def bn_cell(ctx, norm_batch: int, sgd_batch: int, extra: tuple[str, ...] = (), name: str | None = None
            ) -> dict:
    """BN with statistics per slice of ``norm_batch`` images of an SGD batch of ``sgd_batch`` (virtual
    devices sgd_batch / norm_batch; plain BN when they are equal), lr = base lr x sgd_batch / 256."""
    if norm_batch == sgd_batch:
        return wuhe.cell(ctx, "bn_plain", sgd_batch, extra, name)
    return wuhe.cell(ctx, "bn", norm_batch, extra, name, devices=sgd_batch // norm_batch)


def norm_cell(ctx, norm: str, sgd_batch: int, extra: tuple[str, ...] = (), name: str | None = None) -> dict:
    """A norm without batch statistics (gn, ln, in) at SGD batch ``sgd_batch`` (Wu & He's N x D)."""
    devices = int(ctx.params["devices"])
    return wuhe.cell(ctx, norm, sgd_batch // devices, extra, name)


def error(acc: float | None) -> float:
    return math.nan if acc is None else 100.0 * (1.0 - float(acc))


def modes_overrides(ctx, modes: tuple[str, ...]) -> tuple[str, ...]:
    """The run evaluates itself in these BN modes (normexp/evaluation.py) at every evaluation and at the end
    on the fixed clean training set: ``test_acc_precise``, ``train_clean_acc_batch``, ... in its summary.
    PreciseBN and batch statistics use the run's SGD batch (slices of its normalization batch)."""
    return (f"train.eval_modes=[{','.join(modes)}]", f"train.precise_images={ctx.params['precise_images']}")


def error_on_test_set(run, model) -> float:
    """Test error (%) of ``model`` on a loaded run's test set, in eval mode."""
    return error(evaluate(model, run.data.test_batches(), run.loss_fn, run.classify)["acc"])


def one_slice_copy(model):
    """A copy of ``model`` whose ghost-BN layers take a whole batch as one slice, so that each batch of a
    recompute pass is one normalization batch."""
    model = copy.deepcopy(model)
    for m in model.modules():
        if isinstance(m, GhostBatchNorm):
            m.virtual_devices = 1
    return model


@lru_cache(maxsize=1024)
def shifted_errors(run_dir: str, corruption: str, targets: tuple[int, ...], batch: int) -> dict:
    """A finished run's test error (%) on the test set corrupted by ``corruption``: with its own (source)
    statistics, and, where it has BN layers, with statistics recomputed by PreciseBN on the first K corrupted
    test images (unlabeled) for each K of ``targets``, in batches of ``batch`` images that are each one
    normalization batch (:func:`one_slice_copy`). ``{"source": e, K: e, ...}``."""
    cfg = apply_data_overrides(OmegaConf.load(f"{run_dir}/config.yaml"), [f"corruption={corruption}"])
    run = load_run(run_dir, cfg=cfg)
    out = {"source": error_on_test_set(run, run.model)}
    if not statistics_layers(run.model):
        return out
    for k in targets:
        model = one_slice_copy(run.model)
        recompute_running_stats(model, run.data.target_batches(k, min(batch, k)), statistics_layers(model),
                                "precise")
        out[k] = error_on_test_set(run, model)
    return out


def regime_beside(ctx, verdict, used: list[str], groups: list[list[str]] = ()):
    """R1 for ``used`` and R2 across ``groups``, shown beside the verdict and not gating it."""
    verdict.regime = check_regime(ctx.runs, used, groups).to_dict(gated=False)
    return verdict
