"""Mistakes a user makes on day one get an error that names the argument and what was
expected, never an internal name."""

import numpy as np
import pytest

from fastnn import nn


def mlp():
    return nn.Sequential(nn.Linear(4, 8, seed=0), nn.ReLU(), nn.Linear(8, 3, seed=1))


def cnn():
    return nn.Sequential(nn.Conv2d(1, 2, 3, seed=0), nn.ReLU(), nn.Flatten(),
                         nn.Linear(2 * 4 * 4, 3, seed=1))


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

