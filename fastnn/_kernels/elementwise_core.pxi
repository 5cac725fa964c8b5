# The element-wise passes behind activations.pyx and dropout.pyx, shared with
# network.pyx (included, not imported). Needs: floating, prange, and from simd.pxd
# FN_PARALLEL_MIN, fn_act_forward_*, fn_act_backward_*, fn_bias_act_forward_*,
# fn_dropout_*.

# Elements per task: large enough that a call per chunk costs nothing, small enough
# to balance the threads.
cdef enum:
    CHUNK = 8192


cdef void _act_forward(int act, const floating *x, floating *y, Py_ssize_t n,
                       floating slope, int n_threads) noexcept nogil:
    """y = f(x) over n elements; y may be x."""
    cdef Py_ssize_t n_chunks = (n + CHUNK - 1) // CHUNK, c, start
    for c in prange(n_chunks, schedule='static', num_threads=n_threads,
                    use_threads_if=n_threads > 1 and n >= FN_PARALLEL_MIN):
        start = c * CHUNK
        if floating is float:
            fn_act_forward_f(act, x + start, y + start, min(CHUNK, n - start), slope)
        else:
            fn_act_forward_d(act, x + start, y + start, min(CHUNK, n - start), slope)


cdef void _act_backward(int act, const floating *dout, const floating *y, floating *dx,
                        Py_ssize_t n, floating slope, int n_threads) noexcept nogil:
    """dx = dout * f'(x), f' read from y; dx may be dout."""
    cdef Py_ssize_t n_chunks = (n + CHUNK - 1) // CHUNK, c, start
    for c in prange(n_chunks, schedule='static', num_threads=n_threads,
                    use_threads_if=n_threads > 1 and n >= FN_PARALLEL_MIN):
        start = c * CHUNK
        if floating is float:
            fn_act_backward_f(act, dout + start, y + start, dx + start,
                              min(CHUNK, n - start), slope)
        else:
            fn_act_backward_d(act, dout + start, y + start, dx + start,
                              min(CHUNK, n - start), slope)


cdef void _bias_act_forward(int act, const floating *x, const floating *bias, floating *y,
                            Py_ssize_t rows, Py_ssize_t d, floating slope,
                            int n_threads) noexcept nogil:
    """y[r, j] = f(x[r, j] + bias[j]); y may be x."""
    cdef Py_ssize_t per_task = max(1, CHUNK // d)
    cdef Py_ssize_t n_tasks = (rows + per_task - 1) // per_task, t, r0
    for t in prange(n_tasks, schedule='static', num_threads=n_threads,
                    use_threads_if=n_threads > 1 and rows * d >= FN_PARALLEL_MIN):
        r0 = t * per_task
        if floating is float:
            fn_bias_act_forward_f(act, x + r0 * d, bias, y + r0 * d,
                                  min(per_task, rows - r0), d, slope)
        else:
            fn_bias_act_forward_d(act, x + r0 * d, bias, y + r0 * d,
                                  min(per_task, rows - r0), d, slope)


cdef void _dropout(const floating *x, floating *y, Py_ssize_t n, unsigned long long key,
                   unsigned int threshold, floating scale, int n_threads) noexcept nogil:
    """y[i] = 0 if hash(key, i) < threshold else x[i] * scale; y may be x."""
    cdef Py_ssize_t n_chunks = (n + CHUNK - 1) // CHUNK, c, start
    cdef unsigned int key_lo = <unsigned int> (key & 0xffffffffu)
    cdef unsigned int key_hi = <unsigned int> (key >> 32)
    for c in prange(n_chunks, schedule='static', num_threads=n_threads,
                    use_threads_if=n_threads > 1 and n >= FN_PARALLEL_MIN):
        start = c * CHUNK
        if floating is float:
            fn_dropout_f(x + start, y + start, min(CHUNK, n - start), start, key_lo, key_hi,
                         threshold, scale)
        else:
            fn_dropout_d(x + start, y + start, min(CHUNK, n - start), start, key_lo, key_hi,
                         threshold, scale)
