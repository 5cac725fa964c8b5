/* Inner loops of fastnn's image augmentation (augment.pyx): border handling, the
 * exact copy (crop / flip), the elastic displacement field and the bilinear warp.
 *
 * Cython owns the loops over images and row blocks and the threads; it calls these
 * per image (or per block of output rows). Pixel types: unsigned char (suffix _u8)
 * and float (suffix _f), both generated from augment_impl.h.
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

/* Index i of a line of n pixels under a border mode; -1 means "the fill value"
 * (constant mode only). reflect mirrors about the edge pixels, as numpy.pad's
 * "reflect": ... c b | a b c d | c b ... */
FN_INLINE ptrdiff_t fn_border_index(ptrdiff_t i, ptrdiff_t n, int mode)
{
    if (i >= 0 && i < n) return i;
    if (mode == FN_BORDER_CONSTANT) return -1;
    if (mode == FN_BORDER_EDGE || n == 1) return i < 0 ? 0 : n - 1;
    ptrdiff_t period = 2 * n - 2;
    i %= period;
    if (i < 0) i += period;
    return i < n ? i : period - i;
}

/* A uniform float in [0, 1) from 24 of the hash's bits. */
FN_INLINE float fn_unit_float(uint32_t h) { return (float)(h >> 8) * (1.0f / 16777216.0f); }

FN_INLINE unsigned char fn_store_u8(float v)
{
    v = v < 0.0f ? 0.0f : (v > 255.0f ? 255.0f : v);
    return (unsigned char)(v + 0.5f);
}
FN_INLINE float fn_store_f(float v) { return v; }

/* Elastic displacement field of one image: two planes (dx, then dy) of h * w,
 * uniform noise in [-1, 1) from hash(key, ((2 * image + plane) << 32) + pixel),
 * blurred by the normalized kernel g[0 .. 2 * radius] (separable, edges clamped) and
 * scaled by alpha. scratch holds 2 * h * w + w + 2 * radius floats. */
static inline void fn_elastic_field(float *field, float *scratch, const float *g, ptrdiff_t radius,
                                    ptrdiff_t h, ptrdiff_t w, uint64_t image, uint32_t key_lo,
                                    uint32_t key_hi, float alpha)
{
    float *noise = scratch;             /* one plane of noise */
    float *tmp = scratch + h * w;       /* rows blurred along x */
    float *line = tmp + h * w;          /* one noise row, padded by radius each side */
    ptrdiff_t taps = 2 * radius + 1;
    for (int plane = 0; plane < 2; plane++) {
        uint64_t base = (uint64_t)(2 * image + (uint64_t)plane) << 32;
        FN_SIMD for (ptrdiff_t j = 0; j < h * w; j++)
            noise[j] = 2.0f * fn_unit_float(fn_hash32(base + (uint64_t)j, key_lo, key_hi)) - 1.0f;
        for (ptrdiff_t y = 0; y < h; y++) {
            const float *nr = noise + y * w;
            for (ptrdiff_t x = 0; x < radius; x++) {
                line[x] = nr[0];
                line[radius + w + x] = nr[w - 1];
            }
            memcpy(line + radius, nr, (size_t)w * sizeof(float));
            float *t = tmp + y * w;
            for (ptrdiff_t x = 0; x < w; x++) t[x] = 0.0f;
            for (ptrdiff_t k = 0; k < taps; k++) {
                const float gk = g[k];
                const float *l = line + k;
                FN_SIMD for (ptrdiff_t x = 0; x < w; x++) t[x] += gk * l[x];
            }
        }
        float *out = field + plane * h * w;
        for (ptrdiff_t y = 0; y < h; y++) {
            float *o = out + y * w;
            for (ptrdiff_t x = 0; x < w; x++) o[x] = 0.0f;
            for (ptrdiff_t k = 0; k < taps; k++) {
                ptrdiff_t ys = y + k - radius;
                ys = ys < 0 ? 0 : (ys >= h ? h - 1 : ys);
                const float gk = g[k] * alpha;
                const float *t = tmp + ys * w;
                FN_SIMD for (ptrdiff_t x = 0; x < w; x++) o[x] += gk * t[x];
            }
        }
    }
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
