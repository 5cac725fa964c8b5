"""MNIST IDX loading (real files when present), checksums, downloads from local HTTP
servers on 127.0.0.1 (never the internet), and the digits fallback."""

import gzip
import hashlib
import os
import threading
import tracemalloc
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
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
STEMS = list(datasets.MNIST_MD5)
LABELS = "t10k-labels-idx1-ubyte"  # the smallest file: the one the tests corrupt or fetch


@pytest.fixture(autouse=True)
def _offline(monkeypatch, tmp_path):
    """No test may reach a public mirror or a real cache: the default mirror is a
    closed port on 127.0.0.1, the default cache an empty tmp folder, and no proxy
    stands between the client and the local servers."""
    monkeypatch.setenv("FASTNN_MNIST_MIRROR", "http://127.0.0.1:9/")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    for var in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("no_proxy", "*")


def _write_idx(path, array, gz=False):
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(
        int(n).to_bytes(4, "big") for n in array.shape
    )
    data = header + np.ascontiguousarray(array, np.uint8).tobytes()
    with (gzip.open if gz else open)(path, "wb") as f:
        f.write(data)


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


# ---------------------------------------------------------------- checksums and counts


def _corrupt_gz(src, dst):
    """A copy of gzipped IDX file `src` at `dst` with its last data byte changed:
    well-formed, right counts, wrong checksum."""
    raw = bytearray(gzip.decompress(Path(src).read_bytes()))
    raw[-1] = (raw[-1] + 1) % 10  # still a digit, so only the checksum can tell
    Path(dst).write_bytes(gzip.compress(bytes(raw), compresslevel=1))
    return hashlib.md5(raw).hexdigest()


def _folder_without(folder, missing=(LABELS,)):
    """`folder` (created) holding links to the real .gz files, except `missing`."""
    folder.mkdir(parents=True, exist_ok=True)
    for stem in STEMS:
        if stem not in missing:
            (folder / f"{stem}.gz").symlink_to(MNIST_DIR / f"{stem}.gz")
    return folder


def _assert_real_shapes(data):
    (xtr, ytr), (xte, yte) = data
    assert xtr.shape == (60000, 28, 28) and ytr.shape == (60000,)
    assert xte.shape == (10000, 28, 28) and yte.shape == (10000,)


@needs_mnist
def test_real_files_match_the_canonical_md5():
    assert datasets.load_mnist(MNIST_DIR, verify=True)
    for stem, md5 in datasets.MNIST_MD5.items():
        raw = gzip.decompress((MNIST_DIR / f"{stem}.gz").read_bytes())
        assert hashlib.md5(raw).hexdigest() == md5


@needs_mnist
def test_a_corrupted_file_fails_verification(tmp_path):
    folder = _folder_without(tmp_path / "mnist")
    bad_md5 = _corrupt_gz(MNIST_DIR / f"{LABELS}.gz", folder / f"{LABELS}.gz")
    good_md5 = datasets.MNIST_MD5[LABELS]
    with pytest.raises(ValueError, match=LABELS) as info:
        datasets.load_mnist(folder)
    assert bad_md5 in str(info.value) and good_md5 in str(info.value)
    # download=True does not hide a bad file that is already there
    with pytest.raises(ValueError, match=bad_md5):
        datasets.load_mnist(folder, download=True)
    _, (_, yte) = datasets.load_mnist(folder, verify=False)
    _, (_, real) = datasets.load_mnist(MNIST_DIR)
    assert (yte != real).sum() == 1


def test_other_idx_data_loads_only_without_verification(tmp_path):
    rng = np.random.default_rng(0)
    _write_idx(tmp_path / "train-images-idx3-ubyte", rng.integers(0, 256, (6, 5, 5)))
    _write_idx(tmp_path / "train-labels-idx1-ubyte.gz", rng.integers(0, 10, 6), gz=True)
    _write_idx(tmp_path / "t10k-images-idx3-ubyte", rng.integers(0, 256, (4, 5, 5)))
    _write_idx(tmp_path / "t10k-labels-idx1-ubyte", rng.integers(0, 10, 4))
    with pytest.raises(ValueError, match=r"expected \(60000, 28, 28\)"):
        datasets.load_mnist(tmp_path)
    (xtr, ytr), (xte, yte) = datasets.load_mnist(tmp_path, verify=False)
    assert xtr.shape == (6, 5, 5) and ytr.shape == (6,)
    assert xte.shape == (4, 5, 5) and yte.shape == (4,)


def test_right_counts_wrong_bytes_fail_the_checksum(tmp_path):
    """Counts and shapes alone do not make MNIST: the checksum names the first file."""
    for split, n in (("train", 60000), ("t10k", 10000)):
        _write_idx(tmp_path / f"{split}-images-idx3-ubyte", np.zeros((n, 28, 28)))
        _write_idx(tmp_path / f"{split}-labels-idx1-ubyte", np.zeros(n))
    with pytest.raises(ValueError, match=r"train-images-idx3-ubyte: MD5 .* expected "
                       r"6bbc9ace898e44ae57da46a324031adb"):
        datasets.load_mnist(tmp_path)
    assert len(datasets.load_mnist(tmp_path, verify=False)[0][0]) == 60000


def test_missing_files_suggest_download(tmp_path):
    with pytest.raises(FileNotFoundError, match="download=True"):
        datasets.load_mnist(tmp_path / "nowhere")
    assert not (tmp_path / "nowhere").exists()


# ---------------------------------------------------------------- downloads (127.0.0.1 only)


class _Handler(SimpleHTTPRequestHandler):
    """Serves one folder, quietly, recording each requested path in `self.log`."""

    def __init__(self, *args, log, **kwargs):
        self.log = log
        super().__init__(*args, **kwargs)

    def do_GET(self):
        self.log.append(self.path)
        super().do_GET()

    def log_message(self, *args):
        pass


class _ShortBodyHandler(_Handler):
    """Promises more bytes than it sends, then hangs up: a download cut short."""

    def do_GET(self):
        self.log.append(self.path)
        self.send_response(200)
        self.send_header("Content-Length", "100000")
        self.end_headers()
        self.wfile.write(b"\x1f\x8b" + b"\0" * 100)


@pytest.fixture
def serve():
    """serve(folder, handler=_Handler) -> (base URL, list of requested paths); every
    server listens on 127.0.0.1 only and is shut down after the test."""
    servers = []

    def start(folder, handler=_Handler):
        log = []
        server = ThreadingHTTPServer(
            ("127.0.0.1", 0), partial(handler, directory=str(folder), log=log)
        )
        thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
        thread.start()
        servers.append((server, thread))
        return f"http://127.0.0.1:{server.server_address[1]}/", log

    yield start
    for server, thread in servers:
        server.shutdown()
        server.server_close()
        thread.join()


def _names(folder):
    return sorted(p.name for p in folder.iterdir())


@needs_mnist
def test_download_fetches_all_files_once(tmp_path, serve):
    url, log = serve(MNIST_DIR)
    folder = tmp_path / "new" / "mnist"
    _assert_real_shapes(datasets.load_mnist(folder, download=True, mirrors=[url]))
    assert sorted(log) == sorted(f"/{stem}.gz" for stem in STEMS)
    assert _names(folder) == sorted(f"{stem}.gz" for stem in STEMS)
    for stem in STEMS:  # byte-for-byte the served files
        assert (folder / f"{stem}.gz").read_bytes() == (MNIST_DIR / f"{stem}.gz").read_bytes()
    _assert_real_shapes(datasets.load_mnist(folder, download=True, mirrors=[url]))
    assert len(log) == 4  # the second call found the files and fetched nothing


@needs_mnist
def test_download_defaults_to_the_mirror_env_var_and_the_cache(tmp_path, serve, monkeypatch):
    url, log = serve(MNIST_DIR)
    cache = _folder_without(tmp_path / "cache" / "fastnn" / "mnist")
    monkeypatch.delenv("FASTNN_MNIST_DIR", raising=False)
    monkeypatch.setenv("FASTNN_MNIST_MIRROR", f"http://127.0.0.1:9, {url.rstrip('/')}")
    _assert_real_shapes(datasets.load_mnist(download=True))
    assert log == [f"/{LABELS}.gz"] and (cache / f"{LABELS}.gz").is_file()


@needs_mnist
def test_download_falls_through_bad_mirrors(tmp_path, serve):
    bad = tmp_path / "bad"
    bad.mkdir()
    _corrupt_gz(MNIST_DIR / f"{LABELS}.gz", bad / f"{LABELS}.gz")
    (tmp_path / "empty").mkdir()
    missing_url, missing_log = serve(tmp_path / "empty")
    bad_url, bad_log = serve(bad)
    good_url, good_log = serve(MNIST_DIR)
    folder = _folder_without(tmp_path / "mnist")
    data = datasets.load_mnist(folder, download=True, mirrors=[missing_url, bad_url, good_url])
    _assert_real_shapes(data)
    assert missing_log == bad_log == good_log == [f"/{LABELS}.gz"]
    assert _names(folder) == sorted(f"{stem}.gz" for stem in STEMS)


@needs_mnist
def test_download_fails_when_every_mirror_is_bad_and_leaves_nothing(tmp_path, serve):
    bad = tmp_path / "bad"
    bad.mkdir()
    _corrupt_gz(MNIST_DIR / f"{LABELS}.gz", bad / f"{LABELS}.gz")
    junk = tmp_path / "junk"  # a 200 answer that is not gzip, and a truncated gzip
    junk.mkdir()
    (junk / f"{LABELS}.gz").write_bytes((MNIST_DIR / f"{LABELS}.gz").read_bytes()[:-100])
    html = tmp_path / "html"
    html.mkdir()
    (html / f"{LABELS}.gz").write_text("<html>moved</html>")
    (tmp_path / "empty").mkdir()
    urls = [serve(tmp_path / "empty")[0], serve(bad)[0], serve(junk)[0], serve(html)[0],
            serve(bad, _ShortBodyHandler)[0]]
    folder = _folder_without(tmp_path / "mnist")
    before = _names(folder)
    with pytest.raises(datasets.MNISTDownloadError, match=LABELS) as info:
        datasets.load_mnist(folder, download=True, mirrors=urls)
    assert isinstance(info.value, OSError)
    message = str(info.value)
    for url in urls:
        assert url + f"{LABELS}.gz" in message
    assert "404" in message and datasets.MNIST_MD5[LABELS] in message
    assert _names(folder) == before  # no partial, temporary or unverified file


def test_download_rejects_mirrors_that_are_not_http(tmp_path):
    for mirrors in ([], ["ftp://example.org/mnist/"], "file:///tmp/"):
        with pytest.raises(ValueError, match="mirror"):
            datasets.load_mnist(tmp_path, download=True, mirrors=mirrors)
    assert _names(tmp_path) == []


def test_download_into_a_folder_that_cannot_be_reached(tmp_path):
    """The default mirror of these tests (a closed local port) fails cleanly."""
    with pytest.raises(datasets.MNISTDownloadError, match=r"127\.0\.0\.1:9/"):
        datasets.load_mnist(tmp_path / "mnist", download=True)
    assert _names(tmp_path / "mnist") == []



# ---------------------------------------------------------------- bounded reads


def _gz_of(path, parts):
    """Write the byte strings `parts` gzipped to `path` (compressed as they come: a
    large part need not fit in memory twice)."""
    with gzip.open(path, "wb", compresslevel=1) as f:
        for part in parts:
            f.write(part)
    return path


def _zeros(n, chunk=1 << 22):
    while n > 0:
        yield b"\0" * min(chunk, n)
        n -= chunk


def test_a_gzip_bomb_is_not_inflated_past_its_header(tmp_path):
    """A header declaring 2 x 2 x 2 bytes, followed by 256 MiB of zeros (a 250 KB file):
    refused after at most one byte more than 8 of data, with little memory."""
    header = bytes([0, 0, 8, 3]) + b"".join(n.to_bytes(4, "big") for n in (2, 2, 2))
    path = _gz_of(tmp_path / "bomb.gz", [header, *_zeros(256 * 2**20)])
    tracemalloc.start()
    try:
        with pytest.raises(ValueError, match="holds more bytes"):
            datasets.read_idx(path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 4 * 2**20


def test_only_regular_files_are_read(tmp_path):
    os.mkfifo(tmp_path / "fifo")  # nobody writes to it: reading it would block
    (tmp_path / "folder").mkdir()
    for name in ("fifo", "folder"):
        with pytest.raises(ValueError, match="not a regular file"):
            datasets.read_idx(tmp_path / name)


def test_trailing_data_in_a_plain_file_is_refused(tmp_path):
    path = tmp_path / "x.idx"
    _write_idx(path, np.zeros((3, 2), np.uint8))
    path.write_bytes(path.read_bytes() + b"\0")
    with pytest.raises(ValueError, match="holds more bytes"):
        datasets.read_idx(path)


@pytest.mark.parametrize("dims, match", [
    ((), "0 dimensions"), ((1,) * (datasets.MAX_IDX_DIMS + 1), "dimensions"),
    ((2**16, 2**16, 2**8), "more than"), ((2**32 - 1, 2**32 - 1), "more than")],
    ids=["no-dims", "too-many-dims", "over-max-bytes", "huge"])
def test_insane_headers_are_refused_before_reading(tmp_path, dims, match):
    header = bytes([0, 0, 8, len(dims)]) + b"".join(n.to_bytes(4, "big") for n in dims)
    for gz in (False, True):
        path = tmp_path / ("h.gz" if gz else "h")
        if gz:
            _gz_of(path, [header, b"\0" * 64])
        else:
            path.write_bytes(header + b"\0" * 64)
        tracemalloc.start()
        try:
            with pytest.raises(ValueError, match=match):
                datasets.read_idx(path)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert peak < 2**20


def test_a_header_declaring_more_than_mnist_is_refused_when_verifying(tmp_path):
    """Verifying, nothing larger than MNIST's own file is read: a labels file declaring
    10**8 labels is refused from its header (without verify, it is read and found
    short)."""
    for split, n in (("train", 6), ("t10k", 4)):
        _write_idx(tmp_path / f"{split}-images-idx3-ubyte", np.zeros((n, 2, 2)))
        _write_idx(tmp_path / f"{split}-labels-idx1-ubyte", np.zeros(n))
    labels = tmp_path / "t10k-labels-idx1-ubyte"
    labels.write_bytes(bytes([0, 0, 8, 1]) + (10**8).to_bytes(4, "big") + b"\0" * 4)
    with pytest.raises(ValueError, match="more than the 10000 bytes allowed"):
        datasets.load_mnist(tmp_path)
    with pytest.raises(ValueError, match="holds 4 bytes"):
        datasets.load_mnist(tmp_path, verify=False)


def test_mnist_sizes_are_those_of_the_files():
    for stem, size in datasets.MNIST_SIZES.items():
        n = 60000 if stem.startswith("train") else 10000
        assert size == (16 + n * 784 if "images" in stem else 8 + n)


class _HugeHandler(_Handler):
    """Sends more than any MNIST file takes, without announcing its length."""

    def do_GET(self):
        self.log.append(self.path)
        self.send_response(200)
        self.end_headers()
        for _ in range(3):
            self.wfile.write(b"\x1f\x8b" + b"\0" * (2**20))


class _AnnouncingHandler(_Handler):
    """Announces a body far larger than any MNIST file, then sends little."""

    def do_GET(self):
        self.log.append(self.path)
        self.send_response(200)
        self.send_header("Content-Length", str(10 * 2**30))
        self.end_headers()
        self.wfile.write(b"\x1f\x8b" + b"\0" * 100)


def test_downloads_are_capped_and_their_size_verified(tmp_path, serve):
    bomb = tmp_path / "bomb"
    bomb.mkdir()  # a real gzip file, small, that inflates to 64 MiB
    header = bytes([0, 0, 8, 1]) + (10000).to_bytes(4, "big")
    _gz_of(bomb / f"{LABELS}.gz", [header, *_zeros(64 * 2**20)])
    assert (bomb / f"{LABELS}.gz").stat().st_size < 2**20  # well within the cap
    urls = [serve(tmp_path, _HugeHandler)[0], serve(tmp_path, _AnnouncingHandler)[0],
            serve(bomb)[0]]
    folder = tmp_path / "mnist"
    folder.mkdir()
    for stem in STEMS:  # only the labels are fetched
        if stem != LABELS:
            (folder / stem).write_bytes(b"")
    with pytest.raises(datasets.MNISTDownloadError, match=LABELS) as info:
        datasets.load_mnist(folder, download=True, mirrors=urls)
    message = str(info.value)
    assert "sent more than" in message and "announces 10737418240 bytes" in message
    assert f"decompresses to more than {datasets.MNIST_SIZES[LABELS] + 1}" in message
    assert LABELS not in " ".join(_names(folder))  # nothing partial or unverified stays
