"""2-D pooling as KernelOps: max and average over windows, and the global average.

Input (rows, C, H, W) and output (rows, C, OH, OW), NCHW. Every (sample, channel) plane
is pooled by one thread, forward and backward (where overlapping windows add into the
same input cell), so results do not depend on the thread count. A window starts at
(oh * sh - ph, ow * sw - pw) and spans (kh, kw) cells of the zero-padded input, with
OH = (H + 2 ph - kh) // sh + 1 (floor mode) and likewise OW; padding at most half the
window (as PyTorch requires) leaves every window at least one cell of the input.
"""

import numpy as np

from cython cimport floating
from cython.parallel cimport prange
# one-thread parallel regions skip the OpenMP runtime (see the header)
cdef extern from "omp_serial.h":
    pass
from libc.limits cimport INT_MAX
from libc.stdlib cimport free, malloc

from .planop cimport KernelOp
from .simd cimport (
    FN_PARALLEL_MIN,
    fn_maxpool2_plane_backward_d,
    fn_maxpool2_plane_backward_f,
    fn_sum_d,
    fn_sum_f,
)


cdef enum:
    POOL_MAX
    POOL_AVG
    POOL_GLOBAL_AVG


cdef struct PoolState:
    int kind
    bint single                            # float32, else float64
    Py_ssize_t channels, height, width, out_h, out_w
    Py_ssize_t kh, kw, sh, sw, ph, pw
    int *argmax                            # max: per output, the plane index of its max
    bint pairs                             # a 2x2 window, stride 2, no padding
    bint even                              # and an even height and width


cdef inline void _span(Py_ssize_t start, Py_ssize_t k, Py_ssize_t size, Py_ssize_t *lo,
                       Py_ssize_t *hi) noexcept nogil:
    """[lo, hi): the cells of a window of k from start that lie inside [0, size)."""
    lo[0] = max(start, 0)
    hi[0] = min(start + k, size)


cdef inline void _take(floating v, Py_ssize_t i, floating *best, int *at) noexcept nogil:
    """The max-pool rule for the next cell in row-major order: a larger value wins, and
    a NaN over a number."""
    if v > best[0] or (v != v and best[0] == best[0]):
        best[0], at[0] = v, <int> i


cdef void _max_plane(const PoolState *st, const floating *x, floating *y,
                     int *argmax) noexcept nogil:
    """y = the max of each window; argmax = where it is (the first in row-major order
    among equals; NaN wins). Padded cells are left out, never taken."""
    cdef Py_ssize_t width = st.width, oh, ow, h, w, h0, h1, w0, w1
    cdef floating best
    cdef int at
    for oh in range(st.out_h):
        _span(oh * st.sh - st.ph, st.kh, st.height, &h0, &h1)
        for ow in range(st.out_w):
            _span(ow * st.sw - st.pw, st.kw, width, &w0, &w1)
            at = <int> (h0 * width + w0)
            best = x[at]
            for h in range(h0, h1):
                for w in range(w0, w1):
                    _take(x[h * width + w], h * width + w, &best, &at)
            y[oh * st.out_w + ow] = best
            argmax[oh * st.out_w + ow] = at


cdef void _max_plane_2x2(const PoolState *st, const floating *x, floating *y,
                         int *argmax) noexcept nogil:
    """_max_plane for st.pairs (the common 2x2, stride 2 pool), without window bounds:
    every window lies inside the plane. (Scalar: a vectorized version, simd_impl.h's
    style, ran 2x slower on AVX-512, its loads being two-apart.)"""
    cdef Py_ssize_t width = st.width, oh, ow, i, o
    cdef floating best
    cdef int at
    for oh in range(st.out_h):
        for ow in range(st.out_w):
            i = 2 * (oh * width + ow)
            best, at = x[i], <int> i
            _take(x[i + 1], i + 1, &best, &at)
            _take(x[i + width], i + width, &best, &at)
            _take(x[i + width + 1], i + width + 1, &best, &at)
            o = oh * st.out_w + ow
            y[o] = best
            argmax[o] = at


cdef void _max_plane_backward_2x2(const PoolState *st, const floating *g, floating *dx,
                                  const int *argmax) noexcept nogil:
    """_max_plane_backward for st.pairs and st.even: the windows tile the plane, so no
    two share a winner: zeros, then g stored (not added) at each window's winner."""
    if floating is float:
        fn_maxpool2_plane_backward_f(g, argmax, dx, st.out_h * st.out_w,
                                     st.height * st.width)
    else:
        fn_maxpool2_plane_backward_d(g, argmax, dx, st.out_h * st.out_w,
                                     st.height * st.width)


cdef void _avg_plane(const PoolState *st, const floating *x, floating *y) noexcept nogil:
    """y = the sum of each window's input cells / (kh * kw): zero padding counts."""
    cdef Py_ssize_t width = st.width, oh, ow, h, w, h0, h1, w0, w1
    cdef floating size = st.kh * st.kw, s
    for oh in range(st.out_h):
        _span(oh * st.sh - st.ph, st.kh, st.height, &h0, &h1)
        for ow in range(st.out_w):
            _span(ow * st.sw - st.pw, st.kw, width, &w0, &w1)
            s = 0
            for h in range(h0, h1):
                for w in range(w0, w1):
                    s = s + x[h * width + w]
            y[oh * st.out_w + ow] = s / size


cdef void _avg_plane_backward(const PoolState *st, const floating *g,
                              floating *dx) noexcept nogil:
    """dx = the sum, over the windows holding a cell, of g / (kh * kw)."""
    cdef Py_ssize_t width = st.width, oh, ow, h, w, h0, h1, w0, w1
    cdef floating size = st.kh * st.kw, v
    for h in range(st.height * width):
        dx[h] = 0
    for oh in range(st.out_h):
        _span(oh * st.sh - st.ph, st.kh, st.height, &h0, &h1)
        for ow in range(st.out_w):
            _span(ow * st.sw - st.pw, st.kw, width, &w0, &w1)
            v = g[oh * st.out_w + ow] / size
            for h in range(h0, h1):
                for w in range(w0, w1):
                    dx[h * width + w] += v


cdef void _max_plane_backward(const PoolState *st, const floating *g, floating *dx,
                              const int *argmax) noexcept nogil:
    """dx = the sum of g over the outputs whose max a cell was."""
    cdef Py_ssize_t i
    for i in range(st.height * st.width):
        dx[i] = 0
    for i in range(st.out_h * st.out_w):
        dx[argmax[i]] += g[i]


cdef void _forward(const PoolState *st, const floating *x, floating *y, Py_ssize_t rows,
                   int n_threads) noexcept nogil:
    cdef Py_ssize_t d_in = st.height * st.width, d_out = st.out_h * st.out_w, p
    cdef Py_ssize_t planes = rows * st.channels
    for p in prange(planes, schedule='static', num_threads=n_threads,
                    use_threads_if=n_threads > 1 and planes * d_in >= FN_PARALLEL_MIN):
        if st.kind == POOL_MAX and st.pairs:
            _max_plane_2x2(st, x + p * d_in, y + p * d_out, st.argmax + p * d_out)
        elif st.kind == POOL_MAX:
            _max_plane(st, x + p * d_in, y + p * d_out, st.argmax + p * d_out)
        elif st.kind == POOL_AVG:
            _avg_plane(st, x + p * d_in, y + p * d_out)
        elif floating is float:
            y[p] = fn_sum_f(x + p * d_in, d_in) / d_in
        else:
            y[p] = fn_sum_d(x + p * d_in, d_in) / d_in


cdef void _backward(const PoolState *st, const floating *g, floating *dx, Py_ssize_t rows,
                    int n_threads) noexcept nogil:
    cdef Py_ssize_t d_in = st.height * st.width, d_out = st.out_h * st.out_w, p, i
    cdef Py_ssize_t planes = rows * st.channels
    cdef floating v
    for p in prange(planes, schedule='static', num_threads=n_threads,
                    use_threads_if=n_threads > 1 and planes * d_in >= FN_PARALLEL_MIN):
        if st.kind == POOL_MAX and st.pairs and st.even:
            _max_plane_backward_2x2(st, g + p * d_out, dx + p * d_in, st.argmax + p * d_out)
        elif st.kind == POOL_MAX:
            _max_plane_backward(st, g + p * d_out, dx + p * d_in, st.argmax + p * d_out)
        elif st.kind == POOL_AVG:
            _avg_plane_backward(st, g + p * d_out, dx + p * d_in)
        else:
            v = g[p] / d_in
            for i in range(p * d_in, (p + 1) * d_in):
                dx[i] = v


cdef int _pool_forward(void *state, const void *x, void *y, Py_ssize_t rows,
                       int n_threads) noexcept nogil:
    cdef PoolState *st = <PoolState *> state
    if st.single:
        _forward(st, <const float *> x, <float *> y, rows, n_threads)
    else:
        _forward(st, <const double *> x, <double *> y, rows, n_threads)
    return 0


cdef int _pool_backward(void *state, const void *x, const void *y, const void *g, void *dx,
                        Py_ssize_t rows, bint input_grad, int n_threads) noexcept nogil:
    cdef PoolState *st = <PoolState *> state
    if not input_grad:  # no parameters: nothing else to compute
        return 0
    if st.single:
        _backward(st, <const float *> g, <float *> dx, rows, n_threads)
    else:
        _backward(st, <const double *> g, <double *> dx, rows, n_threads)
    return 0


cdef class _PoolOp(KernelOp):
    """The geometry shared by the pooling ops; see the module docstring."""

    cdef PoolState st

    def _geometry(self, int kind, dtype, Py_ssize_t rows, tuple in_shape, kernel, stride,
                  padding, tuple out_shape=None):
        cdef PoolState *st = &self.st
        st.kind = kind
        st.channels, st.height, st.width = in_shape
        st.kh, st.kw = kernel
        st.sh, st.sw = stride
        st.ph, st.pw = padding
        if (min(st.kh, st.kw, st.sh, st.sw) <= 0 or st.ph < 0 or st.pw < 0
                or 2 * st.ph > st.kh or 2 * st.pw > st.kw
                or st.kh > st.height + 2 * st.ph or st.kw > st.width + 2 * st.pw):
            raise ValueError(f"{type(self).__name__}: window {kernel}, stride {stride}, "
                             f"padding {padding} do not fit an input of {in_shape}")
        st.out_h = (st.height + 2 * st.ph - st.kh) // st.sh + 1
        st.out_w = (st.width + 2 * st.pw - st.kw) // st.sw + 1
        st.pairs = (st.kh == st.kw == st.sh == st.sw == 2) and st.ph == st.pw == 0
        st.even = st.height % 2 == 0 and st.width % 2 == 0
        if out_shape is None:
            out_shape = (st.channels, st.out_h, st.out_w)
        self._shape(dtype, rows, in_shape, out_shape, False)
        st.single = self.dtype == np.float32
        self.state = st
        self.forward_fn = _pool_forward
        self.backward_fn = _pool_backward


cdef class MaxPoolOp(_PoolOp):
    """y = the max of each window, (rows, C, H, W) -> (rows, C, OH, OW); padded cells
    never win. Backward: each g goes to the cell that won its window (the first in
    row-major order among equals), adding where windows overlap. kernel, stride,
    padding: (h, w) pairs."""

    def __init__(self, dtype, Py_ssize_t rows, tuple in_shape, kernel, stride, padding):
        self._geometry(POOL_MAX, dtype, rows, in_shape, kernel, stride, padding)
        if self.st.height * self.st.width > INT_MAX:  # argmax holds int plane indices
            raise ValueError(f"MaxPoolOp: a plane of {in_shape[1:]} has over 2**31 - 1 cells")
        self.st.argmax = <int *> malloc(rows * self.d_out * sizeof(int))
        if self.st.argmax == NULL:
            raise MemoryError("MaxPoolOp: cannot allocate its workspace")

    def __dealloc__(self):
        free(self.st.argmax)


cdef class AvgPoolOp(_PoolOp):
    """y = the sum of each window / (kh * kw), (rows, C, H, W) -> (rows, C, OH, OW): zero
    padding counts in the mean (PyTorch's count_include_pad=True). Backward: each cell
    gets g / (kh * kw) from every window holding it."""

    def __init__(self, dtype, Py_ssize_t rows, tuple in_shape, kernel, stride, padding):
        self._geometry(POOL_AVG, dtype, rows, in_shape, kernel, stride, padding)


cdef class GlobalAvgPoolOp(_PoolOp):
    """y[r, c] = the mean of plane x[r, c], (rows, C, H, W) -> (rows, C). Backward:
    dx[r, c] = g[r, c] / (H * W) everywhere in the plane."""

    def __init__(self, dtype, Py_ssize_t rows, tuple in_shape):
        self._geometry(POOL_GLOBAL_AVG, dtype, rows, in_shape, in_shape[1:], (1, 1), (0, 0),
                       in_shape[:1])
