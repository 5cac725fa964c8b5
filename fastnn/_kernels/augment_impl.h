/* Included twice by augment.h, once per pixel type: FN_PIX is the type, FN_PNAME(x)
 * appends its suffix. Do not include directly. */
#define FN_PNAME(name) FN_CAT(name, FN_PSUFFIX)
#define FN_STORE FN_CAT(fn_store, FN_PSUFFIX)

/* Exact copy of one image of c planes (h, w) into c planes (oh, ow):
 * dst[y, x] = src[sy0 + y, sx0 + dir * x] (dir = +1 or -1), positions outside the
 * source resolved by the border mode. A crop, a padded crop, a flip, or both. */
static inline void FN_PNAME(fn_copy_image)(const FN_PIX *src, FN_PIX *dst, ptrdiff_t c, ptrdiff_t h,
                                           ptrdiff_t w, ptrdiff_t oh, ptrdiff_t ow, ptrdiff_t sy0,
                                           ptrdiff_t sx0, int dir, int mode, FN_PIX fill)
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
            for (ptrdiff_t x = 0; x < xa; x++) {
                ptrdiff_t sx = fn_border_index(sx0 + dir * x, w, mode);
                d[x] = sx < 0 ? fill : s[sx];
            }
            if (dir > 0) {
                if (xb > xa) memcpy(d + xa, s + sx0 + xa, (size_t)(xb - xa) * sizeof(FN_PIX));
            } else {
                const FN_PIX *r = s + sx0;
                FN_SIMD for (ptrdiff_t x = xa; x < xb; x++) d[x] = r[-x];
            }
            for (ptrdiff_t x = xb; x < ow; x++) {
                ptrdiff_t sx = fn_border_index(sx0 + dir * x, w, mode);
                d[x] = sx < 0 ? fill : s[sx];
            }
        }
    }
}

/* Rows [y0, y1) of one warped image. For the output pixel (x, y):
 *   p = (x, y) + field(x, y)                      elastic (field may be NULL)
 *   p = c + (p - c) * (1 + k * |p - c|^2 / r2)    radial lens (k may be 0)
 *   s = m[0:3] . (p, 1), m[3:6] . (p, 1)          affine, output -> source
 * then every channel is read at s bilinearly, outside the source by the border mode.
 * c is the output's center and r2 its squared half-diagonal (so corners have r = 1). */
static inline void FN_PNAME(fn_warp_rows)(const FN_PIX *src, FN_PIX *dst, ptrdiff_t c, ptrdiff_t h,
                                          ptrdiff_t w, ptrdiff_t oh, ptrdiff_t ow, ptrdiff_t y0,
                                          ptrdiff_t y1, const double *m, float k,
                                          const float *field, int mode, float fill)
{
    const double cx = 0.5 * (double)(ow - 1), cy = 0.5 * (double)(oh - 1);
    double r2 = cx * cx + cy * cy;
    const double kn = (double)k / (r2 > 0 ? r2 : 1.0);
    const ptrdiff_t plane = h * w, oplane = oh * ow;
    /* offsets that make every in-range coordinate positive (see the range test) */
    const ptrdiff_t ibx = 2 * w + 8, iby = 2 * h + 8;
    const double bx = (double)ibx, by = (double)iby;
    for (ptrdiff_t y = y0; y < y1; y++) {
        for (ptrdiff_t x = 0; x < ow; x++) {
            double px = (double)x, py = (double)y;
            if (field) {
                px += field[y * ow + x];
                py += field[oplane + y * ow + x];
            }
            if (kn != 0) {
                double ux = px - cx, uy = py - cy;
                double f = 1.0 + kn * (ux * ux + uy * uy);
                px = cx + ux * f;
                py = cy + uy * f;
            }
            double sx = m[0] * px + m[1] * py + m[2];
            double sy = m[3] * px + m[4] * py + m[5];
            FN_PIX *d = dst + y * ow + x;
            /* far outside (or NaN): every tap is border; keep the index math in range */
            if (!(sx > -2.0 * (double)w - 2.0 && sx < 3.0 * (double)w + 2.0 &&
                  sy > -2.0 * (double)h - 2.0 && sy < 3.0 * (double)h + 2.0)) {
                if (mode == FN_BORDER_CONSTANT || sx != sx || sy != sy) {
                    for (ptrdiff_t ch = 0; ch < c; ch++) d[ch * oplane] = FN_STORE(fill);
                    continue;
                }
                /* edge/reflect: fold far coordinates back near the image first */
                if (mode == FN_BORDER_EDGE) {
                    sx = sx < 0 ? -1.0 : (sx > (double)w ? (double)w : sx);
                    sy = sy < 0 ? -1.0 : (sy > (double)h ? (double)h : sy);
                } else {
                    double px2 = w > 1 ? 2.0 * (double)(w - 1) : 1.0;
                    double py2 = h > 1 ? 2.0 * (double)(h - 1) : 1.0;
                    sx -= px2 * floor(sx / px2);
                    sy -= py2 * floor(sy / py2);
                }
            }
            /* floor and round by truncating a positive number: inline, unlike libm's
             * floor and nearbyint on baseline x86-64 */
            ptrdiff_t ix = (ptrdiff_t)(sx + bx) - ibx, iy = (ptrdiff_t)(sy + by) - iby;
            double rx = (double)((ptrdiff_t)(sx + bx + 0.5) - ibx);
            double ry = (double)((ptrdiff_t)(sy + by + 0.5) - iby);
            if (fabs(sx - rx) < FN_WARP_SNAP) { sx = rx; ix = (ptrdiff_t)rx; }
            if (fabs(sy - ry) < FN_WARP_SNAP) { sy = ry; iy = (ptrdiff_t)ry; }
            double fxd = (double)ix, fyd = (double)iy;
            float fx = (float)(sx - fxd), fy = (float)(sy - fyd);
            float w00 = (1.0f - fx) * (1.0f - fy), w01 = fx * (1.0f - fy);
            float w10 = (1.0f - fx) * fy, w11 = fx * fy;
            if (ix >= 0 && ix + 1 < w && iy >= 0 && iy + 1 < h) {
                const FN_PIX *s = src + iy * w + ix;
                for (ptrdiff_t ch = 0; ch < c; ch++, s += plane) {
                    float v = w00 * (float)s[0] + w01 * (float)s[1] + w10 * (float)s[w] +
                              w11 * (float)s[w + 1];
                    d[ch * oplane] = FN_STORE(v);
                }
                continue;
            }
            ptrdiff_t xs0 = fn_border_index(ix, w, mode), xs1 = fn_border_index(ix + 1, w, mode);
            ptrdiff_t ys0 = fn_border_index(iy, h, mode), ys1 = fn_border_index(iy + 1, h, mode);
            /* a tap of weight 0 is never read: sampling exactly on the last row or
             * column returns that pixel, not a blend with the fill */
            if (fx == 0.0f) xs1 = xs0;
            if (fy == 0.0f) ys1 = ys0;
            for (ptrdiff_t ch = 0; ch < c; ch++) {
                const FN_PIX *s = src + ch * plane;
                float v00 = (xs0 < 0 || ys0 < 0) ? fill : (float)s[ys0 * w + xs0];
                float v01 = (xs1 < 0 || ys0 < 0) ? fill : (float)s[ys0 * w + xs1];
                float v10 = (xs0 < 0 || ys1 < 0) ? fill : (float)s[ys1 * w + xs0];
                float v11 = (xs1 < 0 || ys1 < 0) ? fill : (float)s[ys1 * w + xs1];
                d[ch * oplane] = FN_STORE(w00 * v00 + w01 * v01 + w10 * v10 + w11 * v11);
            }
        }
    }
}

#undef FN_STORE
#undef FN_PNAME
