/* Included twice by simd.h, once per floating type: FN_T is the type, FN_NAME(x)
 * appends the type suffix. Do not include directly. */
#define FN_NAME(name) FN_CAT(name, FN_SUFFIX)

/* ---- scalar activations: y = f(x) ---- */
FN_INLINE FN_T FN_NAME(fn_identity)(FN_T x, FN_T slope) { (void)slope; return x; }
/* x < 0 rather than max(x, 0): NaN propagates, as in NumPy and PyTorch. */
FN_INLINE FN_T FN_NAME(fn_relu)(FN_T x, FN_T slope) { (void)slope; return x < 0 ? (FN_T)0 : x; }
/* The product is computed unconditionally so that the select vectorizes. */
FN_INLINE FN_T FN_NAME(fn_leaky_relu)(FN_T x, FN_T slope) { FN_T t = slope * x; return x > 0 ? x : t; }
/* exp of a non-positive argument only (FN_EXP need not handle more): no overflow for
 * any x; exp(-inf) = 0 gives the exact limits 0 and 1. */
FN_INLINE FN_T FN_NAME(fn_sigmoid)(FN_T x, FN_T slope)
{
    (void)slope;
    FN_T e = FN_EXP(-FN_FABS(x));
    FN_T s = (FN_T)1 / ((FN_T)1 + e);
    return x >= 0 ? s : e * s;
}
FN_INLINE FN_T FN_NAME(fn_tanh)(FN_T x, FN_T slope) { (void)slope; return FN_TANH(x); }
/* ELU, alpha in `slope`: x where x > 0, else alpha (exp(x) - 1). The argument of the
 * exponential is clamped at 0 by a select (NaN stays NaN). */
FN_INLINE FN_T FN_NAME(fn_elu)(FN_T x, FN_T slope)
{
    FN_T e = FN_EXPM1_NONPOS(x > 0 ? (FN_T)0 : x);
    FN_T t = slope * e;
    return x > 0 ? x : t;
}
/* Phi(x), the standard normal CDF, = erfc(-x / sqrt 2) / 2: from erfc of |x| / sqrt 2,
 * accurate relative to Phi on both sides (1 + erf(x / sqrt 2) cancels for x << 0). */
FN_INLINE FN_T FN_NAME(fn_normal_cdf)(FN_T x)
{
    FN_T c = (FN_T)0.5 * FN_ERFC_NONNEG(FN_FABS(x) * (FN_T)0.70710678118654752);
    return x < 0 ? c : (FN_T)1 - c;
}
/* GELU: x Phi(x). */
FN_INLINE FN_T FN_NAME(fn_gelu)(FN_T x, FN_T slope) { (void)slope; return x * FN_NAME(fn_normal_cdf)(x); }
/* GELU's tanh approximation: x (1 + tanh(sqrt(2 / pi) (x + 0.044715 x^3))) / 2. */
FN_INLINE FN_T FN_NAME(fn_gelu_tanh)(FN_T x, FN_T slope)
{
    (void)slope;
    FN_T t = FN_TANH((FN_T)0.79788456080286536 * (x + (FN_T)0.044715 * x * x * x));
    return (FN_T)0.5 * x * ((FN_T)1 + t);
}
/* SiLU (swish): x sigmoid(x). */
FN_INLINE FN_T FN_NAME(fn_silu)(FN_T x, FN_T slope) { return x * FN_NAME(fn_sigmoid)(x, slope); }

/* ---- scalar derivatives: dx = g * f'(x), read from the forward OUTPUT y, or from the
 * INPUT x where FN_ACT_READS_INPUT (named x then) ---- */
FN_INLINE FN_T FN_NAME(fn_identity_grad)(FN_T g, FN_T y, FN_T slope) { (void)y; (void)slope; return g; }
FN_INLINE FN_T FN_NAME(fn_relu_grad)(FN_T g, FN_T y, FN_T slope) { (void)slope; return y > 0 ? g : (FN_T)0; }
/* y > 0 exactly where x > 0 when slope >= 0, so the input serves too. */
FN_INLINE FN_T FN_NAME(fn_leaky_relu_grad)(FN_T g, FN_T y, FN_T slope) { FN_T t = slope * g; return y > 0 ? g : t; }
FN_INLINE FN_T FN_NAME(fn_sigmoid_grad)(FN_T g, FN_T y, FN_T slope) { (void)slope; return g * y * ((FN_T)1 - y); }
FN_INLINE FN_T FN_NAME(fn_tanh_grad)(FN_T g, FN_T y, FN_T slope) { (void)slope; return g * ((FN_T)1 - y * y); }
/* ELU: 1 where x > 0, else alpha exp(x) */
FN_INLINE FN_T FN_NAME(fn_elu_grad)(FN_T g, FN_T x, FN_T slope)
{
    FN_T t = g * slope * FN_EXP(x > 0 ? (FN_T)0 : x);
    return x > 0 ? g : t;
}
/* GELU: Phi(x) + x phi(x), phi(x) = exp(-x^2 / 2) / sqrt(2 pi) */
FN_INLINE FN_T FN_NAME(fn_gelu_grad)(FN_T g, FN_T x, FN_T slope)
{
    (void)slope;
    FN_T pdf = (FN_T)0.39894228040143268 * FN_EXP((FN_T)-0.5 * x * x);
    return g * (FN_NAME(fn_normal_cdf)(x) + x * pdf);
}
/* GELU (tanh): (1 + t) / 2 + x (1 - t^2) sqrt(2 / pi) (1 + 3 0.044715 x^2) / 2,
 * t = tanh(sqrt(2 / pi) (x + 0.044715 x^3)) */
FN_INLINE FN_T FN_NAME(fn_gelu_tanh_grad)(FN_T g, FN_T x, FN_T slope)
{
    (void)slope;
    const FN_T k = (FN_T)0.79788456080286536, c = (FN_T)0.044715;
    FN_T x2 = x * x;
    FN_T t = FN_TANH(k * (x + c * x2 * x));
    FN_T d = (FN_T)0.5 * ((FN_T)1 + t)
             + (FN_T)0.5 * x * ((FN_T)1 - t * t) * k * ((FN_T)1 + (FN_T)3 * c * x2);
    return g * d;
}
/* SiLU: s (1 + x (1 - s)), s = sigmoid(x) */
FN_INLINE FN_T FN_NAME(fn_silu_grad)(FN_T g, FN_T x, FN_T slope)
{
    FN_T s = FN_NAME(fn_sigmoid)(x, slope);
    return g * s * ((FN_T)1 + x * ((FN_T)1 - s));
}

/* One loop per activation: a switch inside the loop would stop vectorization. */
#define FN_SWITCH_ACT(act, LOOP, SUFFIX)                       \
    switch (act) {                                             \
    case FN_ACT_RELU: LOOP(FN_CAT(fn_relu, SUFFIX)); break;    \
    case FN_ACT_LEAKY_RELU: LOOP(FN_CAT(fn_leaky_relu, SUFFIX)); break; \
    case FN_ACT_SIGMOID: LOOP(FN_CAT(fn_sigmoid, SUFFIX)); break; \
    case FN_ACT_TANH: LOOP(FN_CAT(fn_tanh, SUFFIX)); break;    \
    case FN_ACT_ELU: LOOP(FN_CAT(fn_elu, SUFFIX)); break;      \
    case FN_ACT_GELU: LOOP(FN_CAT(fn_gelu, SUFFIX)); break;    \
    case FN_ACT_GELU_TANH: LOOP(FN_CAT(fn_gelu_tanh, SUFFIX)); break; \
    case FN_ACT_SILU: LOOP(FN_CAT(fn_silu, SUFFIX)); break;    \
    default: LOOP(FN_CAT(fn_identity, SUFFIX)); break;         \
    }

/* y[i] = f(x[i]); y may be x. */
FN_LOOP_FN void FN_NAME(fn_act_forward)(int act, const FN_T *x, FN_T *y, ptrdiff_t n, FN_T slope)
{
#define FN_LOOP(F) FN_SIMD for (ptrdiff_t i = 0; i < n; i++) y[i] = FN_NAME(F)(x[i], slope)
    FN_SWITCH_ACT(act, FN_LOOP, )
#undef FN_LOOP
}

/* y[r, j] = f(x[r, j] + b[j]) over `rows` rows of `d` columns; y may be x. With z not
 * NULL, also z[r, j] = x[r, j] + b[j] (the input the gradient of f reads); z may be x. */
FN_LOOP_FN void FN_NAME(fn_bias_act_forward)(int act, const FN_T *x, const FN_T *b, FN_T *y,
                                                FN_T *z, ptrdiff_t rows, ptrdiff_t d,
                                                FN_T slope)
{
#define FN_LOOP(F)                                                          \
    for (ptrdiff_t r = 0; r < rows; r++) {                                  \
        const FN_T *xr = x + r * d;                                         \
        FN_T *yr = y + r * d;                                               \
        if (z == NULL) {                                                    \
            FN_SIMD for (ptrdiff_t j = 0; j < d; j++) yr[j] = FN_NAME(F)(xr[j] + b[j], slope); \
        } else {                                                            \
            FN_T *zr = z + r * d;                                           \
            FN_SIMD for (ptrdiff_t j = 0; j < d; j++) {                     \
                FN_T v = xr[j] + b[j];                                      \
                zr[j] = v;                                                  \
                yr[j] = FN_NAME(F)(v, slope);                               \
            }                                                               \
        }                                                                   \
    }
    FN_SWITCH_ACT(act, FN_LOOP, )
#undef FN_LOOP
}

/* dx[i] = g[i] * f'(from y[i], the input where FN_ACT_READS_INPUT); dx may be g. */
FN_LOOP_FN void FN_NAME(fn_act_backward)(int act, const FN_T *g, const FN_T *y, FN_T *dx,
                                            ptrdiff_t n, FN_T slope)
{
#define FN_LOOP(F) FN_SIMD for (ptrdiff_t i = 0; i < n; i++) dx[i] = FN_NAME(F)(g[i], y[i], slope)
    FN_SWITCH_ACT(act, FN_LOOP, _grad)
#undef FN_LOOP
}

/* One row of the fused backward: dx[j] = g[j] * f'(y[j]); acc[j] += dx[j].
 * dx may be g; acc must not overlap anything else. */
FN_LOOP_FN void FN_NAME(fn_act_backward_acc)(int act, const FN_T *g, const FN_T *y, FN_T *dx,
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
FN_LOOP_FN void FN_NAME(fn_add_row)(FN_T *acc, const FN_T *x, ptrdiff_t n)
{
    FN_SIMD for (ptrdiff_t j = 0; j < n; j++) acc[j] += x[j];
}

/* sum of x[0..n); the simd reduction order is fixed at compile time. */
FN_LOOP_FN FN_T FN_NAME(fn_sum)(const FN_T *x, ptrdiff_t n)
{
    FN_T s = 0;
    _Pragma("omp simd reduction(+:s)")
    for (ptrdiff_t j = 0; j < n; j++) s += x[j];
    return s;
}

/* ---- batch normalization (per column j of a row-major tile) ---- */

/* mean[j] and m2[j] = sum_r (x[r, j] - mean[j])^2 over `rows` rows of a tile of
 * `width` columns, row stride `d`. Two passes over a tile that sits in cache. */
FN_LOOP_FN void FN_NAME(fn_tile_mean_m2)(const FN_T *x, ptrdiff_t d, ptrdiff_t rows,
                                            ptrdiff_t width, FN_T *mean, FN_T *m2)
{
    for (ptrdiff_t j = 0; j < width; j++) { mean[j] = 0; m2[j] = 0; }
    for (ptrdiff_t r = 0; r < rows; r++) FN_NAME(fn_add_row)(mean, x + r * d, width);
    FN_T inv = (FN_T)1 / (FN_T)rows;
    FN_SIMD for (ptrdiff_t j = 0; j < width; j++) mean[j] *= inv;
    for (ptrdiff_t r = 0; r < rows; r++) {
        const FN_T *xr = x + r * d;
        FN_SIMD for (ptrdiff_t j = 0; j < width; j++) {
            FN_T c = xr[j] - mean[j];
            m2[j] += c * c;
        }
    }
}

/* The means and biased variances of `width` (<= FN_REDUCE_COLS) columns over `rows`
 * rows, from fn_tile_mean_m2's means and M2s of their tiles of FN_REDUCE_ROWS rows (the
 * last one shorter; tile t's at t * d), merged tile after tile in double (Chan et al.'s
 * pairwise update). Each column's arithmetic is a scalar loop's, in the same order: a
 * column's result does not depend on the vector width, nor on its neighbours. */
FN_LOOP_FN void FN_NAME(fn_merge_mean_m2)(const FN_T *tile_mean, const FN_T *tile_m2,
                                             ptrdiff_t d, ptrdiff_t rows, ptrdiff_t width,
                                             FN_T *mean, FN_T *var)
{
    double acc_mean[FN_REDUCE_COLS], acc_m2[FN_REDUCE_COLS];
    double n_a = rows < FN_REDUCE_ROWS ? (double)rows : (double)FN_REDUCE_ROWS;
    FN_SIMD for (ptrdiff_t j = 0; j < width; j++) {
        acc_mean[j] = tile_mean[j];
        acc_m2[j] = tile_m2[j];
    }
    for (ptrdiff_t r0 = FN_REDUCE_ROWS; r0 < rows; r0 += FN_REDUCE_ROWS) {
        double n_b = rows - r0 < FN_REDUCE_ROWS ? (double)(rows - r0) : (double)FN_REDUCE_ROWS;
        double n_ab = n_a + n_b;
        const FN_T *tm = tile_mean + (r0 / FN_REDUCE_ROWS) * d;
        const FN_T *t2 = tile_m2 + (r0 / FN_REDUCE_ROWS) * d;
        FN_SIMD for (ptrdiff_t j = 0; j < width; j++) {
            double delta = tm[j] - acc_mean[j];
            acc_mean[j] = acc_mean[j] + delta * n_b / n_ab;
            acc_m2[j] = acc_m2[j] + t2[j] + delta * delta * n_a * n_b / n_ab;
        }
        n_a = n_ab;
    }
    FN_SIMD for (ptrdiff_t j = 0; j < width; j++) {
        mean[j] = (FN_T)acc_mean[j];
        var[j] = (FN_T)(acc_m2[j] / (double)rows);
    }
}

/* y[j] = f(x[j] * scale[j] + shift[j]): the normalization and an activation after it
 * (FN_ACT_IDENTITY: none) in one pass; with z not NULL, also z[j] = x[j] * scale[j] +
 * shift[j] (the input the gradient of f reads). y may be x. */
FN_LOOP_FN void FN_NAME(fn_scale_shift)(int act, const FN_T *x, const FN_T *scale,
                                           const FN_T *shift, FN_T *y, FN_T *z, ptrdiff_t n,
                                           FN_T slope)
{
#define FN_LOOP(F)                                                          \
    if (z == NULL) {                                                        \
        FN_SIMD for (ptrdiff_t j = 0; j < n; j++)                           \
            y[j] = FN_NAME(F)(x[j] * scale[j] + shift[j], slope);           \
    } else {                                                                \
        FN_SIMD for (ptrdiff_t j = 0; j < n; j++) {                         \
            FN_T v = x[j] * scale[j] + shift[j];                            \
            z[j] = v;                                                       \
            y[j] = FN_NAME(F)(v, slope);                                    \
        }                                                                   \
    }
    FN_SWITCH_ACT(act, FN_LOOP, )
#undef FN_LOOP
}

/* With xhat = (x - mean) * inv_std: sum_dy[j] += dy[j]; sum_dyx[j] += dy[j] * xhat[j] */
FN_LOOP_FN void FN_NAME(fn_bn_grad_acc)(const FN_T *dy, const FN_T *x, const FN_T *mean,
                                           const FN_T *inv_std, FN_T *sum_dy, FN_T *sum_dyx,
                                           ptrdiff_t n)
{
    FN_SIMD for (ptrdiff_t j = 0; j < n; j++) {
        FN_T g = dy[j];
        sum_dy[j] += g;
        sum_dyx[j] += g * (x[j] - mean[j]) * inv_std[j];
    }
}

/* dx[j] = a[j] * dy[j] - b[j] * (x[j] - mean[j]) - c[j]; the closed-form BN backward
 * with per-column coefficients prepared by the caller. dx may be dy. */
FN_LOOP_FN void FN_NAME(fn_bn_dx)(const FN_T *dy, const FN_T *x, const FN_T *mean,
                                     const FN_T *a, const FN_T *b, const FN_T *c, FN_T *dx,
                                     ptrdiff_t n)
{
    FN_SIMD for (ptrdiff_t j = 0; j < n; j++) dx[j] = a[j] * dy[j] - b[j] * (x[j] - mean[j]) - c[j];
}

/* ---- dropout: y[i] = x[i] * scale, or 0 where the hash of (key, first + i) falls
 * below `threshold` (= p * 2^32). The mask is a pure function of (key, index). ---- */
FN_LOOP_FN void FN_NAME(fn_dropout)(const FN_T *x, FN_T *y, ptrdiff_t n, uint64_t first,
                                       uint32_t key_lo, uint32_t key_hi, uint32_t threshold,
                                       FN_T scale)
{
    FN_SIMD for (ptrdiff_t i = 0; i < n; i++) {
        uint32_t h = fn_hash32((uint64_t)(first + (uint64_t)i), key_lo, key_hi);
        FN_T kept = x[i] * scale; /* read unconditionally: the select then vectorizes */
        y[i] = h < threshold ? (FN_T)0 : kept;
    }
}

/* The gradient of a ReLU and a dropout after it, from the dropout's output y:
 * dx[i] = g[i] * scale where y[i] > 0, else 0. y > 0 exactly where the mask kept a
 * positive ReLU output (scale >= 1 keeps it positive), so this equals the two
 * gradients one after the other without the mask's hashes. dx may be g. */
FN_LOOP_FN void FN_NAME(fn_dropout_gate)(const FN_T *g, const FN_T *y, FN_T *dx, ptrdiff_t n,
                                            FN_T scale)
{
    FN_SIMD for (ptrdiff_t i = 0; i < n; i++) {
        FN_T kept = g[i] * scale;
        dx[i] = y[i] > 0 ? kept : (FN_T)0;
    }
}

/* ---- losses, one row of a (rows, n) score matrix; each returns the row's loss and
 * writes the row's gradient, already multiplied by `scale` (1/rows or 1/numel) ---- */

/* Softmax cross-entropy against the target t = (1 - eps) onehot(y) + eps / n (label
 * smoothing eps, as PyTorch): loss = logsumexp(s) - (1 - eps) s[y] - eps / n sum(s);
 * grad = scale * (softmax(s) - t). eps = 0 skips sum(s) (an -inf logit off the label
 * leaves the plain loss finite). */
FN_LOOP_FN double FN_NAME(fn_softmax_xent_row)(const FN_T *s, ptrdiff_t n, ptrdiff_t y,
                                                  FN_T *grad, FN_T scale, FN_T eps)
{
    FN_T m = s[0];
    for (ptrdiff_t j = 1; j < n; j++) m = s[j] > m ? s[j] : m;
    FN_T total = 0;
    for (ptrdiff_t j = 0; j < n; j++) {
        grad[j] = FN_EXP(s[j] - m);
        total += grad[j];
    }
    FN_T k = scale / total;
    double loss = (double)m + log((double)total);
    if (eps == 0) {
        FN_SIMD for (ptrdiff_t j = 0; j < n; j++) grad[j] *= k;
        grad[y] -= scale;
        return loss - (double)s[y];
    }
    FN_T spread = scale * eps / (FN_T)n;
    double sum = 0;
    for (ptrdiff_t j = 0; j < n; j++) {
        sum += (double)s[j];
        grad[j] = grad[j] * k - spread;
    }
    grad[y] -= scale * ((FN_T)1 - eps);
    return loss - (1 - (double)eps) * (double)s[y] - (double)eps / (double)n * sum;
}

/* Multiclass hinge (SVM): loss = sum_{j != y} max(0, s_j - s_y + margin). */
FN_LOOP_FN double FN_NAME(fn_hinge_row)(const FN_T *s, ptrdiff_t n, ptrdiff_t y, FN_T margin,
                                           FN_T *grad, FN_T scale)
{
    double loss = 0;
    FN_T count = 0;
    FN_T sy = s[y];
    for (ptrdiff_t j = 0; j < n; j++) {
        FN_T v = s[j] - sy + margin;
        int active = j != y && v > 0;
        loss += active ? (double)v : 0.0;
        count += active ? (FN_T)1 : (FN_T)0;
        grad[j] = active ? scale : (FN_T)0;
    }
    grad[y] = -count * scale;
    return loss;
}

/* Squared error: loss = sum (s - t)^2; grad = scale * 2 (s - t). */
FN_LOOP_FN double FN_NAME(fn_mse_row)(const FN_T *s, const FN_T *t, ptrdiff_t n, FN_T *grad,
                                         FN_T scale)
{
    FN_T loss = 0;
    FN_T k = 2 * scale;
    _Pragma("omp simd reduction(+:loss)")
    for (ptrdiff_t j = 0; j < n; j++) {
        FN_T e = s[j] - t[j];
        loss += e * e;
        grad[j] = k * e;
    }
    return (double)loss;
}

/* Binary cross-entropy on logits, stable for any x:
 * loss = max(x, 0) - x t + log1p(exp(-|x|)); grad = scale * (sigmoid(x) - t). */
FN_LOOP_FN double FN_NAME(fn_bce_logits_row)(const FN_T *x, const FN_T *t, ptrdiff_t n,
                                                FN_T *grad, FN_T scale)
{
    double loss = 0;
    for (ptrdiff_t j = 0; j < n; j++) {
        FN_T e = FN_EXP(-FN_FABS(x[j]));
        loss += (double)(x[j] > 0 ? x[j] : 0) - (double)x[j] * (double)t[j] + log1p((double)e);
        grad[j] = scale * (FN_NAME(fn_sigmoid)(x[j], 0) - t[j]);
    }
    return loss;
}

/* ---- weight penalty over a block: R(w) = c2 w^2 + c1 |w| (L2: c2 = 1, c1 = 0; L1: 0, 1;
 * the seed's elastic net: beta, 1). Returns sum R(w) and adds lam * R'(w) into g. ---- */
FN_LOOP_FN double FN_NAME(fn_penalty_block)(const FN_T *w, FN_T *g, ptrdiff_t n, FN_T c2,
                                               FN_T c1, FN_T lam)
{
    FN_T total = 0;
    FN_T k2 = 2 * lam * c2, k1 = lam * c1;
    _Pragma("omp simd reduction(+:total)")
    for (ptrdiff_t i = 0; i < n; i++) {
        FN_T v = w[i];
        FN_T sign = v > 0 ? (FN_T)1 : (v < 0 ? (FN_T)-1 : (FN_T)0);
        total += c2 * v * v + c1 * FN_FABS(v);
        g[i] += k2 * v + k1 * sign;
    }
    return (double)total;
}

/* ---- optimizer updates over a span of n parameters; p, g and the state arrays are
 * distinct (restrict) so that every loop vectorizes. wd is L2 weight decay added to
 * the gradient (g + wd p), as torch.optim does. ---- */

/* SGD; with momentum: v = mu v + g', and p -= lr v (Nesterov: p -= lr (g' + mu v)). */
FN_LOOP_FN void FN_NAME(fn_sgd)(FN_T *restrict p, const FN_T *restrict g, FN_T *restrict v,
                                   ptrdiff_t n, FN_T lr, FN_T mu, FN_T wd, int nesterov)
{
    if (v == NULL) {
        FN_SIMD for (ptrdiff_t i = 0; i < n; i++) p[i] -= lr * (g[i] + wd * p[i]);
    } else if (nesterov) {
        FN_SIMD for (ptrdiff_t i = 0; i < n; i++) {
            FN_T d = g[i] + wd * p[i];
            FN_T b = mu * v[i] + d;
            v[i] = b;
            p[i] -= lr * (d + mu * b);
        }
    } else {
        FN_SIMD for (ptrdiff_t i = 0; i < n; i++) {
            FN_T b = mu * v[i] + (g[i] + wd * p[i]);
            v[i] = b;
            p[i] -= lr * b;
        }
    }
}

/* Adagrad: s += g'^2; p -= lr g' / (sqrt(s) + eps). */
FN_LOOP_FN void FN_NAME(fn_adagrad)(FN_T *restrict p, const FN_T *restrict g, FN_T *restrict s,
                                       ptrdiff_t n, FN_T lr, FN_T eps, FN_T wd)
{
    FN_SIMD for (ptrdiff_t i = 0; i < n; i++) {
        FN_T d = g[i] + wd * p[i];
        FN_T acc = s[i] + d * d;
        s[i] = acc;
        p[i] -= lr * d / (FN_SQRT(acc) + eps);
    }
}

/* RMSProp: s = alpha s + (1 - alpha) g'^2; p -= lr g' / (sqrt(s) + eps). */
FN_LOOP_FN void FN_NAME(fn_rmsprop)(FN_T *restrict p, const FN_T *restrict g, FN_T *restrict s,
                                       ptrdiff_t n, FN_T lr, FN_T alpha, FN_T eps, FN_T wd)
{
    FN_SIMD for (ptrdiff_t i = 0; i < n; i++) {
        FN_T d = g[i] + wd * p[i];
        FN_T acc = alpha * s[i] + (1 - alpha) * d * d;
        s[i] = acc;
        p[i] -= lr * d / (FN_SQRT(acc) + eps);
    }
}

/* Adam / AdamW: m = b1 m + (1 - b1) g'; v = b2 v + (1 - b2) g'^2;
 * p -= step * m / (sqrt(v) * inv_sqrt_bc2 + eps), step = lr / (1 - b1^t),
 * inv_sqrt_bc2 = 1 / sqrt(1 - b2^t). Adam: g' = g + wd p. AdamW (decoupled): g' = g
 * and p *= 1 - lr wd first (the caller passes wd = 0 and decay = 1 - lr wd). */
FN_LOOP_FN void FN_NAME(fn_adam)(FN_T *restrict p, const FN_T *restrict g, FN_T *restrict m,
                                    FN_T *restrict v, ptrdiff_t n, FN_T step, FN_T b1, FN_T b2,
                                    FN_T eps, FN_T inv_sqrt_bc2, FN_T wd, FN_T decay)
{
    FN_SIMD for (ptrdiff_t i = 0; i < n; i++) {
        FN_T w = p[i] * decay;
        FN_T d = g[i] + wd * w;
        FN_T mi = b1 * m[i] + (1 - b1) * d;
        FN_T vi = b2 * v[i] + (1 - b2) * d * d;
        m[i] = mi;
        v[i] = vi;
        p[i] = w - step * mi / (FN_SQRT(vi) * inv_sqrt_bc2 + eps);
    }
}

/* sum of x[i]^2, accumulated in double so that large finite float gradients do not
 * overflow, in 32 partial sums combined in a fixed order: one vector of sums waits on
 * the latency of its adds (3.5 x slower on 8 MB, AMD Zen 4), 32 run at memory speed */
FN_LOOP_FN double FN_NAME(fn_sum_squares)(const FN_T *x, ptrdiff_t n)
{
    enum { PARTS = 32 };
    double part[PARTS] = {0};
    ptrdiff_t i = 0;
    for (; i + PARTS <= n; i += PARTS) {
        FN_SIMD for (int j = 0; j < PARTS; j++) part[j] += (double)x[i + j] * (double)x[i + j];
    }
    double s = 0;
    for (int j = 0; j < PARTS; j++) s += part[j];
    for (; i < n; i++) s += (double)x[i] * (double)x[i];
    return s;
}

/* 1 when some x[i] is infinite or NaN, else 0: x * 0 is a zero for every finite x and
 * NaN for the others, so the sum of them all is NaN exactly when one is. Cheaper than a
 * sum of squares in double (1.9x on 1.86 million floats, AMD Zen 4: no conversions), and
 * never overflows. 64 partial sums, so that the adds do not wait on each other. */
FN_LOOP_FN int FN_NAME(fn_any_nonfinite)(const FN_T *x, ptrdiff_t n)
{
    enum { PARTS = 64 };
    FN_T part[PARTS] = {0};
    ptrdiff_t i = 0;
    for (; i + PARTS <= n; i += PARTS) {
        FN_SIMD for (int j = 0; j < PARTS; j++) part[j] += x[i + j] * (FN_T)0;
    }
    FN_T s = 0;
    for (int j = 0; j < PARTS; j++) s += part[j];
    for (; i < n; i++) s += x[i] * (FN_T)0;
    return s != s;
}

/* The backward of one plane of a 2x2, stride-2 max pool whose windows tile it: g and
 * argmax (the plane index of each window's max) of its n outputs, dx its `cells` input
 * cells. Each cell gets g where it won its window, else 0: zeros, then one store per
 * window (windows that tile the plane have distinct winners: no conflicts). A plane a
 * call: rows of 7 or 14 outputs, a call each, were too short to vectorize well. */
FN_LOOP_FN void FN_NAME(fn_maxpool2_plane_backward)(const FN_T *restrict g,
                                                     const int *restrict argmax,
                                                     FN_T *restrict dx, ptrdiff_t n,
                                                     ptrdiff_t cells)
{
    memset(dx, 0, (size_t)cells * sizeof(FN_T));
    FN_SIMD for (ptrdiff_t o = 0; o < n; o++) dx[argmax[o]] = g[o];
}

#undef FN_NAME
