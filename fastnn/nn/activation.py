"""Activation layers, element-wise on inputs of any shape. In a compiled plan, one that
follows a GEMM layer (Linear, Conv2d), a BatchNorm1d or a Residual sum runs in that op's
epilogue."""

from .. import ops
from .._checks import check_choice, check_float, check_slope
from .._kernels import activations as _act
from .module import Module

__all__ = ["ELU", "GELU", "LeakyReLU", "ReLU", "SiLU", "Sigmoid", "Tanh"]


class _Activation(Module):
    activation = None  # the name fastnn.ops knows it by
    slope = 0.0
    grad_from_x = False  # whether the backward pass reads the input (else the output)

    def config(self):
        return {}

    def forward(self, x):
        y = self.workspace("y", x.shape, x.dtype)
        self._x = x
        self._y = self._forward(x, y)
        return self._y

    def backward(self, dout, input_grad=True):
        if not input_grad:
            return None
        return self._backward(dout, self.workspace("dx", dout.shape, dout.dtype))

    # ------------------------------------------------------------ compiled form

    def plan_state(self):
        return ("training", "slope")

    def add_to_plan(self, plan, after):
        plan.add_activation(_act.ACTIVATIONS[self.activation], self.slope, self.grad_from_x)
        return 1

    def epilogue(self):
        # f'(x) from y = f(x) needs f to keep the sign: LeakyReLU with slope >= 0 (an
        # activation whose gradient reads x has the epilogue keep x)
        if self.slope < 0 and self.activation not in _act.READS_INPUT:
            return None
        return _act.ACTIVATIONS[self.activation], self.slope


class ReLU(_Activation):
    """max(x, 0)."""

    activation = "relu"

    def _forward(self, x, out):
        return ops.relu(x, out=out)

    def _backward(self, dout, out):
        return ops.relu_backward(dout, self._y, out=out)


class LeakyReLU(_Activation):
    """x where x > 0, else slope * x."""

    activation = "leaky_relu"
    grad_from_x = True

    def __init__(self, slope=0.01):
        super().__init__()
        self.slope = check_slope(slope)

    def config(self):
        return {"slope": self.slope}

    def extra_repr(self):
        return f"slope={self.slope}"

    def _forward(self, x, out):
        return ops.leaky_relu(x, self.slope, out=out)

    def _backward(self, dout, out):
        return ops.leaky_relu_backward(dout, self._x, self.slope, out=out)


class Sigmoid(_Activation):
    """1 / (1 + exp(-x)), overflow-safe."""

    activation = "sigmoid"

    def _forward(self, x, out):
        return ops.sigmoid(x, out=out)

    def _backward(self, dout, out):
        return ops.sigmoid_backward(dout, self._y, out=out)


class Tanh(_Activation):
    """tanh(x)."""

    activation = "tanh"

    def _forward(self, x, out):
        return ops.tanh(x, out=out)

    def _backward(self, dout, out):
        return ops.tanh_backward(dout, self._y, out=out)


class ELU(_Activation):
    """x where x > 0, else alpha * (exp(x) - 1) (PyTorch's ELU; any finite alpha)."""

    activation = "elu"
    grad_from_x = True

    def __init__(self, alpha: float = 1.0) -> None:
        super().__init__()
        self.alpha = check_float(alpha, "alpha")

    @property
    def slope(self):  # the kernels take the activation's parameter as `slope`
        return self.alpha

    def config(self):
        return {"alpha": self.alpha}

    def extra_repr(self):
        return f"alpha={self.alpha}"

    def _forward(self, x, out):
        return ops.elu(x, self.alpha, out=out)

    def _backward(self, dout, out):
        return ops.elu_backward(dout, self._x, self.alpha, out=out)


class GELU(_Activation):
    """x * Phi(x), Phi the standard normal CDF (x / 2 * (1 + erf(x / sqrt(2)))); with
    approximate="tanh", x / 2 * (1 + tanh(sqrt(2 / pi) * (x + 0.044715 * x**3))), as
    PyTorch's GELU."""

    grad_from_x = True

    def __init__(self, approximate: str = "none") -> None:
        super().__init__()
        self.approximate = check_choice(approximate, "approximate", ("none", "tanh"))

    @property
    def activation(self):
        return "gelu" if self.approximate == "none" else "gelu_tanh"

    def plan_state(self):
        return ("training", "approximate")

    def config(self):
        return {"approximate": self.approximate}

    def extra_repr(self):
        return f"approximate={self.approximate!r}"

    def _forward(self, x, out):
        return ops.gelu(x, self.approximate, out=out)

    def _backward(self, dout, out):
        return ops.gelu_backward(dout, self._x, self.approximate, out=out)


class SiLU(_Activation):
    """x * sigmoid(x) (SiLU, or swish)."""

    activation = "silu"
    grad_from_x = True

    def _forward(self, x, out):
        return ops.silu(x, out=out)

    def _backward(self, dout, out):
        return ops.silu_backward(dout, self._x, out=out)
