"""Robustness: hostile model and checkpoint files (fuzzed headers, corrupt bytes, huge
declared sizes) are refused with FormatError without allocating what they declare; two
Python threads train two models at once with exactly the results of training them one
after the other; the kernels release the GIL; and a long training loop does not leak.

(Killing a training run mid-epoch and mid-checkpoint-write: tests/test_fault_tolerance.py.)
"""

import functools
import json
import math
import os
import pickle
import struct
import sys
import threading
import time
import tracemalloc

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import fastnn
from fastnn import augment, losses, nn, ops, optim
from fastnn.io import FormatError

FUZZ = settings(max_examples=150, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                       HealthCheck.function_scoped_fixture])

# ---------------------------------------------------------------- helpers


def make_model(seed=0):
    return nn.Sequential(nn.Linear(5, 8, seed=seed), nn.BatchNorm1d(8), nn.ReLU(),
                         nn.Dropout(0.2, seed=3), nn.Linear(8, 3, seed=seed + 1))


def make_trainer(seed=0):
    model = make_model(seed)
    opt = optim.Adam(model, 0.01, weight_decay=1e-3)
    return fastnn.Trainer(model, losses.SoftmaxCrossEntropy(), opt,
                          schedule=optim.CosineDecay(opt, t_max=5), progress=False)


def blobs(n=64, d=5, k=3, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, k, n)
    X = rng.standard_normal((n, d)) * 0.5 + np.eye(k, d)[y] * 2
    return X.astype(np.float32), y


def split(raw):
    """(header dict, data bytes) of a safetensors file; metadata values JSON-decoded
    where they are JSON."""
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + n])
    meta = header.get("__metadata__", {})
    for k, v in meta.items():
        try:
            meta[k] = json.loads(v)
        except json.JSONDecodeError:
            pass
    return header, raw[8 + n:]


def join(header, data):
    if isinstance(header, dict):
        header = dict(header)
    if isinstance(header, dict) and isinstance(header.get("__metadata__"), dict):
        header["__metadata__"] = {
            k: v if k in ("format", "format_version", "kind") and isinstance(v, str)
            else json.dumps(v) for k, v in header["__metadata__"].items()}
    text = json.dumps(header).encode()
    return struct.pack("<Q", len(text)) + text + data


def leaves(node, path=()):
    """Every (path, value) of a JSON tree, inner nodes included."""
    yield path, node
    if isinstance(node, dict):
        for k, v in node.items():
            yield from leaves(v, (*path, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from leaves(v, (*path, i))


def replaced(node, path, value):
    if not path:
        return value
    node = list(node) if isinstance(node, list) else dict(node)
    node[path[0]] = replaced(node[path[0]], path[1:], value)
    return node


JSON_GARBAGE = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-2**70, 2**70),
              st.sampled_from([0, 1, -1, 2**31, 2**63, 2**64 + 5, 10**12]),
              st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=8),
              st.sampled_from(["F32", "F64", "U8", "I64", "O", "Sequential", "Linear",
                               "BatchNorm1d", "Dropout", "checkpoint", "model", "PCG64",
                               "params", "spans", "optimizer", "rate"])),
    lambda inner: st.one_of(st.lists(inner, max_size=3),
                            st.dictionaries(st.text(max_size=6), inner, max_size=3)),
    max_leaves=6)


def check_rejected_or_loaded(load, path):
    """load(path) either succeeds or raises FormatError, quickly and without allocating
    much; anything else (another exception, a crash, a hang) fails."""
    tracemalloc.start()
    start = time.perf_counter()
    try:
        load(path)
        ok = True
    except FormatError as exc:
        assert len(str(exc)) > 10
        ok = False
    finally:
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    assert time.perf_counter() - start < 5
    assert peak < 64 * 2**20, f"loading allocated {peak / 2**20:.0f} MiB"
    return ok


_FILES = {}


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """{"model": bytes, "checkpoint": bytes} of a small saved model and checkpoint (a
    module-level cache, so that hypothesis does not print them with a failing case)."""
    if not _FILES:
        _FILES.update(_make_files(tmp_path_factory.mktemp("hostile")))
    return _FILES


def _make_files(folder):
    model = make_model()
    fastnn.save(model, folder / "model.safetensors", metadata={"classes": [0, 1, 2]})
    trainer = make_trainer()
    X, y = blobs()
    trainer.fit(X, y, epochs=2, batch_size=16, seed=0)
    trainer.save_checkpoint(folder / "ckpt.safetensors")
    return {"model": (folder / "model.safetensors").read_bytes(),
            "checkpoint": (folder / "ckpt.safetensors").read_bytes()}


def _loader(kind):
    if kind == "model":
        return _load_and_predict
    return _load_and_train


def _load_and_predict(path):
    model = fastnn.load(path)
    model.forward(blobs(8)[0])


def _load_and_train(path):
    """A checkpoint that loads must also train on (or stop cleanly on a non-finite loss,
    as any run can)."""
    trainer = make_trainer(seed=7)
    trainer.load_checkpoint(path)
    X, y = blobs(32)
    try:
        trainer.fit(X, y, epochs=1, batch_size=16)
    except FloatingPointError:
        pass


# ---------------------------------------------------------------- hostile files


@pytest.mark.usefixtures("files")
@FUZZ
@given(kind=st.sampled_from(["model", "checkpoint"]), data=st.data(), value=JSON_GARBAGE)
def test_fuzzed_header_is_loaded_or_refused(tmp_path, kind, data, value):
    """Replace any node of the header (array entries, architecture, optimizer, schedule,
    history, RNG state...) with arbitrary JSON: FormatError or a valid load."""
    header, blob = split(_FILES[kind])
    paths = [p for p, _ in leaves(header)]
    path = data.draw(st.sampled_from(paths))
    path_file = tmp_path / f"fuzz-{kind}.safetensors"
    path_file.write_bytes(join(replaced(header, path, value), blob))
    check_rejected_or_loaded(_loader(kind), path_file)


@pytest.mark.usefixtures("files")
@FUZZ
@given(kind=st.sampled_from(["model", "checkpoint"]), data=st.data())
def test_corrupt_bytes_are_loaded_or_refused(tmp_path, kind, data):
    """Flip, truncate or extend at random places."""
    raw = bytearray(_FILES[kind])
    how = data.draw(st.sampled_from(["flip", "truncate", "append", "zero-run"]))
    if how == "flip":
        for _ in range(data.draw(st.integers(1, 4))):
            i = data.draw(st.integers(0, len(raw) - 1))
            raw[i] ^= 1 << data.draw(st.integers(0, 7))
    elif how == "truncate":
        raw = raw[:data.draw(st.integers(0, len(raw) - 1))]
    elif how == "append":
        raw += data.draw(st.binary(min_size=1, max_size=64))
    else:
        i = data.draw(st.integers(0, len(raw) - 1))
        raw[i:i + 16] = bytes(len(raw[i:i + 16]))
    path = tmp_path / f"corrupt-{kind}.safetensors"
    path.write_bytes(bytes(raw))
    check_rejected_or_loaded(_loader(kind), path)


def _with_entry(files, kind, name, entry):
    header, blob = split(files[kind])
    header[name] = entry
    return join(header, blob)


HOSTILE = {
    "huge shape": lambda f: _with_entry(f, "model", "model.0.weight",
                                        {"dtype": "F32", "shape": [2**40, 2**30],
                                         "data_offsets": [0, 160]}),
    "shape overflowing int64": lambda f: _with_entry(f, "model", "x",
                                                     {"dtype": "F64", "shape": [2**62, 2**62, 4],
                                                      "data_offsets": [0, 0]}),
    "huge offsets": lambda f: _with_entry(f, "model", "x", {"dtype": "U8", "shape": [2**50],
                                                            "data_offsets": [0, 2**50]}),
    "header length 2**64-1": lambda f: struct.pack("<Q", 2**64 - 1) + f["model"][8:],
    "header length past the end": lambda f: struct.pack("<Q", len(f["model"])) + f["model"][8:],
    "truncated data": lambda f: f["model"][:-7],
    "truncated checkpoint": lambda f: f["checkpoint"][:len(f["checkpoint"]) // 2],
    "wrong shape for the architecture": lambda f: _swap_shape(f),
    "architecture with a huge layer": lambda f: _huge_arch(f, "model"),
    "checkpoint with a huge layer": lambda f: _huge_arch(f, "checkpoint"),
    "optimizer state of another shape": lambda f: _bad_optim_state(f),
    "pickle": lambda f: pickle.dumps({"w": np.ones(3), "run": _Exploit()}),
    "pickle with a header length": lambda f: struct.pack("<Q", 40) + pickle.dumps(
        _Exploit(), protocol=2).ljust(64, b"."),
    "empty": lambda f: b"",
    "zip (numpy .npz)": lambda f: b"PK\x03\x04" + bytes(60),
}


class _Exploit:
    """Unpickling this creates the file named by $FASTNN_TEST_MARKER."""

    def __reduce__(self):
        return (open, (os.environ.get("FASTNN_TEST_MARKER", os.devnull), "w"))


def _swap_shape(files):
    header, blob = split(files["model"])
    entry = header["model.0.weight"]
    entry["shape"] = [*entry["shape"][::-1], 1]
    return join(header, blob)


def _huge_arch(files, kind):
    header, blob = split(files[kind])
    header["__metadata__"]["architecture"]["layers"][0]["config"].update(
        in_features=10**6, out_features=10**6)
    return join(header, blob)


def _bad_optim_state(files):
    header, blob = split(files["checkpoint"])
    name = next(k for k in header if k.startswith("optim.0."))
    begin, _ = header[name]["data_offsets"]
    header[name]["shape"] = [1]
    header[name]["data_offsets"] = [begin, begin + 4]
    return join(header, blob)


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_hostile_file_is_refused_without_allocating(tmp_path, files, name, monkeypatch):
    marker = tmp_path / "pwned"
    monkeypatch.setenv("FASTNN_TEST_MARKER", str(marker))
    raw = HOSTILE[name](files)
    path = tmp_path / "hostile.safetensors"
    path.write_bytes(raw)
    for kind in ("model", "checkpoint"):
        assert not check_rejected_or_loaded(_loader(kind), path), f"{name} loaded as a {kind}"
    assert not marker.exists()


def test_refused_checkpoint_leaves_the_trainer_untouched(tmp_path, files):
    header, blob = split(files["checkpoint"])
    header["__metadata__"]["history"] = {"loss": "not a list"}
    path = tmp_path / "bad.safetensors"
    path.write_bytes(join(header, blob))
    trainer = make_trainer(seed=5)
    before = trainer.state_dict()
    with pytest.raises(FormatError):
        trainer.load_checkpoint(path)
    after = trainer.state_dict()
    for k, v in before["model"].items():
        assert v.tobytes() == after["model"][k].tobytes()
    assert after["epoch"] == before["epoch"] and after["rng"] == before["rng"]


# ---------------------------------------------------------------- concurrency


def _train(seed, X, y, epochs=3):
    trainer = make_trainer(seed)
    trainer.fit(X, y, epochs=epochs, batch_size=32, seed=seed)
    return trainer.model.state_dict(), trainer.history["loss"]


def test_two_threads_train_two_models_as_if_one_after_the_other():
    """Both fits run at the same time (each started by a barrier); their weights and
    losses are bitwise those of two sequential fits."""
    data = [blobs(2000, d=5, seed=s) for s in (1, 2)]
    sequential = [_train(s, *data[s - 1]) for s in (1, 2)]
    results, errors = {}, []
    barrier = threading.Barrier(2)

    def run(s):
        try:
            barrier.wait()
            results[s] = _train(s, *data[s - 1])
        except BaseException as exc:  # report it in the main thread
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(s,)) for s in (1, 2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors
    for s, (state, loss) in zip((1, 2), sequential):
        got_state, got_loss = results[s]
        assert got_loss == loss
        for k, v in state.items():
            assert v.tobytes() == got_state[k].tobytes(), k


@functools.cache
def _kernel_calls():
    rng = np.random.default_rng(0)
    a = rng.standard_normal((900, 900)).astype(np.float32)
    big = rng.standard_normal(6_000_000).astype(np.float32)
    rows = big.reshape(-1, 600)
    layer = nn.Linear(2000, 3000, seed=0)
    adam = optim.Adam(layer, 1e-3)
    images = rng.integers(0, 255, (256, 1, 64, 64), np.uint8)
    warp = augment.Compose([augment.RandomRotation(10), augment.ElasticDistortion(8, 3)], seed=0)
    return {
        "matmul": lambda: ops.matmul(a, a),
        "tanh": lambda: ops.tanh(big),
        "column_sum": lambda: ops.column_sum(rows),
        "batchnorm": lambda: ops.batchnorm_forward(rows, np.ones(600, np.float32),
                                                   np.zeros(600, np.float32)),
        "dropout": lambda: ops.dropout(big, 0.5, 1, 2),
        "adam": adam.step,
        "augment": lambda: warp(images),
    }


@pytest.mark.parametrize("name", ["matmul", "tanh", "column_sum", "batchnorm", "dropout",
                                  "adam", "augment"])
def test_kernels_release_the_gil(name):
    """While one thread is inside a long kernel, another Python thread keeps running.

    A functional check, not a timing one. The switch interval is made huge, so that the
    interpreter never takes the GIL from a thread: the main thread can only run while
    the worker gives the GIL up of its own accord -- inside a kernel's nogil section, or
    in its short sleep between calls, when `inside` is clear. The main thread counts
    loop iterations made while `inside` is set: with a kernel that kept the GIL there
    would be none, whatever the load on the machine."""
    call = _kernel_calls()[name]
    call()  # warm up: first-call allocations, thread pools
    inside = threading.Event()
    stop = threading.Event()
    counts = []

    def worker():
        while not stop.is_set():
            inside.set()
            call()
            inside.clear()
            time.sleep(0.001)

    old = sys.getswitchinterval()
    with fastnn.threads(1):
        sys.setswitchinterval(1000.0)  # before the worker exists: no forced switch, ever
        t = threading.Thread(target=worker, daemon=True)
        try:
            t.start()
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and sum(counts) < 1000:
                n = 0
                while inside.is_set() and n < 100_000:
                    n += 1
                counts.append(n)
                if not inside.is_set():
                    inside.wait(0.5)
        finally:
            sys.setswitchinterval(old)
            stop.set()
            t.join(60)
    assert sum(counts) >= 1000, f"the main thread ran {sum(counts)} iterations in the kernel"


# ---------------------------------------------------------------- leaks


def rss_bytes():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@pytest.mark.skipif(not os.path.exists("/proc/self/statm"), reason="needs /proc (Linux)")
def test_training_steps_do_not_leak():
    """2,000 training steps (forward, loss, backward, penalty, clip, Adam, augmentation):
    resident memory after warm-up grows by less than 4 MiB (bench/bench_leak.py runs
    10,000 and prints the curve)."""
    rng = np.random.default_rng(0)
    X = rng.standard_normal((64, 64)).astype(np.float32)
    y = rng.integers(0, 10, 64)
    model = nn.Sequential(nn.Linear(64, 128, seed=0), nn.BatchNorm1d(128), nn.ReLU(),
                          nn.Dropout(0.1, seed=1), nn.Linear(128, 10, seed=2))
    opt = optim.Adam(model, 1e-3, weight_decay=1e-4)
    aug = augment.Compose([augment.RandomRotation(5)], seed=0)
    trainer = fastnn.Trainer(model, losses.SoftmaxCrossEntropy(), opt,
                             regularizer=losses.L2(1e-5), clip_norm=5.0, progress=False)

    def steps(n):
        for _ in range(n):
            xb = aug(X.reshape(-1, 8, 8)).reshape(len(X), -1)
            trainer.train_step(xb, y)

    with fastnn.threads(1):  # (one thread: quick on a busy machine; leaks do not care)
        steps(500)
        start = rss_bytes()
        steps(2000)
        growth = rss_bytes() - start
    assert growth < 4 * 2**20, f"RSS grew by {growth / 2**20:.1f} MiB over 2,000 steps"
    assert math.isfinite(trainer.train_step(X, y))
