"""MNIST from the original IDX files in a directory the user names (gzip-compressed or raw)."""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import numpy as np

from lightning_prune.data.arrays import ArrayDataModule

FILES = {
    "x": "train-images-idx3-ubyte",
    "y": "train-labels-idx1-ubyte",
    "x_test": "t10k-images-idx3-ubyte",
    "y_test": "t10k-labels-idx1-ubyte",
}
_MAGIC = {2049: 1, 2051: 3}  # labels: 1 dimension, images: 3


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read one IDX file (big-endian header: magic, then one int32 size per dimension, then uint8 data).

    Raises:
        ValueError: for an unknown magic number or a size that disagrees with the header.
    """
    path = Path(path)
    raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    magic = int.from_bytes(raw[:4], "big")
    if magic not in _MAGIC:
        raise ValueError(f"{path}: not an MNIST IDX file (magic {magic}, expected one of {sorted(_MAGIC)})")
    ndim = _MAGIC[magic]
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if data.size != int(np.prod(shape)):
        raise ValueError(f"{path}: header says {shape} but the file holds {data.size} values")
    return data.reshape(shape)


class MNISTDataModule(ArrayDataModule):
    """MNIST's 60k/10k split; validation is a stratified, seeded part of the 60k training images.

    Args:
        data_dir: folder with the four IDX files (``.gz`` or uncompressed, original names).
        **kwargs: split and loader arguments of :class:`ArrayDataModule` (``test_fraction`` is unused).

    Raises:
        FileNotFoundError: at setup, naming the directory and the files missing from it.
    """

    def __init__(self, data_dir: str = "../shared/data/mnist", **kwargs: object) -> None:
        kwargs.setdefault("val_fraction", 5000 / 60000)
        super().__init__(**kwargs)
        self.data_dir = Path(data_dir).expanduser()

    def _find(self, stem: str) -> Path | None:
        return next((p for p in (self.data_dir / f"{stem}.gz", self.data_dir / stem) if p.exists()), None)

    def load_arrays(self) -> tuple[np.ndarray, ...]:
        paths = {key: self._find(stem) for key, stem in FILES.items()}
        missing = [FILES[key] for key, path in paths.items() if path is None]
        if missing:
            raise FileNotFoundError(f"MNIST data_dir {str(self.data_dir)!r} lacks {missing} (.gz or raw IDX files)")
        arrays = {key: read_idx(path) for key, path in paths.items()}
        scale = lambda images: (images[:, None] / 255.0).astype(np.float32)  # noqa: E731
        return (
            scale(arrays["x"]),
            arrays["y"].astype(np.int64),
            scale(arrays["x_test"]),
            arrays["y_test"].astype(np.int64),
        )
