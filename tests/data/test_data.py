import gzip

import numpy as np
import pytest
import torch

from lightning_prune.data import (
    DigitsDataModule,
    EpochSeededSampler,
    MNISTDataModule,
    NpzDataModule,
    TabularDataModule,
    read_idx,
)
from tests.helpers import MNIST_DIR


def _labels(dataset) -> np.ndarray:
    return dataset.tensors[1].numpy()


def test_digits_splits_are_disjoint_stratified_and_seeded():
    a, b, c = DigitsDataModule(seed=0), DigitsDataModule(seed=0), DigitsDataModule(seed=1)
    for dm in (a, b, c):
        dm.setup()
    assert a.input_shape == (1, 8, 8)
    assert a.num_classes == 10
    torch.testing.assert_close(a.train_set.tensors[0], b.train_set.tensors[0])
    assert not torch.equal(a.train_set.tensors[0], c.train_set.tensors[0])
    rows = lambda ds: {tuple(x.flatten().tolist()) for x in ds.tensors[0]}  # noqa: E731
    assert not rows(a.val_set) & rows(a.test_set)
    assert len(rows(a.train_set) & rows(a.test_set)) <= 5  # digits has a few duplicate images
    assert np.bincount(_labels(a.val_set)).min() >= 25
    assert float(a.train_set.tensors[0].min()) >= 0
    assert float(a.train_set.tensors[0].max()) <= 1


def test_train_fraction_keeps_a_seeded_part():
    dm = DigitsDataModule(train_fraction=0.2)
    dm.setup()
    assert len(dm.train_set) == pytest.approx(0.2 * 1257, abs=1)
    assert len(dm.val_set) == 270


def test_classes_keep_a_task_renumbered_in_the_order_given():
    full, task = DigitsDataModule(), DigitsDataModule(classes=[7, 5, 6])
    for dm in (full, task):
        dm.setup()
    assert task.num_classes == 3
    sevens = int((_labels(full.train_set) == 7).sum() + (_labels(full.val_set) == 7).sum())
    sevens += int((_labels(full.test_set) == 7).sum())
    task_zeros = sum(int((_labels(ds) == 0).sum()) for ds in (task.train_set, task.val_set, task.test_set))
    assert task_zeros == sevens  # label 7 became 0, and every 7 was kept
    assert set(_labels(task.test_set).tolist()) == {0, 1, 2}


def test_classes_absent_from_the_data_are_named():
    with pytest.raises(ValueError, match=r"labels \[11\] do not occur"):
        DigitsDataModule(classes=[1, 11]).setup()


def test_sampler_order_depends_on_seed_and_epoch_only():
    sampler = EpochSeededSampler(10, seed=3)
    first = list(sampler)
    assert sorted(first) == list(range(10))
    assert list(sampler) == first
    sampler.set_epoch(1)
    assert list(sampler) != first
    sampler.set_epoch(0)
    assert list(sampler) == first


@pytest.mark.parametrize(
    ("name", "features", "classes"), [("breast_cancer", 30, 2), ("wine", 13, 3), ("digits", 64, 10)]
)
def test_tabular_standardised_on_train_split(name, features, classes):
    dm = TabularDataModule(name)
    dm.setup()
    x = dm.train_set.tensors[0]
    assert dm.input_shape == (features,)
    assert dm.num_classes == classes
    torch.testing.assert_close(x.mean(0), torch.zeros(features), atol=1e-4, rtol=0)
    assert abs(float(dm.val_set.tensors[0].mean())) < 0.3


def test_diabetes_is_regression():
    dm = TabularDataModule("diabetes")
    dm.setup()
    assert dm.train_set.tensors[1].dtype == torch.float32
    assert dm.num_classes == 1


@pytest.mark.parametrize(
    ("factory", "message"),
    [
        (lambda: TabularDataModule("titanic"), "name must be one of"),
        (lambda: DigitsDataModule(val_fraction=0), r"val_fraction must be in \(0, 1\)"),
        (lambda: DigitsDataModule(train_fraction=1.5), r"train_fraction must be in \(0, 1\]"),
        (lambda: DigitsDataModule(batch_size=0), "batch_size must be >= 1"),
        (lambda: DigitsDataModule(classes=[5, 5]), "classes must be None or distinct integer labels"),
        (lambda: DigitsDataModule(classes=[]), "classes must be None or distinct integer labels"),
    ],
)
def test_bad_data_arguments(factory, message):
    with pytest.raises(ValueError, match=message):
        factory()


def _write_idx(path, array, magic, compress):
    header = magic.to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in array.shape)
    data = header + array.astype(np.uint8).tobytes()
    path.write_bytes(gzip.compress(data) if compress else data)


@pytest.mark.parametrize("compress", [True, False])
def test_mnist_reads_idx_files_gzip_or_raw(tmp_path, compress):
    rng = np.random.default_rng(0)
    suffix = ".gz" if compress else ""
    for prefix, count in (("train", 200), ("t10k", 50)):
        _write_idx(
            tmp_path / f"{prefix}-images-idx3-ubyte{suffix}", rng.integers(0, 256, (count, 28, 28)), 2051, compress
        )
        _write_idx(tmp_path / f"{prefix}-labels-idx1-ubyte{suffix}", np.arange(count) % 10, 2049, compress)
    dm = MNISTDataModule(str(tmp_path), val_fraction=0.1)
    dm.setup()
    assert (len(dm.train_set), len(dm.val_set), len(dm.test_set)) == (180, 20, 50)
    assert dm.input_shape == (1, 28, 28)
    assert read_idx(tmp_path / f"t10k-labels-idx1-ubyte{suffix}").tolist()[:3] == [0, 1, 2]


def test_mnist_errors_name_what_is_missing(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"lacks \['train-images-idx3-ubyte'"):
        MNISTDataModule(str(tmp_path)).setup()
    (tmp_path / "bad").write_bytes(b"\x00\x00\x00\x07" + b"\x00" * 8)
    with pytest.raises(ValueError, match="not an MNIST IDX file"):
        read_idx(tmp_path / "bad")


@pytest.mark.skipif(not MNIST_DIR.exists(), reason=f"real MNIST not at {MNIST_DIR}")
def test_real_mnist():
    dm = MNISTDataModule(str(MNIST_DIR))
    dm.setup()
    assert (len(dm.train_set), len(dm.val_set), len(dm.test_set)) == (55000, 5000, 10000)
    assert np.bincount(_labels(dm.test_set)).tolist()[:3] == [980, 1135, 1032]


def test_npz_loader(tmp_path):
    rng = np.random.default_rng(0)
    path = tmp_path / "data.npz"
    np.savez(path, x=rng.normal(size=(100, 5)).astype(np.float32), y=np.arange(100) % 4)
    dm = NpzDataModule(str(path), batch_size=16)
    dm.setup()
    assert dm.input_shape == (5,)
    assert dm.num_classes == 4
    assert len(dm.train_set) + len(dm.val_set) + len(dm.test_set) == 100
    x, y = next(iter(dm.train_dataloader()))
    assert x.shape == (16, 5)
    assert y.dtype == torch.long


def test_npz_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        NpzDataModule(str(tmp_path / "nope.npz")).setup()
    np.savez(tmp_path / "d.npz", features=np.zeros((4, 2)))
    with pytest.raises(KeyError, match=r"has no array 'x'; it has \['features'\]"):
        NpzDataModule(str(tmp_path / "d.npz")).setup()


def test_data_paths_expand_the_home_directory(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    np.savez(tmp_path / "arrays.npz", x=np.zeros((4, 3), dtype=np.float32), y=np.arange(4) % 2)
    assert NpzDataModule("~/arrays.npz").path == str(tmp_path / "arrays.npz")
    assert MNISTDataModule("~/mnist").data_dir == tmp_path / "mnist"
