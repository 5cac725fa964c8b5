"""Inverted dropout with counter-based masks.

Element i of a call is dropped when hash(key, first + i) < threshold (simd.h's
fn_hash32), so a mask is a pure function of (key, element index): the same for any
thread count, and recomputed in the backward pass instead of stored.
"""

from cython cimport floating
from cython.parallel cimport prange
# one-thread parallel regions skip the OpenMP runtime (see the header)
cdef extern from "omp_serial.h":
    pass

from .simd cimport (
    FN_CHUNK,
    FN_PARALLEL_MIN,
    fn_dropout_d,
    fn_dropout_f,
    fn_dropout_gate_d,
    fn_dropout_gate_f,
)

include "dropout_core.pxi"


def dropout(const floating[::1] x, floating[::1] y, unsigned long long key,
            unsigned int threshold, double scale, int n_threads):
    """y[i] = 0 if hash(key, i) < threshold else x[i] * scale; y may be x."""
    with nogil:
        _dropout(&x[0], &y[0], x.shape[0], key, threshold, <floating> scale, n_threads)
