"""Fused epilogues: bias_activation (f(x + bias)) and activation_bias_backward
((dx, dbias) in one pass)."""

import numpy as np
import pytest
import reference as ref

from fastnn import ops

ACTS = (None, *ops.ACTIVATIONS)
# (activation, slope): every activation, plus LeakyReLU with other slopes. The
# forward takes any finite slope; the fused backward needs slope >= 0.
# The fused backward reads the forward output: not for the activations whose gradient
# reads the input (ELU, GELU, SiLU), which it refuses.
FORWARD_CASES = [(a, 0.01) for a in ACTS] + [("leaky_relu", 0.3), ("leaky_relu", -0.2),
                                             ("elu", -0.5)]
FROM_OUTPUT = [a for a in ACTS if a not in ref.READS_INPUT]
BACKWARD_CASES = [(a, 0.01) for a in FROM_OUTPUT] + [("leaky_relu", 0.3), ("leaky_relu", 0.0)]


def case_id(case):
    activation, slope = case
    return f"{activation}-{slope}" if activation in ("leaky_relu", "elu") else str(activation)


SHAPES = [
    (0, 5), (5, 0), (0, 0), (1, 1), (1, 300), (300, 1), (7, 13), (97, 131), (33, 257),
    (1000, 1031), (100003, 7),
]


def forward_output(x, bias, activation, slope, dtype):
    """y = f(x + bias) as the fused backward expects it, in the dtype under test."""
    return ref.bias_activation(x, bias, activation, slope).astype(dtype)


def make_backward_inputs(rng, shape, activation, slope, dtype):
    x = rng.standard_normal(shape).astype(dtype)
    bias = rng.standard_normal(shape[1]).astype(dtype)
    y = forward_output(x, bias, activation, slope, dtype)
    dout = rng.standard_normal(shape).astype(dtype)
    return dout, y


def test_activations_all_have_a_reference():
    assert set(ops.ACTIVATIONS) == set(ref.FORWARD) == set(ref.BACKWARD)


# ---------------------------------------------------------------- bias_activation


@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("case", FORWARD_CASES, ids=case_id)
def test_bias_activation_matches_reference(case, shape, dtype, rng):
    activation, slope = case
    x = (2 * rng.standard_normal(shape)).astype(dtype)
    bias = rng.standard_normal(shape[1]).astype(dtype)
    x0, bias0 = x.copy(), bias.copy()
    y = ops.bias_activation(x, bias, activation, slope=slope)
    ref.assert_close(y, ref.bias_activation(x, bias, activation, slope), dtype)
    np.testing.assert_array_equal(x, x0)
    np.testing.assert_array_equal(bias, bias0)


def test_bias_activation_identity_is_exactly_x_plus_bias(dtype, rng):
    x = rng.standard_normal((97, 131)).astype(dtype)
    bias = rng.standard_normal(131).astype(dtype)
    expected = x + bias
    np.testing.assert_array_equal(ops.bias_activation(x, bias), expected)
    np.testing.assert_array_equal(ops.bias_activation(x, bias, "identity"), expected)


@pytest.mark.parametrize("case", FORWARD_CASES, ids=case_id)
def test_bias_activation_in_place(case, dtype, rng):
    activation, slope = case
    x = rng.standard_normal((97, 131)).astype(dtype)
    bias = rng.standard_normal(131).astype(dtype)
    expected = ref.bias_activation(x, bias, activation, slope)
    assert ops.bias_activation(x, bias, activation, slope=slope, out=x) is x
    ref.assert_close(x, expected, dtype)


def test_bias_activation_out_is_written_and_returned(dtype, rng):
    x = rng.standard_normal((7, 13)).astype(dtype)
    bias = rng.standard_normal(13).astype(dtype)
    out = np.full(x.shape, np.nan, dtype)
    assert ops.bias_activation(x, bias, "tanh", out=out) is out
    ref.assert_close(out, ref.bias_activation(x, bias, "tanh"), dtype)


def test_bias_activation_non_contiguous_inputs(dtype, rng):
    x = rng.standard_normal((131, 97)).astype(dtype).T
    bias = rng.standard_normal(262).astype(dtype)[::2]
    y = ops.bias_activation(x, bias, "sigmoid")
    assert y.flags.c_contiguous
    ref.assert_close(y, ref.bias_activation(x, bias, "sigmoid"), dtype)


def test_bias_activation_special_values(dtype):
    x = np.array([[np.nan, np.inf, -np.inf, 1e4, -1e4]], dtype)
    bias = np.array([0.0, 1.0, 1.0, 0.0, -np.inf], dtype)
    for activation in ACTS:
        y = ops.bias_activation(x, bias, activation)
        ref.assert_close(y, ref.bias_activation(x, bias, activation), dtype)


# ---------------------------------------------------------------- activation_bias_backward


@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("case", BACKWARD_CASES, ids=case_id)
def test_activation_bias_backward_matches_reference(case, shape, dtype, rng):
    activation, slope = case
    dout, y = make_backward_inputs(rng, shape, activation, slope, dtype)
    dout0, y0 = dout.copy(), y.copy()
    dx, dbias = ops.activation_bias_backward(dout, y, activation, slope=slope)
    dx_ref, dbias_ref = ref.activation_bias_backward(dout, y, activation, slope)
    ref.assert_close(dx, dx_ref, dtype)
    ref.assert_close(dbias, dbias_ref, dtype, magnitude=np.abs(dx_ref).sum(axis=0))
    np.testing.assert_array_equal(dout, dout0)
    np.testing.assert_array_equal(y, y0)


@pytest.mark.parametrize("case", BACKWARD_CASES, ids=case_id)
def test_fused_dx_equals_the_element_wise_backward(case, dtype, rng):
    activation, slope = case
    dout, y = make_backward_inputs(rng, (97, 131), activation, slope, dtype)
    dx, _ = ops.activation_bias_backward(dout, y, activation, slope=slope)
    if activation in (None, "identity"):
        expected = dout
    elif activation == "leaky_relu":
        expected = ops.leaky_relu_backward(dout, y, slope=slope)
    else:
        expected = getattr(ops, activation + "_backward")(dout, y)
    np.testing.assert_array_equal(dx, expected)


@pytest.mark.parametrize("case", BACKWARD_CASES, ids=case_id)
def test_activation_bias_backward_in_place(case, dtype, rng):
    activation, slope = case
    dout, y = make_backward_inputs(rng, (97, 131), activation, slope, dtype)
    dx_ref, dbias_ref = ref.activation_bias_backward(dout, y, activation, slope)
    dbias = np.full(131, np.nan, dtype)
    dx, db = ops.activation_bias_backward(dout, y, activation, slope=slope, out=dout,
                                          dbias=dbias)
    assert dx is dout and db is dbias
    ref.assert_close(dout, dx_ref, dtype)
    ref.assert_close(dbias, dbias_ref, dtype, magnitude=np.abs(dx_ref).sum(axis=0))


@pytest.mark.parametrize("shape", [(0, 5), (0, 300), (4, 0)], ids=str)
def test_activation_bias_backward_empty_overwrites_dbias(shape, dtype):
    dout = np.ones(shape, dtype)
    dbias = np.full(shape[1], np.nan, dtype)
    out = np.empty(shape, dtype)
    dx, db = ops.activation_bias_backward(dout, dout.copy(), "relu", out=out, dbias=dbias)
    assert dx is out and db is dbias
    np.testing.assert_array_equal(dbias, np.zeros(shape[1], dtype))


@pytest.mark.parametrize("slope", [-0.01, -1.0])
def test_activation_bias_backward_rejects_negative_leaky_slope(slope, dtype):
    dout = np.ones((3, 4), dtype)
    with pytest.raises(ValueError, match="slope"):
        ops.activation_bias_backward(dout, dout.copy(), "leaky_relu", slope=slope)


@pytest.mark.parametrize("activation", ref.READS_INPUT)
def test_activation_bias_backward_refuses_activations_reading_the_input(activation, dtype):
    dout = np.ones((3, 4), dtype)
    with pytest.raises(ValueError, match="input"):
        ops.activation_bias_backward(dout, dout.copy(), activation)


def test_activation_bias_backward_special_values(dtype):
    dout = np.array([[np.nan, 1.0, np.inf, 1.0], [1.0, 2.0, 1.0, 1.0]], dtype)
    y = np.array([[0.5, np.nan, 0.5, 0.0], [0.5, 0.5, 0.5, 1.0]], dtype)
    for activation in FROM_OUTPUT:
        dx, dbias = ops.activation_bias_backward(dout, y, activation)
        dx_ref, dbias_ref = ref.activation_bias_backward(dout, y, activation)
        ref.assert_close(dx, dx_ref, dtype)
        ref.assert_close(dbias, dbias_ref, dtype)


# ---------------------------------------------------------------- gradient checks


@pytest.mark.parametrize("case", BACKWARD_CASES, ids=case_id)
def test_gradients_match_numerical(case, rng):
    """dx and dbias are the gradients of sum(dout * f(x + bias)) in x and in bias."""
    activation, slope = case
    shape = (5, 4)
    bias = rng.uniform(-0.5, 0.5, shape[1])
    z = rng.choice([-1.0, 1.0], shape) * rng.uniform(0.1, 2.0, shape)  # no kink nearby
    x = z - bias
    dout = rng.standard_normal(shape)

    def loss():
        return float(np.sum(dout * ops.bias_activation(x, bias, activation, slope=slope)))

    y = ops.bias_activation(x, bias, activation, slope=slope)
    dx, dbias = ops.activation_bias_backward(dout, y, activation, slope=slope)
    np.testing.assert_allclose(dx, ref.numerical_gradient(loss, x), rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(dbias, ref.numerical_gradient(loss, bias), rtol=1e-6,
                               atol=1e-8)


# ---------------------------------------------------------------- threads


@pytest.mark.parametrize("case", [(a, 0.01) for a in ops.ACTIVATIONS], ids=case_id)
def test_bias_activation_is_thread_independent(case, determinism_shape, dtype, large_array,
                                               assert_thread_independent):
    activation, slope = case
    x = large_array(determinism_shape, dtype)
    bias = large_array(determinism_shape[1:], dtype)
    assert_thread_independent(lambda: ops.bias_activation(x, bias, activation, slope=slope))


@pytest.mark.parametrize("case", [(a, 0.01) for a in FROM_OUTPUT if a], ids=case_id)
def test_activation_bias_backward_is_thread_independent(case, determinism_shape, dtype,
                                                        large_array,
                                                        assert_thread_independent):
    activation, slope = case
    dout = large_array(determinism_shape, dtype)
    y = large_array(determinism_shape, dtype, "unit" if activation == "sigmoid" else "signed")
    assert_thread_independent(
        lambda: ops.activation_bias_backward(dout, y, activation, slope=slope)
    )
