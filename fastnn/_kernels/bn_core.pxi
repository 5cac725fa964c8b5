# Batch statistics and the two normalization passes behind batchnorm.pyx, shared with
# network.pyx (included, not imported). Needs: floating, prange, sqrt, malloc/free, and
# from simd.pxd FN_PARALLEL_MIN, FN_REDUCE_ROWS, FN_REDUCE_COLS, fn_tile_mean_m2_*,
# fn_merge_mean_m2_*, fn_scale_shift_*, fn_bn_dx_*.

cdef int _batch_stats(const floating *x, Py_ssize_t rows, Py_ssize_t d, floating *mean,
                      floating *var, int n_threads) noexcept nogil:
    """mean[j] and the biased variance var[j] of column j (rows >= 1); -1 when out of
    memory."""
    cdef Py_ssize_t n_rb = (rows + FN_REDUCE_ROWS - 1) // FN_REDUCE_ROWS
    cdef Py_ssize_t n_cb = (d + FN_REDUCE_COLS - 1) // FN_REDUCE_COLS
    cdef Py_ssize_t rb, r0, cb, j0
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
    for cb in prange(n_cb, schedule='static', num_threads=n_threads,
                     use_threads_if=threaded and n_cb > 1):
        j0 = cb * FN_REDUCE_COLS
        if floating is float:
            fn_merge_mean_m2_f(tile_mean + j0, tile_m2 + j0, d, rows,
                               min(FN_REDUCE_COLS, d - j0), mean + j0, var + j0)
        else:
            fn_merge_mean_m2_d(tile_mean + j0, tile_m2 + j0, d, rows,
                               min(FN_REDUCE_COLS, d - j0), mean + j0, var + j0)
    free(tile_mean)
    return 0


cdef int _bn_forward(const floating *x, Py_ssize_t rows, Py_ssize_t d,
                     const floating *gamma, const floating *beta, floating *running_mean,
                     floating *running_var, bint training, double momentum, double eps,
                     floating *mean, floating *inv_std, floating *y,
                     int n_threads, int act, floating slope, floating *z) noexcept nogil:
    """y = f((x - mean) * inv_std * gamma + beta) (see batchnorm.forward), f the
    activation `act` (FN_ACT_IDENTITY: none); z: NULL, or where f's input goes too
    (for an f whose gradient reads it). running_mean and running_var may be NULL.
    Returns -1 when out of memory, 0 otherwise."""
    cdef floating *scale = <floating *> malloc(2 * d * sizeof(floating))
    cdef floating *shift = scale + d
    cdef floating var, m = <floating> momentum, e = <floating> eps
    cdef floating unbias = <floating> (rows / (rows - 1.0)) if rows > 1 else 1
    cdef Py_ssize_t j, r
    cdef int status = 0
    if scale == NULL:
        return -1
    if training:
        # inv_std holds the variance until the loop below turns it into 1/sqrt(var+eps)
        status = _batch_stats(x, rows, d, mean, inv_std, n_threads)
    if status == 0:
        for j in range(d):
            if training:
                var = inv_std[j]
                if running_mean != NULL:
                    running_mean[j] = (1 - m) * running_mean[j] + m * mean[j]
                if running_var != NULL:
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
                fn_scale_shift_f(act, x + r * d, scale, shift, y + r * d,
                                 NULL if z == NULL else z + r * d, d, slope)
            else:
                fn_scale_shift_d(act, x + r * d, scale, shift, y + r * d,
                                 NULL if z == NULL else z + r * d, d, slope)
    free(scale)
    return status


cdef int _bn_backward_dx(const floating *dy, const floating *x, Py_ssize_t rows,
                         Py_ssize_t d, const floating *gamma, const floating *mean,
                         const floating *inv_std, const floating *sum_dy,
                         const floating *sum_dy_xhat, bint training, floating *dx,
                         int n_threads) noexcept nogil:
    """The input gradient (see batchnorm.backward_dx). Returns -1 when out of memory."""
    cdef floating *a = <floating *> malloc(3 * d * sizeof(floating))
    cdef floating *b = a + d
    cdef floating *c = a + 2 * d
    cdef floating n = <floating> rows
    cdef Py_ssize_t j, r
    if a == NULL:
        return -1
    for j in range(d):
        a[j] = gamma[j] * inv_std[j]
        b[j] = a[j] * inv_std[j] * (sum_dy_xhat[j] / n) if training else 0
        c[j] = a[j] * (sum_dy[j] / n) if training else 0
    for r in prange(rows, schedule='static', num_threads=n_threads,
                    use_threads_if=n_threads > 1 and rows * d >= FN_PARALLEL_MIN):
        if floating is float:
            fn_bn_dx_f(dy + r * d, x + r * d, mean, a, b, c, dx + r * d, d)
        else:
            fn_bn_dx_d(dy + r * d, x + r * d, mean, a, b, c, dx + r * d, d)
    free(a)
    return 0
