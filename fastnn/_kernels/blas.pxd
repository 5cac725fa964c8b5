# Row-major GEMM over the BLAS fastnn uses (backend.pxd: an OpenBLAS, or MKL), for float
# and double.
#
# BLAS is column-major. A row-major array is the column-major storage of its
# transpose, so C = op(A) @ op(B) in row-major is C^T = op(B)^T @ op(A)^T in
# column-major: swap the operands (and m with n), keep the transpose flags.

from cython cimport floating

from .backend cimport BlasFns, blas_fns, to_other


cdef inline void gemm_threads(int threads, bint trans_a, bint trans_b, int m, int n, int k,
                              floating alpha, const floating *a, int lda, const floating *b,
                              int ldb, floating beta, floating *c, int ldc) noexcept nogil:
    """c[m, n] = alpha * op(a) @ op(b) + beta * c, all row-major, on `threads` threads
    of a BLAS that runs its own (backend.pxd; a slab's call passes 1), else on the
    calling thread.

    lda, ldb, ldc are the row lengths of the arrays as stored. The count is set for the
    call alone: whatever another library set as the BLAS's count (threadpoolctl, say)
    does not apply to fastnn's products; nor does the count of the OpenBLAS in use
    (backend.pxd: openblas_threads, held). A product the backend sends to its other BLAS
    (to_other: fewer than FN_GEMM_NARROW columns; on some CPUs more, by shape)
    runs there, on the calling thread.
    """
    cdef char ta = b'T' if trans_a else b'N'
    cdef char tb = b'T' if trans_b else b'N'
    cdef BlasFns *fns = blas_fns()
    cdef bint other = to_other(fns, m, n, k, trans_a, trans_b)
    cdef bint threaded = not other and fns.set_threads_local != NULL
    cdef int previous = 0
    if (fns.openblas_get_threads != NULL
            and fns.openblas_get_threads() != fns.openblas_threads):
        fns.openblas_set_threads(fns.openblas_threads)
    if threaded:
        previous = fns.set_threads_local(threads)
    if floating is float:
        (fns.sgemm_other if other else fns.sgemm)(
            &tb, &ta, &n, &m, &k, &alpha, <float *> b, &ldb, <float *> a, &lda, &beta, c, &ldc)
    else:
        (fns.dgemm_other if other else fns.dgemm)(
            &tb, &ta, &n, &m, &k, &alpha, <double *> b, &ldb, <double *> a, &lda, &beta, c,
            &ldc)
    if threaded:
        fns.set_threads_local(previous)


cdef inline void gemm(bint trans_a, bint trans_b, int m, int n, int k, floating alpha,
                      const floating *a, int lda, const floating *b, int ldb,
                      floating beta, floating *c, int ldc) noexcept nogil:
    """gemm_threads on the calling thread alone."""
    gemm_threads(1, trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc)
