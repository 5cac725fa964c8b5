"""Gradient-norm clipping."""

import math

from .._threads import kernel_threads
from .optimizer import _as_param_list, flat_spans, grad_norm, norm_blocks

__all__ = ["clip_grad_norm"]


def clip_grad_norm(params, max_norm, nonfinite="raise"):
    """Scale all gradients by min(1, max_norm / (norm + 1e-6)), where norm is the L2 norm
    of all gradients together; return that norm (before clipping).

    The norm is one blocked reduction over each span of gradients (a whole arena is one
    span), bitwise the same for any thread count. A non-finite norm raises
    FloatingPointError with nonfinite="raise" (the default); with nonfinite="skip" the
    gradients are left as they are and the non-finite norm is returned, so that the
    caller can skip the optimizer step (`if math.isfinite(norm): opt.step()`).
    """
    if nonfinite not in ("raise", "skip"):
        raise ValueError(f"nonfinite: expected 'raise' or 'skip', got {nonfinite!r}")
    max_norm = float(max_norm)
    if not max_norm > 0 or not math.isfinite(max_norm):
        raise ValueError(f"max_norm: must be a positive finite number, got {max_norm}")
    spans = flat_spans(_as_param_list(params))
    norm = grad_norm(*norm_blocks(spans), kernel_threads())
    if not math.isfinite(norm):
        if nonfinite == "raise":
            raise FloatingPointError(
                f"clip_grad_norm: the gradient norm is {norm}: a gradient holds NaN or inf"
            )
        return norm
    coef = max_norm / (norm + 1e-6)
    if coef < 1:
        for _, grads in spans:
            grads *= grads.dtype.type(coef)
    return norm
