"""fastnn: fast neural-network training on CPU-only servers.

Cython + OpenMP kernels do the arithmetic (`fastnn.ops`); threads are controlled with
`set_num_threads`, `get_num_threads` and the `threads` context manager;
`show_config()` tells how this build runs.
"""

import warnings

__version__ = "0.1.0"

from . import losses, nn, ops, optim
from ._config import openmp_enabled, show_config
from ._threads import get_num_threads, set_num_threads, threads

__all__ = [
    "__version__",
    "get_num_threads",
    "losses",
    "nn",
    "openmp_enabled",
    "ops",
    "optim",
    "set_num_threads",
    "show_config",
    "threads",
]

if not openmp_enabled():
    warnings.warn(
        "fastnn was built without OpenMP: its kernels run on one thread "
        "(fastnn.show_config() has the details)",
        RuntimeWarning,
        stacklevel=2,
    )
