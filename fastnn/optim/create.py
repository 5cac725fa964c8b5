"""create(): an optimizer by name, as the command line and the estimators choose one."""

from .adagrad import Adagrad
from .adam import Adam, AdamW
from .rmsprop import RMSProp
from .sgd import SGD

__all__ = ["NAMES", "create"]

NAMES = ("sgd", "momentum", "nesterov", "adagrad", "rmsprop", "adam", "adamw")


def create(name, params, lr, weight_decay=0.0):
    """The optimizer called `name` (one of NAMES) over params; "momentum" and "nesterov"
    are SGD with momentum 0.9."""
    if name in ("sgd", "momentum", "nesterov"):
        return SGD(params, lr, momentum=0.0 if name == "sgd" else 0.9,
                   nesterov=name == "nesterov", weight_decay=weight_decay)
    if name == "adagrad":
        return Adagrad(params, lr, weight_decay=weight_decay)
    if name == "rmsprop":
        return RMSProp(params, lr, weight_decay=weight_decay)
    if name in ("adam", "adamw"):
        return (AdamW if name == "adamw" else Adam)(params, lr, weight_decay=weight_decay)
    raise ValueError(f"optimizer: expected one of {NAMES}, got {name!r}")
