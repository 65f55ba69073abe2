"""What Wu & He blame for BN's small-batch error: the noise of batch statistics. For each BN layer and each
per-device batch N, the spread of the per-batch means and variances of the layer's input (positions count as
batch, as BN computes them) around the population's, as a relative error; and a trained run's test error
with recomputed population statistics in place of its running averages.

Both work on a finished run's ``model.pt`` (``train.save_final=true``), rebuilt from its ``config.yaml``.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import torch
import yaml
from omegaconf import OmegaConf
from torch import nn

from normexp.data import build_data
from normexp.evaluation import evaluate
from normexp.models import build_model
from normexp.norms import BatchNorm, NormSpec, recompute_population_stats
from normexp.records import CONFIG, MODEL
from normexp.runtime import make_loss

POPULATION_SEED = 10_000  # the fixed training batches of norm.stats=population (normexp.train.Loop.evaluate)


def batch_norm_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """Every layer that normalizes with batch statistics in training (torch's and normexp's BN layers)."""
    return [(n, m) for n, m in model.named_modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


@torch.no_grad()
def batch_stat_noise(model: nn.Module, images: torch.Tensor, sizes: list[int], chunk: int = 256
                     ) -> pd.DataFrame:
    """Per BN layer (in module order, ``depth`` 0, 1, ...) and per batch size N of ``sizes``: the inputs the
    layer sees on ``images`` (model in eval mode, so every layer's input has one fixed distribution) are cut
    into consecutive batches of N images; each batch's per-channel mean and (biased) variance over its
    N x positions values is compared with the population's (the same over all of ``images``):

    - ``mean_error``: root mean square over batches and channels of (mean_B - mean) / std (population std),
    - ``var_error``: root mean square over batches and channels of (var_B - var) / var.

    For independent Gaussian values these are 1 / sqrt(m) and about sqrt(2 / m), m = N x positions; real
    feature maps are correlated across positions and images, and their errors say how much. ``len(images)``
    should be a multiple of ``chunk`` and of every N. Channels with zero population variance are skipped.
    """
    layers = batch_norm_layers(model)
    if any(chunk % n for n in sizes):
        raise ValueError(f"chunk {chunk} must be a multiple of every batch size {sizes}")
    sums: dict[str, list] = {}
    per_batch: dict[tuple[str, int], list] = {}

    def keep(name):
        def hook(_module, inputs):
            x = inputs[0].double()
            c = x.size(1)
            flat = x.transpose(0, 1).reshape(c, x.size(0), -1)  # (C, images, positions)
            s = sums.setdefault(name, [0.0, 0.0, 0, flat.size(2)])
            s[0] = s[0] + flat.sum(dim=(1, 2))
            s[1] = s[1] + flat.pow(2).sum(dim=(1, 2))
            s[2] += flat.size(1) * flat.size(2)
            for n in sizes:
                batches = flat.reshape(c, -1, n * flat.size(2))  # (C, batches, N x positions)
                per_batch.setdefault((name, n), []).append(
                    (batches.mean(dim=2), batches.var(dim=2, unbiased=False)))
        return hook

    was_training = model.training
    model.eval()
    handles = [m.register_forward_pre_hook(keep(name)) for name, m in layers]
    try:
        for start in range(0, len(images) - chunk + 1, chunk):
            model(images[start:start + chunk])
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    rows = []
    for depth, (name, _) in enumerate(layers):
        total, squares, count, positions = sums[name]
        mean = total / count
        var = squares / count - mean ** 2
        live = var > 1e-12 * var.max().clamp_min(1e-30)
        for n in sizes:
            means = torch.cat([m for m, _ in per_batch[(name, n)]], dim=1)[live]  # (channels, batches)
            variances = torch.cat([v for _, v in per_batch[(name, n)]], dim=1)[live]
            mu, v = mean[live, None], var[live, None]
            rows.append({"layer": name, "depth": depth, "N": n, "positions": positions,
                         "values_per_batch": n * positions, "batches": means.size(1),
                         "mean_error": float(((means - mu) ** 2 / v).mean().sqrt()),
                         "var_error": float(((variances - v) / v).pow(2).mean().sqrt())})
    return pd.DataFrame(rows)


def trained_run(run_dir: str | Path, device: str = "cpu"):
    """A finished run's model (its ``model.pt`` weights and buffers), data and config, rebuilt from its
    ``config.yaml``. The model is in eval mode."""
    run_dir = Path(run_dir)
    cfg = OmegaConf.create(yaml.safe_load((run_dir / CONFIG).read_text()))
    data = build_data(cfg.data, torch.device(device), int(cfg.seed))
    model = build_model(cfg.model, NormSpec.from_config(cfg.norm), data.info.in_shape, data.info.num_classes)
    model.load_state_dict(torch.load(run_dir / MODEL, map_location=device, weights_only=True))
    return model.eval(), data, cfg


def with_population_stats(run_dir: str | Path, batches: int = 20):
    """A finished run's model (eval mode) and data, every BN layer's running statistics recomputed as the
    mean of batch means and m/(m-1) times the mean of batch variances over ``batches`` fixed training batches
    of the run's batch size (the batches of ``norm.stats=population``; ghost-batch layers take statistics per
    slice, as in training): the ``ioffe`` estimator, unless the run set ``norm.population_estimator``
    (:func:`normexp.norms.recompute_running_stats`). The weights stay as trained."""
    model, data, _ = trained_run(run_dir)
    for _, m in batch_norm_layers(model):
        if isinstance(m, BatchNorm):
            m.stats = "population"
    recompute_population_stats(model, (data.fixed_train_batch(data.batch_size, POPULATION_SEED + i)[0]
                                       for i in range(batches)))
    return model, data


def population_test_acc(run_dir: str | Path, batches: int = 20) -> float:
    """Test accuracy of a finished BN run with recomputed population statistics
    (:func:`with_population_stats`) in place of the moving averages it trained with."""
    model, data = with_population_stats(run_dir, batches)
    return evaluate(model, data.test_batches(), make_loss(data.info.task), classify=True)["acc"]


def run_batch_noise(run_dir: str | Path, sizes: list[int], images: int = 2048, chunk: int = 256
                    ) -> pd.DataFrame:
    """:func:`batch_stat_noise` of a finished run's model with recomputed population statistics
    (:func:`with_population_stats`), on a fixed draw of ``images`` training images (fewer
    when the training set is smaller: a multiple of ``chunk``)."""
    model, data = with_population_stats(run_dir)
    x = data.fixed_train_batch(images, POPULATION_SEED - 1)[0]
    x = x[: len(x) // chunk * chunk]
    return batch_stat_noise(model, x, sizes, chunk)
