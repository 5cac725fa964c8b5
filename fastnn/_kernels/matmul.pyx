"""Matrix products through BLAS: 2-D, and batched 3-D.

Shapes and dtypes are checked by fastnn.ops.matmul; here they are trusted.
"""

from cython cimport floating
from cython.parallel cimport prange
# one-thread parallel regions skip the OpenMP runtime (see the header)
cdef extern from "omp_serial.h":
    pass

from .backend cimport BlasFns, blas_fns, to_other
from .blas cimport gemm, gemm_threads
from .simd cimport FN_GEMM_MAX_DIM, FN_GEMM_PARALLEL_MIN


include "matmul_core.pxi"


def matmul(const floating[:, ::1] a, const floating[:, ::1] b, floating[:, ::1] c,
           bint trans_a, bint trans_b, bint accumulate=False, int n_threads=1):
    """c = op(a) @ op(b) (c += ... if accumulate), op(x) = x.T if its flag is set."""
    cdef Py_ssize_t k = a.shape[0] if trans_a else a.shape[1]
    with nogil:
        _matmul(trans_a, trans_b, c.shape[0], c.shape[1], k, &a[0, 0], a.shape[1], &b[0, 0],
                b.shape[1], 1 if accumulate else 0, &c[0, 0], n_threads)


def matmul_batched(const floating[:, :, ::1] a, const floating[:, :, ::1] b,
                   floating[:, :, ::1] c, bint trans_a, bint trans_b, int n_threads):
    """c[i] = op(a[i]) @ op(b[i]); an operand with a batch of 1 is shared by every item.

    The items are shared out among n_threads threads, one BLAS call per item (BLAS
    itself must run one thread: see _threads.py).
    """
    cdef Py_ssize_t batch = c.shape[0], i
    cdef int m = c.shape[1], n = c.shape[2]
    cdef int k = a.shape[1] if trans_a else a.shape[2]
    cdef int lda = a.shape[2], ldb = b.shape[2]
    cdef Py_ssize_t a_step = 0 if a.shape[0] == 1 else a.shape[1] * a.shape[2]
    cdef Py_ssize_t b_step = 0 if b.shape[0] == 1 else b.shape[1] * b.shape[2]
    cdef Py_ssize_t c_step = <Py_ssize_t> m * n
    cdef const floating *pa = &a[0, 0, 0]
    cdef const floating *pb = &b[0, 0, 0]
    cdef floating *pc = &c[0, 0, 0]
    cdef bint threaded = n_threads > 1 and <double> batch * m * n * k >= FN_GEMM_PARALLEL_MIN
    for i in prange(batch, nogil=True, schedule='static', num_threads=n_threads,
                    use_threads_if=threaded):
        gemm(trans_a, trans_b, m, n, k, 1, pa + i * a_step, lda, pb + i * b_step, ldb,
             0, pc + i * c_step, n)
