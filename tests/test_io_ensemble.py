"""fastnn.save / fastnn.load of an Ensemble: MLP and CNN members round trip to
bitwise-identical probabilities, the file is plain safetensors, and bad or hostile
files are refused with FormatError."""

import json
import struct

import numpy as np
import pytest
from _ensemble_factories import IMAGE_SHAPE, N_CLASSES, N_FEATURES, small_classifier, small_cnn

import fastnn
from fastnn import losses, nn
from fastnn.ensemble import Ensemble
from fastnn.io import FormatError


def hinge_classifier(seed):
    model = nn.mlp(N_FEATURES, N_CLASSES, [8], seed=seed)
    return fastnn.Trainer(model, losses.MulticlassHinge(margin=0.5),
                          fastnn.optim.SGD(model, 0.05), progress=False)


def _data(shape, n_classes, n=120, seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, *shape)).astype(np.float32), rng.integers(0, n_classes, n)


@pytest.fixture(scope="module")
def mlp_ensemble():
    X, y = _data((N_FEATURES,), N_CLASSES)
    return Ensemble(small_classifier, n=3, seed=7).fit(X, y, epochs=2, batch_size=32), X


@pytest.fixture(scope="module")
def cnn_ensemble():
    X, y = _data(IMAGE_SHAPE, 3)
    return Ensemble(small_cnn, n=2, seed=3).fit(X, y, epochs=2, batch_size=16), X


@pytest.mark.parametrize("which", ["mlp_ensemble", "cnn_ensemble"])
def test_round_trip_is_bitwise(request, tmp_path, which):
    ensemble, X = request.getfixturevalue(which)
    path = tmp_path / "ens.safetensors"
    fastnn.save(ensemble, path)
    loaded = fastnn.load(path)
    assert isinstance(loaded, Ensemble) and loaded.n == ensemble.n
    assert loaded.seeds == ensemble.seeds
    np.testing.assert_array_equal(loaded.predict_proba(X), ensemble.predict_proba(X))
    np.testing.assert_array_equal(loaded.predict(X), ensemble.predict(X))
    for mine, theirs in zip(loaded.members, ensemble.members):
        assert fastnn.io.architecture(mine.model) == fastnn.io.architecture(theirs.model)
        assert mine.optimizer is None and type(mine.loss) is type(theirs.loss)
        saved, original = mine.model.state_dict(), theirs.model.state_dict()
        assert saved.keys() == original.keys()
        for k in saved:  # BatchNorm running statistics included
            np.testing.assert_array_equal(saved[k], original[k])


def test_metadata_and_hinge_loss_round_trip(tmp_path):
    X, y = _data((N_FEATURES,), N_CLASSES)
    ensemble = Ensemble(hinge_classifier, n=2).fit(X, y, epochs=1, batch_size=32)
    fastnn.save(ensemble, tmp_path / "e.safetensors", metadata={"classes": ["a", "b"]})
    loaded, meta = fastnn.load(tmp_path / "e.safetensors", with_metadata=True)
    assert meta == {"classes": ["a", "b"]}
    assert all(m.loss.margin == 0.5 for m in loaded.members)
    np.testing.assert_array_equal(loaded.predict_proba(X), ensemble.predict_proba(X))
    assert loaded.evaluate(X, y) == ensemble.evaluate(X, y)


def test_file_is_plain_safetensors_without_pickle(mlp_ensemble, tmp_path):
    ensemble, _ = mlp_ensemble
    path = tmp_path / "e.safetensors"
    fastnn.save(ensemble, path)
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + n])
    meta = header.pop("__metadata__")
    assert meta["kind"] == "ensemble" and len(json.loads(meta["members"])) == 3
    assert sorted({k.split(".")[1] for k in header}) == ["0", "1", "2"]
    assert b"\x80\x04\x95" not in raw[:8 + n]
    st = pytest.importorskip("safetensors.numpy")
    arrays = st.load_file(str(path))
    expected = ensemble.members[1].model.state_dict()
    for k, v in expected.items():
        np.testing.assert_array_equal(arrays[f"member.1.{k}"], v)


def test_loaded_ensemble_cannot_be_refitted(mlp_ensemble, tmp_path):
    ensemble, X = mlp_ensemble
    fastnn.save(ensemble, tmp_path / "e.safetensors")
    loaded = fastnn.load(tmp_path / "e.safetensors")
    with pytest.raises(TypeError, match="loaded from a file"):
        loaded.fit(X, np.zeros(len(X), np.intp), epochs=1)


def test_unfitted_ensemble_is_refused(tmp_path):
    with pytest.raises(RuntimeError, match="fit"):
        fastnn.save(Ensemble(small_classifier, n=2), tmp_path / "e.safetensors")
    assert not (tmp_path / "e.safetensors").exists()


def test_ensemble_file_is_not_a_checkpoint(mlp_ensemble, tmp_path):
    ensemble, _ = mlp_ensemble
    fastnn.save(ensemble, tmp_path / "e.safetensors")
    with pytest.raises(FormatError, match="ensemble"):
        ensemble.members[0].load_checkpoint(tmp_path / "e.safetensors")


def _rewrite(path, out, change_meta=None, change_arrays=None):
    """A copy of an ensemble file with its metadata or arrays changed."""
    with fastnn.io._open(path) as f:
        entries, meta, start = fastnn.io._read_header(f, path)
        arrays = fastnn.io._read_arrays(f, path, entries, start, list(entries))
    if change_meta:
        change_meta(meta)
    if change_arrays:
        change_arrays(arrays)
    fastnn.io._write(out, arrays, meta)
    return out


def _members(change):
    def edit(meta):
        members = json.loads(meta["members"])
        change(members)
        meta["members"] = json.dumps(members)
    return edit


@pytest.mark.parametrize("change_meta, change_arrays, match", [
    (lambda m: m.update(members="{}"), None, "list of 1"),
    (lambda m: m.update(members="[]"), None, "list of 1"),
    (lambda m: m.update(seeds="[1, 2]"), None, "seed"),
    (lambda m: m.update(seeds='[1, 2, "x"]'), None, "seed"),
    (_members(lambda ms: ms[0]["loss"].update(type="MSE")), None, "loss"),
    (_members(lambda ms: ms[0]["loss"].update(type="os.system")), None, "loss"),
    (_members(lambda ms: ms[0]["loss"]["config"].update(margin=1)), None, "loss"),
    (_members(lambda ms: ms[0].update(code="x")), None, "malformed member"),
    (_members(lambda ms: ms[1]["architecture"].update(type="Eval")), None, "unknown layer"),
    (_members(lambda ms: ms[2]["architecture"]["layers"][0]["config"].update(
        out_features=10**9)), None, "more parameters"),
    (None, lambda a: a.pop("member.2.0.bias"), "more parameters"),
    (None, lambda a: a.update({"member.2.0.bogus": a.pop("member.2.0.bias")}),
     "do not match"),
    (None, lambda a: a.update({"member.3.0.weight": np.ones(2, np.float32)}), "no member"),
    (None, lambda a: a.update({"member.0.0.weight": np.ones((40, 30), np.float32)}),
     "expected"),
], ids=["members-dict", "no-members", "seed-count", "seed-type", "loss-mse", "loss-name",
        "loss-config", "extra-key", "layer-type", "huge-layer", "missing-array",
        "renamed-array",
        "stray-array", "wrong-shape"])
def test_bad_ensemble_files(mlp_ensemble, tmp_path, change_meta, change_arrays, match):
    ensemble, _ = mlp_ensemble
    fastnn.save(ensemble, tmp_path / "e.safetensors")
    bad = _rewrite(tmp_path / "e.safetensors", tmp_path / "bad.safetensors", change_meta,
                   change_arrays)
    with pytest.raises(FormatError, match=match):
        fastnn.load(bad)


def smoothed_classifier(seed):
    model = nn.mlp(N_FEATURES, N_CLASSES, [8], seed=seed)
    return fastnn.Trainer(model, losses.SoftmaxCrossEntropy(label_smoothing=0.2),
                          fastnn.optim.SGD(model, 0.05), progress=False)


def test_label_smoothing_round_trips(tmp_path):
    X, y = _data((N_FEATURES,), N_CLASSES)
    ensemble = Ensemble(smoothed_classifier, n=2).fit(X, y, epochs=1, batch_size=32)
    fastnn.save(ensemble, tmp_path / "e.safetensors")
    loaded = fastnn.load(tmp_path / "e.safetensors")
    assert all(m.loss.label_smoothing == 0.2 for m in loaded.members)
    assert loaded.evaluate(X, y) == ensemble.evaluate(X, y)
