"""Inverted dropout: ops.dropout's statistics, scaling and reproducibility (seed, step,
element index -> mask; nothing else), and the nn.Dropout layer."""

import numpy as np
import pytest
from reference import numerical_gradient

import fastnn
from fastnn import nn, ops

DTYPES = (np.float32, np.float64)
N_STAT = 1_000_000


def kept(p, seed, step, shape=(N_STAT,), dtype=np.float32):
    """The boolean keep-mask ops.dropout draws for (seed, step)."""
    return ops.dropout(np.ones(shape, dtype), p, seed, step) != 0


# ---------------------------------------------------------------- ops.dropout


@pytest.mark.parametrize("p", [0.1, 0.5, 0.9])
def test_fraction_dropped_is_p(p):
    dropped = 1 - kept(p, seed=123, step=4).mean()
    stderr = np.sqrt(p * (1 - p) / N_STAT)
    assert abs(dropped - p) < 5 * stderr, f"dropped {dropped:.5f}, expected {p} +- {stderr:.1e}"


@pytest.mark.parametrize("p", [0.1, 0.5, 0.9])
def test_drops_are_not_correlated_with_position(p):
    """Neighbouring elements and the two halves of the array drop independently."""
    mask = kept(p, seed=5, step=0)
    stderr = np.sqrt(p * (1 - p) / (N_STAT // 2))
    for half in (mask[: N_STAT // 2], mask[N_STAT // 2:], mask[0::2], mask[1::2]):
        assert abs((1 - half.mean()) - p) < 5 * stderr
    both = (mask[:-1] & mask[1:]).mean()  # P(keep i and keep i+1) = (1-p)^2
    assert abs(both - (1 - p) ** 2) < 5 * np.sqrt((1 - p) ** 2 / N_STAT)


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("p", [0.1, 0.5, 0.9, 0.3])
def test_kept_values_scaled_by_inverse_keep_probability(p, dtype):
    ones = ops.dropout(np.ones(10_000, dtype), p, 1, 2)
    assert ones.dtype == np.dtype(dtype)
    values = np.unique(ones)
    assert values.size == 2 and values[0] == 0
    assert values[1] == np.asarray(1 / (1 - p), dtype)  # exactly 1/(1-p) in the dtype
    x = np.random.default_rng(0).standard_normal(10_000).astype(dtype)
    y = ops.dropout(x, p, 1, 2)
    mask = ones != 0
    np.testing.assert_array_equal(y[~mask], 0)
    np.testing.assert_allclose(y[mask], x[mask] / (1 - p),
                               rtol=1e-6 if dtype == np.float32 else 1e-15)


def test_expectation_is_preserved():
    x = np.full(N_STAT, 2.0)
    assert ops.dropout(x, 0.5, 9, 0).mean() == pytest.approx(2.0, abs=5 * 2 / np.sqrt(N_STAT))


def test_p_zero_is_identity_and_p_one_gives_zeros():
    x = np.random.default_rng(1).standard_normal((100, 7))
    np.testing.assert_array_equal(ops.dropout(x, 0.0, 3, 0), x)
    y = ops.dropout(x, 1.0, 3, 0)
    assert y.shape == x.shape and not y.any()


def test_same_seed_and_step_same_mask_different_step_or_seed_differs():
    a = kept(0.5, 11, 3, shape=(10_000,))
    np.testing.assert_array_equal(a, kept(0.5, 11, 3, shape=(10_000,)))
    for other in (kept(0.5, 11, 4, shape=(10_000,)), kept(0.5, 12, 3, shape=(10_000,))):
        agree = (a == other).mean()
        assert 0.45 < agree < 0.55, "masks of another step/seed must be independent"


def test_mask_depends_only_on_element_index():
    """Not on dtype, shape, or the values of x."""
    m64 = kept(0.3, 77, 1, shape=(1000, 100), dtype=np.float64)
    m32 = kept(0.3, 77, 1, shape=(1000, 100), dtype=np.float32)
    np.testing.assert_array_equal(m32, m64)
    np.testing.assert_array_equal(kept(0.3, 77, 1, shape=(100_000,)), m64.reshape(-1))
    x = np.random.default_rng(2).uniform(1, 2, (1000, 100))
    np.testing.assert_array_equal(ops.dropout(x, 0.3, 77, 1) != 0, m64)


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
def test_masks_identical_for_any_thread_count(dtype):
    x = np.random.default_rng(3).standard_normal((1000, 1003)).astype(dtype)
    outs = []
    for n in (1, 2):
        with fastnn.threads(n):
            outs.append(ops.dropout(x, 0.37, 2024, 17))
    assert outs[0].tobytes() == outs[1].tobytes()


def test_in_place_and_out():
    x = np.random.default_rng(4).standard_normal(5000)
    expected = ops.dropout(x, 0.4, 1, 1)
    out = np.empty_like(x)
    assert ops.dropout(x, 0.4, 1, 1, out=out) is out
    np.testing.assert_array_equal(out, expected)
    y = x.copy()
    assert ops.dropout(y, 0.4, 1, 1, out=y) is y
    np.testing.assert_array_equal(y, expected)


def test_backward_is_the_same_mask():
    """The backward pass is ops.dropout of dout with the forward's (seed, step)."""
    x = np.random.default_rng(5).standard_normal((20, 30))
    dout = np.random.default_rng(6).standard_normal((20, 30))
    y = ops.dropout(x, 0.5, 8, 2)
    dx = ops.dropout(dout, 0.5, 8, 2)
    np.testing.assert_array_equal(dx == 0, y == 0)
    np.testing.assert_allclose(dx, np.where(y != 0, 2 * dout, 0.0), rtol=1e-15)


@pytest.mark.parametrize("p", [-0.1, 1.5, float("nan")])
def test_invalid_p_raises(p):
    with pytest.raises(ValueError, match="p"):
        ops.dropout(np.ones(4), p, 0, 0)
    with pytest.raises(ValueError, match="p"):
        nn.Dropout(p)


@pytest.mark.parametrize("seed, step", [(-1, 0), (0, -1), (1.5, 0), (0, True)])
def test_invalid_seed_or_step_raises(seed, step):
    with pytest.raises(ValueError):
        ops.dropout(np.ones(4), 0.5, seed, step)


def test_rejects_non_float_input():
    with pytest.raises(TypeError):
        ops.dropout(np.ones(4, np.int64), 0.5, 0, 0)
    with pytest.raises(TypeError):
        ops.dropout([1.0, 2.0], 0.5, 0, 0)


def test_random_key_mixes_seed_and_step():
    keys = {ops.random_key(seed, step) for seed in range(20) for step in range(20)}
    assert len(keys) == 400
    assert ops.random_key(3, 4) == ops.random_key(3, 4)
    assert all(0 <= k < 2**64 for k in keys)


# ---------------------------------------------------------------- nn.Dropout


def test_layer_matches_ops_and_advances_step_per_train_forward():
    x = np.random.default_rng(7).standard_normal((50, 40))
    layer = nn.Dropout(0.3, seed=42)
    assert int(layer.step) == 0
    for k in range(3):
        y = layer(x)
        np.testing.assert_array_equal(y, ops.dropout(x, 0.3, 42, k))
        assert int(layer.step) == k + 1
    layer.backward(np.ones_like(x))
    assert int(layer.step) == 3, "backward must not advance the step"
    layer.eval()
    assert layer(x) is x or np.array_equal(layer(x), x)
    np.testing.assert_array_equal(layer.backward(x), x)
    assert int(layer.step) == 3, "eval-mode forwards must not advance the step"
    layer.train()
    np.testing.assert_array_equal(layer(x), ops.dropout(x, 0.3, 42, 3))


def test_layer_backward_uses_forward_mask():
    x = np.random.default_rng(8).standard_normal((30, 20))
    dout = np.random.default_rng(9).standard_normal((30, 20))
    layer = nn.Dropout(0.5, seed=1)
    y = layer(x).copy()
    dx = layer.backward(dout)
    np.testing.assert_array_equal(dx == 0, y == 0)
    np.testing.assert_allclose(dx, np.where(y != 0, 2 * dout, 0.0), rtol=1e-15)


def test_layer_numerical_gradient_with_fixed_step():
    x = np.random.default_rng(10).standard_normal((6, 5))
    g = np.random.default_rng(11).standard_normal((6, 5))
    layer = nn.Dropout(0.4, seed=3)

    def f():
        layer.step[...] = 5
        return float(np.sum(layer.forward(x) * g))

    layer.step[...] = 5
    layer.forward(x)
    dx = layer.backward(g).copy()
    assert 0 < np.count_nonzero(dx) < dx.size
    np.testing.assert_allclose(dx, numerical_gradient(f, x), rtol=1e-5, atol=1e-8)


def test_two_layers_with_same_seed_give_same_masks():
    x = np.ones((64, 64), np.float32)
    a, b = nn.Dropout(0.5, seed=99), nn.Dropout(0.5, seed=99)
    for _ in range(3):
        np.testing.assert_array_equal(a(x), b(x))
    c = nn.Dropout(0.5, seed=100)
    assert not np.array_equal(nn.Dropout(0.5, seed=99)(x), c(x))


def test_layer_p_zero_and_one():
    x = np.random.default_rng(12).standard_normal((8, 8))
    np.testing.assert_array_equal(nn.Dropout(0.0, seed=0)(x), x)
    layer = nn.Dropout(1.0, seed=0)
    assert not layer(x).any()
    assert not layer.backward(np.ones_like(x)).any()


def test_layer_seed_none_draws_distinct_seeds_and_state_holds_seed_and_step():
    a, b = nn.Dropout(0.5), nn.Dropout(0.5)
    assert int(a.seed) != int(b.seed)
    layer = nn.Dropout(0.5, seed=5)
    layer(np.ones((4, 4)))
    state = layer.state_dict()
    assert set(state) == {"seed", "step"} and int(state["seed"]) == 5 and int(state["step"]) == 1
    assert list(layer.parameters()) == []


@pytest.mark.parametrize("seed", [-1, 1.5, "x", True])
def test_layer_rejects_bad_seed(seed):
    with pytest.raises(ValueError):
        nn.Dropout(0.5, seed=seed)


def test_layer_thread_count_independent():
    x = np.random.default_rng(13).standard_normal((500, 300)).astype(np.float32)
    outs = []
    for n in (1, 2):
        layer = nn.Dropout(0.25, seed=31)
        with fastnn.threads(n):
            outs.append(layer(x).copy())
    assert outs[0].tobytes() == outs[1].tobytes()
