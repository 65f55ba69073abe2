"""Data: loaders read tiny files written here in the real formats; batch order, augmentation, subsets and
standardization checked against direct computations."""

from __future__ import annotations

import gzip
import pickle
import struct

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from normexp import data as data_module
from normexp.data import IDX_FILES, build_data, load_arrays, random_crop, random_flip, read_idx
from normexp.errors import ConfigError

CPU = torch.device("cpu")
RNG = np.random.default_rng(0)
ALL = ["data.train_subset=null", "data.test_subset=null", "data.normalize=none"]


def _images(n, *shape):
    return RNG.integers(0, 256, size=(n, *shape), dtype=np.uint8)


def _labels(n, classes=10):
    return np.arange(n) % classes


# ---------------------------------------------------------------- writers of the real formats

def write_idx(path, array: np.ndarray, gz: bool) -> None:
    header = struct.pack(">HBB", 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    with (gzip.open if gz else open)(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


def write_mnist_like(folder, gz: bool, n_train=30, n_test=12) -> list[np.ndarray]:
    folder.mkdir(parents=True, exist_ok=True)
    arrays = [_images(n_train, 28, 28), _labels(n_train), _images(n_test, 28, 28),
              _labels(n_test)[::-1].copy()]
    for name, array in zip(IDX_FILES, arrays, strict=True):
        write_idx(folder / (name + (".gz" if gz else "")), array, gz)
    return arrays


def write_cifar10(root, per_batch=4, n_test=6):
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    xs, ys = [], []
    for i in range(1, 6):
        x, y = _images(per_batch, 3072), [int(v) for v in RNG.integers(0, 10, per_batch)]
        xs.append(x), ys.extend(y)
        with open(folder / f"data_batch_{i}", "wb") as f:
            pickle.dump({"batch_label": f"training batch {i} of 5", "labels": y, "data": x,
                         "filenames": [f"{i}_{j}.png" for j in range(per_batch)]}, f, protocol=2)
    x_test, y_test = _images(n_test, 3072), [int(v) for v in RNG.integers(0, 10, n_test)]
    with open(folder / "test_batch", "wb") as f:
        pickle.dump({"batch_label": "testing batch 1 of 1", "labels": y_test, "data": x_test}, f, protocol=2)
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({"label_names": [f"class{i}" for i in range(10)], "num_vis": 3072}, f, protocol=2)
    return (np.concatenate(xs).reshape(-1, 3, 32, 32), np.array(ys), x_test.reshape(-1, 3, 32, 32),
            np.array(y_test))


# ---------------------------------------------------------------- MNIST format (IDX)

@pytest.mark.parametrize("gz", [False, True])
@pytest.mark.parametrize("name,folder", [("mnist", "MNIST"), ("fashion_mnist", "FashionMNIST")])
def test_idx_datasets_load_from_torchvision_layout(compose, tmp_path, name, folder, gz):
    arrays = write_mnist_like(tmp_path / folder / "raw", gz)
    d = build_data(compose([f"data={name}", f"data.root={tmp_path}", *ALL]).data, CPU, 0)
    assert d.info.in_shape == (1, 28, 28)
    np.testing.assert_array_equal(d.x_train.squeeze(1).numpy(), arrays[0])
    np.testing.assert_array_equal(d.y_train.numpy(), arrays[1])
    np.testing.assert_array_equal(d.x_test.squeeze(1).numpy(), arrays[2])
    np.testing.assert_array_equal(d.y_test.numpy(), arrays[3])
    assert d.y_train.dtype == torch.int64 and d.x_train.dtype == torch.float32


def test_fashion_mnist_reads_debians_gz_files_when_root_has_none(compose, tmp_path, monkeypatch):
    arrays = write_mnist_like(tmp_path / "debian", gz=True)
    monkeypatch.setattr(data_module, "FASHION_DEBIAN_DIR", tmp_path / "debian")
    (tmp_path / "empty").mkdir()
    d = build_data(compose(["data=fashion_mnist", f"data.root={tmp_path / 'empty'}", *ALL]).data, CPU, 0)
    np.testing.assert_array_equal(d.x_train.squeeze(1).numpy(), arrays[0])
    np.testing.assert_array_equal(d.y_test.numpy(), arrays[3])
    assert not any((tmp_path / "empty").iterdir())  # nothing unpacked or written
    # files under data.root come first
    own = write_mnist_like(tmp_path / "own" / "FashionMNIST" / "raw", gz=False, n_train=20)
    d = build_data(compose(["data=fashion_mnist", f"data.root={tmp_path / 'own'}", *ALL]).data, CPU, 0)
    np.testing.assert_array_equal(d.x_train.squeeze(1).numpy(), own[0])


def test_fashion_mnist_without_files_or_debian_package_names_its_providers(compose, tmp_path, monkeypatch):
    monkeypatch.setattr(data_module, "FASHION_DEBIAN_DIR", tmp_path / "no-debian")
    with pytest.raises(ConfigError) as err:
        build_data(compose(["data=fashion_mnist", f"data.root={tmp_path}"]).data, CPU, 0)
    assert "dataset-fashion-mnist" in str(err.value) and "data.download=true" in str(err.value)


def test_read_idx_rejects_other_files(tmp_path):
    (tmp_path / "junk").write_bytes(b"not an idx file")
    with pytest.raises(ValueError, match="not an IDX file"):
        read_idx(tmp_path / "junk")
    write_idx(tmp_path / "short", np.zeros((3, 2, 2), np.uint8), gz=False)
    (tmp_path / "short").write_bytes((tmp_path / "short").read_bytes()[:-1])
    with pytest.raises(ValueError, match=r"11 values; its header says \(3, 2, 2\)"):
        read_idx(tmp_path / "short")


# ---------------------------------------------------------------- CIFAR pickles, SVHN .mat

def test_cifar10_reads_user_supplied_pickles_without_md5_sums(compose, tmp_path):
    x_train, y_train, x_test, y_test = write_cifar10(tmp_path)
    d = build_data(compose(["data=cifar10", f"data.root={tmp_path}", *ALL, "data.crop_padding=0",
                            "data.flip=false"]).data, CPU, 0)
    assert d.info.in_shape == (3, 32, 32) and d.n_train == 20
    np.testing.assert_array_equal(d.x_train.numpy(), x_train)
    np.testing.assert_array_equal(d.y_train.numpy(), y_train)
    np.testing.assert_array_equal(d.x_test.numpy(), x_test)
    np.testing.assert_array_equal(d.y_test.numpy(), y_test)
    # the (N, 3072) rows are channel planes: the first 1024 values are the red channel
    np.testing.assert_array_equal(d.x_train[0, 0].flatten().numpy(), x_train.reshape(20, 3072)[0, :1024])


def test_cifar100_reads_fine_labels(compose, tmp_path):
    folder = tmp_path / "cifar-100-python"
    folder.mkdir()
    splits = {}
    for name, n in (("train", 7), ("test", 3)):
        x, fine = _images(n, 3072), [int(v) for v in RNG.integers(0, 100, n)]
        splits[name] = (x, fine)
        with open(folder / name, "wb") as f:
            pickle.dump({"data": x, "fine_labels": fine, "coarse_labels": [v // 5 for v in fine]}, f)
    d = build_data(compose(["data=cifar100", f"data.root={tmp_path}", *ALL]).data, CPU, 0)
    assert d.info.num_classes == 100
    np.testing.assert_array_equal(d.y_train.numpy(), splits["train"][1])
    np.testing.assert_array_equal(d.x_test.reshape(3, -1).numpy(), splits["test"][0])


def test_cifar_with_a_missing_batch_file_is_reported_missing(compose, tmp_path):
    write_cifar10(tmp_path)
    (tmp_path / "cifar-10-batches-py" / "data_batch_3").unlink()
    with pytest.raises(ConfigError, match=r"data.name='cifar10'.*cifar-10-batches-py.*data.download=true"):
        build_data(compose(["data=cifar10", f"data.root={tmp_path}"]).data, CPU, 0)


def test_svhn_reads_mat_files_and_maps_label_10_to_0(compose, tmp_path):
    from scipy.io import savemat

    images = {}
    for split, n in (("train", 9), ("test", 4)):
        x = _images(n, 3, 32, 32)
        y = np.arange(1, n + 1).reshape(-1, 1) % 10 + 1  # labels 1..10, 10 standing for the digit 0
        savemat(tmp_path / f"{split}_32x32.mat", {"X": x.transpose(2, 3, 1, 0), "y": y})  # (H, W, C, N)
        images[split] = (x, y.reshape(-1) % 10)
    d = build_data(compose(["data=svhn", f"data.root={tmp_path}", *ALL]).data, CPU, 0)
    np.testing.assert_array_equal(d.x_train.numpy(), images["train"][0])
    np.testing.assert_array_equal(d.y_train.numpy(), images["train"][1])
    np.testing.assert_array_equal(d.y_test.numpy(), images["test"][1])
    assert d.y_train.min() == 0 and d.y_train.max() == 9


# ---------------------------------------------------------------- ImageNet-style folder (streamed)

def test_imagenet_folder_streams_batches_of_the_crop_size_and_evaluates_the_whole_val_set(compose, tmp_path):
    from PIL import Image

    counts = {"train": 6, "val": 5}
    for split, n in counts.items():
        for c, cls in enumerate(("cat", "dog")):
            (tmp_path / split / cls).mkdir(parents=True)
            for i in range(n - c):  # dog has one image less
                Image.fromarray(_images(1, 20 + i, 24, 3)[0]).save(tmp_path / split / cls / f"{i}.png")
    cfg = compose(["data=imagenet", f"data.root={tmp_path}", "data.crop=16", "data.num_classes=2",
                   "data.workers=0", "data.batch_size=4", "data.eval_batch_size=3"]).data
    d = build_data(cfg, CPU, 0)
    assert d.n_train == 11 and d.steps_per_epoch == 2 and d.info.in_shape == (3, 16, 16)
    x, y = d.batch(0)
    assert x.shape == (4, 3, 16, 16) and x.dtype == torch.float32 and set(y.tolist()) <= {0, 1}
    assert [d.batch(s)[0].shape[0] for s in (1, 2, 3)] == [4, 4, 4]  # into the second epoch
    labels = torch.cat([y for _, y in d.test_batches()])
    assert labels.tolist() == [0] * 5 + [1] * 4  # every val image once
    assert d.fixed_train_batch(3, seed=0)[0].shape == (3, 3, 16, 16)


# ---------------------------------------------------------------- batch order, augmentation, subsets

def _linear_data(compose, seed=0, extra=()):
    cfg = compose(["data=gaussian_linear", "data.n_train=42", "data.batch_size=8", *ALL[:2], *extra]).data
    return build_data(cfg, CPU, seed)


def _row_indices(d, x):
    index = {row.numpy().tobytes(): i for i, row in enumerate(d.x_train)}
    return [index[row.numpy().tobytes()] for row in x]


def test_batch_order_is_a_permutation_per_epoch_and_a_pure_function_of_seed_and_step(compose):
    d = _linear_data(compose)
    assert d.steps_per_epoch == 5  # 42 // 8: the last 2 of each epoch's order are left out
    epochs = []
    for e in range(3):
        idx = [i for s in range(5 * e, 5 * e + 5) for i in _row_indices(d, d.batch(s)[0])]
        assert len(idx) == len(set(idx)) == 40
        epochs.append(idx)
    assert epochs[0] != epochs[1] != epochs[2]
    fresh = _linear_data(compose)
    for step in (11, 2, 14, 0, 7):  # any order, a fresh object: the same batches
        torch.testing.assert_close(fresh.batch(step), d.batch(step), rtol=0, atol=0)
    assert not torch.equal(_linear_data(compose, seed=1).batch(0)[0], d.batch(0)[0])


def test_subsets_are_fixed_and_do_not_depend_on_the_run_seed(compose):
    full = _linear_data(compose)
    sub = _linear_data(compose, seed=0, extra=["data.train_subset=10", "data.test_subset=5"])
    other_seed = _linear_data(compose, seed=3, extra=["data.train_subset=10", "data.test_subset=5"])
    assert sub.n_train == 10 and len(sub.y_test) == 5
    rows = {r.numpy().tobytes() for r in full.x_train}
    assert all(r.numpy().tobytes() in rows for r in sub.x_train)
    assert torch.equal(sub.x_train, other_seed.x_train) and torch.equal(sub.x_test, other_seed.x_test)


def test_vectorized_crop_and_flip_equal_a_per_image_loop():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(6, 3, 8, 7, generator=g)
    pad = 2
    offsets = torch.randint(0, 2 * pad + 1, (6, 2), generator=g)
    flips = torch.tensor([True, False, True, True, False, False])
    crops = random_crop(x, pad, offsets)
    flipped = random_flip(x, flips)
    for i in range(6):
        padded = F.pad(x[i], (pad, pad, pad, pad))
        oy, ox = offsets[i].tolist()
        torch.testing.assert_close(crops[i], padded[:, oy:oy + 8, ox:ox + 7], rtol=0, atol=0)
        torch.testing.assert_close(flipped[i], x[i].flip(-1) if flips[i] else x[i], rtol=0, atol=0)


def test_augmented_batches_are_a_function_of_seed_and_step(compose, tmp_path):
    write_cifar10(tmp_path, per_batch=8)
    overrides = ["data=cifar10", f"data.root={tmp_path}", *ALL, "data.crop_padding=4", "data.flip=true",
                 "data.batch_size=16"]
    d = build_data(compose(overrides).data, CPU, 0)
    plain = build_data(compose([*overrides, "data.crop_padding=0", "data.flip=false"]).data, CPU, 0)
    x3 = d.batch(3)[0]
    torch.testing.assert_close(build_data(compose(overrides).data, CPU, 0).batch(3)[0], x3, rtol=0, atol=0)
    assert not torch.equal(x3, plain.batch(3)[0])  # augmented
    assert torch.equal(d.batch(3)[1], plain.batch(3)[1])  # same examples


# ---------------------------------------------------------------- preprocessing, mnist5k

def test_standardize_uses_per_channel_training_mean_and_std(compose, tmp_path):
    x_train, _, x_test, _ = write_cifar10(tmp_path)
    base = ["data=cifar10", f"data.root={tmp_path}", "data.train_subset=null", "data.test_subset=null",
            "data.crop_padding=0", "data.flip=false"]
    d = build_data(compose([*base, "data.normalize=standardize"]).data, CPU, 0)
    mean = x_train.astype(np.float64).mean(axis=(0, 2, 3), keepdims=True)
    std = x_train.astype(np.float64).std(axis=(0, 2, 3), ddof=1, keepdims=True)
    np.testing.assert_allclose(d.x_train.numpy(), (x_train - mean) / std, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(d.x_test.numpy(), (x_test - mean) / std, rtol=1e-4, atol=1e-4)
    unit = build_data(compose([*base, "data.normalize=unit"]).data, CPU, 0)
    np.testing.assert_allclose(unit.x_test.numpy(), x_test / 255.0, rtol=1e-6)
    binary = build_data(compose([*base, "data.binarize=true"]).data, CPU, 0)
    np.testing.assert_array_equal(binary.x_train.numpy(), (x_train > 127.5).astype(np.float32))
    with pytest.raises(ConfigError, match="data.normalize='zscore'"):
        build_data(compose([*base, "data.normalize=zscore"]).data, CPU, 0)


def test_runs_that_differ_only_in_how_batches_are_drawn_share_the_prepared_arrays(compose, tmp_path):
    x_train, _, x_test, _ = write_cifar10(tmp_path)
    base = ["data=cifar10", f"data.root={tmp_path}", "data.train_subset=null", "data.test_subset=null",
            "data.crop_padding=0", "data.flip=false", "data.normalize=standardize"]
    d = build_data(compose(base).data, CPU, 0)
    batching = build_data(compose([*base, "data.batch_size=4", "data.flip=true", "data.crop_padding=2",
                                   "data.eval_batch_size=3"]).data, CPU, 1)
    assert batching.x_train is d.x_train and batching.x_test is d.x_test and batching.batch_size == 4
    blurred = build_data(compose([*base, "data.corruption=blur"]).data, CPU, 0)
    subset = build_data(compose([*base, "data.test_subset=3"]).data, CPU, 0)
    assert not torch.equal(blurred.x_test, d.x_test) and torch.equal(blurred.x_train, d.x_train)
    assert len(subset.y_test) == 3 and len(data_module._PREPARED) == 2  # the two last data configs are kept
    again = build_data(compose(base).data, CPU, 0)  # prepared anew, from the files
    mean = x_train.astype(np.float64).mean(axis=(0, 2, 3), keepdims=True)
    std = x_train.astype(np.float64).std(axis=(0, 2, 3), ddof=1, keepdims=True)
    np.testing.assert_allclose(again.x_test.numpy(), (x_test - mean) / std, rtol=1e-4, atol=1e-4)


def test_mnist5k_split_is_400_train_and_100_test_per_class_and_disjoint(compose):
    x_train, y_train, x_test, y_test = load_arrays(compose(["data=mnist5k"]).data)
    assert torch.bincount(y_train).tolist() == [400] * 10
    assert torch.bincount(y_test).tolist() == [100] * 10
    train_rows = {r.numpy().tobytes() for r in x_train}
    assert len(train_rows) == 4000 and not any(r.numpy().tobytes() in train_rows for r in x_test)
