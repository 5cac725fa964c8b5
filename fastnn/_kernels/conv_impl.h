/* The copies of conv.pyx's im2col and col2im, one kernel offset (c, i, j) at a time:
 * plain C with restrict pointers, so that a row of a small image is a short vector
 * loop rather than a memcpy call. Float (_f) and double (_d) from one definition. */
#ifndef FASTNN_CONV_IMPL_H
#define FASTNN_CONV_IMPL_H

#include <stddef.h>

#include "simd.h"

/* im2col: dst[oh * Wo + ow] = src[(oh * sh + top) * W + ow * sw + left], 0 outside
 * the H x W image src. [lo, hi): the ow whose column is inside it.
 * col2im, its adjoint: src[...] += dst[oh * Wo + ow] over the same positions. */
#define FN_CONV_PLANES(T, S)                                                           \
static inline void fn_im2col_plane##S(T *restrict dst, const T *restrict src,         \
                                      ptrdiff_t H, ptrdiff_t W, ptrdiff_t Ho,         \
                                      ptrdiff_t Wo, ptrdiff_t top, ptrdiff_t left,    \
                                      ptrdiff_t sh, ptrdiff_t sw, ptrdiff_t lo,       \
                                      ptrdiff_t hi)                                   \
{                                                                                      \
    for (ptrdiff_t oh = 0; oh < Ho; oh++, dst += Wo) {                                 \
        ptrdiff_t ih = oh * sh + top;                                                  \
        if (ih < 0 || ih >= H) {                                                       \
            FN_SIMD for (ptrdiff_t ow = 0; ow < Wo; ow++) dst[ow] = 0;                 \
            continue;                                                                  \
        }                                                                              \
        ptrdiff_t row = ih * W + left;                                                 \
        for (ptrdiff_t ow = 0; ow < lo; ow++) dst[ow] = 0;                             \
        if (sw == 1) {                                                                 \
            FN_SIMD for (ptrdiff_t ow = lo; ow < hi; ow++) dst[ow] = src[row + ow];    \
        } else {                                                                       \
            for (ptrdiff_t ow = lo; ow < hi; ow++) dst[ow] = src[row + ow * sw];       \
        }                                                                              \
        for (ptrdiff_t ow = hi; ow < Wo; ow++) dst[ow] = 0;                            \
    }                                                                                  \
}                                                                                      \
                                                                                       \
static inline void fn_col2im_plane##S(T *restrict dx, const T *restrict col,          \
                                      ptrdiff_t H, ptrdiff_t W, ptrdiff_t Ho,         \
                                      ptrdiff_t Wo, ptrdiff_t top, ptrdiff_t left,    \
                                      ptrdiff_t sh, ptrdiff_t sw, ptrdiff_t lo,       \
                                      ptrdiff_t hi)                                   \
{                                                                                      \
    for (ptrdiff_t oh = 0; oh < Ho; oh++, col += Wo) {                                 \
        ptrdiff_t ih = oh * sh + top;                                                  \
        if (ih < 0 || ih >= H)                                                         \
            continue;                                                                  \
        ptrdiff_t row = ih * W + left;                                                 \
        if (sw == 1) {                                                                 \
            FN_SIMD for (ptrdiff_t ow = lo; ow < hi; ow++) dx[row + ow] += col[ow];    \
        } else {                                                                       \
            for (ptrdiff_t ow = lo; ow < hi; ow++) dx[row + ow * sw] += col[ow];       \
        }                                                                              \
    }                                                                                  \
}

FN_CONV_PLANES(float, _f)
FN_CONV_PLANES(double, _d)

#undef FN_CONV_PLANES

#endif
