"""Inverted dropout with counter-based masks.

Element i of a call is dropped when hash(key, first + i) < threshold (simd.h's
fn_hash32), so a mask is a pure function of (key, element index): the same for any
thread count, and recomputed in the backward pass instead of stored.
"""

from cython cimport floating
from cython.parallel cimport prange

from .simd cimport FN_PARALLEL_MIN, fn_dropout_d, fn_dropout_f

cdef Py_ssize_t CHUNK = 8192


def dropout(const floating[::1] x, floating[::1] y, unsigned long long key,
            unsigned int threshold, double scale, int n_threads):
    """y[i] = 0 if hash(key, i) < threshold else x[i] * scale; y may be x."""
    cdef Py_ssize_t n = x.shape[0], c, start
    cdef Py_ssize_t n_chunks = (n + CHUNK - 1) // CHUNK
    cdef unsigned int key_lo = <unsigned int> (key & 0xffffffffu)
    cdef unsigned int key_hi = <unsigned int> (key >> 32)
    cdef floating s = <floating> scale
    for c in prange(n_chunks, nogil=True, schedule='static', num_threads=n_threads,
                    use_threads_if=n_threads > 1 and n >= FN_PARALLEL_MIN):
        start = c * CHUNK
        if floating is float:
            fn_dropout_f(&x[start], &y[start], min(CHUNK, n - start), start, key_lo, key_hi,
                         threshold, s)
        else:
            fn_dropout_d(&x[start], &y[start], min(CHUNK, n - start), start, key_lo, key_hi,
                         threshold, s)
