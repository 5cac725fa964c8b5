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
#include <string.h>

/* Activation codes shared with the Python layer (fastnn/ops.py). */
#define FN_ACT_IDENTITY 0
#define FN_ACT_RELU 1
#define FN_ACT_LEAKY_RELU 2
#define FN_ACT_SIGMOID 3
#define FN_ACT_TANH 4
#define FN_ACT_ELU 5
#define FN_ACT_GELU 6
#define FN_ACT_GELU_TANH 7
#define FN_ACT_SILU 8
/* Whether an activation's gradient reads its input x (else its output y): ELU, GELU and
 * SiLU, whose output does not tell x apart (GELU, SiLU) or loses it to rounding (ELU
 * far below 0). An epilogue that applies one keeps x beside y for the backward pass. */
#define FN_ACT_READS_INPUT(act) ((act) >= FN_ACT_ELU)

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
/* With MKL, a product whose output has fewer columns than this (an output layer of 10
 * classes) goes to scipy's OpenBLAS, cut into slabs for the threads: 256x1024 @ 1024x10
 * took 154 us in MKL and 110 us in OpenBLAS at 1 thread, 1024x1024 @ 1024x10 759 and
 * 535 us; at 16 columns and up MKL is as fast or faster (bench/bench_gemm.py). */
#define FN_GEMM_NARROW 16
/* BLAS takes int dimensions: a product longer than this along its rows or its inner
 * dimension is made of several calls (a multiple of 16, as the threads' slabs are). */
#define FN_GEMM_MAX_DIM (1L << 30)

/* Fixed tiling for column reductions. The tiles depend on the shape only, never on
 * the thread count, and partial sums are combined in a fixed order, so a column sum
 * is bitwise the same for any number of threads. */
#define FN_REDUCE_ROWS 32
#define FN_REDUCE_COLS 256

#define FN_SIMD _Pragma("omp simd")

/* The loop functions are compiled three times on x86-64 Linux with GCC: for any x86-64
 * CPU, for x86-64-v3 (AVX2, FMA) and for x86-64-v4 (AVX-512); the loader picks the one
 * the CPU runs. A wheel built without -march=native still gets 8- or 16-wide vectors
 * where the CPU has them. On an AVX-512 Xeon the v4 version computed sigmoid, tanh, GELU,
 * SiLU and ELU 1.5-1.8x faster than the v3 one, the optimizers' updates 2-7% faster, and
 * ReLU, bound by memory, as fast (bench/bench_clones.py). (With FMA, a v3 or v4 CPU may
 * round some results differently in the last bit; thread count never changes which
 * version runs.) */
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__) \
    && !defined(FASTNN_NO_CLONES)
#if defined(FASTNN_NO_AVX512) /* a build to compare with (setup.py: FASTNN_NO_AVX512=1) */
#define FN_LOOP_FN static __attribute__((target_clones("arch=x86-64-v3", "default")))
#else
#define FN_LOOP_FN static __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#endif
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

/* expm1(x) for x <= 0 in float, vectorizable: a Taylor polynomial near 0, where
 * exp(x) - 1 would cancel (its error below 2e-8 of the result there), exp(x) - 1 below. */
FN_INLINE float fn_expm1_nonpos_f(float x)
{
    float p = 1.0f / 5040;
    p = p * x + 1.0f / 720;
    p = p * x + 1.0f / 120;
    p = p * x + 1.0f / 24;
    p = p * x + 1.0f / 6;
    p = p * x + 0.5f;
    float small = p * x * x + x;
    float big = fn_exp_nonpos_f(x) - 1.0f;
    return x > -0.35f ? small : big;
}

/* erfc(z) for z >= 0 in float, vectorizable, with a relative error below 1.2e-7 over
 * the whole range (Numerical Recipes' erfcc, a Chebyshev fit of log(erfc(z) / t)). The
 * exponent is clamped at 0: at z = 0 the fit is 3e-8 above it. */
FN_INLINE float fn_erfc_nonneg_f(float z)
{
    float t = 1.0f / (1.0f + 0.5f * z);
    float p = 0.17087277f;
    p = p * t - 0.82215223f;
    p = p * t + 1.48851587f;
    p = p * t - 1.13520398f;
    p = p * t + 0.27886807f;
    p = p * t - 0.18628806f;
    p = p * t + 0.09678418f;
    p = p * t + 0.37409196f;
    p = p * t + 1.00002368f;
    p = p * t - 1.26551223f;
    float e = p - z * z;
    return t * fn_exp_nonpos_f(e < 0.0f ? e : 0.0f);
}

#define FN_T float
#define FN_SUFFIX _f
#define FN_EXP fn_exp_nonpos_f
#define FN_TANH fn_tanh_poly_f
#define FN_FABS fabsf
#define FN_SQRT sqrtf
#define FN_EXPM1_NONPOS fn_expm1_nonpos_f
#define FN_ERFC_NONNEG fn_erfc_nonneg_f
#include "simd_impl.h"
#undef FN_T
#undef FN_SUFFIX
#undef FN_EXP
#undef FN_TANH
#undef FN_FABS
#undef FN_SQRT
#undef FN_EXPM1_NONPOS
#undef FN_ERFC_NONNEG

/* double keeps libm (float64 is for gradient checks; exactness over speed) */
#define FN_T double
#define FN_SUFFIX _d
#define FN_EXP exp
#define FN_TANH tanh
#define FN_FABS fabs
#define FN_SQRT sqrt
#define FN_EXPM1_NONPOS expm1
#define FN_ERFC_NONNEG erfc
#include "simd_impl.h"
#undef FN_T
#undef FN_SUFFIX
#undef FN_EXP
#undef FN_TANH
#undef FN_FABS
#undef FN_SQRT
#undef FN_EXPM1_NONPOS
#undef FN_ERFC_NONNEG

#endif
