"""2-D batch normalization as a KernelOp: per channel over the (N, H, W) values of an
(N, C, H, W) batch, in NCHW, where a channel's values are N contiguous planes of H * W.

Forward, train mode: the mean and squared deviations of each plane (in double, in
parallel over the planes), then per channel the mean of its N plane means and
M2 = sum of the planes' M2 + H * W * sum (plane mean - mean)^2, the planes taken in
order: exact two-pass statistics, the same for any thread count. Then
y = x * scale + shift with scale = gamma * inv_std and shift = beta - mean * scale.
"""

import numpy as np

from cython cimport floating
from cython.parallel cimport prange
# one-thread parallel regions skip the OpenMP runtime (see the header)
cdef extern from "omp_serial.h":
    pass
from libc.math cimport sqrt
from libc.stdlib cimport free, malloc

from .planop cimport KernelOp
from .simd cimport FN_PARALLEL_MIN


cdef extern from "batchnorm2d.h" nogil:
    void fn_bn2d_stats_f(const float *x, Py_ssize_t n, double *mean, double *m2)
    void fn_bn2d_stats_d(const double *x, Py_ssize_t n, double *mean, double *m2)
    void fn_bn2d_affine_f(const float *x, float *y, Py_ssize_t n, float scale, float shift)
    void fn_bn2d_affine_d(const double *x, double *y, Py_ssize_t n, double scale,
                          double shift)
    void fn_bn2d_grad_sums_f(const float *dy, const float *x, Py_ssize_t n, double mean,
                             double *sum_dy, double *sum_dyc)
    void fn_bn2d_grad_sums_d(const double *dy, const double *x, Py_ssize_t n, double mean,
                             double *sum_dy, double *sum_dyc)
    void fn_bn2d_dx_f(const float *dy, const float *x, float *dx, Py_ssize_t n, float mean,
                      float a, float b, float c)
    void fn_bn2d_dx_d(const double *dy, const double *x, double *dx, Py_ssize_t n,
                      double mean, double a, double b, double c)


cdef struct BN2dState:
    Py_ssize_t channels, plane   # C, and H * W
    bint single, training        # float32 (else float64); batch statistics (else running)
    double momentum, eps
    void *gamma                  # (C,) each, of the op's dtype
    void *beta
    void *grad_gamma             # NULL: frozen
    void *grad_beta
    void *running_mean
    void *running_var
    double *part_a               # (rows * C,) per-plane sums: mean, or sum of dy
    double *part_b               # (rows * C,) per-plane sums: M2, or sum of dy * (x - mean)
    double *mean                 # (C,) the last forward's mean and 1 / sqrt(var + eps)
    double *inv_std
    double *k0                   # (C,) each: per-channel coefficients of the current pass
    double *k1
    double *k2


cdef inline double _sum_planes(const double *part, Py_ssize_t rows, Py_ssize_t channels,
                               Py_ssize_t c) noexcept nogil:
    """The sum over samples of channel c's per-plane values, samples in order."""
    cdef double s = 0
    cdef Py_ssize_t r
    for r in range(rows):
        s = s + part[r * channels + c]
    return s


cdef void _forward(BN2dState *st, const floating *x, floating *y, Py_ssize_t rows,
                   int n_threads) noexcept nogil:
    cdef Py_ssize_t channels = st.channels, hw = st.plane, planes = rows * st.channels
    cdef Py_ssize_t p, c, r
    cdef bint threaded = n_threads > 1 and planes * hw >= FN_PARALLEL_MIN
    cdef const floating *gamma = <const floating *> st.gamma
    cdef const floating *beta = <const floating *> st.beta
    cdef floating *running_mean = <floating *> st.running_mean
    cdef floating *running_var = <floating *> st.running_var
    cdef double count = <double> rows * hw, mom = st.momentum, mean, m2, dev, var
    # the unbiased variance for running_var (a single value: the layer refuses it)
    cdef double unbias = count / (count - 1) if count > 1 else 1
    if st.training:
        for p in prange(planes, schedule='static', num_threads=n_threads,
                        use_threads_if=threaded):
            if floating is float:
                fn_bn2d_stats_f(x + p * hw, hw, st.part_a + p, st.part_b + p)
            else:
                fn_bn2d_stats_d(x + p * hw, hw, st.part_a + p, st.part_b + p)
        for c in range(channels):
            mean = _sum_planes(st.part_a, rows, channels, c) / rows
            m2 = 0
            for r in range(rows):
                dev = st.part_a[r * channels + c] - mean
                m2 = m2 + st.part_b[r * channels + c] + hw * dev * dev
            var = m2 / count
            running_mean[c] = <floating> ((1 - mom) * running_mean[c] + mom * mean)
            running_var[c] = <floating> ((1 - mom) * running_var[c] + mom * unbias * var)
            st.mean[c] = mean
            st.inv_std[c] = 1 / sqrt(var + st.eps)
    else:
        for c in range(channels):
            st.mean[c] = running_mean[c]
            st.inv_std[c] = 1 / sqrt(running_var[c] + st.eps)
    for c in range(channels):
        st.k0[c] = gamma[c] * st.inv_std[c]              # scale
        st.k1[c] = beta[c] - st.mean[c] * st.k0[c]        # shift
    for p in prange(planes, schedule='static', num_threads=n_threads, use_threads_if=threaded):
        c = p % channels
        if floating is float:
            fn_bn2d_affine_f(x + p * hw, y + p * hw, hw, <float> st.k0[c], <float> st.k1[c])
        else:
            fn_bn2d_affine_d(x + p * hw, y + p * hw, hw, st.k0[c], st.k1[c])


cdef void _backward(BN2dState *st, const floating *x, const floating *g, floating *dx,
                    Py_ssize_t rows, bint input_grad, int n_threads) noexcept nogil:
    cdef Py_ssize_t channels = st.channels, hw = st.plane, planes = rows * st.channels
    cdef Py_ssize_t p, c
    cdef bint threaded = n_threads > 1 and planes * hw >= FN_PARALLEL_MIN
    cdef const floating *gamma = <const floating *> st.gamma
    cdef floating *grad_gamma = <floating *> st.grad_gamma
    cdef floating *grad_beta = <floating *> st.grad_beta
    cdef bint sums = grad_gamma != NULL or grad_beta != NULL or (input_grad and st.training)
    cdef double count = <double> rows * hw, sum_dy = 0, sum_dyc = 0, dgamma = 0
    if sums:
        for p in prange(planes, schedule='static', num_threads=n_threads,
                        use_threads_if=threaded):
            c = p % channels
            if floating is float:
                fn_bn2d_grad_sums_f(g + p * hw, x + p * hw, hw, st.mean[c], st.part_a + p,
                                    st.part_b + p)
            else:
                fn_bn2d_grad_sums_d(g + p * hw, x + p * hw, hw, st.mean[c], st.part_a + p,
                                    st.part_b + p)
    for c in range(channels):
        if sums:
            sum_dy = _sum_planes(st.part_a, rows, channels, c)     # dbeta
            sum_dyc = _sum_planes(st.part_b, rows, channels, c)
            dgamma = sum_dyc * st.inv_std[c]                        # sum dy * xhat
            if grad_gamma != NULL:
                grad_gamma[c] += <floating> dgamma
            if grad_beta != NULL:
                grad_beta[c] += <floating> sum_dy
        # dx = gamma * inv_std / n * (n * dy - dbeta - xhat * dgamma) = k0 * dy
        # - k1 * (x - mean) - k2 in train mode; k0 * dy (constant statistics) in eval
        st.k0[c] = gamma[c] * st.inv_std[c]
        st.k1[c] = st.k0[c] * st.inv_std[c] * dgamma / count if st.training else 0
        st.k2[c] = st.k0[c] * sum_dy / count if st.training else 0
    if not input_grad:
        return
    for p in prange(planes, schedule='static', num_threads=n_threads, use_threads_if=threaded):
        c = p % channels
        if floating is float:
            fn_bn2d_dx_f(g + p * hw, x + p * hw, dx + p * hw, hw, <float> st.mean[c],
                         <float> st.k0[c], <float> st.k1[c], <float> st.k2[c])
        else:
            fn_bn2d_dx_d(g + p * hw, x + p * hw, dx + p * hw, hw, st.mean[c], st.k0[c],
                         st.k1[c], st.k2[c])


cdef int _bn2d_forward(void *state, const void *x, void *y, Py_ssize_t rows,
                       int n_threads) noexcept nogil:
    cdef BN2dState *st = <BN2dState *> state
    if st.single:
        _forward(st, <const float *> x, <float *> y, rows, n_threads)
    else:
        _forward(st, <const double *> x, <double *> y, rows, n_threads)
    return 0


cdef int _bn2d_backward(void *state, const void *x, const void *y, const void *g, void *dx,
                        Py_ssize_t rows, bint input_grad, int n_threads) noexcept nogil:
    cdef BN2dState *st = <BN2dState *> state
    if st.single:
        _backward(st, <const float *> x, <const float *> g, <float *> dx, rows, input_grad,
                  n_threads)
    else:
        _backward(st, <const double *> x, <const double *> g, <double *> dx, rows,
                  input_grad, n_threads)
    return 0


cdef class BatchNorm2dOp(KernelOp):
    """y = (x - mean) * inv_std * gamma + beta per channel, x and y (rows, C, H, W).

    training: mean and inv_std = 1 / sqrt(var + eps) of the batch (biased variance over
    rows * H * W > 1 values), and running = (1 - momentum) * running + momentum * batch
    (running_var takes the unbiased variance); else the running statistics.
    Backward (reads x, not y), xhat = (x - mean) * inv_std, n = rows * H * W:
        grad_beta += sum dy, grad_gamma += sum dy * xhat (unless None: frozen),
        dx = gamma * inv_std / n * (n * dy - sum dy - xhat * sum dy * xhat) (training),
        dx = gamma * inv_std * dy (eval).
    gamma, beta, the gradients and the running statistics are (C,) arrays of the op's
    dtype, which the op updates where they are.
    """

    cdef BN2dState st
    cdef double *buffer

    def __init__(self, dtype, Py_ssize_t rows, tuple in_shape, gamma, beta, grad_gamma,
                 grad_beta, running_mean, running_var, bint training, double momentum,
                 double eps):
        cdef Py_ssize_t channels, height, width, c
        cdef BN2dState *st = &self.st
        channels, height, width = in_shape
        self._shape(dtype, rows, in_shape, in_shape, False)
        st.channels, st.plane = channels, height * width
        st.single = self.dtype == np.float32
        st.training, st.momentum, st.eps = training, momentum, eps
        st.gamma = self.pointer(gamma, channels)
        st.beta = self.pointer(beta, channels)
        st.grad_gamma = self.pointer(grad_gamma, channels)
        st.grad_beta = self.pointer(grad_beta, channels)
        st.running_mean = self.pointer(running_mean, channels)
        st.running_var = self.pointer(running_var, channels)
        self.buffer = <double *> malloc((2 * rows + 5) * channels * sizeof(double))
        if self.buffer == NULL:
            raise MemoryError("BatchNorm2dOp: cannot allocate its workspace")
        st.part_a = self.buffer
        st.part_b = st.part_a + rows * channels
        st.mean = st.part_b + rows * channels
        st.inv_std = st.mean + channels
        st.k0 = st.inv_std + channels
        st.k1 = st.k0 + channels
        st.k2 = st.k1 + channels
        for c in range(channels):  # a backward before any forward reads defined values
            st.mean[c], st.inv_std[c] = 0, 1
        self.state = st
        self.forward_fn = _bn2d_forward
        self.backward_fn = _bn2d_backward

    def __dealloc__(self):
        free(self.buffer)
