# The dropout pass behind dropout.pyx, shared with network.pyx (included, not imported).
# Needs: floating, prange, and from simd.pxd FN_CHUNK, FN_PARALLEL_MIN, fn_dropout_*,
# fn_dropout_gate_*.

cdef void _dropout(const floating *x, floating *y, Py_ssize_t n, unsigned long long key,
                   unsigned int threshold, floating scale, int n_threads) noexcept nogil:
    """y[i] = 0 if hash(key, i) < threshold else x[i] * scale; y may be x."""
    cdef Py_ssize_t n_chunks = (n + FN_CHUNK - 1) // FN_CHUNK, c, start
    cdef unsigned int key_lo = <unsigned int> (key & 0xffffffffu)
    cdef unsigned int key_hi = <unsigned int> (key >> 32)
    for c in prange(n_chunks, schedule='static', num_threads=n_threads,
                    use_threads_if=n_threads > 1 and n >= FN_PARALLEL_MIN):
        start = c * FN_CHUNK
        if floating is float:
            fn_dropout_f(x + start, y + start, min(FN_CHUNK, n - start), start, key_lo, key_hi,
                         threshold, scale)
        else:
            fn_dropout_d(x + start, y + start, min(FN_CHUNK, n - start), start, key_lo, key_hi,
                         threshold, scale)


cdef void _dropout_gate(const floating *g, const floating *y, floating *dx, Py_ssize_t n,
                        floating scale, int n_threads) noexcept nogil:
    """dx[i] = g[i] * scale where y[i] > 0, else 0: the gradient of a ReLU and a dropout
    after it, y the dropout's output (see fn_dropout_gate); dx may be g."""
    cdef Py_ssize_t n_chunks = (n + FN_CHUNK - 1) // FN_CHUNK, c, start
    for c in prange(n_chunks, schedule='static', num_threads=n_threads,
                    use_threads_if=n_threads > 1 and n >= FN_PARALLEL_MIN):
        start = c * FN_CHUNK
        if floating is float:
            fn_dropout_gate_f(g + start, y + start, dx + start, min(FN_CHUNK, n - start),
                              scale)
        else:
            fn_dropout_gate_d(g + start, y + start, dx + start, min(FN_CHUNK, n - start),
                              scale)
