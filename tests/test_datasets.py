"""MNIST IDX loading (real files when present) and the digits fallback."""

import gzip
import hashlib
import os
from pathlib import Path

import numpy as np
import pytest

from fastnn import datasets

MNIST_DIR = Path(
    os.environ.get("FASTNN_MNIST_DIR")
    or Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "mnist"
)
needs_mnist = pytest.mark.skipif(
    not (MNIST_DIR / "t10k-labels-idx1-ubyte.gz").exists(), reason="MNIST folder not found"
)


def _write_idx(path, array, gz=False):
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(
        int(n).to_bytes(4, "big") for n in array.shape
    )
    data = header + np.ascontiguousarray(array, np.uint8).tobytes()
    (gzip.open if gz else open)(path, "wb").write(data)


@needs_mnist
def test_real_mnist_shapes_and_canonical_checksum():
    (xtr, ytr), (xte, yte) = datasets.load_mnist(MNIST_DIR)
    assert xtr.shape == (60000, 28, 28) and ytr.shape == (60000,)
    assert xte.shape == (10000, 28, 28) and yte.shape == (10000,)
    assert xtr.dtype == np.uint8 and ytr.dtype == np.uint8
    assert set(np.unique(yte)) == set(range(10))
    # The decompressed label file's canonical md5 (see the data folder's README).
    header = bytes([0, 0, 8, 1]) + (10000).to_bytes(4, "big")
    assert hashlib.md5(header + yte.tobytes()).hexdigest() == "27ae3e4e09519cfbb04c329615203637"


@needs_mnist
def test_env_var_locates_mnist(monkeypatch):
    monkeypatch.setenv("FASTNN_MNIST_DIR", str(MNIST_DIR))
    assert datasets.find_mnist() == MNIST_DIR
    (_, ytr), _ = datasets.load_mnist()
    assert len(ytr) == 60000


@pytest.mark.parametrize("gz", [False, True])
def test_idx_round_trip(tmp_path, gz):
    images = np.random.default_rng(0).integers(0, 256, (5, 4, 3), dtype=np.uint8)
    path = tmp_path / ("x.idx.gz" if gz else "x.idx")
    _write_idx(path, images, gz)
    np.testing.assert_array_equal(datasets.read_idx(path), images)


def test_truncated_and_foreign_files_are_rejected(tmp_path):
    path = tmp_path / "bad"
    _write_idx(path, np.zeros((4, 2, 2), np.uint8))
    path.write_bytes(path.read_bytes()[:-3])
    with pytest.raises(ValueError, match="declares shape"):
        datasets.read_idx(path)
    path.write_bytes(b"\x89PNG\r\n\x1a\n")
    with pytest.raises(ValueError, match="not an IDX file"):
        datasets.read_idx(path)
    gz = tmp_path / "bad.gz"
    gz.write_bytes(gzip.compress(b"\x00\x00\x08\x01" + (10).to_bytes(4, "big") + b"0" * 10)[:-8])
    with pytest.raises(ValueError, match="cannot read"):
        datasets.read_idx(gz)


def test_missing_folder_and_unpaired_files(tmp_path, monkeypatch):
    monkeypatch.delenv("FASTNN_MNIST_DIR", raising=False)
    with pytest.raises(FileNotFoundError, match="FASTNN_MNIST_DIR"):
        datasets.load_mnist()
    with pytest.raises(FileNotFoundError, match="train-images"):
        datasets.load_mnist(tmp_path)
    _write_idx(tmp_path / "train-images-idx3-ubyte", np.zeros((3, 2, 2)))
    _write_idx(tmp_path / "train-labels-idx1-ubyte", np.zeros(2))
    _write_idx(tmp_path / "t10k-images-idx3-ubyte", np.zeros((2, 2, 2)))
    _write_idx(tmp_path / "t10k-labels-idx1-ubyte", np.zeros(2))
    with pytest.raises(ValueError, match="do not pair"):
        datasets.load_mnist(tmp_path)
