"""Datasets: MNIST from its IDX files, and scikit-learn's bundled 8x8 digits.

MNIST is read from a folder holding the four standard files, gzipped or not:
train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-images-idx3-ubyte,
t10k-labels-idx1-ubyte. The folder is `path`, else the environment variable
FASTNN_MNIST_DIR, else the cache folder $XDG_CACHE_HOME/fastnn/mnist
(~/.cache/fastnn/mnist when XDG_CACHE_HOME is unset), where `download=True` puts
the files it fetches.

The files are checked against the canonical MD5 sums of their *decompressed* bytes
(`MNIST_MD5`): gzip headers differ between copies of the same data, the contents
do not.
"""

import contextlib
import gzip
import hashlib
import http.client
import os
import tempfile
import urllib.parse
import urllib.request
import zlib
from pathlib import Path

import numpy as np

__all__ = [
    "MNIST_MD5",
    "MNIST_MIRRORS",
    "MNISTDownloadError",
    "find_mnist",
    "load_digits",
    "load_mnist",
    "read_idx",
]

_MNIST_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
#: Canonical MD5 of each file's decompressed bytes.
MNIST_MD5 = {
    "train-images-idx3-ubyte": "6bbc9ace898e44ae57da46a324031adb",
    "train-labels-idx1-ubyte": "a25bea736e30d166cdddb491f175f624",
    "t10k-images-idx3-ubyte": "2646ac647ad5339dbf082846283269ea",
    "t10k-labels-idx1-ubyte": "27ae3e4e09519cfbb04c329615203637",
}
#: Base URLs that serve `<file>.gz`, tried in order by `load_mnist(download=True)`.
MNIST_MIRRORS = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
)
_MNIST_COUNTS = {"train": 60000, "test": 10000}
_MNIST_IMAGE_SHAPE = (28, 28)
_IDX_UBYTE = 0x08
_TIMEOUT_S = 60  # per blocking socket operation, not for the whole file
_CHUNK = 1 << 20
# What a bad mirror or a bad copy raises: network and HTTP errors (OSError, or
# HTTPException for a body cut short), a broken gzip stream (OSError, EOFError,
# zlib.error) and a checksum mismatch (ValueError).
_FETCH_ERRORS = (OSError, EOFError, ValueError, zlib.error, http.client.HTTPException)


class MNISTDownloadError(OSError):
    """No mirror gave a good copy of an MNIST file; the message lists every try."""


def _read_bytes(path):
    """The file's bytes, decompressed when its name ends in .gz."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            return f.read()
    except (OSError, EOFError, zlib.error) as exc:  # gzip raises these on broken files
        raise ValueError(f"{path}: cannot read: {exc}") from exc


def _parse_idx(raw, path):
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


def read_idx(path):
    """An IDX file of unsigned bytes (optionally gzipped) as a uint8 array.

    Raises ValueError when the header is not IDX/ubyte or the data length does not
    match the dimensions it declares.
    """
    path = Path(path)
    return _parse_idx(_read_bytes(path), path)


def find_mnist(path=None):
    """The MNIST folder: `path`, else $FASTNN_MNIST_DIR; None if neither is set."""
    folder = path if path is not None else os.environ.get("FASTNN_MNIST_DIR")
    return Path(folder) if folder else None


def _cache_dir():
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "fastnn" / "mnist"


def _existing(folder, stem):
    for name in (stem, stem + ".gz"):
        if (folder / name).is_file():
            return folder / name
    return None


def _md5(raw):
    return hashlib.md5(raw, usedforsecurity=False).hexdigest()


def _gz_md5(path):
    """MD5 of a gzip file's decompressed bytes, read a chunk at a time."""
    digest = hashlib.md5(usedforsecurity=False)
    with gzip.open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _mirror_list(mirrors):
    if mirrors is None:
        env = os.environ.get("FASTNN_MNIST_MIRROR", "")
        mirrors = env.replace(",", " ").split() or MNIST_MIRRORS
    elif isinstance(mirrors, str):
        mirrors = [mirrors]
    mirrors = [m if m.endswith("/") else m + "/" for m in mirrors]
    if not mirrors:
        raise ValueError("MNIST: mirrors is empty; give at least one base URL")
    for m in mirrors:
        if urllib.parse.urlsplit(m).scheme not in ("http", "https"):
            raise ValueError(f"MNIST: mirror {m!r} is not an http(s) URL")
    return mirrors


def _download(folder, stem, mirrors):
    """Fetch `<stem>.gz` into `folder` from the first mirror that serves a good copy.

    Each try streams into a hidden temporary file in `folder`, checks the MD5 of its
    decompressed bytes and only then renames it into place (atomically), so the
    folder never holds a partial or unverified file.
    """
    name = stem + ".gz"
    tried = []
    for base in mirrors:
        url = base + name
        fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".part", dir=folder)
        try:
            with os.fdopen(fd, "wb") as out, urllib.request.urlopen(
                url, timeout=_TIMEOUT_S
            ) as response:
                for chunk in iter(lambda: response.read(_CHUNK), b""):
                    out.write(chunk)
            got = _gz_md5(tmp)
            if got != MNIST_MD5[stem]:
                raise ValueError(f"decompressed MD5 {got}, expected {MNIST_MD5[stem]}")
            os.replace(tmp, folder / name)
            return
        except _FETCH_ERRORS as exc:
            tried.append(f"  {url}: {type(exc).__name__}: {exc}")
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
    raise MNISTDownloadError(
        f"MNIST: no mirror gave a good copy of {name}; tried:\n" + "\n".join(tried)
    )


def load_mnist(path=None, download=False, *, verify=True, mirrors=None):
    """((x_train, y_train), (x_test, y_test)) of MNIST, as uint8 arrays.

    Images are (N, 28, 28), labels (N,), exactly as the IDX files hold them.

    path: the folder of the four IDX files (each plain or .gz); default
        $FASTNN_MNIST_DIR, else $XDG_CACHE_HOME/fastnn/mnist (~/.cache/fastnn/mnist).
    download: fetch the files the folder lacks (creating it) as `<file>.gz` from
        `mirrors`. Every download is checked against the canonical MD5 of its
        decompressed bytes before it is renamed into place; a failed or bad copy
        moves on to the next mirror, and when all fail MNISTDownloadError (an
        OSError) lists each URL and why. Files already present are not fetched
        again, nor replaced when they fail verification (delete them to re-fetch).
        Without `download`, a missing file raises FileNotFoundError.
    verify: check MNIST's counts (60000 train, 10000 test, 28x28 images) and the
        canonical MD5 of each decompressed file; a mismatch raises ValueError
        naming the file and both sums. verify=False loads any folder of IDX files
        with these four names (e.g. other data in MNIST's layout), checking only
        that each file is well-formed and that images and labels pair.
    mirrors: base URLs to fetch from, in order; default $FASTNN_MNIST_MIRROR (one
        or more URLs separated by spaces or commas), else `MNIST_MIRRORS`.
    """
    folder = find_mnist(path) or _cache_dir()
    missing = [stem for stem in _MNIST_FILES.values() if _existing(folder, stem) is None]
    if missing and download:
        urls = _mirror_list(mirrors)
        folder.mkdir(parents=True, exist_ok=True)
        for stem in missing:
            _download(folder, stem, urls)
    elif missing:
        raise FileNotFoundError(
            f"MNIST: {', '.join(missing)} (plain or .gz) not found in {folder}; "
            "load_mnist(path, download=True) fetches them, or pass the folder that holds "
            "them as path= or in $FASTNN_MNIST_DIR"
        )
    files = {key: _existing(folder, stem) for key, stem in _MNIST_FILES.items()}
    raws = {key: _read_bytes(file) for key, file in files.items()}
    arrays = {key: _parse_idx(raws[key], files[key]) for key in files}
    for split in ("train", "test"):
        images, labels = arrays[f"{split}_images"], arrays[f"{split}_labels"]
        if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
            raise ValueError(
                f"MNIST {split}: images {images.shape} and labels {labels.shape} do not pair"
            )
        if labels.size and labels.max() > 9:
            raise ValueError(f"MNIST {split}: label {labels.max()} is not a digit")
        expected = (_MNIST_COUNTS[split], *_MNIST_IMAGE_SHAPE)
        if verify and images.shape != expected:
            raise ValueError(
                f"MNIST {split}: images {images.shape}, expected {expected} "
                "(verify=False loads other IDX data)"
            )
    if verify:
        for key, stem in _MNIST_FILES.items():
            got = _md5(raws[key])
            if got != MNIST_MD5[stem]:
                raise ValueError(
                    f"{files[key]}: MD5 of the decompressed data is {got}, expected "
                    f"{MNIST_MD5[stem]} ({stem}): the file is corrupt or not MNIST "
                    "(verify=False loads other IDX data)"
                )
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
