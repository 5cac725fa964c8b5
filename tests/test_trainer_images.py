"""fastnn.Trainer on images (N, C, H, W): training a small CNN (float and uint8 data),
inference in batches equal to a direct forward pass, augmentation of image batches,
validation data, callbacks, and the input checks."""

import tracemalloc

import numpy as np
import pytest

import fastnn
from fastnn import augment, losses, nn, optim

# ---------------------------------------------------------------- helpers


def images(n=96, channels=2, size=8, seed=0, dtype=np.float32):
    """Class 1: the left half of the images is brighter; class 0: the right half.
    Orientation decides the label, so a mirrored image belongs to the other class."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    x = rng.standard_normal((n, channels, size, size))
    half = size // 2
    x[y == 1, :, :, :half] += 1.0
    x[y == 0, :, :, half:] += 1.0
    if np.dtype(dtype) == np.uint8:
        x = np.clip(np.round(x * 40 + 100), 0, 255)
    return x.astype(dtype), y


def cnn(channels=2, size=8, dtype=np.float32, batch_norm=True, seed=0):
    """Conv-BatchNorm-ReLU-MaxPool-Conv-ReLU-Flatten-Linear, 2 classes; the Flatten keeps
    where a feature was (left or right)."""
    return nn.Sequential(
        nn.Conv2d(channels, 4, 3, padding=1, seed=seed, dtype=dtype),
        *([nn.BatchNorm2d(4, dtype=dtype)] if batch_norm else []), nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(4, 4, 3, padding=1, seed=seed + 1, dtype=dtype), nn.ReLU(),
        nn.Flatten(), nn.Linear(4 * (size // 2) ** 2, 2, seed=seed + 2, dtype=dtype))


def gap_cnn(seed=0):
    """Conv-BatchNorm-ReLU-GlobalAvgPool-Linear: layers fastnn.save describes."""
    return nn.Sequential(nn.Conv2d(2, 4, 3, padding=1, seed=seed), nn.BatchNorm2d(4),
                         nn.ReLU(), nn.GlobalAvgPool2d(), nn.Linear(4, 2, seed=seed + 1))


def trainer_for(model, lr=1e-2, **kwargs):
    kwargs.setdefault("progress", False)
    return fastnn.Trainer(model, losses.SoftmaxCrossEntropy(), optim.Adam(model, lr),
                          **kwargs)


class Recording:
    """Wraps a model; keeps a copy of every forward input with its address, in train
    and eval mode."""

    def __init__(self, inner):
        self.inner = inner
        self.seen = []  # (training, data address, copy of x)

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def forward(self, x):
        self.seen.append((self.inner.training, x.__array_interface__["data"][0], x.copy()))
        return self.inner.forward(x)

    def backward(self, dout, **kwargs):
        return self.inner.backward(dout, **kwargs)


def softmax(s):
    e = np.exp(s - s.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


# ---------------------------------------------------------------- training


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_a_cnn_learns_on_images_with_validation_data(dtype):
    X, y = images(dtype=dtype)
    Xv, yv = images(48, seed=1, dtype=dtype)
    trainer = trainer_for(cnn(dtype=dtype))
    history = trainer.fit(X, y, epochs=6, batch_size=16, seed=0, validation_data=(Xv, yv))
    assert history["loss"][-1] < 0.5 * history["loss"][0]
    assert history["accuracy"][-1] > history["accuracy"][0]
    assert history["accuracy"][-1] >= 0.95
    assert history["val_accuracy"][-1] >= 0.9
    assert trainer.model._plan is not None  # the compiled plan ran
    result = trainer.evaluate(Xv, yv)
    assert result["accuracy"] == history["val_accuracy"][-1]


def test_uint8_images_are_converted_value_for_value():
    """As for flat data: uint8 becomes the model's dtype unscaled (0..255)."""
    X, y = images(40, dtype=np.uint8)
    model = Recording(cnn())
    trainer = trainer_for(model, lr=1e-3)
    trainer.fit(X, y, epochs=1, batch_size=40, shuffle=False)
    training, _, seen = model.seen[0]
    assert training and seen.dtype == np.float32 and seen.shape == X.shape
    np.testing.assert_array_equal(seen, X.astype(np.float32))
    assert seen.max() > 1
    np.testing.assert_array_equal(trainer.predict_proba(X),
                                  trainer.predict_proba(X.astype(np.float32)))
    history = trainer_for(cnn(), lr=1e-3).fit(X, y, epochs=4, batch_size=8, seed=0)
    assert history["loss"][-1] < history["loss"][0]


def test_fit_gathers_batches_in_one_buffer():
    X, y = images(200, channels=1)
    model = Recording(cnn(channels=1))
    trainer_for(model).fit(X, y, epochs=1, batch_size=50, seed=0)
    batches = [(addr, x.shape) for training, addr, x in model.seen if training]
    assert len(batches) == 4
    assert {addr for addr, _ in batches} == {batches[0][0]}
    assert {shape for _, shape in batches} == {(50, 1, 8, 8)}


def test_fit_does_not_copy_images_whole():
    X, y = images(4000, channels=1)
    trainer = trainer_for(cnn(channels=1))
    trainer.fit(X[:100], y[:100], epochs=1, batch_size=50)  # warm up workspaces
    tracemalloc.start()
    try:
        trainer.fit(X, y, epochs=1, batch_size=50, seed=0)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < X.nbytes / 2, f"fit allocated {peak} bytes for {X.nbytes} bytes of X"


def test_train_step_on_images():
    X, y = images(32)
    trainer = trainer_for(cnn())
    first = trainer.train_step(X, y)
    for _ in range(20):
        last = trainer.train_step(X, y)
    assert last < first
    # uint8 images converted as fit converts them
    X8, y8 = images(32, dtype=np.uint8)
    model = Recording(cnn())
    assert np.isfinite(trainer_for(model).train_step(X8, y8))
    np.testing.assert_array_equal(model.seen[0][2], X8.astype(np.float32))


# ---------------------------------------------------------------- inference


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_inference_in_batches_equals_a_direct_forward_in_eval_mode(dtype):
    X, y = images(50, dtype=dtype)
    model = cnn(dtype=dtype)
    trainer = trainer_for(model)
    trainer.fit(X, y, epochs=1, batch_size=10, seed=0)  # running statistics move
    assert model[1].running_mean.any()
    model.eval()
    scores = model.forward(X)
    model.train()
    tol = {"rtol": 1e-5, "atol": 1e-6} if dtype == np.float32 else {"rtol": 1e-12,
                                                                      "atol": 1e-13}
    proba = trainer.predict_proba(X, batch_size=16)
    assert proba.shape == (50, 2) and proba.dtype == dtype
    np.testing.assert_allclose(proba, softmax(scores), **tol)
    predicted = trainer.predict(X, batch_size=16)
    assert predicted.shape == (50,)
    np.testing.assert_array_equal(predicted, scores.argmax(axis=1))
    result = trainer.evaluate(X, y, batch_size=16)
    expected = -np.log(softmax(scores.astype(np.float64))[np.arange(50), y]).mean()
    assert result["loss"] == pytest.approx(expected, rel=1e-5 if dtype == np.float32 else 1e-12)
    assert result["accuracy"] == np.mean(scores.argmax(axis=1) == y)
    assert not model.training  # inference leaves the model in eval mode


def test_predict_goes_in_batches_through_one_buffer():
    X, _ = images(50)
    model = Recording(cnn())
    trainer = trainer_for(model)
    whole = trainer.predict_proba(X, batch_size=1024)
    model.seen.clear()
    parts = trainer.predict_proba(X, batch_size=16)
    shapes = [x.shape for _, _, x in model.seen]
    assert shapes == [(16, 2, 8, 8)] * 3 + [(2, 2, 8, 8)]
    assert len({addr for _, addr, _ in model.seen}) == 1
    assert not any(training for training, _, _ in model.seen)
    np.testing.assert_allclose(parts, whole, rtol=1e-5, atol=1e-6)
    for bad in (0, -1, 2.0, True):
        with pytest.raises(ValueError, match="batch_size"):
            trainer.predict(X, batch_size=bad)


# ---------------------------------------------------------------- augmentation


def test_augment_gets_the_image_batches_as_they_are():
    """A horizontal flip (p=1): the model trains on the mirrored images, while
    validation and prediction see the originals."""
    X, y = images(48)
    Xv, yv = images(16, seed=1)
    model = Recording(cnn())
    flip = augment.Compose([augment.HorizontalFlip(1.0)], seed=0)
    trainer = trainer_for(model, augment=flip)
    trainer.fit(X, y, epochs=1, batch_size=16, shuffle=False, validation_data=(Xv, yv))
    trained = [x for training, _, x in model.seen if training]
    np.testing.assert_array_equal(np.concatenate(trained), X[..., ::-1])
    evaluated = [x for training, _, x in model.seen if not training]
    np.testing.assert_array_equal(np.concatenate(evaluated), Xv)
    assert flip.step == 3


def test_a_model_trained_on_mirrored_images_learns_the_mirrored_task():
    X, y = images(96)
    flip = augment.Compose([augment.HorizontalFlip(1.0)], seed=0)
    trainer = trainer_for(cnn(), augment=flip)
    trainer.fit(X, y, epochs=5, batch_size=16, seed=0)
    assert trainer.evaluate(X[..., ::-1], y)["accuracy"] >= 0.95
    assert trainer.evaluate(X, y)["accuracy"] <= 0.1


def test_augment_any_callable_and_a_crop_on_images():
    X, y = images(32)
    calls = []

    def noise(batch):
        calls.append(batch.shape)
        return batch + 0.01

    trainer_for(cnn(), augment=noise).fit(X, y, epochs=1, batch_size=16)
    assert calls == [(16, 2, 8, 8)] * 2
    # a crop changes the size: the model gets 6x6 images
    crop = augment.Compose([augment.RandomCrop(6)], seed=0)
    trainer = trainer_for(cnn(size=6), augment=crop)
    trainer.fit(X, y, epochs=1, batch_size=16)
    assert trainer.model_output().shape == (16, 2)
    # a crop larger than the images fails before training
    with pytest.raises(ValueError, match="larger than the padded"):
        trainer_for(cnn(), augment=augment.Compose([augment.RandomCrop(9)])).fit(X, y)


def test_image_shape_is_for_flat_data_only():
    X, y = images(16)
    flip = augment.Compose([augment.HorizontalFlip(1.0)], seed=0)
    trainer = trainer_for(cnn(), augment=flip, image_shape=(2, 8, 8))
    with pytest.raises(ValueError, match=r"image_shape=.*flat data.*without image_shape"):
        trainer.fit(X, y)
    model = nn.Sequential(nn.Linear(128, 2, seed=0))
    with pytest.raises(ValueError, match="holds 64 values, but X has 128 features"):
        trainer_for(model, augment=flip, image_shape=(8, 8)).fit(X.reshape(16, -1), y)
    # flat data viewed as images: the flip mirrors each image, rows stay flat
    model = Recording(model)
    trainer_for(model, augment=flip, image_shape=(2, 8, 8)).fit(
        X.reshape(16, -1), y, batch_size=16, shuffle=False)
    np.testing.assert_array_equal(model.seen[0][2], X[..., ::-1].reshape(16, -1))


# ---------------------------------------------------------------- checks


@pytest.mark.parametrize("X, y, error, match", [
    (np.zeros(16, np.float32), np.zeros(16, np.intp), ValueError, "2-D.*or 4-D images"),
    (images(16)[0], np.zeros(15, np.intp), ValueError, "15 labels for 16 samples"),
    (np.where(np.arange(8) == 7, np.nan, images(16)[0]).astype(np.float32),
     np.zeros(16, np.intp), ValueError, "NaN"),
    (images(16, channels=3)[0], np.zeros(16, np.intp), ValueError,
     r"Conv2d: expected input of shape \(N, 2, H, W\), got \(\d+, 3, 8, 8\)"),
    (images(16)[0].astype(bool), np.zeros(16, np.intp), TypeError, "numeric"),
], ids=["1d", "length", "nan", "channels", "bool"])
def test_bad_images_name_the_mistake(X, y, error, match):
    trainer = trainer_for(cnn())
    with pytest.raises(error, match=match):
        trainer.fit(X, y, batch_size=8)
    with pytest.raises(error, match=match):
        if len(X) == len(y):
            trainer.predict(X)
        else:
            trainer.evaluate(X, y)


def test_nan_in_the_last_image_of_many_is_found():
    X = np.zeros((3000, 1, 20, 20), np.float32)  # more rows than one finiteness chunk
    X[-1, 0, 19, 19] = np.inf
    with pytest.raises(ValueError, match="NaN or inf"):
        trainer_for(cnn(channels=1, size=20)).predict(X)


# ---------------------------------------------------------------- callbacks


def test_early_stopping_and_checkpoints_on_images(tmp_path):
    X, y = images(64)
    Xv, yv = images(32, seed=1)
    stop = fastnn.EarlyStopping("val_loss", patience=1, restore_best_weights=True)
    path = tmp_path / "cnn-{epoch}.safetensors"
    trainer = trainer_for(gap_cnn(), lr=0.2, callbacks=[stop, fastnn.Checkpoint(path)])
    history = trainer.fit(X, y, epochs=30, batch_size=16, seed=0, validation_data=(Xv, yv))
    epochs = len(history["loss"])
    assert epochs < 30  # the validation loss stalls (the pooling forgets left and right)
    best = int(np.argmin(history["val_loss"])) + 1
    assert trainer.evaluate(Xv, yv)["loss"] == pytest.approx(min(history["val_loss"]))
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        f"cnn-{e}.safetensors" for e in range(1, epochs + 1))
    resumed = trainer_for(gap_cnn(seed=5), lr=0.2)
    resumed.load_checkpoint(tmp_path / f"cnn-{best}.safetensors")
    np.testing.assert_array_equal(resumed.predict_proba(Xv), trainer.predict_proba(Xv))
