"""Datasets: MNIST from its IDX files, and scikit-learn's bundled 8x8 digits.

MNIST is read from a folder holding the four standard files, gzipped or not:
train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-images-idx3-ubyte,
t10k-labels-idx1-ubyte. The folder is `path`, else the environment variable
FASTNN_MNIST_DIR.
"""

import gzip
import os
from pathlib import Path

import numpy as np

__all__ = ["find_mnist", "load_digits", "load_mnist"]

_MNIST_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
_IDX_UBYTE = 0x08


def read_idx(path):
    """An IDX file of unsigned bytes (optionally gzipped) as a uint8 array.

    Raises ValueError when the header is not IDX/ubyte or the data length does not
    match the dimensions it declares.
    """
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError) as exc:  # gzip raises these on truncated files
        raise ValueError(f"{path}: cannot read: {exc}") from exc
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != _IDX_UBYTE:
        raise ValueError(f"{path}: not an IDX file of unsigned bytes")
    ndim = raw[3]
    header = 4 + 4 * ndim
    if ndim == 0 or len(raw) < header:
        raise ValueError(f"{path}: truncated IDX header")
    shape = tuple(int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    expected = int(np.prod(shape))
    if len(raw) - header != expected:
        raise ValueError(
            f"{path}: header declares shape {shape} ({expected} bytes) but the file holds "
            f"{len(raw) - header} bytes of data"
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape)


def find_mnist(path=None):
    """The MNIST folder: `path`, else $FASTNN_MNIST_DIR; None if neither is set."""
    folder = path if path is not None else os.environ.get("FASTNN_MNIST_DIR")
    return Path(folder) if folder else None


def _locate(folder, stem):
    for name in (stem, stem + ".gz"):
        if (folder / name).is_file():
            return folder / name
    raise FileNotFoundError(f"MNIST: neither {stem} nor {stem}.gz in {folder}")


def load_mnist(path=None):
    """((x_train, y_train), (x_test, y_test)) of MNIST, as uint8 arrays.

    Images are (N, 28, 28), labels (N,), exactly as the IDX files hold them.
    """
    folder = find_mnist(path)
    if folder is None:
        raise FileNotFoundError(
            "MNIST: pass the folder of its IDX files as path=, or set FASTNN_MNIST_DIR"
        )
    arrays = {key: read_idx(_locate(folder, stem)) for key, stem in _MNIST_FILES.items()}
    for split in ("train", "test"):
        images, labels = arrays[f"{split}_images"], arrays[f"{split}_labels"]
        if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
            raise ValueError(
                f"MNIST {split}: images {images.shape} and labels {labels.shape} do not pair"
            )
        if labels.size and labels.max() > 9:
            raise ValueError(f"MNIST {split}: label {labels.max()} is not a digit")
    return (
        (arrays["train_images"], arrays["train_labels"]),
        (arrays["test_images"], arrays["test_labels"]),
    )


def load_digits():
    """(X, y) of scikit-learn's 8x8 handwritten digits: X (1797, 64) float64 in [0, 16].

    The data ship inside scikit-learn (`pip install fastnn[sklearn]`).
    """
    try:
        from sklearn.datasets import load_digits as sk_load_digits
    except ImportError as exc:
        raise ImportError(
            "load_digits needs scikit-learn, which ships the data: pip install 'fastnn[sklearn]'"
        ) from exc
    return sk_load_digits(return_X_y=True)
