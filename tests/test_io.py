"""fastnn.io: model files (safetensors + JSON metadata): round trips of every saveable
layer, readability by an independent safetensors parser, hostile and corrupt files,
atomic writes, and models that cannot be saved."""

import fcntl
import json
import os
import pickle
import stat
import struct
import time
import tracemalloc

import numpy as np
import pytest

import fastnn
from fastnn import io, nn
from fastnn.io import FormatError

# ---------------------------------------------------------------- helpers

_ST_DTYPES = {"F32": "<f4", "F64": "<f8", "I64": "<i8", "U64": "<u8", "I32": "<i4",
              "U8": "u1"}


def parse_safetensors(raw):
    """A minimal, independent reader of the safetensors format: (arrays, metadata).
    Checks what the format requires: an 8-byte little-endian header length, a JSON
    object header, and data_offsets that tile the data section exactly."""
    assert len(raw) >= 8
    (n,) = struct.unpack("<Q", raw[:8])
    assert 8 + n <= len(raw)
    header = json.loads(raw[8:8 + n].decode("utf-8"))
    assert isinstance(header, dict)
    metadata = header.pop("__metadata__", {})
    data = raw[8 + n:]
    arrays, spans = {}, []
    for name, entry in header.items():
        dtype = np.dtype(_ST_DTYPES[entry["dtype"]])
        shape = tuple(entry["shape"])
        begin, end = entry["data_offsets"]
        assert end - begin == int(np.prod(shape)) * dtype.itemsize, name
        arrays[name] = np.frombuffer(data[begin:end], dtype).reshape(shape)
        spans.append((begin, end))
    spans.sort()
    position = 0
    for begin, end in spans:
        assert begin == position, "holes or overlaps between arrays"
        position = end
    assert position == len(data), "trailing bytes after the arrays"
    return arrays, metadata


def write_safetensors(path, arrays, metadata=None, extra_header=None):
    """Write a well-formed safetensors file (our own writer, for crafting inputs)."""
    header = {} if metadata is None else {"__metadata__": metadata}
    blobs, offset = [], 0
    names = {np.dtype(v): k for k, v in _ST_DTYPES.items()}
    for name, array in arrays.items():
        array = np.asarray(array)
        data = array.astype(array.dtype.newbyteorder("<")).tobytes()
        header[name] = {"dtype": names[array.dtype.newbyteorder("<")],
                        "shape": list(array.shape),
                        "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    header.update(extra_header or {})
    text = json.dumps(header).encode()
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text + b"".join(blobs))
    return path


def raw_file(path, header_bytes, data=b"", declared=None):
    """A file with the given header bytes and data, and a declared header length."""
    n = len(header_bytes) if declared is None else declared
    path.write_bytes(struct.pack("<Q", n) + header_bytes + data)
    return path


def small_model():
    return nn.Sequential(nn.Linear(4, 6, seed=0), nn.ReLU(), nn.Linear(6, 3, seed=1))


def trained_bn_model(model, x):
    """Run some train-mode batches so BatchNorm's running statistics move, and give
    every parameter a non-trivial value."""
    rng = np.random.default_rng(1)
    model.arena.data[:] = rng.uniform(-1, 1, model.arena.size)
    model.train()
    for i in range(3):
        model.forward(x[i::3] * (1 + i))
    model.eval()
    return model


def saved_parts(tmp_path, model=None):
    """(arrays, metadata) of a freshly saved small model, via our parser."""
    path = tmp_path / "m.safetensors"
    fastnn.save(small_model() if model is None else model, path)
    return parse_safetensors(path.read_bytes())


def refusal_peak(path, match):
    """Bytes traced at most while fastnn.load refuses path (FormatError matching match)."""
    tracemalloc.start()
    try:
        assert_format_error(path, match)
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def assert_format_error(path, match=None, loader=fastnn.load):
    start = time.perf_counter()
    with pytest.raises(FormatError, match=match) as info:
        loader(path)
    assert time.perf_counter() - start < 2.0
    assert len(str(info.value)) > 10
    return info.value


# ---------------------------------------------------------------- round trips

MODELS = {
    "relu-bn": lambda: nn.Sequential(nn.Linear(5, 8, seed=0), nn.BatchNorm1d(8), nn.ReLU(),
                                     nn.Linear(8, 3, seed=1)),
    "nobias-leaky": lambda: nn.Sequential(nn.Linear(5, 7, bias=False, seed=2),
                                          nn.LeakyReLU(0.2), nn.Linear(7, 3, seed=3)),
    "sigmoid-tanh": lambda: nn.Sequential(nn.Linear(5, 6, seed=4), nn.Sigmoid(),
                                          nn.Linear(6, 6, bias=False, seed=5), nn.Tanh(),
                                          nn.BatchNorm1d(6, momentum=0.3, eps=1e-3),
                                          nn.Linear(6, 2, seed=6)),
    "float64": lambda: nn.Sequential(nn.Linear(5, 4, dtype=np.float64, seed=7),
                                     nn.BatchNorm1d(4, dtype=np.float64),
                                     nn.LeakyReLU(0.05), nn.Linear(4, 2, dtype=np.float64,
                                                                   seed=8)),
    "unfused-leaky": lambda: nn.Sequential(nn.Linear(5, 6, seed=9), nn.BatchNorm1d(6),
                                           nn.LeakyReLU(0.3), nn.Linear(6, 2, seed=10)),
    "dropout": lambda: nn.Sequential(nn.Linear(5, 8, seed=0), nn.ReLU(),
                                     nn.Dropout(0.4, seed=123), nn.Linear(8, 3, seed=1)),
    "everything": lambda: nn.Sequential(
        nn.Linear(5, 8, seed=0), nn.BatchNorm1d(8), nn.ReLU(), nn.Dropout(0.25, seed=7),
        nn.Linear(8, 6, bias=False, seed=1), nn.LeakyReLU(0.1), nn.Linear(6, 6, seed=2),
        nn.Sigmoid(), nn.Linear(6, 4, seed=3), nn.Tanh(), nn.Linear(4, 3, seed=4)),
}


@pytest.mark.parametrize("name", list(MODELS))
def test_round_trip_gives_identical_outputs(tmp_path, name):
    model = MODELS[name]()
    dtype = next(model.parameters()).dtype
    x = np.random.default_rng(0).standard_normal((12, 5)).astype(dtype)
    trained_bn_model(model, x)
    path = tmp_path / "model.safetensors"
    fastnn.save(model, path)
    loaded = fastnn.load(path)
    assert type(loaded) is nn.Sequential and not loaded.training
    assert [type(m) for m in loaded.layers] == [type(m) for m in model.layers]
    for a, b in zip(model.layers, loaded.layers):
        assert repr(a) == repr(b)
    state, got = model.state_dict(), loaded.state_dict()
    assert list(state) == list(got)
    for key in state:
        assert state[key].dtype == got[key].dtype and state[key].shape == got[key].shape, key
        assert state[key].tobytes() == got[key].tobytes(), key
    assert model.forward(x).tobytes() == loaded.forward(x).tobytes()


def test_batchnorm_running_stats_survive(tmp_path):
    model = MODELS["relu-bn"]()
    x = np.random.default_rng(0).standard_normal((12, 5)).astype(np.float32)
    trained_bn_model(model, x)
    bn = model[1]
    assert not np.allclose(bn.running_mean, 0) and not np.allclose(bn.running_var, 1)
    fastnn.save(model, tmp_path / "m.safetensors")
    loaded = fastnn.load(tmp_path / "m.safetensors")
    np.testing.assert_array_equal(loaded[1].running_mean, bn.running_mean)
    np.testing.assert_array_equal(loaded[1].running_var, bn.running_var)
    assert (loaded[1].momentum, loaded[1].eps) == (bn.momentum, bn.eps)


def test_leaky_relu_slope_and_missing_bias_survive(tmp_path):
    model = MODELS["nobias-leaky"]()
    fastnn.save(model, tmp_path / "m.safetensors")
    loaded = fastnn.load(tmp_path / "m.safetensors")
    assert loaded[0].bias is None and "0.bias" not in loaded.state_dict()
    assert loaded[1].slope == 0.2
    x = -np.abs(np.random.default_rng(0).standard_normal((4, 5))).astype(np.float32)
    np.testing.assert_array_equal(loaded.forward(x), model.forward(x))


def test_a_single_layer_round_trips(tmp_path):
    layer = nn.Linear(3, 2, seed=4)
    fastnn.save(layer, tmp_path / "l.safetensors")
    loaded = fastnn.load(tmp_path / "l.safetensors")
    assert type(loaded) is nn.Linear
    np.testing.assert_array_equal(loaded.weight, layer.weight)
    np.testing.assert_array_equal(loaded.bias, layer.bias)


def test_nested_sequential_round_trips(tmp_path):
    model = nn.Sequential(nn.Sequential(nn.Linear(3, 4, seed=0), nn.Tanh()),
                          nn.Linear(4, 2, seed=1))
    fastnn.save(model, tmp_path / "n.safetensors")
    loaded = fastnn.load(tmp_path / "n.safetensors")
    x = np.random.default_rng(0).standard_normal((3, 3)).astype(np.float32)
    np.testing.assert_array_equal(loaded.forward(x), model.eval().forward(x))


def test_metadata_round_trip(tmp_path):
    meta = {"classes": ["cat", "dog"], "n_features": 4, "scale": 0.5,
            "nested": {"a": [1, 2, {"b": None}]}, "unicode": "h\u00e9llo"}
    fastnn.save(small_model(), tmp_path / "m.safetensors", metadata=meta)
    model, got = fastnn.load(tmp_path / "m.safetensors", with_metadata=True)
    assert got == meta
    assert isinstance(model, nn.Sequential)
    fastnn.save(small_model(), tmp_path / "plain.safetensors")
    assert fastnn.load(tmp_path / "plain.safetensors", with_metadata=True)[1] == {}


def test_file_is_plain_safetensors(tmp_path):
    model = MODELS["relu-bn"]()
    path = tmp_path / "m.safetensors"
    fastnn.save(model, path, metadata={"k": "v"})
    raw = path.read_bytes()
    assert struct.unpack("<Q", raw[:8])[0] % 8 == 0  # the data section is 8-byte aligned
    arrays, metadata = parse_safetensors(raw)
    state = model.state_dict()
    assert set(arrays) == {f"model.{k}" for k in state}
    for key, value in state.items():
        np.testing.assert_array_equal(arrays[f"model.{key}"], value)
        assert arrays[f"model.{key}"].dtype == value.dtype.newbyteorder("<")
    assert all(isinstance(v, str) for v in metadata.values())
    assert metadata["format"] == "fastnn" and metadata["kind"] == "model"
    assert metadata["format_version"] == str(io.FORMAT_VERSION)
    assert json.loads(metadata["architecture"])["type"] == "Sequential"
    assert json.loads(metadata["user"]) == {"k": "v"}
    assert b"pickle" not in raw and b"\x80\x04\x95" not in raw


def test_file_is_readable_by_the_safetensors_package(tmp_path):
    st = pytest.importorskip("safetensors.numpy")
    model = MODELS["everything"]()
    path = tmp_path / "m.safetensors"
    fastnn.save(model, path)
    arrays = st.load_file(str(path))
    for key, value in model.state_dict().items():
        np.testing.assert_array_equal(arrays[f"model.{key}"], value)


def test_checkpoint_file_is_plain_safetensors(tmp_path):
    from fastnn import losses, optim

    model = small_model()
    trainer = fastnn.Trainer(model, losses.SoftmaxCrossEntropy(), optim.Adam(model),
                             progress=False)
    x = np.random.default_rng(0).standard_normal((10, 4)).astype(np.float32)
    trainer.fit(x, np.arange(10) % 3, epochs=1, batch_size=5, seed=0)
    trainer.save_checkpoint(tmp_path / "ck.safetensors")
    arrays, metadata = parse_safetensors((tmp_path / "ck.safetensors").read_bytes())
    assert metadata["kind"] == "checkpoint"
    assert {k.split(".")[0] for k in arrays} == {"model", "optim"}
    assert any(k.endswith(".m") for k in arrays) and any(k.endswith(".v") for k in arrays)


# ---------------------------------------------------------------- hostile files


def test_truncated_files(tmp_path):
    fastnn.save(small_model(), tmp_path / "m.safetensors")
    raw = (tmp_path / "m.safetensors").read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    cases = {"empty": b"", "in-length": raw[:5], "in-header": raw[:8 + n // 2],
             "at-data": raw[:8 + n], "in-data": raw[:len(raw) - 5]}
    for name, content in cases.items():
        path = tmp_path / f"{name}.safetensors"
        path.write_bytes(content)
        assert_format_error(path)


@pytest.mark.parametrize("declared", [10**6, 2**60, 2**64 - 1])
def test_header_length_beyond_the_file(tmp_path, declared):
    fastnn.save(small_model(), tmp_path / "m.safetensors")
    raw = (tmp_path / "m.safetensors").read_bytes()
    path = tmp_path / "bad.safetensors"
    path.write_bytes(struct.pack("<Q", declared) + raw[8:])
    assert refusal_peak(path, "header") < 10 * 2**20


@pytest.mark.parametrize("header", [b"\xff\xfe\x00not json", b"{\"a\": ", b"[1, 2, 3]", b"42",
                                    b"null", b"\"text\""],
                         ids=["binary", "unterminated", "list", "number", "null", "string"])
def test_header_that_is_not_a_json_object(tmp_path, header):
    assert_format_error(raw_file(tmp_path / "bad.safetensors", header, b"\0" * 16))


def test_deeply_nested_json_header(tmp_path):
    """A 100 kB header of '[' must be a FormatError, not a RecursionError."""
    assert_format_error(raw_file(tmp_path / "bad.safetensors", b"[" * 100_000))


def test_deeply_nested_json_in_the_metadata(tmp_path):
    arrays, metadata = saved_parts(tmp_path)
    metadata["architecture"] = "[" * 100_000
    assert_format_error(write_safetensors(tmp_path / "bad.safetensors", arrays, metadata))


@pytest.mark.parametrize("protocol", range(pickle.HIGHEST_PROTOCOL + 1))
def test_a_pickle_is_not_loaded(tmp_path, protocol):
    payload = {"model.0.weight": np.ones((4, 6), np.float32), "run": os.system}
    path = tmp_path / "model.safetensors"
    path.write_bytes(pickle.dumps(payload, protocol=protocol))
    assert_format_error(path)


def test_huge_declared_shape_is_not_allocated(tmp_path):
    header = {"x": {"dtype": "F32", "shape": [10**12, 10**12], "data_offsets": [0, 16]}}
    path = raw_file(tmp_path / "huge.safetensors", json.dumps(header).encode(), b"\0" * 16)
    assert refusal_peak(path, "x") < 10 * 2**20


def _entry_mutation(tmp_path, mutate):
    arrays, metadata = saved_parts(tmp_path)
    path = write_safetensors(tmp_path / "bad.safetensors", arrays, metadata)
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + n])
    mutate(header, len(raw) - 8 - n)
    text = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(text)) + text + raw[8 + n:])
    return path


def _set(name, **fields):
    def mutate(header, data_size):
        for key, value in fields.items():
            header[name][key] = value(data_size) if callable(value) else value
    return mutate


W0 = "model.0.weight"  # (4, 6) float32: 96 bytes


@pytest.mark.parametrize("mutate, match", [
    (_set(W0, data_offsets=lambda size: [size - 8, size + 88]), "range"),
    (_set(W0, data_offsets=lambda size: [size + 8, size + 104]), "range"),
    (_set(W0, data_offsets=[-96, 0]), "range"),
    (_set(W0, data_offsets=[96, 0]), "range"),
    (_set(W0, data_offsets=[0, 96, 5]), W0),
    (_set(W0, data_offsets=[0.0, 96.0]), "range"),
    (_set(W0, data_offsets="0-96"), None),
    (_set(W0, shape=[4, 6, 1, 2]), "shape"),
    (_set(W0, shape=[-4, -6]), "shape"),
    (_set(W0, shape=[4.0, 6.0]), "shape"),
    (_set(W0, shape=24), W0),
    (_set(W0, dtype="F16"), W0),
    (_set(W0, dtype="BF16"), W0),
    (_set(W0, dtype="object"), W0),
    (_set(W0, dtype=["F32"]), W0),
    (lambda header, size: header.__setitem__(W0, 5), W0),
    (lambda header, size: header.__setitem__(W0, {}), W0),
], ids=["beyond-data", "after-data", "negative", "reversed", "three-offsets", "float-offsets",
        "string-offsets", "wrong-shape", "negative-shape", "float-shape", "scalar-shape",
        "f16", "bf16", "object-dtype", "list-dtype", "entry-not-object", "entry-empty"])
def test_bad_array_entries(tmp_path, mutate, match):
    assert_format_error(_entry_mutation(tmp_path, mutate), match)


def test_overlapping_arrays(tmp_path):
    def mutate(header, size):
        # model.2.weight is (6, 3): 72 bytes; make it start inside model.0.weight
        begin = header[W0]["data_offsets"][0] + 8
        header["model.2.weight"]["data_offsets"] = [begin, begin + 72]
    assert_format_error(_entry_mutation(tmp_path, mutate), "overlap")


def _meta_file(tmp_path, change, arrays_change=None):
    arrays, metadata = saved_parts(tmp_path)
    change(metadata)
    if arrays_change is not None:
        arrays_change(arrays)
    return write_safetensors(tmp_path / "bad.safetensors", arrays, metadata)


def _arch(edit):
    def change(metadata):
        arch = json.loads(metadata["architecture"])
        edit(arch)
        metadata["architecture"] = json.dumps(arch)
    return change


@pytest.mark.parametrize("change, match", [
    (_arch(lambda a: a["layers"][1].update(type="os.system")), "unknown layer type"),
    (_arch(lambda a: a["layers"][1].update(type="Module")), "unknown layer type"),
    (_arch(lambda a: a["layers"][1].update(type="Sequential")), "layer list"),
    (_arch(lambda a: a.update(type="builtins.eval")), "unknown layer type"),
    (_arch(lambda a: a["layers"][0]["config"].update(out_features=7)), "declares more parameters"),
    (_arch(lambda a: a["layers"][0]["config"].update(dtype="float64")), "declares more parameters"),
    (_arch(lambda a: a["layers"][0]["config"].update(bias=False)), "do not match"),
    (_arch(lambda a: a["layers"][0]["config"].update(in_features=-3)), "bad in_features"),
    (_arch(lambda a: a["layers"][0]["config"].update(dtype="int8")), "invalid"),
    (_arch(lambda a: a["layers"][0]["config"].update(evil="__import__('os')")), "invalid"),
    (_arch(lambda a: a["layers"][0].update(config={"x": [1, 2, 3]})), "bad arguments"),
    (_arch(lambda a: a["layers"][0].update(config=[4, 6])), "malformed layer arguments"),
    (_arch(lambda a: a["layers"].append({"type": "Linear", "config": {
        "in_features": 3, "out_features": 2}})), "declares more parameters"),
    (_arch(lambda a: a.update(layers="Linear")), "layer list"),
    (lambda m: m.update(architecture=json.dumps("Sequential")), "malformed"),
    (lambda m: m.update(architecture="{not json"), "metadata"),
    (lambda m: m.pop("architecture"), "malformed"),
    (lambda m: m.update(format_version="2"), "version"),
    (lambda m: m.update(format_version="1.0"), "version"),
    (lambda m: m.pop("format_version"), "version"),
    (lambda m: m.update(format="pytorch"), "not a fastnn"),
    (lambda m: m.clear(), "not a fastnn"),
    (lambda m: m.update(kind="checkpoint"), "checkpoint"),
    (lambda m: m.update(kind="script"), "script"),
    (lambda m: m.update(user="{"), "metadata"),
], ids=["os.system", "Module", "Sequential-without-layers", "top-level-eval", "wider",
        "dtype", "no-bias", "negative-width", "int-dtype", "unknown-argument", "list-argument",
        "config-not-dict", "extra-layer", "layers-not-list", "arch-not-dict", "arch-not-json",
        "no-arch", "version-2", "version-1.0", "no-version", "other-format", "no-metadata",
        "kind-checkpoint", "kind-script", "user-not-json"])
def test_bad_metadata(tmp_path, change, match):
    assert_format_error(_meta_file(tmp_path, change), match)


def test_deep_architecture_is_refused(tmp_path):
    arch = {"type": "Linear", "config": {"in_features": 4, "out_features": 6}}
    for _ in range(200):
        arch = {"type": "Sequential", "layers": [arch]}
    assert_format_error(_meta_file(tmp_path, lambda m: m.update(architecture=json.dumps(arch))),
                        "malformed")


def test_huge_layer_in_the_architecture_is_not_allocated(tmp_path):
    """The architecture declares a 10**9 x 10**9 Linear while the file holds a 4 x 6
    weight: the file is inconsistent (FormatError), and nothing that size is built."""
    change = _arch(lambda a: a["layers"][0]["config"].update(in_features=10**9,
                                                             out_features=10**9))
    assert_format_error(_meta_file(tmp_path, change))


def test_bad_metadata_values(tmp_path):
    arrays, _ = saved_parts(tmp_path)
    for metadata in ({"format": 1}, {"format": "fastnn", "format_version": 1},
                     {"format": ["fastnn"]}):
        path = write_safetensors(tmp_path / "bad.safetensors", arrays, metadata)
        assert_format_error(path)
    path = write_safetensors(tmp_path / "bad.safetensors", arrays,
                             extra_header={"__metadata__": ["fastnn"]})
    assert_format_error(path)


@pytest.mark.parametrize("arrays_change", [
    lambda a: a.pop("model.2.bias"),
    lambda a: a.update({"model.9.weight": np.zeros(3, np.float32)}),
    lambda a: a.update({"model.2.biases": a.pop("model.2.bias")}),
    lambda a: a.update({"0.weight": a.pop(W0)}),
    lambda a: a.update({W0: a[W0].astype(np.float64)}),
    lambda a: a.update({W0: a[W0].astype(np.int32)}),
    lambda a: a.update({W0: np.ascontiguousarray(a[W0].T)}),
    lambda a: a.clear(),
], ids=["missing", "extra", "renamed", "no-prefix", "float64", "int32", "transposed", "none"])
def test_missing_extra_and_mistyped_arrays(tmp_path, arrays_change):
    assert_format_error(_meta_file(tmp_path, lambda m: None, arrays_change))


def test_a_foreign_safetensors_file(tmp_path):
    path = write_safetensors(tmp_path / "foreign.safetensors",
                             {"embeddings.weight": np.ones((3, 2), np.float32)},
                             {"format": "pt"})
    assert_format_error(path, "not a fastnn")
    path = write_safetensors(tmp_path / "bare.safetensors",
                             {"w": np.ones((3, 2), np.float32)})
    assert_format_error(path, "not a fastnn")


def test_checkpoint_is_not_a_model_and_back(tmp_path):
    from fastnn import losses, optim

    model = small_model()
    trainer = fastnn.Trainer(model, losses.SoftmaxCrossEntropy(), optim.SGD(model, 0.1),
                             progress=False)
    trainer.save_checkpoint(tmp_path / "ck.safetensors")
    assert_format_error(tmp_path / "ck.safetensors", "checkpoint")
    fastnn.save(model, tmp_path / "m.safetensors")
    with pytest.raises(FormatError, match="model"):
        trainer.load_checkpoint(tmp_path / "m.safetensors")


def test_format_error_is_a_value_error():
    assert issubclass(FormatError, ValueError)


def test_a_failed_load_leaves_nothing_half_done(tmp_path):
    """load_checkpoint of a file whose arrays do not fit changes neither model nor
    optimizer."""
    from fastnn import losses, optim

    model = small_model()
    trainer = fastnn.Trainer(model, losses.SoftmaxCrossEntropy(), optim.SGD(model, 0.1),
                             progress=False)
    trainer.save_checkpoint(tmp_path / "ck.safetensors")
    raw = (tmp_path / "ck.safetensors").read_bytes()
    (tmp_path / "cut.safetensors").write_bytes(raw[:-4])
    before = model.state_dict()
    with pytest.raises(FormatError):
        trainer.load_checkpoint(tmp_path / "cut.safetensors")
    for key, value in model.state_dict().items():
        np.testing.assert_array_equal(value, before[key])
    assert trainer.epoch == 0


# ---------------------------------------------------------------- atomic writes


def _only(folder):
    return sorted(p.name for p in folder.iterdir())


def _outputs(model, path):
    """Outputs of the model saved at `path` and of `model`, on the same input."""
    x = np.random.default_rng(0).standard_normal((3, 4)).astype(np.float32)
    return fastnn.load(path).forward(x), model.eval().forward(x)


def test_failed_fsync_keeps_the_previous_file(tmp_path, monkeypatch):
    path = tmp_path / "m.safetensors"
    old = small_model()
    fastnn.save(old, path)
    before = path.read_bytes()

    def broken_fsync(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", broken_fsync)
    new = nn.Sequential(nn.Linear(4, 6, seed=50), nn.ReLU(), nn.Linear(6, 3, seed=51))
    with pytest.raises(OSError, match="No space"):
        fastnn.save(new, path)
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert _only(tmp_path) == ["m.safetensors"]
    got, expected = _outputs(old, path)
    np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize("error", [OSError(5, "Input/output error"), KeyboardInterrupt()],
                         ids=["oserror", "interrupt"])
def test_failed_write_keeps_the_previous_file(tmp_path, monkeypatch, error):
    path = tmp_path / "m.safetensors"
    fastnn.save(small_model(), path)
    before = path.read_bytes()
    real_fdopen = os.fdopen
    written = []

    class Failing:
        def __init__(self, f):
            self.f = f

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.f.close()

        def write(self, data):
            if written:  # the length went through; fail in the header or data
                raise error
            written.append(len(data))
            return self.f.write(data)

        def __getattr__(self, name):
            return getattr(self.f, name)

    monkeypatch.setattr(os, "fdopen", lambda fd, *a, **k: Failing(real_fdopen(fd, *a, **k)))
    with pytest.raises(type(error)):
        fastnn.save(MODELS["relu-bn"](), path)
    monkeypatch.undo()
    assert written == [8]
    assert path.read_bytes() == before
    assert _only(tmp_path) == ["m.safetensors"]


def test_failed_replace_leaves_no_temporary_file(tmp_path, monkeypatch):
    path = tmp_path / "m.safetensors"

    def broken_replace(src, dst):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(PermissionError):
        fastnn.save(small_model(), path)
    monkeypatch.undo()
    assert _only(tmp_path) == []


def test_save_replaces_an_existing_file(tmp_path):
    path = tmp_path / "m.safetensors"
    fastnn.save(small_model(), path)
    other = nn.Sequential(nn.Linear(2, 2, seed=3))
    fastnn.save(other, path)
    assert fastnn.load(path)[0].in_features == 2
    assert _only(tmp_path) == ["m.safetensors"]


def test_save_into_a_missing_folder(tmp_path):
    with pytest.raises(OSError):
        fastnn.save(small_model(), tmp_path / "nope" / "m.safetensors")
    assert _only(tmp_path) == []


# ---------------------------------------------------------------- unsupported models


class Scale(nn.Module):
    """A user-defined layer fastnn.save cannot describe."""

    def __init__(self, d):
        super().__init__()
        self.add_parameters(np.float32, scale=(np.ones(d), "weight"))

    def forward(self, x):
        return x * self.scale

    def backward(self, dout):
        return dout * self.scale


class MyLinear(nn.Linear):
    pass


@pytest.mark.parametrize("make", [
    lambda: Scale(3),
    lambda: nn.Sequential(nn.Linear(3, 3), Scale(3)),
    lambda: nn.Sequential(nn.Linear(3, 3), nn.Sequential(Scale(3))),
    lambda: MyLinear(3, 2),
    lambda: nn.Sequential(MyLinear(3, 2)),
    lambda: type("Linear", (nn.Linear,), {})(3, 2),  # same name, another class
], ids=["custom", "custom-in-sequential", "custom-nested", "subclass", "subclass-in-sequential",
        "impostor"])
def test_unsupported_models_are_a_type_error(tmp_path, make):
    with pytest.raises(TypeError, match="save"):
        fastnn.save(make(), tmp_path / "m.safetensors")
    assert _only(tmp_path) == []


def test_layers_table_is_fixed():
    assert set(io.LAYERS) == {"Linear", "Conv2d", "ReLU", "LeakyReLU", "Sigmoid", "Tanh",
                              "BatchNorm1d", "BatchNorm2d", "Dropout", "MaxPool2d",
                              "AvgPool2d", "GlobalAvgPool2d", "Flatten", "ELU", "GELU",
                              "SiLU"}
    assert all(issubclass(cls, nn.Module) for cls in io.LAYERS.values())


# ---------------------------------------------------------------- what save may write


def _temporaries(folder):
    return [p for p in os.listdir(folder) if p.startswith(".fastnn-")]


def test_metadata_over_the_header_limit_is_refused_before_writing(tmp_path, monkeypatch):
    path = tmp_path / "m.safetensors"
    fastnn.save(small_model(), path)
    before = path.read_bytes()
    monkeypatch.setattr(io, "MAX_HEADER_BYTES", 4096)  # (the real limit: 64 MiB of JSON)
    with pytest.raises(FormatError, match="MAX_HEADER_BYTES"):
        fastnn.save(small_model(), path, metadata={"notes": "x" * 5000})
    assert path.read_bytes() == before
    assert _only(tmp_path) == ["m.safetensors"]
    fastnn.save(small_model(), tmp_path / "small.safetensors", metadata={"notes": "x" * 100})
    assert fastnn.load(tmp_path / "small.safetensors", with_metadata=True)[1]["notes"]


def test_metadata_over_the_real_header_limit(tmp_path):
    path = tmp_path / "m.safetensors"
    fastnn.save(small_model(), path)
    before = path.read_bytes()
    with pytest.raises(FormatError, match="over the limit"):
        fastnn.save(small_model(), path, metadata={"blob": "x" * (io.MAX_HEADER_BYTES + 1)})
    assert path.read_bytes() == before and _only(tmp_path) == ["m.safetensors"]


def test_an_architecture_load_would_refuse_is_not_saved(tmp_path):
    path = tmp_path / "m.safetensors"
    fastnn.save(small_model(), path)
    before = path.read_bytes()
    deep = nn.Linear(2, 2, seed=0)
    for _ in range(io.MAX_DEPTH + 2):
        deep = nn.Sequential(deep)
    with pytest.raises(FormatError, match="load\\(\\) would refuse"):
        fastnn.save(deep, path)
    assert path.read_bytes() == before and _only(tmp_path) == ["m.safetensors"]
    shallow = nn.Linear(2, 2, seed=0)
    for _ in range(io.MAX_DEPTH - 1):
        shallow = nn.Sequential(shallow)
    fastnn.save(shallow, path)  # at the limit: saved and loaded
    assert io.architecture(fastnn.load(path)) == io.architecture(shallow)


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
def test_a_new_file_honours_the_umask(tmp_path, umask):
    old = os.umask(umask)
    try:
        fastnn.save(small_model(), tmp_path / "m.safetensors")
        with open(tmp_path / "plain", "w"):
            pass
    finally:
        os.umask(old)
    mode = stat.S_IMODE(os.stat(tmp_path / "m.safetensors").st_mode)
    assert mode == 0o666 & ~umask == stat.S_IMODE(os.stat(tmp_path / "plain").st_mode)


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o600, 0o444])
def test_saving_over_a_file_keeps_its_mode(tmp_path, mode):
    path = tmp_path / "m.safetensors"
    fastnn.save(small_model(), path)
    os.chmod(path, mode)
    fastnn.save(MODELS["relu-bn"](), path)
    assert stat.S_IMODE(os.stat(path).st_mode) == mode
    assert isinstance(fastnn.load(path)[1], nn.BatchNorm1d)


def test_saving_through_a_symlink_writes_its_target(tmp_path):
    (tmp_path / "runs").mkdir()
    target = tmp_path / "runs" / "model-v1.safetensors"
    link = tmp_path / "latest.safetensors"
    fastnn.save(small_model(), target)
    link.symlink_to(target)
    fastnn.save(MODELS["relu-bn"](), link)
    assert link.is_symlink() and os.readlink(link) == str(target)
    assert isinstance(fastnn.load(target)[1], nn.BatchNorm1d)
    # a dangling link: its target is created, as open(link, "w") would
    dangling = tmp_path / "next.safetensors"
    dangling.symlink_to(tmp_path / "runs" / "model-v2.safetensors")
    fastnn.save(small_model(), dangling)
    assert dangling.is_symlink() and (tmp_path / "runs" / "model-v2.safetensors").is_file()
    assert _temporaries(tmp_path) == [] and _temporaries(tmp_path / "runs") == []


def test_saving_over_something_that_is_not_a_file_is_refused(tmp_path):
    (tmp_path / "folder.safetensors").mkdir()
    with pytest.raises(FormatError, match="not a regular file"):
        fastnn.save(small_model(), tmp_path / "folder.safetensors")
    os.mkfifo(tmp_path / "fifo")
    with pytest.raises(FormatError, match="not a regular file"):
        fastnn.save(small_model(), tmp_path / "fifo")
    assert _temporaries(tmp_path) == []


def _stale(folder, name=".fastnn-0123456789abcdef.tmp"):
    path = folder / name
    path.write_bytes(b"\0" * 100)
    return path


def test_a_save_removes_the_temporary_files_of_dead_writers(tmp_path):
    stale = [_stale(tmp_path, f".fastnn-{i:016x}.tmp") for i in range(3)]
    other = tmp_path / ".fastnn-notes.txt"  # not one of ours: left alone
    other.write_text("keep")
    fastnn.save(small_model(), tmp_path / "m.safetensors")
    assert not any(p.exists() for p in stale)
    assert sorted(_only(tmp_path)) == [".fastnn-notes.txt", "m.safetensors"]


def test_a_live_writers_temporary_file_is_left_alone(tmp_path):
    live = _stale(tmp_path)
    fd = os.open(live, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # as a writer in another process holds it
        fastnn.save(small_model(), tmp_path / "m.safetensors")
        assert live.exists()
    finally:
        os.close(fd)
    fastnn.save(small_model(), tmp_path / "m.safetensors")
    assert not live.exists()


@pytest.mark.skipif(io._libc is None, reason="no O_TMPFILE and linkat here")
def test_the_temporary_file_has_no_name_while_it_is_written(tmp_path, monkeypatch):
    seen = []
    real_fsync = os.fsync

    def fsync(fd):
        seen.append(_temporaries(tmp_path))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    fastnn.save(small_model(), tmp_path / "m.safetensors")
    assert seen and seen[0] == []  # written and synced without a name in the folder
    assert _only(tmp_path) == ["m.safetensors"]


def test_named_temporary_files_where_there_is_no_o_tmpfile(tmp_path, monkeypatch):
    monkeypatch.setattr(io, "_libc", None)
    stale = _stale(tmp_path)
    old = os.umask(0o027)
    try:
        fastnn.save(small_model(), tmp_path / "m.safetensors")
    finally:
        os.umask(old)
    assert not stale.exists() and _only(tmp_path) == ["m.safetensors"]
    assert stat.S_IMODE(os.stat(tmp_path / "m.safetensors").st_mode) == 0o640
    got, expected = _outputs(small_model(), tmp_path / "m.safetensors")
    np.testing.assert_array_equal(got, expected)


# ---------------------------------------------------------------- what load may read


@pytest.mark.parametrize("kind", ["fifo", "folder", "device"])
def test_only_regular_files_are_loaded(tmp_path, kind):
    path = tmp_path / "m.safetensors"
    if kind == "fifo":
        os.mkfifo(path)  # nobody writes to it: opening it for reading would block
    elif kind == "folder":
        path.mkdir()
    else:
        path = "/dev/zero"
    assert_format_error(path, "not a regular file")
    assert_format_error(path, "not a regular file", loader=_checkpoint_loader())


def _checkpoint_loader():
    from fastnn import losses, optim

    model = small_model()
    trainer = fastnn.Trainer(model, losses.SoftmaxCrossEntropy(), optim.SGD(model, 0.1),
                             progress=False)
    return trainer.load_checkpoint


def _with_header(tmp_path, raw_header, data):
    return raw_file(tmp_path / "bad.safetensors", raw_header, data)


def test_duplicate_array_names_are_refused(tmp_path):
    arrays, metadata = saved_parts(tmp_path)
    raw = write_safetensors(tmp_path / "ok.safetensors", arrays, metadata).read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    text = raw[8:8 + n].decode()
    # the last of two entries for model.0.weight would have won: its bytes are those
    # of model.2.weight, the same size
    entry = json.dumps({"dtype": "F32", "shape": [4, 6],
                        "data_offsets": json.loads(text)[W0]["data_offsets"]})
    doubled = text[:-1] + f',"{W0}":{entry}}}'
    assert_format_error(_with_header(tmp_path, doubled.encode(), raw[8 + n:]),
                        "appears more than once")


def test_duplicate_keys_inside_the_metadata_are_refused(tmp_path):
    arrays, metadata = saved_parts(tmp_path)
    arch = metadata["architecture"]
    metadata["architecture"] = arch[:-1] + ',"type":"Sequential"}'
    assert_format_error(write_safetensors(tmp_path / "bad.safetensors", arrays, metadata),
                        "more than once")


def test_a_gap_between_arrays_is_refused(tmp_path):
    def mutate(header, size):
        for name, entry in header.items():
            if name != "__metadata__" and entry["data_offsets"][0] > 0:
                entry["data_offsets"] = [o + 4 for o in entry["data_offsets"]]
    path = _entry_mutation(tmp_path, mutate)
    path.write_bytes(path.read_bytes() + b"\0" * 4)
    assert_format_error(path, "gap")


def test_trailing_bytes_are_refused(tmp_path):
    arrays, metadata = saved_parts(tmp_path)
    path = write_safetensors(tmp_path / "bad.safetensors", arrays, metadata)
    path.write_bytes(path.read_bytes() + b"\0" * 8)
    assert_format_error(path, "8 bytes after the last array")


def test_a_sparse_tail_is_refused_without_being_read(tmp_path):
    """A valid model followed by a 2 GiB hole (no disk used): refused from the header
    and the file's size alone."""
    path = tmp_path / "m.safetensors"
    fastnn.save(small_model(), path)
    with open(path, "r+b") as f:
        f.truncate(os.path.getsize(path) + 2 * 2**30)
    assert refusal_peak(path, "after the last array") < 2**20


def test_arrays_the_model_does_not_use_are_not_read(tmp_path):
    arrays, metadata = saved_parts(tmp_path)
    arrays["notes.blob"] = np.zeros(4 * 2**20, np.uint8)
    path = write_safetensors(tmp_path / "extra.safetensors", arrays, metadata)
    reads = []
    real_readinto = io._fill

    def counting(f, view, where):
        reads.append(len(view))
        return real_readinto(f, view, where)

    tracemalloc.start()
    try:
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(io, "_fill", counting)
            model = fastnn.load(path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert sum(reads) < 2**16  # the header and the model's arrays only
    assert peak < 2**20
    np.testing.assert_array_equal(model[0].weight, arrays[W0])


def test_the_parameter_budget_counts_bytes(tmp_path):
    """The file holds 1-byte arrays; the architecture, the same number of float64
    elements: 8 times the bytes. Refused before the model is built."""
    n = 1000
    arch = {"type": "Sequential", "layers": [
        {"type": "Linear", "config": {"in_features": n, "out_features": n, "bias": False,
                                      "dtype": "float64"}}]}
    metadata = {"format": "fastnn", "format_version": "1", "kind": "model",
                "architecture": json.dumps(arch)}
    path = write_safetensors(tmp_path / "bad.safetensors",
                             {"model.0.weight": np.zeros((n, n), np.uint8)}, metadata)
    # nothing of the 8 MB model, nor of its gradients
    assert refusal_peak(path, "more parameters than the file holds") < 2 * n * n


# ---------------------------------------------------------------- loaded values


def _bn_file(tmp_path, name, value):
    model = MODELS["relu-bn"]()
    path = tmp_path / "bn.safetensors"
    fastnn.save(model, path)
    arrays, metadata = parse_safetensors(path.read_bytes())
    arrays = {k: np.array(v) for k, v in arrays.items()}
    arrays[f"model.1.{name}"][3] = value
    return write_safetensors(tmp_path / "bad.safetensors", arrays, metadata)


@pytest.mark.parametrize("name, value", [
    ("running_var", -1.0), ("running_var", np.nan), ("running_var", np.inf),
    ("running_mean", np.nan), ("running_mean", -np.inf)])
def test_bad_running_statistics_are_refused(tmp_path, name, value):
    assert_format_error(_bn_file(tmp_path, name, value), f"1.{name}")


def test_bad_running_statistics_are_refused_by_load_state_dict():
    model = MODELS["relu-bn"]()
    state = model.state_dict()
    before = {k: v.copy() for k, v in state.items()}
    state["1.running_var"][0] = -0.5
    state["0.weight"][:] = 7  # checked before anything is copied: nothing changes
    with pytest.raises(ValueError, match=r"1\.running_var"):
        model.load_state_dict(state)
    for key, value in model.state_dict().items():
        np.testing.assert_array_equal(value, before[key])
    state["1.running_var"][0] = 0.0  # a zero variance is a variance
    model.load_state_dict(state)
