"""Mistakes a user makes on day one get an error that names the argument and what was
expected, never an internal name."""

import numpy as np
import pytest

import fastnn
from fastnn import losses, nn, optim


def mlp():
    return nn.Sequential(nn.Linear(4, 8, seed=0), nn.ReLU(), nn.Linear(8, 3, seed=1))


def cnn():
    return nn.Sequential(nn.Conv2d(1, 2, 3, seed=0), nn.ReLU(), nn.Flatten(),
                         nn.Linear(2 * 4 * 4, 3, seed=1))


def trainer(model):
    return fastnn.Trainer(model, losses.SoftmaxCrossEntropy(), optim.SGD(model, 0.1),
                          progress=False)


# ---------------------------------------------------------------- forward


@pytest.mark.parametrize("build, shape", [(mlp, (2, 4)), (cnn, (2, 1, 6, 6))],
                         ids=["mlp", "cnn"])
@pytest.mark.parametrize("dtype", [np.float64, np.int64, np.uint8])
def test_forward_refuses_another_dtype_naming_the_model_and_the_fix(build, shape, dtype):
    model = build()
    for compiled in (True, False):
        model.compiled = compiled
        with pytest.raises(TypeError) as info:
            model.forward(np.zeros(shape, dtype))
        message = str(info.value)
        assert message.startswith("Sequential: expected input of dtype float32, got "
                                  f"{np.dtype(dtype)}")
        assert "x.astype(np.float32)" in message
        assert "differs from a's" not in message


def test_a_layer_alone_names_itself():
    with pytest.raises(TypeError, match=r"^Linear: expected input of dtype float32, got "
                                        r"float64"):
        nn.Linear(4, 2, seed=0).forward(np.zeros((2, 4)))
    with pytest.raises(TypeError, match=r"^Linear: expected input of dtype float64, got "
                                        r"float32"):
        nn.Linear(4, 2, seed=0, dtype=np.float64).forward(np.zeros((2, 4), np.float32))
    with pytest.raises(TypeError, match=r"^Conv2d: expected input of dtype float32"):
        nn.Conv2d(1, 2, 3, seed=0).forward(np.zeros((1, 1, 5, 5), np.int32))


def test_forward_of_a_list_asks_for_an_array():
    with pytest.raises(TypeError, match=r"^Sequential: expected the input as a "
                                        r"numpy\.ndarray of float32, got list"):
        mlp().forward([[0.0] * 4])


def test_a_model_without_parameters_takes_either_float_dtype():
    model = nn.Sequential(nn.ReLU())
    for dtype in (np.float32, np.float64):
        assert model.forward(-np.ones((2, 3), dtype)).dtype == dtype


# ---------------------------------------------------------------- the Trainer


def test_a_feature_count_mismatch_names_x_and_its_shape_not_the_batch():
    X, y = np.zeros((100, 5), np.float32), np.zeros(100, np.intp)
    t = trainer(mlp())
    pattern = r"^X of shape \(100, 5\): the model rejects samples of shape \(5,\): " \
              r"Linear: expected input of shape \(N, 4\)"
    with pytest.raises(ValueError, match=pattern):
        t.fit(X, y, epochs=1, batch_size=16)
    with pytest.raises(ValueError, match=pattern):
        t.evaluate(X, y)
    with pytest.raises(ValueError, match=pattern):
        t.predict(X)
    with pytest.raises(ValueError, match=pattern):
        t.predict_proba(X)


def test_images_for_an_mlp_and_wrong_images_for_a_cnn_name_x():
    y = np.zeros(10, np.intp)
    with pytest.raises(ValueError, match=r"^X of shape \(10, 1, 2, 2\): the model rejects "
                                         r"samples of shape \(1, 2, 2\)"):
        trainer(mlp()).fit(np.zeros((10, 1, 2, 2), np.float32), y, epochs=1)
    with pytest.raises(ValueError, match=r"^X of shape \(10, 3, 6, 6\).*Conv2d: expected "
                                         r"input of shape \(N, 1, H, W\)"):
        trainer(cnn()).fit(np.zeros((10, 3, 6, 6), np.float32), y, epochs=1)


def test_validation_x_with_other_features_is_refused_before_training():
    X, y = np.zeros((20, 4), np.float32), np.zeros(20, np.intp)
    t = trainer(mlp())
    with pytest.raises(ValueError, match=r"^validation X: samples of shape \(5,\), but X's "
                                         r"are \(4,\)"):
        t.fit(X, y, epochs=1, validation_data=(np.zeros((6, 5), np.float32), y[:6]))
    assert t.epoch == 0


def test_validation_images_of_another_size_reach_a_fully_convolutional_model():
    model = nn.Sequential(nn.Conv2d(1, 3, 3, padding=1, seed=0), nn.GlobalAvgPool2d())
    t = trainer(model)
    y = np.zeros(8, np.intp)
    t.fit(np.zeros((8, 1, 6, 6), np.float32), y, epochs=1, batch_size=4,
          validation_data=(np.zeros((8, 1, 9, 9), np.float32), y))
    assert "val_loss" in t.history


def test_train_step_names_its_batch():
    with pytest.raises(ValueError, match=r"^xb of shape \(3, 5\)"):
        trainer(mlp()).train_step(np.zeros((3, 5), np.float32), np.zeros(3, np.intp))


def test_trainer_arguments_name_what_was_expected():
    model = mlp()
    with pytest.raises(TypeError, match=r"^optimizer: expected a fastnn\.optim optimizer"):
        fastnn.Trainer(model, losses.SoftmaxCrossEntropy(), optim.SGD)
    with pytest.raises(ValueError, match=r"^fit: this Trainer has no optimizer"):
        fastnn.Trainer(model, losses.SoftmaxCrossEntropy(), None).fit(
            np.zeros((4, 4), np.float32), np.zeros(4, np.intp))

    def on_epoch_end(trainer, epoch, logs):
        pass

    with pytest.raises(TypeError, match=r"^callbacks\[0\]: expected a fastnn\.Callback, "
                                        r"got function"):
        fastnn.Trainer(model, losses.SoftmaxCrossEntropy(), optim.SGD(model, 0.1),
                       callbacks=[on_epoch_end])
    with pytest.raises(ValueError, match=r"^validation_data: expected a pair \(X, y\), got "
                                         r"a ndarray"):
        trainer(model).fit(np.zeros((4, 4), np.float32), np.zeros(4, np.intp),
                           validation_data=np.zeros((4, 4), np.float32))
