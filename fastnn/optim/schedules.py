"""Learning-rate schedules: the seed lecture's step, exponential and 1/t decay, plus
cosine decay, linear warmup and reduce-on-plateau.

A schedule sets the "lr" of every parameter group of its optimizer; the optimizer checks
it at its next step (a rate that overflows the parameters' dtype raises ValueError there,
before any update). Call `step()` once
per epoch (or per iteration: t counts whatever you step it by); `get_last_lr()` gives
the current rates. Each group's starting rate a0 is kept as "initial_lr" in the group,
so schedules can be chained (see Warmup).
"""

import math
from functools import partial
from typing import ClassVar

from .._checks import (
    NON_NEGATIVE,
    POSITIVE,
    UNIT,
    ArgumentTypeError,
    Interval,
    check_choice,
    check_float,
    check_int,
)

__all__ = [
    "CosineDecay",
    "ExponentialDecay",
    "InverseTimeDecay",
    "ReduceOnPlateau",
    "Schedule",
    "StepDecay",
    "Warmup",
    "lr_curve",
    "plot_lr",
]


_FACTOR = Interval(0, 1, closed="neither")


def _within(check, interval):
    """check(value, name) with the Interval `interval`."""
    return partial(check, within=interval)


def _rates(v, name):
    """A list of learning rates, each a finite number >= 0."""
    if not isinstance(v, (list, tuple)):
        raise ArgumentTypeError(f"{name}: expected a list of numbers, got {v!r}")
    return [check_float(a, f"{name}[{i}]", NON_NEGATIVE) for i, a in enumerate(v)]


def _optional_float(v, name):
    return None if v is None else check_float(v, name)


class Schedule:
    """Base: lr of each group at step t is rate(a0, t); t starts at 0.

    `checks` holds the check of every value in state_dict(), name -> check(value,
    name): a subclass adds its constructor arguments, which its constructor sets
    through them (`_set`), so that load_state_dict() applies the same checks to the
    values of a file as the constructor to its arguments.
    """

    checks: ClassVar[dict] = {"t": _within(check_int, NON_NEGATIVE), "base_lrs": _rates}

    def __init__(self, optimizer):
        self.optimizer = optimizer
        for group in optimizer.param_groups:
            group.setdefault("initial_lr", group["lr"])
        self.base_lrs = [g["initial_lr"] for g in optimizer.param_groups]
        self.t = 0
        self._apply()

    def rate(self, a0, t):
        raise NotImplementedError

    def _apply(self):
        for group, a0 in zip(self.optimizer.param_groups, self.base_lrs):
            group["lr"] = self.rate(a0, self.t)

    def step(self):
        self.t += 1
        self._apply()

    def get_last_lr(self):
        return [g["lr"] for g in self.optimizer.param_groups]

    def state_dict(self):
        return {k: v for k, v in vars(self).items() if k != "optimizer" and not callable(v)}

    def _set(self, **arguments):
        for name, value in arguments.items():
            setattr(self, name, self.checks[name](value, name))

    def load_state_dict(self, state):
        """Restore state_dict()'s values, each through its check (a ValueError names
        the one that fails); nothing changes unless all pass."""
        vars(self).update(self._checked(state))
        self._apply()

    def check_state_dict(self, state):
        """Raise the ValueError load_state_dict(state) would raise, changing nothing
        (fastnn.save_checkpoint checks with it before writing)."""
        self._checked(state)

    def _checked(self, state):
        """`state`'s values, checked: the keys of `checks`, each value passing its check,
        one starting rate per parameter group."""
        where = f"{type(self).__name__}.load_state_dict"
        if not isinstance(state, dict) or set(state) != set(self.checks):
            got = sorted(state) if isinstance(state, dict) else type(state).__name__
            raise ValueError(f"{where}: expected the keys {sorted(self.checks)}, got {got}")
        try:
            checked = {name: self.checks[name](value, name) for name, value in state.items()}
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{where}: {exc}") from exc
        if len(checked["base_lrs"]) != len(self.optimizer.param_groups):
            raise ValueError(f"{where}: {len(checked['base_lrs'])} starting rates for "
                             f"{len(self.optimizer.param_groups)} parameter groups")
        return checked


class StepDecay(Schedule):
    """lr = a0 * gamma ** (t // step_size)."""

    checks: ClassVar[dict] = {**Schedule.checks, "step_size": _within(check_int, POSITIVE),
                              "gamma": _within(check_float, NON_NEGATIVE)}

    def __init__(self, optimizer, step_size, gamma=0.1):
        self._set(step_size=step_size, gamma=gamma)
        super().__init__(optimizer)

    def rate(self, a0, t):
        return a0 * self.gamma ** (t // self.step_size)


class ExponentialDecay(Schedule):
    """lr = a0 * exp(-k t)."""

    checks: ClassVar[dict] = {**Schedule.checks, "k": _within(check_float, NON_NEGATIVE)}

    def __init__(self, optimizer, k):
        self._set(k=k)
        super().__init__(optimizer)

    def rate(self, a0, t):
        return a0 * math.exp(-self.k * t)


class InverseTimeDecay(Schedule):
    """lr = a0 / (1 + k t)."""

    checks: ClassVar[dict] = {**Schedule.checks, "k": _within(check_float, NON_NEGATIVE)}

    def __init__(self, optimizer, k):
        self._set(k=k)
        super().__init__(optimizer)

    def rate(self, a0, t):
        return a0 / (1 + self.k * t)


class CosineDecay(Schedule):
    """lr = eta_min + (a0 - eta_min) * (1 + cos(pi * min(t, t_max) / t_max)) / 2."""

    checks: ClassVar[dict] = {**Schedule.checks, "t_max": _within(check_int, POSITIVE),
                              "eta_min": _within(check_float, NON_NEGATIVE)}

    def __init__(self, optimizer, t_max, eta_min=0.0):
        self._set(t_max=t_max, eta_min=eta_min)
        optimizer._check_in_dtypes("eta_min", self.eta_min)
        super().__init__(optimizer)

    def rate(self, a0, t):
        frac = min(t, self.t_max) / self.t_max
        return self.eta_min + (a0 - self.eta_min) * (1 + math.cos(math.pi * frac)) / 2


class Warmup(Schedule):
    """Linear warmup: lr = a0 * (t + 1) / steps for t < steps; then `then` takes over
    (stepped from its own t = 0), or lr stays a0 when then=None.

    Build `then` on the same optimizer first: Warmup(opt, 500, then=CosineDecay(opt, 10000)).
    """

    checks: ClassVar[dict] = {**Schedule.checks, "steps": _within(check_int, POSITIVE)}

    def __init__(self, optimizer, steps, then=None):
        self._set(steps=steps)
        if then is not None and then.optimizer is not optimizer:
            raise ValueError("then: must schedule the same optimizer")
        self.then = then
        super().__init__(optimizer)

    def rate(self, a0, t):
        return a0 * (t + 1) / self.steps

    def _apply(self):
        if self.t < self.steps:
            super()._apply()
        elif self.then is not None:
            self.then.t = self.t - self.steps
            self.then._apply()
        else:
            for group, a0 in zip(self.optimizer.param_groups, self.base_lrs):
                group["lr"] = a0

    def state_dict(self):
        state = super().state_dict()
        state["then"] = None if self.then is None else self.then.state_dict()
        return state

    def load_state_dict(self, state):
        self.check_state_dict(state)  # all of it, `then` included, before any change
        state = dict(state)
        then = state.pop("then", None)
        if then is not None:
            self.then.load_state_dict(then)
        vars(self).update(self._checked(state))
        self._apply()

    def check_state_dict(self, state):
        state = dict(state)
        then = state.pop("then", None)
        if (then is None) != (self.then is None):
            raise ValueError("Warmup.load_state_dict: the state and this Warmup differ in "
                             "having a schedule `then`")
        self._checked(state)
        if then is not None:
            self.then.check_state_dict(then)


class ReduceOnPlateau(Schedule):
    """Multiply lr by `factor` when the monitored metric has not improved for `patience`
    steps (mode "min": lower is better; "max": higher). step(metric) each epoch.

    An improvement must beat the best by a relative `threshold`; lr never goes below
    min_lr.
    """

    checks: ClassVar[dict] = {
        **Schedule.checks,
        "factor": _within(check_float, _FACTOR),
        "patience": _within(check_int, NON_NEGATIVE),
        "mode": partial(check_choice, choices=("min", "max")),
        "threshold": _within(check_float, NON_NEGATIVE),
        "min_lr": _within(check_float, NON_NEGATIVE),
        # what stepping changes: the best metric yet, steps since, the lr's factor
        "best": _optional_float,
        "bad_steps": _within(check_int, NON_NEGATIVE),
        "scale": _within(check_float, UNIT),
    }

    def __init__(self, optimizer, factor=0.1, patience=10, mode="min", threshold=1e-4,
                 min_lr=0.0):
        self._set(factor=factor, patience=patience, mode=mode, threshold=threshold,
                  min_lr=min_lr)
        optimizer._check_in_dtypes("min_lr", self.min_lr)
        self.best = None
        self.bad_steps = 0
        self.scale = 1.0
        super().__init__(optimizer)

    def rate(self, a0, t):
        return max(a0 * self.scale, self.min_lr)

    def _improved(self, metric):
        if self.best is None:
            return True
        if self.mode == "min":
            return metric < self.best * (1 - self.threshold) if self.best > 0 else (
                metric < self.best - abs(self.best) * self.threshold)
        return metric > self.best * (1 + self.threshold) if self.best > 0 else (
            metric > self.best + abs(self.best) * self.threshold)

    def step(self, metric):
        metric = float(metric)
        if math.isnan(metric):
            raise ValueError("ReduceOnPlateau.step: the metric is NaN")
        self.t += 1
        if self._improved(metric):
            self.best, self.bad_steps = metric, 0
        else:
            self.bad_steps += 1
            if self.bad_steps > self.patience:
                self.scale *= self.factor
                self.bad_steps = 0
        self._apply()


def lr_curve(make_schedule, steps, lr=1.0):
    """The lr at t = 0 .. steps-1 of `make_schedule(optimizer)`, on a throwaway
    optimizer with starting rate `lr`: for plots and checks."""
    import numpy as np

    from ..nn.parameter import Parameter
    from .sgd import SGD

    p = Parameter(np.zeros(1), np.zeros(1))
    schedule = make_schedule(SGD([p], lr=lr))
    rates = []
    for _ in range(steps):
        rates.append(schedule.get_last_lr()[0])
        schedule.step() if not isinstance(schedule, ReduceOnPlateau) else schedule.step(1.0)
    return rates


def plot_lr(schedules, steps, path, lr=1.0):
    """Draw lr against step for {label: make_schedule} into a PNG (needs matplotlib)."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as exc:
        raise ImportError("plot_lr needs matplotlib: pip install 'fastnn[plot]'") from exc
    # a Figure of its own on an Agg canvas: a notebook's pyplot backend stays as it is
    fig = Figure(figsize=(7, 4))
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    for label, make in schedules.items():
        ax.plot(range(steps), lr_curve(make, steps, lr), label=label)
    ax.set_xlabel("step")
    ax.set_ylabel("learning rate")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    return path
