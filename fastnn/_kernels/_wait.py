"""How fastnn's OpenMP threads wait, set before the OpenMP runtime starts.

Between parallel loops, libgomp's threads spin on the CPU before they sleep:
GOMP_SPINCOUNT iterations, 300,000 by default (milliseconds). On a machine that other
jobs share, a waiting thread then burns the core that another process (or the thread
it waits for) needs, and two fastnn jobs on the same cores slow each other down many
times over. When the user chose no wait policy (neither OMP_WAIT_POLICY nor
GOMP_SPINCOUNT is set), fastnn bounds the spinning to SPIN_COUNT iterations: long
enough to bridge the gaps between the parallel loops of one training step, short
enough that a waiting thread gives its core away soon. The runtime reads the setting
once, when it is loaded, so it is set just for that moment and the environment is
restored: child processes see the user's own environment.
"""

import os

SPIN_COUNT = 10000
_USER_VARS = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")

_policy = None  # (setting, where it came from), for show_config()


def _runtime_maps():
    """Paths of the OpenMP runtimes mapped into this process (Linux), else None."""
    try:
        with open("/proc/self/maps") as f:
            return {line.split()[-1] for line in f if "libgomp" in line}
    except OSError:
        return None


def start_runtime(load):
    """Call `load()` (which loads the OpenMP runtime) under fastnn's wait policy."""
    global _policy
    chosen = [f"{name}={os.environ[name]}" for name in _USER_VARS if name in os.environ]
    if chosen:
        load()
        _policy = (", ".join(chosen), "environment")
        return
    before = _runtime_maps()
    os.environ["GOMP_SPINCOUNT"] = str(SPIN_COUNT)
    try:
        load()
    finally:
        del os.environ["GOMP_SPINCOUNT"]
    after = _runtime_maps()
    if before is not None and after is not None and not (after - before) and after:
        _policy = ("the runtime's default", "OpenMP started before fastnn was imported")
    else:
        _policy = (f"GOMP_SPINCOUNT={SPIN_COUNT}", "fastnn's default")


def policy():
    """(setting, source) of the wait policy the OpenMP runtime started with."""
    return _policy
