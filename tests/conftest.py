"""Shared fixtures: seeded random numbers, the two dtypes, tolerances, large inputs,
and a thread count that every test leaves as it found it."""

import zlib

import numpy as np
import pytest
from reference import TOLERANCES

import fastnn
from fastnn import _threads

DTYPES = (np.dtype(np.float32), np.dtype(np.float64))

# Big enough to cross the kernels' parallel threshold (32768 elements), with more than
# 32 rows and 256 columns so that column sums use several tiles both ways.
LARGE_SHAPE = (1000, 1031)

# For the bitwise thread-determinism checks: many tiles, and a tall, narrow matrix.
DETERMINISM_SHAPES = ((2000, 1500), (100003, 7))


@pytest.fixture
def rng():
    return np.random.default_rng(12345)


@pytest.fixture(params=DTYPES, ids=lambda d: d.name)
def dtype(request):
    return request.param


@pytest.fixture
def tol(dtype):
    """{"rtol": ..., "atol": ...} for the dtype under test."""
    rtol, atol = TOLERANCES[dtype]
    return {"rtol": rtol, "atol": atol}


@pytest.fixture(params=DETERMINISM_SHAPES, ids=lambda s: "x".join(map(str, s)))
def determinism_shape(request):
    return request.param


@pytest.fixture
def assert_thread_independent():
    """assert_thread_independent(fn): fn() (an array or a tuple of arrays) gives the
    same bytes with 2 and 3 threads as with 1."""

    def check(fn):
        results = {}
        for n in (1, 2, 3):
            with fastnn.threads(n):
                r = fn()
            results[n] = r if isinstance(r, tuple) else (r,)
        for n in (2, 3):
            for i, (one, many) in enumerate(zip(results[1], results[n])):
                assert one.dtype == many.dtype and one.shape == many.shape
                assert one.tobytes() == many.tobytes(), (
                    f"result {i} with {n} threads differs from 1 thread in "
                    f"{np.count_nonzero(one != many)} elements"
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


@pytest.fixture(autouse=True)
def _restore_thread_count():
    """Whatever a test does to the thread count (and BLAS's), undo it afterwards."""
    n, source = fastnn.get_num_threads(), _threads.num_threads_source()
    yield
    _threads._apply(n, source)
