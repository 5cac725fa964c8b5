/* Inner loops of fastnn's image augmentation (augment.pyx): border handling, the
 * exact copy (crop / flip), the elastic displacement field and the bilinear warp.
 *
 * Cython owns the loops over images and row blocks and the threads; it calls these
 * per image (or per block of output rows). Pixel types: unsigned char (suffix _u8)
 * and float (suffix _f), both generated from augment_impl.h.
 *
 * The warp works in two vectorizable passes per output row: fn_warp_coords turns
 * every output pixel into a source offset and two interpolation weights, then
 * fn_warp_gather_* reads four neighbours per channel from a float copy of the source
 * padded by 1 pixel before and 2 after each axis (the padding holds the border mode's
 * values), so the gather has no branch and no border case: coordinates are clamped
 * (constant, edge) or folded (reflect) into the padded range first.
 */
#ifndef FASTNN_AUGMENT_H
#define FASTNN_AUGMENT_H

#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "simd.h"

/* Border modes shared with fastnn/augment.py. */
#define FN_BORDER_CONSTANT 0
#define FN_BORDER_EDGE 1
#define FN_BORDER_REFLECT 2

/* Source coordinates this close to a whole pixel are taken as that pixel: a rotation
 * by 90 degrees (cos = 6e-17) or a composed flip then reads pixels exactly. */
#define FN_WARP_SNAP 1e-7

/* Padding of the warp's float copy of the source: FN_PAD_LO pixels before each axis,
 * FN_PAD_HI after (a tap at w and its right neighbour at w + 1). */
#define FN_PAD_LO 1
#define FN_PAD_HI 2

/* The Gaussian of the elastic field: up to this radius (sigma < 2) an exact FIR filter,
 * above it the recursive one, which keeps FN_SMOOTH_ROWS rows of state before and after
 * a smoothed block. */
#define FN_FIR_MAX_RADIUS 8
#define FN_SMOOTH_ROWS 3

/* The warp computes coordinates for chunks of whole rows of about this many pixels. */
#define FN_WARP_CHUNK 2048
FN_INLINE ptrdiff_t fn_warp_chunk_rows(ptrdiff_t ow, ptrdiff_t oh)
{
    ptrdiff_t rows = ow >= FN_WARP_CHUNK ? 1 : FN_WARP_CHUNK / ow;
    return rows < oh ? rows : oh;
}

/* Index i of a line of n pixels under a border mode; -1 means "the fill value"
 * (constant mode only). reflect mirrors about the edge pixels, as numpy.pad's
 * "reflect": ... c b | a b c d | c b ... */
FN_INLINE ptrdiff_t fn_border_index(ptrdiff_t i, ptrdiff_t n, int mode)
{
    if (i >= 0 && i < n) return i;
    if (mode == FN_BORDER_CONSTANT) return -1;
    if (mode == FN_BORDER_EDGE || n == 1) return i < 0 ? 0 : n - 1;
    /* within one reflection of the edges (a padded crop): no division */
    if (i < 0 && i > -n) return -i;
    if (i >= n && i < 2 * n - 1) return 2 * n - 2 - i;
    ptrdiff_t period = 2 * n - 2;
    i %= period;
    if (i < 0) i += period;
    return i < n ? i : period - i;
}

/* How a run of border columns reads its source row, the same for every row of an image:
 * by the column map, forward or reversed from one column (a reflection), one column
 * repeated (edge), or the fill value (constant). */
enum { FN_RUN_MAP, FN_RUN_FORWARD, FN_RUN_REVERSED, FN_RUN_REPEAT, FN_RUN_FILL };

static inline int fn_run_kind(const int32_t *cols, ptrdiff_t n)
{
    if (n == 0) return FN_RUN_FILL;
    int32_t c0 = cols[0];
    int fwd = c0 >= 0, rev = c0 >= 0, same = c0 >= 0, fill = c0 < 0;
    for (ptrdiff_t x = 1; x < n; x++) {
        fwd &= cols[x] == c0 + x;
        rev &= cols[x] == c0 - x;
        same &= cols[x] == c0;
        fill &= cols[x] < 0;
    }
    return fill ? FN_RUN_FILL : fwd ? FN_RUN_FORWARD : rev ? FN_RUN_REVERSED
         : same ? FN_RUN_REPEAT : FN_RUN_MAP;
}

/* A uniform float in [0, 1) from 24 of the hash's bits. */
FN_INLINE float fn_unit_float(uint32_t h) { return (float)(h >> 8) * (1.0f / 16777216.0f); }

FN_INLINE unsigned char fn_store_u8(float v)
{
    v = v < 0.0f ? 0.0f : (v > 255.0f ? 255.0f : v);
    return (unsigned char)(int)(v + 0.5f);
}
FN_INLINE float fn_store_f(float v) { return v; }

/* The bilinear read of a padded plane (rows pw apart) at offset o of the top-left tap,
 * weights wx, wy towards the right and lower taps. A weight of 0 keeps the other tap
 * exactly. */
FN_INLINE float fn_bilinear(const float *pad, int32_t pw, int32_t o, float wx, float wy)
{
    float a = pad[o], b = pad[o + 1], c = pad[o + pw], d = pad[o + pw + 1];
    float top = a + wx * (b - a), bottom = c + wx * (d - c);
    return top + wy * (bottom - top);
}

/* out[s * n + i] = (hash(key, ((slot0 + s) << 32) + i) >> 8) * 2^-24 for s < slots,
 * i < n: the per-image uniforms of fastnn/augment.py's _Draw, many slots at once. */
FN_LOOP_FN void fn_uniforms(double *out, ptrdiff_t slot0, ptrdiff_t slots, ptrdiff_t n,
                            uint32_t key_lo, uint32_t key_hi)
{
    for (ptrdiff_t s = 0; s < slots; s++) {
        uint64_t base = (uint64_t)(slot0 + s) << 32;
        double *o = out + s * n;
        FN_SIMD for (ptrdiff_t i = 0; i < n; i++)
            o[i] = (double)(int32_t)(fn_hash32(base + (uint64_t)i, key_lo, key_hi) >> 8) *
                   (1.0 / 16777216.0);
    }
}

/* ---------------------------------------------------------------- elastic field
 *
 * The displacement field of one image is uniform noise in (-1, 1) per pixel and axis,
 * smoothed by a Gaussian of width sigma and scaled by alpha. Beyond the edges the noise
 * is zero (scipy.ndimage's mode "constant"), so that the field fades towards the edges
 * rather than repeating one pixel's noise over a Gaussian's width. The Gaussian is, for
 * sigma < 2, the sampled one truncated at 4 sigma (scipy.ndimage.gaussian_filter's),
 * and above, where that grows long, the third-order recursive filter of Young, van
 * Vliet and Verbeek (poles rescaled so that its variance is exactly sigma^2): a causal
 * then an anti-causal pass of 4 multiply-adds a sample each, whatever sigma, with Triggs
 * and Sdika's initial conditions for the anti-causal pass (the matrix comes from
 * Python).
 *
 * Both passes run down the rows of a block, vectorized along the rows: first on the
 * noise laid out x-major (smoothing along x), then, after a transpose, y-major
 * (smoothing along y). The dx and dy values travel side by side in one row. */

/* The smoothing's coefficients, as ElasticDistortion builds them (23 floats): the
 * radius of the FIR filter (0: recursive) and its taps g[0..radius]; the recursive
 * filter y = b*x + a1*y1 + a2*y2 + a3*y3 and the 3x3 map from the causal pass's last
 * three outputs to the anti-causal pass's three initial states where the input
 * continues with zeros, row-major. */
typedef struct {
    float b, a1, a2, a3;
    float m[9];
    float radius;
    float taps[FN_FIR_MAX_RADIUS + 1];
} fn_smooth;

/* Smooth the R rows of L floats at buf (row r at buf + r * L) along r, in place, by the
 * recursive filter, the input being zero beyond both ends. FN_SMOOTH_ROWS rows before
 * buf and after row R - 1 are scratch. */
FN_LOOP_FN void fn_iir_rows(float *buf, ptrdiff_t R, ptrdiff_t L, const fn_smooth *c)
{
    const float b = c->b, a1 = c->a1, a2 = c->a2, a3 = c->a3;
    /* zeros before the first row: the causal pass's state for an input of zeros */
    FN_SIMD for (ptrdiff_t j = 0; j < 3 * L; j++) buf[j - 3 * L] = 0.0f;
    for (ptrdiff_t r = 0; r < R; r++) {
        float *y = buf + r * L;
        FN_SIMD for (ptrdiff_t j = 0; j < L; j++)
            y[j] = b * y[j] + a3 * y[j - 3 * L] + a2 * y[j - 2 * L] + a1 * y[j - L];
    }
    const float *y1 = buf + (R - 1) * L, *y2 = y1 - L, *y3 = y2 - L;
    float *z0 = buf + R * L, *z1 = z0 + L, *z2 = z1 + L;
    const float *m = c->m;
    FN_SIMD for (ptrdiff_t j = 0; j < L; j++) {
        float d1 = y1[j], d2 = y2[j], d3 = y3[j];
        z0[j] = m[0] * d1 + m[1] * d2 + m[2] * d3;
        z1[j] = m[3] * d1 + m[4] * d2 + m[5] * d3;
        z2[j] = m[6] * d1 + m[7] * d2 + m[8] * d3;
    }
    for (ptrdiff_t r = R - 1; r >= 0; r--) {
        float *z = buf + r * L;
        FN_SIMD for (ptrdiff_t j = 0; j < L; j++)
            z[j] = b * z[j] + a3 * z[j + 3 * L] + a2 * z[j + 2 * L] + a1 * z[j + L];
    }
}

/* dst = src smoothed along r by the FIR filter of radius rad (1..FN_FIR_MAX_RADIUS),
 * rows beyond the ends zero: row i of dst is the sum over |k| <= rad, 0 <= i + k < R, of
 * g[|k|] times row i + k of src (R rows of L floats each). */
FN_LOOP_FN void fn_fir_rows(const float *restrict src, float *restrict dst, ptrdiff_t R,
                            ptrdiff_t L, const fn_smooth *c)
{
    const ptrdiff_t rad = (ptrdiff_t)c->radius;
    const float *g = c->taps;
    for (ptrdiff_t i = 0; i < R; i++) {
        const float *cur = src + i * L;
        float *restrict out = dst + i * L;
        const float g0 = g[0];
        FN_SIMD for (ptrdiff_t j = 0; j < L; j++) out[j] = g0 * cur[j];
        /* the taps inside the rows, a side at a time */
        for (ptrdiff_t k = 1; k <= rad; k++) {
            const float gk = g[k];
            if (i - k >= 0) {
                const float *lo = src + (i - k) * L;
                FN_SIMD for (ptrdiff_t j = 0; j < L; j++) out[j] += gk * lo[j];
            }
            if (i + k < R) {
                const float *hi = src + (i + k) * L;
                FN_SIMD for (ptrdiff_t j = 0; j < L; j++) out[j] += gk * hi[j];
            }
        }
    }
}

/* Noise of one image, x-major: row x of t (2 * h floats) holds the dx noise of column x
 * then its dy noise. Pixel (x, y) takes both from one hash of (image << 32) + x * h + y:
 * its low and high 16 bits, each mapped to (v + 0.5) / 32768 - 1. */
FN_LOOP_FN void fn_elastic_noise(float *t, ptrdiff_t h, ptrdiff_t w, uint64_t image,
                                 uint32_t key_lo, uint32_t key_hi)
{
    const float s = 1.0f / 32768.0f, o = 0.5f / 32768.0f - 1.0f;
    /* fn_hash32 of (image << 32) + j with j < 2^32, in 32-bit lanes only */
    const uint32_t hi = (uint32_t)image ^ key_hi;
    const int hn = (int)h;
    for (ptrdiff_t x = 0; x < w; x++) {
        float *row = t + x * 2 * h;
        const uint32_t base = (uint32_t)(x * h);
        FN_SIMD for (int y = 0; y < hn; y++) {
            uint32_t v = fn_fmix32(fn_fmix32((base + (uint32_t)y) * 0x9e3779b9u ^ key_lo) + hi);
            row[y] = (float)(int32_t)(v & 0xffffu) * s + o;
            row[h + y] = (float)(int32_t)(v >> 16) * s + o;
        }
    }
}

/* Rows of one field (both planes side by side) with the smoothing's scratch rows. */
#define FN_FIELD_ROWS(h) ((h) + 2 * FN_SMOOTH_ROWS)

/* Row y of f (rows of 2w floats: dx of the row's w pixels, then their dy) = alpha *
 * column y and column h + y of t (w rows of 2h): 4x4 blocks transposed in registers
 * where the compiler has vector shuffles, the edges one value at a time. */
#if defined(__clang__) || (defined(__GNUC__) && __GNUC__ >= 12)
#define FN_HAVE_SHUFFLE 1
typedef float fn_v4f __attribute__((vector_size(16), aligned(4), may_alias));
#else
#define FN_HAVE_SHUFFLE 0
#endif

static inline void fn_elastic_transpose(const float *t, float *f, ptrdiff_t h, ptrdiff_t w,
                                        float alpha)
{
    for (ptrdiff_t p = 0; p < 2; p++) {
        const float *tp = t + p * h;
        float *fp = f + p * w;
        ptrdiff_t y0 = 0, x0 = 0;
#if FN_HAVE_SHUFFLE
        const fn_v4f a = {alpha, alpha, alpha, alpha};
        y0 = h & ~(ptrdiff_t)3;
        x0 = w & ~(ptrdiff_t)3;
        for (ptrdiff_t y = 0; y < y0; y += 4)
            for (ptrdiff_t x = 0; x < x0; x += 4) {
                const float *s = tp + x * 2 * h + y;
                fn_v4f v0 = *(const fn_v4f *)s, v1 = *(const fn_v4f *)(s + 2 * h);
                fn_v4f v2 = *(const fn_v4f *)(s + 4 * h), v3 = *(const fn_v4f *)(s + 6 * h);
                fn_v4f t0 = __builtin_shufflevector(v0, v1, 0, 4, 1, 5);
                fn_v4f t1 = __builtin_shufflevector(v0, v1, 2, 6, 3, 7);
                fn_v4f t2 = __builtin_shufflevector(v2, v3, 0, 4, 1, 5);
                fn_v4f t3 = __builtin_shufflevector(v2, v3, 2, 6, 3, 7);
                float *d = fp + y * 2 * w + x;
                *(fn_v4f *)d = a * __builtin_shufflevector(t0, t2, 0, 1, 4, 5);
                *(fn_v4f *)(d + 2 * w) = a * __builtin_shufflevector(t0, t2, 2, 3, 6, 7);
                *(fn_v4f *)(d + 4 * w) = a * __builtin_shufflevector(t1, t3, 0, 1, 4, 5);
                *(fn_v4f *)(d + 6 * w) = a * __builtin_shufflevector(t1, t3, 2, 3, 6, 7);
            }
#endif
        /* what the blocks left: rows from y0 on, and columns from x0 on in the others */
        for (ptrdiff_t y = 0; y < h; y++)
            for (ptrdiff_t x = y < y0 ? x0 : 0; x < w; x++)
                fp[y * 2 * w + x] = alpha * tp[x * 2 * h + y];
    }
}

/* Floats of scratch fn_elastic_field needs besides the field. */
#define FN_FIELD_SCRATCH(h, w) ((FN_FIELD_ROWS(w) + (w)) * 2 * (h))

/* The field of one image into f: FN_FIELD_ROWS(h) rows of 2w floats, row FN_SMOOTH_ROWS
 * + y holding dx then dy of the image's row y. t: FN_FIELD_SCRATCH(h, w) floats. The
 * recursive filter works in place, in the noise then in the field; the FIR filter from
 * the noise into u, from u transposed (back in the noise's place) into the field. */
static inline void fn_elastic_field(float *f, float *t, const fn_smooth *c, ptrdiff_t h,
                                    ptrdiff_t w, uint64_t image, uint32_t key_lo,
                                    uint32_t key_hi, float alpha)
{
    float *t0 = t + FN_SMOOTH_ROWS * 2 * h, *f0 = f + FN_SMOOTH_ROWS * 2 * w;
    float *u = t + FN_FIELD_ROWS(w) * 2 * h;
    fn_elastic_noise(t0, h, w, image, key_lo, key_hi);
    if (c->radius > 0.0f) {
        fn_fir_rows(t0, u, w, 2 * h, c);
        fn_elastic_transpose(u, t0, h, w, alpha);
        fn_fir_rows(t0, f0, h, 2 * w, c);
    } else {
        fn_iir_rows(t0, w, 2 * h, c);
        fn_elastic_transpose(t0, f0, h, w, alpha);
        fn_iir_rows(f0, h, 2 * w, c);
    }
}

/* ---------------------------------------------------------------- warp coordinates
 *
 * For n output pixels (x, y) = (x0 + xs[j], y0 + ys[j]), j < n (whole rows in a row;
 * x0 and the fraction of y0 place a sub-sample of an antialiased pixel):
 *   p = (x, y) + (fdx, fdy)[r * fstride + j]      elastic (fn_warp_coords_field:
 *                                                 rows r of ow pixels j)
 *   p = c + (p - c) * (1 + kn * |p - c|^2)        radial lens (kn may be 0)
 *   s = m[0:3] . (p, 1), m[3:6] . (p, 1)          affine, output -> source
 * then s is snapped to a whole pixel within FN_WARP_SNAP (without a field), put in the
 * padded range (clamped to [-1, w] for constant and edge, folded into [0, w - 1] for
 * reflect), and stored as the offset of its top-left tap in the padded plane (pw floats
 * a row) and the weights wx, wy of the right and lower taps. */

FN_INLINE double fn_snap(double s)
{
    /* round to nearest by the 1.5 * 2^52 trick: inline and vectorized (far from the
     * image, where it is not exact, |s - r| is large or s is whole already) */
    double r = (s + 6755399441055744.0) - 6755399441055744.0;
    return fabs(s - r) < FN_WARP_SNAP ? r : s;
}

/* Into the padded range: clamped to [-1, n] (constant, edge), or folded into
 * [0, n - 1] (reflect; period = 2n - 2, inv = 1 / period, 0 when n = 1). The last
 * clamp of each also sends NaN and far coordinates into range (never out of bounds). */
#define FN_RANGE_FUNCTIONS(T, S, FLOOR)                                                    \
    FN_INLINE T fn_clamp_range##S(T s, T n)                                                \
    {                                                                                      \
        s = s > (T)-1 ? s : (T)-1;                                                         \
        return s < n ? s : n;                                                              \
    }                                                                                      \
    FN_INLINE T fn_fold_range##S(T s, T last, T period, T inv)                             \
    {                                                                                      \
        T t = s - period * FLOOR(s * inv); /* in [0, period] up to rounding */             \
        t = t > last ? period - t : t;                                                     \
        t = t > (T)0 ? t : (T)0;                                                           \
        return t < last ? t : last;                                                        \
    }
FN_RANGE_FUNCTIONS(double, , floor)
FN_RANGE_FUNCTIONS(float, f, floorf)
#undef FN_RANGE_FUNCTIONS

/* The coordinates of output pixel J at (PX, PY) (after the field) in type T, with SNAP
 * and the range functions of that type, the map m0..m5, lens kn, cx, cy of that type. */
#define FN_COORD_BODY(T, SNAP, OFF, WX, WY, J, PX, PY, LENS, TO_RANGE_X, TO_RANGE_Y)       \
    {                                                                                      \
        T px = (PX), py = (PY);                                                            \
        if (LENS) {                                                                        \
            T ux = px - cx, uy = py - cy;                                                  \
            T f = (T)1 + kn * (ux * ux + uy * uy);                                         \
            px = cx + ux * f;                                                              \
            py = cy + uy * f;                                                              \
        }                                                                                  \
        T sx = m0 * px + m1 * py + m2, sy = m3 * px + m4 * py + m5;                        \
        sx = TO_RANGE_X(SNAP(sx));                                                         \
        sy = TO_RANGE_Y(SNAP(sy));                                                         \
        /* floor of a number >= -1 by truncating a positive one */                        \
        int32_t ix = (int32_t)(sx + (T)2) - 2, iy = (int32_t)(sy + (T)2) - 2;              \
        WX[J] = (float)(sx - (T)ix);                                                       \
        WY[J] = (float)(sy - (T)iy);                                                       \
        OFF[J] = (iy + FN_PAD_LO) * ipw + ix + FN_PAD_LO;                                  \
    }

/* The constants of the border range functions, in type T. */
#define FN_COORD_RANGES(T)                                                                 \
    const T wd = (T)w, hd = (T)h;                                                          \
    const T lx = wd - (T)1, px2 = (T)2 * lx, ix2 = w > 1 ? (T)1 / px2 : (T)0;              \
    const T ly = hd - (T)1, py2 = (T)2 * ly, iy2 = h > 1 ? (T)1 / py2 : (T)0;
/* The range functions of the type whose suffix FN_RANGE_SUFFIX names ("" or f). */
#define FN_CLAMP_X(s) FN_CAT(fn_clamp_range, FN_RANGE_SUFFIX)(s, wd)
#define FN_CLAMP_Y(s) FN_CAT(fn_clamp_range, FN_RANGE_SUFFIX)(s, hd)
#define FN_FOLD_X(s) FN_CAT(fn_fold_range, FN_RANGE_SUFFIX)(s, lx, px2, ix2)
#define FN_FOLD_Y(s) FN_CAT(fn_fold_range, FN_RANGE_SUFFIX)(s, ly, py2, iy2)

/* One FN_COORD_LOOP per (border, lens or not): no dead work if-converted into it. A
 * line of one pixel folds everything onto it (period 0, inv 0, t = s, clamped). */
#define FN_COORD_DISPATCH                                                                  \
    if (mode != FN_BORDER_REFLECT) {                                                       \
        if (kn != 0) {                                                                     \
            FN_COORD_LOOP(1, FN_CLAMP_X, FN_CLAMP_Y)                                       \
        } else {                                                                           \
            FN_COORD_LOOP(0, FN_CLAMP_X, FN_CLAMP_Y)                                       \
        }                                                                                  \
    } else {                                                                               \
        if (kn != 0) {                                                                     \
            FN_COORD_LOOP(1, FN_FOLD_X, FN_FOLD_Y)                                         \
        } else {                                                                           \
            FN_COORD_LOOP(0, FN_FOLD_X, FN_FOLD_Y)                                         \
        }                                                                                  \
    }

/* Without a field, in double. */
#define FN_COORD_LOOP(LENS, TO_RANGE_X, TO_RANGE_Y)                                        \
    FN_SIMD for (int j = 0; j < count; j++)                                                \
        FN_COORD_BODY(double, fn_snap, off, wx, wy, j, x0 + (double)xs[j],                 \
                      y0 + (double)ys[j], LENS, TO_RANGE_X, TO_RANGE_Y)

FN_LOOP_FN void fn_warp_coords(ptrdiff_t n, const float *restrict xs, const float *restrict ys,
                               double x0, double y0, const double *m, double kn, double cx,
                               double cy, ptrdiff_t h, ptrdiff_t w, ptrdiff_t pw, int mode,
                               int32_t *restrict off, float *restrict wx, float *restrict wy)
{
    const double m0 = m[0], m1 = m[1], m2 = m[2], m3 = m[3], m4 = m[4], m5 = m[5];
    const int32_t ipw = (int32_t)pw;
    /* an int counter: int64 -> double does not vectorize before AVX-512 */
    const int count = (int)n;
    FN_COORD_RANGES(double)
#define FN_RANGE_SUFFIX
    FN_COORD_DISPATCH
#undef FN_RANGE_SUFFIX
}
#undef FN_COORD_LOOP

/* With an elastic field, in float: the field is float noise smoothed in float, so the
 * coordinates it moves keep their precision (about 1e-7 of the image size), and none is
 * snapped to a whole pixel (a random displacement is never meant to land on one). Row
 * by row: rows of cols pixels, the field's rows fstride floats apart. */
#define FN_NO_SNAP(s) (s)
#define FN_COORD_LOOP(LENS, TO_RANGE_X, TO_RANGE_Y)                                        \
    for (int r = 0; r < rows; r++) {                                                       \
        const float *restrict fx = fdx + r * fstride, *restrict fy = fdy + r * fstride;    \
        const float yr = (float)(y0 + (double)r);                                          \
        int32_t *restrict ro = off + (ptrdiff_t)r * cols;                                  \
        float *restrict rwx = wx + (ptrdiff_t)r * cols, *restrict rwy = wy + (ptrdiff_t)r * cols; \
        FN_SIMD for (int j = 0; j < cols; j++)                                             \
            FN_COORD_BODY(float, FN_NO_SNAP, ro, rwx, rwy, j, (x0f + xs[j]) + fx[j],        \
                          yr + fy[j], LENS, TO_RANGE_X, TO_RANGE_Y)                        \
    }

FN_LOOP_FN void fn_warp_coords_field(ptrdiff_t rows_, ptrdiff_t ow, const float *restrict xs,
                                     double x0, double y0, const double *m, double kn_,
                                     double cx_, double cy_, const float *fdx, const float *fdy,
                                     ptrdiff_t fstride, ptrdiff_t h, ptrdiff_t w, ptrdiff_t pw,
                                     int mode, int32_t *restrict off, float *restrict wx,
                                     float *restrict wy)
{
    const float m0 = (float)m[0], m1 = (float)m[1], m2 = (float)m[2];
    const float m3 = (float)m[3], m4 = (float)m[4], m5 = (float)m[5];
    const float kn = (float)kn_, cx = (float)cx_, cy = (float)cy_, x0f = (float)x0;
    const int32_t ipw = (int32_t)pw;
    const int cols = (int)ow, rows = (int)rows_;
    FN_COORD_RANGES(float)
#define FN_RANGE_SUFFIX f
    FN_COORD_DISPATCH
#undef FN_RANGE_SUFFIX
}
#undef FN_COORD_LOOP
#undef FN_NO_SNAP
#undef FN_COORD_RANGES
#undef FN_CLAMP_X
#undef FN_CLAMP_Y
#undef FN_FOLD_X
#undef FN_FOLD_Y
#undef FN_COORD_DISPATCH
#undef FN_COORD_BODY

/* acc[j] += scale * (the bilinear read of fn_warp_gather): one sub-sample of an
 * antialiased output pixel. */
FN_LOOP_FN void fn_warp_gather_acc(const float *restrict pad, ptrdiff_t pw,
                                   const int32_t *restrict off, const float *restrict wx,
                                   const float *restrict wy, float *restrict acc, ptrdiff_t n,
                                   float scale)
{
    const int32_t ipw = (int32_t)pw;
    FN_SIMD for (ptrdiff_t j = 0; j < n; j++)
        acc[j] += scale * fn_bilinear(pad, ipw, off[j], wx[j], wy[j]);
}

#define FN_PIX unsigned char
#define FN_PSUFFIX _u8
#include "augment_impl.h"
#undef FN_PIX
#undef FN_PSUFFIX

#define FN_PIX float
#define FN_PSUFFIX _f
#include "augment_impl.h"
#undef FN_PIX
#undef FN_PSUFFIX

#endif
