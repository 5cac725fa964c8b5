"""How many threads fastnn's kernels use, and keeping BLAS in step with it.

The count comes from, in order: `set_num_threads`, the environment variable
FASTNN_NUM_THREADS, OMP_NUM_THREADS, and the CPUs this process may run on (its
affinity mask and its cgroup CPU quota, so a container limited to 4 CPUs gets 4
threads, not the host's 64).

fastnn calls BLAS (an OpenBLAS, see _blas.py) for its matrix products, and runs it
inside its own OpenMP threads: each thread multiplies a slab of the output with a
single-threaded BLAS call. One pool of threads then does all the work; two pools
(BLAS's and OpenMP's) spinning for the same cores slow each other down many times
over. So while fastnn is imported, the BLAS it calls is held to one thread
(process-wide, as `torch.set_num_threads` is; each product puts the OpenBLAS it calls
back to that count where another library changed it). A build without OpenMP leaves
BLAS fastnn's thread count instead.

The count is at most max_threads(): MAX_THREADS_PER_CPU per usable CPU, and at least
MIN_THREAD_CAP whatever the CPUs. More threads than CPUs only slow a CPU-bound kernel
down, and tens of thousands exhaust the OpenMP runtime (it crashes or aborts). A larger
`set_num_threads` raises ValueError; a larger environment value warns and is ignored,
as a malformed one is.

OpenMP's thread pool does not survive fork(): in a forked child, GNU libgomp waits
forever for the parent's threads the first time it starts a team. So a child forked
(os.fork, or multiprocessing's "fork" start method) once fastnn has had more than one
thread runs fastnn's kernels on one thread; asking it for more warns and keeps one.
Worker processes that should run threads must be started with "spawn" or "forkserver"
(fastnn.Ensemble uses "spawn").

On a shared machine, a kernel whose threads outnumber the free CPUs waits at every
barrier for a thread that is not running, and runs many times slower than on fewer
threads. So while the count is the default (usable CPUs: nothing set it), the kernels
run on as many threads as other processes leave CPUs free (kernel_threads()): every
ADAPT_PERIOD seconds, the CPU time other processes took on this process's CPUs is read
from Linux's /proc/stat. Results do not depend on the thread count. A count set by
set_num_threads, threads() or the environment is used as it is.
"""

import math
import os
import time
import warnings
from contextlib import contextmanager
from operator import index

_ENV_VARS = ("FASTNN_NUM_THREADS", "OMP_NUM_THREADS")

MAX_THREADS_PER_CPU = 4
MIN_THREAD_CAP = 64

_num_threads = None  # resolved on first use
_source = None  # where _num_threads came from
_threaded = False  # a count over 1 was in use: OpenMP's thread pool may exist
_forked = False  # forked from a process where it may: one thread (module docstring)
_blas_controllers = None  # threadpoolctl controllers of the BLAS fastnn calls
_free = None  # a _FreeCPUs while the count is the default, else None

ADAPT_PERIOD = 0.5  # seconds between two looks at the CPUs other processes use
_DEFAULT_SOURCE = "usable CPUs"


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


def max_threads():
    """The largest thread count fastnn accepts: MAX_THREADS_PER_CPU per usable CPU, at
    least MIN_THREAD_CAP."""
    return max(MIN_THREAD_CAP, MAX_THREADS_PER_CPU * usable_cpus())


def _from_environment():
    """(count, source) from the environment; a malformed value, or one over
    max_threads(), warns and is ignored."""
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
        if 0 < n <= max_threads():
            return n, name
        expected = (
            "a positive integer" if n <= 0 else f"at most {max_threads()} (see set_num_threads)"
        )
        warnings.warn(
            f"fastnn: ignoring {name}={raw!r}: expected {expected}",
            RuntimeWarning,
            stacklevel=3,
        )
    return usable_cpus(), _DEFAULT_SOURCE


def _check_count(n):
    if isinstance(n, bool):
        raise ValueError(f"number of threads must be a positive int, got {n!r}")
    try:
        n = index(n)
    except TypeError:
        raise ValueError(f"number of threads must be a positive int, got {n!r}") from None
    if n <= 0:
        raise ValueError(f"number of threads must be a positive int, got {n}")
    if n > max_threads():
        raise ValueError(
            f"number of threads must be at most {max_threads()} ({MAX_THREADS_PER_CPU} per "
            f"usable CPU, at least {MIN_THREAD_CAP}), got {n}"
        )
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
    """Set the thread count of the BLAS fastnn calls (and the count its products hold
    fastnn's OpenBLAS at: see _kernels/backend.pxd)."""
    from ._kernels import backend

    backend.hold_openblas_threads(n)
    for controller in _controllers():
        controller.set_num_threads(n)


def blas_info():
    """[(name, version, threading layer, threads, file)] of the BLAS fastnn calls."""
    return [
        (c.internal_api, c.version, getattr(c, "threading_layer", "?"),
         c.get_num_threads(), c.filepath)
        for c in _controllers()
    ]


def _busy_seconds(cpus):
    """CPU seconds the CPUs `cpus` have run processes since boot (user, nice, system,
    irq, softirq time: not idle, iowait, nor what a hypervisor took), from Linux's
    /proc/stat; None elsewhere."""
    try:
        with open("/proc/stat", "rb") as f:
            lines = f.read().split(b"\n")
        ticks = 0
        for line in lines[1:]:
            if not line.startswith(b"cpu"):
                break
            name, *fields = line.split()
            if int(name[3:]) in cpus:
                ticks += sum(int(fields[i]) for i in (0, 1, 2, 5, 6))
        return ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, AttributeError):
        return None


class _FreeCPUs:
    """Threads for the CPUs of this process that other processes leave free: n (the
    usable CPUs) on an idle machine, fewer (at least 1) while others keep some busy,
    measured over the last ADAPT_PERIOD seconds."""

    def __init__(self, n):
        try:
            self.cpus = os.sched_getaffinity(0)
        except (AttributeError, OSError):
            self.cpus = set(range(os.cpu_count() or 1))
        self.n = self.count = n
        self.mark = None  # (monotonic time, busy seconds of self.cpus, own CPU seconds)

    def threads(self):
        now = time.monotonic()
        mark = self.mark
        if mark is not None and now - mark[0] < ADAPT_PERIOD:
            return self.count
        busy = _busy_seconds(self.cpus)
        if busy is None:  # no /proc/stat: never look again
            self.mark = (math.inf, 0.0, 0.0)
            return self.count
        times = os.times()
        own = times.user + times.system
        # A look after a long pause starts a new window rather than average over it.
        if mark is not None and now - mark[0] < 10 * ADAPT_PERIOD:
            others = (busy - mark[1] - (own - mark[2])) / (now - mark[0])
            free = len(self.cpus) - max(0.0, others)
            self.count = max(1, min(self.n, int(free + 0.5)))  # the nearest count
        self.mark = (now, busy, own)
        return self.count


def _apply(n, source, explicit=False):
    global _num_threads, _source, _threaded, _free
    from ._kernels import _openmp

    openmp = _openmp.openmp_version() != 0
    if _forked and openmp and n > 1:
        if explicit:
            warnings.warn(
                f"fastnn: this process was forked, so it runs one thread, not {n} (OpenMP's "
                "thread pool does not survive fork); start workers with 'spawn' or "
                "'forkserver' to run threads in them",
                RuntimeWarning,
                stacklevel=3,
            )
        n, source = 1, "forked process"
    _num_threads, _source = n, source
    _free = _FreeCPUs(n) if openmp and n > 1 and source == _DEFAULT_SOURCE else None
    _threaded = _threaded or n > 1
    set_blas_threads(1 if openmp else n)


def _after_fork_in_child():
    """Mark a child forked once there may be a thread pool: its count is resolved
    again, as 1, on first use. (A child of such a child inherits the mark.)"""
    global _num_threads, _forked
    if _threaded:
        _forked = True
        _num_threads = None


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def get_num_threads():
    """The number of threads fastnn's kernels (matrix products included) use."""
    if _num_threads is None:
        _apply(*_from_environment())
    return _num_threads


def kernel_threads():
    """The threads the next kernel runs on: get_num_threads(), or while that is the
    default, as many of them as other processes leave CPUs free (module docstring)."""
    if _num_threads is None:
        _apply(*_from_environment())
    return _num_threads if _free is None else _free.threads()


def num_threads_source():
    """Where the current count came from, for show_config()."""
    get_num_threads()
    return _source


def set_num_threads(n):
    """Use `n` threads in fastnn's kernels. `n` must be a positive int, at most
    max_threads() (see the module docstring). A forked process keeps one thread."""
    _apply(_check_count(n), "set_num_threads()", explicit=True)


@contextmanager
def threads(n):
    """Run a block with `n` threads, then restore the previous count.

    >>> with fastnn.threads(1):
    ...     y = fastnn.ops.relu(x)
    """
    n = _check_count(n)
    previous = (get_num_threads(), _source)
    _apply(n, "threads()", explicit=True)
    try:
        yield n
    finally:
        _apply(*previous)
