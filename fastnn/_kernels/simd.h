/* Innermost loops of fastnn's element-wise kernels, written so that the compiler
 * vectorizes them: plain C, no aliasing surprises, `#pragma omp simd`.
 *
 * Cython owns the loops over chunks and the threads; it calls these per chunk.
 * Every function exists for float (suffix _f) and double (suffix _d); both are
 * generated from the one definition in simd_impl.h.
 */
#ifndef FASTNN_SIMD_H
#define FASTNN_SIMD_H

#include <math.h>
#include <stddef.h>
#include <stdint.h>

/* Activation codes shared with the Python layer (fastnn/ops.py). */
#define FN_ACT_IDENTITY 0
#define FN_ACT_RELU 1
#define FN_ACT_LEAKY_RELU 2
#define FN_ACT_SIGMOID 3
#define FN_ACT_TANH 4

/* Elements per task of an element-wise pass: large enough that a call per chunk costs
 * nothing, small enough to balance the threads. */
#define FN_CHUNK 8192
/* Below this many elements a kernel runs on the calling thread: starting an OpenMP
 * team costs more than the work (measured in bench/bench_kernels.py). */
#define FN_PARALLEL_MIN 32768
/* A matrix product of fewer multiply-adds than this runs as one BLAS call on the
 * calling thread. Split, half of its output is written in another core's cache, and
 * the next kernel on the calling thread must fetch it back: a 32x128x128 product (a
 * 128-wide layer at batch 32) timed alone is 13 us on 1 thread and 10 us on 2, but a
 * 64-128-128-10 training step took 167 us at 2 threads with it split and 111 us with
 * it whole (the Adam pass over the gradients the other core wrote went 14 -> 43 us).
 * On a loaded machine a second thread may also wait a whole time slice for a core. */
#define FN_GEMM_PARALLEL_MIN (1L << 21)
/* BLAS takes int dimensions: a product longer than this along its rows or its inner
 * dimension is made of several calls (a multiple of 16, as the threads' slabs are). */
#define FN_GEMM_MAX_DIM (1L << 30)

/* Fixed tiling for column reductions. The tiles depend on the shape only, never on
 * the thread count, and partial sums are combined in a fixed order, so a column sum
 * is bitwise the same for any number of threads. */
#define FN_REDUCE_ROWS 32
#define FN_REDUCE_COLS 256

#define FN_SIMD _Pragma("omp simd")

/* The loop functions are compiled twice on x86-64 Linux with GCC: for any x86-64 CPU
 * and for x86-64-v3 (AVX2, FMA); the loader picks the one the CPU runs. A wheel built
 * without -march=native still gets 8-wide vectors where the CPU has them. (With FMA,
 * a v3 CPU may round some results differently in the last bit; thread count never
 * changes which version runs.) */
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__) \
    && !defined(FASTNN_NO_CLONES)
#define FN_LOOP_FN static __attribute__((target_clones("arch=x86-64-v3", "default")))
#else
#define FN_LOOP_FN static inline
#endif
/* Scalar helpers: always inlined, so that the loops calling them vectorize. */
#define FN_INLINE static inline __attribute__((always_inline))

/* Counter-based random bits for dropout and augmentation: a 32-bit hash of a 64-bit
 * element index under a 64-bit key (two rounds of murmur3's finalizer). The same
 * (key, index) gives the same bits whatever thread computes it. */
FN_INLINE uint32_t fn_fmix32(uint32_t h)
{
    h ^= h >> 16;
    h *= 0x85ebca6bu;
    h ^= h >> 13;
    h *= 0xc2b2ae35u;
    h ^= h >> 16;
    return h;
}

FN_INLINE uint32_t fn_hash32(uint64_t index, uint32_t key_lo, uint32_t key_hi)
{
    uint32_t h = fn_fmix32((uint32_t)index * 0x9e3779b9u ^ key_lo);
    return fn_fmix32(h + ((uint32_t)(index >> 32) ^ key_hi));
}
#define FN_CAT_(a, b) a##b
#define FN_CAT(a, b) FN_CAT_(a, b)

/* exp(x) for x <= 0 and tanh(x), in float, written so that loops calling them
 * vectorize (libm's expf and tanhf are scalar calls; these are Cephes' polynomials,
 * within 2 ulp of libm over the float range). Results below 2^-126 flush to 0: exactly
 * 0 at -inf, as sigmoid and softmax need; NaN propagates. */
FN_INLINE float fn_exp_nonpos_f(float x)
{
    const float lo = -87.3365448f; /* log(2^-126) */
    float xc = x < lo ? lo : x;
    /* n = round(xc / ln 2) by the 1.5 * 2^23 trick: no float-to-int conversion, which
     * would stop the loop vectorizing for AVX2 */
    float tm = xc * 1.44269504088896341f + 12582912.0f;
    float nf = tm - 12582912.0f;
    uint32_t tb;
    __builtin_memcpy(&tb, &tm, sizeof tb);
    int n = (int)(tb - 0x4B400000u);
    float r = xc - nf * 0.693359375f + nf * 2.12194440e-4f;
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    float y = p * r * r + r + 1.0f;
    int bits = (n + 127) << 23; /* 2^n, n in [-126, 0] */
    float scale;
    __builtin_memcpy(&scale, &bits, sizeof scale);
    float result = y * scale;
    return x < lo ? 0.0f : result;
}

FN_INLINE float fn_tanh_poly_f(float x)
{
    float a = x < 0 ? -x : x;
    /* |x| < 0.625: odd polynomial; above: (1 - e) / (1 + e) with e = exp(-2|x|) */
    float z = x * x;
    float p = -5.70498872745e-3f;
    p = p * z + 2.06390887954e-2f;
    p = p * z - 5.37397155531e-2f;
    p = p * z + 1.33314422036e-1f;
    p = p * z - 3.33332819422e-1f;
    float small = p * z * x + x;
    float e = fn_exp_nonpos_f(-2.0f * a);
    float big = (1.0f - e) / (1.0f + e);
    big = x < 0 ? -big : big;
    return a < 0.625f ? small : big;
}

#define FN_T float
#define FN_SUFFIX _f
#define FN_EXP fn_exp_nonpos_f
#define FN_TANH fn_tanh_poly_f
#define FN_FABS fabsf
#define FN_SQRT sqrtf
#include "simd_impl.h"
#undef FN_T
#undef FN_SUFFIX
#undef FN_EXP
#undef FN_TANH
#undef FN_FABS
#undef FN_SQRT

/* double keeps libm (float64 is for gradient checks; exactness over speed) */
#define FN_T double
#define FN_SUFFIX _d
#define FN_EXP exp
#define FN_TANH tanh
#define FN_FABS fabs
#define FN_SQRT sqrt
#include "simd_impl.h"
#undef FN_T
#undef FN_SUFFIX
#undef FN_EXP
#undef FN_TANH
#undef FN_FABS
#undef FN_SQRT

#endif
