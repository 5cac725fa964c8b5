"""fastnn.export_onnx: graphs that onnx.checker accepts and onnxruntime runs to
fastnn's own eval-mode output, for every layer type, nested containers, real
architectures, both dtypes and batch sizes 1 and 7 (one file, a dynamic batch), and
bad input.

Tolerance: reference.assert_close with the output's largest magnitude as the scale,
|onnxruntime - fastnn| <= 1e-5 * max|fastnn| + 1e-5 for a float32 graph (the two
runtimes sum in different orders and onnxruntime approximates sigmoid and tanh), and
1e-12 for a float64 graph."""

import os
import sys

import numpy as np
import pytest
from reference import assert_close
from test_cli import run as cli
from test_io import trained_bn_model
from test_io_cnn import basic_block, lenet, nested, odd_convs, resnet
from test_trainer import trainer_for

import fastnn
from fastnn import io, nn, onnx_export

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

BATCHES = (1, 7)


def export(model, path, input_shape, **kwargs):
    """Export model to path; the file must pass the full ONNX check."""
    fastnn.export_onnx(model, path, input_shape, **kwargs)
    onnx.checker.check_model(onnx.load(str(path)), full_check=True)
    return path


def assert_runs_like(model, tmp_path, input_shape, dtype=None, x_dtype=None, seed=0):
    """The graph exported with `dtype` gives model.eval().forward(x) for batches of 1
    and 7 from one file, x of x_dtype (default: the model's); the model keeps its modes
    and state. float32 tolerance where either dtype is float32."""
    modes = [m.training for _, m in model.modules()]
    state = {k: v.copy() for k, v in model.state_dict().items()}
    path = export(model, tmp_path / "model.onnx", input_shape, dtype=dtype)
    assert [m.training for _, m in model.modules()] == modes
    for k, v in model.state_dict().items():
        np.testing.assert_array_equal(v, state[k], err_msg=k)
    x_dtype = np.dtype(x_dtype or model.param_dtype())
    graph_dtype = np.dtype(dtype or model.param_dtype())
    tolerance = min(x_dtype, graph_dtype, key=lambda d: d.itemsize)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(seed)
    model.eval()
    for n in BATCHES:
        x = rng.standard_normal((n, *input_shape)).astype(x_dtype)
        expected = model.forward(x).astype(np.float64)
        (got,) = session.run(None, {"input": x.astype(graph_dtype)})
        assert got.dtype == graph_dtype
        assert_close(got.astype(tolerance), expected, tolerance,
                     magnitude=np.abs(expected).max())
    return path


def randomized(model, seed=1):
    """model with every parameter and BatchNorm running statistic random (running_var
    in [0.5, 2]), so that no parameter can be mistaken for another or dropped."""
    rng = np.random.default_rng(seed)
    for p in model.parameters():
        p[...] = rng.uniform(-1, 1, p.shape)
    for _, m in model.modules():
        if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
            m.running_mean[...] = rng.uniform(-1, 1, m.num_features)
            m.running_var[...] = rng.uniform(0.5, 2, m.num_features)
    return model


# ---------------------------------------------------------------- each layer type

DENSE_LAYERS = {
    "linear": lambda d: nn.Linear(5, 4, seed=0, dtype=d),
    "linear_no_bias": lambda d: nn.Linear(5, 4, bias=False, seed=0, dtype=d),
    "batchnorm1d": lambda d: nn.BatchNorm1d(5, eps=1e-3, dtype=d),
    "relu": lambda d: nn.ReLU(),
    "leaky_relu": lambda d: nn.LeakyReLU(0.1),
    "leaky_relu_negative": lambda d: nn.LeakyReLU(-0.3),
    "sigmoid": lambda d: nn.Sigmoid(),
    "tanh": lambda d: nn.Tanh(),
    "elu": lambda d: nn.ELU(0.7),
    "gelu": lambda d: nn.GELU(),
    "gelu_tanh": lambda d: nn.GELU(approximate="tanh"),
    "silu": lambda d: nn.SiLU(),
    "dropout": lambda d: nn.Dropout(0.5, seed=0),
}

IMAGE_LAYERS = {
    "conv": lambda d: nn.Conv2d(3, 4, 3, dtype=d),
    "conv_strided_padded_dilated": lambda d: nn.Conv2d(
        3, 6, (3, 2), stride=(2, 1), padding=(1, 2), dilation=(2, 1), bias=False, dtype=d),
    "conv_groups": lambda d: nn.Conv2d(6, 4, 3, padding=1, groups=2, dtype=d),
    "conv_depthwise": lambda d: nn.Conv2d(6, 6, 3, stride=2, groups=6, dtype=d),
    "conv_1x1_stride_2": lambda d: nn.Conv2d(6, 4, 1, stride=2, dtype=d),
    "batchnorm2d": lambda d: nn.BatchNorm2d(6, dtype=d),
    "maxpool": lambda d: nn.MaxPool2d(2),
    "maxpool_padded": lambda d: nn.MaxPool2d((3, 2), stride=(2, 1), padding=(1, 1)),
    "avgpool": lambda d: nn.AvgPool2d(3, stride=2),
    "avgpool_padded": lambda d: nn.AvgPool2d((2, 3), stride=(1, 2), padding=(1, 1)),
    "global_avgpool": lambda d: nn.GlobalAvgPool2d(),
    "flatten": lambda d: nn.Flatten(),
    "relu": lambda d: nn.ReLU(),
    "leaky_relu": lambda d: nn.LeakyReLU(0.2),
    "sigmoid": lambda d: nn.Sigmoid(),
    "tanh": lambda d: nn.Tanh(),
    "elu": lambda d: nn.ELU(),
    "gelu": lambda d: nn.GELU(),
    "silu": lambda d: nn.SiLU(),
    "dropout": lambda d: nn.Dropout(0.3, seed=0),
}


@pytest.mark.parametrize("name", DENSE_LAYERS)
def test_each_dense_layer(tmp_path, name, dtype):
    """Each layer alone on (N, 5) rows of its dtype, and after a Linear."""
    layer = randomized(DENSE_LAYERS[name](dtype))
    if name == "gelu" and dtype == np.float64:  # onnxruntime has no double Erf
        with pytest.raises(TypeError, match=r"'Erf'.*dtype=np.float32"):
            fastnn.export_onnx(layer, tmp_path / "m.onnx", (5,), dtype=np.float64)
        assert_runs_like(layer, tmp_path, (5,), dtype=np.float32, x_dtype=np.float64)
        return
    assert_runs_like(layer, tmp_path, (5,), dtype=dtype, x_dtype=dtype)
    model = nn.Sequential(nn.Linear(5, 5, seed=1, dtype=dtype), layer)
    assert_runs_like(model, tmp_path, (5,))


@pytest.mark.parametrize("name", IMAGE_LAYERS)
def test_each_image_layer(tmp_path, name):
    """Each layer alone on (6, 9, 8) images (3 channels for the first convolutions),
    and after a convolution."""
    layer = randomized(IMAGE_LAYERS[name](np.float32))
    channels = 3 if name.startswith("conv") and name not in (
        "conv_groups", "conv_depthwise", "conv_1x1_stride_2") else 6
    assert_runs_like(layer, tmp_path, (channels, 9, 8))
    model = randomized(nn.Sequential(nn.Conv2d(2, channels, 3, padding=1, seed=2), layer))
    assert_runs_like(model, tmp_path, (2, 9, 8))


def test_every_layer_that_fastnn_saves_has_an_onnx_form():
    """A layer type added to fastnn.save's table needs its entry in export_onnx's."""
    assert set(io.LAYERS.values()) <= set(onnx_export._LAYERS)
    assert set(nn.ACTIVATIONS.values()) <= set(onnx_export.ACTIVATIONS)


def test_the_ops_of_each_layer(tmp_path):
    """The graph holds the ops the module docstring names, with the attributes that
    carry each layer's settings, and constants named after the model's parameters."""
    model = nn.Sequential(
        nn.Conv2d(2, 4, (3, 2), stride=(2, 1), padding=(1, 0), dilation=(1, 2), groups=2),
        nn.BatchNorm2d(4), nn.LeakyReLU(0.1), nn.AvgPool2d(2, padding=1),
        nn.Residual(nn.MaxPool2d(3, stride=1, padding=1)), nn.Dropout(0.5),
        nn.GlobalAvgPool2d(), nn.Linear(4, 3, bias=False), nn.Sigmoid())
    graph = onnx.load(str(export(model, tmp_path / "m.onnx", (2, 9, 9)))).graph
    ops = [n.op_type for n in graph.node]
    assert ops == ["Conv", "Mul", "Add", "PRelu", "AveragePool", "MaxPool", "Add",
                   "GlobalAveragePool", "Flatten", "Gemm", "Sigmoid"]
    attrs = {n.op_type: {a.name: onnx.helper.get_attribute_value(a) for a in n.attribute}
             for n in graph.node}
    assert attrs["Conv"] == {"kernel_shape": [3, 2], "strides": [2, 1], "pads": [1, 0, 1, 0],
                             "dilations": [1, 2], "group": 2}
    assert attrs["AveragePool"] == {"kernel_shape": [2, 2], "strides": [2, 2],
                                    "pads": [1, 1, 1, 1], "count_include_pad": 1}
    assert attrs["Gemm"] == {}  # weight (in, out) as stored: no transB
    assert {c.name for c in graph.initializer} == {
        "0.weight", "0.bias", "1.scale", "1.shift", "2.slope", "7.weight"}
    weight = next(c for c in graph.initializer if c.name == "7.weight")
    np.testing.assert_array_equal(onnx.numpy_helper.to_array(weight), model[7].weight)
    assert [i.name for i in graph.input] == ["input"]
    assert [o.name for o in graph.output] == ["output"]
    dims = [d.dim_param or d.dim_value for d in graph.output[0].type.tensor_type.shape.dim]
    assert dims == ["batch", 3]


def test_batchnorm_uses_its_running_statistics(tmp_path):
    """Eval mode: (x - running_mean) / sqrt(running_var + eps) * weight + bias, checked
    against a float64 formula too, whatever mode the layer is in when exported."""
    bn = randomized(nn.BatchNorm1d(4, eps=0.1, dtype=np.float64))
    bn.train()
    path = export(bn, tmp_path / "bn.onnx", (4,))
    assert bn.training
    x = np.random.default_rng(0).standard_normal((7, 4))
    (got,) = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(
        None, {"input": x})
    expected = (x - bn.running_mean) / np.sqrt(bn.running_var + 0.1) * bn.weight + bn.bias
    assert_close(got, expected, np.float64)


def test_sync_batchnorm_exports_as_batchnorm1d(tmp_path):
    model = randomized(nn.Sequential(nn.Linear(5, 4), nn.SyncBatchNorm(4), nn.ReLU()))
    assert_runs_like(model, tmp_path, (5,))


# ---------------------------------------------------------------- containers, models


def test_residuals_nested_in_any_way(tmp_path):
    assert_runs_like(randomized(nested()), tmp_path, (2, 5, 5))


def test_identity_residual_and_identity_models(tmp_path):
    """Models whose output is their input (Dropout alone, an empty Sequential) or a sum
    of it (x + x)."""
    for model in (nn.Dropout(0.5), nn.Sequential(), nn.Sequential(nn.Sequential()),
                  nn.Residual(nn.Dropout(0.2)), nn.Residual(nn.ReLU(), nn.Sigmoid())):
        assert_runs_like(model, tmp_path, (3, 4))


def test_sequential_nesting_and_shared_layers(tmp_path):
    """Sequentials in Sequentials, and one layer object used twice (its constants are
    stored under two names)."""
    shared = nn.Linear(6, 6, seed=3)
    model = randomized(nn.Sequential(
        nn.Sequential(nn.Linear(5, 6, seed=0), nn.Sequential(nn.Tanh(), shared)),
        nn.ReLU(), shared, nn.Sequential(nn.Sequential(nn.Linear(6, 2, seed=4)))))
    assert_runs_like(model, tmp_path, (5,))


def test_trained_mlp_with_batchnorm_and_dropout(tmp_path, dtype):
    """An MLP trained by the Trainer (BatchNorm's running statistics moved, Dropout
    active in training) gives the same scores and labels in onnxruntime."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((256, 10)).astype(dtype)
    y = (x[:, 0] + x[:, 1] > 0).astype(np.int64) + (x[:, 2] > 1)
    model = nn.mlp(10, 3, [32, 16], batch_norm=True, dropout=0.2, seed=0, dtype=dtype)
    trainer = trainer_for(model)
    trainer.fit(x, y, epochs=3, batch_size=32, seed=0)
    assert not np.allclose(model[1].running_mean, 0)
    path = assert_runs_like(model, tmp_path, (10,))
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (scores,) = session.run(None, {"input": x})
    np.testing.assert_array_equal(scores.argmax(1), trainer.predict(x))


def test_lenet(tmp_path):
    x = np.random.default_rng(2).standard_normal((6, 1, 28, 28)).astype(np.float32)
    model = trained_bn_model(lenet(), x)
    assert_runs_like(model, tmp_path, (1, 28, 28))


def test_resnet_with_stride_2_1x1_shortcuts(tmp_path):
    model = resnet()
    assert model[5].shortcut is not None and model[5].shortcut[0].stride == (2, 2)
    trained_bn_model(model, np.random.default_rng(2).standard_normal((6, 3, 8, 8))
                     .astype(np.float32))
    assert_runs_like(model, tmp_path, (3, 8, 8))


def test_odd_convolutions_and_pools(tmp_path):
    assert_runs_like(randomized(odd_convs()), tmp_path, (4, 9, 7))


def test_a_residual_block_alone(tmp_path):
    assert_runs_like(randomized(basic_block(4, 8, 2, seed=0)), tmp_path, (4, 7, 6))


# ---------------------------------------------------------------- dtypes


def test_float64_mlp_is_a_double_graph(tmp_path):
    model = randomized(nn.Sequential(
        nn.Linear(5, 8, dtype=np.float64), nn.BatchNorm1d(8, dtype=np.float64),
        nn.LeakyReLU(0.1), nn.Dropout(0.5), nn.Linear(8, 4, dtype=np.float64), nn.Tanh(),
        nn.Residual(nn.Linear(4, 4, dtype=np.float64)), nn.Sigmoid()))
    path = assert_runs_like(model, tmp_path, (5,))
    elem = onnx.load(str(path)).graph.input[0].type.tensor_type.elem_type
    assert elem == onnx.TensorProto.DOUBLE


@pytest.mark.parametrize("layer", [lambda: nn.Conv2d(2, 2, 1, dtype=np.float64),
                                   lambda: nn.AvgPool2d(2), lambda: nn.GlobalAvgPool2d()])
def test_float64_ops_that_onnxruntime_runs_in_float32_only(tmp_path, layer):
    """A clear TypeError by default; dtype=np.float32 exports a float32 graph that gives
    the float64 model's output to float32 rounding."""
    model = randomized(nn.Sequential(nn.BatchNorm2d(2, dtype=np.float64), layer()))
    path = tmp_path / "model.onnx"
    with pytest.raises(TypeError, match=r"float64.*dtype=np.float32"):
        fastnn.export_onnx(model, path, (2, 4, 4))
    assert not path.exists()
    assert_runs_like(model, tmp_path, (2, 4, 4), dtype=np.float32)


def test_float32_model_as_a_double_graph(tmp_path):
    assert_runs_like(randomized(nn.Sequential(nn.Linear(5, 4), nn.ReLU())), tmp_path, (5,),
                     dtype=np.float64)


def test_max_pool_in_float64(tmp_path):
    model = nn.Sequential(nn.BatchNorm2d(2, dtype=np.float64), nn.MaxPool2d(2, padding=1))
    assert_runs_like(randomized(model), tmp_path, (2, 5, 5))


# ---------------------------------------------------------------- bad input, files


def test_input_shape_that_the_model_does_not_take(tmp_path):
    path = tmp_path / "model.onnx"
    path.write_bytes(b"old")
    model = lenet()
    for shape in ((1, 27, 28), (2, 28, 28), (784,), (1, 2, 28, 28)):
        with pytest.raises(ValueError, match=r"input_shape .*Conv2d|input_shape .*Linear"):
            fastnn.export_onnx(model, path, shape)
    with pytest.raises(ValueError, match=r"input_shape.*Linear"):
        fastnn.export_onnx(nn.Linear(4, 2), path, (5,))
    assert model.training
    assert path.read_bytes() == b"old"  # untouched, no temporary file left
    assert os.listdir(tmp_path) == ["model.onnx"]


@pytest.mark.parametrize("shape, error", [
    ((), ValueError), ((0, 3), ValueError), ((-1,), ValueError), ((2.0,), TypeError),
    ((True,), TypeError), ("5", TypeError), (5, TypeError), (None, TypeError)])
def test_malformed_input_shape(tmp_path, shape, error):
    with pytest.raises(error, match="input_shape"):
        fastnn.export_onnx(nn.ReLU(), tmp_path / "m.onnx", shape)


def test_bad_model_and_dtype(tmp_path):
    with pytest.raises(TypeError, match="model"):
        fastnn.export_onnx(lambda x: x, tmp_path / "m.onnx", (3,))
    with pytest.raises(TypeError, match="dtype"):
        fastnn.export_onnx(nn.ReLU(), tmp_path / "m.onnx", (3,), dtype=np.int32)


class Swish(nn.Module):
    def forward(self, x):
        return x / (1 + np.exp(-x))


class MyReLU(nn.ReLU):
    """A subclass may compute something else: it has no ONNX form of its own."""


@pytest.mark.parametrize("model, where", [
    (nn.Sequential(nn.Linear(3, 3), nn.Residual(nn.Sequential(nn.ReLU(), Swish()))),
     "layer '1.block.1' is a Swish"),
    (Swish(), "the model is a Swish"),
    (nn.Sequential(MyReLU()), "layer '0' is a MyReLU")])
def test_unknown_layer_is_named(tmp_path, model, where):
    with pytest.raises(TypeError, match=where):
        fastnn.export_onnx(model, tmp_path / "m.onnx", (3,))
    assert not os.listdir(tmp_path)


def test_missing_onnx_names_the_extra(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnx", None)
    with pytest.raises(ImportError, match=r"fastnn\[onnx\]"):
        fastnn.export_onnx(nn.ReLU(), tmp_path / "m.onnx", (3,))


def test_export_replaces_a_file(tmp_path):
    path = tmp_path / "model.onnx"
    path.write_bytes(b"old")
    export(nn.Sequential(nn.Linear(3, 2)), str(path), [3])
    assert os.listdir(tmp_path) == ["model.onnx"]
    assert onnx.load(str(path)).producer_name == "fastnn"


# ---------------------------------------------------------------- command line


def test_cli_export_of_a_saved_model(tmp_path):
    """`fastnn export MODEL --onnx OUT`: the input shape the file records, or
    --input-shape for a file that records none."""
    model = randomized(lenet())
    path = tmp_path / "model.safetensors"
    fastnn.save(model, path, metadata={"input_shape": [1, 28, 28], "input_scale": 255})
    code, out, _ = cli(["export", path, "--onnx", tmp_path / "model.onnx"])
    assert code == 0
    assert "input (batch, 1, 28, 28), raw values divided by 255" in out
    x = np.random.default_rng(0).standard_normal((3, 1, 28, 28)).astype(np.float32)
    session = ort.InferenceSession(str(tmp_path / "model.onnx"),
                                   providers=["CPUExecutionProvider"])
    expected = model.eval().forward(x)
    assert_close(session.run(None, {"input": x})[0], expected, np.float32,
                 magnitude=np.abs(expected).max())

    fastnn.save(nn.Sequential(nn.Linear(4, 2)), path)
    code, _, err = cli(["export", path, "--onnx", tmp_path / "mlp.onnx"])
    assert code == 2 and "--input-shape" in err
    assert cli(["export", path, "--onnx", tmp_path / "mlp.onnx", "--input-shape", "4"])[0] == 0
    onnx.checker.check_model(onnx.load(str(tmp_path / "mlp.onnx")), full_check=True)


@pytest.mark.parametrize("argv, match", [
    (["--input-shape", "5"], "does not take samples of input_shape"),
    (["--input-shape", "0"], "expected a positive integer"),
    ([], "required: --onnx")])
def test_cli_export_bad_arguments(tmp_path, argv, match):
    path = tmp_path / "model.safetensors"
    fastnn.save(nn.Sequential(nn.Linear(4, 2)), path)
    onnx_path = [] if not argv else ["--onnx", tmp_path / "m.onnx"]
    code, _, err = cli(["export", path, *onnx_path, *argv])
    assert code == 2 and match in err, err
    assert os.listdir(tmp_path) == ["model.safetensors"]
