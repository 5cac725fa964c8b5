/* Included twice by simd.h, once per floating type: FN_T is the type, FN_NAME(x)
 * appends the type suffix. Do not include directly. */
#define FN_NAME(name) FN_CAT(name, FN_SUFFIX)

/* ---- scalar activations: y = f(x) ---- */
static inline FN_T FN_NAME(fn_identity)(FN_T x, FN_T slope) { (void)slope; return x; }
/* x < 0 rather than max(x, 0): NaN propagates, as in NumPy and PyTorch. */
static inline FN_T FN_NAME(fn_relu)(FN_T x, FN_T slope) { (void)slope; return x < 0 ? (FN_T)0 : x; }
static inline FN_T FN_NAME(fn_leaky_relu)(FN_T x, FN_T slope) { return x > 0 ? x : slope * x; }
/* exp of a non-positive argument only: no overflow for any x; exp(-inf) = 0 gives
 * the exact limits 0 and 1. */
static inline FN_T FN_NAME(fn_sigmoid)(FN_T x, FN_T slope)
{
    (void)slope;
    FN_T e = FN_EXP(-FN_FABS(x));
    FN_T s = (FN_T)1 / ((FN_T)1 + e);
    return x >= 0 ? s : e * s;
}
static inline FN_T FN_NAME(fn_tanh)(FN_T x, FN_T slope) { (void)slope; return FN_TANH(x); }

/* ---- scalar derivatives from the forward OUTPUT y: dx = g * f'(x) ---- */
static inline FN_T FN_NAME(fn_identity_grad)(FN_T g, FN_T y, FN_T slope) { (void)y; (void)slope; return g; }
static inline FN_T FN_NAME(fn_relu_grad)(FN_T g, FN_T y, FN_T slope) { (void)slope; return y > 0 ? g : (FN_T)0; }
/* y > 0 exactly where x > 0 when slope >= 0, so the input serves too. */
static inline FN_T FN_NAME(fn_leaky_relu_grad)(FN_T g, FN_T y, FN_T slope) { return y > 0 ? g : slope * g; }
static inline FN_T FN_NAME(fn_sigmoid_grad)(FN_T g, FN_T y, FN_T slope) { (void)slope; return g * y * ((FN_T)1 - y); }
static inline FN_T FN_NAME(fn_tanh_grad)(FN_T g, FN_T y, FN_T slope) { (void)slope; return g * ((FN_T)1 - y * y); }

/* One loop per activation: a switch inside the loop would stop vectorization. */
#define FN_SWITCH_ACT(act, LOOP, SUFFIX)                       \
    switch (act) {                                             \
    case FN_ACT_RELU: LOOP(FN_CAT(fn_relu, SUFFIX)); break;    \
    case FN_ACT_LEAKY_RELU: LOOP(FN_CAT(fn_leaky_relu, SUFFIX)); break; \
    case FN_ACT_SIGMOID: LOOP(FN_CAT(fn_sigmoid, SUFFIX)); break; \
    case FN_ACT_TANH: LOOP(FN_CAT(fn_tanh, SUFFIX)); break;    \
    default: LOOP(FN_CAT(fn_identity, SUFFIX)); break;         \
    }

/* y[i] = f(x[i]); y may be x. */
static inline void FN_NAME(fn_act_forward)(int act, const FN_T *x, FN_T *y, ptrdiff_t n, FN_T slope)
{
#define FN_LOOP(F) FN_SIMD for (ptrdiff_t i = 0; i < n; i++) y[i] = FN_NAME(F)(x[i], slope)
    FN_SWITCH_ACT(act, FN_LOOP, )
#undef FN_LOOP
}

/* y[r, j] = f(x[r, j] + b[j]) over `rows` rows of `d` columns; y may be x. */
static inline void FN_NAME(fn_bias_act_forward)(int act, const FN_T *x, const FN_T *b, FN_T *y,
                                                ptrdiff_t rows, ptrdiff_t d, FN_T slope)
{
#define FN_LOOP(F)                                                          \
    for (ptrdiff_t r = 0; r < rows; r++) {                                  \
        const FN_T *xr = x + r * d;                                         \
        FN_T *yr = y + r * d;                                               \
        FN_SIMD for (ptrdiff_t j = 0; j < d; j++) yr[j] = FN_NAME(F)(xr[j] + b[j], slope); \
    }
    FN_SWITCH_ACT(act, FN_LOOP, )
#undef FN_LOOP
}

/* dx[i] = g[i] * f'(from y[i]); dx may be g. */
static inline void FN_NAME(fn_act_backward)(int act, const FN_T *g, const FN_T *y, FN_T *dx,
                                            ptrdiff_t n, FN_T slope)
{
#define FN_LOOP(F) FN_SIMD for (ptrdiff_t i = 0; i < n; i++) dx[i] = FN_NAME(F)(g[i], y[i], slope)
    FN_SWITCH_ACT(act, FN_LOOP, _grad)
#undef FN_LOOP
}

/* One row of the fused backward: dx[j] = g[j] * f'(y[j]); acc[j] += dx[j].
 * dx may be g; acc must not overlap anything else. */
static inline void FN_NAME(fn_act_backward_acc)(int act, const FN_T *g, const FN_T *y, FN_T *dx,
                                                FN_T *acc, ptrdiff_t n, FN_T slope)
{
#define FN_LOOP(F)                                                          \
    FN_SIMD for (ptrdiff_t j = 0; j < n; j++) {                             \
        FN_T v = FN_NAME(F)(g[j], y[j], slope);                             \
        dx[j] = v;                                                          \
        acc[j] += v;                                                        \
    }
    FN_SWITCH_ACT(act, FN_LOOP, _grad)
#undef FN_LOOP
}

/* acc[j] += x[j] */
static inline void FN_NAME(fn_add_row)(FN_T *acc, const FN_T *x, ptrdiff_t n)
{
    FN_SIMD for (ptrdiff_t j = 0; j < n; j++) acc[j] += x[j];
}

/* sum of x[0..n); the simd reduction order is fixed at compile time. */
static inline FN_T FN_NAME(fn_sum)(const FN_T *x, ptrdiff_t n)
{
    FN_T s = 0;
    _Pragma("omp simd reduction(+:s)")
    for (ptrdiff_t j = 0; j < n; j++) s += x[j];
    return s;
}

#undef FN_NAME
