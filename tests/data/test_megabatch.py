from __future__ import annotations

import pytest
import torch
from torch.utils.data import TensorDataset

from lightning_prune.data import DigitsDataModule, MegabatchDataModule, MNISTDataModule
from lightning_prune.data.megabatch import seeded_sample
from tests.helpers import MNIST_DIR


def _megabatches(num: int = 4, **kwargs: object) -> MegabatchDataModule:
    data = MegabatchDataModule(DigitsDataModule(batch_size=64), num_megabatches=num, **kwargs)
    data.setup()
    return data


def _user_sets(n: int = 50) -> tuple[TensorDataset, TensorDataset]:
    x = torch.arange(n, dtype=torch.float32).view(n, 1)
    return TensorDataset(x, torch.arange(n) % 3), TensorDataset(x[:4], torch.arange(4) % 3)


def test_split_is_a_seeded_partition_of_the_training_set() -> None:
    data = _megabatches(4)
    assert data.megabatch_sizes() == [315, 314, 314, 314]
    everything = torch.cat(data.megabatches)
    assert sorted(everything.tolist()) == list(range(len(data.train_set)))
    again, other_seed = _megabatches(4), _megabatches(4, seed=1)
    assert all(torch.equal(a, b) for a, b in zip(data.megabatches, again.megabatches))
    assert not torch.equal(data.megabatches[0], other_seed.megabatches[0])


def test_unshuffled_split_keeps_the_dataset_order() -> None:
    train, val = _user_sets(10)
    data = MegabatchDataModule(train_set=train, val_set=val, num_megabatches=3, shuffle=False)
    data.setup()
    assert [part.tolist() for part in data.megabatches] == [[0, 1, 2, 3], [4, 5, 6], [7, 8, 9]]


def test_replay_contents_per_mode() -> None:
    data = _megabatches(4)
    parts = data.megabatches
    full = data.train_indices(2, "full")
    assert torch.equal(full, torch.cat(parts[:3]))
    assert torch.equal(data.train_indices(2, "none"), parts[2])
    partial = data.train_indices(3, "partial", replay_fraction=0.1)
    current, buffers = partial[-len(parts[3]) :], partial[: -len(parts[3])]
    assert torch.equal(current, parts[3])
    # buffers: round(10 %) of each earlier megabatch, drawn from that megabatch only, no duplicates
    assert len(buffers) == 32 + 31 + 31
    assert len(set(buffers.tolist())) == len(buffers)
    offsets = [0, 32, 63, 94]
    for j in range(3):
        assert set(buffers[offsets[j] : offsets[j + 1]].tolist()) <= set(parts[j].tolist())
    # a megabatch's buffer is fixed: the same at every later megabatch
    assert torch.equal(data.train_indices(2, "partial", 0.1)[:63], buffers[:63])
    assert torch.equal(data.train_indices(0, "partial", 0.1), parts[0])


def test_train_loader_serves_the_selected_megabatch() -> None:
    data = _megabatches(3)
    assert len(data.current_train_set()) == len(data.megabatches[0])
    data.set_megabatch(1, replay="full")
    served = torch.cat([y for _, y in data.train_dataloader()])
    expected = data.train_set.tensors[1][torch.cat(data.megabatches[:2])]
    assert sorted(served.tolist()) == sorted(expected.tolist())
    assert len(data.val_dataloader().dataset) == 270
    assert len(data.test_dataloader().dataset) == 270
    assert data.input_shape == (1, 8, 8)
    assert data.num_classes == 10


def test_users_own_dataset() -> None:
    train, val = _user_sets(50)
    data = MegabatchDataModule(train_set=train, val_set=val, num_megabatches=5, batch_size=8, num_classes=3)
    data.setup()
    assert data.megabatch_sizes() == [10] * 5
    assert data.input_shape == (1,)
    assert data.batch_size == 8
    with pytest.raises(ValueError, match="no test set"):
        data.test_dataloader()


@pytest.mark.skipif(not MNIST_DIR.exists(), reason="MNIST IDX files not present")
def test_wraps_mnist() -> None:
    data = MegabatchDataModule(MNISTDataModule(str(MNIST_DIR), batch_size=256), num_megabatches=8)
    data.setup()
    assert sum(data.megabatch_sizes()) == 55000
    assert data.input_shape == (1, 28, 28)
    assert len(data.test_set) == 10000
    assert data.batch_size == 256


def test_seeded_sample_is_reproducible_and_ordered() -> None:
    indices = torch.arange(100, 200)
    sample = seeded_sample(indices, 10, 0, 3)
    assert torch.equal(sample, seeded_sample(indices, 10, 0, 3))
    assert not torch.equal(sample, seeded_sample(indices, 10, 0, 4))
    assert sample.tolist() == sorted(sample.tolist())
    assert len(set(sample.tolist())) == 10


def _digits(**kwargs: object) -> MegabatchDataModule:
    return MegabatchDataModule(DigitsDataModule(), **kwargs)


def _tiny(**kwargs: object) -> MegabatchDataModule:
    train, val = _user_sets(5)
    data = MegabatchDataModule(train_set=train, val_set=val, **kwargs)
    data.setup()
    return data


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda: _digits(num_megabatches=0), "num_megabatches must be an integer >= 1, got 0"),
        (lambda: _digits(num_megabatches=2.5), "num_megabatches must be an integer >= 1, got 2.5"),
        (lambda: _digits(batch_size=0), "batch_size must be >= 1, got 0"),
        (lambda: _digits(train_set=_user_sets()[0]), "give either datamodule"),
        (lambda: MegabatchDataModule(), "give either datamodule"),
        (lambda: MegabatchDataModule(train_set=_user_sets()[0]), "train_set needs val_set"),
        (lambda: _tiny(num_megabatches=6), "num_megabatches=6 exceeds the 5 training samples"),
    ],
)
def test_megabatch_datamodule_bad_arguments(make: object, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        make()


@pytest.mark.parametrize(
    ("megabatch", "replay", "fraction", "match"),
    [
        (4, "full", 0.1, r"megabatch must be in \[0, 3\]"),
        (-1, "full", 0.1, r"megabatch must be in \[0, 3\]"),
        (1, "some", 0.1, "replay must be one of"),
        (1, "partial", 1.0, r"replay_fraction must be in \(0, 1\)"),
        (1, "partial", 0.0, r"replay_fraction must be in \(0, 1\)"),
    ],
)
def test_set_megabatch_bad_arguments(megabatch: int, replay: str, fraction: float, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        _megabatches(4).set_megabatch(megabatch, replay, fraction)
