"""The `fastnn` command line (fastnn.__main__.main), run in-process: train, evaluate,
predict and config on scikit-learn's digits (and on MNIST when its files are here), and
bad arguments, which must end in a usage message and exit status 2, not a traceback."""

import contextlib
import io
import os
import re
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
    assert accuracy_in(out) > 0.85
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
