# The activation passes behind activations.pyx, shared with network.pyx (included, not
# imported). Needs: floating, prange, and from simd.pxd FN_CHUNK, FN_PARALLEL_MIN,
# fn_act_forward_*, fn_act_backward_*, fn_bias_act_forward_*.


cdef void _act_forward(int act, const floating *x, floating *y, Py_ssize_t n,
                       floating slope, int n_threads) noexcept nogil:
    """y = f(x) over n elements; y may be x."""
    cdef Py_ssize_t n_chunks = (n + FN_CHUNK - 1) // FN_CHUNK, c, start
    for c in prange(n_chunks, schedule='static', num_threads=n_threads,
                    use_threads_if=n_threads > 1 and n >= FN_PARALLEL_MIN):
        start = c * FN_CHUNK
        if floating is float:
            fn_act_forward_f(act, x + start, y + start, min(FN_CHUNK, n - start), slope)
        else:
            fn_act_forward_d(act, x + start, y + start, min(FN_CHUNK, n - start), slope)


cdef void _act_backward(int act, const floating *dout, const floating *y, floating *dx,
                        Py_ssize_t n, floating slope, int n_threads) noexcept nogil:
    """dx = dout * f'(x), f' read from y (the input x where FN_ACT_READS_INPUT); dx may
    be dout."""
    cdef Py_ssize_t n_chunks = (n + FN_CHUNK - 1) // FN_CHUNK, c, start
    for c in prange(n_chunks, schedule='static', num_threads=n_threads,
                    use_threads_if=n_threads > 1 and n >= FN_PARALLEL_MIN):
        start = c * FN_CHUNK
        if floating is float:
            fn_act_backward_f(act, dout + start, y + start, dx + start,
                              min(FN_CHUNK, n - start), slope)
        else:
            fn_act_backward_d(act, dout + start, y + start, dx + start,
                              min(FN_CHUNK, n - start), slope)


cdef void _bias_act_forward(int act, const floating *x, const floating *bias, floating *y,
                            floating *z, Py_ssize_t rows, Py_ssize_t d, floating slope,
                            int n_threads) noexcept nogil:
    """y[r, j] = f(x[r, j] + bias[j]); y may be x. z: NULL, or where x + bias goes too
    (for an f whose gradient reads its input); z may be x."""
    cdef Py_ssize_t per_task = max(1, FN_CHUNK // d)
    cdef Py_ssize_t n_tasks = (rows + per_task - 1) // per_task, t, r0
    for t in prange(n_tasks, schedule='static', num_threads=n_threads,
                    use_threads_if=n_threads > 1 and rows * d >= FN_PARALLEL_MIN):
        r0 = t * per_task
        if floating is float:
            fn_bias_act_forward_f(act, x + r0 * d, bias, y + r0 * d,
                                  NULL if z == NULL else z + r0 * d,
                                  min(per_task, rows - r0), d, slope)
        else:
            fn_bias_act_forward_d(act, x + r0 * d, bias, y + r0 * d,
                                  NULL if z == NULL else z + r0 * d,
                                  min(per_task, rows - r0), d, slope)
