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
from fastnn import io, losses, nn, optim
from fastnn.io import FormatError

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


def _temporaries(folder):
    return [p for p in os.listdir(folder) if p.startswith(".fastnn-")]


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
    # the unfinished file has no name (O_TMPFILE), or one the next save removes
    assert len(_temporaries(tmp_path)) <= (0 if io._libc is not None else 1)
    _assert_same_run(tmp_path, uninterrupted)
    assert _temporaries(tmp_path) == []


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


# ---------------------------------------------------------------- killed inside save()

# argv: path, mode ("tmpfile": O_TMPFILE where the system has it; "named": named
# temporary files). Saves, without end, models whose every value is the save's number.
SAVER = r"""
import sys
import numpy as np
import fastnn
from fastnn import io, nn
path, mode = sys.argv[1], sys.argv[2]
if mode == "named":
    io._libc = None
model = nn.Sequential(nn.Linear(256, 512), nn.ReLU(), nn.Linear(512, 512))
for i in range(1, 10**9):
    model.arena.data[:] = i
    fastnn.save(model, path)
    print(i, flush=True)
"""


@pytest.mark.parametrize("mode", ["tmpfile", "named"])
def test_kill_9_inside_save_leaves_a_whole_file_and_no_litter(tmp_path, mode):
    """Writers killed at random moments of their saves: the file is always one whole
    save (every value the same), and temporary files never pile up: each save removes
    those of killed writers, and with O_TMPFILE there is hardly ever one."""
    rand = random.Random(5)
    path = tmp_path / "m.safetensors"
    last = 0
    most = 0
    for _ in range(4):
        proc = subprocess.Popen([sys.executable, "-c", SAVER, str(path), mode], env=_env(),
                                cwd=tmp_path,  # not a source checkout, which would shadow
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert proc.stdout.readline().strip().isdigit(), proc.stderr.read()
        time.sleep(rand.uniform(0, 0.05))  # a save takes some milliseconds
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
        values = np.unique(fastnn.load(path).arena.data)
        assert len(values) == 1 and values[0] >= 1  # one whole save, never a mix
        last = values[0]
        most = max(most, len(_temporaries(tmp_path)))
    assert most <= 1  # a kill's leftover is gone at the next save
    fastnn.save(nn.Sequential(nn.Linear(2, 2)), path)
    assert _temporaries(tmp_path) == [] and last >= 1


# ---------------------------------------------------------------- exact resume


def _model():
    return nn.Sequential(nn.Linear(6, 8, seed=0), nn.BatchNorm1d(8), nn.ReLU(),
                         nn.Dropout(0.2, seed=1), nn.Linear(8, 3, seed=2))


OPTIMIZERS = {  # every optimizer with its default arguments (lr where it has none)
    "SGD": lambda m: optim.SGD(m, lr=0.1),
    "SGD-momentum": lambda m: optim.SGD(m, lr=0.1, momentum=0.9),
    "SGD-nesterov-decay": lambda m: optim.SGD(m, lr=0.1, momentum=0.9, nesterov=True,
                                              weight_decay=1e-3),
    "Adagrad": lambda m: optim.Adagrad(m, lr=0.1),
    "RMSProp": lambda m: optim.RMSProp(m, lr=0.01),
    "Adam": lambda m: optim.Adam(m),
    "AdamW": lambda m: optim.AdamW(m),
}


def _trainer(make_opt, schedule=None):
    model = _model()
    opt = make_opt(model)
    return fastnn.Trainer(model, losses.SoftmaxCrossEntropy(), opt,
                          schedule=None if schedule is None else schedule(opt), progress=False)


def _batches(n):
    rng = np.random.default_rng(3)
    return [(rng.standard_normal((10, 6)).astype(np.float32), rng.integers(0, 3, 10))
            for _ in range(n)]


def _steps(trainer, batches):
    for xb, yb in batches:
        loss = trainer.train_step(xb, yb)
        if isinstance(trainer.schedule, optim.ReduceOnPlateau):
            trainer.schedule.step(loss)
        elif trainer.schedule is not None:
            trainer.schedule.step()


@pytest.mark.parametrize("before", [0, 1, 4])
@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_resume_is_exact_for_every_optimizer(tmp_path, name, before):
    batches = _batches(before + 3)
    path = tmp_path / "ck.safetensors"
    straight = _trainer(OPTIMIZERS[name])
    _steps(straight, batches[:before])
    straight.save_checkpoint(path)
    _steps(straight, batches[before:])
    resumed = _trainer(OPTIMIZERS[name])
    resumed.load_checkpoint(path)
    assert resumed.optimizer.step_count == before
    _steps(resumed, batches[before:])
    for key, value in straight.model.state_dict().items():
        assert value.tobytes() == resumed.model.state_dict()[key].tobytes(), key
    mine, theirs = straight.optimizer.state_dict(), resumed.optimizer.state_dict()
    assert mine["step_count"] == theirs["step_count"] == before + 3
    for a, b in zip(mine["state"], theirs["state"]):
        assert {k: v.tobytes() for k, v in a.items()} == {k: v.tobytes() for k, v in b.items()}


@pytest.mark.parametrize("schedule", [
    lambda o: optim.StepDecay(o, 2, 0.5), lambda o: optim.ExponentialDecay(o, 0.1),
    lambda o: optim.InverseTimeDecay(o, 0.3), lambda o: optim.CosineDecay(o, 5),
    lambda o: optim.Warmup(o, 2, then=optim.CosineDecay(o, 4))],
    ids=["step", "exponential", "inverse-time", "cosine", "warmup-cosine"])
def test_resume_is_exact_with_a_schedule(tmp_path, schedule):
    batches = _batches(6)
    path = tmp_path / "ck.safetensors"
    straight = _trainer(OPTIMIZERS["SGD"], schedule)
    _steps(straight, batches[:3])
    straight.save_checkpoint(path)
    _steps(straight, batches[3:])
    resumed = _trainer(OPTIMIZERS["SGD"], schedule)
    resumed.load_checkpoint(path)
    _steps(resumed, batches[3:])
    assert straight.schedule.get_last_lr() == resumed.schedule.get_last_lr()
    for key, value in straight.model.state_dict().items():
        assert value.tobytes() == resumed.model.state_dict()[key].tobytes(), key


# ---------------------------------------------------------------- bad state in a checkpoint


def _edited_checkpoint(tmp_path, make_opt, edit, schedule=None):
    """A checkpoint after two steps, with `edit(arrays, meta)` applied to its arrays and
    its decoded metadata; and a fresh trainer built the same way."""
    from test_io import parse_safetensors, write_safetensors

    trainer = _trainer(make_opt, schedule)
    _steps(trainer, _batches(2))
    path = tmp_path / "ck.safetensors"
    trainer.save_checkpoint(path)
    arrays, metadata = parse_safetensors(path.read_bytes())
    arrays = {k: np.array(v) for k, v in arrays.items()}
    meta = {k: json.loads(v) for k, v in metadata.items()
            if k not in ("format", "format_version", "kind")}
    edit(arrays, meta)
    metadata.update({k: json.dumps(v) for k, v in meta.items()})
    return write_safetensors(tmp_path / "bad.safetensors", arrays, metadata), _trainer(
        make_opt, schedule)


def _set_array(key, index, value):
    def edit(arrays, meta):
        arrays[key].reshape(-1)[index] = value
    return edit


def _set_schedule(**values):
    def edit(arrays, meta):
        meta["schedule"].update(values)
    return edit


@pytest.mark.parametrize("make_opt, schedule, edit, match", [
    (OPTIMIZERS["Adam"], None, _set_array("optim.0.m", 3, np.nan), "'m'"),
    (OPTIMIZERS["Adam"], None, _set_array("optim.0.v", 0, -1e-3), "'v'"),
    (OPTIMIZERS["Adam"], None, _set_array("optim.0.v", 5, np.inf), "'v'"),
    (OPTIMIZERS["AdamW"], None, _set_array("optim.1.m", 0, -np.inf), "'m'"),
    (OPTIMIZERS["SGD-momentum"], None, _set_array("optim.0.velocity", 2, np.nan),
     "'velocity'"),
    (OPTIMIZERS["Adagrad"], None, _set_array("optim.0.cache", 1, -2.0), "'cache'"),
    (OPTIMIZERS["RMSProp"], None, _set_array("optim.0.cache", 0, np.nan), "'cache'"),
    (OPTIMIZERS["SGD"], None, _set_array("model.1.running_var", 0, -1.0), "1.running_var"),
    (OPTIMIZERS["SGD"], None, _set_array("model.1.running_mean", 0, np.nan),
     "1.running_mean"),
    (OPTIMIZERS["SGD"], lambda o: optim.StepDecay(o, 2, 0.5), _set_schedule(gamma=-0.5),
     "gamma"),
    (OPTIMIZERS["SGD"], lambda o: optim.StepDecay(o, 2, 0.5), _set_schedule(step_size=0),
     "step_size"),
    (OPTIMIZERS["SGD"], lambda o: optim.StepDecay(o, 2, 0.5), _set_schedule(t=-3), "t: "),
    (OPTIMIZERS["SGD"], lambda o: optim.ExponentialDecay(o, 0.1), _set_schedule(k=-0.1), "k: "),
    (OPTIMIZERS["SGD"], lambda o: optim.InverseTimeDecay(o, 0.1), _set_schedule(k=-2.0),
     "k: "),
    (OPTIMIZERS["SGD"], lambda o: optim.CosineDecay(o, 5), _set_schedule(eta_min=-1.0),
     "eta_min"),
    (OPTIMIZERS["SGD"], lambda o: optim.CosineDecay(o, 5), _set_schedule(base_lrs=[-0.1]),
     "base_lrs"),
    (OPTIMIZERS["SGD"], lambda o: optim.ReduceOnPlateau(o, 0.5, 2), _set_schedule(scale=2.0),
     "scale"),
    (OPTIMIZERS["SGD"], lambda o: optim.ReduceOnPlateau(o, 0.5, 2), _set_schedule(factor=1.5),
     "factor"),
    (OPTIMIZERS["SGD"], lambda o: optim.Warmup(o, 2, then=optim.StepDecay(o, 2)),
     lambda arrays, meta: meta["schedule"]["then"].update(gamma=-1.0), "gamma"),
    (OPTIMIZERS["SGD"], lambda o: optim.StepDecay(o, 2, 0.5),
     lambda arrays, meta: meta["optimizer"]["param_groups"][0].update(initial_lr=-0.1),
     "initial_lr"),
], ids=["adam-m-nan", "adam-v-negative", "adam-v-inf", "adamw-m-inf", "velocity-nan",
        "adagrad-cache-negative", "rmsprop-cache-nan", "running-var-negative",
        "running-mean-nan", "gamma-negative", "step-size-zero", "t-negative",
        "exponential-k-negative", "inverse-time-k-negative", "eta-min-negative",
        "base-lr-negative", "plateau-scale", "plateau-factor", "warmup-then-gamma",
        "initial-lr-negative"])
def test_bad_state_in_a_checkpoint_is_refused(tmp_path, make_opt, schedule, edit, match):
    path, trainer = _edited_checkpoint(tmp_path, make_opt, edit, schedule)
    before = trainer.state_dict()
    with pytest.raises(FormatError, match=match):
        trainer.load_checkpoint(path)
    after = trainer.state_dict()  # nothing of the file was kept
    assert after["optimizer"]["state"] is None and after["optimizer"]["step_count"] == 0
    for key, value in before["model"].items():
        assert value.tobytes() == after["model"][key].tobytes(), key
    assert after["schedule"] == before["schedule"]


def test_optimizer_state_for_other_spans_is_refused(tmp_path):
    def edit(arrays, meta):
        meta["optimizer"]["state_spans"] += 1
    path, trainer = _edited_checkpoint(tmp_path, OPTIMIZERS["SGD"], edit)
    with pytest.raises(FormatError, match="spans"):
        trainer.load_checkpoint(path)

    def stray(arrays, meta):
        arrays["optim.0.velocity"] = np.zeros(3, np.float32)  # plain SGD keeps none
    path, trainer = _edited_checkpoint(tmp_path, OPTIMIZERS["SGD"], stray)
    with pytest.raises(FormatError, match=r"optim\.0\.velocity"):
        trainer.load_checkpoint(path)


def test_schedule_load_state_dict_checks_as_the_constructor_does():
    opt = optim.SGD(_model(), lr=0.1)
    schedule = optim.StepDecay(opt, 2, 0.5)
    state = schedule.state_dict()
    for bad, match in (({"gamma": -0.5}, "gamma"), ({"gamma": "0.5"}, "gamma"),
                       ({"step_size": 1.5}, "step_size"), ({"t": True}, "t: "),
                       ({"base_lrs": [0.1, 0.1]}, "starting rates")):
        with pytest.raises(ValueError, match=match):
            schedule.load_state_dict({**state, **bad})
    for arguments, match in (({"gamma": -0.5}, "gamma"), ({"gamma": "0.5"}, "gamma"),
                             ({"step_size": 1.5}, "step_size")):
        with pytest.raises(ValueError, match=match):  # the same checks
            optim.StepDecay(opt, **{"step_size": 2, **arguments})
    with pytest.raises(ValueError, match="keys"):
        schedule.load_state_dict({**state, "extra": 1})
    assert schedule.state_dict() == state


# ---------------------------------------------------------------- the Checkpoint callback


def _data(n=60):
    rng = np.random.default_rng(4)
    y = rng.integers(0, 3, n)
    return (rng.standard_normal((n, 6)) + np.eye(3, 6)[y]).astype(np.float32), y


def test_a_resumed_best_only_checkpoint_keeps_the_best_file(tmp_path):
    """Two checkpoints, the last epoch's and the best's (highest training loss: the
    first epochs'). Resumed from the last, later, worse epochs leave the best alone."""
    last, best = tmp_path / "last.safetensors", tmp_path / "best.safetensors"
    X, y = _data()

    def trainer():
        t = _trainer(OPTIMIZERS["SGD"])
        t.callbacks = [fastnn.Checkpoint(last),
                       fastnn.Checkpoint(best, save_best_only=True, monitor="loss",
                                         mode="max")]
        return t

    first = trainer()
    first.fit(X, y, epochs=2, batch_size=10, seed=0)
    resumed = trainer()
    resumed.load_checkpoint(last)
    resumed.fit(X, y, epochs=2, batch_size=10)
    losses_ = resumed.history["loss"]
    assert len(losses_) == 4 and int(np.argmax(losses_)) < 2  # the best came before
    check = _trainer(OPTIMIZERS["SGD"])
    check.load_checkpoint(best)
    assert check.epoch == int(np.argmax(losses_)) + 1


def test_checkpoint_refuses_a_bad_template_and_an_unlogged_metric(tmp_path):
    for path in ("ck-{step}.safetensors", "ck-{}.safetensors", "ck-{epoch.safetensors"):
        with pytest.raises(ValueError, match="path"):
            fastnn.Checkpoint(tmp_path / path)
    fastnn.Checkpoint(tmp_path / "ck-{{x}}-{epoch:03d}.safetensors")
    t = _trainer(OPTIMIZERS["SGD"])
    t.callbacks = [fastnn.Checkpoint(tmp_path / "b.safetensors", save_best_only=True)]
    with pytest.raises(KeyError, match="val_loss"):  # no validation data: never saved
        t.fit(*_data(), epochs=1, batch_size=10)


# ---------------------------------------------------------------- diverged state is not saved


@pytest.mark.parametrize("spoil, match", [
    (lambda t: t.model[1].running_var.__setitem__(0, np.nan), r"1\.running_var"),
    (lambda t: t.optimizer._state[0]["m"].__setitem__(0, np.inf), "'m'"),
    (lambda t: t.optimizer._state[0]["v"].__setitem__(0, -1.0), "'v'"),
    (lambda t: setattr(t.schedule, "gamma", -1.0), "gamma"),
], ids=["running-var-nan", "adam-m-inf", "adam-v-negative", "gamma-negative"])
def test_a_state_load_would_refuse_never_replaces_a_good_checkpoint(tmp_path, spoil, match):
    path = tmp_path / "ck.safetensors"
    trainer = _trainer(OPTIMIZERS["Adam"], lambda o: optim.StepDecay(o, 2, 0.5))
    _steps(trainer, _batches(2))
    trainer.save_checkpoint(path)
    good = path.read_bytes()
    spoil(trainer)
    with pytest.raises(FormatError, match=match):
        trainer.save_checkpoint(path)
    assert path.read_bytes() == good and _temporaries(tmp_path) == []
    if match.startswith("1"):  # the model alone, too
        fastnn.save(_model(), tmp_path / "m.safetensors")
        model_bytes = (tmp_path / "m.safetensors").read_bytes()
        with pytest.raises(FormatError, match=match):
            fastnn.save(trainer.model, tmp_path / "m.safetensors")
        assert (tmp_path / "m.safetensors").read_bytes() == model_bytes
