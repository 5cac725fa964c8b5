/* Included twice by augment.h, once per pixel type: FN_PIX is the type, FN_PNAME(x)
 * appends its suffix. Do not include directly. */
#define FN_PNAME(name) FN_CAT(name, FN_PSUFFIX)
#define FN_STORE FN_CAT(fn_store, FN_PSUFFIX)

/* d[x] = r[-x] for x < n: a reversed row (vectorized by byte or lane shuffles). */
FN_INLINE void FN_PNAME(fn_reverse_copy)(const FN_PIX *r, FN_PIX *restrict d, ptrdiff_t n)
{
    FN_SIMD for (ptrdiff_t x = 0; x < n; x++) d[x] = r[-x];
}

/* d[x] = s[cols[x]], or fill where cols[x] < 0, for x < n: a run of border columns. */
FN_INLINE void FN_PNAME(fn_copy_run)(const FN_PIX *s, FN_PIX *d, const int32_t *cols,
                                      ptrdiff_t n, int kind, FN_PIX fill)
{
    if (n == 0) return;
    switch (kind) {
    case FN_RUN_FORWARD:
        memcpy(d, s + cols[0], (size_t)n * sizeof(FN_PIX));
        break;
    case FN_RUN_REVERSED:
        FN_PNAME(fn_reverse_copy)(s + cols[0], d, n);
        break;
    case FN_RUN_REPEAT:
    case FN_RUN_FILL: {
        FN_PIX v = kind == FN_RUN_FILL ? fill : s[cols[0]];
        for (ptrdiff_t x = 0; x < n; x++) d[x] = v;
        break;
    }
    default:
        for (ptrdiff_t x = 0; x < n; x++) {
            int32_t i = cols[x];
            FN_PIX v = s[i < 0 ? 0 : i];
            d[x] = i < 0 ? fill : v;
        }
    }
}

/* Exact copy of one image of c planes (h, w) into c planes (oh, ow):
 * dst[y, x] = src[sy0 + y, sx0 + dir * x] (dir = +1 or -1), positions outside the
 * source resolved by the border mode. A crop, a padded crop, a flip, or both. cols:
 * scratch of ow ints (the source columns of the border, the same for every row). */
FN_LOOP_FN void FN_PNAME(fn_copy_image)(const FN_PIX *src, FN_PIX *dst, ptrdiff_t c,
                                        ptrdiff_t h, ptrdiff_t w, ptrdiff_t oh, ptrdiff_t ow,
                                        ptrdiff_t sy0, ptrdiff_t sx0, int dir, int mode,
                                        FN_PIX fill, int32_t *cols)
{
    /* the x range whose source column is inside the image: a plain (or reversed) copy */
    ptrdiff_t xa, xb;
    if (dir > 0) {
        xa = -sx0;
        xb = w - sx0;
    } else {
        xa = sx0 - w + 1;
        xb = sx0 + 1;
    }
    xa = xa < 0 ? 0 : (xa > ow ? ow : xa);
    xb = xb < xa ? xa : (xb > ow ? ow : xb);
    for (ptrdiff_t x = 0; x < xa; x++) cols[x] = (int32_t)fn_border_index(sx0 + dir * x, w, mode);
    for (ptrdiff_t x = xb; x < ow; x++) cols[x] = (int32_t)fn_border_index(sx0 + dir * x, w, mode);
    const int left = fn_run_kind(cols, xa), right = fn_run_kind(cols + xb, ow - xb);
    for (ptrdiff_t ch = 0; ch < c; ch++) {
        const FN_PIX *plane = src + ch * h * w;
        for (ptrdiff_t y = 0; y < oh; y++) {
            FN_PIX *d = dst + (ch * oh + y) * ow;
            ptrdiff_t sy = fn_border_index(sy0 + y, h, mode);
            if (sy < 0) {
                for (ptrdiff_t x = 0; x < ow; x++) d[x] = fill;
                continue;
            }
            const FN_PIX *s = plane + sy * w;
            FN_PNAME(fn_copy_run)(s, d, cols, xa, left, fill);
            if (dir > 0) {
                if (xb > xa) memcpy(d + xa, s + sx0 + xa, (size_t)(xb - xa) * sizeof(FN_PIX));
            } else if (xb > xa) {
                FN_PNAME(fn_reverse_copy)(s + sx0 - xa, d + xa, xb - xa);
            }
            FN_PNAME(fn_copy_run)(s, d + xb, cols + xb, ow - xb, right, fill);
        }
    }
}

/* The float copy of one source plane (h, w) that the warp reads: (h + 3) rows of
 * pw = w + 3 floats, pixel (x, y) at (y + 1) * pw + x + 1, the border mode's values
 * (or fill) in the padding. */
static inline void FN_PNAME(fn_pad_plane)(const FN_PIX *src, float *pad, ptrdiff_t h,
                                          ptrdiff_t w, int mode, float fill)
{
    const ptrdiff_t pw = w + FN_PAD_LO + FN_PAD_HI;
    for (ptrdiff_t r = -FN_PAD_LO; r < h + FN_PAD_HI; r++) {
        float *d = pad + (r + FN_PAD_LO) * pw + FN_PAD_LO;
        ptrdiff_t sr = fn_border_index(r, h, mode);
        if (sr < 0) {
            for (ptrdiff_t x = -FN_PAD_LO; x < w + FN_PAD_HI; x++) d[x] = fill;
            continue;
        }
        const FN_PIX *s = src + sr * w;
        FN_SIMD for (ptrdiff_t x = 0; x < w; x++) d[x] = (float)s[x];
        for (ptrdiff_t x = -FN_PAD_LO; x < 0; x++) {
            ptrdiff_t sx = fn_border_index(x, w, mode);
            d[x] = sx < 0 ? fill : (float)s[sx];
        }
        for (ptrdiff_t x = w; x < w + FN_PAD_HI; x++) {
            ptrdiff_t sx = fn_border_index(x, w, mode);
            d[x] = sx < 0 ? fill : (float)s[sx];
        }
    }
}

/* One output row of one channel: bilinear reads of the padded plane at the offsets and
 * weights from fn_warp_coords. A weight of 0 keeps the other tap exactly. */
FN_LOOP_FN void FN_PNAME(fn_warp_gather)(const float *restrict pad, ptrdiff_t pw,
                                         const int32_t *restrict off, const float *restrict wx,
                                         const float *restrict wy, FN_PIX *restrict dst,
                                         ptrdiff_t ow)
{
    const int32_t ipw = (int32_t)pw;
    FN_SIMD for (ptrdiff_t x = 0; x < ow; x++)
        dst[x] = FN_STORE(fn_bilinear(pad, ipw, off[x], wx[x], wy[x]));
}

FN_LOOP_FN void FN_PNAME(fn_warp_store)(const float *restrict acc, FN_PIX *restrict dst,
                                        ptrdiff_t n)
{
    FN_SIMD for (ptrdiff_t j = 0; j < n; j++) dst[j] = FN_STORE(acc[j]);
}

/* Rows [y0, y1) of one warped image of c channels from its padded float copy `pad`
 * (c planes of (h + 3) * (w + 3)), in chunks of whole rows of about FN_WARP_CHUNK
 * pixels: coordinates once per chunk, then a gather per channel. field: the elastic
 * field (see fn_elastic_field) or NULL; k: the lens coefficient at the output's
 * corners (0: none). kx x ky > 1: antialiasing, each output pixel the mean of kx x ky
 * bilinear reads at the centers of a kx x ky grid over the pixel. xs, ys: x and
 * y - y0 of the chunk's pixels; scratch: 3 + c floats a chunk pixel. */
static inline void FN_PNAME(fn_warp_rows)(const float *pad, FN_PIX *dst, ptrdiff_t c,
                                          ptrdiff_t h, ptrdiff_t w, ptrdiff_t oh, ptrdiff_t ow,
                                          ptrdiff_t y0, ptrdiff_t y1, const double *m, float k,
                                          const float *field, int mode, int kx, int ky,
                                          const float *xs, const float *ys, float *scratch)
{
    const double cx = 0.5 * (double)(ow - 1), cy = 0.5 * (double)(oh - 1);
    const double r2 = cx * cx + cy * cy;
    const double kn = (double)k / (r2 > 0 ? r2 : 1.0);
    const ptrdiff_t pw = w + FN_PAD_LO + FN_PAD_HI, pplane = (h + FN_PAD_LO + FN_PAD_HI) * pw;
    const ptrdiff_t rows = fn_warp_chunk_rows(ow, oh), chunk = rows * ow;
    int32_t *off = (int32_t *)scratch;
    float *wx = scratch + chunk, *wy = wx + chunk, *acc = wy + chunk;
    /* the field's rows: dx of ow pixels, then their dy */
    const ptrdiff_t fs = 2 * ow;
    const float *fdx = field ? field + FN_SMOOTH_ROWS * fs : NULL;
    const float *fdy = field ? fdx + ow : NULL;
    for (ptrdiff_t y = y0; y < y1; y += rows) {
        ptrdiff_t n = (y + rows < y1 ? rows : y1 - y) * ow;
        const float *fx = fdx ? fdx + y * fs : NULL, *fy = fdy ? fdy + y * fs : NULL;
        if (kx * ky == 1) {
            if (fx)
                fn_warp_coords_field(n / ow, ow, xs, 0.0, (double)y, m, kn, cx, cy, fx, fy, fs,
                                     h, w, pw, mode, off, wx, wy);
            else
                fn_warp_coords(n, xs, ys, 0.0, (double)y, m, kn, cx, cy, h, w, pw, mode, off,
                               wx, wy);
            for (ptrdiff_t ch = 0; ch < c; ch++)
                FN_PNAME(fn_warp_gather)(pad + ch * pplane, pw, off, wx, wy,
                                         dst + (ch * oh + y) * ow, n);
            continue;
        }
        memset(acc, 0, (size_t)(c * n) * sizeof(float));
        for (int sy = 0; sy < ky; sy++)
            for (int sx = 0; sx < kx; sx++) {
                double ax = (sx + 0.5) / kx - 0.5, ay = (double)y + (sy + 0.5) / ky - 0.5;
                if (fx)
                    fn_warp_coords_field(n / ow, ow, xs, ax, ay, m, kn, cx, cy, fx, fy, fs, h,
                                         w, pw, mode, off, wx, wy);
                else
                    fn_warp_coords(n, xs, ys, ax, ay, m, kn, cx, cy, h, w, pw, mode, off, wx,
                                   wy);
                for (ptrdiff_t ch = 0; ch < c; ch++)
                    fn_warp_gather_acc(pad + ch * pplane, pw, off, wx, wy, acc + ch * n, n,
                                       1.0f / (float)(kx * ky));
            }
        for (ptrdiff_t ch = 0; ch < c; ch++)
            FN_PNAME(fn_warp_store)(acc + ch * n, dst + (ch * oh + y) * ow, n);
    }
}

#undef FN_STORE
#undef FN_PNAME
