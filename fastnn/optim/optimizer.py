"""The Optimizer base class: parameter groups, flat spans, state, state_dict."""

import math
from typing import ClassVar

import numpy as np

from .. import _memory
from .._checks import (
    NON_NEGATIVE,
    POSITIVE,
    check_float,
    check_float_in,
    check_int,
    check_pair,
    check_rows_finite,
)
from .._kernels import optim as _k
from .._threads import kernel_threads

__all__ = ["Optimizer", "flat_spans", "grad_norm", "norm_blocks"]


def _as_param_list(params):
    """A list of parameters from a Module (its parameters()), or an iterable."""
    if hasattr(params, "parameters") and callable(params.parameters):
        params = params.parameters()
    if isinstance(params, np.ndarray):
        raise TypeError("params: expected an iterable of parameters or a Module, got one array")
    return list(params)


def _check_param(p, i):
    if not isinstance(p, np.ndarray) or p.dtype not in (np.float32, np.float64):
        raise TypeError(f"params[{i}]: expected a float32/float64 array, got {type(p).__name__}")
    grad = getattr(p, "grad", None)
    if not isinstance(grad, np.ndarray) or grad.shape != p.shape or grad.dtype != p.dtype:
        raise ValueError(f"params[{i}]: needs a .grad array of its own shape and dtype")
    if not (p.flags.c_contiguous and grad.flags.c_contiguous and p.flags.writeable):
        raise ValueError(f"params[{i}]: parameter and gradient must be writeable and C-contiguous")


def flat_spans(params):
    """[(values, gradients)] as flat views covering `params`. Parameters of one arena are
    taken in arena order and merged where adjacent, so that a whole arena is one span
    (or one per group when groups split it)."""
    return [(values, grads) for values, grads, _ in _sourced_spans(params)]


def _sourced_spans(params):
    """flat_spans, each with its source: (arena, start) for a span of an arena, or the
    parameter itself for a loose one."""
    for i, p in enumerate(params):
        _check_param(p, i)
    arenas = {}
    spans = []
    for p in params:
        arena = getattr(p, "arena", None)
        if arena is None:
            spans.append((p.reshape(-1), p.grad.reshape(-1), p))
        else:
            arenas.setdefault(id(arena), (arena, []))[1].append(p)
    for arena, members in arenas.values():
        members.sort(key=lambda p: p.offset)
        start = end = members[0].offset
        for p in members:
            if p.offset != end:
                spans.append(_arena_span(arena, start, end))
                start = p.offset
            end = p.offset + p.size
        spans.append(_arena_span(arena, start, end))
    return spans


def norm_blocks(spans):
    """(sums, parts) for grad_norm over spans [(values, gradients)]: a buffer of block
    sums, and each span's gradients with its part of it."""
    grads = [g for _, g in spans if g.size]
    blocks = [-(-g.size // _k.NORM_BLOCK) for g in grads]
    sums = np.zeros(sum(blocks))
    starts = np.cumsum([0, *blocks])
    return sums, [(g, sums[lo:hi]) for g, lo, hi in zip(grads, starts, starts[1:])]


def grad_norm(sums, parts, threads):
    """The L2 norm of all the gradients of norm_blocks' parts together: one blocked
    reduction per span, bitwise the same for any thread count; non-finite when a
    gradient is."""
    for grads, part in parts:
        _k.sum_squares(grads, part, threads)
    return math.sqrt(sum(sums.tolist()))  # in block order; fewer blocks than a call costs


def _arena_span(arena, start, end):
    return arena.data[start:end], arena.grad[start:end], (arena, start)


def _trainable(source, size):
    """[(lo, hi)]: the parts of a span that are not frozen; None when that is the whole
    span. Raises when the span's arena was emptied into another one."""
    if isinstance(source, tuple):
        arena, start = source
        if arena.retired:
            raise RuntimeError(
                "optimizer: its parameters moved into the arena of a container built "
                "around their layers afterwards; build the optimizer after the model")
        return arena.trainable_ranges(start, start + size) if arena.frozen else None
    return None if getattr(source, "requires_grad", True) else []


class Optimizer:
    """Base of the optimizers.

    `params` is a Module, an iterable of parameters (arrays with a `.grad`, such as a
    model's parameters()), or a list of dicts, each a parameter group with a "params"
    entry and its own hyperparameters. Given plain parameters, weight decay (when the
    optimizer has it) applies to parameters of kind "weight" only: biases and BatchNorm
    parameters form a second group without it. Parameters adjacent in one arena are
    updated as one flat span, by one kernel call per group.
    """

    # names of the per-element state arrays, created at the first step
    state_names = ()
    # those that must be >= 0 (sums of squares, under a square root)
    non_negative_state = ()

    # Each hyperparameter's constraint (a subclass adds its own), checked as a Python
    # float and again in the dtype of the parameters, where the kernels compute with it;
    # `pairs` names those given as a pair, both items under the constraint.
    constraints: ClassVar[dict] = {"lr": NON_NEGATIVE, "weight_decay": NON_NEGATIVE,
                                   "eps": POSITIVE, "momentum": NON_NEGATIVE}
    pairs = ()

    def __init__(self, params, **hyper):
        self.defaults = dict(hyper)
        for name, value in hyper.items():
            self._check(name, value)
        self.param_groups = []
        self._checked = []  # per group: {name: value} of its hyperparameters last checked
        self._kinds = None  # (arenas, loose parameters) of the spans, once known
        for group in self._groups(params, hyper):
            self._add_group(group)
        self._check_disjoint()
        self.step_count = 0
        self._state = None  # per span: {name: array}
        self._norm_blocks = None  # norm_blocks of the spans, for grad_norm

    # ------------------------------------------------------------ groups

    def _groups(self, params, hyper):
        is_groups = isinstance(params, (list, tuple)) and params
        if is_groups and all(isinstance(g, dict) for g in params):
            return [dict(g) for g in params]
        params = _as_param_list(params)
        if not params:
            raise ValueError("params: the optimizer got no parameters")
        if hyper.get("weight_decay", 0) and any(getattr(p, "kind", "weight") != "weight"
                                                for p in params):
            return [
                {"params": [p for p in params if getattr(p, "kind", "weight") == "weight"]},
                {"params": [p for p in params if getattr(p, "kind", "weight") != "weight"],
                 "weight_decay": 0.0},
            ]
        return [{"params": params}]

    def _add_group(self, group):
        if "params" not in group:
            raise ValueError("param group: needs a 'params' entry")
        params = _as_param_list(group["params"])
        for key in group:
            if key not in self.defaults and key not in ("params", "initial_lr"):
                raise ValueError(f"param group: unknown hyperparameter {key!r}")
        merged = {**self.defaults, **{k: v for k, v in group.items() if k != "params"}}
        for name, value in merged.items():
            if name in self.defaults:
                merged[name] = self._check(name, value)
        merged["params"] = params
        sourced = _sourced_spans(params)
        merged["spans"] = [(values, grads) for values, grads, _ in sourced]
        merged["sources"] = [source for _, _, source in sourced]
        self._check_dtype(merged)
        self.param_groups.append(merged)
        self._checked.append({name: merged[name] for name in self.constraints if name in merged})
        self._kinds = None

    def _check_disjoint(self):
        """Each parameter must appear once: in one group, once (as torch.optim requires
        across groups); a repeat would be updated twice per step."""
        ranges = sorted(
            (values.__array_interface__["data"][0],
             values.__array_interface__["data"][0] + values.nbytes)
            for _, (values, _) in self._spans() if values.size
        )
        for (_, end), (start, _) in zip(ranges, ranges[1:]):
            if start < end:
                raise ValueError("params: a parameter appears more than once (within a group "
                                 "or in two groups)")

    def _check(self, name, value):
        """One hyperparameter as a float (a pair of them for `pairs`) within its
        constraint; other arguments (nesterov) as they are."""
        within = self.constraints.get(name)
        if within is None:
            return value
        if name in self.pairs:
            return check_pair(value, name, within=within, single=False)
        return check_float(value, name, within)

    def _dtypes(self, group=None):
        """The dtypes of the parameters of `group`, or of every group."""
        groups = self.param_groups if group is None else (group,)
        return {values.dtype for g in groups for values, _ in g["spans"]}

    def _check_dtype(self, group):
        """The group's hyperparameters as its kernels take them, in its parameters'
        dtype: finite, and within their constraints once rounded (ValueError)."""
        for dtype in self._dtypes(group):
            for name, within in self.constraints.items():
                if name in group:
                    value = group[name]
                    for v in value if name in self.pairs else (value,):
                        check_float_in(v, name, dtype, within)

    def _check_in_dtypes(self, name, value, within=NON_NEGATIVE):
        """value (a schedule's bound on lr, say) as a learning rate of every group."""
        for dtype in self._dtypes():
            check_float_in(value, name, dtype, within)
        return value

    def _check_changes(self):
        """Check again, before a step, the groups whose hyperparameters were set since
        they were last checked (a schedule sets lr; so may anyone)."""
        for i, (group, checked) in enumerate(zip(self.param_groups, self._checked)):
            for name, value in checked.items():
                if group[name] != value:
                    for key in checked:
                        group[key] = self._check(key, group[key])
                    self._check_dtype(group)
                    self._checked[i] = {key: group[key] for key in checked}
                    break

    # ------------------------------------------------------------ stepping

    def _spans(self):
        for group in self.param_groups:
            for span in group["spans"]:
                yield group, span

    def _sources(self):
        for group in self.param_groups:
            yield from group["sources"]

    def _plain(self):
        """Whether every span is trained whole (no frozen parameter, no retired arena)."""
        if self._kinds is None:
            sources = list(self._sources())
            self._kinds = ({id(s[0]): s[0] for s in sources if type(s) is tuple}.values(),
                           [s for s in sources if type(s) is not tuple])
        arenas, loose = self._kinds
        for arena in arenas:
            if arena.frozen or arena.retired:
                return False
        for p in loose:
            if not getattr(p, "requires_grad", True):
                return False
        return True

    def _ensure_state(self):
        if self._state is None:
            self._state = [{name: _memory.zeros(values.size, values.dtype)
                            for name in self.state_names}
                           for _, (values, _) in self._spans()]
        return self._state

    def step(self):
        """Update every parameter from its gradient, in one kernel pass per span (per
        run of trainable parameters in it when some are frozen: frozen parameters and
        their state do not change). A hyperparameter set since the last step is checked
        first, as the constructor checks it (ValueError, nothing updated)."""
        self._check_changes()
        state = self._ensure_state()
        threads = kernel_threads()
        if self._plain():
            self.step_count += 1  # nothing frozen: one pass per span
            for (group, (values, grads)), span_state in zip(self._spans(), state):
                self._update(group, values, grads, span_state, threads)
            return
        parts = [_trainable(source, values.size)
                 for (_, (values, _)), source in zip(self._spans(), self._sources())]
        self.step_count += 1
        for (group, (values, grads)), span_state, ranges in zip(self._spans(), state, parts):
            if ranges is None:
                self._update(group, values, grads, span_state, threads)
                continue
            for lo, hi in ranges:
                self._update(group, values[lo:hi], grads[lo:hi],
                             {name: arr[lo:hi] for name, arr in span_state.items()}, threads)

    def _update(self, group, values, grads, state, threads):
        raise NotImplementedError

    def zero_grad(self):
        for _, (_, grads) in self._spans():
            grads.fill(0)

    def grads_finite(self):
        """Whether every gradient of every span (frozen parameters' included) is finite:
        the check before a step, cheaper than a norm (no squares, no float64)."""
        threads = kernel_threads()
        return all(_k.all_finite(grads, threads) for _, (_, grads) in self._spans())

    def grad_norm(self):
        """The L2 norm of the gradients of all the spans together (frozen parameters'
        included), as clip_grad_norm computes it; non-finite when a gradient is."""
        if self._norm_blocks is None:
            self._norm_blocks = norm_blocks([span for _, span in self._spans()])
        return grad_norm(*self._norm_blocks, kernel_threads())

    # ------------------------------------------------------------ state

    def state_dict(self):
        """Hyperparameters per group, the step count, and copies of the state arrays."""
        groups = [{k: v for k, v in g.items() if k not in ("params", "spans", "sources")}
                  for g in self.param_groups]
        state = None if self._state is None else [
            {name: arr.copy() for name, arr in s.items()} for s in self._state
        ]
        return {"param_groups": groups, "step_count": self.step_count, "state": state}

    def load_state_dict(self, state_dict):
        """Restore what state_dict() saved, into an optimizer built over the same
        parameters; resuming then follows the same trajectory as never stopping.

        Everything is checked before anything changes, with the checks the constructor
        applies: hyperparameters (and "initial_lr" as "lr"), a step count >= 0, state
        arrays of the right names and shapes, finite, and >= 0 where the update takes
        their square root (`non_negative_state`). A ValueError names what is wrong."""
        checked, step_count = self._validated(state_dict)
        saved = state_dict["state"]
        for i, (group, saved_group) in enumerate(zip(self.param_groups, checked)):
            group.update(saved_group)
            self._checked[i] = {k: group[k] for k in self._checked[i]}
        self.step_count = step_count
        if saved is None:
            self._state = None
        else:
            state = self._ensure_state()
            for mine, s in zip(state, saved):
                for name in self.state_names:
                    np.copyto(mine[name], s[name], casting="same_kind")

    def check_state_dict(self, state_dict):
        """Raise the ValueError load_state_dict(state_dict) would raise, changing
        nothing (fastnn.save_checkpoint checks with it before writing)."""
        self._validated(state_dict)

    def _validated(self, state_dict):
        """(param groups, step count) of `state_dict`, checked, and its state arrays
        checked: load_state_dict's checks."""
        groups = state_dict["param_groups"]
        if len(groups) != len(self.param_groups):
            raise ValueError(
                f"load_state_dict: {len(groups)} param groups saved, {len(self.param_groups)} here"
            )
        checked = []
        for i, saved_group in enumerate(groups):
            group = {}
            for key, value in saved_group.items():
                try:
                    if key in self.defaults:
                        value = self._check(key, value)
                    elif key == "initial_lr":
                        value = check_float(value, "initial_lr", NON_NEGATIVE)
                    else:
                        raise ValueError(f"unknown hyperparameter {key!r}")
                except (TypeError, ValueError) as exc:
                    raise ValueError(f"load_state_dict: param group {i}: {exc}") from exc
                group[key] = value
            try:
                self._check_dtype({**self.param_groups[i], **group})
            except ValueError as exc:
                raise ValueError(f"load_state_dict: param group {i}: {exc}") from exc
            checked.append(group)
        step_count = check_int(state_dict["step_count"], "load_state_dict: step_count",
                               NON_NEGATIVE)
        saved = state_dict["state"]
        if saved is not None:
            spans = list(self._spans())
            if len(saved) != len(spans):
                raise ValueError("load_state_dict: the saved state covers other parameters")
            for i, ((_, (values, _)), s) in enumerate(zip(spans, saved)):
                if set(s) != set(self.state_names):
                    raise ValueError(f"load_state_dict: span {i} has state {sorted(s)}, "
                                     f"expected {sorted(self.state_names)}")
                for name in self.state_names:
                    self._check_state(f"load_state_dict: state {name!r} of span {i}", name,
                                      s[name], values)
        return checked, step_count

    def _check_state(self, what, name, array, values):
        """A saved state array for the span `values`: its shape, a float dtype, values
        finite in the span's dtype, >= 0 when `name` is in non_negative_state."""
        array = np.asarray(array)
        if array.shape != values.shape or array.dtype.kind != "f":
            raise ValueError(f"{what} is {array.dtype}{array.shape}, expected "
                             f"{values.dtype}{values.shape}")
        check_rows_finite(array, what, values.dtype)
        if name in self.non_negative_state and (array < 0).any():
            raise ValueError(f"{what}: must be >= 0 (a running sum of squares)")

    def __repr__(self):
        hyper = ", ".join(f"{k}={v}" for k, v in self.defaults.items())
        return f"{type(self).__name__}({hyper}, groups={len(self.param_groups)})"
