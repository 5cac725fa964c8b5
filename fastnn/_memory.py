"""Large arrays on whole huge pages.

The parameters, gradients and optimizer state of a model are large arrays, and the
matrix products read the weights a row at a time: a 1024 x 1024 float32 weight has one
4 KiB page per row, and packing it for the BLAS walks through more pages than the TLB
holds. NumPy asks Linux for transparent huge pages for its allocations of 4 MiB or
more, but an allocation starts anywhere on a 4 KiB page, and only the 2 MiB-aligned
stretches inside it can get them. These arrays instead start on a 2 MiB boundary of an
anonymous mapping, and ask for huge pages for their whole 2 MiB stretches alone (the
rest of the last one stays on 4 KiB pages: no memory is spent on pages half used).
On an AMD EPYC, 784-1024-1024-10 training steps took 0.93-0.94x the time at batch 32
and 0.94-0.97x at batch 64, 1 thread (bench/README.md).

Where huge pages are not to be had (THP off, another OS), the array is an ordinary one.
"""

import mmap

import numpy as np

__all__ = ["ALIGN_FROM", "HUGE_PAGE", "empty", "zeros"]

HUGE_PAGE = 2 << 20
# Arrays of this many bytes or more are placed on huge pages.
ALIGN_FROM = HUGE_PAGE


def _huge(nbytes):
    """A zero-filled uint8 array of nbytes whose first byte starts a huge page, on a
    mapping that asks for huge pages over its whole 2 MiB stretches; None where the
    mapping or the request fails."""
    if not hasattr(mmap, "MADV_HUGEPAGE"):
        return None
    try:
        region = mmap.mmap(-1, nbytes + HUGE_PAGE, flags=mmap.MAP_PRIVATE)
        start = -np.frombuffer(region, np.uint8, count=1).ctypes.data % HUGE_PAGE
        region.madvise(mmap.MADV_HUGEPAGE, start, nbytes // HUGE_PAGE * HUGE_PAGE)
    except (OSError, ValueError):
        return None
    return np.frombuffer(region, np.uint8, count=nbytes, offset=start)


def empty(size, dtype):
    """np.empty(size, dtype), 1-D; from ALIGN_FROM bytes on, on whole huge pages where
    the system gives them (then zero-filled)."""
    dtype = np.dtype(dtype)
    nbytes = int(size) * dtype.itemsize
    if nbytes >= ALIGN_FROM:
        placed = _huge(nbytes)
        if placed is not None:
            return placed.view(dtype)
    return np.empty(size, dtype)


def zeros(size, dtype):
    """As empty, filled with zeros."""
    array = empty(size, dtype)
    if array.base is None:  # the mapping's pages come zero-filled
        array.fill(0)
    return array
