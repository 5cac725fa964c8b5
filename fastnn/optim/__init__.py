"""Optimizers (one fused kernel pass per parameter span), gradient clipping, and
learning-rate schedules."""

from .adagrad import Adagrad
from .adam import Adam, AdamW
from .clip import clip_grad_norm
from .create import NAMES, create
from .optimizer import Optimizer
from .rmsprop import RMSProp
from .schedules import (
    CosineDecay,
    ExponentialDecay,
    InverseTimeDecay,
    ReduceOnPlateau,
    Schedule,
    StepDecay,
    Warmup,
    lr_curve,
    plot_lr,
)
from .sgd import SGD

__all__ = [
    "NAMES",
    "SGD",
    "Adagrad",
    "Adam",
    "AdamW",
    "CosineDecay",
    "ExponentialDecay",
    "InverseTimeDecay",
    "Optimizer",
    "RMSProp",
    "ReduceOnPlateau",
    "Schedule",
    "StepDecay",
    "Warmup",
    "clip_grad_norm",
    "create",
    "lr_curve",
    "plot_lr",
]
