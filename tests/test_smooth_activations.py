"""ELU, GELU (exact and tanh) and SiLU: the ops pairs against NumPy and numerical
gradients (and PyTorch when installed), the layers, their fusion into compiled plans
(after Linear, Conv2d and a Residual sum), and saving."""

import numpy as np
import pytest
import reference as ref

import fastnn
from fastnn import nn, ops
from fastnn._checks import ArgumentTypeError

# (kernel name, ops name, keyword arguments of the ops pair, the layer)
CASES = [
    ("elu", "elu", {}, lambda: nn.ELU()),
    ("elu", "elu", {"alpha": 0.3}, lambda: nn.ELU(0.3)),
    ("elu", "elu", {"alpha": -0.5}, lambda: nn.ELU(alpha=-0.5)),
    ("gelu", "gelu", {}, lambda: nn.GELU()),
    ("gelu_tanh", "gelu", {"approximate": "tanh"}, lambda: nn.GELU(approximate="tanh")),
    ("silu", "silu", {}, lambda: nn.SiLU()),
]
IDS = ["elu", "elu-0.3", "elu--0.5", "gelu", "gelu-tanh", "silu"]

SHAPES = [(0,), (0, 4), (1,), (13,), (7, 13), (97, 131), (400, 257), (3, 5, 7), (2, 3, 4, 5)]
SPECIAL = [np.nan, np.inf, -np.inf, 0.0, -0.0, 1e-30, -1e-30, 1.0, -1.0, 30.0, -30.0, 1e4,
           -1e4]


def alpha_of(kw):
    return kw.get("alpha", 1.0)


def ref_forward(kernel, x, kw):
    return ref.FORWARD[kernel](x, alpha_of(kw)) if kernel == "elu" else ref.FORWARD[kernel](x)


def ref_backward(kernel, dout, x, kw):
    if kernel == "elu":
        return ref.BACKWARD[kernel](dout, x, alpha_of(kw))
    return ref.BACKWARD[kernel](dout, x)


def forward(name, x, kw, **more):
    return getattr(ops, name)(x, **kw, **more)


def backward(name, dout, x, kw, **more):
    return getattr(ops, name + "_backward")(dout, x, **kw, **more)


# ---------------------------------------------------------------- ops against NumPy


@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_forward_matches_reference(case, shape, dtype, rng):
    kernel, name, kw, _ = case
    x = (3 * rng.standard_normal(shape)).astype(dtype)
    x0 = x.copy()
    y = forward(name, x, kw)
    ref.assert_close(y, ref_forward(kernel, x, kw), dtype)
    np.testing.assert_array_equal(x, x0)


@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_backward_matches_reference(case, shape, dtype, rng):
    kernel, name, kw, _ = case
    x = (3 * rng.standard_normal(shape)).astype(dtype)
    dout = rng.standard_normal(shape).astype(dtype)
    ref.assert_close(backward(name, dout, x, kw), ref_backward(kernel, dout, x, kw), dtype)


@pytest.mark.parametrize("case", CASES[:4] + CASES[5:], ids=IDS[:4] + IDS[5:])
def test_tails_keep_their_relative_accuracy(case, dtype):
    """Far below 0, GELU is x * Phi(x) with Phi tiny: computed from erfc, not 1 + erf
    (which cancels to 0 or noise); ELU near 0 from expm1, not exp(x) - 1. (GELU's tanh
    form is defined by 1 + tanh, which cancels: PyTorch's formula, kept as it is.)"""
    kernel, name, kw, _ = case
    x = -np.geomspace(1e-6, 10, 200).astype(dtype)
    expected = ref_forward(kernel, x, kw)
    rtol = 1e-13 if dtype == np.float64 else 1e-5
    np.testing.assert_allclose(forward(name, x, kw), expected, rtol=rtol, atol=0)


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_special_values_like_numpy(case, dtype):
    kernel, name, kw, _ = case
    x = np.array(SPECIAL, dtype)
    ref.assert_close(forward(name, x, kw), ref_forward(kernel, x, kw), dtype)
    dout = np.ones_like(x)
    ref.assert_close(backward(name, dout, x, kw), ref_backward(kernel, dout, x, kw), dtype)


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_backward_matches_numerical_gradient(case, rng):
    _, name, kw, _ = case
    # +-[0.1, 3): differences never straddle ELU's kink at 0
    x = rng.choice([-1.0, 1.0], (4, 6)) * rng.uniform(0.1, 3.0, (4, 6))
    dout = rng.standard_normal(x.shape)

    def loss():
        return float(np.sum(dout * forward(name, x, kw)))

    numerical = ref.numerical_gradient(loss, x)
    np.testing.assert_allclose(backward(name, dout, x, kw), numerical, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_matches_torch(case, dtype, rng):
    torch = pytest.importorskip("torch")
    kernel, name, kw, _ = case
    x = (3 * rng.standard_normal((33, 17))).astype(dtype)
    dout = rng.standard_normal(x.shape).astype(dtype)
    xt = torch.tensor(x, requires_grad=True)
    functional = {
        "elu": lambda t: torch.nn.functional.elu(t, alpha=alpha_of(kw)),
        "gelu": torch.nn.functional.gelu,
        "gelu_tanh": lambda t: torch.nn.functional.gelu(t, approximate="tanh"),
        "silu": torch.nn.functional.silu,
    }[kernel]
    yt = functional(xt)
    yt.backward(torch.tensor(dout))
    # float32: the tanh form's derivative has 1 - t^2, which magnifies the rounding of t
    rtol, atol = ref.TOLERANCES[np.dtype(dtype)]
    np.testing.assert_allclose(forward(name, x, kw), yt.detach().numpy(), rtol=rtol, atol=atol)
    np.testing.assert_allclose(backward(name, dout, x, kw), xt.grad.numpy(), rtol=rtol,
                               atol=atol)


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_in_place_and_out(case, dtype, rng):
    _, name, kw, _ = case
    x = rng.standard_normal((5, 9)).astype(dtype)
    expected = forward(name, x, kw)
    dout = rng.standard_normal(x.shape).astype(dtype)
    dx_expected = backward(name, dout, x, kw)
    out = np.empty_like(x)
    assert forward(name, x, kw, out=out) is out
    np.testing.assert_array_equal(out, expected)
    x_copy = x.copy()
    assert backward(name, dout, x, kw, out=dout) is dout
    np.testing.assert_array_equal(dout, dx_expected)
    assert forward(name, x_copy, kw, out=x_copy) is x_copy
    np.testing.assert_array_equal(x_copy, expected)


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_non_contiguous_input_is_copied(case, dtype, rng):
    kernel, name, kw, _ = case
    x = rng.standard_normal((8, 10)).astype(dtype)[:, ::2]
    ref.assert_close(forward(name, x, kw), ref_forward(kernel, x, kw), dtype)


@pytest.mark.parametrize("case", CASES[::3] + CASES[4:], ids=["elu", "gelu", "gelu-tanh",
                                                               "silu"])
def test_thread_independent(case, determinism_shape, dtype, large_array,
                            assert_thread_independent):
    _, name, kw, _ = case
    x = large_array(determinism_shape, dtype)
    dout = large_array(determinism_shape, dtype, "signed")
    assert_thread_independent(lambda: forward(name, x, kw))
    assert_thread_independent(lambda: backward(name, dout, x, kw))


@pytest.mark.parametrize("activation", ref.READS_INPUT)
def test_bias_activation_applies_them(activation, dtype, rng):
    x = (2 * rng.standard_normal((31, 17))).astype(dtype)
    bias = rng.standard_normal(17).astype(dtype)
    y = ops.bias_activation(x, bias, activation, slope=0.7)
    ref.assert_close(y, ref.bias_activation(x, bias, activation, 0.7), dtype)


# ---------------------------------------------------------------- bad input


@pytest.mark.parametrize("name", ["elu", "gelu", "silu"])
def test_ops_reject_bad_arrays(name):
    x = np.ones((3, 4), np.float32)
    with pytest.raises(TypeError):
        getattr(ops, name)(np.ones((3, 4), np.int64))
    with pytest.raises(TypeError):
        getattr(ops, name)([1.0, 2.0])
    with pytest.raises(ValueError, match="shape"):
        getattr(ops, name + "_backward")(x, np.ones((4, 3), np.float32))
    with pytest.raises(TypeError, match="dtype"):
        getattr(ops, name + "_backward")(x, np.ones((3, 4), np.float64))
    with pytest.raises(ValueError):
        getattr(ops, name)(x, out=np.empty((4, 3), np.float32))


def test_ops_reject_bad_parameters():
    x = np.ones(3)
    for alpha in (np.nan, np.inf):
        with pytest.raises(ValueError, match="alpha"):
            ops.elu(x, alpha=alpha)
        with pytest.raises(ValueError, match="alpha"):
            ops.elu_backward(x, x, alpha=alpha)
    for alpha in ("1", True, None):
        with pytest.raises(ArgumentTypeError, match="alpha"):
            ops.elu(x, alpha=alpha)
    with pytest.raises(ValueError, match="approximate"):
        ops.gelu(x, approximate="erf")
    with pytest.raises(ValueError, match="approximate"):
        ops.gelu_backward(x, x, approximate="sigmoid")
    with pytest.raises(ArgumentTypeError, match="approximate"):
        ops.gelu(x, approximate=None)


def test_layers_reject_bad_parameters():
    with pytest.raises(ValueError, match="alpha"):
        nn.ELU(float("inf"))
    with pytest.raises(ArgumentTypeError, match="alpha"):
        nn.ELU("1.0")
    with pytest.raises(ValueError, match="approximate"):
        nn.GELU("tanh ")
    with pytest.raises(ArgumentTypeError, match="approximate"):
        nn.GELU(True)


# ---------------------------------------------------------------- layers


@pytest.mark.parametrize("shape", [(6, 5), (2, 3, 4, 5)], ids=str)
@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_layer_matches_ops_on_any_shape(case, shape, dtype, rng):
    _, name, kw, make = case
    layer = make()
    x = rng.standard_normal(shape).astype(dtype)
    dout = rng.standard_normal(shape).astype(dtype)
    np.testing.assert_array_equal(layer(x), forward(name, x, kw))
    np.testing.assert_array_equal(layer.backward(dout), backward(name, dout, x, kw))


def test_layer_arguments_and_repr():
    assert nn.ELU().alpha == 1.0 and nn.ELU(2).alpha == 2.0
    assert nn.GELU().approximate == "none" and nn.GELU("tanh").approximate == "tanh"
    assert nn.ELU(0.5).config() == {"alpha": 0.5}
    assert nn.GELU("tanh").config() == {"approximate": "tanh"}
    assert nn.SiLU().config() == {}
    assert "alpha=0.5" in repr(nn.ELU(0.5))
    assert "tanh" in repr(nn.GELU("tanh"))


def test_layer_backward_before_forward_raises():
    with pytest.raises(RuntimeError, match="before forward"):
        nn.GELU().backward(np.ones((2, 2)))


# ---------------------------------------------------------------- compiled plans


def _pair(make_model):
    """Two copies of a model: one compiled (the default), one run layer by layer."""
    compiled, by_layer = make_model(), make_model()
    by_layer.compiled = False
    return compiled, by_layer


def _assert_same_pass(compiled, by_layer, x, dout):
    y = compiled.forward(x)
    assert compiled._plan is not None, "the model should run as a compiled plan"
    np.testing.assert_array_equal(y, by_layer.forward(x))
    np.testing.assert_array_equal(compiled.backward(dout), by_layer.backward(dout))
    for (name, g1), (_, g2) in zip(compiled.named_grads(), by_layer.named_grads()):
        np.testing.assert_array_equal(g1, g2, err_msg=name)


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_plan_after_linear_residual_and_batchnorm_equals_layer_by_layer(case, dtype, rng):
    make = case[3]

    def model():
        return nn.Sequential(
            nn.Linear(6, 8, seed=1, dtype=dtype), make(),
            nn.Residual(nn.Sequential(nn.Linear(8, 8, seed=2, dtype=dtype), make(),
                                      nn.Linear(8, 8, seed=3, dtype=dtype))), make(),
            nn.BatchNorm1d(8, dtype=dtype), make(),
            nn.Linear(8, 3, bias=False, seed=4, dtype=dtype), make(),
        )

    compiled, by_layer = _pair(model)
    for rows in (5, 64):  # 64 * 8: the threaded paths as well
        x = (2 * rng.standard_normal((rows, 6))).astype(dtype)
        dout = rng.standard_normal((rows, 3)).astype(dtype)
        _assert_same_pass(compiled, by_layer, x, dout)


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_plan_after_conv_equals_layer_by_layer(case, dtype, rng):
    make = case[3]

    def model():
        return nn.Sequential(
            nn.Conv2d(2, 3, 3, padding=1, seed=1, dtype=dtype), make(),
            nn.Conv2d(3, 4, 1, seed=2, dtype=dtype), make(),
            nn.Residual(nn.Sequential(nn.Conv2d(4, 4, 3, padding=1, seed=3, dtype=dtype))),
            make(), nn.Flatten(), nn.Linear(4 * 25, 3, seed=4, dtype=dtype),
        )

    compiled, by_layer = _pair(model)
    for rows in (1, 37):  # one sample per GEMM, then tiles of several
        x = rng.standard_normal((rows, 2, 5, 5)).astype(dtype)
        dout = rng.standard_normal((rows, 3)).astype(dtype)
        _assert_same_pass(compiled, by_layer, x, dout)


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_fused_plan_gradient_matches_numerical(case, rng):
    """The epilogue's gradient reads the pre-activation it kept, not the output."""
    make = case[3]
    model = nn.Sequential(nn.Linear(3, 4, seed=1, dtype=np.float64), make(),
                          nn.Linear(4, 2, seed=2, dtype=np.float64))
    x = rng.standard_normal((5, 3))
    dout = rng.standard_normal((5, 2))
    model.forward(x)
    assert model._plan is not None
    model.zero_grad()
    dx = model.backward(dout)

    def loss():
        return float(np.sum(dout * model.forward(x)))

    np.testing.assert_allclose(dx, ref.numerical_gradient(loss, x), rtol=1e-6, atol=1e-8)
    w = model[0].weight
    grad = w.grad.copy()
    np.testing.assert_allclose(grad, ref.numerical_gradient(loss, w), rtol=1e-6, atol=1e-8)


def test_activation_fuses_into_the_linear_before_it():
    model = nn.Sequential(nn.Linear(3, 4, seed=1), nn.GELU(), nn.Linear(4, 2, seed=2),
                          nn.SiLU(), nn.ELU())
    model.forward(np.ones((2, 3), np.float32))
    assert model._plan.n_ops == 3  # Linear+GELU, Linear+SiLU, ELU


# ---------------------------------------------------------------- saving


def test_save_and_load_keep_the_layers_and_their_arguments(tmp_path, rng):
    model = nn.Sequential(nn.Linear(4, 6, seed=0), nn.GELU("tanh"), nn.Linear(6, 6, seed=1),
                          nn.ELU(0.25), nn.Linear(6, 5, seed=2), nn.GELU(), nn.SiLU())
    path = tmp_path / "model.safetensors"
    fastnn.save(model, path)
    loaded = fastnn.load(path)
    assert [type(layer) for layer in loaded] == [type(layer) for layer in model]
    assert loaded[1].approximate == "tanh" and loaded[5].approximate == "none"
    assert loaded[3].alpha == 0.25
    x = rng.standard_normal((7, 4)).astype(np.float32)
    np.testing.assert_array_equal(loaded.eval().forward(x), model.eval().forward(x))
