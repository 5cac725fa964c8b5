"""Fault tolerance: a training run in a subprocess, checkpointing every epoch, is killed
with SIGKILL mid-epoch, inside the checkpoint write (paused after the temporary file is
written and synced, before it replaces the old one), and at random moments. Each time
the checkpoint file loads, and resuming from it ends with exactly (bitwise) the weights
and losses of a run that was never interrupted."""

import json
import os
import random
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

import fastnn

pytestmark = pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs SIGKILL")

EPOCHS = 5

# The training run. argv: checkpoint path, result path. It resumes from the checkpoint
# when there is one. FT_PAUSE_EPOCH=k pauses inside the write of epoch k's checkpoint.
BUILD = r"""
import time
import numpy as np
import fastnn
from fastnn import losses, nn, optim

class Progress(fastnn.Callback):
    def on_batch_end(self, trainer, step, loss):
        print(f"step {trainer.epoch + 1} {step}", flush=True)
        time.sleep(0.003)  # room for a kill to land mid-epoch

rng = np.random.default_rng(0)
y = rng.integers(0, 3, 1500)
X = (rng.standard_normal((1500, 20)) + 1.5 * np.eye(3, 20)[y]).astype(np.float32)
model = nn.Sequential(nn.Linear(20, 64, seed=0), nn.BatchNorm1d(64), nn.ReLU(),
                      nn.Dropout(0.2, seed=1), nn.Linear(64, 3, seed=2))
opt = optim.Adam(model, 1e-2, weight_decay=1e-4)
trainer = fastnn.Trainer(model, losses.SoftmaxCrossEntropy(), opt,
                         schedule=optim.CosineDecay(opt, t_max=EPOCHS),
                         callbacks=[fastnn.Checkpoint(ckpt), Progress()], progress=False)
"""

CHILD = r"""
import json, os, sys
ckpt, result = sys.argv[1], sys.argv[2]
EPOCHS = int(os.environ["FT_EPOCHS"])
pause = int(os.environ.get("FT_PAUSE_EPOCH", "0"))
pause_at = os.environ.get("FT_PAUSE_AT", "fsync")
""" + BUILD + r"""
def paused():
    print("in-write", flush=True)
    time.sleep(600)

if pause and pause_at == "fsync":
    real_fsync = os.fsync
    def fsync(fd):
        real_fsync(fd)
        if trainer.epoch == pause:  # the temporary file is complete, not yet renamed
            paused()
    os.fsync = fsync

if pause and pause_at == "write":
    real_fdopen = os.fdopen
    class HalfWritten:
        # the file the checkpoint is written through: stops in the middle of the arrays
        def __init__(self, f):
            self.f = f
        def write(self, data):
            if trainer.epoch == pause and len(data) > 64:
                self.f.write(data[:len(data) // 2])
                self.f.flush()
                paused()
            return self.f.write(data)
        def __getattr__(self, name):
            return getattr(self.f, name)
        def __enter__(self):
            return self
        def __exit__(self, *exc):
            return self.f.__exit__(*exc)
    os.fdopen = lambda *args, **kwargs: HalfWritten(real_fdopen(*args, **kwargs))

seed = 0
if os.path.exists(ckpt):
    trainer.load_checkpoint(ckpt)
    seed = None  # the shuffling RNG comes from the checkpoint
    print(f"resumed {trainer.epoch}", flush=True)
if trainer.epoch < EPOCHS:
    trainer.fit(X, y, epochs=EPOCHS - trainer.epoch, batch_size=50, seed=seed)
np.savez(result, **trainer.model.state_dict())
with open(result + ".json", "w") as f:
    json.dump({"loss": trainer.history["loss"], "epoch": trainer.epoch}, f)
print("done", flush=True)
"""


def _env(**extra):
    env = {k: v for k, v in os.environ.items() if not k.startswith("FT_")}
    env.update(FT_EPOCHS=str(EPOCHS), **{k: str(v) for k, v in extra.items()})
    # the child imports the fastnn these tests import (a checkout or the installed one)
    site = os.path.dirname(os.path.dirname(os.path.abspath(fastnn.__file__)))
    env["PYTHONPATH"] = os.pathsep.join(p for p in (site, env.get("PYTHONPATH")) if p)
    return env


def _start(folder, **env):
    return subprocess.Popen(
        [sys.executable, "-c", CHILD, str(folder / "ckpt.safetensors"),
         str(folder / "result.npz")],
        cwd=folder, env=_env(**env), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _finish(folder, **env):
    proc = _start(folder, **env)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    state = dict(np.load(folder / "result.npz"))
    with open(str(folder / "result.npz") + ".json") as f:
        info = json.load(f)
    return state, info, out


def _kill_when(proc, predicate, timeout=120):
    """SIGKILL proc at the first stdout line for which predicate(line) holds."""
    deadline = time.monotonic() + timeout
    for line in proc.stdout:
        if predicate(line.strip()):
            proc.send_signal(signal.SIGKILL)
            break
        assert time.monotonic() < deadline, "the child never reached the kill point"
    proc.wait(30)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.read()


def _checkpoint_epoch(folder):
    """The epoch of the checkpoint file, which must load (None: no file yet)."""
    path = folder / "ckpt.safetensors"
    if not path.exists():
        return None
    scope = {"ckpt": str(path), "EPOCHS": EPOCHS}
    exec(BUILD, scope)  # a trainer built as the child builds it
    scope["trainer"].load_checkpoint(path)
    return scope["trainer"].epoch


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    folder = tmp_path_factory.mktemp("straight")
    state, info, _ = _finish(folder)
    assert info["epoch"] == EPOCHS
    return state, info["loss"]


def _assert_same_run(folder, uninterrupted):
    state, info, out = _finish(folder)
    assert "resumed" in out
    want_state, want_loss = uninterrupted
    assert info["epoch"] == EPOCHS
    assert info["loss"] == want_loss
    assert set(state) == set(want_state)
    for k, v in want_state.items():
        assert v.tobytes() == state[k].tobytes(), k


def test_kill_mid_epoch_then_resume(tmp_path, uninterrupted):
    proc = _start(tmp_path)
    _kill_when(proc, lambda line: line == "step 3 17")  # epoch 3, in its middle
    assert _checkpoint_epoch(tmp_path) == 2
    _assert_same_run(tmp_path, uninterrupted)


@pytest.mark.parametrize("where", ["write", "fsync"])
def test_kill_inside_the_checkpoint_write_then_resume(tmp_path, uninterrupted, where):
    """Killed with half of epoch 3's arrays written, or with all of them written and
    synced but the file not yet renamed over epoch 2's."""
    proc = _start(tmp_path, FT_PAUSE_EPOCH=3, FT_PAUSE_AT=where)
    _kill_when(proc, lambda line: line == "in-write")
    # epoch 3's file never replaced epoch 2's
    assert _checkpoint_epoch(tmp_path) == 2
    leftovers = [p for p in os.listdir(tmp_path) if p.startswith(".fastnn-")]
    assert len(leftovers) == 1  # the unfinished temporary file, beside the intact checkpoint
    _assert_same_run(tmp_path, uninterrupted)


def test_repeated_kills_at_random_moments(tmp_path, uninterrupted):
    rand = random.Random(1234)
    epochs_seen = []
    for _ in range(4):
        proc = _start(tmp_path)
        # wait for the child to be training, then kill it after a random number of steps
        target = rand.randint(5, 70)
        count = [0]

        def nth_step(line, count=count, target=target):
            count[0] += line.startswith("step ")
            return count[0] >= target

        _kill_when(proc, nth_step)
        epochs_seen.append(_checkpoint_epoch(tmp_path))
    assert any(e is not None for e in epochs_seen)
    assert all(a is None or (b is not None and b >= a) for a, b in zip(epochs_seen,
                                                                        epochs_seen[1:]))
    _assert_same_run(tmp_path, uninterrupted)
