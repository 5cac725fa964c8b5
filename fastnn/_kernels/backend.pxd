# The BLAS fastnn's GEMMs call: a table of function pointers that fastnn._blas fills in
# (scipy's OpenBLAS, or MKL loaded at run time). Every gemm (blas.pxd) reads it.

from .simd cimport FN_GEMM_NARROW

ctypedef void (*sgemm_fn)(char *transa, char *transb, int *m, int *n, int *k,
                          float *alpha, float *a, int *lda, float *b, int *ldb,
                          float *beta, float *c, int *ldc) noexcept nogil
ctypedef void (*dgemm_fn)(char *transa, char *transb, int *m, int *n, int *k,
                          double *alpha, double *a, int *lda, double *b, int *ldb,
                          double *beta, double *c, int *ldc) noexcept nogil
ctypedef int (*set_threads_fn)(int n) noexcept nogil

cdef struct BlasFns:
    sgemm_fn sgemm
    dgemm_fn dgemm
    # NULL: the BLAS runs one thread per call. Otherwise its threads are OpenMP's (the
    # one pool fastnn runs): set_threads_local(n) sets the calling thread's count for
    # its next calls and returns the previous one, and every call sets its own.
    set_threads_fn set_threads_local
    # True: the BLAS's results do not depend on its thread count, and it gets whole
    # products and fastnn's thread count (set_threads_local is not NULL). False: fastnn
    # cuts products into slabs for its own threads, one BLAS thread each.
    bint whole_products
    # The other BLAS (scipy's, beside MKL), or NULL. Products of fewer than
    # FN_GEMM_NARROW output columns go to it (faster there than MKL), and so do, where
    # these are not 0 (see fastnn._blas: CPUs on which OpenBLAS is the faster of the two
    # there), those whose three dimensions are all at least other_min_dim, and those of
    # fewer than other_below multiply-adds whose b is not transposed.
    sgemm_fn sgemm_other
    dgemm_fn dgemm_other
    int other_min_dim
    double other_below

cdef BlasFns *blas_fns() noexcept nogil


cdef inline bint to_other(const BlasFns *fns, Py_ssize_t m, Py_ssize_t n, Py_ssize_t k,
                          bint trans_b) noexcept nogil:
    """Whether an m x k @ op(b) (k x n) product goes to the other BLAS (see BlasFns)."""
    if fns.sgemm_other == NULL:
        return False
    if n < FN_GEMM_NARROW:
        return True
    if fns.other_min_dim > 0 and (m >= fns.other_min_dim and n >= fns.other_min_dim
                                  and k >= fns.other_min_dim):
        return True
    return not trans_b and <double> m * n * k < fns.other_below
