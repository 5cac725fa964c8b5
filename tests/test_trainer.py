"""fastnn.Trainer: the training loop, batching, input checks, non-finite losses,
callbacks (EarlyStopping, Checkpoint), penalties, clipping, schedules, bitwise resume
from a checkpoint, and History."""

import math
import sys
import tracemalloc

import numpy as np
import pytest

import fastnn
from fastnn import losses, nn, optim

# ---------------------------------------------------------------- helpers


def blobs(n=150, d=4, k=3, seed=0, spread=0.5):
    """Well separated Gaussian blobs: X (n, d) float32, y (n,) int labels in [0, k)."""
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((k, d)) * 3
    y = rng.integers(0, k, n)
    X = (centers[y] + spread * rng.standard_normal((n, d))).astype(np.float32)
    return X, y


def mlp(d=4, k=3, hidden=16, seed=0):
    return nn.Sequential(nn.Linear(d, hidden, seed=seed), nn.ReLU(),
                         nn.Linear(hidden, k, init="xavier", seed=seed + 1))


def trainer_for(model, loss=None, opt=None, **kwargs):
    loss = losses.SoftmaxCrossEntropy() if loss is None else loss
    opt = optim.Adam(model, 0.01) if opt is None else opt
    kwargs.setdefault("progress", False)
    return fastnn.Trainer(model, loss, opt, **kwargs)


def assert_states_equal(a, b):
    assert list(a) == list(b)
    for name in a:
        assert a[name].dtype == b[name].dtype and a[name].shape == b[name].shape, name
        assert a[name].tobytes() == b[name].tobytes(), (
            f"{name}: {np.count_nonzero(a[name] != b[name])} entries differ")


def states_differ(a, b):
    return any(a[k].tobytes() != b[k].tobytes() for k in a)


class Recording:
    """Wraps a model; records every train-mode forward input (its address, its base
    array, and a copy of column 0, which the tests fill with sample ids)."""

    def __init__(self, inner):
        self.inner = inner
        self.batches = []  # (epoch, step, data address, base object, ids)
        self.epoch = 0
        self.step = 0

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def forward(self, x):
        scores = self.inner.forward(x)
        if self.inner.training:
            self.step += 1
            self.batches.append((self.epoch, self.step, x.__array_interface__["data"][0],
                                 x.base, x[:, 0].copy()))
        return scores

    def backward(self, dout, **kwargs):
        return self.inner.backward(dout, **kwargs)


class Poisoned(nn.Sequential):
    """A Sequential whose `at`-th train-mode forward returns NaN scores."""

    def __init__(self, *layers, at):
        super().__init__(*layers)
        self.at, self.calls = at, 0

    def forward(self, x):
        scores = super().forward(x)
        if self.training:
            self.calls += 1
            if self.calls == self.at:
                scores[...] = np.nan
        return scores


class Snapshot(fastnn.Callback):
    """The model's state after the latest step."""

    def on_batch_end(self, trainer, step, loss):
        self.last = trainer.model.state_dict()


class EpochCounter(fastnn.Callback):
    """Keeps a Recording's epoch/step in sync with the trainer."""

    def __init__(self, recording):
        self.recording = recording

    def on_epoch_begin(self, trainer, epoch):
        self.recording.epoch, self.recording.step = epoch, 0


class Scripted(fastnn.Callback):
    """Puts a scripted value under `key` into the epoch logs (before later callbacks see
    them) and records the model's state at the end of every epoch."""

    def __init__(self, values, key="score"):
        self.values, self.key = values, key
        self.states = {}

    def on_epoch_end(self, trainer, epoch, logs):
        logs[self.key] = self.values[epoch - 1]
        self.states[epoch] = trainer.model.state_dict()


# ---------------------------------------------------------------- fit and inference


def test_fit_returns_a_history_and_learns():
    X, y = blobs(200)
    Xv, yv = blobs(60, seed=0)  # same centres, other samples
    trainer = trainer_for(mlp())
    history = trainer.fit(X, y, epochs=8, batch_size=16, validation_data=(Xv, yv), seed=0)
    assert isinstance(history, fastnn.History) and isinstance(history, dict)
    assert history is trainer.history
    for key in ("loss", "accuracy", "lr", "seconds", "samples_per_s", "val_loss",
                "val_accuracy"):
        assert len(history[key]) == 8, key
        assert all(isinstance(v, float) and math.isfinite(v) for v in history[key]), key
    assert history.epochs == 8
    assert all(s > 0 for s in history["seconds"])
    for s, rate in zip(history["seconds"], history["samples_per_s"]):
        assert rate == pytest.approx(len(X) / s)
    assert history["lr"] == [0.01] * 8
    assert history["loss"][-1] < history["loss"][0] / 3
    assert history["accuracy"][-1] >= 0.97
    assert history["val_accuracy"][-1] >= 0.95
    assert 0 <= min(history["accuracy"]) <= max(history["accuracy"]) <= 1
    assert trainer.epoch == 8


def test_history_without_validation_has_no_val_keys():
    X, y = blobs(40)
    history = trainer_for(mlp()).fit(X, y, epochs=2, batch_size=8, seed=0)
    assert not any(k.startswith("val_") for k in history)
    assert set(history) >= {"loss", "accuracy", "lr", "seconds", "samples_per_s"}


def test_evaluate_predict_predict_proba():
    X, y = blobs(200)
    trainer = trainer_for(mlp())
    trainer.fit(X, y, epochs=8, batch_size=16, seed=1)
    result = trainer.evaluate(X, y)
    assert set(result) == {"loss", "accuracy"}
    labels = trainer.predict(X)
    assert labels.shape == (len(X),) and labels.dtype.kind in "iu"
    assert result["accuracy"] == pytest.approx(np.mean(labels == y))
    assert result["accuracy"] >= 0.97
    proba = trainer.predict_proba(X)
    assert proba.shape == (len(X), 3)
    assert np.all(proba >= 0) and np.all(proba <= 1)
    np.testing.assert_allclose(proba.sum(axis=1), 1, rtol=1e-5)
    np.testing.assert_array_equal(proba.argmax(axis=1), labels)
    # the loss evaluate reports is the mean cross-entropy of those probabilities
    ce = -np.mean(np.log(proba[np.arange(len(y)), y].astype(np.float64)))
    assert result["loss"] == pytest.approx(ce, rel=1e-4, abs=1e-6)
    # small batches give the same answers as one big one
    np.testing.assert_array_equal(trainer.predict(X, batch_size=7), labels)


def test_regression_with_mse():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((200, 3)).astype(np.float32)
    y = X @ np.array([[1.5], [-2.0], [0.5]], np.float32) + 0.3
    model = nn.Sequential(nn.Linear(3, 1, init="xavier", seed=0))
    trainer = trainer_for(model, losses.MSE(), optim.SGD(model, 0.1))
    history = trainer.fit(X, y, epochs=30, batch_size=20, seed=0)
    assert "accuracy" not in history
    out = trainer.predict(X)
    assert out.shape == (200, 1) and out.dtype == np.float32
    np.testing.assert_allclose(out, y, atol=1e-2)
    assert trainer.evaluate(X, y)["loss"] < 1e-4
    assert set(trainer.evaluate(X, y)) == {"loss"}
    with pytest.raises(TypeError, match="MSE"):
        trainer.predict_proba(X)


def test_bce_predicts_labels_and_probabilities_and_logs_accuracy():
    X, labels = blobs(120, k=2)
    y = labels.astype(np.float32).reshape(-1, 1)
    model = nn.Sequential(nn.Linear(4, 8, seed=0), nn.Tanh(), nn.Linear(8, 1, seed=1))
    trainer = trainer_for(model, losses.BCEWithLogits())
    history = trainer.fit(X, y, epochs=10, batch_size=16, validation_data=(X, y), seed=0)
    assert len(history["accuracy"]) == len(history["val_accuracy"]) == 10
    assert history["accuracy"][-1] >= 0.95
    logits = model.eval().forward(X).astype(np.float64)
    proba = trainer.predict_proba(X)
    np.testing.assert_allclose(proba, 1 / (1 + np.exp(-logits)), rtol=1e-5)
    predicted = trainer.predict(X)
    assert predicted.shape == (120, 1) and predicted.dtype.kind == "i"
    np.testing.assert_array_equal(predicted, (logits > 0).astype(int))
    result = trainer.evaluate(X, y)
    assert set(result) == {"loss", "accuracy"}
    assert result["accuracy"] == pytest.approx(np.mean(predicted[:, 0] == labels))
    assert result["accuracy"] == pytest.approx(history["val_accuracy"][-1])


def test_bce_accuracy_over_several_outputs_counts_each_output():
    rng = np.random.default_rng(3)
    X = rng.standard_normal((60, 5)).astype(np.float32)
    y = (X[:, :3] > 0).astype(np.float32)  # three independent binary labels per row
    model = nn.Sequential(nn.Linear(5, 3, seed=0))
    trainer = trainer_for(model, losses.BCEWithLogits())
    trainer.fit(X, y, epochs=3, batch_size=12, seed=0)
    predicted = trainer.predict(X)
    assert predicted.shape == (60, 3)
    assert trainer.evaluate(X, y)["accuracy"] == pytest.approx(np.mean(predicted == y))


def test_multiclass_hinge_predicts_the_highest_score():
    X, y = blobs(90)
    model = mlp()
    trainer = trainer_for(model, losses.MulticlassHinge())
    history = trainer.fit(X, y, epochs=4, batch_size=16, seed=0)
    assert "accuracy" in history
    scores = model.eval().forward(X)
    np.testing.assert_array_equal(trainer.predict(X), scores.argmax(axis=1))
    np.testing.assert_allclose(trainer.predict_proba(X).sum(axis=1), 1, rtol=1e-5)
    assert trainer.evaluate(X, y)["accuracy"] == pytest.approx(
        np.mean(scores.argmax(axis=1) == y))


# ---------------------------------------------------------------- batching


def _recording_trainer(n=103, d=3, **kwargs):
    X = np.random.default_rng(5).standard_normal((n, d)).astype(np.float32)
    X[:, 0] = np.arange(n)  # sample ids
    y = np.arange(n) % 3
    rec = Recording(mlp(d))
    trainer = trainer_for(rec, opt=optim.SGD(rec.inner, 1e-4),
                          callbacks=[EpochCounter(rec), *kwargs.pop("callbacks", ())], **kwargs)
    return trainer, rec, X, y


def test_every_sample_once_per_epoch_with_a_partial_last_batch():
    trainer, rec, X, y = _recording_trainer()
    trainer.fit(X, y, epochs=3, batch_size=10, seed=0)
    orders = []
    for epoch in (1, 2, 3):
        batches = [b for b in rec.batches if b[0] == epoch]
        assert [len(b[4]) for b in batches] == [10] * 10 + [3]
        assert [b[1] for b in batches] == list(range(1, 12))
        ids = np.concatenate([b[4] for b in batches])
        np.testing.assert_array_equal(np.sort(ids), np.arange(103))
        orders.append(ids)
    assert not np.array_equal(orders[0], np.arange(103))  # shuffled
    assert not np.array_equal(orders[0], orders[1])  # a new order every epoch


def test_shuffle_false_keeps_the_natural_order():
    trainer, rec, X, y = _recording_trainer()
    trainer.fit(X, y, epochs=2, batch_size=10, shuffle=False)
    for epoch in (1, 2):
        ids = np.concatenate([b[4] for b in rec.batches if b[0] == epoch])
        np.testing.assert_array_equal(ids, np.arange(103))


def test_batches_come_from_one_reused_buffer_and_x_is_untouched():
    trainer, rec, X, y = _recording_trainer()
    before = X.copy()
    trainer.fit(X, y, epochs=2, batch_size=10, seed=0)
    np.testing.assert_array_equal(X, before)
    addresses = {b[2] for b in rec.batches}
    bases = {id(b[3]) for b in rec.batches}
    assert len(addresses) == 1, "a new batch array was allocated for some step"
    assert len(bases) == 1 and rec.batches[0][3] is not None
    buffer = rec.batches[0][3]
    assert not np.shares_memory(buffer, X)
    assert buffer.shape == (10, X.shape[1])  # one batch, not the whole data set


def test_fit_does_not_copy_x_whole():
    X = np.random.default_rng(0).standard_normal((20000, 50)).astype(np.float32)
    y = np.zeros(20000, np.intp)
    model = nn.Sequential(nn.Linear(50, 2, seed=0))
    trainer = trainer_for(model, opt=optim.SGD(model, 1e-3))
    trainer.fit(X[:10], y[:10], epochs=1, batch_size=100)  # warm up workspaces
    tracemalloc.start()
    try:
        trainer.fit(X, y, epochs=1, batch_size=100, seed=0)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < X.nbytes / 2, f"fit allocated {peak} bytes for {X.nbytes} bytes of X"


def test_same_seed_same_history_and_weights():
    X, y = blobs(90)
    runs = []
    for _ in range(2):
        model = nn.Sequential(nn.Linear(4, 12, seed=3), nn.BatchNorm1d(12), nn.ReLU(),
                              nn.Dropout(0.2, seed=9), nn.Linear(12, 3, seed=4))
        trainer = trainer_for(model)
        history = trainer.fit(X, y, epochs=3, batch_size=16, seed=42)
        runs.append((history, model.state_dict()))
    (h1, s1), (h2, s2) = runs
    assert h1["loss"] == h2["loss"] and h1["accuracy"] == h2["accuracy"]
    assert_states_equal(s1, s2)
    # and a different seed gives a different run
    model = nn.Sequential(nn.Linear(4, 12, seed=3), nn.BatchNorm1d(12), nn.ReLU(),
                          nn.Dropout(0.2, seed=9), nn.Linear(12, 3, seed=4))
    h3 = trainer_for(model).fit(X, y, epochs=3, batch_size=16, seed=43)
    assert h3["loss"] != h1["loss"]


# ---------------------------------------------------------------- bad input


def _bad_fit(**overrides):
    X, y = blobs(20)
    args = {"X": X, "y": y, "epochs": 1, "batch_size": 4}
    args.update(overrides)
    trainer = trainer_for(mlp())
    trainer.fit(args.pop("X"), args.pop("y"), **args)


@pytest.mark.parametrize("overrides, error, match", [
    ({"y": blobs(20)[1].astype(np.float64)}, TypeError, "integer"),
    ({"y": blobs(20)[1] + 3}, ValueError, "labels"),
    ({"y": -blobs(20)[1] - 1}, ValueError, "labels"),
    ({"y": blobs(20)[1][:19]}, ValueError, "19"),
    ({"X": np.where(np.arange(4) == 2, np.nan, blobs(20)[0]).astype(np.float32)},
     ValueError, "NaN"),
    ({"X": np.full((20, 4), np.inf, np.float32)}, ValueError, "inf"),
    ({"X": np.empty((0, 4), np.float32), "y": np.empty(0, np.intp)}, ValueError, "no samples"),
    ({"X": np.arange(20, dtype=np.float32)}, ValueError, "2-D"),
    ({"X": np.array([["a"] * 4] * 20)}, TypeError, "numeric"),
    ({"epochs": 0}, ValueError, "epochs"),
    ({"epochs": -1}, ValueError, "epochs"),
    ({"epochs": 1.5}, ValueError, "epochs"),
    ({"epochs": True}, ValueError, "epochs"),
    ({"batch_size": 0}, ValueError, "batch_size"),
    ({"batch_size": None}, ValueError, "batch_size"),
], ids=["float-labels", "labels-too-big", "negative-labels", "length-mismatch", "nan-in-x",
        "inf-in-x", "empty-x", "1d-x", "string-x", "epochs-0", "epochs-neg", "epochs-float",
        "epochs-bool", "batch-0", "batch-none"])
def test_bad_fit_input(overrides, error, match):
    with pytest.raises(error, match=match):
        _bad_fit(**overrides)


def test_bad_validation_data_is_rejected_before_training():
    X, y = blobs(20)
    trainer = trainer_for(mlp())
    before = trainer.model.state_dict()
    with pytest.raises(ValueError, match="validation"):
        trainer.fit(X, y, epochs=1, batch_size=4,
                    validation_data=(np.full_like(X, np.nan), y))
    assert trainer.epoch == 0
    assert_states_equal(before, trainer.model.state_dict())


def test_loss_must_be_a_fastnn_loss():
    model = mlp()

    class NotALoss:
        def forward(self, scores, y):
            return 0.0

        def backward(self):
            return None

    with pytest.raises(TypeError, match="loss"):
        fastnn.Trainer(model, NotALoss(), optim.SGD(model, 0.1))
    with pytest.raises(TypeError, match="loss"):
        fastnn.Trainer(model, losses.MSE, optim.SGD(model, 0.1))  # the class, not an instance


def test_inference_needs_no_optimizer():
    X, y = blobs(60)
    model = mlp()
    trained = trainer_for(model)
    trained.fit(X, y, epochs=3, batch_size=16, seed=0)
    inference = fastnn.Trainer(model, losses.SoftmaxCrossEntropy(), progress=False)
    assert inference.optimizer is None
    assert inference.evaluate(X, y) == trained.evaluate(X, y)
    np.testing.assert_array_equal(inference.predict(X), trained.predict(X))
    np.testing.assert_array_equal(inference.predict_proba(X), trained.predict_proba(X))
    assert inference.state_dict()["optimizer"] is None
    before = model.state_dict()
    for call in (lambda: inference.fit(X, y, epochs=1, batch_size=8),
                 lambda: inference.train_step(X[:8], y[:8])):
        with pytest.raises(ValueError, match="no optimizer"):
            call()
    assert_states_equal(before, model.state_dict())
    assert inference.epoch == 0


@pytest.mark.parametrize("optimizer", [object(), "adam", optim.SGD])
def test_optimizer_must_be_an_optimizer(optimizer):
    with pytest.raises(TypeError, match=r"optimizer: expected a fastnn\.optim optimizer"):
        fastnn.Trainer(mlp(), losses.SoftmaxCrossEntropy(), optimizer)


def test_callbacks_must_be_callbacks():
    model = mlp()

    def on_epoch_end(trainer, epoch, logs):
        pass

    for callbacks, match in (([on_epoch_end], r"callbacks\[0\]: expected a fastnn.Callback"),
                             ([fastnn.Callback(), 3], r"callbacks\[1\]"),
                             (fastnn.EarlyStopping(), "a list"),
                             (on_epoch_end, "a list"),
                             (5, "a list")):
        with pytest.raises(TypeError, match=match):
            trainer_for(model, callbacks=callbacks)

    class DuckTyped:  # every hook, without subclassing Callback: accepted
        def __getattr__(self, name):
            if name.startswith("on_"):
                return lambda *args: None
            raise AttributeError(name)

    assert len(trainer_for(model, callbacks=[DuckTyped()]).callbacks) == 1


@pytest.mark.parametrize("validation_data", [
    "pairs", (np.zeros((4, 4), np.float32),), np.zeros((2, 4, 4), np.float32),
    (np.zeros((4, 4), np.float32), np.zeros(4, np.intp), None)],
    ids=["string", "one", "array", "three"])
def test_validation_data_must_be_a_pair(validation_data):
    X, y = blobs(20)
    trainer = trainer_for(mlp())
    with pytest.raises(ValueError, match=r"validation_data: expected a pair \(X, y\)"):
        trainer.fit(X, y, epochs=1, batch_size=4, validation_data=validation_data)
    assert trainer.epoch == 0


def test_model_must_be_a_module():
    with pytest.raises(TypeError, match="model"):
        fastnn.Trainer(object(), losses.MSE(), None)


def test_evaluate_and_predict_check_their_input():
    X, y = blobs(30)
    trainer = trainer_for(mlp())
    trainer.fit(X, y, epochs=1, batch_size=8, seed=0)
    with pytest.raises(ValueError, match="NaN"):
        trainer.predict(np.full_like(X, np.nan))
    with pytest.raises(ValueError, match="2-D"):
        trainer.predict_proba(X[0])
    with pytest.raises(TypeError, match="integer"):
        trainer.evaluate(X, y.astype(np.float32))
    with pytest.raises(ValueError):
        trainer.evaluate(X, y + 10)


# ---------------------------------------------------------------- non-finite loss


def test_nan_loss_stops_before_the_update_naming_epoch_and_step(tmp_path):
    path = tmp_path / "ck.safetensors"
    snap = Snapshot()
    X, y = blobs(103, d=3)
    model = Poisoned(nn.Linear(3, 8, seed=0), nn.ReLU(), nn.Linear(8, 3, seed=1),
                     at=11 + 4)  # 11 steps per epoch: epoch 2, step 4
    trainer = trainer_for(model, callbacks=[snap, fastnn.Checkpoint(path, every=1)])
    with pytest.raises(FloatingPointError, match=r"epoch 2\b.*step 4\b"):
        trainer.fit(X, y, epochs=3, batch_size=10, seed=0)
    assert model.calls == 15
    state = model.state_dict()
    assert all(np.isfinite(v).all() for v in state.values())
    assert_states_equal(state, snap.last)  # the failing step changed nothing
    assert trainer.epoch == 1
    # the checkpoint of epoch 1 is intact, finite and resumable
    fresh = mlp(3, hidden=8, seed=50)
    other = trainer_for(fresh)
    other.load_checkpoint(path)
    assert other.epoch == 1 and len(other.history["loss"]) == 1
    assert all(np.isfinite(v).all() for v in fresh.state_dict().values())
    assert states_differ(fresh.state_dict(), state)  # epoch 1's weights, not the last ones


def test_diverging_training_raises_with_finite_weights():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((64, 4)).astype(np.float32)
    y = (X @ rng.standard_normal((4, 1)) * 1e5).astype(np.float32)
    model = nn.Sequential(nn.Linear(4, 8, seed=0), nn.ReLU(), nn.Linear(8, 1, seed=1))
    trainer = trainer_for(model, losses.MSE(), optim.SGD(model, 100.0))
    with pytest.raises(FloatingPointError, match=r"non-finite loss .* epoch \d+, step \d+"):
        trainer.fit(X, y, epochs=20, batch_size=16, seed=0)
    assert np.isfinite(model.arena.data).all()


def test_nan_loss_with_clip_norm_still_names_epoch_and_step():
    """fit's docstring: a non-finite loss raises FloatingPointError naming the epoch and
    step, before the update; clipping the gradient must not change that."""
    snap = Snapshot()
    X, y = blobs(30, d=3)
    model = Poisoned(nn.Linear(3, 8, seed=0), nn.ReLU(), nn.Linear(8, 3, seed=1), at=3)
    trainer = trainer_for(model, clip_norm=1.0, callbacks=[snap])
    with pytest.raises(FloatingPointError, match=r"epoch 1\b.*step 3\b"):
        trainer.fit(X, y, epochs=1, batch_size=10, seed=0)
    assert_states_equal(model.state_dict(), snap.last)


# ---------------------------------------------------------------- callbacks


def test_callback_hooks_in_order_with_their_arguments():
    calls = []

    class Log(fastnn.Callback):
        def on_train_begin(self, trainer):
            calls.append(("train_begin", trainer))

        def on_epoch_begin(self, trainer, epoch):
            calls.append(("epoch_begin", epoch))

        def on_batch_end(self, trainer, step, loss):
            assert isinstance(loss, float) and math.isfinite(loss)
            calls.append(("batch_end", step))

        def on_epoch_end(self, trainer, epoch, logs):
            assert logs["loss"] == trainer.history["loss"][-1]
            assert set(logs) >= {"loss", "accuracy", "val_loss", "val_accuracy", "lr"}
            calls.append(("epoch_end", epoch))

        def on_train_end(self, trainer):
            calls.append(("train_end", trainer))

    X, y = blobs(25)
    trainer = trainer_for(mlp(), callbacks=[Log()])
    trainer.fit(X, y, epochs=2, batch_size=10, validation_data=(X, y), seed=0)
    epoch = [("batch_end", 1), ("batch_end", 2), ("batch_end", 3)]
    assert calls == [("train_begin", trainer),
                     ("epoch_begin", 1), *epoch, ("epoch_end", 1),
                     ("epoch_begin", 2), *epoch, ("epoch_end", 2),
                     ("train_end", trainer)]
    calls.clear()
    trainer.fit(X, y, epochs=1, batch_size=25, validation_data=(X, y))  # epochs keep counting
    assert calls == [("train_begin", trainer), ("epoch_begin", 3), ("batch_end", 1),
                     ("epoch_end", 3), ("train_end", trainer)]
    assert trainer.history.epochs == 3


def test_a_callback_can_stop_training():
    class StopAt2(fastnn.Callback):
        def on_epoch_end(self, trainer, epoch, logs):
            if epoch == 2:
                trainer.stop_training = True

    X, y = blobs(20)
    trainer = trainer_for(mlp(), callbacks=[StopAt2()])
    assert trainer.fit(X, y, epochs=10, batch_size=5, seed=0).epochs == 2
    assert trainer.epoch == 2


def test_early_stopping_stops_after_patience_and_restores_the_best_weights():
    script = Scripted([5.0, 3.0, 4.0, 3.5, 1.0, 0.5])
    stopper = fastnn.EarlyStopping(monitor="score", patience=2, mode="min")
    X, y = blobs(40)
    trainer = trainer_for(mlp(), callbacks=[script, stopper])
    history = trainer.fit(X, y, epochs=6, batch_size=8, seed=0)
    assert history.epochs == 4 and trainer.epoch == 4
    assert stopper.best == 3.0 and stopper.best_epoch == 2 and stopper.stopped_epoch == 4
    assert states_differ(script.states[2], script.states[4])
    assert_states_equal(trainer.model.state_dict(), script.states[2])


def test_early_stopping_on_val_accuracy_without_restoring():
    script = Scripted([0.5, 0.6, 0.6, 0.6], key="val_accuracy")
    stopper = fastnn.EarlyStopping(monitor="val_accuracy", patience=1,
                                   restore_best_weights=False)
    X, y = blobs(40)
    trainer = trainer_for(mlp(), callbacks=[script, stopper])
    trainer.fit(X, y, epochs=4, batch_size=8, validation_data=(X, y), seed=0)
    assert trainer.epoch == 3  # "acc" in the name -> mode max; 0.6 == 0.6 is no improvement
    assert_states_equal(trainer.model.state_dict(), script.states[3])


def test_early_stopping_needs_its_metric():
    X, y = blobs(20)
    trainer = trainer_for(mlp(), callbacks=[fastnn.EarlyStopping()])
    with pytest.raises(KeyError, match="val_loss"):
        trainer.fit(X, y, epochs=2, batch_size=5)


@pytest.mark.parametrize("kwargs", [{"patience": -1}, {"patience": 1.5}, {"mode": "up"}])
def test_early_stopping_bad_arguments(kwargs):
    with pytest.raises(ValueError):
        fastnn.EarlyStopping(**kwargs)


def test_checkpoint_every_n_epochs(tmp_path):
    ck = fastnn.Checkpoint(tmp_path / "ck-{epoch}.safetensors", every=2)
    script = Scripted([0.0] * 5)
    X, y = blobs(30)
    trainer = trainer_for(mlp(), callbacks=[script, ck])
    trainer.fit(X, y, epochs=5, batch_size=8, seed=0)
    expected = [str(tmp_path / f"ck-{e}.safetensors") for e in (2, 4)]
    assert ck.saved == expected
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ck-2.safetensors",
                                                          "ck-4.safetensors"]
    for epoch in (2, 4):
        model = mlp(seed=99)
        other = trainer_for(model)
        other.load_checkpoint(tmp_path / f"ck-{epoch}.safetensors")
        assert other.epoch == epoch and other.history.epochs == epoch
        assert_states_equal(model.state_dict(), script.states[epoch])


def test_checkpoint_save_best_only(tmp_path):
    path = tmp_path / "best.safetensors"
    script = Scripted([3.0, 2.0, 2.5, 1.0, 1.5])
    ck = fastnn.Checkpoint(path, save_best_only=True, monitor="score", mode="min")
    X, y = blobs(30)
    trainer = trainer_for(mlp(), callbacks=[script, ck])
    trainer.fit(X, y, epochs=5, batch_size=8, seed=0)
    assert ck.saved == [str(path)] * 3  # epochs 1, 2 and 4
    model = mlp(seed=7)
    other = trainer_for(model)
    other.load_checkpoint(path)
    assert other.epoch == 4
    assert_states_equal(model.state_dict(), script.states[4])


@pytest.mark.parametrize("every", [0, -2, 1.5, True])
def test_checkpoint_bad_every(tmp_path, every):
    with pytest.raises(ValueError, match="every"):
        fastnn.Checkpoint(tmp_path / "x", every=every)


# ---------------------------------------------------------------- penalty, clipping, schedules


def test_regularizer_is_added_to_the_loss():
    X, y = blobs(40)
    lam = 0.05
    model = mlp()
    trainer = trainer_for(model, opt=optim.SGD(model, 0.0), regularizer=losses.L2(lam))
    history = trainer.fit(X, y, epochs=1, batch_size=40, seed=0)  # lr 0: weights fixed
    w = np.concatenate([model[0].weight.ravel(), model[2].weight.ravel()]).astype(np.float64)
    penalty = lam * float(w @ w)
    assert penalty > 0.1
    data_loss = trainer.evaluate(X, y)["loss"]
    assert history["loss"][0] == pytest.approx(data_loss + penalty, rel=1e-5)
    # and its gradient was added: the weights' gradient holds 2 lam W beyond the data's
    plain = mlp()
    plain.load_state_dict(model.state_dict())
    losses_ = losses.SoftmaxCrossEntropy()
    plain.zero_grad()
    losses_.forward(plain.forward(X), y)
    plain.backward(losses_.backward())
    np.testing.assert_allclose(model[0].weight.grad,
                               plain[0].weight.grad + 2 * lam * model[0].weight,
                               rtol=1e-4, atol=1e-6)


def test_clip_norm_bounds_every_step():
    norms = []

    class Norm(fastnn.Callback):
        def on_batch_end(self, trainer, step, loss):
            norms.append(float(np.linalg.norm(trainer.model.arena.grad.astype(np.float64))))

    X, y = blobs(40)
    X *= 20  # large inputs: large gradients
    for clip in (None, 0.1):
        norms.clear()
        model = mlp()
        trainer_for(model, opt=optim.SGD(model, 1e-3), clip_norm=clip,
                    callbacks=[Norm()]).fit(X, y, epochs=1, batch_size=10, seed=0)
        if clip is None:
            assert max(norms) > 1.0
        else:
            assert max(norms) <= clip * (1 + 1e-4)


def test_schedule_steps_once_per_epoch():
    X, y = blobs(30)
    model = mlp()
    opt = optim.SGD(model, 0.1)
    sched = optim.StepDecay(opt, step_size=2, gamma=0.5)
    trainer = trainer_for(model, opt=opt, schedule=sched)
    history = trainer.fit(X, y, epochs=5, batch_size=4, seed=0)  # 8 steps per epoch
    assert history["lr"] == pytest.approx([0.1, 0.1, 0.05, 0.05, 0.025])
    assert sched.t == 5
    assert opt.param_groups[0]["lr"] == pytest.approx(0.025)


def test_reduce_on_plateau_steps_with_val_loss_else_loss():
    seen = []

    class Watched(optim.ReduceOnPlateau):
        def step(self, metric):
            seen.append(metric)
            super().step(metric)

    X, y = blobs(30)
    Xv, yv = blobs(20, seed=3)
    for validation in ((Xv, yv), None):
        seen.clear()
        model = mlp()
        opt = optim.Adam(model, 0.01)
        trainer = trainer_for(model, opt=opt, schedule=Watched(opt, factor=0.5, patience=0))
        history = trainer.fit(X, y, epochs=3, batch_size=10, validation_data=validation,
                              seed=0)
        assert seen == history["val_loss" if validation else "loss"]


def test_reduce_on_plateau_reduces_lr_when_val_loss_stalls():
    X, y = blobs(30)
    Xv, yv = blobs(20, seed=3)
    yv = (yv + 1) % 3  # a validation set the model cannot fit: its loss rises
    model = mlp()
    opt = optim.Adam(model, 0.02)
    trainer = trainer_for(model, opt=opt, schedule=optim.ReduceOnPlateau(opt, 0.5, 0))
    history = trainer.fit(X, y, epochs=4, batch_size=10, validation_data=(Xv, yv), seed=0)
    rises = sum(b >= a for a, b in zip(history["val_loss"], history["val_loss"][1:]))
    assert rises >= 1
    assert history["lr"][-1] < 0.02


# ---------------------------------------------------------------- resume


def _resumable(seed, dropout_seed=1):
    model = nn.Sequential(
        nn.Linear(5, 16, seed=seed), nn.BatchNorm1d(16), nn.ReLU(),
        nn.Dropout(0.3, seed=dropout_seed), nn.Linear(16, 3, init="xavier", seed=seed + 2))
    opt = optim.Adam(model, 0.01, weight_decay=1e-3)  # two groups: weights, the rest
    sched = optim.CosineDecay(opt, t_max=4, eta_min=1e-4)
    return trainer_for(model, opt=opt, schedule=sched)


def _check_resume(tmp_path, make):
    """2 epochs, checkpoint, 2 more in a fresh trainer == 4 epochs straight, bitwise."""
    X, y = blobs(77, d=5)
    Xv, yv = blobs(20, d=5, seed=2)

    straight = make(0)
    straight.fit(X, y, epochs=4, batch_size=16, validation_data=(Xv, yv), seed=11)

    first = make(0)
    first.fit(X, y, epochs=2, batch_size=16, validation_data=(Xv, yv), seed=11)
    path = tmp_path / "ck.safetensors"
    first.save_checkpoint(path)

    resumed = make(1000)  # other initial weights
    assert states_differ(resumed.model.state_dict(), first.model.state_dict())
    resumed.load_checkpoint(path)
    assert_states_equal(resumed.model.state_dict(), first.model.state_dict())
    assert resumed.epoch == 2
    resumed.fit(X, y, epochs=2, batch_size=16, validation_data=(Xv, yv), seed=None)

    assert_states_equal(resumed.model.state_dict(), straight.model.state_dict())
    opt_a, opt_b = resumed.optimizer.state_dict(), straight.optimizer.state_dict()
    assert opt_a["step_count"] == opt_b["step_count"]
    assert len(opt_a["state"]) == len(opt_b["state"])
    for sa, sb in zip(opt_a["state"], opt_b["state"]):
        for name in ("m", "v"):
            assert sa[name].tobytes() == sb[name].tobytes()
    assert resumed.schedule.get_last_lr() == straight.schedule.get_last_lr()
    for key in ("loss", "accuracy", "val_loss", "val_accuracy", "lr"):
        assert resumed.history[key] == straight.history[key], key


def test_resume_from_a_checkpoint_is_bitwise_identical(tmp_path):
    _check_resume(tmp_path, _resumable)


def test_resume_without_dropout_is_bitwise_identical(tmp_path):
    def make(seed):
        model = nn.Sequential(nn.Linear(5, 16, seed=seed), nn.BatchNorm1d(16), nn.ReLU(),
                              nn.Linear(16, 3, init="xavier", seed=seed + 2))
        opt = optim.Adam(model, 0.01, weight_decay=1e-3)
        return trainer_for(model, opt=opt, schedule=optim.StepDecay(opt, 1, 0.5))

    _check_resume(tmp_path, make)


def test_resume_with_the_default_dropout_seed(tmp_path):
    """Dropout(p) draws a random seed by default, so a trainer "built like the one that
    saved" has another seed; the seed is a buffer restored from the checkpoint, so
    load_checkpoint accepts it, and the resumed run continues the saved one exactly."""
    X, y = blobs(77, d=5)
    first = _resumable(0, dropout_seed=None)
    first.fit(X, y, epochs=2, batch_size=16, seed=11)
    path = tmp_path / "ck.safetensors"
    first.save_checkpoint(path)
    resumed = _resumable(1000, dropout_seed=None)
    resumed.load_checkpoint(path)
    first.fit(X, y, epochs=2, batch_size=16)
    resumed.fit(X, y, epochs=2, batch_size=16)
    assert_states_equal(resumed.model.state_dict(), first.model.state_dict())


def test_checkpoint_of_a_different_optimizer_is_rejected(tmp_path):
    from fastnn.io import FormatError

    X, y = blobs(20, d=5)
    first = _resumable(0)
    first.fit(X, y, epochs=1, batch_size=8, seed=0)
    first.save_checkpoint(tmp_path / "ck.safetensors")
    model = _resumable(0).model
    other = trainer_for(model, opt=optim.SGD(model, 0.1))
    with pytest.raises(FormatError, match="Adam"):
        other.load_checkpoint(tmp_path / "ck.safetensors")
    wider = trainer_for(mlp(5, 3, hidden=17))
    with pytest.raises(FormatError, match="architecture"):
        wider.load_checkpoint(tmp_path / "ck.safetensors")


# ---------------------------------------------------------------- History.plot


def _small_history():
    history = fastnn.History()
    for e in range(3):
        history.append({"loss": 1.0 / (e + 1), "accuracy": 0.5 + 0.1 * e,
                        "val_loss": 1.2 / (e + 1), "val_accuracy": 0.4 + 0.1 * e})
    return history


def test_history_append_and_epochs():
    history = _small_history()
    assert history.epochs == 3
    assert history["loss"] == [1.0, 0.5, 1 / 3]
    assert fastnn.History().epochs == 0


def test_history_plot_writes_a_png(tmp_path):
    pytest.importorskip("matplotlib")
    path = tmp_path / "curves.png"
    assert _small_history().plot(path) == path
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_history_plot_leaves_pyplot_and_the_backend_alone(tmp_path, matplotlib_untouched):
    """A notebook's backend must survive: no matplotlib.use, no pyplot figure."""
    path = tmp_path / "curves.png"
    _small_history().plot(path)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_history_plot_without_matplotlib(tmp_path, monkeypatch):
    for name in list(sys.modules):
        if name == "matplotlib" or name.startswith("matplotlib."):
            monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import fails
    with pytest.raises(ImportError, match="matplotlib"):
        _small_history().plot(tmp_path / "curves.png")
    assert not (tmp_path / "curves.png").exists()
