"""How many threads fastnn's kernels use, and keeping BLAS in step with it.

The count comes from, in order: `set_num_threads`, the environment variable
FASTNN_NUM_THREADS, OMP_NUM_THREADS, and the CPUs this process may run on (its
affinity mask and its cgroup CPU quota, so a container limited to 4 CPUs gets 4
threads, not the host's 64).

fastnn calls BLAS (scipy's, through `scipy.linalg.cython_blas`) for its matrix
products, and runs it inside its own OpenMP threads: each thread multiplies a slab of
the output with a single-threaded BLAS call. One pool of threads then does all the
work; two pools (BLAS's and OpenMP's) spinning for the same cores slow each other down
many times over. So while fastnn is imported, the BLAS it calls is held to one thread
(process-wide, as `torch.set_num_threads` is). A build without OpenMP leaves BLAS
fastnn's thread count instead.
"""

import math
import os
import warnings
from contextlib import contextmanager
from operator import index

_ENV_VARS = ("FASTNN_NUM_THREADS", "OMP_NUM_THREADS")

_num_threads = None  # resolved on first use
_source = None  # where _num_threads came from
_blas_controllers = None  # threadpoolctl controllers of the BLAS fastnn calls


def _cgroup_cpu_limit():
    """CPUs allowed by the cgroup quota (v2 cpu.max or v1 cfs quota), or None."""
    try:
        with open("/sys/fs/cgroup/cpu.max") as f:
            quota, period = f.read().split()[:2]
        if quota != "max":
            return max(1, math.ceil(int(quota) / int(period)))
        return None
    except (OSError, ValueError):
        pass
    try:
        with open("/sys/fs/cgroup/cpu/cpu.cfs_quota_us") as f:
            quota = int(f.read())
        with open("/sys/fs/cgroup/cpu/cpu.cfs_period_us") as f:
            period = int(f.read())
        if quota > 0 and period > 0:
            return max(1, math.ceil(quota / period))
    except (OSError, ValueError):
        pass
    return None


def usable_cpus():
    """CPUs this process may use: its affinity mask, capped by its cgroup quota."""
    try:
        n = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        n = os.cpu_count() or 1
    limit = _cgroup_cpu_limit()
    if limit is not None:
        n = min(n, limit)
    return max(1, n)


def _from_environment():
    """(count, source) from the environment; a malformed value warns and is ignored."""
    for name in _ENV_VARS:
        raw = os.environ.get(name, "").strip()
        if not raw:
            continue
        # OMP_NUM_THREADS may list one count per nesting level: "4,2".
        first = raw.split(",")[0].strip()
        try:
            n = int(first)
        except ValueError:
            n = 0
        if n > 0:
            return n, name
        warnings.warn(
            f"fastnn: ignoring {name}={raw!r}: expected a positive integer",
            RuntimeWarning,
            stacklevel=3,
        )
    return usable_cpus(), "usable CPUs"


def _check_count(n):
    if isinstance(n, bool):
        raise ValueError(f"number of threads must be a positive int, got {n!r}")
    try:
        n = index(n)
    except TypeError:
        raise ValueError(f"number of threads must be a positive int, got {n!r}") from None
    if n <= 0:
        raise ValueError(f"number of threads must be a positive int, got {n}")
    return n


def _in_scipy(path):
    """True for a library shipped inside scipy's own folders (scipy.libs, scipy/...)."""
    folders = os.path.dirname(path or "").split(os.sep)
    return any(part == "scipy" or part.startswith("scipy.") for part in folders)


def _controllers():
    global _blas_controllers
    if _blas_controllers is None:
        from threadpoolctl import ThreadpoolController

        blas = [c for c in ThreadpoolController().lib_controllers if c.user_api == "blas"]
        # fastnn's GEMMs go through scipy's BLAS; prefer it when it can be told apart.
        scipy_blas = [c for c in blas if _in_scipy(c.filepath)]
        _blas_controllers = scipy_blas or blas
    return _blas_controllers


def set_blas_threads(n):
    """Set the thread count of the BLAS fastnn calls."""
    for controller in _controllers():
        controller.set_num_threads(n)


def blas_info():
    """[(name, version, threading layer, threads, file)] of the BLAS fastnn calls."""
    return [
        (c.internal_api, c.version, getattr(c, "threading_layer", "?"),
         c.get_num_threads(), c.filepath)
        for c in _controllers()
    ]


def _apply(n, source):
    global _num_threads, _source
    from ._kernels import _openmp

    _num_threads, _source = n, source
    set_blas_threads(1 if _openmp.openmp_version() else n)


def get_num_threads():
    """The number of threads fastnn's kernels (matrix products included) use."""
    if _num_threads is None:
        _apply(*_from_environment())
    return _num_threads


def num_threads_source():
    """Where the current count came from, for show_config()."""
    get_num_threads()
    return _source


def set_num_threads(n):
    """Use `n` threads in fastnn's kernels. `n` must be a positive int."""
    _apply(_check_count(n), "set_num_threads()")


@contextmanager
def threads(n):
    """Run a block with `n` threads, then restore the previous count.

    >>> with fastnn.threads(1):
    ...     y = fastnn.ops.relu(x)
    """
    n = _check_count(n)
    previous = (get_num_threads(), _source)
    _apply(n, "threads()")
    try:
        yield n
    finally:
        _apply(*previous)
