"""nn.Conv2d and its kernel (fastnn._kernels.conv.ConvOp): forward, dx, dW and db against
a plain NumPy float64 convolution and against numerical gradients, over strides,
paddings, dilations and groups; fused activations; thread independence; bad input."""

import numpy as np
import pytest
from reference import numerical_gradient

import fastnn
from fastnn import nn
from fastnn._kernels import activations, conv

# ---------------------------------------------------------------- reference


def _pair(v):
    return (v, v) if isinstance(v, int) else tuple(v)


def _patches(xp, i, j, out, stride, dilation):
    """xp[:, :, oh*sh + i*dh, ow*sw + j*dw] for every (oh, ow): a view (N, C, Ho, Wo)."""
    (ho, wo), (sh, sw), (dh, dw) = out, stride, dilation
    return xp[:, :, i * dh: i * dh + sh * (ho - 1) + 1: sh, j * dw: j * dw + sw * (wo - 1) + 1: sw]


def conv_reference(x, w, b, stride=1, padding=0, dilation=1, groups=1, g=None):
    """y = conv2d(x, w) + b in float64, by a loop over kernel offsets; with g (dL/dy)
    also (dx, dw, db), the same loops run backwards."""
    stride, padding, dilation = _pair(stride), _pair(padding), _pair(dilation)
    x, w = np.asarray(x, np.float64), np.asarray(w, np.float64)
    n, _, h, wd = x.shape
    o, cg, kh, kw = w.shape
    og = o // groups
    (ph, pw), (dh, dw) = padding, dilation
    out = ((h + 2 * ph - dh * (kh - 1) - 1) // stride[0] + 1,
           (wd + 2 * pw - dw * (kw - 1) - 1) // stride[1] + 1)
    xp = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    y = np.zeros((n, o, *out))
    dxp, dwt = np.zeros_like(xp), np.zeros_like(w)
    for grp in range(groups):
        ci, co = slice(grp * cg, (grp + 1) * cg), slice(grp * og, (grp + 1) * og)
        for i in range(kh):
            for j in range(kw):
                patch = _patches(xp[:, ci], i, j, out, stride, dilation)
                y[:, co] += np.einsum("nchw,oc->nohw", patch, w[co, :, i, j])
                if g is not None:
                    dwt[co, :, i, j] += np.einsum("nohw,nchw->oc", g[:, co], patch)
                    _patches(dxp[:, ci], i, j, out, stride, dilation)[...] += np.einsum(
                        "nohw,oc->nchw", g[:, co], w[co, :, i, j])
    if b is not None:
        y += np.asarray(b, np.float64)[None, :, None, None]
    if g is None:
        return y
    return y, dxp[:, :, ph: ph + h, pw: pw + wd], dwt, g.sum(axis=(0, 2, 3))


def make_layer(c, o, k, dtype=np.float64, seed=0, **kwargs):
    """A Conv2d with a non-zero bias."""
    layer = nn.Conv2d(c, o, k, seed=seed, dtype=dtype, **kwargs)
    if layer.bias is not None:
        layer.bias[...] = np.random.default_rng(seed + 1).standard_normal(o)
    return layer


def data(shape, seed=0, dtype=np.float64):
    return np.random.default_rng(seed).standard_normal(shape).astype(dtype)


def run(layer, x, g):
    """forward and backward from zeroed gradients: (y, dx, dW, db) as copies."""
    layer.zero_grad()
    y = layer.forward(x).copy()
    dx = layer.backward(g).copy()
    db = None if layer.bias is None else layer.bias.grad.copy()
    return y, dx, layer.weight.grad.copy(), db


# (N, C, H, W), out_channels, kernel_size, keyword arguments
CASES = {
    "3x3-pad1": ((2, 3, 7, 8), 4, 3, dict(padding=1)),
    "stride2": ((2, 3, 9, 9), 5, 3, dict(stride=2, padding=1)),
    "rect": ((2, 4, 9, 7), 6, (3, 2), dict(stride=(2, 1), padding=(0, 2), dilation=(1, 2))),
    "dilation2": ((2, 2, 9, 10), 3, 3, dict(dilation=2, padding=2)),
    "stride3-pad-over-kernel": ((2, 2, 8, 7), 3, 2, dict(stride=3, padding=3)),
    "groups2": ((3, 4, 6, 6), 6, 3, dict(groups=2, padding=1)),
    "depthwise": ((2, 5, 7, 7), 5, 3, dict(groups=5, padding=1)),
    "depthwise-x2": ((2, 3, 6, 5), 6, (2, 3), dict(groups=3, stride=(1, 2))),
    "kernel=image": ((2, 3, 5, 4), 4, (5, 4), {}),
    "batch1": ((1, 3, 6, 6), 4, 3, dict(padding=1)),
    "no-bias": ((2, 3, 6, 6), 4, 3, dict(padding=1, bias=False)),
    "1x1": ((2, 6, 5, 4), 3, 1, {}),
    "1x1-groups": ((2, 6, 5, 4), 4, 1, dict(groups=2)),
    "1x1-stride2": ((2, 6, 5, 5), 3, 1, dict(stride=2, bias=False)),
}


def _case(name, dtype=np.float64):
    shape, o, k, kwargs = CASES[name]
    layer = make_layer(shape[1], o, k, dtype=dtype, **kwargs)
    x = data(shape, 1, dtype)
    y0 = conv_reference(x, layer.weight, layer.bias, **_ref_args(kwargs))
    g = data(y0.shape, 2)
    return layer, x, g, kwargs


def _ref_args(kwargs):
    return {k: v for k, v in kwargs.items() if k != "bias"}


# ---------------------------------------------------------------- the reference itself


@pytest.mark.parametrize("name", ["rect", "groups2", "stride3-pad-over-kernel"])
def test_reference_gradients_are_numerical_gradients(name):
    shape, o, k, kwargs = CASES[name]
    rng = np.random.default_rng(0)
    x = rng.standard_normal(shape)
    layer = make_layer(shape[1], o, k, **kwargs)
    w, b = np.array(layer.weight), np.array(layer.bias)
    args = _ref_args(kwargs)
    g = rng.standard_normal(conv_reference(x, w, b, **args).shape)
    _, dx, dw, db = conv_reference(x, w, b, g=g, **args)

    def loss():
        return float(np.sum(conv_reference(x, w, b, **args) * g))

    np.testing.assert_allclose(dx, numerical_gradient(loss, x), rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(dw, numerical_gradient(loss, w), rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(db, numerical_gradient(loss, b), rtol=1e-6, atol=1e-8)


# ---------------------------------------------------------------- Conv2d in float64


@pytest.mark.parametrize("name", CASES)
def test_forward_and_gradients_match_reference(name):
    layer, x, g, kwargs = _case(name)
    y, dx, dw, db = run(layer, x, g)
    ry, rdx, rdw, rdb = conv_reference(x, layer.weight, layer.bias, g=g, **_ref_args(kwargs))
    np.testing.assert_allclose(y, ry, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(dx, rdx, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(dw, rdw, rtol=1e-12, atol=1e-12)
    if db is not None:
        np.testing.assert_allclose(db, rdb, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name", CASES)
def test_several_samples_per_gemm_tile_match_reference(name):
    # 37 small images: the kernel puts up to 3 samples' columns in one GEMM (and one
    # weight-gradient block), and a block of 2 samples ends in a tile of 2
    shape, o, k, kwargs = CASES[name]
    layer = make_layer(shape[1], o, k, **kwargs)
    x = data((37, *shape[1:]), 1)
    g = data((37, *layer._output_shape(shape)), 2)
    y, dx, dw, db = run(layer, x, g)
    ry, rdx, rdw, rdb = conv_reference(x, layer.weight, layer.bias, g=g, **_ref_args(kwargs))
    for got, want in zip((y, dx, dw, db), (ry, rdx, rdw, rdb)):
        if got is not None:
            np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name", ["rect", "depthwise-x2", "1x1", "1x1-stride2"])
def test_gradients_match_numerical_gradients(name):
    layer, x, g, _ = _case(name)
    _, dx, dw, db = run(layer, x, g)

    def loss():
        return float(np.sum(layer.forward(x) * g))

    np.testing.assert_allclose(dx, numerical_gradient(loss, x), rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(dw, numerical_gradient(loss, layer.weight), rtol=1e-6,
                               atol=1e-8)
    if db is not None:
        np.testing.assert_allclose(db, numerical_gradient(loss, layer.bias), rtol=1e-6,
                                   atol=1e-8)


@pytest.mark.parametrize("name", ["3x3-pad1", "rect", "depthwise", "1x1", "1x1-stride2"])
def test_float32_matches_float64_reference(name):
    layer, x, g, kwargs = _case(name, np.float32)
    y, dx, dw, db = run(layer, x, g.astype(np.float32))
    ref = conv_reference(x, layer.weight, layer.bias, g=g.astype(np.float32),
                         **_ref_args(kwargs))
    for got, want in zip((y, dx, dw, db), ref):
        if got is not None:
            assert got.dtype == np.float32
            np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * np.abs(want).max())


def test_frozen_parameters_get_no_gradient():
    layer, x, g, _ = _case("3x3-pad1")
    _, _, _, rdb = conv_reference(x, layer.weight, layer.bias, g=g, padding=1)
    layer.weight.requires_grad = False
    _, dx, dw, db = run(layer, x, g)
    assert not dw.any()
    np.testing.assert_allclose(db, rdb, rtol=1e-12)
    layer.requires_grad_(False)
    _, dx2, dw, db = run(layer, x, g)
    assert not dw.any() and not db.any()
    np.testing.assert_array_equal(dx, dx2)


def test_gradients_accumulate():
    layer, x, g, _ = _case("groups2")
    layer.zero_grad()
    layer.forward(x)
    layer.backward(g)
    dw, db = layer.weight.grad.copy(), layer.bias.grad.copy()
    layer.backward(g)
    np.testing.assert_allclose(layer.weight.grad, 2 * dw, rtol=1e-15)
    np.testing.assert_allclose(layer.bias.grad, 2 * db, rtol=1e-15)


def test_input_grad_false_returns_none_and_still_accumulates():
    layer, x, g, _ = _case("stride2")
    _, _, dw, db = run(layer, x, g)
    layer.zero_grad()
    layer.forward(x)
    assert layer.backward(g, input_grad=False) is None
    np.testing.assert_array_equal(layer.weight.grad, dw)
    np.testing.assert_array_equal(layer.bias.grad, db)


@pytest.mark.parametrize("size", [24, 8], ids=["24x24", "8x8"])
@pytest.mark.parametrize("kwargs", [dict(padding=1), dict(stride=2, groups=2),
                                    dict(kernel_size=1)], ids=["3x3", "stride2-groups", "1x1"])
def test_bitwise_equal_at_1_and_2_threads(assert_thread_independent, kwargs, size):
    kwargs = dict(kwargs)
    k = kwargs.pop("kernel_size", 3)
    # 40 samples: more than the weight-gradient reduction's sample blocks, and enough
    # work that the kernels run threaded; 8x8 images: several samples per GEMM tile
    layer = make_layer(8, 16, k, dtype=np.float32, **kwargs)
    x = data((40, 8, size, size), 1, np.float32)
    g = data((40, *layer._output_shape(x.shape)), 2, np.float32)
    assert_thread_independent(lambda: run(layer, x, g))


def test_non_contiguous_input_equals_its_contiguous_copy():
    layer, x, g, _ = _case("rect")
    wide = np.zeros((*x.shape[:3], 2 * x.shape[3]))
    wide[..., ::2] = x
    strided = wide[..., ::2]
    assert not strided.flags.c_contiguous
    for got, want in zip(run(layer, strided, g), run(layer, x, g)):
        np.testing.assert_array_equal(got, want)
    fortran = np.asfortranarray(g)
    for got, want in zip(run(layer, x, fortran), run(layer, x, g)):
        np.testing.assert_array_equal(got, want)


def test_nan_passes_through():
    layer = make_layer(2, 3, 3, padding=1)
    x = data((1, 2, 5, 5))
    x[0, 1, 2, 2] = np.nan
    y = layer.forward(x)
    assert np.isnan(y[0, :, 1:4, 1:4]).all()
    assert np.isfinite(y[0, :, 0]).all()


# ---------------------------------------------------------------- fused activation


@pytest.mark.parametrize("rows", [2, 37])
@pytest.mark.parametrize("act", ["relu", "leaky_relu"])
@pytest.mark.parametrize("name", ["3x3-pad1", "stride2", "1x1"])
def test_conv_op_with_fused_activation(act, name, rows):
    shape, o, k, kwargs = CASES[name]
    shape = (rows, *shape[1:])
    layer = make_layer(shape[1], o, k, **kwargs)
    x = data(shape, 1)
    w, b = layer.weight, layer.bias
    wg, bg = np.zeros_like(w), np.zeros_like(b)
    args = _ref_args(kwargs)
    stride, padding, dilation = (_pair(args.get(a, d)) for a, d in
                                 (("stride", 1), ("padding", 0), ("dilation", 1)))
    op = conv.ConvOp(shape[0], shape[1:], w, wg, b, bg, stride, padding, dilation, 1,
                activations.ACTIVATIONS[act], 0.1)
    assert op.reads_y and op.out_shape == layer._output_shape(shape)
    y = np.empty((shape[0], *op.out_shape))
    op.run_forward(x, y, 2)
    z = conv_reference(x, w, b, **args)
    np.testing.assert_allclose(y, np.where(z > 0, z, 0.0 if act == "relu" else 0.1 * z),
                               rtol=1e-12, atol=1e-12)
    g = data(y.shape, 2)
    dz = np.where(z > 0, g, 0.0 if act == "relu" else 0.1 * g)
    _, rdx, rdw, rdb = conv_reference(x, w, b, g=dz, **args)
    dx = np.empty_like(x)
    g_before = g.copy()
    op.run_backward(x, y, g, dx, True, 2)
    np.testing.assert_array_equal(g, g_before)  # g is read-only to the kernel
    np.testing.assert_allclose(dx, rdx, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(wg, rdw, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(bg, rdb, rtol=1e-12, atol=1e-12)


class _Plan:
    """The part of a compiled plan that add_to_plan uses."""

    def __init__(self, rows, shape, dtype=np.float64):
        self.rows, self.shape, self.dtype, self.ops = rows, shape, dtype, []

    def add_kernel(self, op):
        self.ops.append(op)


def test_add_to_plan_fuses_an_activation():
    layer = make_layer(3, 4, 3, padding=1)
    plan = _Plan(5, (3, 6, 6))
    assert layer.add_to_plan(plan, nn.ReLU()) == 2
    assert layer.add_to_plan(plan, None) == 1
    assert layer.add_to_plan(plan, nn.LeakyReLU(-0.5)) == 1  # no epilogue for it
    fused, alone = plan.ops[:2]
    assert fused.reads_y and not alone.reads_y
    assert (fused.rows, fused.in_shape, fused.out_shape) == (5, (3, 6, 6), (4, 6, 6))
    with pytest.raises(ValueError, match="Conv2d: expected input of shape"):
        layer.add_to_plan(_Plan(5, (2, 6, 6)), None)
    with pytest.raises(ValueError, match="larger than the input"):
        make_layer(3, 4, 9).add_to_plan(_Plan(5, (3, 6, 6)), None)
    assert layer.plan_state() == ("training", "weight", "bias")


# ---------------------------------------------------------------- construction


def test_init_seed_shapes_and_config():
    layer = nn.Conv2d(8, 64, (3, 5), groups=2, seed=7)
    assert layer.weight.shape == (64, 4, 3, 5) and layer.weight.dtype == np.float32
    assert layer.bias.shape == (64,) and not layer.bias.any()
    np.testing.assert_allclose(layer.weight.std(), np.sqrt(2 / 60), rtol=0.05)
    xavier = nn.Conv2d(8, 64, (3, 5), groups=2, init="xavier", seed=7)
    np.testing.assert_allclose(xavier.weight.std(), np.sqrt(2 / (60 + 480)), rtol=0.05)
    np.testing.assert_array_equal(nn.Conv2d(8, 64, (3, 5), groups=2, seed=7).weight,
                                  layer.weight)
    rebuilt = nn.Conv2d(**layer.config())
    assert rebuilt.config() == layer.config() and repr(rebuilt) == repr(layer)
    assert "kernel_size=(3, 5)" in repr(layer)
    assert nn.Conv2d(2, 2, 1, bias=False, dtype=np.float64).bias is None


def test_save_and_load(tmp_path):
    model = nn.Sequential(nn.Conv2d(3, 4, (3, 2), stride=(2, 1), padding=1, groups=1, seed=1),
                          nn.ReLU(), nn.Conv2d(4, 4, 1, groups=2, bias=False, seed=2))
    fastnn.save(model, tmp_path / "m.fnn")
    loaded = fastnn.load(tmp_path / "m.fnn")
    x = data((2, 3, 6, 6), dtype=np.float32)
    np.testing.assert_array_equal(loaded.forward(x), model.forward(x))


BAD_ARGUMENTS = [
    (dict(kernel_size=0), ValueError, "kernel_size"),
    (dict(kernel_size=True), TypeError, "kernel_size"),
    (dict(kernel_size=3.0), TypeError, "kernel_size"),
    (dict(kernel_size=(3, 3, 3)), TypeError, "kernel_size"),
    (dict(stride=0), ValueError, "stride"),
    (dict(stride=(1, -1)), ValueError, "stride"),
    (dict(stride=(1, 2.0)), TypeError, "stride"),
    (dict(dilation=0), ValueError, "dilation"),
    (dict(padding=-1), ValueError, "padding"),
    (dict(padding=False), TypeError, "padding"),
    (dict(groups=3), ValueError, "groups"),
    (dict(groups=0), ValueError, "groups"),
    (dict(in_channels=4, groups=4), ValueError, "groups"),
    (dict(in_channels=0), ValueError, "in_channels"),
    (dict(out_channels=2.0), TypeError, "out_channels"),
    (dict(init="normal"), ValueError, "init"),
    (dict(dtype=np.int32), TypeError, "dtype"),
]


@pytest.mark.parametrize(("kwargs", "error", "name"), BAD_ARGUMENTS,
                         ids=[str(k) for k, _, _ in BAD_ARGUMENTS])
def test_bad_arguments_raise(kwargs, error, name):
    args = dict(in_channels=2, out_channels=6, kernel_size=3)
    args.update(kwargs)
    with pytest.raises(error, match=name):
        nn.Conv2d(**args)


def test_bad_inputs_raise():
    layer = nn.Conv2d(3, 4, 3, padding=1, dilation=2)
    x = np.zeros((2, 3, 8, 8), np.float32)
    with pytest.raises(ValueError, match=r"expected input of shape \(N, 3, H, W\)"):
        layer.forward(np.zeros((2, 4, 8, 8), np.float32))
    with pytest.raises(ValueError, match=r"expected input of shape"):
        layer.forward(np.zeros((3, 8, 8), np.float32))
    with pytest.raises(ValueError, match=r"expected input of shape"):
        layer.forward([[[[0.0]]]])
    with pytest.raises(ValueError, match="larger than the input"):
        layer.forward(np.zeros((2, 3, 2, 8), np.float32))  # dilated kernel: 5 > 2 + 2
    with pytest.raises(TypeError, match="dtype float32, got float64"):
        layer.forward(x.astype(np.float64))
    with pytest.raises(TypeError, match="dtype float32, got int64"):
        layer.forward(x.astype(np.int64))
    sample = layer.forward(x).shape[1:]
    empty = layer.forward(x[:0])  # an empty batch gives an empty output
    assert empty.shape == (0, *sample)
    assert layer.backward(empty).shape == x[:0].shape
    with pytest.raises(RuntimeError, match="before forward"):
        nn.Conv2d(3, 4, 3).backward(np.zeros((2, 4, 6, 6), np.float32))
    y = layer.forward(x)
    with pytest.raises(ValueError, match="dout: expected shape"):
        layer.backward(np.zeros((2, 4, 8, 7), np.float32))
    with pytest.raises(TypeError, match="dout: expected dtype float32"):
        layer.backward(np.zeros(y.shape))


# ---------------------------------------------------------------- PyTorch


@pytest.mark.parametrize("name", ["rect", "depthwise-x2", "stride3-pad-over-kernel"])
def test_agrees_with_torch(name):
    torch = pytest.importorskip("torch")
    layer, x, g, kwargs = _case(name)
    y, dx, dw, db = run(layer, x, g)
    xt = torch.tensor(x, requires_grad=True)
    wt = torch.tensor(np.array(layer.weight), requires_grad=True)
    bt = torch.tensor(np.array(layer.bias), requires_grad=True)
    args = _ref_args(kwargs)
    yt = torch.nn.functional.conv2d(xt, wt, bt, _pair(args.get("stride", 1)),
                                    _pair(args.get("padding", 0)),
                                    _pair(args.get("dilation", 1)), args.get("groups", 1))
    yt.backward(torch.tensor(g))
    for got, want in ((y, yt), (dx, xt.grad), (dw, wt.grad), (db, bt.grad)):
        np.testing.assert_allclose(got, want.detach().numpy(), rtol=1e-10, atol=1e-10)
