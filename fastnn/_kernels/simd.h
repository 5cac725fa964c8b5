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

/* Below this many elements a kernel runs on the calling thread: starting an OpenMP
 * team costs more than the work (measured in bench/bench_kernels.py). */
#define FN_PARALLEL_MIN 32768

/* Fixed tiling for column reductions. The tiles depend on the shape only, never on
 * the thread count, and partial sums are combined in a fixed order, so a column sum
 * is bitwise the same for any number of threads. */
#define FN_REDUCE_ROWS 32
#define FN_REDUCE_COLS 256

#define FN_SIMD _Pragma("omp simd")

/* Counter-based random bits for dropout and augmentation: a 32-bit hash of a 64-bit
 * element index under a 64-bit key (two rounds of murmur3's finalizer). The same
 * (key, index) gives the same bits whatever thread computes it. */
static inline uint32_t fn_fmix32(uint32_t h)
{
    h ^= h >> 16;
    h *= 0x85ebca6bu;
    h ^= h >> 13;
    h *= 0xc2b2ae35u;
    h ^= h >> 16;
    return h;
}

static inline uint32_t fn_hash32(uint64_t index, uint32_t key_lo, uint32_t key_hi)
{
    uint32_t h = fn_fmix32((uint32_t)index * 0x9e3779b9u ^ key_lo);
    return fn_fmix32(h + ((uint32_t)(index >> 32) ^ key_hi));
}
#define FN_CAT_(a, b) a##b
#define FN_CAT(a, b) FN_CAT_(a, b)

#define FN_T float
#define FN_SUFFIX _f
#define FN_EXP expf
#define FN_TANH tanhf
#define FN_FABS fabsf
#define FN_SQRT sqrtf
#include "simd_impl.h"
#undef FN_T
#undef FN_SUFFIX
#undef FN_EXP
#undef FN_TANH
#undef FN_FABS
#undef FN_SQRT

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
