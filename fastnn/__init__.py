"""fastnn: fast neural-network training on CPU-only servers.

Cython + OpenMP kernels do the arithmetic (`fastnn.ops`); `fastnn.nn` has the layers,
`fastnn.losses` the losses and penalties, `fastnn.optim` the optimizers and schedules,
`fastnn.Trainer` the training loop, `fastnn.save`/`fastnn.load` the model files.
Threads are controlled with `set_num_threads`, `get_num_threads` and the `threads`
context manager, the BLAS behind the matrix products with `set_blas` and `get_blas`;
`show_config()` tells how this build runs; `manual_seed(s)` seeds
every layer, Dropout, augmentation and Trainer built afterwards without a seed.
"""

import warnings

from . import _blas, augment, losses, nn, ops, optim
from ._blas import get_blas, set_blas
from ._config import openmp_enabled, show_config
from ._seed import manual_seed
from ._threads import get_num_threads, set_num_threads, threads
from ._version import __version__
from .callbacks import Callback, Checkpoint, EarlyStopping, History
from .ensemble import Ensemble
from .io import load, save
from .onnx_export import export_onnx
from .train import Trainer

__all__ = [
    "Callback",
    "Checkpoint",
    "EarlyStopping",
    "Ensemble",
    "History",
    "Trainer",
    "__version__",
    "augment",
    "export_onnx",
    "get_blas",
    "get_num_threads",
    "load",
    "losses",
    "manual_seed",
    "nn",
    "openmp_enabled",
    "ops",
    "optim",
    "save",
    "set_blas",
    "set_num_threads",
    "show_config",
    "threads",
]

_blas.configure()

if not openmp_enabled():
    warnings.warn(
        "fastnn was built without OpenMP: its kernels run on one thread "
        "(fastnn.show_config() has the details)",
        RuntimeWarning,
        stacklevel=2,
    )
