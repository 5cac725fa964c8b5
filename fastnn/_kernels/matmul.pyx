"""Matrix products through BLAS: 2-D, and batched 3-D.

Shapes and dtypes are checked by fastnn.ops.matmul; here they are trusted.
"""

from cython cimport floating
from cython.parallel cimport prange

from .blas cimport gemm


def matmul(const floating[:, ::1] a, const floating[:, ::1] b, floating[:, ::1] c,
           bint trans_a, bint trans_b, bint accumulate=False):
    """c = op(a) @ op(b) (c += ... if accumulate), op(x) = x.T if its flag is set; one
    BLAS call, on BLAS's threads."""
    cdef int m = c.shape[0], n = c.shape[1]
    cdef int k = a.shape[0] if trans_a else a.shape[1]
    with nogil:
        gemm(trans_a, trans_b, m, n, k, 1, &a[0, 0], a.shape[1], &b[0, 0], b.shape[1],
             1 if accumulate else 0, &c[0, 0], n)


def matmul_batched(const floating[:, :, ::1] a, const floating[:, :, ::1] b,
                   floating[:, :, ::1] c, bint trans_a, bint trans_b, int n_threads):
    """c[i] = op(a[i]) @ op(b[i]); an operand with a batch of 1 is shared by every item.

    n_threads > 1 runs the items in parallel, one BLAS call per item: the caller must
    hold BLAS to one thread meanwhile. n_threads == 1 runs them in turn, leaving BLAS
    its own threads.
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
    for i in prange(batch, nogil=True, schedule='static', num_threads=n_threads,
                    use_threads_if=n_threads > 1):
        gemm(trans_a, trans_b, m, n, k, 1, pa + i * a_step, lda, pb + i * b_step, ldb,
             0, pc + i * c_step, n)
