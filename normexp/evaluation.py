"""Evaluation of a model, in one or more BN evaluation modes (Wu & Johnson 2021, "Rethinking 'Batch' in
BatchNorm"), chosen by ``train.eval_modes``:

- ``running`` (always on): eval mode, BN layers normalize with their running statistics (the EMA, or the
  population statistics of ``norm.stats=population``): ``loss``, ``acc``.
- ``precise``: PreciseBN. The running statistics are recomputed with the current weights
  (``recompute_running_stats(..., estimator='precise')``) on a fixed set of ``train.precise_images`` clean
  training images in batches of ``train.precise_batch``, then the model is evaluated in eval mode:
  ``loss_precise``, ``acc_precise``.
- ``batch``: the BN layers in train mode, normalizing each evaluation batch of ``train.eval_batch_stats``
  images (drawn in a fixed random order) with its own statistics (every other layer in eval mode):
  ``loss_batch``, ``acc_batch``.

The extra modes leave the model as they found it: every buffer (running statistics, ``num_batches_tracked``)
is saved before and restored after, and the random number generators are forked, so training continues bit
for bit as without them (``batch_noisy`` draws its noise in a ``batch`` evaluation: it is its train-mode
forward). Norms without running statistics (group, layer, none, ...) and ``frozen_batch`` (fixed statistics)
evaluate the same in every mode: their extra keys are recorded with the running mode's values.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable

import torch
from torch import nn

from normexp.errors import ConfigError, check_choice
from normexp.norms import LpBatchNorm, bn_layers, recompute_running_stats, statistics_layers
from normexp.runtime import summed_squared_error

EVAL_MODES = ("running", "precise", "batch")
METRICS = ("loss", "acc")


def mode_key(metric: str, mode: str) -> str:
    """A record's key for ``metric`` in ``mode``: ``acc`` (running), ``acc_precise``, ``acc_batch``."""
    return metric if mode == "running" else f"{metric}_{mode}"


def extra_summary(prefix: str, values: dict) -> dict:
    """The summary keys of the extra modes: ``test_acc_precise`` from ``acc_precise`` of the test set."""
    return {f"{prefix}_{k}": v for k, v in values.items() if k not in METRICS}


def score(pairs: Iterable, loss_fn, classify: bool) -> dict:
    """Mean loss (and accuracy) over (output, target) pairs, weighted by their sizes; a summed loss
    (``data.reduction=sum``) is the sum over the whole set, however many batches it comes in."""
    summed = loss_fn is summed_squared_error
    loss = torch.zeros(())
    correct, n = torch.zeros((), dtype=torch.long), 0
    for out, y in pairs:
        loss = loss + (loss_fn(out, y) * (1 if summed else len(y))).cpu()
        if classify:
            correct += (out.argmax(dim=1) == y).sum().cpu()
        n += len(y)
    # a summed loss times n over n: the value one batch of the whole set gives, bit for bit
    values = {"loss": (loss * n).item() / n if summed else loss.item() / n}
    if classify:
        values["acc"] = correct.item() / n
    return values


@torch.no_grad()
def evaluate(model, batches, loss_fn, classify: bool) -> dict:
    """The model in eval mode over ``batches`` of (x, y); its mode is restored after."""
    was_training = model.training
    model.eval()
    try:
        return score(((model(x), y) for x, y in batches), loss_fn, classify)
    finally:
        model.train(was_training)


@contextlib.contextmanager
def model_kept(model: nn.Module):
    """Whatever runs inside may change the model's buffers, mode and the RNG state: all come back after."""
    saved = [(b, b.clone()) for b in model.buffers()]
    modes = [(m, m.training) for m in model.modules()]
    cuda_in_use = torch.cuda.is_available() and torch.cuda.is_initialized()
    try:
        with torch.random.fork_rng(devices=[torch.cuda.current_device()] if cuda_in_use else []):
            yield
    finally:
        with torch.no_grad():
            for buffer, value in saved:
                buffer.copy_(value)
        for m, training in modes:
            m.training = training


def whole_batches(images: int, available: int, batch: int) -> tuple[int, int]:
    """(images, batch size) of a pass over at most ``images`` of ``available`` images in whole batches of
    ``batch`` (one batch of them all when there are fewer than ``batch``)."""
    images = min(images, available)
    batch = min(batch, images)
    return images // batch * batch, batch


BATCH_ORDER_SEED = 20_210_701  # batch mode's fixed order of an evaluation set (a generator of its own)


@torch.no_grad()
def batch_stat_outputs(model: nn.Module, batches: Iterable, size: int):
    """(output, target) of batches of ``size`` taken from the set in a fixed random order (a set stored
    sorted by class, as mnist5k's test set is, would otherwise give one-class batches), every BN layer
    normalizing with the batch's own statistics. The last batch is filled up with the first images of that
    order, whose outputs are not counted twice. The set is held whole (one copy on its device)."""
    x, y = (torch.cat(parts) for parts in zip(*batches, strict=True))
    order = torch.randperm(len(y), generator=torch.Generator().manual_seed(BATCH_ORDER_SEED)).to(y.device)
    x, y = x[order], y[order]
    model.eval()
    for m in bn_layers(model):
        m.train()
    for i in range(0, len(y), size):
        chunk = x[i:i + size]
        short = min(size, len(y)) - len(chunk)
        out = model(torch.cat([chunk, x[:short]]))[:len(chunk)] if short else model(chunk)
        yield out, y[i:i + size]


# A set to evaluate: a function that gives its batches of (x, y), in the data's evaluation batch size.
EvalSet = Callable[[], Iterable]


class Evaluator:
    """The evaluation modes of ``train`` (the run config's section) over a run's data."""

    def __init__(self, train_cfg, data, loss_fn, classify: bool):
        self.data, self.loss_fn, self.classify = data, loss_fn, classify
        self.modes = list(train_cfg.eval_modes)  # configs/config.yaml holds every default
        self.precise_images = int(train_cfg.precise_images)
        self.precise_batch = int(train_cfg.precise_batch)
        self.stats_batch = int(train_cfg.eval_batch_stats)

    def __call__(self, model: nn.Module, sets: dict[str, EvalSet]) -> dict[str, dict]:
        """Each set's values (``loss``, ``acc``, ``loss_precise``, ...) in every mode."""
        values = {name: {} for name in sets}
        for mode in self.modes:
            with self._prepared(model, mode) as evaluate_set:
                for name, batches in sets.items():
                    values[name].update({mode_key(k, mode): v for k, v in evaluate_set(batches).items()})
        return values

    @contextlib.contextmanager
    def _prepared(self, model: nn.Module, mode: str):
        """The model ready for ``mode``, as a function of a set; restored after."""
        if mode == "running" or not statistics_layers(model):  # nothing else to evaluate with: same values
            yield lambda batches: evaluate(model, batches(), self.loss_fn, self.classify)
            return
        with model_kept(model):
            if mode == "precise":
                self._precise_statistics(model)
                yield lambda batches: evaluate(model, batches(), self.loss_fn, self.classify)
            else:
                yield lambda batches: score(batch_stat_outputs(model, batches(), self.stats_batch),
                                            self.loss_fn, self.classify)

    def _precise_statistics(self, model: nn.Module) -> None:
        layers = statistics_layers(model)
        if layers:
            images, batch = whole_batches(self.precise_images, self.data.n_train, self.precise_batch)
            batches = (x for x, _ in self.data.clean_train_batches(images, batch))
            recompute_running_stats(model, batches, layers, "precise")


def check_eval_modes(cfg, norm, model: nn.Module) -> None:
    """``train.eval_modes`` and the batch sizes of its modes, for the run's norm (a :class:`NormSpec`) and
    model (built on the meta device)."""
    modes = list(cfg.train.eval_modes)
    for i, mode in enumerate(modes):
        check_choice(f"train.eval_modes[{i}]", mode, EVAL_MODES)
    if "running" not in modes or len(set(modes)) < len(modes):
        raise ConfigError("train.eval_modes", modes, "list running (test_acc, test_loss) and any of batch, "
                          "precise, each once")
    if "precise" in modes and any(isinstance(m, LpBatchNorm) for m in model.modules()):
        raise ConfigError("train.eval_modes", modes, "norm=lp keeps an lp scale, not a variance, in "
                          "running_var: PreciseBN cannot estimate it; choose from: batch, running")
    if set(modes) - {"running"} and norm.cls.syncs_across_processes and int(cfg.train.world_size) > 1:
        raise ConfigError("train.eval_modes", modes, f"norm={norm.name} in train mode waits for the other "
                          "processes, and process 0 evaluates alone: use [running] with train.world_size > 1")
    for key, mode in (("train.precise_batch", "precise"), ("train.eval_batch_stats", "batch")):
        if mode in modes:
            check_stats_batch(key, int(cfg.train[key.split(".")[1]]), norm)


def check_stats_batch(key: str, batch: int, norm) -> None:
    """A batch the norm computes its statistics on in train mode (ghost BN: a multiple of its slices)."""
    try:
        norm.check_batch(batch)
    except ConfigError as error:
        raise ConfigError(key, batch, error.allowed) from None
