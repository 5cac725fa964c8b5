"""2-D convolution (cross-correlation, as PyTorch's conv2d) as im2col + BLAS GEMM.

Per sample n and group g, with K = C/groups * kh * kw rows of the column matrix and
P = Ho * Wo output pixels:

    col_n  (K, P):     col[(c, i, j), (oh, ow)] = x[n, c, oh*sh - ph + i*dh, ow*sw - pw + j*dw]
                       (zero outside the image)
    y_n    (O/g, P) = act(W_g (O/g, K) @ col_n + b)

The samples are spread over the threads (prange) in tiles of nb consecutive samples;
each thread builds the columns of its tile side by side, col (K, nb * P), in a tile of
its own reused from call to call, and makes one single-threaded BLAS call per group
for them all: small images (P of 64 to 256) make GEMMs too narrow for the BLAS to run
at speed alone. A 1x1 convolution with stride 1 and no padding multiplies the input
itself (no im2col).

Backward, for g = d(loss)/dy and dz = g * act'(y) (dz = g without a fused activation):

    db += sum of dz over (n, oh, ow)        dW_g^T += col_n @ dz_n,g^T
    dx_n = col2im(W_g^T @ dz_n,g)

The samples are cut into CONV_BLOCKS blocks (fewer for a smaller batch), a number that
does not depend on the thread count, and each block into tiles of nb samples (nb a
function of the shape alone); each block sums its tiles' dW and db in sample order into
a partial of its own, and the partials are added in block order: the gradients are
bitwise the same for any number of threads.
"""

from cython cimport floating
from cython.parallel cimport prange, threadid
# one-thread parallel regions skip the OpenMP runtime (see the header)
cdef extern from "omp_serial.h":
    pass
from libc.limits cimport INT_MAX
from libc.stdlib cimport free, malloc
from libc.string cimport memcpy, memset

import numpy as np

from .blas cimport gemm
from .planop cimport KernelOp
from .simd cimport (
    FN_ACT_IDENTITY,
    FN_ACT_READS_INPUT,
    FN_GEMM_PARALLEL_MIN,
    fn_act_backward_d,
    fn_act_backward_f,
    fn_act_forward_d,
    fn_act_forward_f,
    fn_add_row_d,
    fn_add_row_f,
    fn_sum_d,
    fn_sum_f,
)

# Sample blocks of the weight-gradient reduction: enough to keep a few threads busy,
# few enough that their partials stay small. Never derived from the thread count.
# A GEMM takes the columns of several samples of a small image, up to about
# CONV_TILE_COLUMNS of them: OpenBLAS is faster on (K, 512) than on (K, 64) tiles.
cdef enum:
    CONV_BLOCKS = 16
    CONV_TILE_COLUMNS = 512


cdef struct ConvState:
    Py_ssize_t C, H, W, O, Ho, Wo, kh, kw, sh, sw, ph, pw, dh, dw, groups
    Py_ssize_t Cg, Og, K, P      # per group: in and out channels, col rows; pixels
    Py_ssize_t nb                # samples per GEMM tile: col (K, nb * P)
    bint direct                  # 1x1, stride 1, no padding: the input is col
    bint fused                   # an activation other than the identity follows
    int act
    double slope
    void *pre                    # (rows, O, P): the activation's input, kept when its
                                 # gradient reads it (else NULL: it reads y)
    const void *weight           # (O, K) row-major: per group Og rows
    const void *bias             # (O,) or NULL
    void *weight_grad            # (O, K) or NULL: frozen
    void *bias_grad              # (O,) or NULL
    void *partial                # CONV_BLOCKS partials of (K * O + O): dW^T, then db
    char *tiles                  # per-thread tiles: col (K * nb * P), then z (O * nb * P)
    size_t tile_bytes
    int n_tiles


cdef int _reserve_tiles(ConvState *s, int n_threads, size_t itemsize) noexcept nogil:
    """Make sure n_threads tiles exist: grown once, the first time more threads come."""
    if s.tile_bytes == 0 or s.n_tiles >= n_threads:
        return 0
    cdef char *tiles = <char *> malloc(n_threads * s.tile_bytes)
    if tiles == NULL:
        return -1
    free(s.tiles)
    s.tiles = tiles
    s.n_tiles = n_threads
    return 0


cdef inline void _valid_columns(const ConvState *s, Py_ssize_t j, Py_ssize_t *lo,
                                Py_ssize_t *hi) noexcept nogil:
    """[lo, hi): the output columns ow whose input column ow*sw - pw + j*dw is inside
    the image, for kernel column j."""
    cdef Py_ssize_t off = j * s.dw - s.pw
    lo[0] = 0 if off >= 0 else (-off + s.sw - 1) // s.sw
    hi[0] = 0 if s.W - 1 - off < 0 else (s.W - 1 - off) // s.sw + 1
    lo[0] = min(lo[0], s.Wo)
    hi[0] = max(lo[0], min(hi[0], s.Wo))


cdef extern from "conv_impl.h" nogil:
    void fn_im2col_plane_f(float *dst, const float *src, Py_ssize_t H, Py_ssize_t W,
                           Py_ssize_t Ho, Py_ssize_t Wo, Py_ssize_t top, Py_ssize_t left,
                           Py_ssize_t sh, Py_ssize_t sw, Py_ssize_t lo, Py_ssize_t hi)
    void fn_im2col_plane_d(double *dst, const double *src, Py_ssize_t H, Py_ssize_t W,
                           Py_ssize_t Ho, Py_ssize_t Wo, Py_ssize_t top, Py_ssize_t left,
                           Py_ssize_t sh, Py_ssize_t sw, Py_ssize_t lo, Py_ssize_t hi)
    void fn_col2im_plane_f(float *dx, float *col, Py_ssize_t H, Py_ssize_t W,
                           Py_ssize_t Ho, Py_ssize_t Wo, Py_ssize_t top, Py_ssize_t left,
                           Py_ssize_t sh, Py_ssize_t sw, Py_ssize_t lo, Py_ssize_t hi)
    void fn_col2im_plane_d(double *dx, double *col, Py_ssize_t H, Py_ssize_t W,
                           Py_ssize_t Ho, Py_ssize_t Wo, Py_ssize_t top, Py_ssize_t left,
                           Py_ssize_t sh, Py_ssize_t sw, Py_ssize_t lo, Py_ssize_t hi)
    void fn_conv_tile_rows_f(float *y, const float *z, Py_ssize_t ldz, const float *b,
                             Py_ssize_t O, Py_ssize_t P)
    void fn_conv_tile_rows_d(double *y, const double *z, Py_ssize_t ldz, const double *b,
                             Py_ssize_t O, Py_ssize_t P)


cdef void _im2col(const ConvState *s, const floating *x, floating *col,  # OUT: col
                  Py_ssize_t ld) noexcept nogil:
    """col (K, P), rows ld apart, from the Cg channels of one sample's group at
    x (Cg, H, W)."""
    cdef Py_ssize_t c, i, j, lo, hi, top, left
    cdef floating *dst = col
    for c in range(s.Cg):
        for i in range(s.kh):
            top = i * s.dh - s.ph
            for j in range(s.kw):
                _valid_columns(s, j, &lo, &hi)
                left = j * s.dw - s.pw
                if floating is float:
                    fn_im2col_plane_f(dst, x + c * s.H * s.W, s.H, s.W, s.Ho, s.Wo, top, left,
                                      s.sh, s.sw, lo, hi)
                else:
                    fn_im2col_plane_d(dst, x + c * s.H * s.W, s.H, s.W, s.Ho, s.Wo, top, left,
                                      s.sh, s.sw, lo, hi)
                dst += ld


cdef void _col2im(const ConvState *s, floating *col, Py_ssize_t ld,
                  floating *dx) noexcept nogil:  # OUT: dx (Cg, H, W), added to
    """dx += the scatter of col (K, P), rows ld apart, back onto the image: the adjoint
    of _im2col. col is scratch: its positions outside the image are zeroed."""
    cdef Py_ssize_t c, i, j, lo, hi, top, left
    cdef floating *src = col
    for c in range(s.Cg):
        for i in range(s.kh):
            top = i * s.dh - s.ph
            for j in range(s.kw):
                _valid_columns(s, j, &lo, &hi)
                left = j * s.dw - s.pw
                if floating is float:
                    fn_col2im_plane_f(dx + c * s.H * s.W, src, s.H, s.W, s.Ho, s.Wo, top, left,
                                      s.sh, s.sw, lo, hi)
                else:
                    fn_col2im_plane_d(dx + c * s.H * s.W, src, s.H, s.W, s.Ho, s.Wo, top, left,
                                      s.sh, s.sw, lo, hi)
                src += ld


cdef void _forward_tile(const ConvState *s, const floating *x, floating *y,  # OUT: y
                        floating *pre,  # OUT: conv + b, unless NULL
                        Py_ssize_t cnt, floating *col, floating *z) noexcept nogil:
    """y (cnt, O, P) = act(conv(x (cnt, C, H, W)) + b) for cnt <= nb consecutive
    samples, one GEMM per group over all their columns: col (K, cnt * P) and z
    (O, cnt * P) are the thread's tiles. pre: NULL, or where conv + b goes (the
    activation then reads it)."""
    cdef floating *act_out = y
    cdef const floating *w = <const floating *> s.weight
    cdef const floating *b = <const floating *> s.bias
    cdef const floating *src
    cdef floating beta = 0
    cdef Py_ssize_t d_in = s.C * s.H * s.W
    cdef Py_ssize_t d_out = s.O * s.P
    cdef Py_ssize_t Q = cnt * s.P
    cdef Py_ssize_t g, o, p, t
    cdef floating *yo
    if pre != NULL:  # the convolution goes to pre, the activation from there to y
        y = pre
    if cnt == 1:
        # one sample: the GEMM writes y itself; the bias goes in first and the GEMM
        # adds onto it (beta = 1)
        if b != NULL:
            for o in range(s.O):
                yo = y + o * s.P
                for p in range(s.P):
                    yo[p] = b[o]
            beta = 1
        for g in range(s.groups):
            if s.direct:
                src = x + g * s.Cg * s.H * s.W
            else:
                _im2col(s, x + g * s.Cg * s.H * s.W, col, s.P)
                src = col
            gemm(False, False, <int> s.Og, <int> s.P, <int> s.K, <floating> 1,
                 w + g * s.Og * s.K, <int> s.K, src, <int> s.P, beta, y + g * s.Og * s.P,
                 <int> s.P)
    else:
        for g in range(s.groups):
            for t in range(cnt):
                _im2col(s, x + t * d_in + g * s.Cg * s.H * s.W, col + t * s.P, Q)
            gemm(False, False, <int> s.Og, <int> Q, <int> s.K, <floating> 1,
                 w + g * s.Og * s.K, <int> s.K, col, <int> Q, <floating> 0, z + g * s.Og * Q,
                 <int> Q)
        for t in range(cnt):
            if floating is float:
                fn_conv_tile_rows_f(y + t * d_out, z + t * s.P, Q, b, s.O, s.P)
            else:
                fn_conv_tile_rows_d(y + t * d_out, z + t * s.P, Q, b, s.O, s.P)
    if s.fused:
        if floating is float:
            fn_act_forward_f(s.act, y, act_out, cnt * d_out, <float> s.slope)
        else:
            fn_act_forward_d(s.act, y, act_out, cnt * d_out, s.slope)


cdef int _forward(ConvState *s, const floating *x, floating *y, Py_ssize_t rows,
                  int n_threads) noexcept nogil:
    if _reserve_tiles(s, n_threads, sizeof(floating)) < 0:
        return -1
    cdef Py_ssize_t d_in = s.C * s.H * s.W
    cdef Py_ssize_t d_out = s.O * s.P
    cdef Py_ssize_t per_thread = s.tile_bytes // sizeof(floating)
    cdef Py_ssize_t col_size = 0 if s.direct else s.K * s.nb * s.P
    cdef Py_ssize_t tiles_n = (rows + s.nb - 1) // s.nb
    cdef floating *tiles = <floating *> s.tiles
    cdef floating *tile
    cdef floating *pre = <floating *> s.pre
    cdef bint threaded = (n_threads > 1 and tiles_n > 1
                          and <double> rows * d_out * s.K >= FN_GEMM_PARALLEL_MIN)
    cdef Py_ssize_t n, k
    for k in prange(tiles_n, schedule='static', num_threads=n_threads,
                    use_threads_if=threaded):
        tile = tiles + threadid() * per_thread
        n = k * s.nb
        _forward_tile(s, x + n * d_in, y + n * d_out, NULL if pre == NULL else pre + n * d_out,
                      min(s.nb, rows - n), tile, tile + col_size)
    return 0


cdef void _backward_tile(const ConvState *s, const floating *x, const floating *y,
                         const floating *g, floating *dx,  # OUT: dx, unless NULL
                         Py_ssize_t cnt, floating *col, floating *z,
                         floating *dwt, floating *db) noexcept nogil:  # OUT: added to
    """The share of the backward pass of cnt <= nb consecutive samples, one GEMM per
    group and product over all their columns (y: what act' reads, the output or the
    activation's input): dz (O, cnt * P) is g * act'(y) gathered
    into the tile z (g itself for one sample without activation); dwt (K, O), the
    transposed dW, and db (O,) are the block's partials (when the gradients are
    wanted); dx (cnt, C, H, W) is written unless NULL."""
    cdef const floating *w = <const floating *> s.weight
    cdef const floating *dz = g
    cdef const floating *src
    cdef const floating *dzg
    cdef Py_ssize_t d_in = s.C * s.H * s.W
    cdef Py_ssize_t d_out = s.O * s.P
    cdef Py_ssize_t Q = cnt * s.P
    cdef Py_ssize_t grp, o, t
    if s.fused or cnt > 1:
        for t in range(cnt):
            for o in range(s.O):
                if not s.fused:
                    memcpy(z + o * Q + t * s.P, g + t * d_out + o * s.P,
                           s.P * sizeof(floating))
                elif floating is float:
                    fn_act_backward_f(s.act, g + t * d_out + o * s.P, y + t * d_out + o * s.P,
                                      z + o * Q + t * s.P, s.P, <float> s.slope)
                else:
                    fn_act_backward_d(s.act, g + t * d_out + o * s.P, y + t * d_out + o * s.P,
                                      z + o * Q + t * s.P, s.P, s.slope)
        dz = z
    if s.bias_grad != NULL:
        for t in range(cnt):
            for o in range(s.O):
                if floating is float:
                    db[o] += fn_sum_f(dz + o * Q + t * s.P, s.P)
                else:
                    db[o] += fn_sum_d(dz + o * Q + t * s.P, s.P)
    if dx != NULL and not s.direct:
        memset(dx, 0, cnt * d_in * sizeof(floating))
    for grp in range(s.groups):
        dzg = dz + grp * s.Og * Q
        if s.weight_grad != NULL:
            if s.direct:
                src = x + grp * s.Cg * s.H * s.W
            else:
                for t in range(cnt):
                    _im2col(s, x + t * d_in + grp * s.Cg * s.H * s.W, col + t * s.P, Q)
                src = col
            # dW^T (K, Og) += col @ dz^T: OpenBLAS runs this product at about twice the
            # speed of dz @ col^T when Og is small
            gemm(False, True, <int> s.K, <int> s.Og, <int> Q, <floating> 1, src, <int> Q,
                 dzg, <int> Q, <floating> 1, dwt + grp * s.K * s.Og, <int> s.Og)
        if dx != NULL:
            if s.direct:
                gemm(True, False, <int> s.K, <int> s.P, <int> s.Og, <floating> 1,
                     w + grp * s.Og * s.K, <int> s.K, dzg, <int> s.P, <floating> 0,
                     dx + grp * s.Cg * s.H * s.W, <int> s.P)
            else:
                gemm(True, False, <int> s.K, <int> Q, <int> s.Og, <floating> 1,
                     w + grp * s.Og * s.K, <int> s.K, dzg, <int> Q, <floating> 0, col,
                     <int> Q)
                for t in range(cnt):
                    _col2im(s, col + t * s.P, Q, dx + t * d_in + grp * s.Cg * s.H * s.W)


cdef int _backward(ConvState *s, const floating *x, const floating *y, const floating *g,
                   floating *dx, Py_ssize_t rows, bint input_grad,
                   int n_threads) noexcept nogil:
    if _reserve_tiles(s, n_threads, sizeof(floating)) < 0:
        return -1
    cdef bint params = s.weight_grad != NULL or s.bias_grad != NULL
    if not params and not input_grad:
        return 0
    if s.pre != NULL:
        y = <const floating *> s.pre
    cdef Py_ssize_t d_in = s.C * s.H * s.W
    cdef Py_ssize_t d_out = s.O * s.P
    cdef Py_ssize_t n_w = s.O * s.K
    cdef Py_ssize_t stride = n_w + s.O   # one block's partial: dW^T, then db
    cdef Py_ssize_t per_thread = s.tile_bytes // sizeof(floating)
    cdef Py_ssize_t col_size = 0 if s.direct else s.K * s.nb * s.P
    cdef Py_ssize_t blocks = min(rows, CONV_BLOCKS)
    cdef floating *tiles = <floating *> s.tiles
    cdef floating *partial = <floating *> s.partial
    cdef floating *tile
    cdef floating *part
    cdef floating *wg
    cdef const floating *pt
    cdef bint threaded = (n_threads > 1 and blocks > 1
                          and <double> rows * d_out * s.K >= FN_GEMM_PARALLEL_MIN)
    cdef Py_ssize_t blk, n, n1, grp, o, k
    for blk in prange(blocks, schedule='static', num_threads=n_threads,
                      use_threads_if=threaded):
        tile = tiles + threadid() * per_thread
        part = partial + blk * stride
        if params:
            memset(part, 0, stride * sizeof(floating))
        n = blk * rows // blocks
        n1 = (blk + 1) * rows // blocks
        while n < n1:
            _backward_tile(s, x + n * d_in, y + n * d_out, g + n * d_out,
                           dx + n * d_in if input_grad else NULL, min(s.nb, n1 - n), tile,
                           tile + col_size, part, part + n_w)
            n = n + s.nb
    if params:
        # partials added in block order, then onto the gradients
        for blk in range(1, blocks):
            if floating is float:
                fn_add_row_f(partial, partial + blk * stride, stride)
            else:
                fn_add_row_d(partial, partial + blk * stride, stride)
        if s.weight_grad != NULL:
            for grp in range(s.groups):
                pt = partial + grp * s.K * s.Og
                for o in range(s.Og):
                    wg = <floating *> s.weight_grad + (grp * s.Og + o) * s.K
                    for k in range(s.K):
                        wg[k] += pt[k * s.Og + o]
        if s.bias_grad != NULL:
            if floating is float:
                fn_add_row_f(<float *> s.bias_grad, partial + n_w, s.O)
            else:
                fn_add_row_d(<double *> s.bias_grad, partial + n_w, s.O)
    return 0


cdef int _forward_f(void *s, const void *x, void *y, Py_ssize_t rows,
                    int n_threads) noexcept nogil:
    return _forward(<ConvState *> s, <const float *> x, <float *> y, rows, n_threads)


cdef int _forward_d(void *s, const void *x, void *y, Py_ssize_t rows,
                    int n_threads) noexcept nogil:
    return _forward(<ConvState *> s, <const double *> x, <double *> y, rows, n_threads)


cdef int _backward_f(void *s, const void *x, const void *y, const void *g, void *dx,
                     Py_ssize_t rows, bint input_grad, int n_threads) noexcept nogil:
    return _backward(<ConvState *> s, <const float *> x, <const float *> y,
                     <const float *> g, <float *> dx, rows, input_grad, n_threads)


cdef int _backward_d(void *s, const void *x, const void *y, const void *g, void *dx,
                     Py_ssize_t rows, bint input_grad, int n_threads) noexcept nogil:
    return _backward(<ConvState *> s, <const double *> x, <const double *> y,
                     <const double *> g, <double *> dx, rows, input_grad, n_threads)


def output_size(Py_ssize_t size, Py_ssize_t kernel, Py_ssize_t stride, Py_ssize_t padding,
                Py_ssize_t dilation):
    """(size + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1, as PyTorch;
    below 1 when the dilated kernel is larger than the padded input."""
    cdef Py_ssize_t span = size + 2 * padding - dilation * (kernel - 1) - 1
    return span // stride + 1 if span >= 0 else 0


cdef class ConvOp(KernelOp):
    """A 2-D convolution of `rows` samples of in_shape (C, H, W) by weight
    (O, C / groups, kh, kw), plus bias (O,) when not None, followed by the activation
    `act` (an FN_ACT_* code, with `slope`; None: none): y (rows, O, Ho, Wo).

    weight_grad and bias_grad (same shapes) receive the parameter gradients, added to;
    None skips that gradient (a frozen parameter). stride, padding and dilation are
    (h, w) pairs. The caller (Conv2d) has checked the arguments; this constructor only
    refuses what would read out of bounds.
    """

    cdef ConvState s

    def __cinit__(self, *args, **kwargs):
        self.s.tiles = NULL
        self.s.n_tiles = 0
        self.s.tile_bytes = 0

    def __dealloc__(self):
        free(self.s.tiles)

    def __init__(self, Py_ssize_t rows, tuple in_shape, weight, weight_grad, bias, bias_grad,
                 stride, padding, dilation, Py_ssize_t groups, act, slope):
        cdef ConvState *s = &self.s
        s.C, s.H, s.W = in_shape
        s.O, s.Cg, s.kh, s.kw = weight.shape
        s.sh, s.sw = stride
        s.ph, s.pw = padding
        s.dh, s.dw = dilation
        s.groups = groups
        if (min(s.C, s.H, s.W, s.O, s.Cg, s.kh, s.kw, s.sh, s.sw, s.dh, s.dw, groups) < 1
                or min(s.ph, s.pw) < 0 or s.Cg * groups != s.C or s.O % groups):
            raise ValueError(f"ConvOp: inconsistent convolution of {in_shape} by "
                             f"{weight.shape}, groups={groups}, stride={stride}, "
                             f"padding={padding}, dilation={dilation}")
        s.Ho = output_size(s.H, s.kh, s.sh, s.ph, s.dh)
        s.Wo = output_size(s.W, s.kw, s.sw, s.pw, s.dw)
        if s.Ho < 1 or s.Wo < 1:
            raise ValueError(f"ConvOp: kernel {weight.shape[2:]} (dilation {dilation}) is "
                             f"larger than the padded input {in_shape[1:]}")
        s.Og = s.O // groups
        s.K = s.Cg * s.kh * s.kw
        s.P = s.Ho * s.Wo
        if max(s.K, s.P, s.O) > INT_MAX:  # the dimensions of its BLAS calls
            raise ValueError(f"ConvOp: a convolution of {in_shape} by {weight.shape} sums "
                             f"{s.K} products per output over {s.P} positions per channel: "
                             f"over BLAS's limit of 2**31 - 1")
        s.direct = s.kh == 1 and s.kw == 1 and s.sh == 1 and s.sw == 1 and s.ph == 0 and s.pw == 0
        s.fused = act is not None and act != FN_ACT_IDENTITY
        s.act = FN_ACT_IDENTITY if act is None else act
        s.slope = slope
        self._shape(weight.dtype, rows, (s.C, s.H, s.W), (s.O, s.Ho, s.Wo),
                    s.fused and not FN_ACT_READS_INPUT(s.act))
        s.pre = NULL
        if s.fused and FN_ACT_READS_INPUT(s.act):
            s.pre = self.workspace(rows * s.O * s.P)
        s.weight = self.pointer(weight, s.O * s.K)
        s.weight_grad = self.pointer(weight_grad, s.O * s.K)
        s.bias = self.pointer(bias, s.O)
        s.bias_grad = self.pointer(bias_grad, s.O)
        s.partial = NULL
        if s.weight_grad != NULL or s.bias_grad != NULL:
            s.partial = self.workspace(min(rows, CONV_BLOCKS) * (s.O * s.K + s.O))
        # samples per tile: a shape's choice, never the thread count's (the dW sums
        # run over the tiles of a block); at most a backward block's samples
        s.nb = 1 if s.direct else max(1, min(CONV_TILE_COLUMNS // s.P,
                                             (rows + CONV_BLOCKS - 1) // CONV_BLOCKS))
        s.tile_bytes = ((0 if s.direct else s.K * s.nb * s.P)
                        + (s.O * s.nb * s.P if s.fused or s.nb > 1 else 0)) \
            * self.dtype.itemsize
        self.state = <void *> s
        if self.dtype == np.float32:
            self.forward_fn, self.backward_fn = _forward_f, _backward_f
        else:
            self.forward_fn, self.backward_fn = _forward_d, _backward_d
