"""Shared fixtures: seeded random numbers, the two dtypes, large cached inputs, a check
of bitwise thread independence, and a thread count every test leaves as it found it.

Tolerances per dtype live with the oracle: reference.TOLERANCES, used by
reference.assert_close."""

import os
import site
import sys
import sysconfig
import zlib
from pathlib import Path

import numpy as np
import pytest

import fastnn
from fastnn import _threads

DTYPES = (np.dtype(np.float32), np.dtype(np.float64))

# For the bitwise thread-determinism checks: many tiles, and a tall, narrow matrix.
DETERMINISM_SHAPES = ((2000, 1500), (100003, 7))


@pytest.fixture
def rng():
    return np.random.default_rng(12345)


@pytest.fixture(params=DTYPES, ids=lambda d: d.name)
def dtype(request):
    return request.param


@pytest.fixture(params=DETERMINISM_SHAPES, ids=lambda s: "x".join(map(str, s)))
def determinism_shape(request):
    return request.param


@pytest.fixture
def assert_thread_independent():
    """assert_thread_independent(fn): fn() (an array or a tuple of arrays) gives the
    same bytes with 2 threads as with 1."""

    def check(fn):
        with fastnn.threads(1):
            one = fn()
        with fastnn.threads(2):
            two = fn()
        one, two = (r if isinstance(r, tuple) else (r,) for r in (one, two))
        assert len(one) == len(two)
        for i, (a, b) in enumerate(zip(one, two)):
            assert a.dtype == b.dtype and a.shape == b.shape
            assert a.tobytes() == b.tobytes(), (
                f"result {i} with 2 threads differs from 1 thread in "
                f"{np.count_nonzero(a != b)} elements"
            )

    return check


@pytest.fixture(scope="session")
def large_array():
    """large_array(shape, dtype, kind) -> a cached, read-only random array.

    kind "normal" is N(0, 1); "unit" is uniform in (0, 1), "signed" in (-1, 1).
    Cached for the session: the determinism checks reuse the same few big inputs.
    """
    cache = {}

    def make(shape, dtype, kind="normal"):
        key = (tuple(shape), np.dtype(dtype), kind)
        if key not in cache:
            rng = np.random.default_rng(zlib.crc32(repr(key).encode()))
            if kind == "normal":
                x = rng.standard_normal(shape)
            elif kind == "unit":
                x = rng.uniform(0.0, 1.0, shape)
            else:
                x = rng.uniform(-1.0, 1.0, shape)
            x = x.astype(dtype)
            x.flags.writeable = False
            cache[key] = x
        return cache[key]

    return make


@pytest.fixture
def matplotlib_untouched(monkeypatch):
    """Fails the test if the code it runs calls matplotlib.use, changes the backend or
    leaves pyplot in another state (a notebook's backend must survive a plot)."""
    matplotlib = pytest.importorskip("matplotlib")
    backend = matplotlib.get_backend()

    def refuse(*args, **kwargs):
        raise AssertionError("matplotlib.use was called: it switches a notebook's backend")

    monkeypatch.setattr(matplotlib, "use", refuse)
    had_pyplot = "matplotlib.pyplot" in sys.modules
    yield
    assert matplotlib.get_backend() == backend
    if had_pyplot:
        assert not sys.modules["matplotlib.pyplot"].get_fignums()
    else:
        assert "matplotlib.pyplot" not in sys.modules


@pytest.fixture(autouse=True)
def _restore_thread_count():
    """Whatever a test does to the thread count (and BLAS's), undo it afterwards."""
    n, source = fastnn.get_num_threads(), _threads.num_threads_source()
    yield
    _threads._apply(n, source)


def pytest_report_header(config):
    return f"fastnn {fastnn.__version__} from {Path(fastnn.__file__).parent}"


def pytest_sessionstart(session):
    """FASTNN_REQUIRE_INSTALLED=1 (CI, testing a wheel): stop unless the fastnn under
    test is an installed package, in site-packages, not a checkout."""
    if os.environ.get("FASTNN_REQUIRE_INSTALLED", "0") in ("", "0"):
        return
    where = Path(fastnn.__file__).resolve()
    paths = sysconfig.get_paths()
    sites = {Path(p).resolve() for p in (paths["purelib"], paths["platlib"],
                                          *site.getsitepackages())}
    if not any(s in where.parents for s in sites):
        pytest.exit(f"FASTNN_REQUIRE_INSTALLED=1, but fastnn was imported from {where}, "
                    f"not from site-packages ({', '.join(map(str, sorted(sites)))})",
                    returncode=3)
