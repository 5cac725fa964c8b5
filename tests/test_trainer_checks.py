"""The Trainer checks its data whole before the first update, naming the first bad row:
X finite in the model's dtype (a float64 1e39 is inf in float32), float targets too,
class labels in [0, outputs) (also validation_data's), and the checks go a block of
rows at a time (a broadcast view of millions of rows allocates nothing of its size).
A finite loss with a non-finite gradient stops training before the update."""

import math
import tracemalloc

import numpy as np
import pytest

import fastnn
from fastnn import _checks, losses, nn, optim


def _classifier(dtype=np.float32):
    model = nn.Sequential(nn.Linear(4, 8, seed=0, dtype=dtype), nn.ReLU(),
                          nn.Linear(8, 3, seed=1, dtype=dtype))
    opt = optim.SGD(model, lr=0.1)
    return model, opt, fastnn.Trainer(model, losses.SoftmaxCrossEntropy(), opt,
                                      progress=False)


def _regressor(outputs=2):
    model = nn.Sequential(nn.Linear(4, outputs, seed=0))
    opt = optim.SGD(model, lr=0.01)
    return model, opt, fastnn.Trainer(model, losses.MSE(), opt, progress=False)


def _unchanged(model, opt, before):
    assert opt.step_count == 0
    for name, value in model.state_dict().items():
        np.testing.assert_array_equal(value, before[name], err_msg=name)


@pytest.fixture
def data(rng):
    return rng.standard_normal((200, 4)), rng.integers(0, 3, 200)


@pytest.mark.parametrize("call", ["fit", "evaluate", "predict", "predict_proba"])
def test_float64_values_that_overflow_float32_are_refused(data, call):
    X, y = data
    X = X.copy()
    X[137, 2] = -1e39
    model, opt, trainer = _classifier()
    before = model.state_dict()
    args = (X, y) if call in ("fit", "evaluate") else (X,)
    with pytest.raises(ValueError, match=r"^X: row 137 holds -1e.39, beyond the range of float32"):
        getattr(trainer, call)(*args)
    _unchanged(model, opt, before)
    # the same values are fine for a float64 model
    getattr(_classifier(np.float64)[2], call)(*args)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_x_names_the_row(data, bad):
    X, y = data
    X = X.astype(np.float32)
    X[151, 0] = bad
    with pytest.raises(ValueError, match=r"^X: contains NaN or inf .* row 151"):
        _classifier()[2].fit(X, y)


def test_images_name_the_sample(rng):
    model = nn.Sequential(nn.Conv2d(1, 2, 3, seed=0), nn.Flatten(), nn.Linear(8, 3, seed=1))
    trainer = fastnn.Trainer(model, losses.SoftmaxCrossEntropy(), optim.SGD(model, lr=0.1),
                             progress=False)
    X = rng.random((30, 1, 4, 4))
    X[29, 0, 3, 3] = 5e38
    with pytest.raises(ValueError, match=r"^X: row 29 holds 5e.38"):
        trainer.fit(X, rng.integers(0, 3, 30))


@pytest.mark.parametrize(("label", "match"), [
    (3, r"^y: row 190 has label 3; class labels must be in \[0, 3\)"),
    (-1, r"^y: row 190 has label -1; class labels must be >= 0"),
    (2**40, r"^y: row 190 has label 1099511627776"),
])
def test_a_bad_label_late_in_the_data_stops_fit_before_any_update(data, label, match):
    X, y = data
    y = y.astype(np.int64)
    y[190] = label  # in the last batch without shuffling
    model, opt, trainer = _classifier()
    before = model.state_dict()
    with pytest.raises(ValueError, match=match):
        trainer.fit(X, y, batch_size=10, shuffle=False)
    _unchanged(model, opt, before)
    assert len(trainer.history.get("loss", [])) == 0


def test_a_bad_validation_label_stops_fit_before_any_update(data):
    X, y = data
    yv = y.copy()
    yv[-1] = 7
    model, opt, trainer = _classifier()
    before = model.state_dict()
    with pytest.raises(ValueError, match=r"^validation y: row 199 has label 7"):
        trainer.fit(X, y, validation_data=(X, yv))
    _unchanged(model, opt, before)


def test_validation_x_checked_in_the_dtype(data):
    X, y = data
    Xv = X.copy()
    Xv[5] = 1e300
    _, opt, trainer = _classifier()
    with pytest.raises(ValueError, match=r"^validation X: row 5 holds 1e.300"):
        trainer.fit(X, y, validation_data=(Xv, y))
    assert opt.step_count == 0


def test_evaluate_names_the_bad_label(data):
    X, y = data
    y = y.copy()
    y[77] = 3
    with pytest.raises(ValueError, match=r"^y: row 77 has label 3"):
        _classifier()[2].evaluate(X, y)


def test_labels_are_checked_again_by_the_next_fit(data):
    X, y = data
    _, opt, trainer = _classifier()
    trainer.fit(X, y, epochs=1)
    y = y.copy()
    y[-1] = 9  # in the last batch
    steps = opt.step_count
    with pytest.raises(ValueError, match=r"^y: row 199 has label 9"):
        trainer.fit(X, y, epochs=1, batch_size=10, shuffle=False)
    assert opt.step_count == steps


@pytest.mark.parametrize(("bad", "match"), [
    (np.nan, "^y: contains NaN or inf .* row 150"),
    (1e40, "^y: row 150 holds 1e.40, beyond the range of float32"),
])
def test_regression_targets(data, bad, match):
    X, _ = data
    Y = np.zeros((200, 2))
    Y[150, 1] = bad
    model, opt, trainer = _regressor()
    before = model.state_dict()
    with pytest.raises(ValueError, match=match):
        trainer.fit(X, Y, batch_size=10, shuffle=False)
    _unchanged(model, opt, before)


def test_validation_targets_of_another_width_stop_fit_before_any_update(data):
    X, _ = data
    _, opt, trainer = _regressor()
    with pytest.raises(ValueError, match=r"^validation y: 3 targets per sample, but the model "
                                          "gives 2"):
        trainer.fit(X, np.zeros((200, 2)), validation_data=(X, np.zeros((200, 3))))
    assert opt.step_count == 0


# ---------------------------------------------------------------- non-finite gradients


def _overflowing():
    """float32 inputs whose loss is finite (it is summed in float64) but whose weight
    gradient overflows float32."""
    model = nn.Sequential(nn.Linear(4, 1, seed=0))
    opt = optim.Adam(model)
    trainer = fastnn.Trainer(model, losses.MSE(), opt, progress=False)
    X = np.full((8, 4), 2.3e19, np.float32)
    return model, opt, trainer, X, np.zeros((8, 1), np.float32)


def test_finite_loss_with_non_finite_gradient_stops_fit():
    model, opt, trainer, X, y = _overflowing()
    before = model.state_dict()
    with pytest.raises(FloatingPointError, match=r"non-finite gradient.*epoch 1, step 1"):
        trainer.fit(X, y)
    _unchanged(model, opt, before)


def test_finite_loss_with_non_finite_gradient_stops_train_step():
    model, opt, trainer, X, y = _overflowing()
    before = model.state_dict()
    with pytest.raises(FloatingPointError, match=r"non-finite gradient"):
        trainer.train_step(X, y)
    _unchanged(model, opt, before)


def test_a_finite_gradient_whose_square_overflows_is_not_refused():
    """The check is for finiteness, not a norm: float64 gradients of about 1e300 (their
    squares overflow float64) with a finite loss train on."""
    model = nn.Sequential(nn.Linear(4, 1, seed=0, dtype=np.float64))
    opt = optim.SGD(model, lr=1e-300)
    trainer = fastnn.Trainer(model, losses.MSE(), opt, progress=False)
    X = np.full((8, 4), 1e150)
    loss = trainer.train_step(X, np.zeros((8, 1)))
    assert math.isfinite(loss) and loss > 1e299
    assert opt.step_count == 1
    assert all(np.isfinite(p).all() for p in model.parameters())


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("n", [0, 1, 63, 64, 65, 8191, 8192, 8193, 100_003])
def test_the_finiteness_kernel_finds_any_non_finite_value(dtype, n):
    """optim.all_finite, behind the check: True for finite values of every size (the
    largest, -0.0, subnormals), False for one inf, -inf or NaN anywhere (the first
    element, a chunk's last and next, the tail's last), at 1 and 2 threads."""
    from fastnn._kernels import optim as kernels

    info = np.finfo(dtype)
    x = (np.random.default_rng(n).standard_normal(n) * 1e3).astype(dtype)
    x[::7] = info.max
    x[1::7] = -info.max
    x[2::7] = -0.0
    x[3::7] = info.smallest_subnormal
    assert np.isfinite(x).all()
    for threads in (1, 2):
        assert kernels.all_finite(x, threads) is True
    for at in sorted({0, 8191, 8192, n // 2, n - 1} & set(range(n))):
        for bad in (np.inf, -np.inf, np.nan):
            y = x.copy()
            y[at] = bad
            for threads in (1, 2):
                assert kernels.all_finite(y, threads) is False, (at, bad, threads)


def test_the_gradient_check_covers_only_what_the_optimizer_updates(rng):
    """A frozen parameter's gradient is not accumulated: training goes on."""
    model = nn.Sequential(nn.Linear(4, 8, seed=0), nn.ReLU(), nn.Linear(8, 3, seed=1))
    model[0].requires_grad_(False)
    trainer = fastnn.Trainer(model, losses.SoftmaxCrossEntropy(),
                             optim.SGD(model[2].parameters(), lr=0.1), progress=False)
    trainer.fit(rng.standard_normal((40, 4)), rng.integers(0, 3, 40), epochs=2)
    assert all(np.isfinite(p).all() for p in model.parameters())


@pytest.mark.parametrize("clip_norm", [0.0, -1.0, float("nan"), float("inf"), "1"])
def test_clip_norm_is_validated(clip_norm):
    model = nn.Sequential(nn.Linear(2, 2))
    with pytest.raises(ValueError, match=r"^clip_norm"):
        fastnn.Trainer(model, losses.MSE(), optim.SGD(model, lr=0.1), clip_norm=clip_norm)


# ---------------------------------------------------------------- bounded checks


def _peak(fn):
    tracemalloc.start()
    try:
        fn()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_checks_of_a_broadcast_view_allocate_nothing_of_its_size():
    rows = 10**7  # 2.4 GB as float64 if it were copied; its isfinite mask 0.6 GB
    X = np.broadcast_to(np.arange(32, dtype=np.float64), (rows, 32))
    y = np.broadcast_to(np.array([1]), (rows,))
    _, _, trainer = _classifier()
    trainer.model = nn.Sequential(nn.Linear(32, 3))
    assert _peak(lambda: trainer._check_xy(X, y)) < 4 * 2**20
    Y = np.broadcast_to(np.ones(2), (rows, 2))
    _, _, regressor = _regressor()
    assert _peak(lambda: regressor._check_xy(X, Y)) < 4 * 2**20


def test_check_rows_finite_names_the_first_bad_row_of_many_blocks(rng):
    x = rng.standard_normal((300000, 3))
    x[123456, 1] = np.nan
    x[200000, 0] = np.inf
    with pytest.raises(ValueError, match=r"row 123456"):
        _checks.check_rows_finite(x, "x")
    x[123456, 1] = 1e39
    with pytest.raises(ValueError, match=r"row 123456 holds 1e.39"):
        _checks.check_rows_finite(x, "x", np.float32)
    with pytest.raises(ValueError, match=r"row 200000"):
        _checks.check_rows_finite(x, "x", np.float64)
    ints = np.full((10, 2), np.iinfo(np.int64).max)
    assert _checks.check_rows_finite(ints, "x", np.float32) is ints


def test_check_labels(rng):
    y = rng.integers(0, 5, 100000)
    assert _checks.check_labels(y, "y", 5) is y
    y[99999] = 5
    with pytest.raises(ValueError, match=r"^y: row 99999 has label 5; .* in \[0, 5\)"):
        _checks.check_labels(y, "y", 5)
    _checks.check_labels(y, "y")
    y[3] = -2
    with pytest.raises(ValueError, match=r"^y: row 3 has label -2"):
        _checks.check_labels(y, "y")


def test_evaluate_of_a_broadcast_view_runs_batch_by_batch():
    """The loss and its gradient buffers of every row at once were 9 GB for 10**8 rows."""
    rows = 10**6
    model = nn.Sequential(nn.Linear(32, 10, seed=0))
    trainer = fastnn.Trainer(model, losses.SoftmaxCrossEntropy(), progress=False)
    row = np.linspace(-1, 1, 32)
    X = np.broadcast_to(row, (rows, 32))
    y = np.broadcast_to(np.array([4]), (rows,))
    result = {}
    peak = _peak(lambda: result.update(trainer.evaluate(X, y, batch_size=4096)))
    assert peak < 8 * 2**20  # 40 MB of scores alone if computed whole
    one = trainer.evaluate(X[:1], y[:1])
    assert result["loss"] == pytest.approx(one["loss"], rel=1e-12)
    assert result["accuracy"] == one["accuracy"]


@pytest.mark.parametrize("batch_size", [7, 100, 1024])
def test_evaluate_in_batches_matches_numpy(rng, batch_size):
    model = nn.Sequential(nn.Linear(5, 4, seed=0, dtype=np.float64))
    trainer = fastnn.Trainer(model, losses.SoftmaxCrossEntropy(), progress=False)
    X, y = rng.standard_normal((100, 5)), rng.integers(0, 4, 100)
    s = X @ model[0].weight + model[0].bias
    logp = s - s.max(axis=1, keepdims=True)
    logp -= np.log(np.exp(logp).sum(axis=1, keepdims=True))
    result = trainer.evaluate(X, y, batch_size=batch_size)
    assert result["loss"] == pytest.approx(-logp[np.arange(100), y].mean(), rel=1e-12)
    assert result["accuracy"] == np.mean(s.argmax(axis=1) == y)


@pytest.mark.parametrize(("bad", "match"), [
    (np.nan, r"0\.weight: contains NaN or inf"),
    (-np.inf, r"0\.weight: contains NaN or inf"),
    (1e39, r"0\.weight: row 1 holds 1e\+39, beyond the range of float32"),
])
def test_load_state_dict_refuses_what_is_not_finite_in_the_model(bad, match):
    model = nn.Sequential(nn.Linear(4, 3, seed=0), nn.BatchNorm1d(3))
    before = model.state_dict()
    state = {k: v.astype(np.float64) for k, v in before.items()}
    state["0.weight"][1, 2] = bad
    with pytest.raises(ValueError, match=match):
        model.load_state_dict(state)
    for name, value in model.state_dict().items():  # nothing copied
        np.testing.assert_array_equal(value, before[name], err_msg=name)


@pytest.mark.parametrize("cause", ["loss", "label"])
def test_a_refused_step_leaves_the_buffers_as_they_were(rng, cause):
    """A train-mode forward updates BatchNorm's running statistics and Dropout's step
    before the loss is known; a step refused before its update puts them back (they
    were NaN after a non-finite loss, and predict then said class 0 for every row)."""
    model = nn.Sequential(nn.Linear(4, 8, seed=0), nn.BatchNorm1d(8), nn.ReLU(),
                          nn.Dropout(0.2, seed=1), nn.Linear(8, 3, seed=2))
    trainer = fastnn.Trainer(model, losses.SoftmaxCrossEntropy(), optim.SGD(model, lr=0.1),
                             progress=False)
    X = rng.random((64, 4)).astype(np.float32)
    y = rng.integers(0, 3, 64)
    trainer.fit(X, y, epochs=1)
    if cause == "loss":
        model[0].weight[0, 0] = 3e38  # finite, but the activations overflow
        X[:, 0] = 10.0
    else:
        y[-1] = 5
    before = model.state_dict()
    with pytest.raises(FloatingPointError if cause == "loss" else ValueError):
        trainer.fit(X, y, epochs=1, batch_size=64)
    for name, value in model.state_dict().items():
        np.testing.assert_array_equal(value, before[name], err_msg=name)


def test_a_step_refused_for_its_gradient_leaves_the_buffers_as_they_were():
    model = nn.Sequential(nn.Dropout(0.1, seed=1), nn.Linear(4, 1, seed=0))
    trainer = fastnn.Trainer(model, losses.MSE(), optim.Adam(model), progress=False)
    before = model.state_dict()
    with pytest.raises(FloatingPointError, match="non-finite gradient"):
        trainer.train_step(np.full((8, 4), 2.2e19, np.float32), np.zeros((8, 1), np.float32))
    for name, value in model.state_dict().items():
        np.testing.assert_array_equal(value, before[name], err_msg=name)


def test_a_non_finite_loss_from_train_step_leaves_the_buffers_as_they_were():
    model = nn.Sequential(nn.Linear(2, 4, seed=0), nn.BatchNorm1d(4), nn.Linear(4, 1, seed=1))
    trainer = fastnn.Trainer(model, losses.MSE(), optim.SGD(model, lr=0.1), progress=False)
    before = model.state_dict()
    X = np.array([[np.inf, 0.0], [1.0, 2.0]], np.float32)
    assert not np.isfinite(trainer.train_step(X, np.zeros((2, 1), np.float32)))
    for name, value in model.state_dict().items():
        np.testing.assert_array_equal(value, before[name], err_msg=name)
