"""Pooling: nn.MaxPool2d, nn.AvgPool2d and nn.GlobalAvgPool2d against plain NumPy loops
over the windows and numerical gradients, thread independence, bad input, PyTorch."""

import copy

import numpy as np
import pytest
from reference import assert_close, numerical_gradient

import fastnn
from fastnn import nn
from fastnn.nn.module import BackwardBeforeForward

# (kernel, stride, padding, (N, C, H, W)): square and not, overlapping, strided, padded
WINDOWS = [
    (2, None, 0, (2, 3, 6, 6)),
    (2, None, 0, (2, 3, 7, 5)),  # the 2x2 fast path, odd sides: a cell left out
    (3, 1, 1, (2, 2, 5, 7)),
    (3, 2, 1, (1, 2, 7, 6)),
    ((2, 3), (1, 2), (1, 1), (2, 2, 5, 8)),
    ((3, 1), (2, 1), 0, (3, 1, 7, 4)),
    (4, 3, 2, (1, 2, 9, 9)),
    (5, None, 0, (2, 1, 5, 5)),
]
WINDOW_IDS = [f"k{k}-s{s}-p{p}-{'x'.join(map(str, shape))}" for k, s, p, shape in WINDOWS]


def _pair(v):
    return (v, v) if isinstance(v, int) else tuple(v)


def _windows(shape, kernel, stride, padding):
    """(n, c, oh, ow, [(h, w) of the window's cells inside the input, row-major])."""
    n, c, h, w = shape
    (kh, kw), (ph, pw) = _pair(kernel), _pair(padding)
    sh, sw = _pair(kernel if stride is None else stride)
    oh_n, ow_n = (h + 2 * ph - kh) // sh + 1, (w + 2 * pw - kw) // sw + 1
    for i in np.ndindex(n, c, oh_n, ow_n):
        h0, w0 = i[2] * sh - ph, i[3] * sw - pw
        cells = [(a, b) for a in range(h0, h0 + kh) for b in range(w0, w0 + kw)
                 if 0 <= a < h and 0 <= b < w]
        yield i, cells, (n, c, oh_n, ow_n)


def ref_max(x, g, kernel, stride=None, padding=0):
    """Max pooling and its backward for g, in float64: (y, dx). The first of equal
    maxima in row-major window order takes the gradient; padded cells never win."""
    x, g = np.asarray(x, np.float64), np.asarray(g, np.float64)
    y, dx = None, np.zeros_like(x)
    for i, cells, out_shape in _windows(x.shape, kernel, stride, padding):
        y = np.zeros(out_shape) if y is None else y
        values = [x[i[0], i[1], a, b] for a, b in cells]
        a, b = cells[int(np.argmax(values))]
        y[i] = x[i[0], i[1], a, b]
        if g is not None:
            dx[i[0], i[1], a, b] += g[i]
    return y, dx


def ref_avg(x, g, kernel, stride=None, padding=0):
    """Average pooling (zero padding counted: divisor kh * kw) and its backward for g."""
    x, g = np.asarray(x, np.float64), np.asarray(g, np.float64)
    size = np.prod(_pair(kernel))
    y, dx = None, np.zeros_like(x)
    for i, cells, out_shape in _windows(x.shape, kernel, stride, padding):
        y = np.zeros(out_shape) if y is None else y
        y[i] = sum(x[i[0], i[1], a, b] for a, b in cells) / size
        if g is not None:
            for a, b in cells:
                dx[i[0], i[1], a, b] += g[i] / size
    return y, dx


# ---------------------------------------------------------------- against the references


@pytest.mark.parametrize(("kernel", "stride", "padding", "shape"), WINDOWS, ids=WINDOW_IDS)
@pytest.mark.parametrize(("layer", "ref"), [(nn.MaxPool2d, ref_max), (nn.AvgPool2d, ref_avg)],
                         ids=["max", "avg"])
def test_pool_matches_reference(layer, ref, kernel, stride, padding, shape, dtype, rng):
    x = rng.standard_normal(shape).astype(dtype)
    pool = layer(kernel, stride, padding)
    y = pool(x)
    g = rng.standard_normal(y.shape).astype(dtype)
    ry, rdx = ref(x, g, kernel, stride, padding)
    assert_close(y, ry, dtype)
    assert_close(pool.backward(g), rdx, dtype, magnitude=np.abs(rdx) + 1)


def test_max_ties_route_to_the_first_cell_in_row_major_order(dtype, rng):
    for side, kernel, stride, padding in ((7, 2, None, 0), (8, 2, None, 0), (7, 3, 1, 1),
                                          (7, (3, 2), (2, 1), 1)):
        x = rng.integers(0, 3, (2, 3, side, side)).astype(dtype)  # many equal maxima
        pool = nn.MaxPool2d(kernel, stride, padding)
        g = rng.standard_normal(pool(x).shape).astype(dtype)
        ry, rdx = ref_max(x, g, kernel, stride, padding)
        assert_close(pool._y, ry, dtype)
        assert_close(pool.backward(g), rdx, dtype, magnitude=np.abs(rdx) + 1)


def test_max_padding_never_wins_and_nan_propagates():
    x = -np.ones((1, 1, 2, 2))
    np.testing.assert_array_equal(nn.MaxPool2d(2, 1, 1)(x), -np.ones((1, 1, 3, 3)))
    x = np.array([[[[1.0, np.nan], [3.0, 2.0]]]])
    assert np.isnan(nn.MaxPool2d(2)(x)).all()


@pytest.mark.parametrize(("kernel", "stride", "padding", "shape"), WINDOWS[:4],
                         ids=WINDOW_IDS[:4])
@pytest.mark.parametrize("layer", [nn.MaxPool2d, nn.AvgPool2d], ids=["max", "avg"])
def test_pool_numerical_gradient(layer, kernel, stride, padding, shape, rng):
    # distinct values more than 2h apart: the max of every window stays where it is
    x = rng.permutation(np.prod(shape)).reshape(shape) * 0.01
    pool = layer(kernel, stride, padding)
    w = rng.standard_normal(pool(x).shape)
    dx = pool.backward(w).copy()
    np.testing.assert_allclose(dx, numerical_gradient(lambda: np.sum(pool(x) * w), x),
                               rtol=1e-7, atol=1e-8)


def test_global_avg_pool(dtype, rng):
    x = rng.standard_normal((3, 4, 5, 6)).astype(dtype)
    pool = nn.GlobalAvgPool2d()
    y = pool(x)
    assert_close(y, x.astype(np.float64).mean(axis=(2, 3)), dtype)
    g = rng.standard_normal((3, 4)).astype(dtype)
    assert_close(pool.backward(g), np.broadcast_to(g[:, :, None, None] / 30.0, x.shape), dtype)


def test_global_avg_pool_numerical_gradient(rng):
    x = rng.standard_normal((2, 3, 4, 3))
    pool = nn.GlobalAvgPool2d()
    w = rng.standard_normal((2, 3))
    pool(x)
    dx = pool.backward(w).copy()
    np.testing.assert_allclose(dx, numerical_gradient(lambda: np.sum(pool(x) * w), x),
                               rtol=1e-7, atol=1e-9)


@pytest.mark.parametrize("layer", [nn.MaxPool2d(2), nn.AvgPool2d(3, 1, 1), nn.GlobalAvgPool2d()],
                         ids=["max", "avg", "global"])
def test_batch_of_one_and_float32_float64_agree(layer, rng):
    x = rng.standard_normal((1, 2, 6, 6))
    y64 = layer(x).copy()
    dx64 = layer.backward(np.ones_like(y64)).copy()
    y32 = layer(x.astype(np.float32))
    assert y32.dtype == np.float32
    assert_close(y32, y64, np.float32)
    assert_close(layer.backward(np.ones_like(y32)), dx64, np.float32)


def test_overlapping_windows_add_their_gradients():
    x = np.zeros((1, 1, 3, 3))
    x[0, 0, 1, 1] = 1.0  # the max of all four 2x2 windows at stride 1
    pool = nn.MaxPool2d(2, 1)
    pool(x)
    dx = pool.backward(np.full((1, 1, 2, 2), 1.5))
    assert dx[0, 0, 1, 1] == 6.0 and dx.sum() == 6.0


# ---------------------------------------------------------------- threads, layouts


@pytest.mark.parametrize("make", [lambda: nn.MaxPool2d(3, 2, 1), lambda: nn.AvgPool2d(2),
                                  nn.GlobalAvgPool2d], ids=["max", "avg", "global"])
def test_bitwise_the_same_at_1_and_2_threads(make, dtype, large_array, assert_thread_independent):
    x = large_array((8, 16, 20, 20), dtype)  # over the size that runs threaded
    pool = make()
    g = large_array(pool(x).shape, dtype, "signed")

    def run():
        return pool(x).copy(), pool.backward(g).copy()

    assert_thread_independent(run)


@pytest.mark.parametrize("layer", [nn.MaxPool2d(2), nn.AvgPool2d(3, 2, 1), nn.GlobalAvgPool2d()],
                         ids=["max", "avg", "global"])
def test_non_contiguous_input_equals_contiguous_copy(layer, rng):
    base = rng.standard_normal((2, 6, 3, 14)).astype(np.float32)
    x = base.transpose(0, 3, 2, 1)[:, ::2]  # (2, 7, 3, 6), neither C- nor F-contiguous
    y = layer(x).copy()
    g = rng.standard_normal(y.shape).astype(np.float32)
    dx = layer.backward(np.flip(np.flip(g, -1).copy(), -1)).copy()  # a strided dout
    np.testing.assert_array_equal(y, layer(np.ascontiguousarray(x)))
    np.testing.assert_array_equal(dx, layer.backward(g))


def test_outputs_reuse_their_buffers_and_input_grad_false(rng):
    pool = nn.MaxPool2d(2)
    x = rng.standard_normal((2, 3, 4, 4)).astype(np.float32)
    y = pool(x)
    assert pool(x) is y
    assert pool.backward(np.ones_like(y), input_grad=False) is None


@pytest.mark.parametrize("layer", [nn.MaxPool2d(2), nn.AvgPool2d(3, 2, 1), nn.GlobalAvgPool2d()],
                         ids=["max", "avg", "global"])
def test_an_empty_batch(layer):
    x = np.zeros((0, 3, 6, 5), np.float32)
    y = layer(x)
    assert y.shape == {"MaxPool2d": (0, 3, 3, 2), "AvgPool2d": (0, 3, 3, 3),
                       "GlobalAvgPool2d": (0, 3)}[type(layer).__name__]
    assert layer.backward(y).shape == x.shape


# ---------------------------------------------------------------- bad input


@pytest.mark.parametrize("make", [nn.MaxPool2d, nn.AvgPool2d])
def test_constructor_rejects_bad_windows(make):
    for kwargs in ({"kernel_size": 0}, {"kernel_size": -2}, {"kernel_size": (2, 0)},
                   {"kernel_size": 2, "stride": 0}, {"kernel_size": 2, "padding": -1},
                   {"kernel_size": 2, "padding": 2}, {"kernel_size": (3, 2), "padding": (1, 2)}):
        with pytest.raises(ValueError):
            make(**kwargs)
    for kwargs in ({"kernel_size": 2.0}, {"kernel_size": True}, {"kernel_size": (2, 2, 2)},
                   {"kernel_size": "2"}, {"kernel_size": 2, "stride": 1.5}):
        with pytest.raises(TypeError):
            make(**kwargs)


@pytest.mark.parametrize("layer", [nn.MaxPool2d(2), nn.AvgPool2d(2), nn.GlobalAvgPool2d()],
                         ids=["max", "avg", "global"])
def test_forward_rejects_bad_input(layer):
    with pytest.raises(ValueError, match="shape"):
        layer(np.zeros((2, 3, 4), np.float32))
    with pytest.raises(ValueError, match="shape"):
        layer(np.zeros((2, 3, 4, 4, 1), np.float32))
    with pytest.raises(TypeError):
        layer(np.zeros((2, 3, 4, 4), np.int32))
    with pytest.raises(TypeError):
        layer(np.zeros((2, 3, 4, 4), np.float16))
    with pytest.raises(TypeError):
        layer([[[[1.0]]]])


def test_window_larger_than_the_padded_input():
    with pytest.raises(ValueError, match="larger than"):
        nn.MaxPool2d(5)(np.zeros((1, 1, 4, 9)))
    with pytest.raises(ValueError, match="larger than"):
        nn.AvgPool2d((2, 6), padding=(1, 1))(np.zeros((1, 1, 4, 3)))
    assert nn.AvgPool2d(4, padding=1)(np.zeros((1, 1, 2, 2))).shape == (1, 1, 1, 1)


def test_backward_checks_and_order(rng):
    pool = nn.AvgPool2d(2)
    with pytest.raises(BackwardBeforeForward):
        pool.backward(np.ones((1, 1, 1, 1), np.float32))
    pool(rng.standard_normal((2, 3, 4, 4)).astype(np.float32))
    with pytest.raises(ValueError, match=r"^dout: expected shape \(2, 3, 2, 2\)"):
        pool.backward(np.ones((2, 3, 2, 3), np.float32))
    with pytest.raises(TypeError, match=r"^dout: expected dtype float32, got float64"):
        pool.backward(np.ones((2, 3, 2, 2), np.float64))


# ---------------------------------------------------------------- module API


def test_config_repr_copy_and_save(tmp_path, rng):
    pool = nn.MaxPool2d((3, 2), padding=(1, 0))
    assert pool.config() == {"kernel_size": [3, 2], "stride": [3, 2], "padding": [1, 0]}
    assert repr(pool) == "MaxPool2d(kernel_size=(3, 2), stride=(3, 2), padding=(1, 0))"
    assert list(pool.parameters()) == []
    model = nn.Sequential(nn.AvgPool2d(2, 1), nn.MaxPool2d((3, 2), padding=(1, 0)),
                          nn.GlobalAvgPool2d())
    x = rng.standard_normal((2, 3, 9, 8)).astype(np.float32)
    y = model(x).copy()
    np.testing.assert_array_equal(copy.deepcopy(model)(x), y)
    fastnn.save(model, tmp_path / "pool.safetensors")
    np.testing.assert_array_equal(fastnn.load(tmp_path / "pool.safetensors")(x), y)


class FakePlan:
    """What add_to_plan uses of a compiled plan: rows, dtype, shape, add_kernel."""

    def __init__(self, rows, dtype, shape):
        self.rows, self.dtype, self.shape, self.ops = rows, np.dtype(dtype), shape, []

    def add_kernel(self, op):
        assert (op.rows, op.dtype, op.in_shape) == (self.rows, self.dtype, self.shape)
        self.ops.append(op)
        self.shape = op.out_shape


@pytest.mark.parametrize("layer", [nn.MaxPool2d(3, 2, 1), nn.AvgPool2d((2, 3)),
                                   nn.GlobalAvgPool2d()], ids=["max", "avg", "global"])
def test_add_to_plan_adds_the_op_the_layer_runs(layer, rng):
    x = rng.standard_normal((3, 2, 7, 9))
    plan = FakePlan(3, np.float64, (2, 7, 9))
    assert layer.add_to_plan(plan, None) == 1
    (op,) = plan.ops
    assert not op.reads_y
    y = layer(x)
    assert plan.shape == y.shape[1:]
    y_op = op.run_forward(x, np.empty_like(y), 1)
    np.testing.assert_array_equal(y_op, y)
    g = rng.standard_normal(y.shape)
    np.testing.assert_array_equal(op.run_backward(x, y_op, g, np.empty_like(x), True, 1),
                                  layer.backward(g))
    with pytest.raises(ValueError):
        layer.add_to_plan(FakePlan(3, np.float64, (14,)), None)


def test_add_to_plan_rejects_a_window_larger_than_the_input():
    with pytest.raises(ValueError, match="larger than"):
        nn.MaxPool2d(4).add_to_plan(FakePlan(2, np.float32, (3, 3, 8)), None)


# ---------------------------------------------------------------- PyTorch


@pytest.mark.parametrize(("kernel", "stride", "padding", "shape"), WINDOWS, ids=WINDOW_IDS)
def test_agrees_with_torch(kernel, stride, padding, shape, rng):
    torch = pytest.importorskip("torch")
    x = rng.integers(-3, 4, shape).astype(np.float64)  # ties included
    for layer, fn in ((nn.MaxPool2d, torch.nn.functional.max_pool2d),
                      (nn.AvgPool2d, torch.nn.functional.avg_pool2d)):
        pool = layer(kernel, stride, padding)
        y = pool(x)
        g = rng.standard_normal(y.shape)
        tx = torch.tensor(x, requires_grad=True)
        ty = fn(tx, kernel, stride, padding)
        ty.backward(torch.tensor(g))
        np.testing.assert_allclose(y, ty.detach().numpy(), rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(pool.backward(g), tx.grad.numpy(), rtol=1e-12, atol=1e-12)
    gap = nn.GlobalAvgPool2d()
    tx = torch.tensor(x, requires_grad=True)
    ty = torch.nn.functional.adaptive_avg_pool2d(tx, 1).flatten(1)
    g = rng.standard_normal(ty.shape)
    ty.backward(torch.tensor(g))
    np.testing.assert_allclose(gap(x), ty.detach().numpy(), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(gap.backward(g), tx.grad.numpy(), rtol=1e-12, atol=1e-12)
