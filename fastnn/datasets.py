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
import math
import os
import tempfile
import urllib.parse
import urllib.request
import zlib
from pathlib import Path

import numpy as np

__all__ = [
    "MAX_IDX_BYTES",
    "MAX_IDX_DIMS",
    "MNIST_MD5",
    "MNIST_MIRRORS",
    "MNIST_SIZES",
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
#: Bytes of each decompressed file: its IDX header, then one byte per pixel or label.
MNIST_SIZES = {
    "train-images-idx3-ubyte": 16 + 60000 * 28 * 28,
    "train-labels-idx1-ubyte": 8 + 60000,
    "t10k-images-idx3-ubyte": 16 + 10000 * 28 * 28,
    "t10k-labels-idx1-ubyte": 8 + 10000,
}
#: The most dimensions and data bytes read_idx reads from one IDX file.
MAX_IDX_DIMS = 8
MAX_IDX_BYTES = 2**31
# The most bytes a download of an MNIST .gz may take: the decompressed size, plus room
# for gzip's framing of data that does not compress.
_GZ_SLACK = 1 << 20
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


def _read_idx(path, limit=None):
    """(raw, array): the bytes of an IDX file of unsigned bytes (decompressed when its
    name ends in .gz) and the uint8 array they hold.

    The file is read a chunk at a time and never further than its header declares: a
    file that goes on (a gzip bomb, trailing junk) is refused once one byte more has
    arrived. The header must declare 1 to MAX_IDX_DIMS dimensions and at most
    MAX_IDX_BYTES of data, and, when `limit` is given, a file of at most `limit` bytes.
    """
    if path.exists() and not path.is_file():  # a FIFO would block the read forever
        raise ValueError(f"{path}: not a regular file")
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            raw = bytearray(f.read(4))
            if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != _IDX_UBYTE:
                raise ValueError(f"{path}: not an IDX file of unsigned bytes")
            ndim = raw[3]
            if not 1 <= ndim <= MAX_IDX_DIMS:
                raise ValueError(f"{path}: the IDX header declares {ndim} dimensions "
                                 f"(1 to {MAX_IDX_DIMS} are read)")
            raw += f.read(4 * ndim)
            header = 4 + 4 * ndim
            if len(raw) < header:
                raise ValueError(f"{path}: truncated IDX header")
            shape = tuple(int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
            size = math.prod(shape)
            if size > MAX_IDX_BYTES or (limit is not None and header + size > limit):
                bound = MAX_IDX_BYTES if size > MAX_IDX_BYTES else limit - header
                raise ValueError(f"{path}: header declares shape {shape} ({size} bytes), "
                                 f"more than the {bound} bytes allowed")
            while len(raw) <= header + size:
                chunk = f.read(min(_CHUNK, header + size + 1 - len(raw)))
                if not chunk:
                    break
                raw += chunk
    except (OSError, EOFError, zlib.error) as exc:  # gzip raises these on broken files
        raise ValueError(f"{path}: cannot read: {exc}") from exc
    if len(raw) != header + size:
        held = f"{len(raw) - header} bytes" if len(raw) < header + size else "more bytes"
        raise ValueError(f"{path}: header declares shape {shape} ({size} bytes) but the file "
                         f"holds {held} of data")
    return raw, np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape)


def read_idx(path):
    """An IDX file of unsigned bytes (optionally gzipped) as a uint8 array.

    Raises ValueError when the header is not IDX/ubyte, declares more than
    MAX_IDX_DIMS dimensions or MAX_IDX_BYTES of data, or when the data length does not
    match the dimensions it declares (the file is never read past them).
    """
    path = Path(path)
    return _read_idx(path)[1]


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


def _gz_md5(path, size):
    """MD5 of a gzip file's decompressed bytes, read a chunk at a time; ValueError when
    they are not `size` bytes (found as soon as one byte more arrives)."""
    digest = hashlib.md5(usedforsecurity=False)
    got = 0
    with gzip.open(path, "rb") as f:
        while got <= size:
            chunk = f.read(min(_CHUNK, size + 1 - got))
            if not chunk:
                break
            digest.update(chunk)
            got += len(chunk)
    if got != size:
        raise ValueError(f"decompresses to {'more than ' if got > size else ''}{got} bytes, "
                         f"expected {size}")
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

    Each try streams into a hidden temporary file in `folder`, at most the file's
    decompressed size (MNIST_SIZES) plus a little (a longer answer is refused when its
    Content-Length announces it, or once it has gone past), checks the size and MD5 of
    its decompressed bytes and only then renames it into place (atomically), so the
    folder never holds a partial or unverified file.
    """
    name = stem + ".gz"
    cap = MNIST_SIZES[stem] + _GZ_SLACK
    tried = []
    for base in mirrors:
        url = base + name
        fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".part", dir=folder)
        try:
            with os.fdopen(fd, "wb") as out, urllib.request.urlopen(
                url, timeout=_TIMEOUT_S
            ) as response:
                announced = response.headers.get("Content-Length", "")
                if announced.isdigit() and int(announced) > cap:
                    raise ValueError(f"announces {announced} bytes, more than the {cap} "
                                     "an MNIST file takes")
                fetched = 0
                for chunk in iter(lambda: response.read(_CHUNK), b""):
                    fetched += len(chunk)
                    if fetched > cap:
                        raise ValueError(f"sent more than the {cap} bytes an MNIST file "
                                         "takes")
                    out.write(chunk)
            got = _gz_md5(tmp, MNIST_SIZES[stem])
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
    raws, arrays = {}, {}
    for key, stem in _MNIST_FILES.items():
        # verifying: nothing larger than MNIST's file is read
        raws[key], arrays[key] = _read_idx(files[key], MNIST_SIZES[stem] if verify else None)
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
