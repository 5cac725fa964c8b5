"""Bounded waits between MPI ranks and the reporting of a rank's failure to the others.

A leaf module: it imports nothing of fastnn, and mpi4py only when `load_mpi()` is called,
so that fastnn.distributed and the collective layers (nn.SyncBatchNorm) can share it
without importing each other.

Every wait for the other ranks (`wait`, `barrier`) lasts at most `timeout` seconds
(FASTNN_MPI_TIMEOUT, default 600; TimeoutError past it) and raises PeerFailed as soon
as another rank reports its failure; `report_and_abort` is that report: it prints this
rank's error, sends it to every other rank and ends the job with comm.Abort.
"""

import os
import sys
import time
import traceback

__all__ = ["DEFAULT_TIMEOUT", "PeerFailed", "allreduce_sum", "barrier", "load_mpi",
           "report_and_abort", "timeout_seconds", "wait"]

DEFAULT_TIMEOUT = 600.0

# The tag of a failing rank's last message to the others, and how long it gives them
# to report it before it aborts the job.
_FAIL_TAG = 32099
_NOTICE_SECONDS = 1.0
_REPORT_SECONDS = 0.5


class PeerFailed(RuntimeError):
    """Another rank failed and told this one (raised inside a bounded wait)."""


def load_mpi():
    """mpi4py's MPI module (importing it initializes MPI)."""
    try:
        from mpi4py import MPI
    except ImportError as exc:
        raise ImportError("fastnn's data-parallel training needs mpi4py and an MPI library: "
                          "pip install 'fastnn[mpi]' (mpi4py and mpich)") from exc
    return MPI


def timeout_seconds(timeout=None):
    """timeout as float seconds > 0; None: FASTNN_MPI_TIMEOUT, or DEFAULT_TIMEOUT."""
    if timeout is None:
        raw = os.environ.get("FASTNN_MPI_TIMEOUT", "").strip()
        timeout = float(raw) if raw else DEFAULT_TIMEOUT
    timeout = float(timeout)
    if not timeout > 0:
        raise ValueError(f"timeout: expected seconds > 0, got {timeout}")
    return timeout


def wait(request, comm=None, timeout=None):
    """Complete a non-blocking MPI request on `comm`, waiting at most `timeout` seconds
    (TimeoutError past it: a rank is stuck or has died). Raises PeerFailed as soon as
    another rank reports its failure."""
    timeout = timeout_seconds(timeout)
    deadline = time.monotonic() + timeout
    polls = 0
    while not request.Test():
        polls += 1
        if polls & 255 == 0:
            if comm is not None and comm.Iprobe(tag=_FAIL_TAG):
                raise PeerFailed(comm.recv(tag=_FAIL_TAG))
            if time.monotonic() > deadline:
                raise TimeoutError(f"no answer from the other ranks in {timeout:g} s: a rank "
                                   f"is stuck or has died")


def barrier(comm, timeout=None):
    """comm.Barrier, bounded as `wait` is."""
    wait(comm.Ibarrier(), comm, timeout)


def allreduce_sum(comm, values, timeout=None):
    """Sum the array `values` over the ranks of comm, in place (bounded as `wait` is);
    returns it."""
    mpi = load_mpi()
    wait(comm.Iallreduce(mpi.IN_PLACE, values, op=mpi.SUM), comm, timeout)
    return values


def report_and_abort(comm, exc, code=1):
    """Print this rank's error, tell the other ranks (those waiting in `wait` report it
    too), then end every process of the job with comm.Abort."""
    rank, size = comm.Get_rank(), comm.Get_size()
    if not isinstance(exc, PeerFailed):
        text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
        sys.stderr.write(text)
    sys.stderr.write(f"fastnn: rank {rank} of {size} stops: {type(exc).__name__}: {exc}; "
                     f"aborting all {size} ranks\n")
    sys.stderr.flush()
    sys.stdout.flush()
    if not isinstance(exc, PeerFailed):
        notice = f"rank {rank} failed: {type(exc).__name__}: {exc}"
        requests = [comm.issend(notice, dest=r, tag=_FAIL_TAG) for r in range(size) if r != rank]
        deadline = time.monotonic() + _NOTICE_SECONDS
        while requests and time.monotonic() < deadline:
            requests = [r for r in requests if not r.test()[0]]
            time.sleep(0.01)
    # Before the abort: those told print the error, and the launcher forwards what every
    # rank has written (an abort may cut off output still on its way).
    time.sleep(_REPORT_SECONDS)
    comm.Abort(code)
    os._exit(code)  # Abort does not return; should it, never run on
