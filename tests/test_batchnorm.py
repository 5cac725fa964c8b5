"""Batch normalization: ops.batchnorm_forward / batchnorm_backward against NumPy and
numerical gradients, the running statistics (PyTorch's formulas), and nn.BatchNorm1d."""

import numpy as np
import pytest
from reference import numerical_gradient

import fastnn
from fastnn import nn, ops

DTYPES = (np.float32, np.float64)
TOL = {np.dtype(np.float32): {"rtol": 1e-5, "atol": 1e-5},
       np.dtype(np.float64): {"rtol": 1e-12, "atol": 1e-12}}


# ---------------------------------------------------------------- NumPy references


def ref_forward(x, gamma, beta, eps):
    """Train-mode batch norm in float64: (y, mean, biased var, unbiased var)."""
    x, gamma, beta = (np.asarray(a, np.float64) for a in (x, gamma, beta))
    mean = x.mean(axis=0)
    var = x.var(axis=0)
    y = (x - mean) / np.sqrt(var + eps) * gamma + beta
    return y, mean, var, x.var(axis=0, ddof=1)


def ref_backward(dout, x, gamma, eps):
    """Train-mode gradients through the batch statistics, by the chain rule step by step."""
    dout, x, gamma = (np.asarray(a, np.float64) for a in (dout, x, gamma))
    n = x.shape[0]
    mean = x.mean(axis=0)
    xc = x - mean
    var = (xc**2).mean(axis=0)
    inv = 1 / np.sqrt(var + eps)
    xhat = xc * inv
    dgamma = (dout * xhat).sum(axis=0)
    dbeta = dout.sum(axis=0)
    dxhat = dout * gamma
    dvar = (dxhat * xc).sum(axis=0) * -0.5 * inv**3
    dmean = -(dxhat * inv).sum(axis=0) + dvar * (-2 * xc).mean(axis=0)
    dx = dxhat * inv + dvar * 2 * xc / n + dmean / n
    return dx, dgamma, dbeta


def problem(dtype, n=9, d=4, seed=0, loc=0.0):
    rng = np.random.default_rng(seed)
    x = (loc + rng.standard_normal((n, d)) * rng.uniform(0.5, 3, d)).astype(dtype)
    gamma = rng.uniform(0.5, 2, d).astype(dtype)
    beta = rng.standard_normal(d).astype(dtype)
    return x, gamma, beta


# ---------------------------------------------------------------- ops: forward


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
def test_forward_train_matches_numpy(dtype):
    x, gamma, beta = problem(dtype, n=37, d=11)
    y, mean, inv_std = ops.batchnorm_forward(x, gamma, beta, training=True, eps=1e-3)
    ry, rmean, rvar, _ = ref_forward(x, gamma, beta, 1e-3)
    assert y.dtype == np.dtype(dtype) and y.shape == x.shape
    tol = TOL[np.dtype(dtype)]
    np.testing.assert_allclose(y, ry, **tol)
    np.testing.assert_allclose(mean, rmean, **tol)
    np.testing.assert_allclose(inv_std, 1 / np.sqrt(rvar + 1e-3), **tol)
    # normalized columns: mean beta, biased std gamma * sqrt(var / (var + eps))
    np.testing.assert_allclose(y.astype(np.float64).mean(axis=0), beta, rtol=1e-4, atol=1e-5)


def test_forward_uses_biased_variance_even_for_two_rows():
    x = np.array([[0.0, 1.0], [2.0, 5.0]])
    y, mean, inv_std = ops.batchnorm_forward(x, np.ones(2), np.zeros(2), eps=1e-12)
    np.testing.assert_allclose(mean, [1.0, 3.0])
    np.testing.assert_allclose(inv_std, [1.0, 0.5])  # biased var: 1 and 4
    np.testing.assert_allclose(y, [[-1.0, -1.0], [1.0, 1.0]], rtol=1e-10)


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
def test_running_statistics_over_several_steps(dtype):
    d, momentum = 6, 0.3
    running_mean = np.zeros(d, dtype)
    running_var = np.ones(d, dtype)
    rm, rv = np.zeros(d), np.ones(d)
    for step, n in enumerate((5, 12, 2, 30)):
        x, gamma, beta = problem(dtype, n=n, d=d, seed=step, loc=step)
        ops.batchnorm_forward(x, gamma, beta, running_mean, running_var, training=True,
                              momentum=momentum)
        _, mean, _, unbiased = ref_forward(x, gamma, beta, 1e-5)
        rm = (1 - momentum) * rm + momentum * mean
        rv = (1 - momentum) * rv + momentum * unbiased
        np.testing.assert_allclose(running_mean, rm, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(running_var, rv, rtol=1e-5, atol=1e-6)


def test_momentum_zero_and_one():
    x, gamma, beta = problem(np.float64, n=8, d=3)
    rm, rv = np.full(3, 0.5), np.full(3, 2.0)
    ops.batchnorm_forward(x, gamma, beta, rm, rv, momentum=0.0)
    assert np.all(rm == 0.5) and np.all(rv == 2.0)
    ops.batchnorm_forward(x, gamma, beta, rm, rv, momentum=1.0)
    np.testing.assert_allclose(rm, x.mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(rv, x.var(axis=0, ddof=1), rtol=1e-12)


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
def test_eval_uses_running_statistics_only(dtype):
    x, gamma, beta = problem(dtype, n=10, d=5)
    rng = np.random.default_rng(4)
    rm = rng.standard_normal(5).astype(dtype)
    rv = rng.uniform(0.5, 2, 5).astype(dtype)
    rm0, rv0 = rm.copy(), rv.copy()
    y, mean, inv_std = ops.batchnorm_forward(x, gamma, beta, rm, rv, training=False, eps=1e-2)
    expected = (x.astype(np.float64) - rm) / np.sqrt(rv.astype(np.float64) + 1e-2) * gamma + beta
    np.testing.assert_allclose(y, expected, **TOL[np.dtype(dtype)])
    np.testing.assert_array_equal(rm, rm0)  # untouched in eval mode
    np.testing.assert_array_equal(rv, rv0)
    np.testing.assert_allclose(mean, rm0)
    np.testing.assert_allclose(inv_std, 1 / np.sqrt(rv0.astype(np.float64) + 1e-2),
                               **TOL[np.dtype(dtype)])
    # each row alone gives the same: no batch statistics involved
    for i in (0, 7):
        yi, _, _ = ops.batchnorm_forward(x[i:i + 1], gamma, beta, rm, rv, training=False,
                                         eps=1e-2)
        np.testing.assert_allclose(yi[0], y[i], **TOL[np.dtype(dtype)])


def test_train_with_one_row_raises_eval_works():
    x, gamma, beta = problem(np.float32, n=1, d=3)
    rm, rv = np.zeros(3, np.float32), np.ones(3, np.float32)
    with pytest.raises(ValueError, match="1 row"):
        ops.batchnorm_forward(x, gamma, beta, rm, rv, training=True)
    assert np.all(rm == 0) and np.all(rv == 1)
    y, _, _ = ops.batchnorm_forward(x, gamma, beta, rm, rv, training=False)
    np.testing.assert_allclose(y, x / np.sqrt(1 + 1e-5) * gamma + beta, rtol=1e-6)
    with pytest.raises(ValueError, match="running"):
        ops.batchnorm_forward(x, gamma, beta, training=False)


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("n, d", [(100, 600), (64, 256), (33, 257)])
def test_statistics_over_several_row_tiles_and_column_blocks(dtype, n, d):
    """The statistics are merged from tiles of 32 rows, in blocks of 256 columns: a
    short last tile and a narrow last block included, at 1 and 2 threads alike."""
    x, gamma, beta = problem(dtype, n=n, d=d, seed=n + d, loc=3.0)
    _, rmean, rvar, _ = ref_forward(x, gamma, beta, 1e-5)
    results = []
    for threads in (1, 2):
        with fastnn.threads(threads):
            y, mean, inv_std = ops.batchnorm_forward(x, gamma, beta, training=True)
        tol = TOL[np.dtype(dtype)]
        np.testing.assert_allclose(mean, rmean, **tol)
        np.testing.assert_allclose(inv_std, 1 / np.sqrt(rvar + 1e-5), **tol)
        results.append((y, mean, inv_std))
    for a, b in zip(*results):
        assert a.tobytes() == b.tobytes()


def test_float32_large_mean_is_accurate():
    """x = 1000 + N(0, 1) in float32: a one-pass sum-of-squares variance would lose most
    digits; compare with float64 statistics of the very same float32 numbers."""
    rng = np.random.default_rng(11)
    x = (1000 + rng.standard_normal((4000, 8))).astype(np.float32)
    gamma, beta = np.ones(8, np.float32), np.zeros(8, np.float32)
    rm, rv = np.zeros(8, np.float32), np.ones(8, np.float32)
    y, mean, inv_std = ops.batchnorm_forward(x, gamma, beta, rm, rv, momentum=1.0)
    ry, rmean, rvar, unbiased = ref_forward(x, gamma, beta, 1e-5)
    np.testing.assert_allclose(mean, rmean, rtol=1e-6)
    np.testing.assert_allclose(inv_std, 1 / np.sqrt(rvar + 1e-5), rtol=1e-4)
    np.testing.assert_allclose(rv, unbiased, rtol=1e-4)
    # y ~ N(0, 1): the error is a few float32 ulps of 1000 (about 6e-5 each)
    np.testing.assert_allclose(y, ry, atol=5e-4)


# ---------------------------------------------------------------- ops: backward


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
def test_backward_train_matches_chain_rule(dtype):
    x, gamma, beta = problem(dtype, n=23, d=7)
    dout = np.random.default_rng(5).standard_normal(x.shape).astype(dtype)
    _, mean, inv_std = ops.batchnorm_forward(x, gamma, beta, eps=1e-3)
    dx, dgamma, dbeta = ops.batchnorm_backward(dout, x, gamma, mean, inv_std, training=True)
    rdx, rdgamma, rdbeta = ref_backward(dout, x, gamma, 1e-3)
    tol = {"rtol": 1e-4, "atol": 1e-4} if dtype == np.float32 else {"rtol": 1e-10, "atol": 1e-10}
    np.testing.assert_allclose(dx, rdx, **tol)
    np.testing.assert_allclose(dgamma, rdgamma, **tol)
    np.testing.assert_allclose(dbeta, rdbeta, **tol)
    # the gradient through the batch mean makes every column of dx sum to 0
    np.testing.assert_allclose(dx.astype(np.float64).sum(axis=0), 0, atol=10 * tol["atol"])


@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
def test_backward_numerical(training):
    x, gamma, beta = problem(np.float64, n=6, d=3)
    dout = np.random.default_rng(6).standard_normal(x.shape)
    rm = np.array([0.3, -0.2, 1.0])
    rv = np.array([0.7, 1.5, 2.0])

    def f():
        y, _, _ = ops.batchnorm_forward(x, gamma, beta, rm.copy(), rv.copy(),
                                        training=training, eps=1e-3)
        return float(np.sum(y * dout))

    _, mean, inv_std = ops.batchnorm_forward(x, gamma, beta, rm.copy(), rv.copy(),
                                             training=training, eps=1e-3)
    dx, dgamma, dbeta = ops.batchnorm_backward(dout, x, gamma, mean, inv_std,
                                               training=training)
    np.testing.assert_allclose(dx, numerical_gradient(f, x), rtol=1e-5, atol=1e-8)
    np.testing.assert_allclose(dgamma, numerical_gradient(f, gamma), rtol=1e-5, atol=1e-8)
    np.testing.assert_allclose(dbeta, numerical_gradient(f, beta), rtol=1e-5, atol=1e-8)
    if not training:  # eval mode is an affine map: dx = gamma * inv_std * dout exactly
        np.testing.assert_allclose(dx, dout * gamma / np.sqrt(rv + 1e-3), rtol=1e-12)


def test_backward_in_place_into_dout():
    x, gamma, beta = problem(np.float64, n=8, d=4)
    dout = np.random.default_rng(1).standard_normal(x.shape)
    _, mean, inv_std = ops.batchnorm_forward(x, gamma, beta)
    expected = ops.batchnorm_backward(dout, x, gamma, mean, inv_std)[0].copy()
    dx, _, _ = ops.batchnorm_backward(dout, x, gamma, mean, inv_std, out=dout)
    assert dx is dout
    np.testing.assert_array_equal(dx, expected)


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
def test_thread_count_gives_bitwise_identical_results(dtype):
    rng = np.random.default_rng(99)
    x = (3 + rng.standard_normal((4099, 515))).astype(dtype)
    dout = rng.standard_normal(x.shape).astype(dtype)
    gamma = rng.uniform(0.5, 2, 515).astype(dtype)
    beta = rng.standard_normal(515).astype(dtype)
    results = []
    for n in (1, 2):
        with fastnn.threads(n):
            rm, rv = np.zeros(515, dtype), np.ones(515, dtype)
            y, mean, inv_std = ops.batchnorm_forward(x, gamma, beta, rm, rv)
            dx, dgamma, dbeta = ops.batchnorm_backward(dout, x, gamma, mean, inv_std)
            results.append((y, mean, inv_std, rm, rv, dx, dgamma, dbeta))
    names = ("y", "mean", "inv_std", "running_mean", "running_var", "dx", "dgamma", "dbeta")
    for name, a, b in zip(names, *results):
        assert a.tobytes() == b.tobytes(), f"{name} differs between 1 and 2 threads"


def test_forward_validation():
    x, gamma, beta = problem(np.float32, n=4, d=3)
    with pytest.raises(ValueError, match="gamma"):
        ops.batchnorm_forward(x, gamma[:2], beta)
    with pytest.raises(TypeError, match="beta"):
        ops.batchnorm_forward(x, gamma, beta.astype(np.float64))
    with pytest.raises(ValueError, match="eps"):
        ops.batchnorm_forward(x, gamma, beta, eps=0.0)
    with pytest.raises(ValueError, match="momentum"):
        ops.batchnorm_forward(x, gamma, beta, momentum=1.5)
    with pytest.raises(TypeError, match="running_var"):
        ops.batchnorm_forward(x, gamma, beta, np.zeros(3, np.float32), np.ones(3))
    with pytest.raises(ValueError, match="writeable"):
        rv = np.ones(3, np.float32)
        rv.flags.writeable = False
        ops.batchnorm_forward(x, gamma, beta, np.zeros(3, np.float32), rv)
    with pytest.raises(ValueError):
        ops.batchnorm_forward(x[0], gamma, beta)
    with pytest.raises(TypeError):
        ops.batchnorm_forward(x.astype(np.int32), gamma, beta)


# ---------------------------------------------------------------- nn.BatchNorm1d


def check_layer_gradients(layer, x, seed=0):
    """Analytic d(sum(out * G))/d(x, parameters) of a layer vs central differences."""
    g = np.random.default_rng(seed).standard_normal((x.shape[0], layer.num_features))

    def f():
        return float(np.sum(layer.forward(x) * g))

    layer.zero_grad()
    layer.forward(x)
    dx = layer.backward(g).copy()
    analytic = layer.arena.grad.copy()
    np.testing.assert_allclose(dx, numerical_gradient(f, x), rtol=1e-5, atol=1e-8)
    np.testing.assert_allclose(analytic, numerical_gradient(f, layer.arena.data),
                               rtol=1e-5, atol=1e-8)


def test_layer_gradients_train_mode():
    layer = nn.BatchNorm1d(4, dtype=np.float64)
    layer.arena.data[:] = np.random.default_rng(2).uniform(0.5, 1.5, 8)
    x, _, _ = problem(np.float64, n=7, d=4)
    check_layer_gradients(layer, x)


def test_layer_gradients_eval_mode():
    layer = nn.BatchNorm1d(4, dtype=np.float64)
    layer.arena.data[:] = np.random.default_rng(2).uniform(0.5, 1.5, 8)
    layer.running_mean[:] = [0.1, -0.3, 0.5, 2.0]
    layer.running_var[:] = [0.5, 1.0, 2.0, 3.0]
    layer.eval()
    x, _, _ = problem(np.float64, n=5, d=4)
    check_layer_gradients(layer, x)


def test_layer_forward_matches_ops_and_updates_running_stats():
    layer = nn.BatchNorm1d(3, momentum=0.25, eps=1e-3, dtype=np.float64)
    x, _, _ = problem(np.float64, n=10, d=3)
    y = layer(x)
    ry, mean, _, unbiased = ref_forward(x, np.ones(3), np.zeros(3), 1e-3)
    np.testing.assert_allclose(y, ry, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(layer.running_mean, 0.25 * mean, rtol=1e-12)
    np.testing.assert_allclose(layer.running_var, 0.75 + 0.25 * unbiased, rtol=1e-12)
    layer.eval()
    rm = layer.running_mean.copy()
    y_eval = layer(x[:1])  # one row is fine in eval mode
    np.testing.assert_allclose(y_eval[0], (x[0] - rm) / np.sqrt(layer.running_var + 1e-3),
                               rtol=1e-12)
    np.testing.assert_array_equal(layer.running_mean, rm)


def test_layer_one_row_in_train_mode_raises():
    layer = nn.BatchNorm1d(3)
    with pytest.raises(ValueError):
        layer(np.ones((1, 3), np.float32))


def test_layer_parameters_state_and_kinds():
    layer = nn.BatchNorm1d(5)
    assert [name for name, _ in layer.named_parameters()] == ["weight", "bias"]
    assert np.all(layer.weight == 1) and np.all(layer.bias == 0)
    assert layer.weight.kind == "norm" and layer.bias.kind == "norm"
    assert layer.weight.dtype == np.float32 and layer.running_var.dtype == np.float32
    state = layer.state_dict()
    assert set(state) == {"weight", "bias", "running_mean", "running_var"}
    layer.running_mean[:] = 7.0
    assert np.all(state["running_mean"] == 0), "state_dict must hold copies"
    other = nn.BatchNorm1d(5)
    other.load_state_dict(layer.state_dict())
    np.testing.assert_array_equal(other.running_mean, 7.0)


@pytest.mark.parametrize("kwargs, error", [
    ({"num_features": 0}, ValueError), ({"num_features": 2.5}, ValueError),
    ({"num_features": 3, "momentum": -0.1}, ValueError),
    ({"num_features": 3, "eps": -1.0}, ValueError),
    ({"num_features": 3, "dtype": np.int32}, TypeError),
    ({"num_features": 3, "dtype": np.float16}, TypeError),
])
def test_layer_rejects_bad_arguments(kwargs, error):
    with pytest.raises(error):
        nn.BatchNorm1d(**kwargs)


def test_layer_rejects_wrong_width_and_dtype():
    layer = nn.BatchNorm1d(3)
    with pytest.raises(ValueError, match=r"\(N, 3\)"):
        layer(np.ones((4, 2), np.float32))
    with pytest.raises(ValueError):
        layer(np.ones(3, np.float32))
    with pytest.raises(TypeError):
        layer(np.ones((4, 3), np.float64))
