"""The Trainer on a binary classifier (one output, losses.BCEWithLogits) given 1-D 0/1
labels, as a softmax model is given its class labels: predict gives 0/1 labels from
logit > 0, fit and evaluate report accuracy. And training with the newer activations
and a label-smoothed softmax loss."""

import numpy as np
import pytest

import fastnn
from fastnn import losses, nn, optim


def binary_data(n=160, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, 3)).astype(np.float32)
    y = (X[:, 0] - 0.5 * X[:, 1] > 0).astype(np.int64)
    return X, y


@pytest.mark.parametrize("label_dtype", [np.int64, np.float32])
def test_one_output_bce_model_predicts_labels_and_reports_accuracy(label_dtype):
    X, y = binary_data()
    y = y.astype(label_dtype)
    model = nn.Sequential(nn.Linear(3, 8, seed=0), nn.GELU(), nn.Linear(8, 1, seed=1))
    trainer = fastnn.Trainer(model, losses.BCEWithLogits(), optim.Adam(model, 0.05),
                             progress=False)
    history = trainer.fit(X, y, epochs=8, batch_size=16, validation_data=(X, y), seed=0)
    assert len(history["accuracy"]) == len(history["val_accuracy"]) == 8
    assert history["accuracy"][-1] >= 0.9
    logits = model.eval().forward(X)
    predicted = trainer.predict(X)
    assert predicted.dtype.kind == "i" and set(np.unique(predicted)) <= {0, 1}
    np.testing.assert_array_equal(predicted.reshape(-1), (logits.reshape(-1) > 0).astype(int))
    result = trainer.evaluate(X, y)
    assert set(result) == {"loss", "accuracy"}
    assert result["accuracy"] == pytest.approx(np.mean(predicted.reshape(-1) == y))
    assert result["accuracy"] == pytest.approx(history["val_accuracy"][-1])


def test_label_smoothed_softmax_model_trains():
    rng = np.random.default_rng(1)
    centers = 3 * rng.standard_normal((3, 4))
    y = rng.integers(0, 3, 150)
    X = (centers[y] + 0.5 * rng.standard_normal((150, 4))).astype(np.float32)
    model = nn.Sequential(nn.Linear(4, 16, seed=0), nn.SiLU(), nn.Linear(16, 16, seed=1),
                          nn.ELU(), nn.Linear(16, 3, seed=2))
    trainer = fastnn.Trainer(model, losses.SoftmaxCrossEntropy(label_smoothing=0.1),
                             optim.Adam(model, 0.01), progress=False)
    history = trainer.fit(X, y, epochs=10, batch_size=16, seed=0)
    assert history["loss"][-1] < history["loss"][0]
    assert trainer.evaluate(X, y)["accuracy"] >= 0.9
