# Declarations of the vectorized inner loops in simd.h (float: _f, double: _d).

cdef extern from "simd.h" nogil:
    int FN_ACT_IDENTITY, FN_ACT_RELU, FN_ACT_LEAKY_RELU, FN_ACT_SIGMOID, FN_ACT_TANH
    int FN_ACT_ELU, FN_ACT_GELU, FN_ACT_GELU_TANH, FN_ACT_SILU
    bint FN_ACT_READS_INPUT(int act)
    int FN_CHUNK, FN_PARALLEL_MIN, FN_REDUCE_ROWS, FN_REDUCE_COLS, FN_GEMM_NARROW
    long FN_GEMM_PARALLEL_MIN, FN_GEMM_MAX_DIM

    void fn_act_forward_f(int act, const float *x, float *y, Py_ssize_t n, float slope)
    void fn_act_forward_d(int act, const double *x, double *y, Py_ssize_t n, double slope)
    void fn_bias_act_forward_f(int act, const float *x, const float *b, float *y, float *z,
                               Py_ssize_t rows, Py_ssize_t d, float slope)
    void fn_bias_act_forward_d(int act, const double *x, const double *b, double *y, double *z,
                               Py_ssize_t rows, Py_ssize_t d, double slope)
    void fn_act_backward_f(int act, const float *g, const float *y, float *dx,
                           Py_ssize_t n, float slope)
    void fn_act_backward_d(int act, const double *g, const double *y, double *dx,
                           Py_ssize_t n, double slope)
    void fn_act_backward_acc_f(int act, const float *g, const float *y, float *dx,
                               float *acc, Py_ssize_t n, float slope)
    void fn_act_backward_acc_d(int act, const double *g, const double *y, double *dx,
                               double *acc, Py_ssize_t n, double slope)
    void fn_add_row_f(float *acc, const float *x, Py_ssize_t n)
    void fn_add_row_d(double *acc, const double *x, Py_ssize_t n)
    float fn_sum_f(const float *x, Py_ssize_t n)
    void fn_maxpool2_plane_backward_f(const float *g, const int *argmax, float *dx,
                                      Py_ssize_t n, Py_ssize_t cells)
    void fn_maxpool2_plane_backward_d(const double *g, const int *argmax, double *dx,
                                      Py_ssize_t n, Py_ssize_t cells)
    double fn_sum_d(const double *x, Py_ssize_t n)

    void fn_tile_mean_m2_f(const float *x, Py_ssize_t d, Py_ssize_t rows, Py_ssize_t width,
                           float *mean, float *m2)
    void fn_tile_mean_m2_d(const double *x, Py_ssize_t d, Py_ssize_t rows, Py_ssize_t width,
                           double *mean, double *m2)
    void fn_merge_mean_m2_f(const float *tile_mean, const float *tile_m2, Py_ssize_t d,
                            Py_ssize_t rows, Py_ssize_t width, float *mean, float *var)
    void fn_merge_mean_m2_d(const double *tile_mean, const double *tile_m2, Py_ssize_t d,
                            Py_ssize_t rows, Py_ssize_t width, double *mean, double *var)
    void fn_scale_shift_f(int act, const float *x, const float *scale, const float *shift,
                          float *y, float *z, Py_ssize_t n, float slope)
    void fn_scale_shift_d(int act, const double *x, const double *scale,
                          const double *shift, double *y, double *z, Py_ssize_t n,
                          double slope)
    void fn_bn_grad_acc_f(const float *dy, const float *x, const float *mean,
                          const float *inv_std, float *sum_dy, float *sum_dyx, Py_ssize_t n)
    void fn_bn_grad_acc_d(const double *dy, const double *x, const double *mean,
                          const double *inv_std, double *sum_dy, double *sum_dyx, Py_ssize_t n)
    void fn_bn_dx_f(const float *dy, const float *x, const float *mean, const float *a,
                    const float *b, const float *c, float *dx, Py_ssize_t n)
    void fn_bn_dx_d(const double *dy, const double *x, const double *mean, const double *a,
                    const double *b, const double *c, double *dx, Py_ssize_t n)
    void fn_dropout_f(const float *x, float *y, Py_ssize_t n, unsigned long long first,
                      unsigned int key_lo, unsigned int key_hi, unsigned int threshold,
                      float scale)
    void fn_dropout_d(const double *x, double *y, Py_ssize_t n, unsigned long long first,
                      unsigned int key_lo, unsigned int key_hi, unsigned int threshold,
                      double scale)
    void fn_dropout_gate_f(const float *g, const float *y, float *dx, Py_ssize_t n,
                           float scale)
    void fn_dropout_gate_d(const double *g, const double *y, double *dx, Py_ssize_t n,
                           double scale)
    double fn_softmax_xent_row_f(const float *s, Py_ssize_t n, Py_ssize_t y, float *grad,
                                 float scale, float eps)
    double fn_softmax_xent_row_d(const double *s, Py_ssize_t n, Py_ssize_t y, double *grad,
                                 double scale, double eps)
    double fn_hinge_row_f(const float *s, Py_ssize_t n, Py_ssize_t y, float margin, float *grad,
                          float scale)
    double fn_hinge_row_d(const double *s, Py_ssize_t n, Py_ssize_t y, double margin,
                          double *grad, double scale)
    double fn_mse_row_f(const float *s, const float *t, Py_ssize_t n, float *grad, float scale)
    double fn_mse_row_d(const double *s, const double *t, Py_ssize_t n, double *grad,
                        double scale)
    double fn_bce_logits_row_f(const float *x, const float *t, Py_ssize_t n, float *grad,
                               float scale)
    double fn_bce_logits_row_d(const double *x, const double *t, Py_ssize_t n, double *grad,
                               double scale)
    double fn_penalty_block_f(const float *w, float *g, Py_ssize_t n, float c2, float c1,
                              float lam)
    double fn_penalty_block_d(const double *w, double *g, Py_ssize_t n, double c2, double c1,
                              double lam)
    void fn_sgd_f(float *p, const float *g, float *v, Py_ssize_t n, float lr, float mu,
                  float wd, int nesterov)
    void fn_sgd_d(double *p, const double *g, double *v, Py_ssize_t n, double lr, double mu,
                  double wd, int nesterov)
    void fn_adagrad_f(float *p, const float *g, float *s, Py_ssize_t n, float lr, float eps,
                      float wd)
    void fn_adagrad_d(double *p, const double *g, double *s, Py_ssize_t n, double lr,
                      double eps, double wd)
    void fn_rmsprop_f(float *p, const float *g, float *s, Py_ssize_t n, float lr, float alpha,
                      float eps, float wd)
    void fn_rmsprop_d(double *p, const double *g, double *s, Py_ssize_t n, double lr,
                      double alpha, double eps, double wd)
    void fn_adam_f(float *p, const float *g, float *m, float *v, Py_ssize_t n, float step,
                   float b1, float b2, float eps, float inv_sqrt_bc2, float wd, float decay)
    void fn_adam_d(double *p, const double *g, double *m, double *v, Py_ssize_t n, double step,
                   double b1, double b2, double eps, double inv_sqrt_bc2, double wd,
                   double decay)
    double fn_sum_squares_f(const float *x, Py_ssize_t n)
    double fn_sum_squares_d(const double *x, Py_ssize_t n)
    int fn_any_nonfinite_f(const float *x, Py_ssize_t n)
    int fn_any_nonfinite_d(const double *x, Py_ssize_t n)
