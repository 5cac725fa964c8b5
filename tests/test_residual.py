"""Residual and Flatten: their own formulas layer by layer, against the compiled plan
bit for bit (the branches run inside the plan, an activation after the sum in its
epilogue), and float64 numerical gradients."""

import copy

import numpy as np
import pytest
from reference import numerical_gradient

import fastnn
from fastnn import nn


def block(dtype, seed, width=6, out=6):
    return nn.Sequential(nn.Linear(width, 8, seed=seed, dtype=dtype),
                         nn.BatchNorm1d(8, dtype=dtype), nn.ReLU(),
                         nn.Linear(8, out, seed=seed + 1, dtype=dtype))


def model(dtype, act=nn.ReLU, shortcut=False, nested=False):
    inner = block(dtype, 1)
    if nested:
        inner = nn.Sequential(nn.Residual(block(dtype, 7)), nn.Tanh(), inner)
    short = nn.Linear(6, 6, seed=9, dtype=dtype) if shortcut else None
    layers = [nn.Residual(inner, short)]
    if act is not None:
        layers.append(act())
    layers += [nn.Dropout(0.25, seed=4), nn.Linear(6, 3, seed=5, dtype=dtype)]
    return nn.Sequential(*layers)


def run(m, x, g, steps=2):
    """Outputs, input gradients and accumulated parameter gradients of `steps` passes."""
    m.zero_grad()
    outs = []
    for _ in range(steps):
        y = m.forward(x)
        outs += [y.copy(), np.array(m.backward(g))]
    return outs + [np.array(p.grad) for p in m.parameters()]


@pytest.mark.parametrize("act", [nn.ReLU, nn.Sigmoid, nn.LeakyReLU, None])
@pytest.mark.parametrize("shortcut, nested", [(False, False), (True, False), (False, True)])
@pytest.mark.parametrize("threads", [1, 2])
def test_plan_matches_layer_by_layer_bitwise(dtype, act, shortcut, nested, threads):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((37, 6)).astype(dtype)
    g = rng.standard_normal((37, 3)).astype(dtype)
    planned = model(dtype, act, shortcut, nested)
    plain = copy.deepcopy(planned)
    plain.compiled = False
    with fastnn.threads(threads):
        a, b = run(planned, x, g), run(plain, x, g)
    assert planned._plan is not None and plain._plan is None
    for u, v in zip(a, b):
        assert np.array_equal(u, v)


def test_residual_formula_and_numerical_gradients():
    rng = np.random.default_rng(1)
    m = model(np.float64, nn.Tanh, shortcut=True)
    m[2].p = 0.0
    x = rng.standard_normal((5, 6))
    g = rng.standard_normal((5, 3))
    res, short = m[0], m[0].shortcut
    # the Residual alone: block(x) + shortcut(x), with no activation of the model's
    assert np.allclose(res.forward(x), res.block.forward(x) + short.forward(x))
    m.zero_grad()
    m.forward(x)
    dx = m.backward(g)
    analytic = [np.array(p.grad) for p in m.parameters()]

    def loss():
        return float((m.forward(x) * g).sum())

    assert np.allclose(dx, numerical_gradient(loss, x), rtol=1e-5, atol=1e-7)
    for p, grad in zip(m.parameters(), analytic):
        assert np.allclose(grad, numerical_gradient(loss, p), rtol=1e-5, atol=1e-7)


def test_identity_block_and_shape_errors(dtype):
    x = np.arange(12, dtype=dtype).reshape(3, 4)
    skip = nn.Residual(nn.Sequential(nn.Dropout(0.0)))
    assert np.array_equal(skip.forward(x), 2 * x)
    assert np.array_equal(skip.backward(np.ones_like(x)), 2 * np.ones_like(x))
    bad = nn.Sequential(nn.Residual(nn.Linear(4, 5, dtype=dtype)))
    for compiled in (True, False):
        bad.compiled = compiled
        with pytest.raises(ValueError, match="Residual: the block gives"):
            bad.forward(x)


def test_residual_owns_one_arena_and_a_model_adopts_it():
    res = nn.Residual(block(np.float32, 1), nn.Linear(6, 6))
    assert res.arena is not None
    m = nn.Sequential(res, nn.Linear(6, 2))
    assert m.arena is not None and res.arena is None
    assert len(m.arenas()) == 1


def test_flatten_images_into_linear(dtype):
    rng = np.random.default_rng(2)
    x = rng.standard_normal((4, 2, 3, 5)).astype(dtype)
    planned = nn.Sequential(nn.ReLU(), nn.Flatten(), nn.Linear(30, 7, seed=1, dtype=dtype),
                            nn.Tanh())
    plain = copy.deepcopy(planned)
    plain.compiled = False
    g = rng.standard_normal((4, 7)).astype(dtype)
    a, b = run(planned, x, g), run(plain, x, g)
    assert planned._plan is not None
    for u, v in zip(a, b):
        assert np.array_equal(u, v)
    assert a[1].shape == x.shape
    flat = nn.Flatten()
    assert np.array_equal(flat.forward(x), x.reshape(4, -1))
    assert flat.backward(np.ones((4, 30), dtype)).shape == x.shape
    with pytest.raises(ValueError, match="Flatten: expected dout"):
        flat.backward(np.ones((4, 29), dtype))


def test_linear_refuses_images_on_both_paths():
    x = np.zeros((2, 1, 2, 2), np.float32)
    m = nn.Sequential(nn.Linear(4, 3))
    for compiled in (True, False):
        m.compiled = compiled
        with pytest.raises(ValueError, match=r"Linear: expected input of shape \(N, 4\)"):
            m.forward(x)
