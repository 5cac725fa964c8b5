"""Sizes past 32-bit limits: operands of more than 2**31 elements give the right answer
at any thread count (offsets are 64-bit); a dimension BLAS cannot take, a plane an int
index cannot address, or an augmentation parameter that would spin or allocate without
bound is refused with ValueError before anything is allocated.

The real large-input tests need several GiB and run only where /proc/meminfo says that
much is available. Their inputs are np.zeros (pages mapped on first write) with a few
rows set, so most of what they read costs no memory.
"""

import numpy as np
import pytest

import fastnn
from fastnn import augment, nn, ops
from fastnn._kernels import conv, network, pool

INT_MAX = 2**31 - 1
GIB = 2**30


def available_bytes():
    """MemAvailable from /proc/meminfo, 0 where it cannot be read."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return 0


def needs_memory(gib):
    return pytest.mark.skipif(available_bytes() < gib * GIB,
                              reason=f"needs {gib} GiB of available memory")


def huge(shape):
    """An array of `shape` without its elements: every item a read-only zero."""
    return np.broadcast_to(np.float32(0), shape)


# ---------------------------------------------------------------- real large inputs

def set_rows(a, rows, seed=0):
    """Random values in these rows of a zero array (the only pages written)."""
    rng = np.random.default_rng(seed)
    for r in rows:
        a[r] = rng.standard_normal(a.shape[1]).astype(a.dtype)


def tall_input(m):
    """(m, 64) float32 zeros but for rows in the first and the last thread's slab (at 2
    threads), the last row included."""
    a = np.zeros((m, 64), np.float32)
    rows = [0, 1, m // 2 - 1, m // 2 + 3, m - 2, m - 1]
    set_rows(a, rows)
    return a, rows


def check_rows(out, a, b, rows):
    """out is a @ b: the given rows as NumPy's float64 product, every other row 0."""
    expect = a[rows].astype(np.float64) @ b.astype(np.float64)
    np.testing.assert_allclose(out[rows], expect, rtol=1e-5, atol=1e-5)
    others = np.ones(out.shape[0], bool)
    others[rows] = False
    assert not out[others].any()


# 2**31 + 64 elements: the last row lies past 2**31.
PAST_2_31 = 2**31 // 64 + 1
# 2**32 + 1024 elements: at 2 threads the second slab starts 2**31 elements in (where a
# 32-bit offset wrapped, and the product read before its input).
PAST_2_32 = 2**26 + 16


@needs_memory(10)
@pytest.mark.parametrize("n_threads", [1, 2])
def test_matmul_of_more_than_2_31_elements(n_threads):
    a, rows = tall_input(PAST_2_31)
    b = np.random.default_rng(1).standard_normal((64, 1)).astype(np.float32)
    with fastnn.threads(n_threads):
        out = ops.matmul(a, b)
    check_rows(out, a, b, rows)


@needs_memory(18)
def test_matmul_slab_offsets_past_2_31():
    a, rows = tall_input(PAST_2_32)
    b = np.random.default_rng(1).standard_normal((64, 1)).astype(np.float32)
    with fastnn.threads(2):
        out = ops.matmul(a, b)
    check_rows(out, a, b, rows)


@needs_memory(18)
def test_linear_forward_slab_offsets_past_2_31():
    a, rows = tall_input(PAST_2_32)
    layer = nn.Linear(64, 1, seed=0)
    with fastnn.threads(2):
        out = layer.forward(a)
    check_rows(out - layer.bias, a, layer.weight, rows)


@needs_memory(18)
def test_compiled_plan_slab_offsets_past_2_31():
    """Sequential's compiled plan runs its own matrix products (network.pyx)."""
    a, rows = tall_input(PAST_2_32)
    model = nn.Sequential(nn.Linear(64, 1, seed=0))
    with fastnn.threads(2):
        out = model.forward(a)
    assert [plan for _, plan in model._plans.values()] != [None]  # the plan ran
    layer = model[0]
    check_rows(out - layer.bias, a, layer.weight, rows)


@needs_memory(10)
@pytest.mark.parametrize("trans_a", [False, True])
@pytest.mark.parametrize("trans_b", [False, True])
def test_matmul_splits_an_inner_dimension_past_2_30(trans_a, trans_b):
    """k = 2**30 + 17: two BLAS calls along k (the second adds to the first), for every
    layout of the operands."""
    k = 2**30 + 17
    x = np.zeros(k, np.float32)
    y = np.zeros(k, np.float32)
    at = [0, 5, 2**30 - 1, 2**30, k - 1]  # both sides of the split
    x[at] = [1.0, 2.0, 3.0, 4.0, 5.0]
    y[at] = [0.5, -1.0, 2.0, 0.25, -3.0]
    a = x[:, None].T if trans_a else x[None, :]  # (1, k); as a transposed view
    b = y[None, :].T if trans_b else y[:, None]  # (k, 1)
    with fastnn.threads(2):
        out = ops.matmul(a, b)
    assert out.shape == (1, 1)
    assert out[0, 0] == pytest.approx(float(x[at].astype(np.float64) @ y[at]), rel=1e-6)


@needs_memory(10)
def test_matmul_splits_rows_past_2_30():
    """m = 2**30 + 16 rows: more than one BLAS call per slab."""
    m = 2**30 + 16
    a = np.zeros((m, 1), np.float32)
    rows = [0, 2**29, 2**30 - 1, 2**30, m - 1]
    a[rows, 0] = [1.0, 2.0, 3.0, 4.0, 5.0]
    b = np.array([[1.5]], np.float32)
    with fastnn.threads(2):
        out = ops.matmul(a, b)
    np.testing.assert_array_equal(out[rows], a[rows] * 1.5)
    assert np.count_nonzero(out) == len(rows)


# ---------------------------------------------------------------- refused at the boundary


@pytest.mark.parametrize("make", [
    lambda: (huge((2, 2**31)), huge((2**31, 1))),   # a's rows too long for BLAS
    lambda: (huge((2, 1)), huge((1, 2**31))),       # b's and the output's rows
    lambda: (huge((2, 3, 2**31)), huge((2**31, 1))),  # batched: an item's k
    lambda: (huge((2, 2**31, 1)), huge((1, 1))),    # batched: an item's m
], ids=["a-rows", "b-rows", "batched-k", "batched-m"])
def test_matmul_refuses_dimensions_blas_cannot_take(make):
    a, b = make()
    with pytest.raises(ValueError, match="2\\*\\*31 - 1"):
        ops.matmul(a, b)


def test_plan_refuses_a_linear_layer_wider_than_blas_takes():
    plan = network.Plan(1, 2**31, np.dtype(np.float32), 1)
    with pytest.raises(ValueError, match="2\\*\\*31 - 1"):
        plan.add_linear(1, None, None, None, None, None, 0.0, None)


def test_conv_refuses_a_kernel_larger_than_blas_takes():
    weight = huge((1, 1, 2**16, 2**16))  # 2**32 rows per output
    with pytest.raises(ValueError, match="2\\*\\*31 - 1"):
        conv.ConvOp(1, (1, 2**16, 2**16), weight, None, None, None, (1, 1), (0, 0), (1, 1),
                    1, None, 0.0)


def test_max_pool_refuses_a_plane_an_int_cannot_index():
    with pytest.raises(ValueError, match="2\\*\\*31 - 1"):
        pool.MaxPoolOp(np.dtype(np.float32), 1, (1, 2**16, 2**16), (2, 2), (2, 2), (0, 0))


# ---------------------------------------------------------------- augmentation parameters


@pytest.mark.parametrize("make", [
    lambda: augment.ElasticDistortion(alpha=1, sigma=1e6),
    lambda: augment.ElasticDistortion(alpha=1, sigma=1e10),
    lambda: augment.ElasticDistortion(alpha=1, sigma=100.5),
    lambda: augment.ElasticDistortion(alpha=1e6, sigma=4),
    lambda: augment.ElasticDistortion(alpha=1e300, sigma=4),
    lambda: augment.RandomCrop(2**15 + 1),
    lambda: augment.RandomCrop(8, padding=10**9),
    lambda: augment.RandomCrop(8, image_size=(10**9, 8)),
    lambda: augment.RandomResizedCrop((8, 10**9)),
    lambda: augment.Compose([augment.HorizontalFlip()], image_size=10**9),
], ids=["sigma-1e6", "sigma-1e10", "sigma-over-100", "alpha-1e6", "alpha-1e300",
        "crop-size", "crop-padding", "crop-image-size", "resized-crop-size",
        "compose-image-size"])
def test_unbounded_augment_parameters_raise_at_construction(make):
    with pytest.raises(ValueError, match="must be"):
        make()


def test_largest_augment_parameters_are_accepted():
    images = np.random.default_rng(0).integers(0, 256, (2, 12, 12), dtype=np.uint8)
    elastic = augment.ElasticDistortion(alpha=2**15, sigma=100)
    out = elastic(images)
    assert out.shape == images.shape
    crop = augment.RandomCrop(8, padding=2**15)
    assert crop(images).shape == (2, 8, 8)


def test_images_with_a_side_over_the_limit_are_refused():
    with pytest.raises(ValueError, match="height and width"):
        augment.HorizontalFlip(1.0)(np.broadcast_to(np.uint8(0), (1, 2, 2**15 + 1)))
    with pytest.raises(ValueError, match="must be"):
        augment.warp(np.zeros((1, 4, 4), np.float32), np.eye(2, 3), size=(2**15 + 1, 4))
