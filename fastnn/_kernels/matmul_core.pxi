# The 2-D matrix product behind matmul.pyx, shared with network.pyx (included, not
# imported). Needs: floating, prange, gemm_threads (blas.pxd), BlasFns and blas_fns
# and to_other (backend.pxd), FN_GEMM_PARALLEL_MIN, FN_GEMM_MAX_DIM.

cdef void _gemm_split(bint trans_a, bint trans_b, Py_ssize_t m, Py_ssize_t n, Py_ssize_t k,
                      const floating *pa, Py_ssize_t lda, const floating *pb,
                      Py_ssize_t ldb, floating beta, floating *pc,
                      Py_ssize_t ldc, int threads=1) noexcept nogil:
    """c[m, n] = op(a) @ op(b) + beta * c, row-major, in BLAS calls of at most
    FN_GEMM_MAX_DIM rows and inner dimension (BLAS takes int dimensions), each on
    `threads` threads where the BLAS runs its own (gemm_threads).

    n and the row lengths lda, ldb, ldc must fit in an int: the callers check them.
    """
    cdef Py_ssize_t i = 0, p, rows, depth
    cdef floating b
    while True:
        rows = min(m - i, FN_GEMM_MAX_DIM)
        p = 0
        b = beta
        while True:  # the inner dimension by parts, each added to the last
            depth = min(k - p, FN_GEMM_MAX_DIM)
            gemm_threads(threads, trans_a, trans_b, <int> rows, <int> n, <int> depth, 1,
                 pa + (p * lda + i if trans_a else i * lda + p), <int> lda,
                 pb + (p if trans_b else p * ldb), <int> ldb, b, pc + i * ldc, <int> ldc)
            b = 1
            p += depth
            if p >= k:
                break
        i += rows
        if i >= m:
            break


cdef void _matmul(bint trans_a, bint trans_b, Py_ssize_t m, Py_ssize_t n, Py_ssize_t k,
                  const floating *pa, Py_ssize_t lda, const floating *pb, Py_ssize_t ldb,
                  floating beta, floating *pc, int n_threads) noexcept nogil:
    """c[m, n] = op(a) @ op(b) + beta * c, row-major, c's rows n long.

    Products under FN_GEMM_PARALLEL_MIN multiply-adds run on the calling thread. Larger
    ones run on n_threads threads: a BLAS whose threads are OpenMP's own and whose
    results do not depend on their number (MKL on Intel CPUs, see backend.pxd) gets the
    whole product and the thread count, unless the backend sends it to its other BLAS
    (to_other); otherwise the output is cut into up to n_threads slabs along its longer
    side, and each thread makes one single-threaded BLAS call for its slab (see
    _threads.py).
    Offsets are Py_ssize_t: an operand may hold more than 2**31 elements. n, lda and ldb
    must fit in an int (the callers check); m and k may not (_gemm_split).
    """
    cdef bint by_rows = m >= n
    cdef Py_ssize_t length = m if by_rows else n
    cdef int parts = <int> min(<Py_ssize_t> n_threads, max(<Py_ssize_t> 1, length // 16))
    cdef int t
    cdef Py_ssize_t lo, size
    cdef BlasFns *fns = blas_fns()
    if <double> m * n * k < FN_GEMM_PARALLEL_MIN:
        parts = 1
    if parts <= 1:
        _gemm_split(trans_a, trans_b, m, n, k, pa, lda, pb, ldb, beta, pc, n)
        return
    if fns.whole_products and not to_other(fns, m, n, k, trans_a, trans_b):
        _gemm_split(trans_a, trans_b, m, n, k, pa, lda, pb, ldb, beta, pc, n, n_threads)
        return
    for t in prange(parts, schedule='static', num_threads=parts):
        # slab boundaries on multiples of 16 rows/columns keep BLAS's kernels aligned
        lo = ((length * t) // parts) // 16 * 16
        size = (((length * (t + 1)) // parts) // 16 * 16 if t < parts - 1 else length) - lo
        if by_rows:
            _gemm_split(trans_a, trans_b, size, n, k, pa + (lo if trans_a else lo * lda),
                        lda, pb, ldb, beta, pc + lo * n, n)
        else:
            _gemm_split(trans_a, trans_b, m, size, k, pa, lda,
                        pb + (lo * ldb if trans_b else lo), ldb, beta, pc + lo, n)
