"""Batched image augmentation: exact copies (crop, flip) and one bilinear warp.

Images are (N, C, H, W) C-contiguous, uint8 or float32. Each image's parameters come
from the caller (per-image arrays), the elastic noise from simd.h's counter-based
fn_hash32 keyed by (key, image index, pixel index): results are the same for any
thread count. The caller (fastnn/augment.py) checks shapes; nothing is checked here.
"""

from cython.parallel cimport prange, threadid

ctypedef fused pixel:
    unsigned char
    float

cdef extern from "augment.h" nogil:
    int FN_BORDER_CONSTANT, FN_BORDER_EDGE, FN_BORDER_REFLECT
    unsigned int fn_hash32(unsigned long long index, unsigned int key_lo, unsigned int key_hi)
    void fn_elastic_field(float *field, float *scratch, const float *g, Py_ssize_t radius,
                          Py_ssize_t h, Py_ssize_t w, unsigned long long image,
                          unsigned int key_lo, unsigned int key_hi, float alpha)
    void fn_copy_image_u8(const unsigned char *src, unsigned char *dst, Py_ssize_t c,
                          Py_ssize_t h, Py_ssize_t w, Py_ssize_t oh, Py_ssize_t ow,
                          Py_ssize_t sy0, Py_ssize_t sx0, int dir, int mode,
                          unsigned char fill)
    void fn_copy_image_f(const float *src, float *dst, Py_ssize_t c, Py_ssize_t h, Py_ssize_t w,
                         Py_ssize_t oh, Py_ssize_t ow, Py_ssize_t sy0, Py_ssize_t sx0, int dir,
                         int mode, float fill)
    void fn_warp_rows_u8(const unsigned char *src, unsigned char *dst, Py_ssize_t c,
                         Py_ssize_t h, Py_ssize_t w, Py_ssize_t oh, Py_ssize_t ow,
                         Py_ssize_t y0, Py_ssize_t y1, const double *m, float k,
                         const float *field, int mode, float fill)
    void fn_warp_rows_f(const float *src, float *dst, Py_ssize_t c, Py_ssize_t h, Py_ssize_t w,
                        Py_ssize_t oh, Py_ssize_t ow, Py_ssize_t y0, Py_ssize_t y1,
                        const double *m, float k, const float *field, int mode, float fill)

BORDER_MODES = {"constant": FN_BORDER_CONSTANT, "edge": FN_BORDER_EDGE,
                "reflect": FN_BORDER_REFLECT}

# Below this many output values a call runs on the calling thread.
cdef Py_ssize_t PARALLEL_MIN = 32768


def hash32(unsigned long long[::1] index, unsigned long long key, unsigned int[::1] out):
    """out[i] = fn_hash32(index[i], key): the C generator, for checking its NumPy twin."""
    cdef Py_ssize_t i
    cdef unsigned int lo = <unsigned int> (key & 0xffffffffu), hi = <unsigned int> (key >> 32)
    for i in range(index.shape[0]):
        out[i] = fn_hash32(index[i], lo, hi)


def copy(const pixel[:, :, :, ::1] src, pixel[:, :, :, ::1] dst, const long long[:, ::1] origin,
         int mode, double fill, int n_threads):
    """dst[n, :, y, x] = src[n, :, origin[n,0] + y, origin[n,1] + origin[n,2] * x], outside
    the source by the border mode (`fill` in constant mode)."""
    cdef Py_ssize_t n = src.shape[0], c = src.shape[1], h = src.shape[2], w = src.shape[3]
    cdef Py_ssize_t oh = dst.shape[2], ow = dst.shape[3], i
    cdef pixel f = <pixel> fill
    if n == 0 or dst.shape[1] * oh * ow == 0:
        return
    for i in prange(n, nogil=True, schedule='static', num_threads=n_threads,
                    use_threads_if=n_threads > 1 and n > 1 and n * c * oh * ow >= PARALLEL_MIN):
        if pixel is float:
            fn_copy_image_f(&src[i, 0, 0, 0], &dst[i, 0, 0, 0], c, h, w, oh, ow,
                            origin[i, 0], origin[i, 1], <int> origin[i, 2], mode, f)
        else:
            fn_copy_image_u8(&src[i, 0, 0, 0], &dst[i, 0, 0, 0], c, h, w, oh, ow,
                             origin[i, 0], origin[i, 1], <int> origin[i, 2], mode, f)


def elastic_fields(float[:, :, :, ::1] field, const float[::1] alpha, const float[::1] gauss,
                   float[:, ::1] scratch, unsigned long long key, int n_threads):
    """field[n] = alpha[n] * blur(noise(key, n)) for every n with alpha[n] != 0.

    field is (N, 2, H, W) (x then y displacement, in pixels); gauss the normalized
    kernel of 2r + 1 taps; scratch (n_threads, 2*H*W + W + 2r)."""
    cdef Py_ssize_t n = field.shape[0], h = field.shape[2], w = field.shape[3], i
    cdef Py_ssize_t radius = (gauss.shape[0] - 1) // 2
    cdef unsigned int lo = <unsigned int> (key & 0xffffffffu), hi = <unsigned int> (key >> 32)
    if n == 0 or h * w == 0:
        return
    for i in prange(n, nogil=True, schedule='static', num_threads=n_threads,
                    use_threads_if=n_threads > 1 and n > 1):
        if alpha[i] != 0:
            fn_elastic_field(&field[i, 0, 0, 0], &scratch[threadid(), 0], &gauss[0], radius,
                             h, w, i, lo, hi, alpha[i])


def warp(const pixel[:, :, :, ::1] src, pixel[:, :, :, ::1] dst, const double[:, ::1] mats,
         const float[::1] lens_k, const float[:, :, :, ::1] field, const float[::1] alpha,
         int mode, double fill, int n_threads):
    """One bilinear warp of every image (see fn_warp_rows in augment_impl.h): mats is
    (N, 6), the output -> source affine map per image; lens_k (N,); field (N, 2, OH, OW)
    read for the images whose alpha is not 0 (any shape when none is)."""
    cdef Py_ssize_t n = src.shape[0], c = src.shape[1], h = src.shape[2], w = src.shape[3]
    cdef Py_ssize_t oh = dst.shape[2], ow = dst.shape[3]
    cdef Py_ssize_t blocks, rows, t, i, y0, y1
    cdef const float *fp
    cdef float f = <float> fill
    if n == 0 or c * oh * ow == 0:
        return
    # With fewer images than threads, images are split into blocks of rows; every
    # output pixel is a pure function of its position, so the split changes nothing.
    blocks = 1
    if n < 2 * n_threads:
        blocks = min(oh, (2 * n_threads + n - 1) // n)
    rows = (oh + blocks - 1) // blocks
    blocks = (oh + rows - 1) // rows
    for t in prange(n * blocks, nogil=True, schedule='static', num_threads=n_threads,
                    use_threads_if=n_threads > 1 and n * c * oh * ow >= PARALLEL_MIN):
        i = t // blocks
        y0 = (t % blocks) * rows
        y1 = min(oh, y0 + rows)
        fp = NULL
        if alpha[i] != 0:
            fp = &field[i, 0, 0, 0]
        if pixel is float:
            fn_warp_rows_f(&src[i, 0, 0, 0], &dst[i, 0, 0, 0], c, h, w, oh, ow, y0, y1,
                           &mats[i, 0], lens_k[i], fp, mode, f)
        else:
            fn_warp_rows_u8(&src[i, 0, 0, 0], &dst[i, 0, 0, 0], c, h, w, oh, ow, y0, y1,
                            &mats[i, 0], lens_k[i], fp, mode, f)
