"""ops.matmul: 2-D and batched products, transpose flags, layouts, empty shapes, out=."""

import numpy as np
import pytest
import reference as ref

import fastnn
from fastnn import _threads, ops

# (M, K, N) of op(a) (M, K) @ op(b) (K, N).
SHAPES_2D = [
    (0, 5, 3), (4, 0, 3), (4, 5, 0), (0, 0, 0), (1, 1, 1), (1, 7, 1), (7, 1, 13), (7, 13, 11),
    (97, 131, 89), (1000, 1031, 67),
]

TRANS = [(False, False), (True, False), (False, True), (True, True)]
TRANS_IDS = ["NN", "TN", "NT", "TT"]

# Batch sizes of a and b; None: a 2-D operand shared by every item.
BATCHES = [(4, 4), (4, None), (None, 4), (1, 4), (4, 1), (1, 1), (1, None), (None, 1)]

# Small and large items: with fewer items than threads, each item's product is split
# into slabs; with more, the items are shared out among the threads.
ITEM_SIZES = {"small": (7, 13, 11), "large": (97, 101, 103)}


def operand(rng, batch, rows, cols, trans, dtype):
    """An array whose op() is (rows, cols), C-contiguous, with an optional batch axis."""
    shape = (cols, rows) if trans else (rows, cols)
    if batch is not None:
        shape = (batch, *shape)
    return rng.standard_normal(shape).astype(dtype)


def expected(a, b, trans_a, trans_b):
    """(oracle result, its magnitude |op(a)| @ |op(b)| for the error bound)."""
    return (ref.matmul(a, b, trans_a, trans_b),
            ref.matmul(np.abs(a), np.abs(b), trans_a, trans_b))


def check(c, a, b, trans_a, trans_b, dtype):
    value, magnitude = expected(a, b, trans_a, trans_b)
    ref.assert_close(c, value, dtype, magnitude=magnitude)


@pytest.mark.parametrize("trans_a, trans_b", TRANS, ids=TRANS_IDS)
@pytest.mark.parametrize("shape", SHAPES_2D, ids=str)
def test_2d_matches_reference(shape, trans_a, trans_b, dtype, rng):
    m, k, n = shape
    a = operand(rng, None, m, k, trans_a, dtype)
    b = operand(rng, None, k, n, trans_b, dtype)
    a0, b0 = a.copy(), b.copy()
    c = ops.matmul(a, b, trans_a=trans_a, trans_b=trans_b)
    assert c.shape == (m, n) and c.flags.c_contiguous
    check(c, a, b, trans_a, trans_b, dtype)
    np.testing.assert_array_equal(a, a0)
    np.testing.assert_array_equal(b, b0)


def last_two_axes_fortran(x):
    """x with the same shape and values, each matrix stored column by column."""
    return np.swapaxes(np.ascontiguousarray(np.swapaxes(x, -1, -2)), -1, -2)


@pytest.mark.parametrize("trans_a, trans_b", TRANS, ids=TRANS_IDS)
@pytest.mark.parametrize("which", ["a", "b", "both"])
def test_fortran_ordered_inputs_are_read_in_place(which, trans_a, trans_b, dtype, rng,
                                                  monkeypatch):
    # With no implicit copy allowed at all, a copy would raise: these are read in place.
    monkeypatch.setattr(ops, "MAX_IMPLICIT_COPY_BYTES", 0)
    a = operand(rng, None, 97, 131, trans_a, dtype)
    b = operand(rng, None, 131, 89, trans_b, dtype)
    if which != "b":
        a = last_two_axes_fortran(a)
        assert not a.flags.c_contiguous
    if which != "a":
        b = last_two_axes_fortran(b)
        assert not b.flags.c_contiguous
    c = ops.matmul(a, b, trans_a=trans_a, trans_b=trans_b)
    check(c, a, b, trans_a, trans_b, dtype)


@pytest.mark.parametrize("trans_a, trans_b", TRANS, ids=TRANS_IDS)
@pytest.mark.parametrize("batches", [(3, 3), (3, None), (None, 3), (1, 3)],
                         ids=lambda b: f"{b[0]}x{b[1]}")
def test_batched_fortran_ordered_items_are_read_in_place(batches, trans_a, trans_b, dtype,
                                                         rng, monkeypatch):
    monkeypatch.setattr(ops, "MAX_IMPLICIT_COPY_BYTES", 0)
    a = last_two_axes_fortran(operand(rng, batches[0], 7, 13, trans_a, dtype))
    b = last_two_axes_fortran(operand(rng, batches[1], 13, 11, trans_b, dtype))
    assert not a.flags.c_contiguous and not b.flags.c_contiguous
    c = ops.matmul(a, b, trans_a=trans_a, trans_b=trans_b)
    assert c.shape == (3, 7, 11)
    check(c, a, b, trans_a, trans_b, dtype)


def test_transposed_weight_view(dtype, rng):
    # The common case: x @ w.T with w (out_features, in_features).
    x = rng.standard_normal((64, 131)).astype(dtype)
    w = rng.standard_normal((89, 131)).astype(dtype)
    check(ops.matmul(x, w.T), x, w.T, False, False, dtype)


@pytest.mark.parametrize("trans_a, trans_b", TRANS, ids=TRANS_IDS)
def test_strided_inputs_are_copied(trans_a, trans_b, dtype, rng):
    m, k, n = 37, 41, 43
    a_base = operand(rng, None, m, 2 * k, trans_a, dtype)
    b_base = operand(rng, None, 2 * k, n, trans_b, dtype)
    a = a_base[::2] if trans_a else a_base[:, ::2]
    b = b_base[:, ::2] if trans_b else b_base[::2]
    assert not a.flags.c_contiguous and not a.flags.f_contiguous
    assert not b.flags.c_contiguous and not b.flags.f_contiguous
    a0, b0 = a_base.copy(), b_base.copy()
    c = ops.matmul(a, b, trans_a=trans_a, trans_b=trans_b)
    check(c, a, b, trans_a, trans_b, dtype)
    np.testing.assert_array_equal(a_base, a0)
    np.testing.assert_array_equal(b_base, b0)


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("size", ITEM_SIZES)
@pytest.mark.parametrize("trans_a, trans_b", TRANS, ids=TRANS_IDS)
@pytest.mark.parametrize("batches", BATCHES, ids=lambda b: f"{b[0]}x{b[1]}")
def test_batched_matches_reference(batches, trans_a, trans_b, size, threads, dtype, rng):
    m, k, n = ITEM_SIZES[size]
    a = operand(rng, batches[0], m, k, trans_a, dtype)
    b = operand(rng, batches[1], k, n, trans_b, dtype)
    a0, b0 = a.copy(), b.copy()
    with fastnn.threads(threads):
        c = ops.matmul(a, b, trans_a=trans_a, trans_b=trans_b)
    batch = max(x for x in batches if x is not None)
    assert c.shape == (batch, m, n) and c.flags.c_contiguous
    check(c, a, b, trans_a, trans_b, dtype)
    np.testing.assert_array_equal(a, a0)
    np.testing.assert_array_equal(b, b0)


@pytest.mark.parametrize("size", ITEM_SIZES)
def test_batched_parallel_and_sequential_paths_agree(size, dtype, rng):
    m, k, n = ITEM_SIZES[size]
    a = operand(rng, 6, m, k, False, dtype)
    b = operand(rng, 6, k, n, True, dtype)
    with fastnn.threads(1):
        one = ops.matmul(a, b, trans_b=True)
    with fastnn.threads(2):
        two = ops.matmul(a, b, trans_b=True)
    ref.assert_close(two, one.astype(np.float64), dtype,
                     magnitude=ref.matmul(np.abs(a), np.abs(b), False, True))


def test_blas_runs_one_thread_inside_fastnn_threads(dtype, rng):
    """One pool of threads: fastnn's OpenMP threads each call one-thread BLAS."""
    a = operand(rng, 8, 7, 13, False, dtype)
    b = operand(rng, 8, 13, 11, False, dtype)
    fastnn.set_num_threads(2)
    ops.matmul(a, b)
    info = _threads.blas_info()
    assert info, "threadpoolctl found no BLAS for fastnn"
    expected = 1 if fastnn.openmp_enabled() else 2
    assert [threads for _, _, _, threads, _ in info] == [expected] * len(info)


@pytest.mark.parametrize("trans_a, trans_b", TRANS, ids=TRANS_IDS)
@pytest.mark.parametrize("shape", [(300, 70, 40), (40, 70, 300), (33, 170, 350), (17, 50, 1000)],
                         ids=str)
def test_split_into_slabs_matches_one_thread(shape, trans_a, trans_b, dtype, rng):
    """The output cut into slabs (rows or columns, whichever is longer, on 16-aligned
    boundaries) per thread gives the one-thread product (every shape here is above the
    size below which a product stays on one thread)."""
    m, k, n = shape
    a = operand(rng, None, m, k, trans_a, dtype)
    b = operand(rng, None, k, n, trans_b, dtype)
    with fastnn.threads(1):
        one = ops.matmul(a, b, trans_a=trans_a, trans_b=trans_b)
    # a slab may be summed in another order than the whole product (MKL picks kernels by
    # shape): entries near 0 differ by a rounding of the largest, not of themselves
    rtol = 1e-5 if dtype == np.float32 else 1e-12
    atol = rtol * np.abs(one).max()
    for threads in (2, 3, 5):
        with fastnn.threads(threads):
            many = ops.matmul(a, b, trans_a=trans_a, trans_b=trans_b)
        check(many, a, b, trans_a, trans_b, dtype)
        np.testing.assert_allclose(many, one, rtol=rtol, atol=atol)
    acc = one.copy()
    with fastnn.threads(3):
        ops.matmul(a, b, out=acc, trans_a=trans_a, trans_b=trans_b, accumulate=True)
    np.testing.assert_allclose(acc, 2 * one, rtol=rtol, atol=2 * atol)


@pytest.mark.parametrize("a_shape, b_shape, c_shape", [
    ((0, 4, 5), (0, 5, 3), (0, 4, 3)),
    ((3, 0, 5), (3, 5, 4), (3, 0, 4)),
    ((3, 4, 5), (5, 0), (3, 4, 0)),
    ((0, 5), (2, 5, 3), (2, 0, 3)),
], ids=str)
def test_batched_empty(a_shape, b_shape, c_shape, dtype):
    c = ops.matmul(np.ones(a_shape, dtype), np.ones(b_shape, dtype))
    assert c.shape == c_shape and c.dtype == dtype


@pytest.mark.parametrize("a_shape, b_shape", [
    ((4, 0), (0, 3)),
    ((3, 4, 0), (3, 0, 5)),
    ((3, 4, 0), (0, 5)),
    ((4, 0), (3, 0, 5)),
], ids=str)
def test_k_zero_gives_zeros(a_shape, b_shape, dtype):
    a, b = np.ones(a_shape, dtype), np.ones(b_shape, dtype)
    c = ops.matmul(a, b)
    np.testing.assert_array_equal(c, np.zeros(c.shape, dtype))
    out = np.full(c.shape, np.nan, dtype)
    assert ops.matmul(a, b, out=out) is out
    np.testing.assert_array_equal(out, np.zeros(c.shape, dtype))


@pytest.mark.parametrize("trans_a, trans_b", TRANS, ids=TRANS_IDS)
@pytest.mark.parametrize("batches", [(None, None), (4, 4), (4, None), (None, 4)],
                         ids=lambda b: f"{b[0]}x{b[1]}")
def test_out_is_written_and_returned(batches, trans_a, trans_b, dtype, rng):
    m, k, n = 7, 13, 11
    a = operand(rng, batches[0], m, k, trans_a, dtype)
    b = operand(rng, batches[1], k, n, trans_b, dtype)
    shape = (m, n) if batches == (None, None) else (4, m, n)
    out = np.full(shape, np.nan, dtype)
    assert ops.matmul(a, b, out=out, trans_a=trans_a, trans_b=trans_b) is out
    check(out, a, b, trans_a, trans_b, dtype)


def test_same_array_as_both_operands(dtype, rng):
    a = rng.standard_normal((31, 31)).astype(dtype)
    check(ops.matmul(a, a, trans_b=True), a, a, False, True, dtype)


def test_special_values_propagate(dtype):
    a = np.array([[np.nan, 0.0], [1.0, 2.0], [np.inf, 1.0]], dtype)
    b = np.array([[1.0, 2.0], [3.0, 4.0]], dtype)
    c = ops.matmul(a, b)
    assert np.isnan(c[0]).all()
    np.testing.assert_array_equal(c[1], np.array([7.0, 10.0], dtype))
    assert np.isposinf(c[2]).all()
