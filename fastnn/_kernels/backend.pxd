# The BLAS fastnn's GEMMs call: a table of function pointers that fastnn._blas fills in
# (scipy's OpenBLAS, or MKL loaded at run time). Every gemm (blas.pxd) reads it.

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
    # NULL: the BLAS runs one thread and fastnn cuts products into slabs for its own
    # threads. Otherwise the BLAS's threads are OpenMP's (the one pool fastnn runs) and
    # its results do not depend on their number: set_threads_local(n) sets the calling
    # thread's count for its next calls and returns the previous one.
    set_threads_fn set_threads_local
    # Products of fewer than FN_GEMM_NARROW output columns go to these instead (scipy's
    # BLAS: faster there than MKL), or to sgemm/dgemm when they are NULL.
    sgemm_fn sgemm_narrow
    dgemm_fn dgemm_narrow

cdef BlasFns *blas_fns() noexcept nogil
