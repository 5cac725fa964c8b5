"""One model used from several threads at once: compiled plans and layers reuse their
workspaces and release the GIL, so every forward and backward holds the lock that a
model shares with its layers and with every model sharing one of them. Two threads
hammer one model (or two models sharing a layer) and every row they get is compared
with the single-threaded result; a backward from the wrong thread raises; fit trains
to the same weights while another thread evaluates the model."""

import copy
import pickle
import threading

import numpy as np
import pytest

import fastnn
from fastnn import losses, nn, optim

ROUNDS = 150


def _mlp(seed=0, compiled=True):
    model = nn.Sequential(nn.Linear(64, 128, seed=seed), nn.ReLU(),
                          nn.Linear(128, 128, seed=seed + 1), nn.ReLU(),
                          nn.Linear(128, 10, seed=seed + 2))
    model.compiled = compiled
    return model.eval()


def _hammer(jobs, rounds=ROUNDS):
    """Run each job (a callable returning the number of wrong results) `rounds` times,
    all jobs at once, each in its own thread; the total of wrong results and the
    exceptions raised."""
    wrong, errors = [0] * len(jobs), []
    start = threading.Barrier(len(jobs))

    def run(i, job):
        try:
            start.wait()
            for _ in range(rounds):
                wrong[i] += job()
        except Exception as exc:  # reported by the test, not lost in the thread
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i, job)) for i, job in enumerate(jobs)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sum(wrong), errors


@pytest.mark.parametrize("compiled", [True, False], ids=["compiled", "layer-by-layer"])
def test_two_threads_forward_one_model(rng, compiled):
    model = _mlp(compiled=compiled)
    # two batches of one size share a compiled plan (or a layer's workspaces); a third
    # of another size needs a plan (workspaces) of its own
    inputs = [rng.standard_normal((n, 64)).astype(np.float32) for n in (32, 32, 57)]
    expected = [model.forward(x) for x in inputs]

    def job(i):
        return lambda: int(not np.array_equal(model.forward(inputs[i]), expected[i]))

    wrong, errors = _hammer([job(0), job(1), job(2)], rounds=1500)
    assert errors == []
    assert wrong == 0


def test_two_models_sharing_a_layer(rng):
    """The shared Linear's workspaces serve both models layer by layer: they must not
    run it at once."""
    shared = nn.Linear(64, 32, seed=3)
    a = nn.Sequential(shared, nn.ReLU(), nn.Linear(32, 5, seed=4)).eval()
    b = nn.Sequential(shared, nn.Tanh(), nn.Linear(32, 7, seed=5)).eval()
    a.compiled = b.compiled = False
    xa = rng.standard_normal((40, 64)).astype(np.float32)
    xb = rng.standard_normal((40, 64)).astype(np.float32)
    ya, yb = a.forward(xa), b.forward(xb)
    hidden = np.maximum(shared.forward(xa), 0)

    # the third thread builds slices, a third model on the shared layer, as it goes
    wrong, errors = _hammer([lambda: int(not np.array_equal(a.forward(xa), ya)),
                             lambda: int(not np.array_equal(b.forward(xb), yb)),
                             lambda: int(not np.array_equal(a[0:2].forward(xa), hidden))])
    assert errors == []
    assert wrong == 0


def test_a_layer_alone_read_under_its_lock(rng):
    """A layer's output is its workspace: read under `locked()` it is the thread's own."""
    layer = nn.Linear(16, 8, seed=1)
    inputs = [rng.standard_normal((20, 16)).astype(np.float32) for _ in range(2)]
    expected = [x @ layer.weight + layer.bias for x in inputs]

    def job(i):
        def run():
            with layer.locked():
                y = layer.forward(inputs[i]).copy()
            return int(not np.allclose(y, expected[i], rtol=1e-5, atol=1e-6))
        return run

    wrong, errors = _hammer([job(0), job(1)])
    assert errors == []
    assert wrong == 0


def test_trainer_predict_and_evaluate_from_two_threads(rng):
    model = _mlp()
    trainer = fastnn.Trainer(model, losses.SoftmaxCrossEntropy(), progress=False)
    X = [rng.standard_normal((700, 64)) for _ in range(2)]  # float64: converted per batch
    y = [rng.integers(0, 10, 700) for _ in range(2)]
    proba = [trainer.predict_proba(x, batch_size=64) for x in X]
    scores = [trainer.evaluate(x, t, batch_size=100) for x, t in zip(X, y)]

    def predicting(i):
        return lambda: int(not np.array_equal(trainer.predict_proba(X[i], batch_size=64),
                                              proba[i]))

    def evaluating(i):
        return lambda: int(trainer.evaluate(X[i], y[i], batch_size=100) != scores[i])

    wrong, errors = _hammer([predicting(0), predicting(1), evaluating(0), evaluating(1)],
                            rounds=20)
    assert errors == []
    assert wrong == 0


def _training_setup():
    model = nn.Sequential(nn.Linear(20, 32, seed=1), nn.BatchNorm1d(32), nn.ReLU(),
                          nn.Dropout(0.3, seed=2), nn.Linear(32, 4, seed=3))
    opt = optim.SGD(model, lr=0.05, momentum=0.9)
    return model, fastnn.Trainer(model, losses.SoftmaxCrossEntropy(), opt, progress=False)


def test_fit_while_another_thread_evaluates(rng):
    """evaluate() switches the model to eval mode: a step of fit must still run in train
    mode (Dropout, batch statistics), on whole weights, so the weights end as those of
    the same fit alone."""
    X = rng.standard_normal((600, 20)).astype(np.float32)
    y = rng.integers(0, 4, 600)
    model, trainer = _training_setup()
    trainer.fit(X, y, epochs=2, batch_size=16, seed=0)
    expected = model.state_dict()

    model, trainer = _training_setup()
    done = threading.Event()
    errors = []

    def evaluate():
        try:
            while not done.is_set():
                trainer.predict(X[:50])
        except Exception as exc:
            errors.append(exc)

    watcher = threading.Thread(target=evaluate)
    watcher.start()
    try:
        trainer.fit(X, y, epochs=2, batch_size=16, seed=0)
    finally:
        done.set()
        watcher.join()
    assert errors == []
    for name, value in model.state_dict().items():
        np.testing.assert_array_equal(value, expected[name], err_msg=name)


@pytest.mark.parametrize("compiled", [True, False], ids=["compiled", "layer-by-layer"])
def test_backward_from_another_thread_raises(rng, compiled):
    model = _mlp(compiled=compiled).train()
    x = rng.standard_normal((8, 64)).astype(np.float32)
    model.forward(x)
    errors = []

    def backward():
        try:
            model.backward(np.ones((8, 10), np.float32))
        except RuntimeError as exc:
            errors.append(exc)

    t = threading.Thread(target=backward)
    t.start()
    t.join()
    assert len(errors) == 1 and "thread" in str(errors[0])
    model.backward(np.ones((8, 10), np.float32))  # the forward's own thread may


def test_copies_have_locks_of_their_own(rng):
    model = _mlp()
    x = rng.standard_normal((4, 64)).astype(np.float32)
    for clone in (copy.deepcopy(model), pickle.loads(pickle.dumps(model))):
        assert clone._group is not model._group
        assert all(m._group is clone._group for _, m in clone.modules())
        with model.locked():  # held here: a copy runs on in another thread
            out = []
            t = threading.Thread(target=lambda c=clone, out=out: out.append(c.forward(x)))
            t.start()
            t.join(timeout=30)
            assert not t.is_alive()
        np.testing.assert_array_equal(out[0], model.forward(x))


def test_a_subclass_forward_is_serialized_too():
    class Twice(nn.Module):
        def forward(self, x):
            return 2 * x

    assert getattr(Twice.forward, "serialized", False)
    assert Twice().forward(np.ones(3)).tolist() == [2, 2, 2]


def test_models_sharing_a_layer_share_one_lock_and_others_do_not():
    shared = nn.Linear(4, 4)
    a = nn.Sequential(shared, nn.ReLU())
    b = nn.Sequential(nn.Tanh(), shared)
    c = _mlp()
    assert a._group is b._group is shared._group is a[1]._group is b[0]._group
    assert c._group is not a._group
    assert a[0:1]._group is a._group  # a slice shares its layers
    appended = nn.ReLU()
    c.append(appended)
    assert appended._group is c._group


def test_a_model_of_another_thread_runs_while_one_is_held(rng):
    """Models without a shared layer do not wait for each other."""
    a, b = _mlp(0), _mlp(10)
    x = rng.standard_normal((4, 64)).astype(np.float32)
    out = []
    with a.locked():
        t = threading.Thread(target=lambda: out.append(b.forward(x)))
        t.start()
        t.join(timeout=30)
        assert not t.is_alive() and len(out) == 1
