# The 2-D matrix product behind matmul.pyx, shared with network.pyx (included, not
# imported). Needs: floating, prange, gemm (blas.pxd), FN_GEMM_PARALLEL_MIN.

cdef void _matmul(bint trans_a, bint trans_b, int m, int n, int k, const floating *pa,
                  int lda, const floating *pb, int ldb, floating beta, floating *pc,
                  int n_threads) noexcept nogil:
    """c[m, n] = op(a) @ op(b) + beta * c, row-major, c's rows n long.

    The output is cut into up to n_threads slabs along its longer side, and each thread
    makes one BLAS call for its slab (BLAS itself must run one thread: see _threads.py).
    Products under FN_GEMM_PARALLEL_MIN multiply-adds stay on the calling thread.
    """
    cdef bint by_rows = m >= n
    cdef int length = m if by_rows else n
    cdef int parts = min(n_threads, max(1, length // 16))
    cdef int t, lo, size
    if <double> m * n * k < FN_GEMM_PARALLEL_MIN:
        parts = 1
    if parts <= 1:
        gemm(trans_a, trans_b, m, n, k, 1, pa, lda, pb, ldb, beta, pc, n)
        return
    for t in prange(parts, schedule='static', num_threads=parts):
        # slab boundaries on multiples of 16 rows/columns keep BLAS's kernels aligned
        lo = ((length * t) // parts) // 16 * 16
        size = (((length * (t + 1)) // parts) // 16 * 16 if t < parts - 1 else length) - lo
        if by_rows:
            gemm(trans_a, trans_b, size, n, k, 1, pa + (lo if trans_a else lo * lda), lda,
                 pb, ldb, beta, pc + lo * n, n)
        else:
            gemm(trans_a, trans_b, m, size, k, 1, pa, lda,
                 pb + (lo * ldb if trans_b else lo), ldb, beta, pc + lo, n)
