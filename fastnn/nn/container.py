"""Sequential: layers in a chain, their parameters in one arena."""

from .activation import _Activation
from .linear import Linear
from .module import Module

__all__ = ["Sequential"]


class Sequential(Module):
    """Apply layers in order; backward in reverse.

    On construction every parameter of every layer moves into one arena (`.arena`): one
    buffer of values and one of gradients, weights first. Take references to a layer's
    parameters after building the Sequential. An activation layer right after a Linear
    is fused into the Linear's epilogue. forward returns an array the caller owns.
    """

    def __init__(self, *layers):
        super().__init__()
        for i, layer in enumerate(layers):
            self.add_module(str(i), layer)
        self.layers = list(layers)
        self.adopt_parameters()
        for layer, after in zip(self.layers, self.layers[1:]):
            fusable = isinstance(after, _Activation) and after.slope >= 0
            if isinstance(layer, Linear) and layer.activation is None and fusable:
                layer.activation, layer.slope = after.activation, after.slope
                after.fused = True

    def __len__(self):
        return len(self.layers)

    def __getitem__(self, i):
        return self.layers[i]

    def forward(self, x):
        for layer in self.layers:
            x = layer.forward(x)
        return x.copy()

    def backward(self, dout, input_grad=True):
        """Backpropagate dout; returns d(loss)/d(input), or None with input_grad=False
        (which spares the first layer's input-gradient GEMM)."""
        if self.layers and hasattr(self.layers[0], "input_grad"):
            self.layers[0].input_grad = input_grad
        for layer in reversed(self.layers):
            dout = layer.backward(dout)
        return dout if input_grad else None
