"""Test-set corruptions (data.corruption) against torchvision, scipy, closed forms and hand-made shifts; the
corrupted test set as the data a run evaluates, and its first K images as the unlabeled target domain."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from normexp.config import validate
from normexp.data import build_data, compass_shifts, corrupt, load_arrays, target_indices
from normexp.errors import ConfigError

CPU = torch.device("cpu")
COMPASS = {  # (rows, columns) of a 3-pixel shift, rounded by hand: 3 cos 45 = 2.12 -> 2; north is up
    "E": (0, 3), "NE": (-2, 2), "N": (-3, 0), "NW": (-2, -2), "W": (0, -3), "SW": (2, -2), "S": (3, 0),
    "SE": (2, 2),
}


def _images(n=6, c=3, h=9, w=11, seed=0) -> torch.Tensor:
    return torch.rand(n, c, h, w, generator=torch.Generator().manual_seed(seed))


def _shifted(image: torch.Tensor, rows: int, cols: int) -> torch.Tensor:
    """``image`` (C, H, W) moved by (rows, cols), zeros where nothing moved in: slicing, by hand."""
    out = torch.zeros_like(image)
    h, w = image.shape[1:]
    out[:, max(rows, 0):h + min(rows, 0), max(cols, 0):w + min(cols, 0)] = \
        image[:, max(-rows, 0):h - max(rows, 0), max(-cols, 0):w - max(cols, 0)]
    return out


# ---------------------------------------------------------------- each corruption

def test_blur_equals_torchvisions_gaussian_blur_and_scipys_gaussian_filter_with_mirror_edges():
    from scipy.ndimage import gaussian_filter
    from torchvision.transforms.functional import gaussian_blur

    x = _images()
    ours = corrupt(x, "blur")  # sigma 1.5: radius ceil(4.5) = 5, an 11-tap kernel
    torch.testing.assert_close(ours, gaussian_blur(x, kernel_size=[11, 11], sigma=[1.5, 1.5]),
                               rtol=0, atol=1e-6)
    expected = gaussian_filter(x.double().numpy(), sigma=(0, 0, 1.5, 1.5), mode="mirror", radius=(0, 0, 5, 5))
    np.testing.assert_allclose(ours.numpy(), expected, rtol=0, atol=1e-6)
    wider = gaussian_filter(x.double().numpy(), sigma=(0, 0, 2.5, 2.5), mode="mirror", radius=(0, 0, 8, 8))
    np.testing.assert_allclose(corrupt(x, "blur", severity=2.5).numpy(), wider, rtol=0, atol=1e-6)


def test_gaussian_noise_has_the_severitys_mean_and_spread_and_clips_as_the_normal_law_says():
    x = torch.full((200, 1, 28, 28), 0.5)
    n = x.numel()
    small = (corrupt(x, "gaussian_noise", severity=0.1) - x).double()  # 5 sigma from the edges: no clipping
    assert abs(small.mean().item()) < 4 * 0.1 / math.sqrt(n)
    assert abs(small.std().item() / 0.1 - 1) < 4 / math.sqrt(2 * n)
    noisy = corrupt(x, "gaussian_noise")  # sigma 0.3: P(|z| > 0.5 / 0.3) of the values end at 0 or 1
    clipped = ((noisy == 0) | (noisy == 1)).double().mean().item()
    p = math.erfc(0.5 / 0.3 / math.sqrt(2))
    assert abs(clipped - p) < 4 * math.sqrt(p * (1 - p) / n)
    assert not torch.equal(noisy[0], noisy[1])  # fresh noise per image


def test_translate_moves_each_image_3_pixels_towards_one_of_the_8_compass_directions_with_zero_fill():
    x = _images(n=400, c=2, h=12, w=13) * 0.9 + 0.1  # no zero pixels: zeros can only be the fill
    y = corrupt(x, "translate")
    seen = []
    for image, moved in zip(x, y, strict=True):
        matches = [d for d, (r, c) in COMPASS.items() if torch.equal(moved, _shifted(image, r, c))]
        assert len(matches) == 1
        seen.append(matches[0])
    counts = {d: seen.count(d) for d in COMPASS}
    assert min(counts.values()) >= 25, counts  # 50 expected each; P(< 25) is below 1e-5
    assert compass_shifts(3.0).tolist() == [list(s) for s in COMPASS.values()]  # E, then counterclockwise


def test_contrast_scales_deviations_from_each_images_own_mean_and_brightness_adds():
    x = _images(n=4)
    m = x.double().numpy().mean(axis=(1, 2, 3), keepdims=True)
    np.testing.assert_allclose(corrupt(x, "contrast").numpy(), m + 0.3 * (x.double().numpy() - m), atol=1e-6)
    steep = np.clip(m + 3.0 * (x.double().numpy() - m), 0, 1)  # severity 3: clipped
    np.testing.assert_allclose(corrupt(x, "contrast", severity=3.0).numpy(), steep, atol=1e-6)
    np.testing.assert_allclose(corrupt(x, "brightness").numpy(), np.clip(x.numpy() + 0.3, 0, 1), atol=1e-7)
    darker = np.clip(x.numpy() - 0.5, 0, 1)
    np.testing.assert_allclose(corrupt(x, "brightness", severity=-0.5).numpy(), darker, atol=1e-7)


@pytest.mark.parametrize("name, severity", [("gaussian_noise", 2.0), ("blur", 1.5), ("translate", 3),
                                            ("contrast", 5.0), ("brightness", 0.8), ("brightness", -0.8)])
def test_every_corruption_stays_in_the_unit_interval_and_is_a_function_of_its_seed(name, severity):
    x = _images(n=20)
    y = corrupt(x, name, severity, seed=3)
    assert 0 <= y.min() and y.max() <= 1
    assert torch.equal(y, corrupt(x, name, severity, seed=3))
    if name in ("gaussian_noise", "translate"):  # the random ones
        assert not torch.equal(y, corrupt(x, name, severity, seed=4))


# ---------------------------------------------------------------- the corrupted test set of a run

BASE = ["data=mnist5k", "data.test_subset=300", "data.normalize=unit"]


def _data(compose, *extra, seed=0):
    cfg = compose([*BASE, *extra])
    validate(cfg)
    return build_data(cfg.data, CPU, seed)


def test_the_test_images_are_corrupted_in_pixel_space_before_standardization_and_nothing_else(compose):
    clean = _data(compose)
    bright = _data(compose, "data.corruption=brightness")
    raw_test = clean.x_test.double().numpy()  # unit: x / 255
    np.testing.assert_allclose(bright.x_test.numpy(), np.clip(raw_test + 0.3, 0, 1), atol=1e-6)
    assert torch.equal(bright.x_train, clean.x_train) and torch.equal(bright.y_test, clean.y_test)
    assert torch.equal(bright.batch(3)[0], clean.batch(3)[0])

    stronger = _data(compose, "data.corruption=brightness", "data.corruption_severity=0.5")
    np.testing.assert_allclose(stronger.x_test.numpy(), np.clip(raw_test + 0.5, 0, 1), atol=1e-6)

    standardized = _data(compose, "data.corruption=brightness", "data.normalize=standardize")
    train = clean.x_train.double().numpy() * 255
    mean, std = train.mean(), train.std(ddof=1)  # one channel
    expected = (np.clip(raw_test + 0.3, 0, 1) * 255 - mean) / std
    np.testing.assert_allclose(standardized.x_test.numpy(), expected, rtol=1e-5, atol=1e-5)


def test_the_corrupted_test_set_depends_on_corruption_seed_not_on_the_runs_seed(compose):
    a = _data(compose, "data.corruption=gaussian_noise", seed=0)
    assert torch.equal(a.x_test, _data(compose, "data.corruption=gaussian_noise", seed=5).x_test)
    other = _data(compose, "data.corruption=gaussian_noise", "data.corruption_seed=1")
    assert not torch.equal(a.x_test, other.x_test)
    x_test = load_arrays(compose(BASE).data)[2]
    assert len(x_test) == 1000 and len(a.x_test) == 300  # the test subset is what gets corrupted


def test_target_batches_are_the_first_k_corrupted_test_images_in_a_fixed_order_without_labels(compose):
    d = _data(compose, "data.corruption=blur", "data.eval_batch_size=40")
    batches = list(d.target_batches(100))
    assert [len(b) for b in batches] == [40, 40, 20] and all(isinstance(b, torch.Tensor) for b in batches)
    order = torch.randperm(300, generator=torch.Generator().manual_seed(20_210_331))  # TARGET_SEED
    torch.testing.assert_close(torch.cat(batches), d.x_test[order[:100]], rtol=0, atol=0)
    assert torch.equal(target_indices(300, 100), order[:100])
    again = _data(compose, "data.corruption=blur", seed=7)  # the same images for another run seed
    torch.testing.assert_close(torch.cat(list(again.target_batches(100, batch_size=100))), torch.cat(batches))
    everything = torch.cat(list(d.target_batches(10_000)))
    assert len(everything) == 300 and len({r.numpy().tobytes() for r in everything}) == len(
        {r.numpy().tobytes() for r in d.x_test})


# ---------------------------------------------------------------- bad values

@pytest.mark.parametrize("extra, key, says", [
    (["data.corruption=fog"], "data.corruption", "choose one of: blur, brightness, contrast, gaussian_noise, "
                                                 "translate, null"),
    (["data.corruption_severity=0.5"], "data.corruption_severity", "data.corruption, which is null"),
    (["data.corruption=blur", "data.corruption_severity=0"], "data.corruption_severity",
     "must be a number > 0"),
    (["data.corruption=blur", "data.corruption_severity=9.5"], "data.corruption_severity",
     "below the 28-pixel image side: choose sigma < 9.33333"),
    (["data.corruption=gaussian_noise", "data.corruption_severity=-1"], "data.corruption_severity",
     "must be a number >= 0"),
    (["data.corruption_seed=-1"], "data.corruption_seed", "must be an integer >= 0"),
    (["model=dln", "data=gaussian_linear", "+data.corruption=blur"], "data.corruption", "no such config key"),
])
def test_bad_corruption_settings_are_one_line_errors_naming_the_key(compose, extra, key, says):
    with pytest.raises(ConfigError) as error:
        validate(compose(["data=mnist5k", *extra]))
    assert error.value.key == key and says in str(error.value) and "\n" not in str(error.value)
