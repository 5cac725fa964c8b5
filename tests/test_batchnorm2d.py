"""nn.BatchNorm2d: per channel over (N, H, W), against BatchNorm1d's formulas applied to
the (N * H * W, C) matrix of the batch, numerical gradients, running statistics, frozen
parameters, thread independence, bad input and PyTorch."""

import copy

import numpy as np
import pytest
from reference import assert_close, numerical_gradient

import fastnn
from fastnn import nn
from fastnn.nn.module import BackwardBeforeForward

# float32 results against the float64 reference: scaled by the input's spread
TOL32 = {"rtol": 2e-5, "atol": 2e-5}


def rows(x):
    """(N, C, H, W) -> the (N * H * W, C) matrix BatchNorm1d would normalize."""
    return np.asarray(x, np.float64).transpose(0, 2, 3, 1).reshape(-1, x.shape[1])


def images(m, shape):
    """The inverse of rows()."""
    n, c, h, w = shape
    return m.reshape(n, h, w, c).transpose(0, 3, 1, 2)


def ref_train(x, gamma, beta, dout, eps):
    """Train mode in float64 by BatchNorm1d's formulas, the backward by the chain rule
    step by step: (y, dx, dgamma, dbeta, mean, biased var, unbiased var)."""
    xm, g = rows(x), rows(dout)
    n = xm.shape[0]
    mean = xm.mean(axis=0)
    xc = xm - mean
    var = (xc**2).mean(axis=0)
    inv = 1 / np.sqrt(var + eps)
    xhat = xc * inv
    y = xhat * gamma + beta
    dgamma, dbeta = (g * xhat).sum(axis=0), g.sum(axis=0)
    dxhat = g * gamma
    dvar = (dxhat * xc).sum(axis=0) * -0.5 * inv**3
    dmean = -(dxhat * inv).sum(axis=0) + dvar * (-2 * xc).mean(axis=0)
    dx = dxhat * inv + dvar * 2 * xc / n + dmean / n
    return (images(y, x.shape), images(dx, x.shape), dgamma, dbeta, mean, var,
            xm.var(axis=0, ddof=1))


def problem(rng, shape=(3, 4, 5, 6), dtype=np.float64, loc=0.0):
    c = shape[1]
    x = loc + rng.standard_normal(shape) * rng.uniform(0.5, 3, (1, c, 1, 1))
    layer = nn.BatchNorm2d(c, eps=1e-3, dtype=dtype)
    layer.weight[...] = rng.uniform(0.5, 2, c)
    layer.bias[...] = rng.standard_normal(c)
    return x.astype(dtype), layer


# ---------------------------------------------------------------- train mode


@pytest.mark.parametrize("shape", [(3, 4, 5, 6), (1, 3, 4, 4), (7, 2, 1, 1), (2, 5, 1, 7)])
def test_train_matches_reference(shape, dtype, rng):
    x, bn = problem(rng, shape, dtype)
    gamma, beta = np.array(bn.weight, np.float64), np.array(bn.bias, np.float64)
    dout = rng.standard_normal(shape).astype(dtype)
    y = bn(x)
    dx = bn.backward(dout)
    ry, rdx, rdgamma, rdbeta, mean, _, unbiased = ref_train(x, gamma, beta, dout, 1e-3)
    if dtype == np.float64:
        assert_close(y, ry, dtype)
        assert_close(dx, rdx, dtype, magnitude=np.abs(rdx) + 1)
        assert_close(bn.weight.grad, rdgamma, dtype, magnitude=np.abs(rows(dout)).sum(0))
        assert_close(bn.bias.grad, rdbeta, dtype, magnitude=np.abs(rows(dout)).sum(0))
    else:
        np.testing.assert_allclose(y, ry, **TOL32)
        np.testing.assert_allclose(dx, rdx, **TOL32)
        np.testing.assert_allclose(bn.weight.grad, rdgamma, rtol=1e-5, atol=1e-4)
        np.testing.assert_allclose(bn.bias.grad, rdbeta, rtol=1e-5, atol=1e-4)
    assert y.dtype == dx.dtype == np.dtype(dtype)
    rtol = 1e-12 if dtype == np.float64 else 1e-5
    np.testing.assert_allclose(bn.running_mean, 0.1 * mean, rtol=rtol, atol=rtol)
    np.testing.assert_allclose(bn.running_var, 0.9 + 0.1 * unbiased, rtol=rtol)


def test_equals_batchnorm1d_on_the_rows(rng):
    x, bn2 = problem(rng, (4, 3, 5, 5))
    bn1 = nn.BatchNorm1d(3, eps=1e-3, dtype=np.float64)
    bn1.weight[...], bn1.bias[...] = bn2.weight, bn2.bias
    dout = rng.standard_normal(x.shape)
    for _ in range(2):
        y1 = bn1(rows(x))
        np.testing.assert_allclose(bn2(x), images(y1, x.shape), rtol=1e-12, atol=1e-12)
        dx1 = bn1.backward(rows(dout))
        np.testing.assert_allclose(bn2.backward(dout), images(dx1, x.shape), rtol=1e-11,
                                   atol=1e-12)
    np.testing.assert_allclose(bn2.weight.grad, bn1.weight.grad, rtol=1e-12)
    np.testing.assert_allclose(bn2.bias.grad, bn1.bias.grad, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(bn2.running_var, bn1.running_var, rtol=1e-12)


def test_float32_statistics_of_a_large_mean(rng):
    x, bn = problem(rng, (8, 3, 16, 16), np.float32, loc=1e4)
    y = bn(x)
    ry, *_ = ref_train(x, np.array(bn.weight, np.float64), np.array(bn.bias, np.float64),
                       np.zeros(x.shape), 1e-3)
    # x itself is only known to float32 rounding (1e4 * 6e-8): y to about 3e-4 / std
    np.testing.assert_allclose(y, ry, rtol=1e-3, atol=1e-3)


@pytest.mark.parametrize("momentum", [0.1, 0.3, 1.0, 0.0])
def test_running_statistics_over_several_steps(momentum, dtype, rng):
    bn = nn.BatchNorm2d(3, momentum=momentum, dtype=dtype)
    mean, var = np.zeros(3), np.ones(3)
    for step in range(4):
        x = (step + rng.standard_normal((4, 3, 3, 5)) * (step + 1)).astype(dtype)
        bn(x)
        mean = (1 - momentum) * mean + momentum * rows(x).mean(axis=0)
        var = (1 - momentum) * var + momentum * rows(x).var(axis=0, ddof=1)
    rtol = 1e-12 if dtype == np.float64 else 1e-5
    np.testing.assert_allclose(bn.running_mean, mean, rtol=rtol, atol=rtol)
    np.testing.assert_allclose(bn.running_var, var, rtol=rtol)


def test_train_numerical_gradient(rng):
    x, bn = problem(rng, (2, 3, 3, 2))
    w = rng.standard_normal(x.shape)
    bn(x)
    dx = bn.backward(w).copy()
    dgamma, dbeta = bn.weight.grad.copy(), bn.bias.grad.copy()
    mean, var = bn.running_mean.copy(), bn.running_var.copy()

    def loss():
        bn.running_mean[...], bn.running_var[...] = mean, var  # they stay out of it
        return np.sum(bn(x) * w)

    np.testing.assert_allclose(dx, numerical_gradient(loss, x), rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(dgamma, numerical_gradient(loss, bn.weight), rtol=1e-6,
                               atol=1e-8)
    np.testing.assert_allclose(dbeta, numerical_gradient(loss, bn.bias), rtol=1e-6, atol=1e-8)


# ---------------------------------------------------------------- eval mode


def test_eval_uses_the_running_statistics_only(dtype, rng):
    x, bn = problem(rng, (2, 3, 4, 4), dtype)
    bn.running_mean[...] = [0.5, -1.0, 2.0]
    bn.running_var[...] = [2.0, 0.5, 1.5]
    bn.eval()
    before = bn.state_dict()
    y = bn(x)
    scale = np.array(bn.weight, np.float64) / np.sqrt(np.array(bn.running_var, np.float64) + 1e-3)
    shape = (1, 3, 1, 1)
    ry = (x - bn.running_mean.reshape(shape)) * scale.reshape(shape) + bn.bias.reshape(shape)
    dout = rng.standard_normal(x.shape).astype(dtype)
    dx = bn.backward(dout)
    tol = TOL32 if dtype == np.float32 else {"rtol": 1e-12, "atol": 1e-12}
    np.testing.assert_allclose(y, ry, **tol)
    np.testing.assert_allclose(dx, dout * scale.reshape(shape), **tol)
    xhat = (rows(x) - bn.running_mean) * (scale / bn.weight)
    np.testing.assert_allclose(bn.weight.grad, (rows(dout) * xhat).sum(0), rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(bn.bias.grad, rows(dout).sum(0), rtol=1e-5, atol=1e-4)
    for name, value in before.items():
        np.testing.assert_array_equal(bn.state_dict()[name], value)


def test_eval_numerical_gradient(rng):
    x, bn = problem(rng, (2, 3, 2, 3))
    bn.running_mean[...] = [0.5, -1.0, 2.0]
    bn.running_var[...] = [2.0, 0.5, 1.5]
    bn.eval()
    w = rng.standard_normal(x.shape)
    bn(x)
    dx = bn.backward(w).copy()
    dgamma, dbeta = bn.weight.grad.copy(), bn.bias.grad.copy()

    def loss():
        return np.sum(bn(x) * w)

    np.testing.assert_allclose(dx, numerical_gradient(loss, x), rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(dgamma, numerical_gradient(loss, bn.weight), rtol=1e-6,
                               atol=1e-8)
    np.testing.assert_allclose(dbeta, numerical_gradient(loss, bn.bias), rtol=1e-6, atol=1e-8)


def test_a_single_value_per_channel(rng):
    bn = nn.BatchNorm2d(2)
    x = rng.standard_normal((1, 2, 1, 1)).astype(np.float32)
    with pytest.raises(ValueError, match="more than 1 value"):
        bn(x)
    assert bn(rng.standard_normal((1, 2, 2, 1)).astype(np.float32)).shape == (1, 2, 2, 1)
    bn.eval()
    assert bn(x).shape == x.shape
    empty = np.zeros((0, 2, 3, 3), np.float32)
    assert bn(empty).shape == empty.shape and bn.backward(empty).shape == empty.shape
    with pytest.raises(ValueError, match="more than 1 value"):
        bn.train()(empty)


# ---------------------------------------------------------------- gradients


def test_gradients_accumulate_and_frozen_parameters_get_none(rng):
    x, bn = problem(rng, (2, 3, 4, 4))
    dout = rng.standard_normal(x.shape)
    bn(x)
    dx = bn.backward(dout).copy()
    dgamma, dbeta = bn.weight.grad.copy(), bn.bias.grad.copy()
    bn.backward(dout)
    np.testing.assert_allclose(bn.weight.grad, 2 * dgamma, rtol=1e-14)
    np.testing.assert_allclose(bn.bias.grad, 2 * dbeta, rtol=1e-14)
    bn.zero_grad()
    bn.weight.requires_grad = False
    bn(x)
    np.testing.assert_array_equal(bn.backward(dout), dx)
    np.testing.assert_array_equal(bn.weight.grad, 0)
    np.testing.assert_array_equal(bn.bias.grad, dbeta)
    bn.zero_grad()
    bn.weight.requires_grad, bn.bias.requires_grad = True, False
    bn(x)
    assert bn.backward(dout, input_grad=False) is None
    np.testing.assert_array_equal(bn.weight.grad, dgamma)
    np.testing.assert_array_equal(bn.bias.grad, 0)


# ---------------------------------------------------------------- threads, layouts


def test_bitwise_the_same_at_1_and_2_threads(dtype, large_array, assert_thread_independent):
    x = large_array((8, 16, 16, 16), dtype)
    g = large_array((8, 16, 16, 16), dtype, "signed")
    bn = nn.BatchNorm2d(16, dtype=dtype)

    def run():
        bn.running_mean[...], bn.running_var[...] = 0, 1
        bn.zero_grad()
        y = bn(x).copy()
        dx = bn.backward(g).copy()
        return y, dx, bn.weight.grad.copy(), bn.bias.grad.copy(), bn.running_var.copy()

    assert_thread_independent(run)


def test_non_contiguous_input_equals_contiguous_copy(rng):
    base = rng.standard_normal((4, 6, 5, 3)).astype(np.float32)
    x = base.transpose(0, 3, 2, 1)[:, :, ::2]  # (4, 3, 3, 6)
    a, b = nn.BatchNorm2d(3), nn.BatchNorm2d(3)
    g = rng.standard_normal(x.shape).astype(np.float32)
    np.testing.assert_array_equal(a(x), b(np.ascontiguousarray(x)))
    np.testing.assert_array_equal(a.backward(np.flip(np.flip(g, -1).copy(), -1)),
                                  b.backward(g))
    np.testing.assert_array_equal(a.running_var, b.running_var)


def test_an_activation_may_overwrite_the_output(rng):
    x, bn = problem(rng, (2, 3, 4, 4))
    dout = rng.standard_normal(x.shape)
    bn(x)
    expected = bn.backward(dout).copy()
    bn(x)[...] = np.nan  # backward reads x, not y
    np.testing.assert_array_equal(bn.backward(dout), expected)
    assert not bn._op[2].reads_y


# ---------------------------------------------------------------- bad input, module API


def test_bad_input():
    bn = nn.BatchNorm2d(3)
    with pytest.raises(ValueError, match=r"\(N, 3, H, W\)"):
        bn(np.zeros((2, 3), np.float32))
    with pytest.raises(ValueError, match=r"\(N, 3, H, W\)"):
        bn(np.zeros((2, 4, 2, 2), np.float32))
    with pytest.raises(TypeError, match="float32"):
        bn(np.zeros((2, 3, 2, 2), np.float64))
    with pytest.raises(TypeError):
        bn([[[[0.0]]]])
    with pytest.raises(BackwardBeforeForward):
        bn.backward(np.zeros((2, 3, 2, 2), np.float32))
    bn(np.ones((2, 3, 2, 2), np.float32))
    with pytest.raises(ValueError, match="dout"):
        bn.backward(np.zeros((2, 3, 2, 1), np.float32))
    for kwargs in ({"num_features": 0}, {"num_features": 2.0}, {"num_features": 3, "eps": 0},
                   {"num_features": 3, "momentum": 1.5}):
        with pytest.raises(ValueError):
            nn.BatchNorm2d(**kwargs)
    with pytest.raises(TypeError):
        nn.BatchNorm2d(3, dtype=np.int32)


def test_module_api_copy_and_save(tmp_path, rng):
    bn = nn.BatchNorm2d(4, momentum=0.2, eps=1e-4, dtype=np.float64)
    assert repr(bn) == "BatchNorm2d(4, momentum=0.2, eps=0.0001)"
    assert bn.config() == {"num_features": 4, "momentum": 0.2, "eps": 1e-4, "dtype": "float64"}
    assert [p.kind for p in bn.parameters()] == ["norm", "norm"]
    assert set(bn.state_dict()) == {"weight", "bias", "running_mean", "running_var"}
    assert bn.rank_statistics == ("running_mean", "running_var")
    assert {"training", "weight", "bias"} <= set(bn.plan_state())
    model = nn.Sequential(bn, nn.ReLU(), nn.MaxPool2d(2), nn.BatchNorm2d(4, dtype=np.float64))
    x = rng.standard_normal((3, 4, 6, 6))
    model(x)
    model.eval()
    y = model(x).copy()
    np.testing.assert_array_equal(copy.deepcopy(model)(x), y)
    fastnn.save(model, tmp_path / "bn.safetensors")
    loaded = fastnn.load(tmp_path / "bn.safetensors").eval()
    np.testing.assert_array_equal(loaded(x), y)


def test_a_sequential_arena_and_training_step(rng):
    model = nn.Sequential(nn.BatchNorm2d(2), nn.GlobalAvgPool2d(), nn.Linear(2, 3, seed=0))
    bn = model[0]
    x = rng.standard_normal((4, 2, 3, 3)).astype(np.float32)
    y = model(x)
    model.backward(np.ones_like(y))
    assert bn.weight.arena.holder is model  # views into the model's arena
    # dbeta = sum of d(loss)/dy over 4 * 3 * 3 cells, each sum(linear weights) / 9
    np.testing.assert_allclose(bn.bias.grad, model[2].weight.sum(1) * 4, rtol=1e-5)


class FakePlan:
    """What add_to_plan uses of a compiled plan: rows, dtype, shape, add_kernel."""

    def __init__(self, rows, dtype, shape):
        self.rows, self.dtype, self.shape, self.ops = rows, np.dtype(dtype), shape, []

    def add_kernel(self, op):
        self.ops.append(op)
        self.shape = op.out_shape


def test_add_to_plan(rng):
    x, bn = problem(rng, (3, 4, 2, 5))
    plan = FakePlan(3, np.float64, (4, 2, 5))
    assert bn.add_to_plan(plan, None) == 1
    (op,) = plan.ops
    assert op.out_shape == (4, 2, 5) and not op.reads_y
    dout = rng.standard_normal(x.shape)
    ry, rdx, rdgamma, rdbeta, mean, *_ = ref_train(x, np.array(bn.weight), np.array(bn.bias),
                                                   dout, 1e-3)
    y = op.run_forward(x, np.empty_like(x), 2)
    np.testing.assert_allclose(y, ry, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(bn.running_mean, 0.1 * mean, rtol=1e-12, atol=1e-15)
    dx = op.run_backward(x, y, dout, np.empty_like(x), True, 2)
    np.testing.assert_allclose(dx, rdx, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(bn.weight.grad, rdgamma, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(bn.bias.grad, rdbeta, rtol=1e-12, atol=1e-12)
    for shape in ((3, 2, 5), (8,)):
        with pytest.raises(ValueError, match=r"\(N, 4, H, W\)"):
            bn.add_to_plan(FakePlan(3, np.float64, shape), None)
    with pytest.raises(ValueError, match="more than 1 value"):
        bn.add_to_plan(FakePlan(1, np.float64, (4, 1, 1)), None)


# ---------------------------------------------------------------- PyTorch


@pytest.mark.parametrize("shape", [(4, 3, 5, 6), (1, 2, 3, 3)])
def test_agrees_with_torch(shape, rng):
    torch = pytest.importorskip("torch")
    x, bn = problem(rng, shape)
    tbn = torch.nn.BatchNorm2d(shape[1], eps=1e-3, momentum=0.1, dtype=torch.float64)
    with torch.no_grad():
        tbn.weight.copy_(torch.tensor(np.array(bn.weight)))
        tbn.bias.copy_(torch.tensor(np.array(bn.bias)))
    for mode in ("train", "eval"):
        bn.train(mode == "train"), tbn.train(mode == "train")
        bn.zero_grad()
        tbn.zero_grad()
        dout = rng.standard_normal(shape)
        tx = torch.tensor(x, requires_grad=True)
        ty = tbn(tx)
        ty.backward(torch.tensor(dout))
        np.testing.assert_allclose(bn(x), ty.detach().numpy(), rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(bn.backward(dout), tx.grad.numpy(), rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(bn.weight.grad, tbn.weight.grad.numpy(), rtol=1e-10)
        np.testing.assert_allclose(bn.bias.grad, tbn.bias.grad.numpy(), rtol=1e-10)
        np.testing.assert_allclose(bn.running_mean, tbn.running_mean.numpy(), rtol=1e-12)
        np.testing.assert_allclose(bn.running_var, tbn.running_var.numpy(), rtol=1e-12)
