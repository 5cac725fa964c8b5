/* The inner loops of conv.pyx: im2col and col2im one kernel offset (c, i, j) at a
 * time, and the forward epilogue's copy of a GEMM tile into the output. Plain C with
 * restrict pointers; float (_f) and double (_d) from one definition, each compiled
 * for x86-64-v3 as well (FN_LOOP_FN: 8-wide rows, shuffles for stride 2).
 *
 * GCC turns a copy or zeroing loop into a memcpy or memset call; for the short rows
 * of small images (8 to 32 elements) the call costs more than the copy, so the
 * row-by-row helpers are compiled without that rewrite. Long runs (a whole plane of a
 * stride-1 "same" convolution) call memcpy on purpose. */
#ifndef FASTNN_CONV_IMPL_H
#define FASTNN_CONV_IMPL_H

#include <stddef.h>
#include <string.h>

#include "simd.h"

#if defined(__GNUC__) && !defined(__clang__)
#define FN_NO_MEMCPY_CALLS __attribute__((optimize("no-tree-loop-distribute-patterns")))
#else
#define FN_NO_MEMCPY_CALLS
#endif

/* [oh0, oh1): the output rows oh whose input row oh * sh + top is inside 0..H-1. */
static inline void fn_conv_rows(ptrdiff_t H, ptrdiff_t Ho, ptrdiff_t top, ptrdiff_t sh,
                                ptrdiff_t *oh0, ptrdiff_t *oh1)
{
    ptrdiff_t lo = top >= 0 ? 0 : (-top + sh - 1) / sh;
    ptrdiff_t hi = H - 1 - top < 0 ? 0 : (H - 1 - top) / sh + 1;
    lo = lo < Ho ? lo : Ho;
    hi = hi < Ho ? hi : Ho;
    *oh0 = lo;
    *oh1 = hi > lo ? hi : lo;
}

/* im2col of one kernel offset: dst[oh * Wo + ow] = src[(oh * sh + top) * W + ow * sw +
 * left], 0 outside the H x W image src. [lo, hi): the ow whose column is inside it.
 * col2im, its adjoint: src[...] += dst[oh * Wo + ow] over the same positions; it
 * zeroes the positions of col that fall outside the image (col is a scratch tile).
 *
 * With stride 1 and Wo == W (a "same" convolution) the inside rows of a plane are one
 * shifted run of the image: one copy (one add loop) for the plane, then the <= pw
 * columns per row that wrapped into a neighbouring row are zeroed. */
#define FN_CONV_PLANES(T, S)                                                           \
FN_NO_MEMCPY_CALLS FN_LOOP_FN void                                                     \
fn_im2col_plane##S(T *restrict dst, const T *restrict src, ptrdiff_t H, ptrdiff_t W,   \
                   ptrdiff_t Ho, ptrdiff_t Wo, ptrdiff_t top, ptrdiff_t left,          \
                   ptrdiff_t sh, ptrdiff_t sw, ptrdiff_t lo, ptrdiff_t hi)             \
{                                                                                      \
    ptrdiff_t oh0, oh1;                                                                \
    fn_conv_rows(H, Ho, top, sh, &oh0, &oh1);                                          \
    if (sh == 1 && sw == 1 && Wo == W) {                                               \
        FN_SIMD for (ptrdiff_t q = 0; q < oh0 * Wo; q++) dst[q] = 0;                   \
        FN_SIMD for (ptrdiff_t q = oh1 * Wo; q < Ho * Wo; q++) dst[q] = 0;             \
        ptrdiff_t off = top * W + left, a = oh0 * W, b = oh1 * W;                      \
        ptrdiff_t qa = a > -off ? a : -off, qb = b < H * W - off ? b : H * W - off;    \
        if (qb > qa)                                                                   \
            memcpy(dst + qa, src + qa + off, (size_t)(qb - qa) * sizeof(T));           \
        for (ptrdiff_t ow = 0; ow < lo; ow++)                                          \
            for (ptrdiff_t oh = oh0; oh < oh1; oh++) dst[oh * W + ow] = 0;             \
        for (ptrdiff_t ow = hi; ow < W; ow++)                                          \
            for (ptrdiff_t oh = oh0; oh < oh1; oh++) dst[oh * W + ow] = 0;             \
        return;                                                                        \
    }                                                                                  \
    /* short rows: zero the plane in one loop when any of it is outside the image,     \
     * then copy the inside of each row (no per-row zero loops) */                     \
    if (oh0 > 0 || oh1 < Ho || lo > 0 || hi < Wo) {                                    \
        FN_SIMD for (ptrdiff_t q = 0; q < Ho * Wo; q++) dst[q] = 0;                    \
    }                                                                                  \
    const T *s = src + (oh0 * sh + top) * W + left;                                    \
    T *d = dst + oh0 * Wo;                                                             \
    if (sw == 1) {                                                                     \
        for (ptrdiff_t oh = oh0; oh < oh1; oh++, d += Wo, s += sh * W)                 \
            FN_SIMD for (ptrdiff_t ow = lo; ow < hi; ow++) d[ow] = s[ow];              \
    } else if (sw == 2) { /* a constant stride: even lanes, shuffled */                \
        for (ptrdiff_t oh = oh0; oh < oh1; oh++, d += Wo, s += sh * W)                 \
            FN_SIMD for (ptrdiff_t ow = lo; ow < hi; ow++) d[ow] = s[2 * ow];          \
    } else {                                                                           \
        for (ptrdiff_t oh = oh0; oh < oh1; oh++, d += Wo, s += sh * W)                 \
            for (ptrdiff_t ow = lo; ow < hi; ow++) d[ow] = s[ow * sw];                 \
    }                                                                                  \
}                                                                                      \
                                                                                       \
FN_NO_MEMCPY_CALLS FN_LOOP_FN void                                                     \
fn_col2im_plane##S(T *restrict dx, T *restrict col, ptrdiff_t H, ptrdiff_t W,          \
                   ptrdiff_t Ho, ptrdiff_t Wo, ptrdiff_t top, ptrdiff_t left,          \
                   ptrdiff_t sh, ptrdiff_t sw, ptrdiff_t lo, ptrdiff_t hi)             \
{                                                                                      \
    ptrdiff_t oh0, oh1;                                                                \
    fn_conv_rows(H, Ho, top, sh, &oh0, &oh1);                                          \
    if (sh == 1 && sw == 1 && Wo == W) {                                               \
        ptrdiff_t off = top * W + left, a = oh0 * W, b = oh1 * W;                      \
        ptrdiff_t qa = a > -off ? a : -off, qb = b < H * W - off ? b : H * W - off;    \
        for (ptrdiff_t ow = 0; ow < lo; ow++)                                          \
            for (ptrdiff_t oh = oh0; oh < oh1; oh++) col[oh * W + ow] = 0;             \
        for (ptrdiff_t ow = hi; ow < W; ow++)                                          \
            for (ptrdiff_t oh = oh0; oh < oh1; oh++) col[oh * W + ow] = 0;             \
        FN_SIMD for (ptrdiff_t q = qa; q < qb; q++) dx[q + off] += col[q];             \
        return;                                                                        \
    }                                                                                  \
    T *d = dx + (oh0 * sh + top) * W + left;                                           \
    const T *c = col + oh0 * Wo;                                                       \
    if (sw == 1) {                                                                     \
        for (ptrdiff_t oh = oh0; oh < oh1; oh++, c += Wo, d += sh * W)                 \
            FN_SIMD for (ptrdiff_t ow = lo; ow < hi; ow++) d[ow] += c[ow];             \
    } else if (sw == 2) {                                                              \
        for (ptrdiff_t oh = oh0; oh < oh1; oh++, c += Wo, d += sh * W)                 \
            FN_SIMD for (ptrdiff_t ow = lo; ow < hi; ow++) d[2 * ow] += c[ow];         \
    } else {                                                                           \
        for (ptrdiff_t oh = oh0; oh < oh1; oh++, c += Wo, d += sh * W)                 \
            for (ptrdiff_t ow = lo; ow < hi; ow++) d[ow * sw] += c[ow];                \
    }                                                                                  \
}                                                                                      \
                                                                                       \
/* y[o * P + p] = z[o * ldz + p] (+ b[o] unless b is NULL), o < O, p < P: one sample's \
 * rows of a GEMM tile of several samples. */                                          \
FN_NO_MEMCPY_CALLS FN_LOOP_FN void                                                     \
fn_conv_tile_rows##S(T *restrict y, const T *restrict z, ptrdiff_t ldz,                \
                     const T *restrict b, ptrdiff_t O, ptrdiff_t P)                    \
{                                                                                      \
    for (ptrdiff_t o = 0; o < O; o++) {                                                \
        T *yo = y + o * P;                                                             \
        const T *zo = z + o * ldz;                                                     \
        if (b != NULL) {                                                               \
            T bo = b[o];                                                               \
            FN_SIMD for (ptrdiff_t p = 0; p < P; p++) yo[p] = zo[p] + bo;              \
        } else {                                                                       \
            FN_SIMD for (ptrdiff_t p = 0; p < P; p++) yo[p] = zo[p];                   \
        }                                                                              \
    }                                                                                  \
}

FN_CONV_PLANES(float, _f)
FN_CONV_PLANES(double, _d)

#undef FN_CONV_PLANES

#endif
