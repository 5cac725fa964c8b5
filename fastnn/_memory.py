"""Large arrays that start on a 2 MiB boundary, so that huge pages back them whole.

On Linux NumPy asks the kernel for transparent huge pages (madvise MADV_HUGEPAGE) for
every allocation of 4 MiB or more, but an allocation starts anywhere on a 4 KiB page,
and only the 2 MiB-aligned stretches inside it can get huge pages: up to 2 MiB at each
end stays on 4 KiB pages. The parameters, gradients and optimizer state of a model are
such arrays, and the matrix products read the weights a row at a time: a 1024 x 1024
float32 weight has one 4 KiB page per row, and packing it for the BLAS walks through
more pages than the TLB holds. Started on a 2 MiB boundary, the same arrays sit on
whole huge pages (AMD EPYC, 784-1024-1024-10 training steps: 0.93x the time at batch
32, 0.97x at batch 64, 1 thread; bench/README.md).

Where the kernel gives no huge pages (THP off, another OS), the aligned array costs
only untouched address space: the bytes before the boundary are never written.
"""

import numpy as np

__all__ = ["ALIGN_FROM", "HUGE_PAGE", "empty", "zeros"]

HUGE_PAGE = 2 << 20
# From this many bytes on, an array starts on a HUGE_PAGE boundary (NumPy asks for huge
# pages from 4 MiB on; a smaller array would leave most of its last huge page unused).
ALIGN_FROM = 4 << 20


def empty(size, dtype):
    """np.empty(size, dtype), 1-D; from ALIGN_FROM bytes on, a view that starts on a
    HUGE_PAGE boundary of a buffer HUGE_PAGE bytes longer."""
    dtype = np.dtype(dtype)
    nbytes = int(size) * dtype.itemsize
    if nbytes < ALIGN_FROM:
        return np.empty(size, dtype)
    buffer = np.empty(nbytes + HUGE_PAGE, np.uint8)
    start = -buffer.ctypes.data % HUGE_PAGE
    return buffer[start:start + nbytes].view(dtype)


def zeros(size, dtype):
    """As empty, filled with zeros."""
    array = empty(size, dtype)
    array.fill(0)
    return array
