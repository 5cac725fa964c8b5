"""The `fastnn` command line (fastnn.__main__.main), run in-process: train (an MLP, or
the CNN and ResNet-8 of --model), evaluate, predict and config on scikit-learn's digits
(and on MNIST when its files are here), and bad arguments, which must end in a usage
message and exit status 2, not a traceback."""

import contextlib
import io
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import fastnn
from fastnn.__main__ import load_data, main

MNIST_DIR = Path(
    os.environ.get("FASTNN_MNIST_DIR")
    or Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "mnist"
)
needs_mnist = pytest.mark.skipif(
    not (MNIST_DIR / "t10k-labels-idx1-ubyte.gz").exists(), reason="MNIST folder not found"
)

ACCURACY = re.compile(r"test accuracy (\d\.\d{4})")


def run(argv):
    """(exit status, stdout, stderr) of main(argv)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main([str(a) for a in argv])
        except SystemExit as exc:
            code = exc.code
    return code, out.getvalue(), err.getvalue()


def accuracy_in(text):
    found = ACCURACY.findall(text)
    assert found, f"no 'test accuracy' in {text!r}"
    return float(found[-1])


@pytest.fixture(autouse=True)
def _no_mnist_env(monkeypatch):
    """The digits data unless a test says --data: $FASTNN_MNIST_DIR must not leak in."""
    monkeypatch.delenv("FASTNN_MNIST_DIR", raising=False)


@pytest.fixture(scope="module")
def digits_model(tmp_path_factory):
    """A model trained once by `fastnn train` on the digits: (path, train stdout)."""
    pytest.importorskip("sklearn")
    folder = tmp_path_factory.mktemp("cli")
    path = folder / "model.safetensors"
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("FASTNN_MNIST_DIR", raising=False)
        mp.chdir(folder)  # any default output would land here, not in the repository
        code, out, err = run(["train", "--epochs", 3, "--hidden", 32, "--quiet", "--out", path,
                              "--plot", ""])
    assert code == 0, err
    return path, out


def digits_test_split():
    _, scale, _, (x, y) = load_data(None, 0)
    return scale, x, y


# ---------------------------------------------------------------- train / evaluate / predict


def test_train_reports_accuracy_and_saves(digits_model):
    path, out = digits_model
    assert "digits" in out and "1437 training / 360 test" in out
    # 36 Adam steps: far above chance (0.1), not converged (scikit-learn's MLPClassifier
    # reaches 0.38 with the same budget)
    assert accuracy_in(out) > 0.2
    assert "saved the model to" in out
    assert path.is_file() and sorted(p.name for p in path.parent.iterdir()) == [path.name]
    model, meta = fastnn.load(path, with_metadata=True)
    assert meta["n_features"] == 64 and meta["n_classes"] == 10 and meta["input_scale"] == 16.0
    assert model[0].in_features == 64 and model[0].out_features == 32


def test_evaluate_matches_training(digits_model, capsys):
    path, out = digits_model
    assert main(["evaluate", str(path)]) == 0
    printed = capsys.readouterr().out
    assert str(path) in printed and "360 samples" in printed
    assert accuracy_in(printed) == accuracy_in(out)


def test_evaluate_and_predict_build_no_optimizer(digits_model, capsys, monkeypatch):
    path, out = digits_model

    def no_optimizer(*args, **kwargs):
        raise AssertionError("an optimizer was built to evaluate or predict")

    for name in fastnn.optim.__all__:
        if isinstance(getattr(fastnn.optim, name), type):
            monkeypatch.setattr(fastnn.optim, name, no_optimizer)
    assert main(["evaluate", str(path)]) == 0
    assert accuracy_in(capsys.readouterr().out) == accuracy_in(out)
    assert main(["predict", str(path), "--count", "3"]) == 0
    assert len(capsys.readouterr().out.split()) == 3


def test_predict_count(digits_model, capsys):
    path, _ = digits_model
    assert main(["predict", str(path), "--count", "5"]) == 0
    labels = capsys.readouterr().out.split()
    assert len(labels) == 5 and all(0 <= int(v) <= 9 for v in labels)
    _, x, _ = digits_test_split()
    expected = fastnn.load(path).forward(x[:5]).argmax(axis=1)
    assert [int(v) for v in labels] == expected.tolist()


@pytest.mark.parametrize("shape", ["8x8", "64"])
def test_predict_input_npy_of_raw_images(digits_model, tmp_path, capsys, shape):
    path, out = digits_model
    scale, x, y = digits_test_split()
    raw = np.rint(x * scale).astype(np.uint8 if shape == "8x8" else np.float64)
    assert raw.max() == 16
    if shape == "8x8":
        raw = raw.reshape(-1, 8, 8)
    np.save(tmp_path / "x.npy", raw)
    assert main(["predict", str(path), "--input", str(tmp_path / "x.npy")]) == 0
    labels = np.array([int(v) for v in capsys.readouterr().out.split()])
    assert len(labels) == len(y)
    assert np.mean(labels == y) == pytest.approx(accuracy_in(out), abs=1e-4)


def test_config_prints_the_configuration(capsys):
    assert main(["config"]) == 0
    printed = capsys.readouterr().out
    assert f"fastnn {fastnn.__version__}" in printed
    assert "OpenMP" in printed and "threads" in printed and "BLAS" in printed


def test_train_with_dropout_then_evaluate(tmp_path):
    pytest.importorskip("sklearn")
    path = tmp_path / "drop.safetensors"
    code, out, err = run(["train", "--epochs", 1, "--hidden", 16, "--dropout", 0.2, "--quiet",
                          "--out", path, "--plot", ""])
    assert code == 0, err
    code, printed, err = run(["evaluate", path])
    assert code == 0, err
    assert accuracy_in(printed) == accuracy_in(out)


@needs_mnist
def test_train_on_mnist(tmp_path):
    path = tmp_path / "mnist.safetensors"
    code, out, err = run(["train", "--data", MNIST_DIR, "--limit", 5000, "--epochs", 1,
                          "--hidden", 64, "--quiet", "--out", path, "--plot", ""])
    assert code == 0, err
    assert "MNIST" in out and "5000 training / 10000 test" in out
    # one epoch of 5000 samples reaches about 0.85 (0.8500 and 0.8501 on the two BLAS
    # backends of one machine: the last batches decide the last digit); chance is 0.1
    assert accuracy_in(out) > 0.8
    model, meta = fastnn.load(path, with_metadata=True)
    assert model[0].in_features == 784 and model[0].out_features == 64
    assert meta["n_features"] == 784 and meta["input_scale"] == 255.0


# ---------------------------------------------------------------- bad arguments


def assert_usage_error(argv, match=None):
    code, out, err = run(argv)
    assert code == 2, (code, out, err)
    assert "Traceback" not in err + out
    assert "error:" in err
    if match is not None:
        assert re.search(match, err), err
    return err


@pytest.mark.parametrize("argv, match", [
    ([], "required"),
    (["bogus"], "invalid choice"),
    (["train", "--epochs", "0"], "--epochs"),
    (["train", "--epochs", "two"], "--epochs"),
    (["train", "--dropout", "1.5"], "--dropout"),
    (["train", "--dropout", "nan"], "--dropout"),
    (["train", "--lr", "-1"], "--lr"),
    (["train", "--lr", "inf"], "--lr"),
    (["train", "--optimizer", "bogus"], "--optimizer"),
    (["train", "--schedule", "bogus"], "--schedule"),
    (["train", "--hidden", "0"], "--hidden"),
    (["train", "--batch-size", "-5"], "--batch-size"),
    (["train", "--threads", "0"], "--threads"),
    (["train", "--no-such-option"], "unrecognized"),
    (["predict", "m.safetensors", "--count", "0"], "--count"),
    (["evaluate"], "model"),
], ids=["nothing", "unknown-command", "epochs-0", "epochs-word", "dropout-1.5", "dropout-nan",
        "lr-negative", "lr-inf", "optimizer", "schedule", "hidden-0", "batch-negative",
        "threads-0", "unknown-option", "count-0", "evaluate-no-model"])
def test_bad_arguments(argv, match):
    err = assert_usage_error(argv, match)
    assert "usage: fastnn" in err


def test_evaluate_missing_file(tmp_path):
    assert_usage_error(["evaluate", tmp_path / "missing.safetensors"], "missing.safetensors")


def test_evaluate_a_folder(tmp_path):
    assert_usage_error(["evaluate", tmp_path])


@pytest.mark.parametrize("content", [
    b"",
    b"not a model at all",
    b"\x80\x04\x95" + b"\0" * 40,
    (16).to_bytes(8, "little") + b'{"a": 1}        ',
    (100_000).to_bytes(8, "little") + b"[" * 100_000,
], ids=["empty", "text", "pickle-like", "no-fastnn-metadata", "nested-json"])
def test_evaluate_corrupt_file(tmp_path, content):
    (tmp_path / "bad.safetensors").write_bytes(content)
    assert_usage_error(["evaluate", tmp_path / "bad.safetensors"], "cannot load")


def test_evaluate_truncated_model(digits_model, tmp_path):
    path, _ = digits_model
    raw = path.read_bytes()
    (tmp_path / "cut.safetensors").write_bytes(raw[:len(raw) // 2])
    assert_usage_error(["evaluate", tmp_path / "cut.safetensors"], "cannot load")


def test_evaluate_a_checkpoint_file(tmp_path):
    from fastnn import losses, nn, optim

    model = nn.Sequential(nn.Linear(64, 10))
    trainer = fastnn.Trainer(model, losses.SoftmaxCrossEntropy(), optim.SGD(model, 0.1),
                             progress=False)
    trainer.save_checkpoint(tmp_path / "ck.safetensors")
    assert_usage_error(["evaluate", tmp_path / "ck.safetensors"], "checkpoint")


@pytest.mark.parametrize("array", [
    np.zeros((5, 10)),
    np.zeros((5, 9, 9)),
    np.zeros(64),
    np.full((2, 64), np.nan),
    np.array(3.0),
    np.array([["a"] * 64] * 2),
    np.array([{"x": 1}] * 2, dtype=object),
    np.zeros((0, 64)),
], ids=["width-10", "9x9", "one-flat-row", "nan", "scalar", "strings", "objects", "empty"])
def test_predict_bad_input_file(digits_model, tmp_path, array):
    path, _ = digits_model
    np.save(tmp_path / "x.npy", array, allow_pickle=array.dtype == object)
    assert_usage_error(["predict", path, "--input", tmp_path / "x.npy"])


def test_predict_input_that_is_not_npy(digits_model, tmp_path):
    path, _ = digits_model
    (tmp_path / "x.npy").write_text("1,2,3\n")
    assert_usage_error(["predict", path, "--input", tmp_path / "x.npy"], "cannot read")
    assert_usage_error(["predict", path, "--input", tmp_path / "missing.npy"], "cannot read")


def test_predict_wrong_width_names_the_widths(digits_model, tmp_path):
    path, _ = digits_model
    np.save(tmp_path / "x.npy", np.zeros((3, 10)))
    assert_usage_error(["predict", path, "--input", tmp_path / "x.npy"], r"64.*10")


def test_data_in_an_empty_folder(tmp_path):
    (tmp_path / "empty").mkdir()
    assert_usage_error(["train", "--data", tmp_path / "empty", "--epochs", 1, "--out", "",
                        "--plot", ""], "MNIST")


def test_data_with_corrupt_mnist_files(tmp_path):
    folder = tmp_path / "mnist"
    folder.mkdir()
    for stem in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
                 "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"):
        (folder / stem).write_bytes(b"\0\0\x08\x01\0\0\0\x09abc")
    assert_usage_error(["train", "--data", folder, "--epochs", 1, "--out", "", "--plot", ""],
                       "MNIST")


def test_usage_errors_show_the_usage_line(tmp_path):
    """UsageError's docstring: a bad argument is "reported with the usage line"."""
    err = assert_usage_error(["evaluate", tmp_path / "missing.safetensors"])
    assert "usage: fastnn" in err


@pytest.mark.parametrize("kind", ["affine", "elastic"])
def test_train_with_augmentation(tmp_path, capsys, kind):
    pytest.importorskip("sklearn")
    assert main(["train", "--epochs", "2", "--hidden", "32", "--quiet", "--augment", kind,
                 "--out", "", "--plot", ""]) == 0
    out = capsys.readouterr().out
    assert f"{kind} augmentation" in out
    assert float(out.rsplit("test accuracy", 1)[1].split(",")[0]) > 0.1


def test_bad_augment_choice_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["train", "--augment", "sideways"])
    assert exc.value.code == 2
    assert "usage" in capsys.readouterr().err


# ---------------------------------------------------------------- image models (--model)


@pytest.fixture(scope="module")
def image_models(tmp_path_factory):
    """--model cnn and --model resnet trained once on the digits: {kind: (path, stdout)}."""
    pytest.importorskip("sklearn")
    folder = tmp_path_factory.mktemp("cnn")
    trained = {}
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("FASTNN_MNIST_DIR", raising=False)
        mp.chdir(folder)
        for kind in ("cnn", "resnet"):
            path = folder / f"{kind}.safetensors"
            code, out, err = run(["train", "--model", kind, "--epochs", 3, "--out", path,
                                  "--plot", ""])
            assert code == 0, err
            trained[kind] = path, out
    return trained


@pytest.mark.parametrize("kind", ["cnn", "resnet"])
def test_train_image_model_on_digits(image_models, kind):
    path, out = image_models[kind]
    assert f"training {kind} (" in out and "8x8 images, 10 classes" in out
    assert "1437 training / 360 test" in out and "training samples/s" in out
    assert re.findall(r"epoch +(\d)  loss", out) == ["1", "2", "3"]  # no terminal: lines
    # 36 Adam steps: an MLP of the same budget reaches 0.2-0.4; both image models pass 0.9
    assert accuracy_in(out) > 0.8
    model, meta = fastnn.load(path, with_metadata=True)
    assert meta["model"] == kind and meta["input_shape"] == [1, 8, 8]
    assert meta["n_features"] == 64 and meta["input_scale"] == 16.0 and meta["n_classes"] == 10
    layers = {type(layer).__name__ for layer in model}
    assert "Conv2d" in layers and "BatchNorm2d" in layers
    assert ("Residual" in layers) == (kind == "resnet")
    assert model.forward(np.zeros((2, 1, 8, 8), np.float32)).shape == (2, 10)


def test_cnn_architecture(image_models):
    model = fastnn.load(image_models["cnn"][0])
    assert [type(layer).__name__ for layer in model] == [
        "Conv2d", "BatchNorm2d", "ReLU", "MaxPool2d", "Conv2d", "BatchNorm2d", "ReLU",
        "MaxPool2d", "Flatten", "Linear", "ReLU", "Linear"]
    assert [model[0].out_channels, model[4].out_channels] == [32, 64]
    assert model[9].in_features == 64 * 2 * 2 and model[9].out_features == 128


def test_resnet_architecture(image_models):
    model = fastnn.load(image_models["resnet"][0])
    blocks = [layer for layer in model if isinstance(layer, fastnn.nn.Residual)]
    assert len(blocks) == 3 and model[0].out_channels == 16
    assert [b.block[0].out_channels for b in blocks] == [16, 32, 64]
    assert [b.block[0].stride for b in blocks] == [(1, 1), (2, 2), (2, 2)]
    assert blocks[0].shortcut is None
    assert all(b.shortcut[0].kernel_size == (1, 1) for b in blocks[1:])
    assert type(model[-2]).__name__ == "GlobalAvgPool2d" and model[-1].in_features == 64


@pytest.mark.parametrize("kind", ["cnn", "resnet"])
def test_evaluate_image_model_matches_training(image_models, kind):
    path, out = image_models[kind]
    code, printed, err = run(["evaluate", path])
    assert code == 0, err
    assert "360 samples" in printed and accuracy_in(printed) == accuracy_in(out)


@pytest.mark.parametrize("shape", [(64,), (8, 8), (1, 8, 8)], ids=["flat", "8x8", "1x8x8"])
def test_predict_image_model_input_shapes(image_models, tmp_path, capsys, shape):
    path, out = image_models["cnn"]
    scale, x, y = digits_test_split()
    raw = np.rint(x * scale).astype(np.uint8).reshape(len(x), *shape)
    np.save(tmp_path / "x.npy", raw)
    assert main(["predict", str(path), "--input", str(tmp_path / "x.npy")]) == 0
    labels = np.array([int(v) for v in capsys.readouterr().out.split()])
    expected = fastnn.load(path).forward(x.reshape(-1, 1, 8, 8)).argmax(axis=1)
    assert labels.tolist() == expected.tolist()
    assert np.mean(labels == y) == pytest.approx(accuracy_in(out), abs=1e-4)


def test_predict_image_model_default_samples(image_models, capsys):
    path, _ = image_models["resnet"]
    assert main(["predict", str(path), "--count", "4"]) == 0
    labels = [int(v) for v in capsys.readouterr().out.split()]
    _, x, _ = digits_test_split()
    expected = fastnn.load(path).forward(x[:4].reshape(-1, 1, 8, 8)).argmax(axis=1)
    assert labels == expected.tolist()


@pytest.mark.parametrize("shape", [(3, 10), (3, 2, 32), (3, 9, 9), (3, 3, 8, 8),
                                   (3, 1, 8, 9), (3, 64, 1)],
                         ids=["width-10", "2x32", "9x9", "3-channels", "8x9", "64x1"])
def test_predict_image_model_bad_shape(image_models, tmp_path, shape):
    path, _ = image_models["cnn"]
    np.save(tmp_path / "x.npy", np.zeros(shape, np.uint8))
    shown = re.escape(str(shape[1:]))
    assert_usage_error(["predict", path, "--input", tmp_path / "x.npy"],
                       rf"expects images of shape \(1, 8, 8\), \(8, 8\) or 64 flat values "
                       rf"per sample, got shape {shown}")


def test_evaluate_image_model_on_other_data(image_models):
    """A digits CNN on MNIST: the sizes differ, a usage error (no traceback)."""
    path, _ = image_models["cnn"]
    if not (MNIST_DIR / "t10k-labels-idx1-ubyte.gz").exists():
        pytest.skip("MNIST folder not found")
    assert_usage_error(["evaluate", path, "--data", MNIST_DIR], r"expects 64 features")


@pytest.mark.parametrize("kind", ["affine", "elastic"])
def test_train_cnn_with_augmentation(tmp_path, kind):
    pytest.importorskip("sklearn")
    code, out, err = run(["train", "--model", "cnn", "--epochs", 3, "--quiet", "--augment",
                          kind, "--out", "", "--plot", ""])
    assert code == 0, err
    assert "training cnn (" in out and f"{kind} augmentation" in out
    assert accuracy_in(out) > 0.2  # chance is 0.1; the distortions are strong on 8x8 images


def test_train_cnn_with_dropout_and_plot(tmp_path):
    pytest.importorskip("sklearn")
    pytest.importorskip("matplotlib")
    plot = tmp_path / "curves.png"
    code, out, err = run(["train", "--model", "cnn", "--epochs", 1, "--dropout", 0.3,
                          "--quiet", "--out", tmp_path / "m.safetensors", "--plot", plot])
    assert code == 0, err
    assert "dropout 0.3" in out and plot.is_file()
    assert "Dropout" in [type(layer).__name__ for layer in fastnn.load(tmp_path /
                                                                          "m.safetensors")]


def test_train_help_lists_the_models():
    code, out, err = run(["train", "--help"])
    assert code == 0, err
    assert "--model {mlp,cnn,resnet}" in out
    for text in ("mlp ", "cnn ", "resnet ", "ResNet-8", "conv3x3", "maxpool2",
                 "normalize with each rank's statistics"):
        assert text in out, text
    code, out, _ = run(["--help"])
    assert code == 0 and "CNN" in out and "ResNet" in out


@pytest.mark.parametrize("argv, match", [
    (["--model", "cnn", "--hidden", "32"], "--hidden"),
    (["--model", "resnet", "--activation", "tanh"], "--activation"),
    (["--model", "cnn", "--no-batch-norm"], "--no-batch-norm"),
    (["--model", "cnn", "--batch-norm"], "--batch-norm"),
    (["--model", "resnet", "--dropout", "0.2"], "--dropout"),
    (["--model", "cnn", "--sync-batch-norm"], "each rank's statistics"),
    (["--model", "vgg"], "--model"),
], ids=["cnn-hidden", "resnet-activation", "cnn-no-batch-norm", "cnn-batch-norm",
        "resnet-dropout", "cnn-sync-batch-norm", "unknown-model"])
def test_mlp_options_with_an_image_model(argv, match):
    assert_usage_error(["train", *argv, "--epochs", 1, "--out", "", "--plot", ""], match)


@needs_mnist
def test_train_cnn_on_mnist(tmp_path):
    path = tmp_path / "cnn.safetensors"
    code, out, err = run(["train", "--model", "cnn", "--data", MNIST_DIR, "--limit", 3000,
                          "--epochs", 2, "--quiet", "--out", path, "--plot", ""])
    assert code == 0, err
    assert "28x28 images" in out and "3000 training / 10000 test" in out
    assert accuracy_in(out) > 0.85  # 0.91 with these settings
    model, meta = fastnn.load(path, with_metadata=True)
    assert meta["input_shape"] == [1, 28, 28] and meta["input_scale"] == 255.0
    assert model[9].in_features == 64 * 7 * 7


def test_train_cnn_under_mpiexec(tmp_path):
    """`mpiexec -n 2 python -m fastnn train --model cnn`: data parallel over 2 ranks (each
    normalizing with its own batch statistics), rank 0 prints and saves."""
    pytest.importorskip("sklearn")
    pytest.importorskip("mpi4py")
    beside = Path(sys.executable).parent / "mpiexec"
    mpiexec = str(beside) if beside.exists() else shutil.which("mpiexec")
    if mpiexec is None:
        pytest.skip("no mpiexec (pip install mpich)")
    env = {k: v for k, v in os.environ.items()
           if k not in ("FASTNN_NUM_THREADS", "OMP_NUM_THREADS", "FASTNN_MNIST_DIR")}
    root = str(Path(fastnn.__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [root, env.get("PYTHONPATH")]))
    path = tmp_path / "m.safetensors"
    proc = subprocess.run([mpiexec, "-n", "2", sys.executable, "-m", "fastnn", "train",
                           "--model", "cnn", "--limit", "600", "--epochs", "2", "--augment",
                           "affine", "--out", str(path), "--plot", ""],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "2 ranks" in out and out.count("result: test accuracy") == 1
    code, printed, err = run(["evaluate", path])
    assert code == 0, err
    assert accuracy_in(printed) == accuracy_in(out)


# ---------------------------------------------------------------- predict: scaling, output


def _write(tmp_path, name, array):
    np.save(tmp_path / name, array)
    return tmp_path / name


def predict_run(argv):
    """(labels printed, stderr) of a successful `fastnn predict`."""
    code, out, err = run(["predict", *argv])
    assert code == 0, err
    return [int(v) for v in out.split()], err


def test_predict_scales_by_dtype_and_range(digits_model, tmp_path):
    """uint8 raw pixels, the same as float raw pixels and as floats in [0, 1]: the same
    labels, the model's on x in [0, 1]; only the float raw pixels get a note."""
    path, _ = digits_model
    scale, x, _ = digits_test_split()
    expected = fastnn.load(path).forward(x).argmax(axis=1).tolist()
    raw = np.rint(x * scale)
    for array, note in ((raw.astype(np.uint8), False), (raw.astype(np.int64), False),
                        (raw, True), (x, False), (x.astype(np.float64), False)):
        labels, err = predict_run([path, "--input", _write(tmp_path, "x.npy", array)])
        assert labels == expected, array.dtype
        assert ("note:" in err and "divided by 16" in err and "--scale never" in err) == note


def test_predict_scale_always_and_never(digits_model, tmp_path):
    path, _ = digits_model
    scale, x, _ = digits_test_split()
    model = fastnn.load(path)
    raw = np.rint(x * scale)
    labels, err = predict_run([path, "--input", _write(tmp_path, "x.npy", raw), "--scale",
                               "never"])
    assert labels == model.forward(raw.astype(np.float32)).argmax(axis=1).tolist()
    assert "note" not in err
    labels, _ = predict_run([path, "--input", _write(tmp_path, "x.npy", x), "--scale",
                             "always"])
    assert labels == model.forward(x / np.float32(16)).argmax(axis=1).tolist()


def test_predict_help_says_how_input_is_scaled():
    code, out, _ = run(["predict", "--help"])
    assert code == 0
    flat = " ".join(out.split())
    for text in ("--scale {auto,always,never}", "integer arrays", "float arrays in [0, 1]",
                 "--proba", "--output FILE", ".csv"):
        assert text in flat, text
    code, out, _ = run(["train", "--help"])
    assert "--quiet" in out and "per-epoch output" in " ".join(out.split())


def _softmax64(scores):
    scores = scores.astype(np.float64)
    e = np.exp(scores - scores.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


@pytest.mark.parametrize("proba", [False, True], ids=["labels", "proba"])
def test_predict_writes_npy_and_csv(digits_model, tmp_path, proba):
    path, _ = digits_model
    _, x, _ = digits_test_split()
    model = fastnn.load(path)
    flag = ["--proba"] if proba else []
    code, out, err = run(["predict", path, "--count", 7, *flag, "--output",
                          tmp_path / "p.npy"])
    assert code == 0, err
    assert f"wrote 7 {'rows of class probabilities' if proba else 'labels'}" in out
    saved = np.load(tmp_path / "p.npy")
    if proba:
        assert saved.shape == (7, 10) and saved.dtype == np.float32
        np.testing.assert_allclose(saved, _softmax64(model.forward(x[:7])), rtol=1e-5,
                                   atol=1e-7)
    else:
        assert saved.shape == (7,) and saved.dtype.kind == "i"
        assert saved.tolist() == model.forward(x[:7]).argmax(axis=1).tolist()
    code, _, err = run(["predict", path, "--count", 7, *flag, "--output", tmp_path / "p.CSV"])
    assert code == 0, err
    lines = (tmp_path / "p.CSV").read_text().splitlines()
    assert lines[0] == (",".join(map(str, range(10))) if proba else "label")
    table = np.loadtxt(tmp_path / "p.CSV", delimiter=",", skiprows=1, ndmin=2)
    np.testing.assert_array_equal(table.astype(saved.dtype).reshape(saved.shape), saved)


def test_predict_proba_printed(digits_model):
    path, _ = digits_model
    _, x, _ = digits_test_split()
    code, out, err = run(["predict", path, "--count", 3, "--proba"])
    assert code == 0, err
    rows = np.array([[float(v) for v in line.split()] for line in out.splitlines()])
    assert rows.shape == (3, 10)
    np.testing.assert_allclose(rows, _softmax64(fastnn.load(path).forward(x[:3])), atol=1e-6)


def test_predict_bad_output(digits_model, tmp_path):
    path, _ = digits_model
    assert_usage_error(["predict", path, "--output", tmp_path / "p.txt"], r"\.npy or \.csv")
    assert_usage_error(["predict", tmp_path / "missing.safetensors", "--output",
                        tmp_path / "p.json"], "--output")  # checked before the model loads
    assert_usage_error(["predict", path, "--output", tmp_path / "no" / "p.npy"],
                       "cannot write")


# ---------------------------------------------------------------- validation split


def test_plateau_steers_on_a_held_out_validation_split(tmp_path, monkeypatch):
    """--schedule plateau holds out 10% of the training data; the schedule gets its
    loss each epoch (printed as val_loss), never the test loss."""
    pytest.importorskip("sklearn")
    seen = []
    step = fastnn.optim.ReduceOnPlateau.step
    monkeypatch.setattr(fastnn.optim.ReduceOnPlateau, "step",
                        lambda self, value: seen.append(value) or step(self, value))
    monkeypatch.chdir(tmp_path)
    code, out, err = run(["train", "--schedule", "plateau", "--epochs", 3, "--hidden", 16,
                          "--out", "", "--plot", ""])
    assert code == 0, err
    assert "1293 training / 144 validation" in out and "/ 360 test samples" in out
    printed = [float(v) for v in re.findall(r"val_loss (\d+\.\d+)", out)]
    assert len(printed) == len(seen) == 3
    np.testing.assert_allclose(seen, printed, atol=5e-5)
    test_loss = float(re.search(r"test loss (\d+\.\d+)", out)[1])
    assert all(abs(v - test_loss) > 1e-4 for v in seen)


def test_validation_split_is_a_held_out_part_of_the_training_data():
    from fastnn.__main__ import hold_out

    x = np.arange(40, dtype=np.float32).reshape(20, 2)
    y = np.arange(20)
    (xt, yt), (xv, yv) = hold_out(x, y, 0.25, seed=1)
    assert len(yv) == 5 and len(yt) == 15
    assert sorted([*yt, *yv]) == list(range(20))  # a partition
    assert list(yt) == sorted(yt) and list(yv) == sorted(yv)  # original order
    np.testing.assert_array_equal(xv, x[yv])
    np.testing.assert_array_equal(xt, x[yt])
    (_, yt2), _ = hold_out(x, y, 0.25, seed=1)
    np.testing.assert_array_equal(yt2, yt)


def test_no_validation_by_default_and_on_request(tmp_path, monkeypatch):
    pytest.importorskip("sklearn")
    monkeypatch.chdir(tmp_path)
    code, out, err = run(["train", "--epochs", 1, "--hidden", 8, "--out", "", "--plot", ""])
    assert code == 0, err
    assert "1437 training / 360 test" in out and "val_loss" not in out
    code, out, err = run(["train", "--epochs", 1, "--hidden", 8, "--val-split", 0.2,
                          "--out", "", "--plot", ""])
    assert code == 0, err
    assert "1150 training / 287 validation" in out and "val_loss" in out
    code, out, err = run(["train", "--epochs", 1, "--hidden", 8, "--schedule", "plateau",
                          "--val-split", 0, "--out", "", "--plot", ""])
    assert code == 0, err
    assert "1437 training / 360 test" in out and "val_loss" not in out


@pytest.mark.parametrize("argv, match", [
    (["--val-split", "1"], "--val-split"),
    (["--val-split", "-0.1"], "--val-split"),
    (["--val-split", "0.1", "--limit", "4"], "leaves 0 of 4"),
], ids=["one", "negative", "too-few-samples"])
def test_bad_validation_split(argv, match):
    pytest.importorskip("sklearn")
    assert_usage_error(["train", *argv, "--epochs", 1, "--out", "", "--plot", ""], match)


def test_plot_labels_held_out_curves_as_validation(tmp_path, monkeypatch):
    pytest.importorskip("sklearn")
    pytest.importorskip("matplotlib")
    labels = []
    plot = fastnn.History.plot

    def record(history, path):
        labels.extend(k for k in history if k.startswith("val_"))
        return plot(history, path)

    monkeypatch.setattr(fastnn.History, "plot", record)
    code, out, err = run(["train", "--epochs", 2, "--hidden", 8, "--schedule", "plateau",
                          "--out", "", "--plot", tmp_path / "c.png"])
    assert code == 0, err
    assert "training and validation curves" in out and (tmp_path / "c.png").is_file()
    assert labels == ["val_loss", "val_accuracy"]


# ---------------------------------------------------------------- Ctrl-C


@pytest.fixture
def interrupt_after(monkeypatch):
    """interrupt_after(n): the n-th training step raises KeyboardInterrupt, as Ctrl-C
    does; returns the list the interrupted trainers are put in."""
    trainers = []

    def arm(n):
        step = fastnn.Trainer._step
        calls = []

        def stepped(self, *args, **kwargs):
            calls.append(1)
            if len(calls) == n:
                trainers.append(self)
                raise KeyboardInterrupt
            return step(self, *args, **kwargs)

        monkeypatch.setattr(fastnn.Trainer, "_step", stepped)
        return trainers

    return arm


def test_ctrl_c_saves_what_was_trained(tmp_path, interrupt_after):
    pytest.importorskip("sklearn")
    trainers = interrupt_after(15)  # 12 steps per epoch: during epoch 2
    path = tmp_path / "m.safetensors"
    code, out, err = run(["train", "--epochs", 5, "--hidden", 16, "--quiet", "--out", path,
                          "--plot", tmp_path / "c.png"])
    assert code == 130
    assert "Traceback" not in err
    assert "interrupted during epoch 2 (1 complete)" in err and str(path) in err
    assert "result:" not in out and not (tmp_path / "c.png").exists()
    saved, meta = fastnn.load(path, with_metadata=True)
    assert meta["n_features"] == 64 and meta["input_scale"] == 16.0
    trained = trainers[0].model.state_dict()
    for k, v in saved.state_dict().items():
        np.testing.assert_array_equal(v, trained[k])
    initial = fastnn.nn.mlp(64, 10, [16], "relu", True, 0.0, 0)
    assert not np.array_equal(saved[0].weight, initial[0].weight)  # 14 steps were taken


def test_ctrl_c_without_out(tmp_path, interrupt_after, monkeypatch):
    pytest.importorskip("sklearn")
    monkeypatch.chdir(tmp_path)
    interrupt_after(3)
    code, _, err = run(["train", "--epochs", 2, "--hidden", 8, "--quiet", "--out", "",
                        "--plot", ""])
    assert code == 130 and "not saved (--out '')" in err
    assert list(tmp_path.iterdir()) == []


@needs_mnist
def test_readme_makes_samples_for_predict(tmp_path):
    """The README's one-liner writes samples.npy from the MNIST test set, which the
    README's `fastnn predict ... --input samples.npy` then classifies."""
    readme = Path(__file__).resolve().parents[1] / "README.md"
    if not readme.is_file():
        pytest.skip("the tests run outside a checkout: no README.md beside them")
    lines = [line for line in readme.read_text().splitlines()
             if line.startswith("python -c") and "samples.npy" in line]
    assert len(lines) == 1
    command = lines[0].split("  #")[0].replace("../shared/data/mnist", str(MNIST_DIR))
    command = command.replace("python -c", f"{sys.executable} -c", 1)
    proc = subprocess.run(command, shell=True, cwd=tmp_path, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    samples = np.load(tmp_path / "samples.npy")
    assert samples.dtype == np.uint8 and samples.shape[1:] == (28, 28)
    path = tmp_path / "m.safetensors"
    code, _, err = run(["train", "--data", MNIST_DIR, "--limit", 2000, "--epochs", 1,
                        "--hidden", 32, "--quiet", "--out", path, "--plot", ""])
    assert code == 0, err
    labels, err = predict_run([path, "--input", tmp_path / "samples.npy"])
    assert len(labels) == len(samples) and "note" not in err
    (_, _), (_, y) = fastnn.datasets.load_mnist(MNIST_DIR)
    assert np.mean(np.array(labels) == y[:len(labels)]) >= 0.6
