"""fastnn.optim learning-rate schedules: closed forms over 30 steps for every group (each
from its own starting rate), Warmup alone and handing over to CosineDecay,
ReduceOnPlateau on scripted metrics (against a small oracle, and torch when installed),
state_dict resume, bad arguments, lr_curve and plot_lr."""

import math
import sys

import numpy as np
import pytest

from fastnn import nn, optim

T = 30
A0 = (0.1, 0.03)  # starting rates of the two groups


def make_optimizer(lrs=A0):
    """SGD over loose parameters, one group per starting rate."""
    groups = [{"params": [nn.Parameter(np.zeros(2), np.zeros(2))], "lr": lr} for lr in lrs]
    return optim.SGD(groups, lr=1.0)


def cosine(a0, t, t_max, eta_min):
    return eta_min + (a0 - eta_min) * (1 + math.cos(math.pi * min(t, t_max) / t_max)) / 2


# name: (make_schedule(opt), closed form lr(a0, t))
CLOSED_FORMS = {
    "step": (lambda o: optim.StepDecay(o, step_size=7, gamma=0.5),
             lambda a0, t: a0 * 0.5 ** (t // 7)),
    "step_size_1": (lambda o: optim.StepDecay(o, 1, 0.9), lambda a0, t: a0 * 0.9**t),
    "exponential": (lambda o: optim.ExponentialDecay(o, k=0.1),
                    lambda a0, t: a0 * math.exp(-0.1 * t)),
    "inverse_time": (lambda o: optim.InverseTimeDecay(o, k=0.5),
                     lambda a0, t: a0 / (1 + 0.5 * t)),
    "cosine": (lambda o: optim.CosineDecay(o, t_max=20, eta_min=0.001),
               lambda a0, t: cosine(a0, t, 20, 0.001)),
    "cosine_default_eta_min": (lambda o: optim.CosineDecay(o, 12),
                               lambda a0, t: cosine(a0, t, 12, 0.0)),
    "warmup": (lambda o: optim.Warmup(o, 5), lambda a0, t: a0 * (t + 1) / 5 if t < 5 else a0),
    "warmup_then_cosine": (
        lambda o: optim.Warmup(o, 4, then=optim.CosineDecay(o, 15, eta_min=0.002)),
        lambda a0, t: a0 * (t + 1) / 4 if t < 4 else cosine(a0, t - 4, 15, 0.002)),
    "warmup_then_step": (
        lambda o: optim.Warmup(o, 3, then=optim.StepDecay(o, 5, 0.1)),
        lambda a0, t: a0 * (t + 1) / 3 if t < 3 else a0 * 0.1 ** ((t - 3) // 5)),
}


@pytest.mark.parametrize("key", CLOSED_FORMS)
def test_closed_form(key):
    make, form = CLOSED_FORMS[key]
    opt = make_optimizer()
    schedule = make(opt)
    for t in range(T):
        expected = [form(a0, t) for a0 in A0]
        assert schedule.get_last_lr() == pytest.approx(expected, rel=1e-12, abs=1e-15), t
        assert [g["lr"] for g in opt.param_groups] == pytest.approx(expected, rel=1e-12,
                                                                    abs=1e-15)
        schedule.step()


def test_closed_form_curves_are_not_trivial():
    """Guards the closed-form test against forms that would pass by being constant."""
    for key, (_, form) in CLOSED_FORMS.items():
        values = {form(1.0, t) for t in range(T)}
        assert len(values) > 2, key


def test_optimizer_uses_the_scheduled_rate():
    """Plain SGD with gradient 1: each step moves the parameter by exactly the lr."""
    p = nn.Parameter(np.zeros(1), np.ones(1))
    opt = optim.SGD([p], lr=0.5)
    schedule = optim.InverseTimeDecay(opt, 1.0)
    total = 0.0
    for t in range(6):
        opt.step()
        total += 0.5 / (1 + t)
        assert p[0] == pytest.approx(-total, rel=1e-12)
        schedule.step()


def test_chained_schedule_keeps_each_groups_start():
    """initial_lr is recorded once: a schedule built after another one has moved the
    rates still starts from the original a0 of each group."""
    opt = make_optimizer()
    first = optim.StepDecay(opt, 1, 0.5)
    first.step()
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([a / 2 for a in A0])
    second = optim.ExponentialDecay(opt, 0.2)
    assert second.get_last_lr() == pytest.approx(list(A0))
    assert [g["initial_lr"] for g in opt.param_groups] == list(A0)


# ---------------------------------------------------------------- ReduceOnPlateau


def plateau_oracle(metrics, a0, factor, patience, mode="min", threshold=1e-4, min_lr=0.0):
    """torch.optim.lr_scheduler.ReduceLROnPlateau (threshold_mode "rel", no cooldown):
    the lr after each metric."""
    best = math.inf if mode == "min" else -math.inf
    bad, lr, out = 0, a0, []
    for m in metrics:
        better = m < best * (1 - threshold) if mode == "min" else m > best * (1 + threshold)
        if better:
            best, bad = m, 0
        else:
            bad += 1
        if bad > patience:
            lr, bad = max(lr * factor, min_lr), 0
        out.append(lr)
    return out


def test_plateau_by_hand():
    opt = make_optimizer([1.0])
    schedule = optim.ReduceOnPlateau(opt, factor=0.5, patience=1)
    lrs = []
    for metric in [5, 4, 4, 4, 4, 3, 3, 3]:
        schedule.step(metric)
        lrs.append(schedule.get_last_lr()[0])
    assert lrs == [1, 1, 1, 0.5, 0.5, 0.5, 0.5, 0.25]
    assert opt.param_groups[0]["lr"] == 0.25


SCRIPTS = {
    "min": ([1.0, 0.9, 0.95, 0.93, 0.91, 0.8, 0.85, 0.85, 0.85, 0.85, 0.85, 0.79, 0.7999,
             0.79, 0.9, 0.9, 0.9, 0.9, 0.9, 0.9, 0.9, 0.9, 0.9, 0.5, 0.6, 0.6, 0.6, 0.6,
             0.6, 0.6], "min"),
    "max": ([0.1, 0.2, 0.2, 0.19, 0.25, 0.25, 0.25, 0.25, 0.3, 0.30001, 0.3, 0.3, 0.3, 0.3,
             0.29, 0.35, 0.34, 0.33, 0.32, 0.31, 0.3, 0.29, 0.28, 0.27, 0.26, 0.25, 0.4,
             0.4, 0.4, 0.4], "max"),
}


@pytest.mark.parametrize("key", SCRIPTS)
@pytest.mark.parametrize(("factor", "patience", "min_lr", "threshold"),
                         [(0.5, 2, 0.0, 1e-4), (0.1, 0, 1e-4, 1e-4), (0.3, 3, 0.0, 0.05)])
def test_plateau_scripted(key, factor, patience, min_lr, threshold):
    metrics, mode = SCRIPTS[key]
    opt = make_optimizer()
    schedule = optim.ReduceOnPlateau(opt, factor=factor, patience=patience, mode=mode,
                                     threshold=threshold, min_lr=min_lr)
    assert schedule.get_last_lr() == list(A0)
    expected = [plateau_oracle(metrics, a0, factor, patience, mode, threshold, min_lr)
                for a0 in A0]
    assert len(set(expected[0])) > 1
    for t, metric in enumerate(metrics):
        schedule.step(metric)
        assert schedule.get_last_lr() == pytest.approx([e[t] for e in expected], rel=1e-12), t
        assert all(g["lr"] >= min_lr for g in opt.param_groups)


def test_plateau_min_lr_floor():
    opt = make_optimizer([1.0])
    schedule = optim.ReduceOnPlateau(opt, factor=0.1, patience=0, min_lr=0.005)
    lrs = []
    for _ in range(6):
        schedule.step(1.0)
        lrs.append(schedule.get_last_lr()[0])
    assert lrs == pytest.approx([1.0, 0.1, 0.01, 0.005, 0.005, 0.005])


@pytest.mark.parametrize("key", SCRIPTS)
def test_plateau_matches_torch(key):
    torch = pytest.importorskip("torch")
    metrics, mode = SCRIPTS[key]
    opt = make_optimizer([0.2])
    schedule = optim.ReduceOnPlateau(opt, factor=0.5, patience=2, mode=mode)
    tparam = torch.zeros(1, requires_grad=True)
    topt = torch.optim.SGD([tparam], lr=0.2)
    tschedule = torch.optim.lr_scheduler.ReduceLROnPlateau(topt, mode=mode, factor=0.5,
                                                           patience=2)
    for metric in metrics:
        schedule.step(metric)
        tschedule.step(metric)
        assert schedule.get_last_lr()[0] == pytest.approx(topt.param_groups[0]["lr"],
                                                          rel=1e-12)


def test_plateau_nan_metric():
    schedule = optim.ReduceOnPlateau(make_optimizer(), factor=0.5, patience=1)
    with pytest.raises(ValueError):
        schedule.step(float("nan"))


# ---------------------------------------------------------------- state_dict

RESUMABLE = {
    **{k: (make, None) for k, (make, _) in CLOSED_FORMS.items()},
    "plateau": (lambda o: optim.ReduceOnPlateau(o, factor=0.5, patience=2), SCRIPTS["min"][0]),
    "plateau_max": (lambda o: optim.ReduceOnPlateau(o, factor=0.3, patience=1, mode="max",
                                                    min_lr=0.01), SCRIPTS["max"][0]),
}


def advance(schedule, metrics, start, stop):
    lrs = []
    for t in range(start, stop):
        if metrics is None:
            schedule.step()
        else:
            schedule.step(metrics[t])
        lrs.append(schedule.get_last_lr())
    return lrs


@pytest.mark.parametrize("key", RESUMABLE)
def test_state_dict_resume(key):
    make, metrics = RESUMABLE[key]
    straight = advance(make(make_optimizer()), metrics, 0, T)

    opt = make_optimizer()
    schedule = make(opt)
    first = advance(schedule, metrics, 0, 12)
    saved, saved_opt = schedule.state_dict(), opt.state_dict()
    advance(schedule, metrics, 12, T)               # going on must not change `saved`

    opt2 = make_optimizer()
    resumed = make(opt2)
    opt2.load_state_dict(saved_opt)
    resumed.load_state_dict(saved)
    assert resumed.get_last_lr() == first[-1]
    assert first + advance(resumed, metrics, 12, T) == straight


def test_state_dict_resume_without_optimizer_state():
    """The schedule's own state is enough to put the optimizer's rates back."""
    opt = make_optimizer()
    schedule = optim.Warmup(opt, 4, then=optim.CosineDecay(opt, 15, eta_min=0.002))
    advance(schedule, None, 0, 9)
    saved, expected = schedule.state_dict(), schedule.get_last_lr()
    opt2 = make_optimizer()
    resumed = optim.Warmup(opt2, 4, then=optim.CosineDecay(opt2, 15, eta_min=0.002))
    resumed.load_state_dict(saved)
    assert [g["lr"] for g in opt2.param_groups] == expected


# ---------------------------------------------------------------- bad arguments

BAD = {
    "step_size=0": lambda o: optim.StepDecay(o, 0, 0.5),
    "step_size=-1": lambda o: optim.StepDecay(o, -1, 0.5),
    "step_size=1.5": lambda o: optim.StepDecay(o, 1.5, 0.5),
    "gamma<0": lambda o: optim.StepDecay(o, 2, -0.5),
    "gamma=nan": lambda o: optim.StepDecay(o, 2, float("nan")),
    "exp k<0": lambda o: optim.ExponentialDecay(o, -0.1),
    "exp k=inf": lambda o: optim.ExponentialDecay(o, float("inf")),
    "inv k<0": lambda o: optim.InverseTimeDecay(o, -1.0),
    "cosine t_max=0": lambda o: optim.CosineDecay(o, 0),
    "cosine eta_min<0": lambda o: optim.CosineDecay(o, 10, eta_min=-0.1),
    "warmup steps=0": lambda o: optim.Warmup(o, 0),
    "warmup then=other optimizer": lambda o: optim.Warmup(
        o, 3, then=optim.CosineDecay(make_optimizer(), 10)),
    "plateau factor=1": lambda o: optim.ReduceOnPlateau(o, factor=1.0),
    "plateau factor=2": lambda o: optim.ReduceOnPlateau(o, factor=2.0),
    "plateau factor=0": lambda o: optim.ReduceOnPlateau(o, factor=0.0),
    "plateau factor<0": lambda o: optim.ReduceOnPlateau(o, factor=-0.5),
    "plateau patience<0": lambda o: optim.ReduceOnPlateau(o, patience=-1),
    "plateau mode": lambda o: optim.ReduceOnPlateau(o, mode="avg"),
    "plateau min_lr<0": lambda o: optim.ReduceOnPlateau(o, min_lr=-1e-3),
    "plateau threshold<0": lambda o: optim.ReduceOnPlateau(o, threshold=-0.1),
}


@pytest.mark.parametrize("key", BAD)
def test_bad_arguments(key):
    opt = make_optimizer()
    with pytest.raises(ValueError):
        BAD[key](opt)
    assert [g["lr"] for g in opt.param_groups] == list(A0)   # nothing was changed


# ---------------------------------------------------------------- lr_curve, plot_lr


def test_lr_curve():
    curve = optim.lr_curve(lambda o: optim.StepDecay(o, 3, 0.5), 10, lr=2.0)
    assert curve == pytest.approx([2.0 * 0.5 ** (t // 3) for t in range(10)], rel=1e-12)
    assert len(curve) == 10
    curve = optim.lr_curve(lambda o: optim.Warmup(o, 4, then=optim.CosineDecay(o, 8)), 14)
    assert curve == pytest.approx(
        [(t + 1) / 4 if t < 4 else cosine(1.0, t - 4, 8, 0.0) for t in range(14)], abs=1e-15)


def test_lr_curve_plateau():
    """ReduceOnPlateau sees a constant metric: a reduction every patience + 1 steps."""
    curve = optim.lr_curve(lambda o: optim.ReduceOnPlateau(o, factor=0.5, patience=2), 10)
    assert curve == [1.0, *plateau_oracle([1.0] * 9, 1.0, 0.5, 2)]


def test_plot_lr_writes_png(tmp_path):
    pytest.importorskip("matplotlib")
    path = tmp_path / "lr.png"
    optim.plot_lr({"step": lambda o: optim.StepDecay(o, 5, 0.5),
                   "cosine": lambda o: optim.CosineDecay(o, 20)}, 20, path)
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 1000


def test_plot_lr_leaves_the_backend_alone(tmp_path, matplotlib_untouched):
    """A notebook's backend must survive: no matplotlib.use, no pyplot figure left."""
    optim.plot_lr({"step": lambda o: optim.StepDecay(o, 5, 0.5)}, 10, tmp_path / "lr.png")
    assert (tmp_path / "lr.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_plot_lr_without_matplotlib(tmp_path, monkeypatch):
    """Without matplotlib, plot_lr says what it needs (and writes nothing)."""

    monkeypatch.setitem(sys.modules, "matplotlib", None)
    path = tmp_path / "lr.png"
    with pytest.raises(ImportError, match="matplotlib"):
        optim.plot_lr({"step": lambda o: optim.StepDecay(o, 5, 0.5)}, 10, path)
    assert not path.exists()
