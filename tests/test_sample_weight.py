"""Weighted losses and Trainer.fit's Keras options: sample_weight, class_weight and
validation_split, against NumPy references in float64."""

import _ensemble_factories as factories
import numpy as np
import pytest

import fastnn
from fastnn import augment, losses, nn, optim


def blobs(n=40, d=4, k=3, seed=0, dtype=np.float64):
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((k, d)) * 2
    y = rng.integers(0, k, n)
    return (centers[y] + rng.standard_normal((n, d))).astype(dtype), y


def weights(n, seed=1):
    return np.random.default_rng(seed).uniform(0.1, 3.0, n)


def log_softmax(s):
    s = s - s.max(axis=1, keepdims=True)
    return s - np.log(np.exp(s).sum(axis=1, keepdims=True))


# ---------------------------------------------------------------- losses


def test_weighted_cross_entropy_matches_numpy():
    rng = np.random.default_rng(0)
    s, y, w = rng.standard_normal((7, 4)), rng.integers(0, 4, 7), weights(7)
    loss = losses.SoftmaxCrossEntropy()
    value = loss.forward(s, y, sample_weight=w)
    rows = -log_softmax(s)[np.arange(7), y]
    assert value == pytest.approx((w * rows).sum() / 7, rel=1e-12)
    grad = np.exp(log_softmax(s))
    grad[np.arange(7), y] -= 1
    np.testing.assert_allclose(loss.backward(), w[:, None] * grad / 7, rtol=1e-12,
                               atol=1e-15)


@pytest.mark.parametrize("make, targets", [
    (losses.SoftmaxCrossEntropy, "labels"), (losses.MulticlassHinge, "labels"),
    (losses.MSE, "values"), (losses.BCEWithLogits, "binary")])
def test_each_row_is_weighted_and_the_mean_stays_over_the_rows(make, targets):
    """Weighted value = sum_i w_i l_i / N, l_i the unweighted loss of row i alone; the
    gradient is the unweighted one with row i scaled by w_i."""
    rng = np.random.default_rng(3)
    n = 6
    s = rng.standard_normal((n, 3))
    y = {"labels": rng.integers(0, 3, n), "values": rng.standard_normal((n, 3)),
         "binary": (rng.random((n, 3)) > 0.5).astype(np.float64)}[targets]
    w = weights(n)
    w[2] = 0.0
    rows = np.array([make().forward(s[i:i + 1], y[i:i + 1]) for i in range(n)])
    plain = make()
    plain.forward(s, y)
    weighted = make()
    assert weighted.forward(s, y, sample_weight=w) == pytest.approx((w * rows).sum() / n,
                                                                    rel=1e-12)
    np.testing.assert_allclose(weighted.backward(), w[:, None] * plain.backward(),
                               rtol=1e-12, atol=1e-17)


@pytest.mark.parametrize("w, error, match", [
    (np.ones(5), ValueError, r"shape \(4,\)"), (-np.ones(4), ValueError, ">= 0"),
    (np.array([1, np.nan, 1, 1]), ValueError, "finite"),
    (np.array(["a"] * 4), TypeError, "numbers")])
def test_loss_rejects_bad_sample_weight(w, error, match):
    with pytest.raises(error, match="sample_weight: .*" + match):
        losses.SoftmaxCrossEntropy().forward(np.zeros((4, 3)), np.zeros(4, np.intp), w)


# ---------------------------------------------------------------- Trainer.fit


def fit_once(model, X, y, loss=None, lr=0.5, **fit):
    """One full-batch SGD step in the natural order: returns the gradient it took."""
    before = [np.array(p) for p in model.parameters()]
    t = fastnn.Trainer(model, loss or losses.SoftmaxCrossEntropy(), optim.SGD(model, lr),
                       progress=False)
    t.fit(X, y, epochs=1, batch_size=len(X), shuffle=False, **fit)
    return [(b - np.array(p)) / lr for b, p in zip(before, model.parameters())], t


def test_weighted_step_is_the_gradient_of_the_weighted_mean():
    """sum_i w_i l_i / sum_i w_i for a linear softmax classifier, by hand."""
    X, y = blobs()
    w = weights(len(X))
    model = nn.Sequential(nn.Linear(4, 3, seed=0, dtype=np.float64))
    W, b = np.array(model[0].weight), np.array(model[0].bias)
    (dW, db), _ = fit_once(model, X, y, sample_weight=w)
    p = np.exp(log_softmax(X @ W + b))
    p[np.arange(len(X)), y] -= 1
    g = w[:, None] * p / w.sum()
    np.testing.assert_allclose(dW, X.T @ g, rtol=1e-9, atol=1e-13)
    np.testing.assert_allclose(db, g.sum(axis=0), rtol=1e-9, atol=1e-13)


def test_weighted_mlp_step_matches_a_numerical_gradient():
    X, y = blobs(n=12)
    w = weights(12)
    cw = {0: 2.0, 2: 0.5}
    model = nn.Sequential(nn.Linear(4, 5, seed=0, dtype=np.float64), nn.Tanh(),
                          nn.Linear(5, 3, seed=1, dtype=np.float64))
    params = [np.array(p) for p in model.parameters()]
    row_w = w * np.array([cw.get(c, 1.0) for c in y])

    def objective(W1, b1, W2, b2):
        rows = -log_softmax(np.tanh(X @ W1 + b1) @ W2 + b2)[np.arange(12), y]
        return (row_w * rows).sum() / row_w.sum()

    grads, _ = fit_once(model, X, y, sample_weight=w, class_weight=cw)
    eps = 1e-6
    for k, p in enumerate(params):
        numeric = np.zeros_like(p)
        for i in np.ndindex(p.shape):
            hi = [q.copy() for q in params]
            lo = [q.copy() for q in params]
            hi[k][i] += eps
            lo[k][i] -= eps
            numeric[i] = (objective(*hi) - objective(*lo)) / (2 * eps)
        np.testing.assert_allclose(grads[k], numeric, rtol=1e-5, atol=1e-8)


def test_weighted_regression_step_matches_numpy():
    rng = np.random.default_rng(2)
    X, Y = rng.standard_normal((20, 3)), rng.standard_normal((20, 2))
    w = weights(20)
    model = nn.Sequential(nn.Linear(3, 2, seed=0, dtype=np.float64))
    W, b = np.array(model[0].weight), np.array(model[0].bias)
    (dW, db), _ = fit_once(model, X, Y, loss=losses.MSE(), lr=0.1, sample_weight=w)
    g = 2 * w[:, None] * (X @ W + b - Y) / (w.sum() * 2)  # mean over the 2 outputs too
    np.testing.assert_allclose(dW, X.T @ g, rtol=1e-9, atol=1e-13)
    np.testing.assert_allclose(db, g.sum(axis=0), rtol=1e-9, atol=1e-13)


def test_zero_weight_rows_are_as_if_left_out():
    X, y = blobs()
    w = np.ones(len(X))
    w[::3] = 0
    a, _ = fit_once(nn.Sequential(nn.Linear(4, 3, seed=0, dtype=np.float64)), X, y,
                    sample_weight=w)
    b, _ = fit_once(nn.Sequential(nn.Linear(4, 3, seed=0, dtype=np.float64)),
                    X[w > 0], y[w > 0])
    for u, v in zip(a, b):
        np.testing.assert_allclose(u, v, rtol=1e-12, atol=1e-15)


def train(X, y, model_seed=0, **fit):
    model = nn.Sequential(nn.Linear(4, 8, seed=model_seed), nn.ReLU(),
                          nn.Linear(8, 3, seed=model_seed + 1))
    t = fastnn.Trainer(model, losses.SoftmaxCrossEntropy(), optim.Adam(model, 0.01),
                       progress=False)
    t.fit(X, y, epochs=3, batch_size=8, seed=0, **fit)
    return model.state_dict(), t


def assert_states_equal(a, b):
    for name in a:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)


def test_unit_weights_are_no_weights_bitwise():
    X, y = blobs(dtype=np.float32)
    assert_states_equal(train(X, y)[0], train(X, y, sample_weight=np.ones(len(X)))[0])
    assert_states_equal(train(X, y)[0], train(X, y, class_weight={0: 1, 1: 1.0})[0])


def test_class_weight_is_a_per_row_weight_multiplied_with_sample_weight():
    X, y = blobs(dtype=np.float32)
    cw = {0: 3.0, 1: 0.5}  # class 2 unnamed: weight 1
    sw = weights(len(X))
    per_row = np.array([cw.get(c, 1.0) for c in y])
    assert_states_equal(train(X, y, class_weight=cw)[0], train(X, y, sample_weight=per_row)[0])
    assert_states_equal(train(X, y, class_weight=cw, sample_weight=sw)[0],
                        train(X, y, sample_weight=sw * per_row)[0])


def test_only_the_weights_ratios_matter():
    X, y = blobs(dtype=np.float64)
    w = weights(len(X))
    (a, b), _ = fit_once(nn.Sequential(nn.Linear(4, 3, seed=0, dtype=np.float64)), X, y,
                         sample_weight=w)
    (c, d), _ = fit_once(nn.Sequential(nn.Linear(4, 3, seed=0, dtype=np.float64)), X, y,
                         sample_weight=7 * w)
    np.testing.assert_allclose(a, c, rtol=1e-12)
    np.testing.assert_allclose(b, d, rtol=1e-12)


def test_bce_class_weight_weighs_the_positive_rows():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((30, 4)).astype(np.float32)
    y = (rng.random(30) > 0.7).astype(np.float32)

    def run(**fit):
        model = nn.Sequential(nn.Linear(4, 1, seed=0))
        t = fastnn.Trainer(model, losses.BCEWithLogits(), optim.SGD(model, 0.1),
                           progress=False)
        t.fit(X, y.reshape(-1, 1), epochs=2, batch_size=10, seed=0, **fit)
        return model.state_dict()

    assert_states_equal(run(class_weight={1: 4.0}),
                        run(sample_weight=np.where(y > 0.5, 4.0, 1.0)))


def test_cnn_images_with_augmentation_take_class_weight():
    rng = np.random.default_rng(0)
    X = rng.random((24, 1, 8, 8)).astype(np.float32)
    y = rng.integers(0, 3, 24)
    cw = {0: 2.0, 1: 0.25, 2: 1.0}

    def run(**fit):
        model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1, seed=0), nn.ReLU(),
                              nn.MaxPool2d(2), nn.Flatten(), nn.Dropout(0.2, seed=1),
                              nn.Linear(64, 3, seed=2))
        t = fastnn.Trainer(model, losses.SoftmaxCrossEntropy(), optim.Adam(model, 0.01),
                           augment=augment.Compose([augment.RandomTranslate(1)], seed=0),
                           progress=False)
        t.fit(X, y, epochs=2, batch_size=8, seed=0, **fit)
        return model.state_dict(), t

    weighted, t = run(class_weight=cw)
    assert np.isfinite(t.history["loss"]).all()
    assert_states_equal(weighted, run(sample_weight=np.array([cw[c] for c in y]))[0])
    assert not np.array_equal(weighted["5.weight"], run()[0]["5.weight"])


def test_ensemble_members_train_with_sample_weight():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((40, factories.N_FEATURES)).astype(np.float32)
    y = rng.integers(0, factories.N_CLASSES, 40)
    w = weights(40)
    ens = fastnn.Ensemble(factories.small_classifier, n=2, seed=3)
    ens.fit(X, y, epochs=2, batch_size=8, sample_weight=w, class_weight={0: 2.0})
    for seed, member in zip(ens.seeds, ens.members):
        alone = factories.small_classifier(seed)
        alone.fit(X, y, epochs=2, batch_size=8, seed=seed, sample_weight=w,
                  class_weight={0: 2.0})
        assert_states_equal(member.model.state_dict(), alone.model.state_dict())


# ---------------------------------------------------------------- validation_split


def test_validation_split_holds_out_the_last_samples_before_shuffling():
    X, y = blobs(n=50, dtype=np.float32)
    w = weights(50)
    cut = 40  # Keras: ceil(50 * (1 - 0.2))
    split_state, split = train(X, y, validation_split=0.2, sample_weight=w)
    data_state, data = train(X[:cut], y[:cut], sample_weight=w[:cut],
                             validation_data=(X[cut:], y[cut:]))
    assert_states_equal(split_state, data_state)
    assert split.history["val_loss"] == data.history["val_loss"]
    assert split.history["val_accuracy"][-1] == split.evaluate(X[cut:], y[cut:])["accuracy"]
    assert split.history["val_loss"][-1] == split.evaluate(X[cut:], y[cut:])["loss"]


def test_validation_split_rounds_as_keras():
    X, y = blobs(n=10, dtype=np.float32)
    _, t = train(X, y, validation_split=0.25)  # ceil(7.5) = 8 train, 2 held out
    assert t.history["val_loss"][-1] == t.evaluate(X[8:], y[8:])["loss"]


# ---------------------------------------------------------------- bad input


@pytest.mark.parametrize("fit, error, match", [
    ({"validation_split": 0.2, "validation_data": "pair"}, ValueError,
     "validation_split and validation_data"),
    ({"validation_split": 1.0}, ValueError, r"validation_split: must be in \[0, 1\)"),
    ({"validation_split": -0.1}, ValueError, "validation_split"),
    ({"validation_split": "0.2"}, TypeError, "validation_split"),
    ({"validation_split": 0.01}, ValueError, "leave 0 for validation"),
    ({"sample_weight": np.ones(3)}, ValueError, r"sample_weight: .*shape \(10,\)"),
    ({"sample_weight": -np.ones(10)}, ValueError, "sample_weight: .*>= 0"),
    ({"sample_weight": np.zeros(10)}, ValueError, "every sample weighs 0"),
    ({"class_weight": [1.0, 2.0]}, TypeError, r"class_weight: expected a dict"),
    ({"class_weight": {0: -1.0}}, ValueError, r"class_weight\[0\]"),
    ({"class_weight": {True: 1.0}}, ValueError, "class_weight: keys must be class labels"),
    ({"class_weight": {"a": 1.0}}, ValueError, "class_weight: keys must be class labels"),
    ({"class_weight": {0: 0.0, 1: 0.0, 2: 0.0}}, ValueError, "every sample weighs 0"),
])
def test_bad_fit_options_are_refused_before_training(fit, error, match):
    X, y = blobs(n=10, dtype=np.float32)
    if fit.get("validation_data") == "pair":
        fit["validation_data"] = (X, y)
    model = nn.Sequential(nn.Linear(4, 3, seed=0))
    before = model.state_dict()
    t = fastnn.Trainer(model, losses.SoftmaxCrossEntropy(), optim.SGD(model, 0.1),
                       progress=False)
    with pytest.raises(error, match=match):
        t.fit(X, y, epochs=1, batch_size=4, **fit)
    assert t.epoch == 0
    assert_states_equal(before, model.state_dict())


def test_class_weight_needs_one_class_per_sample():
    X = np.zeros((6, 4), np.float32)
    for loss, y in ((losses.MSE(), np.zeros((6, 2), np.float32)),
                    (losses.BCEWithLogits(), np.zeros((6, 2), np.float32))):
        model = nn.Sequential(nn.Linear(4, 2, seed=0))
        t = fastnn.Trainer(model, loss, optim.SGD(model, 0.1), progress=False)
        with pytest.raises(ValueError, match="class_weight: for classification losses"):
            t.fit(X, y, class_weight={0: 2.0})
