"""Batched image augmentation: exact copies (crop, flip) and one bilinear warp.

Images are (N, C, H, W) C-contiguous, uint8 or float32. Each image's parameters come
from the caller (per-image arrays), the elastic noise from simd.h's counter-based
fn_hash32 keyed by (key, image index, pixel index): results are the same for any
thread count. The caller (fastnn/augment.py) checks shapes; nothing is checked here.
"""

from cython.parallel cimport prange, threadid
# one-thread parallel regions skip the OpenMP runtime (see the header)
cdef extern from "omp_serial.h":
    pass
from libc.math cimport M_PI, cos, sin, tan
from libc.stdlib cimport free, malloc
from libc.string cimport memcpy, memset

ctypedef fused pixel:
    unsigned char
    float

cdef extern from "augment.h" nogil:
    int FN_BORDER_CONSTANT, FN_BORDER_EDGE, FN_BORDER_REFLECT, FN_PAD_LO, FN_PAD_HI, FN_SMOOTH_ROWS
    Py_ssize_t FN_FIELD_ROWS(Py_ssize_t h)
    Py_ssize_t FN_FIELD_SCRATCH(Py_ssize_t h, Py_ssize_t w)
    Py_ssize_t fn_warp_chunk_rows(Py_ssize_t ow, Py_ssize_t oh)
    ctypedef struct fn_smooth:
        pass
    unsigned int fn_hash32(unsigned long long index, unsigned int key_lo, unsigned int key_hi)
    void fn_uniforms(double *out, Py_ssize_t slot0, Py_ssize_t slots, Py_ssize_t n,
                     unsigned int key_lo, unsigned int key_hi)
    void fn_elastic_field(float *f, float *t, const fn_smooth *c, Py_ssize_t h, Py_ssize_t w,
                          unsigned long long image, unsigned int key_lo, unsigned int key_hi,
                          float alpha)
    void fn_copy_image_u8(const unsigned char *src, unsigned char *dst, Py_ssize_t c,
                          Py_ssize_t h, Py_ssize_t w, Py_ssize_t oh, Py_ssize_t ow,
                          Py_ssize_t sy0, Py_ssize_t sx0, int dir, int mode,
                          unsigned char fill, int *cols)
    void fn_copy_image_f(const float *src, float *dst, Py_ssize_t c, Py_ssize_t h, Py_ssize_t w,
                         Py_ssize_t oh, Py_ssize_t ow, Py_ssize_t sy0, Py_ssize_t sx0, int dir,
                         int mode, float fill, int *cols)
    void fn_pad_plane_u8(const unsigned char *src, float *pad, Py_ssize_t h, Py_ssize_t w,
                         int mode, float fill)
    void fn_pad_plane_f(const float *src, float *pad, Py_ssize_t h, Py_ssize_t w, int mode,
                        float fill)
    void fn_warp_rows_u8(const float *pad, unsigned char *dst, Py_ssize_t c, Py_ssize_t h,
                         Py_ssize_t w, Py_ssize_t oh, Py_ssize_t ow, Py_ssize_t y0,
                         Py_ssize_t y1, const double *m, float k, const float *field,
                         int mode, int kx, int ky, const float *xs, const float *ys,
                         float *scratch)
    void fn_warp_rows_f(const float *pad, float *dst, Py_ssize_t c, Py_ssize_t h, Py_ssize_t w,
                        Py_ssize_t oh, Py_ssize_t ow, Py_ssize_t y0, Py_ssize_t y1,
                        const double *m, float k, const float *field, int mode, int kx,
                        int ky, const float *xs, const float *ys, float *scratch)

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
    cdef bint parallel = n_threads > 1 and n > 1 and n * c * oh * ow >= PARALLEL_MIN
    cdef int *cols
    if n == 0 or dst.shape[1] * oh * ow == 0:
        return
    cols = <int *> malloc((n_threads if parallel else 1) * ow * sizeof(int))
    if cols == NULL:
        raise MemoryError()
    for i in prange(n, nogil=True, schedule='static', num_threads=n_threads,
                    use_threads_if=parallel):
        if pixel is float:
            fn_copy_image_f(&src[i, 0, 0, 0], &dst[i, 0, 0, 0], c, h, w, oh, ow,
                            origin[i, 0], origin[i, 1], <int> origin[i, 2], mode, f,
                            cols + threadid() * ow)
        else:
            fn_copy_image_u8(&src[i, 0, 0, 0], &dst[i, 0, 0, 0], c, h, w, oh, ow,
                             origin[i, 0], origin[i, 1], <int> origin[i, 2], mode, f,
                             cols + threadid() * ow)
    free(cols)


def uniforms(double[:, ::1] out, Py_ssize_t slot0, unsigned long long key):
    """out[s, i] = (hash(key, ((slot0 + s) << 32) + i) >> 8) * 2^-24: uniforms in [0, 1)."""
    fn_uniforms(&out[0, 0], slot0, out.shape[0], out.shape[1], <unsigned int> (key & 0xffffffffu),
                <unsigned int> (key >> 32))


cdef inline Py_ssize_t _field_floats(Py_ssize_t h, Py_ssize_t w) noexcept nogil:
    """Floats of one elastic field (rows of dx and dy side by side, with the smoothing's
    scratch rows) plus the scratch of the noise."""
    return FN_FIELD_ROWS(h) * 2 * w + FN_FIELD_SCRATCH(h, w)


def elastic_field(float[:, :, ::1] out, const float[::1] smooth, unsigned long long image,
                  unsigned long long key, float alpha):
    """The elastic field of image `image` as the warp computes it into out (2, H, W):
    dx, dy; smooth the 23 coefficients of ElasticDistortion's Gaussian."""
    cdef Py_ssize_t h = out.shape[1], w = out.shape[2], p, y
    cdef float *f = <float *> malloc(_field_floats(h, w) * sizeof(float))
    if f == NULL:
        raise MemoryError()
    fn_elastic_field(f, f + FN_FIELD_ROWS(h) * 2 * w, <const fn_smooth *> &smooth[0], h, w,
                     image, <unsigned int> (key & 0xffffffffu), <unsigned int> (key >> 32),
                     alpha)
    for p in range(2):
        for y in range(h):
            memcpy(&out[p, y, 0], f + (FN_SMOOTH_ROWS + y) * 2 * w + p * w, w * sizeof(float))
    free(f)


def random_affine(double[:, :, ::1] m, const unsigned char[::1] apply, const double[::1] u_deg,
                  const double[::1] u_tx, const double[::1] u_ty, const double[::1] u_scale,
                  const double[::1] u_shx, const double[::1] u_shy, double deg_lo,
                  double deg_hi, double tx_max, double ty_max, double s_lo, double s_hi,
                  double shx_lo, double shx_hi, double shy_lo, double shy_hi, double cx,
                  double cy):
    """m[i] (3x3) = the output -> source map of RandomAffine (fastnn/augment.py) from its
    per-image uniforms in [0, 1): u_deg the angle; u_tx, u_ty the shift (None: no
    translation); u_scale (None: none); u_shx, u_shy the shears (None: none); apply[i] 0
    gives the identity. (cx, cy): the image center."""
    cdef Py_ssize_t n = m.shape[0], i
    cdef double theta, c, s, ox, oy, k, tx, ty, d, l00, l01, l10, l11, t00, t01
    cdef double rad = M_PI / 180.0
    cdef bint shift = u_tx is not None, scale = u_scale is not None, shear = u_shx is not None
    for i in range(n):
        if not apply[i]:
            m[i, 0, 0], m[i, 0, 1], m[i, 0, 2] = 1.0, 0.0, 0.0
            m[i, 1, 0], m[i, 1, 1], m[i, 1, 2] = 0.0, 1.0, 0.0
            m[i, 2, 0], m[i, 2, 1], m[i, 2, 2] = 0.0, 0.0, 1.0
            continue
        theta = (deg_lo + (deg_hi - deg_lo) * u_deg[i]) * rad
        c = cos(theta)
        s = sin(theta)
        ox = cx
        oy = cy
        if shift:
            ox = ox + (-tx_max + 2.0 * tx_max * u_tx[i])
            oy = oy + (-ty_max + 2.0 * ty_max * u_ty[i])
        l00, l01, l10, l11 = c, -s, s, c
        if scale:
            k = 1.0 / (s_lo + (s_hi - s_lo) * u_scale[i])
            l00, l01, l10, l11 = l00 * k, l01 * k, l10 * k, l11 * k
        if shear:
            # [[1, -tx], [-ty, 1 + tx ty]] (the inverse shear) @ the linear part
            tx = tan((shx_lo + (shx_hi - shx_lo) * u_shx[i]) * rad)
            ty = tan((shy_lo + (shy_hi - shy_lo) * u_shy[i]) * rad)
            d = tx * ty + 1.0
            t00 = l00 - tx * l10
            t01 = l01 - tx * l11
            l10 = d * l10 - ty * l00
            l11 = d * l11 - ty * l01
            l00, l01 = t00, t01
        m[i, 0, 0], m[i, 0, 1], m[i, 0, 2] = l00, l01, cx - (l00 * ox + l01 * oy)
        m[i, 1, 0], m[i, 1, 1], m[i, 1, 2] = l10, l11, cy - (l10 * ox + l11 * oy)
        m[i, 2, 0], m[i, 2, 1], m[i, 2, 2] = 0.0, 0.0, 1.0


def warp(const pixel[:, :, :, ::1] src, pixel[:, :, :, ::1] dst, const double[:, :, ::1] mats,
         const float[::1] lens_k, const float[::1] alpha, const float[::1] smooth,
         unsigned long long key, const int[:, ::1] samples, int mode, double fill,
         int n_threads):
    """One bilinear warp of every image (see fn_warp_rows in augment_impl.h): mats is
    (N, 2, 3) or (N, 3, 3), the output -> source affine map per image (its first two
    rows); lens_k (N,) the lens coefficients; alpha (N,) the elastic scale per image (0:
    no field), the field's noise keyed by `key` and smoothed by the Gaussian `smooth`
    (23 floats, see fn_smooth in augment.h; read only where some alpha is not 0);
    samples (N, 2): antialiasing sub-samples per pixel along x and y (1, 1: none), or
    (0, 2) for none at all."""
    cdef Py_ssize_t n = src.shape[0], c = src.shape[1], h = src.shape[2], w = src.shape[3]
    cdef Py_ssize_t oh = dst.shape[2], ow = dst.shape[3]
    cdef Py_ssize_t blocks, rows, t, i, j, y0, y1, per_thread, nt, chunk
    cdef Py_ssize_t pad_floats = c * (h + FN_PAD_LO + FN_PAD_HI) * (w + FN_PAD_LO + FN_PAD_HI)
    cdef Py_ssize_t field_floats = FN_FIELD_ROWS(oh) * 2 * ow
    cdef unsigned int lo = <unsigned int> (key & 0xffffffffu), hi = <unsigned int> (key >> 32)
    cdef float *scratch
    cdef float *mine
    cdef float *grid
    cdef float *fields = NULL
    cdef float *fp
    cdef const fn_smooth *coef = NULL
    cdef bint elastic = False, own_field, parallel, antialias = samples.shape[0] == n
    cdef int kx = 1, ky = 1
    cdef float f = <float> fill
    if n == 0 or c * oh * ow == 0:
        return
    if smooth.shape[0] >= 23:
        coef = <const fn_smooth *> &smooth[0]
        for i in range(n):
            if alpha[i] != 0:
                elastic = True
                break
    # With fewer images than threads, images are split into blocks of rows; every
    # output pixel is a pure function of its position, so the split changes nothing.
    # Then the fields are made first, one per image, and shared by the blocks.
    blocks = 1
    if n < 2 * n_threads:
        blocks = min(oh, (2 * n_threads + n - 1) // n)
    rows = (oh + blocks - 1) // blocks
    blocks = (oh + rows - 1) // rows
    own_field = elastic and blocks == 1
    parallel = n_threads > 1 and n * c * oh * ow >= PARALLEL_MIN
    nt = n_threads if parallel else 1
    chunk = fn_warp_chunk_rows(ow, oh) * ow
    # per thread: the padded source, the coordinates of a chunk, and (when each image
    # makes its own field) the field with the filter's scratch
    per_thread = pad_floats + (3 + c) * chunk
    if own_field:
        per_thread += _field_floats(oh, ow)
    scratch = <float *> malloc((nt * per_thread + 2 * chunk) * sizeof(float))
    if scratch == NULL:
        raise MemoryError()
    grid = scratch + nt * per_thread  # x and y - y0 of a chunk's pixels
    for y0 in range(chunk // ow):
        for j in range(ow):
            grid[y0 * ow + j] = j
            grid[chunk + y0 * ow + j] = y0
    if elastic and not own_field:
        fields = <float *> malloc((n * field_floats + nt * (_field_floats(oh, ow) - field_floats))
                                  * sizeof(float))
        if fields == NULL:
            free(scratch)
            raise MemoryError()
        for i in prange(n, nogil=True, schedule='static', num_threads=nt,
                        use_threads_if=parallel and n > 1):
            if alpha[i] != 0:
                fn_elastic_field(fields + i * field_floats, fields + n * field_floats
                                 + threadid() * (_field_floats(oh, ow) - field_floats),
                                 coef, oh, ow, i, lo, hi, alpha[i])
    for t in prange(n * blocks, nogil=True, schedule='static', num_threads=nt,
                    use_threads_if=parallel):
        i = t // blocks
        y0 = (t % blocks) * rows
        y1 = min(oh, y0 + rows)
        mine = scratch + threadid() * per_thread
        fp = NULL
        if elastic and alpha[i] != 0:
            if own_field:
                fp = mine + pad_floats + (3 + c) * chunk
                fn_elastic_field(fp, fp + field_floats, coef, oh, ow, i, lo, hi, alpha[i])
            else:
                fp = fields + i * field_floats
        kx = 1
        ky = 1
        if antialias:
            kx = samples[i, 0]
            ky = samples[i, 1]
        _pad_and_warp(&src[i, 0, 0, 0], &dst[i, 0, 0, 0], mine, c, h, w, oh, ow, y0, y1,
                      &mats[i, 0, 0], lens_k[i], fp, mode, f, pad_floats, kx, ky, grid,
                      grid + chunk)
    free(scratch)
    free(fields)


cdef inline void _pad_and_warp(const pixel *src, pixel *dst, float *mine, Py_ssize_t c,
                               Py_ssize_t h, Py_ssize_t w, Py_ssize_t oh, Py_ssize_t ow,
                               Py_ssize_t y0, Py_ssize_t y1, const double *m, float k,
                               const float *field, int mode, float fill,
                               Py_ssize_t pad_floats, int kx, int ky, const float *xs,
                               const float *ys) noexcept nogil:
    cdef Py_ssize_t ch, plane = h * w, pplane = pad_floats // c
    for ch in range(c):
        if pixel is float:
            fn_pad_plane_f(src + ch * plane, mine + ch * pplane, h, w, mode, fill)
        else:
            fn_pad_plane_u8(src + ch * plane, mine + ch * pplane, h, w, mode, fill)
    if pixel is float:
        fn_warp_rows_f(mine, dst, c, h, w, oh, ow, y0, y1, m, k, field, mode, kx, ky, xs, ys,
                       mine + pad_floats)
    else:
        fn_warp_rows_u8(mine, dst, c, h, w, oh, ow, y0, y1, m, k, field, mode, kx, ky, xs, ys,
                        mine + pad_floats)
