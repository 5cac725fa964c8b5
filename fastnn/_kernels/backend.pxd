# The BLAS fastnn's GEMMs call: a table of function pointers that fastnn._blas fills in
# (an OpenBLAS, or MKL loaded at run time beside one). Every gemm (blas.pxd) reads it.

from .simd cimport FN_GEMM_NARROW

ctypedef void (*sgemm_fn)(char *transa, char *transb, int *m, int *n, int *k,
                          float *alpha, float *a, int *lda, float *b, int *ldb,
                          float *beta, float *c, int *ldc) noexcept nogil
ctypedef void (*dgemm_fn)(char *transa, char *transb, int *m, int *n, int *k,
                          double *alpha, double *a, int *lda, double *b, int *ldb,
                          double *beta, double *c, int *ldc) noexcept nogil
ctypedef int (*set_threads_fn)(int n) noexcept nogil
ctypedef int (*get_count_fn)() noexcept nogil
ctypedef void (*set_count_fn)(int n) noexcept nogil

# Where the other BLAS (an OpenBLAS beside MKL) takes products by shape (by_shape, on
# CPUs other than Intel's), in row-major terms c[m, n] = op(a)[m, k] @ op(b)[k, n].
# Measured on an AMD EPYC (Zen 4), bench/bench_gemm.py: MKL is faster on products whose
# b is transposed (an input gradient dz @ W^T) on fewer than 512 rows, 1.03-1.7x
# (32 x 1024 @ (1024 x 1024)^T: 0.86 against 1.26-1.40 ms), and on products with a
# transposed operand over an inner dimension under 64 (a weight gradient x^T @ dz over
# a batch of 32, 1024 x 32 @ 32 x 1024: 1.03-1.16x at one thread, in 2-thread slabs
# 0.8-1.14x from run to run; dz @ W^T for 10 classes: 1.06-1.1x); OpenBLAS on the
# others, 1-7% (1024 x 256 @ 256 x 1024 with a transposed: 5.3 against 5.4 ms;
# 4096 x 256 @ 256 x 4096: 83 against 96 ms; 1024 x 1024 @ (1024 x 1024)^T: 21.2 against
# 21.9 ms), and on products of under 2**20 multiply-adds whose b is not transposed (its
# small-matrix kernels, up to 1.2x). Input gradients whose b (a weight) has
# FN_OTHER_NT_MAX_B elements or more go to OpenBLAS at any row count: 256 x 4096 @
# (4096 x 4096)^T took 90-112 ms in MKL, 90-98 in OpenBLAS, and whole training steps of
# 784-4096-4096-10 2-11% longer with it on MKL.
# Products with neither operand transposed (a layer's forward product) go to OpenBLAS
# from version 0.3.31 on (nn_other): 1.01-1.06x MKL there; to an older one (0.3.30:
# 0.90-0.98x MKL on 32-256 rows) only with every dimension at least 256 (the two alike
# there alone, MKL up to 10% slower inside a training step: 1024 x 1024 @ 1024 x 1024).
cdef enum:
    FN_OTHER_NT_MIN_ROWS = 512
    FN_OTHER_MIN_INNER = 64
    FN_OTHER_SMALL = 1 << 20
    FN_OTHER_NN_MIN_DIM = 256
    FN_OTHER_NT_MAX_B = 1 << 24

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
    # The other BLAS (an OpenBLAS, beside MKL), or NULL: it runs one thread per call.
    # Products of fewer than FN_GEMM_NARROW output columns go to it (faster there than
    # MKL), and where by_shape is set, those that to_other names.
    sgemm_fn sgemm_other
    dgemm_fn dgemm_other
    bint by_shape
    bint nn_other
    # The OpenBLAS in use (the BLAS, or the other one): its process-wide thread count,
    # which anyone may change (threadpoolctl's limits, for NumPy's sake, reach it too).
    # Each product first puts it back to openblas_threads if it differs: 1 where fastnn's
    # slabs are its threads (its own would be a second pool, inside fastnn's). NULL: not
    # checked.
    get_count_fn openblas_get_threads
    set_count_fn openblas_set_threads
    int openblas_threads

cdef BlasFns *blas_fns() noexcept nogil


cdef inline bint to_other(const BlasFns *fns, Py_ssize_t m, Py_ssize_t n, Py_ssize_t k,
                          bint trans_a, bint trans_b) noexcept nogil:
    """Whether an op(a) (m x k) @ op(b) (k x n) product goes to the other BLAS (see
    BlasFns and FN_OTHER_*)."""
    if fns.sgemm_other == NULL:
        return False
    if n < FN_GEMM_NARROW:
        return True
    if not fns.by_shape:
        return False
    if trans_b:
        return k >= FN_OTHER_MIN_INNER and (m >= FN_OTHER_NT_MIN_ROWS
                                            or <double> n * k >= FN_OTHER_NT_MAX_B)
    if <double> m * n * k < FN_OTHER_SMALL:
        return True
    if trans_a:
        return k >= FN_OTHER_MIN_INNER
    return fns.nn_other or (m >= FN_OTHER_NN_MIN_DIM and n >= FN_OTHER_NN_MIN_DIM
                            and k >= FN_OTHER_NN_MIN_DIM)
