"""Batch-normalization kernels: batch statistics in one parallel pass, the per-column
affine map, and the closed-form input gradient.

Statistics are computed over fixed blocks of FN_REDUCE_ROWS whole rows (mean and
squared deviations of each block, in cache), then merged block by block in a fixed order
with Chan's formula, in double precision: accurate for large means, and bitwise the
same for any thread count. Arguments are checked by fastnn.ops; here they are trusted.
"""

from cython cimport floating
from cython.parallel cimport prange
from libc.stdlib cimport free, malloc

from .simd cimport (
    FN_PARALLEL_MIN,
    FN_REDUCE_ROWS,
    fn_bn_dx_d,
    fn_bn_dx_f,
    fn_scale_shift_d,
    fn_scale_shift_f,
    fn_tile_mean_m2_d,
    fn_tile_mean_m2_f,
)

# Elements per task of the row-parallel passes.
cdef Py_ssize_t CHUNK = 8192


def batch_stats(const floating[:, ::1] x, floating[::1] mean, floating[::1] var,
                int n_threads):
    """mean[j] and the biased variance var[j] of column j of x (rows >= 1)."""
    cdef Py_ssize_t rows = x.shape[0], d = x.shape[1]
    cdef Py_ssize_t n_rb = (rows + FN_REDUCE_ROWS - 1) // FN_REDUCE_ROWS
    cdef Py_ssize_t rb, r0, j
    cdef double n_a, n_b, n_ab, mean_a, m2_a, delta
    cdef bint threaded = n_threads > 1 and rows * d >= FN_PARALLEL_MIN
    cdef floating *tile_mean = <floating *> malloc(2 * n_rb * d * sizeof(floating))
    cdef floating *tile_m2 = tile_mean + n_rb * d
    if tile_mean == NULL:
        raise MemoryError("batch_stats: cannot allocate its workspace")
    with nogil:
        for rb in prange(n_rb, schedule='static', num_threads=n_threads,
                         use_threads_if=threaded):
            r0 = rb * FN_REDUCE_ROWS
            if floating is float:
                fn_tile_mean_m2_f(&x[r0, 0], d, min(FN_REDUCE_ROWS, rows - r0), d,
                                  tile_mean + rb * d, tile_m2 + rb * d)
            else:
                fn_tile_mean_m2_d(&x[r0, 0], d, min(FN_REDUCE_ROWS, rows - r0), d,
                                  tile_mean + rb * d, tile_m2 + rb * d)
        for j in prange(d, schedule='static', num_threads=n_threads,
                        use_threads_if=threaded and d >= 64):
            n_a = min(FN_REDUCE_ROWS, rows)
            mean_a = tile_mean[j]
            m2_a = tile_m2[j]
            for rb in range(1, n_rb):
                n_b = min(FN_REDUCE_ROWS, rows - rb * FN_REDUCE_ROWS)
                n_ab = n_a + n_b
                delta = tile_mean[rb * d + j] - mean_a
                mean_a = mean_a + delta * n_b / n_ab
                m2_a = m2_a + tile_m2[rb * d + j] + delta * delta * n_a * n_b / n_ab
                n_a = n_ab
            mean[j] = <floating> mean_a
            var[j] = <floating> (m2_a / rows)
    free(tile_mean)


def scale_shift(const floating[:, ::1] x, const floating[::1] scale,
                const floating[::1] shift, floating[:, ::1] y, int n_threads):
    """y[r, j] = x[r, j] * scale[j] + shift[j]; y may be x."""
    cdef Py_ssize_t rows = x.shape[0], d = x.shape[1], r
    for r in prange(rows, nogil=True, schedule='static', num_threads=n_threads,
                    use_threads_if=n_threads > 1 and rows * d >= FN_PARALLEL_MIN):
        if floating is float:
            fn_scale_shift_f(&x[r, 0], &scale[0], &shift[0], &y[r, 0], d)
        else:
            fn_scale_shift_d(&x[r, 0], &scale[0], &shift[0], &y[r, 0], d)


def batchnorm_dx(const floating[:, ::1] dy, const floating[:, ::1] x,
                 const floating[::1] mean, const floating[::1] a, const floating[::1] b,
                 const floating[::1] c, floating[:, ::1] dx, int n_threads):
    """dx[r, j] = a[j] * dy[r, j] - b[j] * (x[r, j] - mean[j]) - c[j]; dx may be dy."""
    cdef Py_ssize_t rows = x.shape[0], d = x.shape[1], r
    for r in prange(rows, nogil=True, schedule='static', num_threads=n_threads,
                    use_threads_if=n_threads > 1 and rows * d >= FN_PARALLEL_MIN):
        if floating is float:
            fn_bn_dx_f(&dy[r, 0], &x[r, 0], &mean[0], &a[0], &b[0], &c[0], &dx[r, 0], d)
        else:
            fn_bn_dx_d(&dy[r, 0], &x[r, 0], &mean[0], &a[0], &b[0], &c[0], &dx[r, 0], d)
