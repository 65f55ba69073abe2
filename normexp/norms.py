"""Normalization layers behind one registry, built as ``create_norm(name, num_channels, **options)``.

Every layer takes ``num_channels`` first and works on (N, C) and (N, C, *spatial) inputs. Statistics of the
batch-based layers are per channel over every dim but C, so conv positions count as batch (as in the papers).
What models, config validation and the training loop need to know about a norm is on its class (see
:class:`Norm`); adding a norm is its class here and its yaml file in ``configs/norm``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from normexp.errors import ConfigError, check_choice
from normexp.registry import Registry


class Norm:
    """The properties of a norm that the code around it reads, as class attributes (defaults here)."""

    registry_name = "norm"
    has_shift = True  # a learned shift (when affine): a layer right before it drops its bias
    uses_batch_statistics = False  # statistics over the batch: needs two or more examples per batch
    syncs_across_processes = False  # statistics over every process's batch: sees the global batch
    needs_spatial_input = False  # refused after a fully connected layer: each value would be normalized alone
    freezable = False  # train.freeze_bn_at can swap it for frozen_batch (see freeze_batch_norms)

    @classmethod
    def check_batch(cls, batch: int, settings: dict) -> None:
        """Refuse a batch (of one process) this norm cannot compute its statistics on; ``settings``: its
        options with the constructor's defaults filled in."""
        if cls.uses_batch_statistics and batch < 2:
            raise ConfigError("data.batch_size", batch, f"norm={cls.registry_name} needs at least 2 examples "
                              "per batch to compute batch statistics")


NORMS = Registry("norm.name", name_attribute="registry_name")
register = NORMS.register


def norm_class(name: str) -> type[Norm]:
    """The class registered as ``name``; the one check of ``norm.name``."""
    return NORMS.lookup(name)


def create_norm(name: str, num_channels: int, **options) -> nn.Module:
    return norm_class(name)(num_channels, **options)


def norm_options(name: str) -> list[str]:
    """The option names a norm accepts (everything in its constructor after num_channels)."""
    return list(NORMS.options(name, leading=1))


def norm_settings(name: str, options: dict) -> dict:
    """``options`` with the constructor's defaults for the options not given."""
    return {key: options.get(key, p.default) for key, p in NORMS.options(name, leading=1).items()}


def _reduce_dims(x: torch.Tensor) -> list[int]:
    return [0, *range(2, x.dim())]


def _per_channel(v: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return v.view(1, -1, *([1] * (x.dim() - 2)))


def stored_channels_last(x: torch.Tensor) -> bool:
    """Whether ``x`` is 4-d, stored channels last (``train.channels_last``) and not plainly contiguous."""
    return x.dim() == 4 and not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last)


@register("none")
class NoNorm(Norm, nn.Identity):
    has_shift = False

    def __init__(self, num_channels: int):
        super().__init__()


POPULATION_ESTIMATORS = ("ioffe", "precise")  # see recompute_running_stats


@register("batch")
class BatchNorm(Norm, nn.modules.batchnorm._BatchNorm):
    """Ioffe & Szegedy's transform. ``stats='ema'`` keeps PyTorch's moving averages for inference;
    ``stats='population'`` recomputes them before each evaluation with the current weights over
    ``population_batches`` training batches (see ``recompute_population_stats``), with
    ``population_estimator`` ``ioffe`` (the paper's Alg. 2: mean of batch means and m/(m-1) times the mean
    of batch variances) or ``precise`` (fvcore's PreciseBN, Wu & Johnson 2021: mean and variance of every
    value of every batch)."""

    uses_batch_statistics = True
    freezable = True

    def __init__(self, num_channels: int, eps: float = 1e-5, momentum: float = 0.1, affine: bool = True,
                 stats: str = "ema", population_batches: int = 20, population_estimator: str = "ioffe"):
        super().__init__(num_channels, eps=eps, momentum=momentum, affine=affine, track_running_stats=True)
        check_choice("norm.stats", stats, ("ema", "population"))
        check_choice("norm.population_estimator", population_estimator, POPULATION_ESTIMATORS)
        self.stats, self.population_batches = stats, population_batches
        self.population_estimator = population_estimator

    def _check_input_dim(self, x):
        if x.dim() < 2:
            raise ValueError(f"expected (N, C) or (N, C, ...) input, got shape {tuple(x.shape)}")

    def _update_running(self, mean: torch.Tensor, var_unbiased: torch.Tensor) -> None:
        with torch.no_grad():
            self.num_batches_tracked.add_(1)
            m = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
            self.running_mean.lerp_(mean.detach(), m)
            self.running_var.lerp_(var_unbiased.detach(), m)

    def _affine(self, y: torch.Tensor) -> torch.Tensor:
        if not self.affine:
            return y
        return y * _per_channel(self.weight, y) + _per_channel(self.bias, y)

    def _eval_normalize(self, x: torch.Tensor) -> torch.Tensor:
        return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias,
                            training=False, eps=self.eps)


def _population_layers(model: nn.Module) -> list[BatchNorm]:
    return [m for m in model.modules() if isinstance(m, BatchNorm) and m.stats == "population"]


def population_batches(model: nn.Module) -> int:
    """How many training batches ``recompute_population_stats`` should average for ``model``: its
    ``stats='population'`` layers' ``population_batches`` (0 when it has none)."""
    return max((m.population_batches for m in _population_layers(model)), default=0)


@torch.no_grad()
def recompute_population_stats(model: nn.Module, batches) -> bool:
    """Population statistics for every ``BatchNorm(stats='population')`` in ``model`` over ``batches``,
    with the layers' ``population_estimator`` (:func:`recompute_running_stats`). Returns whether anything
    was recomputed."""
    layers = _population_layers(model)
    if not layers:
        return False
    estimators = sorted({m.population_estimator for m in layers})
    if len(estimators) > 1:
        raise ConfigError("norm.population_estimator", estimators, "one model's layers share one estimator")
    recompute_running_stats(model, batches, layers, estimators[0])
    return True


def _kind(m: nn.Module) -> str:
    return getattr(type(m), "registry_name", type(m).__name__)


def _check_population_layers(layers: list[nn.Module], estimator: str) -> None:
    """Refuse, before anything changes, an estimator or a layer whose statistics it cannot estimate."""
    check_choice("norm.population_estimator", estimator, POPULATION_ESTIMATORS)
    refused = (FrozenBatchNorm,) if estimator == "ioffe" else (FrozenBatchNorm, LpBatchNorm)
    ok = [n for n, c in NORMS.items() if issubclass(c, BatchNorm) and not issubclass(c, refused)]
    choose = f"it estimates the statistics of norm={', '.join(sorted(ok))} and of torch's BatchNorm"
    for m in layers:
        kind = _kind(m)
        if isinstance(m, FrozenBatchNorm):
            raise ConfigError("norm.population_estimator", estimator, f"norm={kind} never normalizes with "
                              f"batch statistics: its running statistics are fixed, not estimated; {choose}")
        if isinstance(m, LpBatchNorm) and estimator != "ioffe":
            raise ConfigError("norm.population_estimator", estimator, f"norm={kind} keeps an lp scale, not a "
                              "variance, in running_var: choose one of: ioffe")
        if not isinstance(m, nn.modules.batchnorm._BatchNorm) or m.running_mean is None:
            raise ConfigError("norm.population_estimator", estimator,
                              f"{kind} keeps no running statistics; {choose}")


class _Pooled:
    """Every value a layer sees, per channel: count, mean and sum of squared deviations from the mean
    (float64, batches merged with Chan et al.'s pairwise update). A forward pre-hook."""

    def __init__(self):
        self.n, self.mean, self.m2 = 0, None, None

    def __call__(self, _module, inputs) -> None:
        x = inputs[0].detach().double()
        flat = x.transpose(0, 1).reshape(x.size(1), -1)
        n, mean = flat.size(1), flat.mean(dim=1)
        m2 = (flat - mean[:, None]).pow(2).sum(dim=1)
        if self.mean is None:
            self.n, self.mean, self.m2 = n, mean, m2
            return
        total, delta = self.n + n, mean - self.mean
        self.mean = self.mean + delta * (n / total)
        self.m2 = self.m2 + m2 + delta.pow(2) * (self.n * n / total)
        self.n = total

    def synced(self, layer: nn.Module) -> _Pooled:
        """Pooled over every process of ``layer``'s group (a ``sync_batch`` layer in a multi-process run)."""
        if not (isinstance(layer, (SyncBatchNorm, nn.SyncBatchNorm)) and dist.is_available()
                and dist.is_initialized()):
            return self
        c = layer.num_features
        mean = self.mean if self.mean is not None else torch.zeros(c, dtype=torch.float64)
        m2 = self.m2 if self.m2 is not None else torch.zeros(c, dtype=torch.float64)
        sums = torch.stack([torch.full_like(mean, float(self.n)), self.n * mean, m2 + self.n * mean.pow(2)])
        sums = sums.to(layer.running_mean.device)
        dist.all_reduce(sums, group=layer.process_group or dist.group.WORLD)
        out = _Pooled()
        out.n = int(round(float(sums[0, 0])))
        if out.n:
            out.mean = sums[1] / out.n
            out.m2 = sums[2] - out.n * out.mean.pow(2)
        return out


@torch.no_grad()
def recompute_running_stats(model: nn.Module, batches, layers: list[nn.Module], estimator: str = "ioffe"
                            ) -> None:
    """Population statistics of ``layers`` (BN layers of ``model``) in their running statistics, from one
    pass of ``model`` in train mode over ``batches``: every layer sees what it sees in training (the layers
    before it normalize each batch with its own statistics, so their new running statistics do not enter).

    ``estimator``:

    - ``ioffe`` (default; Ioffe & Szegedy's Alg. 2): running statistics reset, then PyTorch's plain average
      (momentum=None) of what each layer's training step records: the mean of batch means and the mean of
      m/(m-1) times the batch variances (m values per channel in a batch). ``ghost_batch`` and
      ``batch_renorm`` with ``virtual_devices`` > 1 record per slice, so their slices of N / virtual_devices
      are the batches; ``sync_batch`` in a multi-process run the global batch's; ``lp`` its batch lp scale
      (plain average). ``num_batches_tracked`` ends at the number of batches.
    - ``precise`` (fvcore's ``update_bn_stats``, Wu & Johnson 2021): the mean and the biased variance
      E[x^2] - E[x]^2 of every value every layer sees in the pass, batches weighted by their size; the
      variance includes the spread of the batch means. How a batch is sliced does not enter (``ghost_batch``,
      ``batch_renorm``: the same values pooled); ``sync_batch`` pools every process's values. Refused for
      ``lp`` (its running_var is no variance). ``num_batches_tracked`` grows by the number of batches, as
      in fvcore. A layer the pass never reaches keeps its reset statistics (0, 1), as with ``ioffe``.

    Both estimators run the same pass: the precise one only reads each layer's inputs and replaces its
    statistics at the end. So ``batch_renorm``'s r and d (against the running statistics as they
    accumulate in the pass) and ``batch_noisy``'s noise draws are the same under both. ``frozen_batch`` is
    refused (its statistics are fixed, not estimated), as is a layer without running statistics.
    The model's mode, the layers' momenta, the weights and the RNG state are kept."""
    _check_population_layers(layers, estimator)
    momenta = [m.momentum for m in layers]
    tracked = [m.num_batches_tracked.clone() for m in layers]
    precise = estimator == "precise"
    pooled = [_Pooled() for _ in layers] if precise else []  # ioffe: the training step's own averages
    hooks = [m.register_forward_pre_hook(p) for m, p in zip(layers, pooled, strict=True)] if precise else []
    was_training = model.training
    cuda_in_use = torch.cuda.is_available() and torch.cuda.is_initialized()
    devices = [torch.cuda.current_device()] if cuda_in_use else []
    try:
        with torch.random.fork_rng(devices=devices):
            for m in layers:
                m.reset_running_stats()
                m.momentum = None
            model.train()
            for x in batches:
                model(x)
    finally:
        for h in hooks:
            h.remove()
        for m, momentum in zip(layers, momenta, strict=True):
            m.momentum = momentum
        model.train(was_training)
    if not precise:  # ioffe: the pass's plain averages stand; num_batches_tracked counts its batches
        return
    for m, p, before in zip(layers, pooled, tracked, strict=True):
        p = p.synced(m)
        if p.n:
            m.running_mean.copy_(p.mean)
            m.running_var.copy_(p.m2 / p.n)
        m.num_batches_tracked.add_(before)


class _GroupNormBase(Norm, nn.GroupNorm):
    def forward(self, x):
        if x.dim() == 2 and self.num_groups == self.num_channels and self.num_channels > 1:
            raise ValueError(f"norm={self.registry_name} needs spatial inputs (N, C, H, W); got (N, C): "
                             "each value would be normalized alone")
        return super().forward(x)


@register("group")
class GroupNorm(_GroupNormBase):
    """Wu & He: statistics per sample over (C/G, H, W). Give ``groups`` or ``channels_per_group``."""

    def __init__(self, num_channels: int, groups: int | None = 4, channels_per_group: int | None = None,
                 eps: float = 1e-5, affine: bool = True):
        if channels_per_group:
            if channels_per_group <= 0 or num_channels % channels_per_group:
                raise ConfigError("norm.channels_per_group", channels_per_group,
                                  f"must divide the layer's {num_channels} channels: "
                                  f"{_divisors(num_channels)}")
            groups = num_channels // channels_per_group
        if not groups or groups <= 0 or num_channels % groups:
            raise ConfigError("norm.groups", groups,
                              f"must divide the layer's {num_channels} channels: {_divisors(num_channels)}")
        super().__init__(groups, num_channels, eps=eps, affine=affine)


def _divisors(n: int) -> str:
    return "choose one of " + ", ".join(str(d) for d in range(1, n + 1) if n % d == 0)


@register("layer")
class LayerNorm(_GroupNormBase):
    """Layer norm over (C, H, W) with per-channel gamma and beta: GroupNorm with one group."""

    def __init__(self, num_channels: int, eps: float = 1e-5, affine: bool = True):
        super().__init__(1, num_channels, eps=eps, affine=affine)


@register("instance")
class InstanceNorm(_GroupNormBase):
    """Instance norm with per-channel gamma and beta: GroupNorm with one channel per group."""

    needs_spatial_input = True

    def __init__(self, num_channels: int, eps: float = 1e-5, affine: bool = True):
        super().__init__(num_channels, num_channels, eps=eps, affine=affine)

    def forward(self, x):
        if stored_channels_last(x):  # torch's CPU group_norm, a group per channel: 3-4x slower than 2 copies
            return super().forward(x.contiguous()).contiguous(memory_format=torch.channels_last)
        return super().forward(x)


@register("rms")
class RMSNorm(Norm, nn.Module):
    """x / sqrt(mean of x^2 over (C, H, W) + eps) times a per-channel gain; no centring, no shift."""

    has_shift = False

    def __init__(self, num_channels: int, eps: float = 1e-5, affine: bool = True):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(num_channels)) if affine else None

    def forward(self, x):
        y = x * torch.rsqrt(x.pow(2).mean(dim=list(range(1, x.dim())), keepdim=True) + self.eps)
        return y if self.weight is None else y * _per_channel(self.weight, x)


def santurkar_noise(a: torch.Tensor, mean_range: float, std_low: float, std_high: float, shift_jitter: float,
                    scale_jitter: float) -> torch.Tensor:
    """Santurkar et al.'s Alg. 1 noise on (N, C, ...) activations: per unit mu_j ~ U(-mean_range, mean_range)
    and sigma_j ~ U(std_low, std_high), per element m ~ U(mu_j - shift_jitter, mu_j + shift_jitter) and
    s ~ N(sigma_j, scale_jitter); returns s * a + m (fresh draws at every call)."""
    c = a.size(1)
    unit_mean = _per_channel((torch.rand(c, device=a.device) * 2 - 1) * mean_range, a)
    unit_std = _per_channel(std_low + torch.rand(c, device=a.device) * (std_high - std_low), a)
    # drawn in (N, C, H, W) order whatever a's layout (torch's CPU randn is ~5x slower into channels-last
    # memory), then in place on the fresh draws: the same values as s * a + m in half the full-size passes
    like = dict(device=a.device, dtype=a.dtype)
    m = torch.rand(a.shape, **like).mul_(2 * shift_jitter).add_(unit_mean - shift_jitter)
    s = torch.randn(a.shape, **like).mul_(scale_jitter).add_(unit_std)
    noisy = torch.addcmul(m, s, a)
    return noisy.contiguous(memory_format=torch.channels_last) if stored_channels_last(a) else noisy


@register("batch_noisy")
class NoisyBatchNorm(BatchNorm):
    """Santurkar et al.'s Alg. 1: BN, then in train mode :func:`santurkar_noise` on its output at every
    step. No noise in eval mode."""

    freezable = False  # frozen_batch would drop the noise of its training steps

    def __init__(self, num_channels: int, eps: float = 1e-5, momentum: float = 0.1, affine: bool = True,
                 mean_range: float = 0.5, std_low: float = 1.0, std_high: float = 1.25,
                 shift_jitter: float = 0.1, scale_jitter: float = 0.1):
        super().__init__(num_channels, eps=eps, momentum=momentum, affine=affine)
        self.noise = dict(mean_range=mean_range, std_low=std_low, std_high=std_high,
                          shift_jitter=shift_jitter, scale_jitter=scale_jitter)

    def forward(self, x):
        a = super().forward(x)
        return santurkar_noise(a, **self.noise) if self.training else a


@register("noise")
class Noise(Norm, nn.Module):
    """No normalization, only Santurkar et al.'s noise (:func:`santurkar_noise`) in train mode: their
    "Standard + noise" network (Fig 2), with the constants of ``norm=batch_noisy``."""

    has_shift = False

    def __init__(self, num_channels: int, mean_range: float = 0.5, std_low: float = 1.0,
                 std_high: float = 1.25, shift_jitter: float = 0.1, scale_jitter: float = 0.1):
        super().__init__()
        self.noise = dict(mean_range=mean_range, std_low=std_low, std_high=std_high,
                          shift_jitter=shift_jitter, scale_jitter=scale_jitter)

    def forward(self, x):
        return santurkar_noise(x, **self.noise) if self.training else x


@register("lp")
class LpBatchNorm(BatchNorm):
    """Santurkar et al.'s lp normalization: centre per channel with batch statistics, then divide by
    (batch mean of |x - mu|^p)^(1/p) for p in {1, 2}, or by max |x - mu| for p = inf. The moving
    average of that scale is kept in ``running_var`` for inference."""

    freezable = False  # its running_var holds an lp scale, which frozen_batch would take for a variance

    def __init__(self, num_channels: int, p: float = 1, eps: float = 1e-5, momentum: float = 0.1,
                 affine: bool = True):
        p = float(p)
        if p not in (1.0, 2.0, math.inf):
            raise ConfigError("norm.p", p, "choose one of: 1, 2, inf")
        super().__init__(num_channels, eps=eps, momentum=momentum, affine=affine)
        self.p = p

    def forward(self, x):
        self._check_input_dim(x)
        if not self.training:
            centred = x - _per_channel(self.running_mean, x)
            scale = _per_channel(self.running_var, x)
        else:  # keepdim statistics and one fused norm: this layer's op count is most of a DLN step
            dims = _reduce_dims(x)
            mean = x.mean(dims, keepdim=True)
            centred = x - mean
            if self.p == math.inf:
                scale = centred.abs().amax(dims, keepdim=True)
            else:
                per_channel = x.numel() // x.size(1)
                scale = torch.linalg.vector_norm(centred, ord=self.p, dim=dims, keepdim=True)
                scale = scale / per_channel ** (1.0 / self.p)
            self._update_running(mean.flatten(), scale.flatten())
        return self._affine(centred / (scale + self.eps))


def slice_statistics(x: torch.Tensor, virtual_devices: int):
    """``x`` as (devices, N / devices, C, positions) slices, with each slice's per-channel mean and biased
    variance (the statistics of virtual devices)."""
    d, n, c = virtual_devices, x.size(0), x.size(1)
    _check_slices(n, d)
    slices = x.reshape(d, n // d, c, -1)
    return slices, slices.mean(dim=(1, 3), keepdim=True), slices.var(dim=(1, 3), unbiased=False, keepdim=True)


def _check_slices(n: int, virtual_devices: int) -> None:
    if n % virtual_devices:
        raise ValueError(f"batch of {n} does not split into norm.virtual_devices={virtual_devices} equal "
                         "slices")


def slice_columns(x: torch.Tensor, virtual_devices: int) -> torch.Tensor:
    """Channels-last ``x`` copied into a (N / devices x H x W, devices x C) matrix whose column s x C + c
    holds channel c of slice s: one copy, after which every slice's statistics are column statistics."""
    d, c = virtual_devices, x.size(1)
    _check_slices(x.size(0), d)
    return x.permute(0, 2, 3, 1).reshape(d, -1, c).transpose(0, 1).reshape(-1, d * c)


def column_batch_norm(columns: torch.Tensor, eps: float, weight=None, bias=None):
    """Torch's ``batch_norm`` in train mode over :func:`slice_columns`' matrix: (output, each column's batch
    mean, each column's unbiased variance). At momentum 1 the buffers it updates receive those statistics."""
    mean, var = columns.new_zeros(columns.size(1)), columns.new_ones(columns.size(1))
    y = F.batch_norm(columns, mean, var, weight, bias, training=True, momentum=1.0, eps=eps)
    return y, mean, var


def from_slice_columns(columns: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """The inverse of :func:`slice_columns`: an (N, C, H, W) tensor stored channels last, like ``like``."""
    n, c, h, w = like.shape
    d = columns.size(1) // c
    return columns.reshape(-1, d, c).transpose(0, 1).reshape(n, h, w, c).permute(0, 3, 1, 2)


@register("ghost_batch")
class GhostBatchNorm(BatchNorm):
    """BN whose training statistics are computed per slice of the batch: ``virtual_devices`` slices of
    N / virtual_devices examples, as on that many unsynchronized devices (Wu & He's per-GPU batch).
    Running statistics average the slices' means and unbiased variances."""

    def __init__(self, num_channels: int, virtual_devices: int = 8, eps: float = 1e-5, momentum: float = 0.1,
                 affine: bool = True):
        if virtual_devices < 1:
            raise ConfigError("norm.virtual_devices", virtual_devices, "must be a positive integer")
        super().__init__(num_channels, eps=eps, momentum=momentum, affine=affine)
        self.virtual_devices = virtual_devices

    @classmethod
    def check_batch(cls, batch, settings):
        d = settings["virtual_devices"]
        if batch % d:
            raise ConfigError("data.batch_size", batch,
                              f"norm={cls.registry_name} needs a multiple of norm.virtual_devices={d}")
        if d > 1 and batch // d < 2:
            raise ConfigError("data.batch_size", batch, f"norm={cls.registry_name} needs at least 2 examples "
                              "per slice to compute batch statistics")
        super().check_batch(batch, settings)

    def forward(self, x):
        self._check_input_dim(x)
        if not self.training:
            return self._eval_normalize(x)
        if stored_channels_last(x):
            return self._forward_columns(x)
        slices, mean, var = slice_statistics(x, self.virtual_devices)
        y = ((slices - mean) * torch.rsqrt(var + self.eps)).reshape(x.shape)
        m = slices.size(1) * slices.size(3)
        self._update_running(mean.mean(dim=(0, 1, 3)), var.mean(dim=(0, 1, 3)) * m / max(m - 1, 1))
        return self._affine(y)

    def _forward_columns(self, x):
        """The same transform on channels-last input, as one torch ``batch_norm`` over the slices' columns:
        2-3x faster on CPU than the reshape path, which would copy a channels-last ``x`` twice. Contiguous
        input keeps the reshape path, whose last bits the committed full results were made with."""
        d = self.virtual_devices
        weight, bias = (self.weight.repeat(d), self.bias.repeat(d)) if self.affine else (None, None)
        y, mean, var = column_batch_norm(slice_columns(x, d), self.eps, weight, bias)
        self._update_running(mean.view(d, -1).mean(0), var.view(d, -1).mean(0))
        return from_slice_columns(y, x)


@register("batch_renorm")
class BatchRenorm(BatchNorm):
    """Ioffe 2017: x_hat = (x - mu_B) / sigma_B * r + d with r = clip(sigma_B / sigma, 1/r_max, r_max)
    and d = clip((mu_B - mu) / sigma, -d_max, d_max), r and d held constant in the backward pass.
    ``virtual_devices`` > 1 takes the batch statistics (and r, d) per slice, as ``ghost_batch`` does."""

    def __init__(self, num_channels: int, r_max: float = 1.5, d_max: float = 0.5, eps: float = 1e-5,
                 momentum: float = 0.01, affine: bool = True, virtual_devices: int = 1):
        if virtual_devices < 1:
            raise ConfigError("norm.virtual_devices", virtual_devices, "must be a positive integer")
        super().__init__(num_channels, eps=eps, momentum=momentum, affine=affine)
        self.r_max, self.d_max, self.virtual_devices = r_max, d_max, virtual_devices

    def forward(self, x):
        self._check_input_dim(x)
        if not self.training:
            return self._eval_normalize(x)
        if stored_channels_last(x) and x.numel() // (x.size(1) * self.virtual_devices) > 1:
            return self._forward_columns(x)
        slices, mean, var = slice_statistics(x, self.virtual_devices)
        c = x.size(1)
        std = torch.sqrt(var + self.eps)
        running_std = torch.sqrt(self.running_var + self.eps).view(1, 1, c, 1)
        r = (std.detach() / running_std).clamp(1 / self.r_max, self.r_max)
        shift = ((mean.detach() - self.running_mean.view(1, 1, c, 1)) / running_std).clamp(-self.d_max,
                                                                                          self.d_max)
        y = ((slices - mean) / std * r + shift).reshape(x.shape)
        m = slices.size(1) * slices.size(3)
        self._update_running(mean.mean(dim=(0, 1, 3)), var.mean(dim=(0, 1, 3)) * m / max(m - 1, 1))
        return self._affine(y)

    def _forward_columns(self, x):
        """Channels-last input, as ``GhostBatchNorm`` does: x_hat from one torch ``batch_norm`` over the
        slices' columns (which also gives each column's mean and unbiased variance), then r, d, gamma and
        beta in one ``addcmul``: 1.35x the reshape path's training step on quick's ResNet at N = 4."""
        d = self.virtual_devices
        columns = slice_columns(x, d)
        x_hat, mean, var = column_batch_norm(columns, self.eps)
        m = columns.size(0)
        std = torch.sqrt(var * ((m - 1) / m) + self.eps)  # the batch's (biased) variance, as x_hat's
        running_std = torch.sqrt(self.running_var + self.eps).repeat(d)
        r = (std / running_std).clamp(1 / self.r_max, self.r_max)
        shift = ((mean - self.running_mean.repeat(d)) / running_std).clamp(-self.d_max, self.d_max)
        self._update_running(mean.view(d, -1).mean(0), var.view(d, -1).mean(0))
        if self.affine:
            weight = self.weight.repeat(d)
            r, shift = weight * r, weight * shift + self.bias.repeat(d)
        return from_slice_columns(torch.addcmul(shift, x_hat, r), x)


@register("frozen_batch")
class FrozenBatchNorm(BatchNorm):
    """BN that always normalizes with its running statistics (eval-mode BN), e.g. when fine-tuning a
    pretrained net on small batches. The statistics never update; ``freeze_affine`` also fixes gamma, beta."""

    uses_batch_statistics = False
    freezable = False  # frozen already

    def __init__(self, num_channels: int, eps: float = 1e-5, affine: bool = True,
                 freeze_affine: bool = False):
        super().__init__(num_channels, eps=eps, affine=affine)
        if affine and freeze_affine:
            self.weight.requires_grad_(False)
            self.bias.requires_grad_(False)

    def forward(self, x):
        self._check_input_dim(x)
        return self._eval_normalize(x)


def check_freezable(norm_name: str, fraction) -> None:
    """Refuse ``train.freeze_bn_at`` for a norm that :func:`freeze_batch_norms` cannot freeze."""
    if not norm_class(norm_name).freezable:
        ok = ", ".join(sorted(n for n, c in NORMS.items() if c.freezable))
        raise ConfigError("train.freeze_bn_at", fraction, f"norm={norm_name} has no batch statistics that "
                          f"population statistics could replace: use null, or one of norm={ok}")


def _frozen_copy(layer: BatchNorm) -> FrozenBatchNorm:
    frozen = FrozenBatchNorm(layer.num_features, eps=layer.eps, affine=layer.affine)
    frozen.weight, frozen.bias = layer.weight, layer.bias  # the same Parameters: optimizer state carries on
    for name in ("running_mean", "running_var", "num_batches_tracked"):
        setattr(frozen, name, getattr(layer, name))
    return frozen.train(layer.training)


def freeze_batch_norms(model: nn.Module) -> int:
    """Swap every freezable BN layer of ``model`` (``Norm.freezable``) for a ``frozen_batch`` layer holding
    its very parameters and buffers: from then on it normalizes with its running statistics in train mode
    too, gamma and beta still trained (the state_dict's keys stay the same). Returns how many were swapped."""
    swaps = [(parent, name, child) for parent in model.modules() for name, child in parent.named_children()
             if isinstance(child, BatchNorm) and type(child).freezable]
    for parent, name, child in swaps:
        setattr(parent, name, _frozen_copy(child))
    return len(swaps)


@torch.no_grad()
def bn_layers(model: nn.Module) -> list[nn.Module]:
    """Every BN layer (the registry's kinds and torch's): what train mode switches to batch statistics."""
    return [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


def statistics_layers(model: nn.Module) -> list[nn.Module]:
    """The BN layers whose running statistics are estimated from batches (not ``frozen_batch``'s, which are
    fixed): what PreciseBN and ``normexp-recalibrate`` recompute."""
    return [m for m in bn_layers(model)
            if m.running_mean is not None and getattr(type(m), "uses_batch_statistics", True)]


def freeze_with_precise_stats(model: nn.Module, batches) -> int:
    """``train.freeze_bn_at``: population statistics of every BN layer from one pass over ``batches``
    (:func:`recompute_running_stats`, the ``precise`` estimator), then :func:`freeze_batch_norms`."""
    recompute_running_stats(model, batches, statistics_layers(model), "precise")
    return freeze_batch_norms(model)


@register("sync_batch")
class SyncBatchNorm(BatchNorm):
    """BN with statistics over the batches of every process of a multi-process run: per-channel sums are
    all-reduced with autograd-aware collectives (gloo or nccl), so gradients flow across processes too.
    Without a process group it is plain BN. (Not torch's nn.SyncBatchNorm: DDP refuses that on CPU.)"""

    syncs_across_processes = True

    def __init__(self, num_channels: int, eps: float = 1e-5, momentum: float = 0.1, affine: bool = True):
        super().__init__(num_channels, eps=eps, momentum=momentum, affine=affine)
        self.process_group = None

    def forward(self, x):
        synced = self.training and dist.is_available() and dist.is_initialized() and x.device.type != "meta"
        if not synced:
            return super().forward(x)
        from torch.distributed._functional_collectives import all_reduce  # lazy: distributed (differentiable)

        group = self.process_group or dist.group.WORLD
        dims = _reduce_dims(x)
        local_n = torch.tensor([x.numel() / x.size(1)], dtype=x.dtype, device=x.device)
        n = all_reduce(local_n, "sum", group)
        mean = all_reduce(x.sum(dims), "sum", group) / n
        centred = x - _per_channel(mean, x)
        var = all_reduce(centred.pow(2).sum(dims), "sum", group) / n
        self._update_running(mean, var * n / (n - 1))
        return self._affine(centred * _per_channel(torch.rsqrt(var + self.eps), x))


PLACEMENTS = ("before", "after")


@dataclass(frozen=True)
class NormSpec:
    """What a model needs to place norms: which layer, its options, before or after the nonlinearity."""

    name: str = "none"
    placement: str = "before"
    options: dict = field(default_factory=dict)

    @classmethod
    def from_config(cls, cfg) -> NormSpec:
        given = {k: cfg[k] for k in ("name", "placement") if k in cfg}  # else the defaults above
        spec = cls(**given, options={k: v for k, v in dict(cfg).items() if k not in ("name", "placement")})
        spec.check()
        return spec

    def check(self) -> None:
        norm_class(self.name)
        check_choice("norm.placement", self.placement, PLACEMENTS)
        allowed = norm_options(self.name)
        for key in self.options:
            if key not in allowed:
                raise ConfigError(f"norm.{key}", self.options[key],
                                  f"norm={self.name} takes options: {', '.join(allowed) or 'none'}")

    def __call__(self, num_channels: int) -> nn.Module:
        return create_norm(self.name, num_channels, **self.options)

    @property
    def cls(self) -> type[Norm]:
        return norm_class(self.name)

    @property
    def settings(self) -> dict:
        """Every option of the norm: the given ones and the constructor's defaults."""
        return norm_settings(self.name, self.options)

    @property
    def shifts(self) -> bool:
        """Whether the norm adds a learned shift right after the preceding layer (which then drops its
        bias). A norm without an ``affine`` option always has its shift, if it has one."""
        return self.cls.has_shift and self.settings.get("affine", True) and self.placement == "before"

    @property
    def uses_batch_statistics(self) -> bool:
        return self.cls.uses_batch_statistics

    @property
    def needs_spatial_input(self) -> bool:
        return self.cls.needs_spatial_input

    def check_batch(self, batch: int) -> None:
        """Refuse a batch (what one process's layers see) the norm cannot compute its statistics on."""
        self.cls.check_batch(batch, self.settings)
