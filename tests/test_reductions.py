"""column_sum and row_sum: accuracy, edge shapes, and bitwise thread independence."""

import numpy as np
import pytest
import reference as ref

from fastnn import ops

# Tiles are 32 rows x 256 columns: shapes on, below and above the tile edges.
SHAPES = [
    (0, 5), (5, 0), (0, 0), (1, 1), (1, 300), (300, 1), (7, 13), (31, 255), (32, 256),
    (33, 257), (97, 131), (1000, 1031), (100003, 7),
]

REDUCTIONS = {
    "column_sum": (ops.column_sum, ref.column_sum, 1),
    "row_sum": (ops.row_sum, ref.row_sum, 0),
}


@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("name", REDUCTIONS)
def test_matches_reference(name, shape, dtype, rng):
    op, oracle, _ = REDUCTIONS[name]
    x = rng.standard_normal(shape).astype(dtype)
    x0 = x.copy()
    got = op(x)
    ref.assert_close(got, oracle(x), dtype, magnitude=oracle(np.abs(x)))
    np.testing.assert_array_equal(x, x0)


@pytest.mark.parametrize("name", REDUCTIONS)
def test_large_offset_values(name, dtype, rng):
    # Terms of one sign and a large mean: errors grow with the partial sums.
    op, oracle, _ = REDUCTIONS[name]
    x = (1000 + rng.standard_normal((1000, 1031))).astype(dtype)
    ref.assert_close(op(x), oracle(x), dtype, magnitude=oracle(np.abs(x)))


@pytest.mark.parametrize("name", REDUCTIONS)
def test_exact_for_integers(name, dtype):
    # Small integers sum exactly in any order: the result must be exact.
    op, oracle, _ = REDUCTIONS[name]
    x = (np.arange(300 * 700) % 17 - 8).reshape(300, 700).astype(dtype)
    np.testing.assert_array_equal(op(x), oracle(x).astype(dtype))


@pytest.mark.parametrize("shape", [(7, 13), (0, 5), (5, 0), (1000, 1031)], ids=str)
@pytest.mark.parametrize("name", REDUCTIONS)
def test_out_is_overwritten_and_returned(name, shape, dtype, rng):
    op, oracle, length_axis = REDUCTIONS[name]
    x = rng.standard_normal(shape).astype(dtype)
    out = np.full(shape[length_axis], np.nan, dtype)
    assert op(x, out=out) is out
    ref.assert_close(out, oracle(x), dtype, magnitude=oracle(np.abs(x)))


@pytest.mark.parametrize("layout", ["strided", "transposed"])
@pytest.mark.parametrize("name", REDUCTIONS)
def test_non_contiguous_input_is_copied(name, layout, dtype, rng):
    op, oracle, _ = REDUCTIONS[name]
    base = rng.standard_normal((97, 262)).astype(dtype)
    base0 = base.copy()
    x = base[:, ::2] if layout == "strided" else base.T
    ref.assert_close(op(x), oracle(x), dtype, magnitude=oracle(np.abs(x)))
    np.testing.assert_array_equal(base, base0)


@pytest.mark.parametrize("name", REDUCTIONS)
def test_nan_and_inf_propagate(name, dtype):
    op, oracle, _ = REDUCTIONS[name]
    x = np.zeros((300, 300), dtype)
    x[3, 5] = np.nan
    x[100, 7] = np.inf
    x[200, 7] = np.inf
    x[250, 9] = np.inf
    x[251, 9] = -np.inf
    x[40, 290] = -np.inf
    ref.assert_close(op(x), oracle(x), dtype)


@pytest.mark.parametrize("name", REDUCTIONS)
def test_is_thread_independent(name, determinism_shape, dtype, large_array,
                               assert_thread_independent):
    op, _, _ = REDUCTIONS[name]
    x = large_array(determinism_shape, dtype)
    assert_thread_independent(lambda: op(x))


@pytest.mark.parametrize("name", REDUCTIONS)
def test_offset_large_values_are_thread_independent(name, dtype, large_array,
                                                    assert_thread_independent):
    # A shape whose column tiles do not divide evenly, with values whose sums round.
    op, _, _ = REDUCTIONS[name]
    x = large_array((4099, 601), dtype, "unit") * 1e3
    assert_thread_independent(lambda: op(x))
