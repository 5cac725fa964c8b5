"""Hyperparameters as the kernels see them: in the dtype of the parameters. A value that
is a fine Python float but overflows float32 (lr=1e39) or rounds to 0 (eps=1e-300) or
to 1 (a beta of 1 - 1e-9) is refused, naming the hyperparameter and the dtype: at
construction, at load_state_dict, and before a step when a schedule or user code set
it since. Nothing is updated with such a value."""

import numpy as np
import pytest

from fastnn import _checks, nn, optim


def _model(dtype=np.float32):
    return nn.Sequential(nn.Linear(3, 2, seed=0, dtype=dtype))


# (optimizer, keyword arguments) valid as float64 numbers, broken in float32
BROKEN_IN_FLOAT32 = [
    (optim.SGD, {"lr": 1e39}, "lr"),
    (optim.SGD, {"lr": 0.1, "momentum": 1e39}, "momentum"),
    (optim.SGD, {"lr": 0.1, "weight_decay": 1e39}, "weight_decay"),
    (optim.Adam, {"eps": 1e-300}, "eps"),
    (optim.Adam, {"eps": 1e39}, "eps"),
    (optim.Adam, {"betas": (0.9, 1 - 1e-9)}, "betas"),
    (optim.Adam, {"betas": (1 - 1e-9, 0.999)}, "betas"),
    (optim.Adam, {"lr": 3e38}, "lr / (1 - betas[0])"),
    (optim.AdamW, {"lr": 1e20, "weight_decay": 1e20}, "lr * weight_decay"),
    (optim.Adagrad, {"lr": 0.1, "eps": 1e-46}, "eps"),
    (optim.RMSProp, {"lr": 0.1, "alpha": 1 - 1e-9}, "alpha"),
    (optim.RMSProp, {"lr": 0.1, "eps": 1e-50}, "eps"),
]


@pytest.mark.parametrize(("cls", "kwargs", "name"), BROKEN_IN_FLOAT32,
                         ids=[f"{c.__name__}-{n}" for c, _, n in BROKEN_IN_FLOAT32])
def test_constructor_checks_in_the_parameters_dtype(cls, kwargs, name):
    with pytest.raises(ValueError, match=r"float32") as info:
        cls(_model(), **kwargs)
    assert str(info.value).startswith(f"{name}:")
    cls(_model(np.float64), **kwargs)  # fine in float64


@pytest.mark.parametrize(("cls", "kwargs", "name"), BROKEN_IN_FLOAT32,
                         ids=[f"{c.__name__}-{n}" for c, _, n in BROKEN_IN_FLOAT32])
def test_a_value_set_after_construction_is_checked_before_the_step(cls, kwargs, name):
    model = _model()
    defaults = {"lr": 0.1} if cls in (optim.SGD, optim.Adagrad, optim.RMSProp) else {}
    opt = cls(model, **defaults)
    for p in model.parameters():
        p.grad[...] = 1.0
    before = [p.copy() for p in model.parameters()]
    for group in opt.param_groups:
        group.update(kwargs)
    with pytest.raises(ValueError, match=r"float32"):
        opt.step()
    with pytest.raises(ValueError, match=r"float32"):  # and again: never applied
        opt.step()
    for p, b in zip(model.parameters(), before):
        np.testing.assert_array_equal(p, b)


def test_param_group_values_are_checked_in_their_dtype():
    model = _model()
    with pytest.raises(ValueError, match=r"^eps: 1e-300 is 0.0 in float32"):
        optim.Adam([{"params": list(model.parameters()), "eps": 1e-300}])


def test_load_state_dict_checks_in_the_dtype():
    opt = optim.Adam(_model(np.float64), eps=1e-300)
    state = opt.state_dict()
    with pytest.raises(ValueError, match=r"^load_state_dict: param group 0: eps: .*float32"):
        optim.Adam(_model(), eps=1e-8).load_state_dict(state)


def test_growing_schedule_is_stopped_before_the_overflowing_step():
    model = _model()
    opt = optim.SGD(model, lr=1e30)
    schedule = optim.StepDecay(opt, step_size=1, gamma=1e4)
    for p in model.parameters():
        p.grad[...] = 1e-30
    opt.step()
    schedule.step()  # lr 1e34
    opt.step()
    schedule.step()  # lr 1e38
    opt.step()
    schedule.step()  # lr 1e42: overflows float32
    before = [p.copy() for p in model.parameters()]
    with pytest.raises(ValueError, match=r"^lr: .*overflows float32"):
        opt.step()
    for p, b in zip(model.parameters(), before):
        np.testing.assert_array_equal(p, b)
        assert np.isfinite(p).all()


@pytest.mark.parametrize(("make", "name"), [
    (lambda opt: optim.CosineDecay(opt, 10, eta_min=1e39), "eta_min"),
    (lambda opt: optim.ReduceOnPlateau(opt, min_lr=1e39), "min_lr"),
])
def test_schedule_bounds_checked_in_the_dtype(make, name):
    with pytest.raises(ValueError, match=rf"^{name}: .*float32"):
        make(optim.SGD(_model(), lr=0.1))
    make(optim.SGD(_model(np.float64), lr=0.1))


def test_valid_edge_values_pass():
    model = _model()
    optim.SGD(model, lr=0.0)  # zero allowed where the constraint allows it
    optim.Adam(_model(), lr=1e-3, betas=(0.0, 0.0), eps=np.finfo(np.float32).tiny)
    optim.SGD(_model(), lr=float(np.finfo(np.float32).max))


def test_type_errors_keep_their_kind():
    with pytest.raises(ValueError, match=r"^betas"):
        optim.Adam(_model(), betas=0.9)
    with pytest.raises(ValueError, match=r"^lr"):
        optim.SGD(_model(), lr="fast")
    with pytest.raises(ValueError, match=r"^lr"):
        optim.SGD(_model(), lr=float("nan"))


@pytest.mark.parametrize(("value", "dtype", "within", "ok"), [
    (1e39, np.float32, None, False),
    (1e39, np.float64, None, True),
    (3.4e38, np.float32, None, True),
    (1e-300, np.float32, _checks.POSITIVE, False),
    (1e-300, np.float64, _checks.POSITIVE, True),
    (1e-300, np.float32, _checks.NON_NEGATIVE, True),  # 0 is allowed there
    (1 - 1e-9, np.float32, _checks.Interval(0, 1, closed="left"), False),
    (1 - 1e-9, np.float64, _checks.Interval(0, 1, closed="left"), True),
])
def test_check_float_in(value, dtype, within, ok):
    if ok:
        assert _checks.check_float_in(value, "v", dtype, within) == value
    else:
        with pytest.raises(ValueError, match=rf"^v: .*{np.dtype(dtype).name}"):
            _checks.check_float_in(value, "v", dtype, within)


@pytest.mark.parametrize("bad", [np.nan, np.inf, 1e39])
def test_load_state_dict_refuses_state_that_is_not_finite_in_the_dtype(bad):
    model = _model()
    opt = optim.Adam(model)
    for p in model.parameters():
        p.grad[...] = 0.5
    opt.step()
    state = opt.state_dict()
    state["state"][0]["v"] = state["state"][0]["v"].astype(np.float64)
    state["state"][0]["v"][3] = bad
    fresh = optim.Adam(model)
    with pytest.raises(ValueError, match="'v'"):
        fresh.load_state_dict(state)
    assert fresh.step_count == 0 and fresh._state is None  # nothing loaded
