# Declarations of the vectorized inner loops in simd.h (float: _f, double: _d).

cdef extern from "simd.h" nogil:
    int FN_ACT_IDENTITY, FN_ACT_RELU, FN_ACT_LEAKY_RELU, FN_ACT_SIGMOID, FN_ACT_TANH
    int FN_PARALLEL_MIN, FN_REDUCE_ROWS, FN_REDUCE_COLS

    void fn_act_forward_f(int act, const float *x, float *y, Py_ssize_t n, float slope)
    void fn_act_forward_d(int act, const double *x, double *y, Py_ssize_t n, double slope)
    void fn_bias_act_forward_f(int act, const float *x, const float *b, float *y,
                               Py_ssize_t rows, Py_ssize_t d, float slope)
    void fn_bias_act_forward_d(int act, const double *x, const double *b, double *y,
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
    double fn_sum_d(const double *x, Py_ssize_t n)
