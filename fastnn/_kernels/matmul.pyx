"""Matrix products through BLAS: 2-D, and batched 3-D.

Shapes and dtypes are checked by fastnn.ops.matmul; here they are trusted.
"""

from cython cimport floating
from cython.parallel cimport prange

from .blas cimport gemm
from .simd cimport FN_GEMM_PARALLEL_MIN


def matmul(const floating[:, ::1] a, const floating[:, ::1] b, floating[:, ::1] c,
           bint trans_a, bint trans_b, bint accumulate=False, int n_threads=1):
    """c = op(a) @ op(b) (c += ... if accumulate), op(x) = x.T if its flag is set.

    The output is cut into up to n_threads slabs along its longer side, and each thread
    makes one BLAS call for its slab (BLAS itself must run one thread: see _threads.py).
    """
    cdef int m = c.shape[0], n = c.shape[1]
    cdef int k = a.shape[0] if trans_a else a.shape[1]
    cdef int lda = a.shape[1], ldb = b.shape[1]
    cdef floating beta = 1 if accumulate else 0
    cdef const floating *pa = &a[0, 0]
    cdef const floating *pb = &b[0, 0]
    cdef floating *pc = &c[0, 0]
    cdef bint by_rows = m >= n
    cdef int length = m if by_rows else n
    cdef int parts = min(n_threads, max(1, length // 16))
    if <double> m * n * k < FN_GEMM_PARALLEL_MIN:
        parts = 1
    cdef int t, lo, size
    if parts <= 1:
        with nogil:
            gemm(trans_a, trans_b, m, n, k, 1, pa, lda, pb, ldb, beta, pc, n)
        return
    for t in prange(parts, nogil=True, schedule='static', num_threads=parts):
        # slab boundaries on multiples of 16 rows/columns keep BLAS's kernels aligned
        lo = ((length * t) // parts) // 16 * 16
        size = (((length * (t + 1)) // parts) // 16 * 16 if t < parts - 1 else length) - lo
        if by_rows:
            gemm(trans_a, trans_b, size, n, k, 1, pa + (lo if trans_a else lo * lda), lda,
                 pb, ldb, beta, pc + lo * n, n)
        else:
            gemm(trans_a, trans_b, m, size, k, 1, pa, lda,
                 pb + (lo * ldb if trans_b else lo), ldb, beta, pc + lo, n)


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
