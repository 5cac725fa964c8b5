/* Inner loops of 2-D batch normalization (batchnorm2d.pyx) over one (sample, channel)
 * plane: n contiguous values that share one channel's statistics. Sums accumulate in
 * double, float input included: a plane may hold thousands of values. Each loop exists
 * for float (suffix _f) and double (_d), generated from the one definition below. */
#ifndef FASTNN_BATCHNORM2D_H
#define FASTNN_BATCHNORM2D_H

#include "simd.h"

#define FN_BN2D_LOOPS(T, S)                                                              \
/* *mean = sum x / n; *m2 = sum (x - *mean)^2, two passes over a plane in cache */       \
FN_LOOP_FN void fn_bn2d_stats##S(const T *restrict x, ptrdiff_t n, double *mean,          \
                                 double *m2)                                              \
{                                                                                         \
    double s = 0, q = 0;                                                                  \
    _Pragma("omp simd reduction(+:s)")                                                    \
    for (ptrdiff_t i = 0; i < n; i++) s += x[i];                                          \
    double m = s / (double)n;                                                             \
    _Pragma("omp simd reduction(+:q)")                                                    \
    for (ptrdiff_t i = 0; i < n; i++) { double c = x[i] - m; q += c * c; }                \
    *mean = m;                                                                            \
    *m2 = q;                                                                              \
}                                                                                         \
                                                                                          \
/* y = x * scale + shift */                                                               \
FN_LOOP_FN void fn_bn2d_affine##S(const T *restrict x, T *restrict y, ptrdiff_t n,        \
                                  T scale, T shift)                                       \
{                                                                                         \
    FN_SIMD for (ptrdiff_t i = 0; i < n; i++) y[i] = x[i] * scale + shift;                \
}                                                                                         \
                                                                                          \
/* *sum_dy = sum dy; *sum_dyc = sum dy * (x - mean) */                                    \
FN_LOOP_FN void fn_bn2d_grad_sums##S(const T *restrict dy, const T *restrict x,           \
                                     ptrdiff_t n, double mean, double *sum_dy,            \
                                     double *sum_dyc)                                     \
{                                                                                         \
    double s = 0, q = 0;                                                                  \
    _Pragma("omp simd reduction(+:s, q)")                                                 \
    for (ptrdiff_t i = 0; i < n; i++) { double g = dy[i]; s += g; q += g * (x[i] - mean); } \
    *sum_dy = s;                                                                          \
    *sum_dyc = q;                                                                         \
}                                                                                         \
                                                                                          \
/* dx = a * dy - b * (x - mean) - c */                                                    \
FN_LOOP_FN void fn_bn2d_dx##S(const T *restrict dy, const T *restrict x, T *restrict dx,  \
                              ptrdiff_t n, T mean, T a, T b, T c)                         \
{                                                                                         \
    FN_SIMD for (ptrdiff_t i = 0; i < n; i++) dx[i] = a * dy[i] - b * (x[i] - mean) - c;  \
}

FN_BN2D_LOOPS(float, _f)
FN_BN2D_LOOPS(double, _d)

#undef FN_BN2D_LOOPS

#endif
