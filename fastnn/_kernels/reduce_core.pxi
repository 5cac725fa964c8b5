# The tiled column sums behind reductions.pyx, shared with network.pyx (included, not
# imported). Needs: floating, prange, malloc/free, memcpy/memset, and from simd.pxd
# FN_PARALLEL_MIN, FN_REDUCE_COLS, FN_REDUCE_ROWS, fn_act_backward_acc_*, fn_add_row_*,
# fn_bn_grad_acc_*.

# What a tiled column reduction sums per element.
cdef enum:
    SUM_X = 0            # out += x
    SUM_ACT_GRAD = 1     # dx = g * f'(y); out += dx
    SUM_BN_GRAD = 2      # out += dy; out2 += dy * (x - mean) * inv_std


cdef int _column_sums(int mode, int act, const floating *g, const floating *y, floating *dx,
                      const floating *mean, const floating *inv_std, floating *out,
                      floating *out2, Py_ssize_t rows, Py_ssize_t d, floating slope,
                      int n_threads) noexcept nogil:
    """Column sums of `rows` x `d` row-major data, per `mode`; out2 only for SUM_BN_GRAD.

    Returns -1 when the workspace cannot be allocated, 0 otherwise.
    """
    cdef Py_ssize_t n_rb = (rows + FN_REDUCE_ROWS - 1) // FN_REDUCE_ROWS
    cdef Py_ssize_t n_cb = (d + FN_REDUCE_COLS - 1) // FN_REDUCE_COLS
    cdef int n_out = 2 if mode == SUM_BN_GRAD else 1
    cdef floating *partial = out
    cdef floating *partial2 = out2
    cdef floating *acc
    cdef floating *acc2
    cdef Py_ssize_t rb, cb, r, r0, r1, c0, width, off
    cdef bint threaded = n_threads > 1 and rows * d >= FN_PARALLEL_MIN
    if n_rb > 1:
        partial = <floating *> malloc(n_out * n_rb * d * sizeof(floating))
        if partial == NULL:
            return -1
        partial2 = partial + n_rb * d
    # A task is a block of whole rows: it streams through contiguous memory while its
    # partial row stays in cache.
    for rb in prange(n_rb, schedule='static', num_threads=n_threads,
                     use_threads_if=threaded):
        r0 = rb * FN_REDUCE_ROWS
        r1 = min(r0 + FN_REDUCE_ROWS, rows)
        acc = partial + rb * d
        acc2 = partial2 + rb * d
        memset(acc, 0, d * sizeof(floating))
        if mode == SUM_BN_GRAD:
            memset(acc2, 0, d * sizeof(floating))
        for r in range(r0, r1):
            off = r * d
            if mode == SUM_X:
                if floating is float:
                    fn_add_row_f(acc, g + off, d)
                else:
                    fn_add_row_d(acc, g + off, d)
            elif mode == SUM_ACT_GRAD:
                if floating is float:
                    fn_act_backward_acc_f(act, g + off, y + off, dx + off, acc, d, slope)
                else:
                    fn_act_backward_acc_d(act, g + off, y + off, dx + off, acc, d, slope)
            elif floating is float:
                fn_bn_grad_acc_f(g + off, y + off, mean, inv_std, acc, acc2, d)
            else:
                fn_bn_grad_acc_d(g + off, y + off, mean, inv_std, acc, acc2, d)
    if n_rb > 1:
        for cb in prange(n_cb, schedule='static', num_threads=n_threads,
                         use_threads_if=threaded):
            c0 = cb * FN_REDUCE_COLS
            width = min(FN_REDUCE_COLS, d - c0)
            _sum_partials(out + c0, partial + c0, n_rb, d, width)
            if mode == SUM_BN_GRAD:
                _sum_partials(out2 + c0, partial2 + c0, n_rb, d, width)
        free(partial)
    return 0


cdef inline void _sum_partials(floating *out, const floating *partial, Py_ssize_t n_rb,
                               Py_ssize_t stride, Py_ssize_t width) noexcept nogil:
    """out[j] = sum over rb, in order, of partial[rb * stride + j]."""
    cdef Py_ssize_t rb
    memcpy(out, partial, width * sizeof(floating))
    for rb in range(1, n_rb):
        if floating is float:
            fn_add_row_f(out, partial + rb * stride, width)
        else:
            fn_add_row_d(out, partial + rb * stride, width)
