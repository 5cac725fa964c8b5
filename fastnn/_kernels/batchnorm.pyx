"""Batch-normalization kernels: batch statistics in one parallel pass and the
normalization in a second (forward), and the closed-form input gradient (backward_dx).

Statistics are computed over fixed blocks of FN_REDUCE_ROWS whole rows (mean and
squared deviations of each block, in cache), then merged block by block in a fixed order
with Chan's formula, in double precision: accurate for large means, and bitwise the
same for any thread count. Arguments are checked by fastnn.ops; here they are trusted.
"""

from cython cimport floating
from cython.parallel cimport prange
from libc.math cimport sqrt
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

cdef int _batch_stats(const floating *x, Py_ssize_t rows, Py_ssize_t d, floating *mean,
                      floating *var, int n_threads) noexcept nogil:
    """mean[j] and the biased variance var[j] of column j (rows >= 1); -1 when out of
    memory."""
    cdef Py_ssize_t n_rb = (rows + FN_REDUCE_ROWS - 1) // FN_REDUCE_ROWS
    cdef Py_ssize_t rb, r0, j
    cdef double n_a, n_b, n_ab, mean_a, m2_a, delta
    cdef bint threaded = n_threads > 1 and rows * d >= FN_PARALLEL_MIN
    cdef floating *tile_mean = <floating *> malloc(2 * n_rb * d * sizeof(floating))
    cdef floating *tile_m2 = tile_mean + n_rb * d
    if tile_mean == NULL:
        return -1
    for rb in prange(n_rb, schedule='static', num_threads=n_threads, use_threads_if=threaded):
        r0 = rb * FN_REDUCE_ROWS
        if floating is float:
            fn_tile_mean_m2_f(x + r0 * d, d, min(FN_REDUCE_ROWS, rows - r0), d,
                              tile_mean + rb * d, tile_m2 + rb * d)
        else:
            fn_tile_mean_m2_d(x + r0 * d, d, min(FN_REDUCE_ROWS, rows - r0), d,
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
    return 0


def forward(const floating[:, ::1] x, const floating[::1] gamma, const floating[::1] beta,
            floating[::1] running_mean, floating[::1] running_var, bint training,
            double momentum, double eps, floating[::1] mean, floating[::1] inv_std,
            floating[:, ::1] y, int n_threads):
    """y = (x - mean) * inv_std * gamma + beta; y may not be x.

    training: mean and inv_std = 1 / sqrt(var + eps) from the batch (biased variance,
    rows >= 2); running_mean and running_var, unless None, move towards the batch's
    statistics by `momentum` (running_var towards the UNBIASED variance). Otherwise the
    running statistics give mean and inv_std. mean and inv_std are written.
    """
    cdef Py_ssize_t rows = x.shape[0], d = x.shape[1], j, r
    cdef floating *scale = <floating *> malloc(2 * d * sizeof(floating))
    cdef floating *shift = scale + d
    cdef floating var, m = <floating> momentum, e = <floating> eps
    cdef floating unbias = <floating> (rows / (rows - 1.0)) if rows > 1 else 1
    cdef bint update_mean = running_mean is not None
    cdef bint update_var = running_var is not None
    cdef int status = 0
    if scale == NULL:
        raise MemoryError("batchnorm forward: cannot allocate its workspace")
    with nogil:
        if training:
            # inv_std holds the variance until the loop below turns it into 1/sqrt(var+eps)
            status = _batch_stats(&x[0, 0], rows, d, &mean[0], &inv_std[0], n_threads)
        if status == 0:
            for j in range(d):
                if training:
                    var = inv_std[j]
                    if update_mean:
                        running_mean[j] = (1 - m) * running_mean[j] + m * mean[j]
                    if update_var:
                        running_var[j] = (1 - m) * running_var[j] + m * unbias * var
                else:
                    mean[j] = running_mean[j]
                    var = running_var[j]
                inv_std[j] = 1 / <floating> sqrt(var + e)
                scale[j] = gamma[j] * inv_std[j]
                shift[j] = beta[j] - mean[j] * scale[j]
            for r in prange(rows, schedule='static', num_threads=n_threads,
                            use_threads_if=n_threads > 1 and rows * d >= FN_PARALLEL_MIN):
                if floating is float:
                    fn_scale_shift_f(&x[r, 0], scale, shift, &y[r, 0], d)
                else:
                    fn_scale_shift_d(&x[r, 0], scale, shift, &y[r, 0], d)
    free(scale)
    if status != 0:
        raise MemoryError("batchnorm forward: cannot allocate its workspace")


def backward_dx(const floating[:, ::1] dy, const floating[:, ::1] x,
                const floating[::1] gamma, const floating[::1] mean,
                const floating[::1] inv_std, const floating[::1] sum_dy,
                const floating[::1] sum_dy_xhat, bint training, floating[:, ::1] dx,
                int n_threads):
    """The input gradient, from the column sums of dy and dy * xhat.

    training (through the batch statistics):
        dx = gamma * inv_std / N * (N * dy - sum_dy - xhat * sum_dy_xhat)
    else (running statistics are constants): dx = gamma * inv_std * dy. dx may be dy.
    """
    cdef Py_ssize_t rows = x.shape[0], d = x.shape[1], j, r
    cdef floating *a = <floating *> malloc(3 * d * sizeof(floating))
    cdef floating *b = a + d
    cdef floating *c = a + 2 * d
    cdef floating n = <floating> rows
    if a == NULL:
        raise MemoryError("batchnorm backward: cannot allocate its workspace")
    with nogil:
        for j in range(d):
            a[j] = gamma[j] * inv_std[j]
            b[j] = a[j] * inv_std[j] * (sum_dy_xhat[j] / n) if training else 0
            c[j] = a[j] * (sum_dy[j] / n) if training else 0
        for r in prange(rows, schedule='static', num_threads=n_threads,
                        use_threads_if=n_threads > 1 and rows * d >= FN_PARALLEL_MIN):
            if floating is float:
                fn_bn_dx_f(&dy[r, 0], &x[r, 0], &mean[0], a, b, c, &dx[r, 0], d)
            else:
                fn_bn_dx_d(&dy[r, 0], &x[r, 0], &mean[0], a, b, c, &dx[r, 0], d)
    free(a)
