"""The base of layers that compute with one KernelOp (Conv2d, pooling, BatchNorm2d), and
the checks of their image input."""

from .._checks import check_array, check_contiguous
from .._threads import kernel_threads
from .module import Module, check_input

__all__ = ["KernelLayer", "check_4d", "check_images"]


def check_images(layer, x, dtype=None):
    """x as a C-contiguous ndarray (a copy if it was not contiguous) of `dtype` when
    given, else of float32 or float64."""
    x = check_array(x, "x") if dtype is None else check_input(layer, x, dtype)
    return check_contiguous(x, "x")


def check_4d(layer, shape, channels="C"):
    """Raise ValueError unless `shape` is (N, channels, H, W)."""
    if len(shape) != 4 or (channels != "C" and shape[1] != channels):
        got = ", ".join(map(str, shape))
        raise ValueError(f"{type(layer).__name__}: expected input of shape "
                         f"(N, {channels}, H, W), got ({got})")


class KernelLayer(Module):
    """A layer that computes with one KernelOp. A subclass defines
    `_output_shape(shape)` (the per-sample output shape for an input of `shape`, N
    included; ValueError for one it refuses) and `_new_op(rows, dtype, in_shape)`; its
    forward calls `_forward(x, key, arrays)`.

    The op is rebuilt when what it was made for changes. It points into the layer's
    arrays: a copy of the layer makes its own.
    """

    compiled_form = (*Module.compiled_form, "_new_op")

    def _forward(self, x, key=(), arrays=()):
        """y for x (validated but for its shape): the op made for x's shape and dtype,
        `key` (values, compared with ==) and `arrays` (the arrays the op points into,
        compared with `is`) is reused while they stay the same."""
        y = self.workspace("y", (len(x), *self._output_shape(x.shape)), x.dtype)
        self._x, self._y = x, y
        if len(x) == 0:  # nothing to compute, no op to make
            return y
        key = (x.shape, x.dtype, *key)
        cached = self.__dict__.get("_op")
        if (cached is None or cached[0] != key
                or any(a is not b for a, b in zip(cached[1], arrays))):
            cached = (key, arrays, self._new_op(len(x), x.dtype, x.shape[1:]))
            self._op = cached
        cached[2].run_forward(x, y, kernel_threads())
        return y

    def backward(self, dout, input_grad=True):
        """d(loss)/dx for dout = d(loss)/dy of the last forward (None with input_grad
        False); parameter gradients, if any, are accumulated."""
        x, y = self._x, self._y
        dout = check_array(dout, "dout")
        if dout.shape != y.shape:
            raise ValueError(f"dout: expected shape {y.shape} (the output of "
                             f"{type(self).__name__}), got {dout.shape}")
        if dout.dtype != y.dtype:
            raise TypeError(f"dout: expected dtype {y.dtype}, got {dout.dtype}")
        dout = check_contiguous(dout, "dout")
        dx = self.workspace("dx", x.shape, x.dtype) if input_grad else None
        if len(x) == 0:
            return dx
        return self._op[2].run_backward(x, y, dout, dx, input_grad, kernel_threads())

    def __getstate__(self):
        state = super().__getstate__()
        state.pop("_op", None)
        return state

    # ------------------------------------------------------------ compiled form

    def add_to_plan(self, plan, after):
        """The layer's op, made for the plan's batch; none of these layers computes the
        next one too."""
        shape = tuple(plan.shape)
        self._output_shape((plan.rows, *shape))
        plan.add_kernel(self._new_op(plan.rows, plan.dtype, shape))
        return 1
