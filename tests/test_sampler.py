"""data.sampler: the iid default as it always was, and class-grouped batches (Wu & Johnson's batches of few
classes): what each batch holds, a pure function of (seed, step), bit-identical resumes, one-line refusals."""

from __future__ import annotations

import pytest
import torch

from normexp.compose import compose as compose_config
from normexp.config import validate
from normexp.data import TensorData, build_data
from normexp.errors import ConfigError
from normexp.records import CHECKPOINT, SUMMARY, read_json
from normexp.train import run
from tests.test_reliability import RESUMABLE, _failing_batch, assert_same_run

CPU = torch.device("cpu")
GROUPED = ["data=mnist5k", "data.train_subset=null", "data.sampler=class_grouped", "data.batch_size=60"]


def _data(compose, *extra, seed=0):
    cfg = compose(list(extra))
    validate(cfg)
    return build_data(cfg.data, CPU, seed)


@pytest.mark.parametrize("k", [1, 2, 3, 5, 10])
def test_each_batch_holds_k_classes_in_equal_blocks_of_distinct_images(compose, k):
    d = _data(compose, *GROUPED, f"data.classes_per_batch={k}")
    for step in range(0, 200, 7):
        x, y = d.batch(step)
        assert len(y) == 60
        blocks = y.view(k, 60 // k)
        assert (blocks == blocks[:, :1]).all()  # one class per block
        assert len(set(blocks[:, 0].tolist())) == k  # k different classes
        rows = {r.numpy().tobytes() for r in x}
        assert len(rows) == 60  # no image twice in a batch


def test_classes_and_images_are_drawn_uniformly_over_many_steps(compose):
    d = _data(compose, *GROUPED, "data.train_subset=2000")
    counts = torch.zeros(10)
    seen = set()
    for step in range(500):
        x, y = d.batch(step)
        counts += torch.bincount(y[::30], minlength=10)  # the two classes of the batch
        seen |= {r.numpy().tobytes() for r in x}
    assert counts.sum() == 1000 and counts.min() >= 60 and counts.max() <= 140  # 100 expected each
    assert len(seen) > 0.99 * d.n_train  # 30,000 draws from ~200 images a class: every one is drawn


def test_the_batches_are_a_pure_function_of_seed_and_step(compose):
    d = _data(compose, *GROUPED)
    fresh = _data(compose, *GROUPED)
    for step in (11, 2, 140, 0, 7):  # any order, a fresh object: the same batches
        torch.testing.assert_close(fresh.batch(step), d.batch(step), rtol=0, atol=0)
    assert not torch.equal(_data(compose, *GROUPED, seed=1).batch(0)[1], d.batch(0)[1])
    assert not torch.equal(d.batch(1)[1], d.batch(0)[1])


def test_the_iid_default_is_each_epochs_seeded_permutation_as_before(compose):
    d = _data(compose, "data=mnist5k", "data.batch_size=60")
    assert d.cfg.sampler == "iid" and d.class_groups is None
    n, per_epoch = d.n_train, d.n_train // 60
    for step in (0, 5, per_epoch + 3):
        epoch, pos = divmod(step, per_epoch)
        order = torch.randperm(n, generator=torch.Generator().manual_seed(0 * 1_000_003 + epoch))
        idx = order[pos * 60:(pos + 1) * 60]
        x, y = d.batch(step)
        assert torch.equal(x, d.x_train[idx]) and torch.equal(y, d.y_train[idx])


@pytest.mark.parametrize("extra, says", [
    (["data.classes_per_batch=7"],
     "must divide data.batch_size=60 and be at most the 10 classes: choose one of 1, 2, 3, 4, 5, 6, 10"),
    (["data.batch_size=120", "data.classes_per_batch=12"], "be at most the 10 classes"),
    (["data.classes_per_batch=0"], "must be an integer >= 1"),
])
def test_classes_per_batch_that_cannot_split_the_batch_is_a_one_line_error(compose, extra, says):
    with pytest.raises(ConfigError) as error:
        validate(compose([*GROUPED, *extra]))
    assert error.value.key == "data.classes_per_batch" and says in str(error.value)
    assert "\n" not in str(error.value)


def test_a_class_with_fewer_images_than_its_share_of_the_batch_is_refused_when_the_data_loads(compose):
    with pytest.raises(ConfigError) as error:
        _data(compose, *GROUPED, "data.classes_per_batch=1", "data.train_subset=100")
    message = str(error.value)
    assert error.value.key == "data.classes_per_batch" and "\n" not in message
    assert "takes 60 images from each of its classes, and class 0 has" in message
    with pytest.raises(ConfigError, match="data.sampler='grouped'"):
        validate(compose([*GROUPED, "data.sampler=grouped"]))


# ---------------------------------------------------------------- resume (as in test_reliability.py)

GROUPED_RUN = [*RESUMABLE, "data.sampler=class_grouped", "data.batch_size=20", "data.classes_per_batch=2"]


@pytest.fixture(scope="module")
def grouped_reference(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("grouped") / "run"
    assert run(compose_config(GROUPED_RUN), run_dir)["status"] == "completed"
    return run_dir


def test_a_class_grouped_run_resumed_from_its_checkpoint_is_bit_identical(tmp_path, monkeypatch,
                                                                          grouped_reference):
    real_batch = TensorData.batch
    monkeypatch.setattr(TensorData, "batch", _failing_batch(real_batch, 17))
    with pytest.raises(RuntimeError, match="injected fault"):
        run(compose_config(GROUPED_RUN), tmp_path)
    assert (tmp_path / CHECKPOINT).exists() and read_json(tmp_path / SUMMARY)["status"] == "failed"
    monkeypatch.setattr(TensorData, "batch", real_batch)
    assert run(compose_config(GROUPED_RUN), tmp_path)["status"] == "completed"
    assert read_json(tmp_path / "meta.json")["resumed_from_step"] == 10
    assert_same_run(grouped_reference, tmp_path)
