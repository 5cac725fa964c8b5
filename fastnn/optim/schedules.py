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

from .._checks import (
    NON_NEGATIVE,
    POSITIVE,
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


class Schedule:
    """Base: lr of each group at step t is rate(a0, t); t starts at 0."""

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

    def load_state_dict(self, state):
        vars(self).update(state)
        self._apply()


class StepDecay(Schedule):
    """lr = a0 * gamma ** (t // step_size)."""

    def __init__(self, optimizer, step_size, gamma=0.1):
        self.step_size = check_int(step_size, "step_size", POSITIVE)
        self.gamma = check_float(gamma, "gamma", NON_NEGATIVE)
        super().__init__(optimizer)

    def rate(self, a0, t):
        return a0 * self.gamma ** (t // self.step_size)


class ExponentialDecay(Schedule):
    """lr = a0 * exp(-k t)."""

    def __init__(self, optimizer, k):
        self.k = check_float(k, "k", NON_NEGATIVE)
        super().__init__(optimizer)

    def rate(self, a0, t):
        return a0 * math.exp(-self.k * t)


class InverseTimeDecay(Schedule):
    """lr = a0 / (1 + k t)."""

    def __init__(self, optimizer, k):
        self.k = check_float(k, "k", NON_NEGATIVE)
        super().__init__(optimizer)

    def rate(self, a0, t):
        return a0 / (1 + self.k * t)


class CosineDecay(Schedule):
    """lr = eta_min + (a0 - eta_min) * (1 + cos(pi * min(t, t_max) / t_max)) / 2."""

    def __init__(self, optimizer, t_max, eta_min=0.0):
        self.t_max = check_int(t_max, "t_max", POSITIVE)
        self.eta_min = optimizer._check_in_dtypes(
            "eta_min", check_float(eta_min, "eta_min", NON_NEGATIVE))
        super().__init__(optimizer)

    def rate(self, a0, t):
        frac = min(t, self.t_max) / self.t_max
        return self.eta_min + (a0 - self.eta_min) * (1 + math.cos(math.pi * frac)) / 2


class Warmup(Schedule):
    """Linear warmup: lr = a0 * (t + 1) / steps for t < steps; then `then` takes over
    (stepped from its own t = 0), or lr stays a0 when then=None.

    Build `then` on the same optimizer first: Warmup(opt, 500, then=CosineDecay(opt, 10000)).
    """

    def __init__(self, optimizer, steps, then=None):
        self.steps = check_int(steps, "steps", POSITIVE)
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
        state = dict(state)
        then = state.pop("then", None)
        if self.then is not None and then is not None:
            self.then.load_state_dict(then)
        super().load_state_dict(state)


class ReduceOnPlateau(Schedule):
    """Multiply lr by `factor` when the monitored metric has not improved for `patience`
    steps (mode "min": lower is better; "max": higher). step(metric) each epoch.

    An improvement must beat the best by a relative `threshold`; lr never goes below
    min_lr.
    """

    def __init__(self, optimizer, factor=0.1, patience=10, mode="min", threshold=1e-4,
                 min_lr=0.0):
        self.factor = check_float(factor, "factor", _FACTOR)
        self.patience = check_int(patience, "patience", NON_NEGATIVE)
        self.mode = check_choice(mode, "mode", ("min", "max"))
        self.threshold = check_float(threshold, "threshold", NON_NEGATIVE)
        self.min_lr = optimizer._check_in_dtypes(
            "min_lr", check_float(min_lr, "min_lr", NON_NEGATIVE))
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
