# A kernel op that a compiled plan (network.pyx) runs without knowing what it computes.
#
# A layer family's kernel module (conv.pyx, pool.pyx, ...) subclasses KernelOp: its
# constructor checks and keeps the arrays the op reads and writes (parameters,
# gradients, buffers, its own workspaces), points `state` at a C struct of its own and
# sets the two function pointers. The plan, and the layer's own forward/backward
# through run_forward/run_backward, call the same functions: one core, two callers.
#
# Per call, arrays are (rows, d) of the op's dtype, C-contiguous, per-sample shapes
# in_shape -> out_shape flattened (images are N, C, H, W: d = C * H * W).
#   forward(state, x, y, rows, n_threads): y = f(x)
#   backward(state, x, y, g, dx, rows, input_grad, n_threads): accumulate parameter
#       gradients for g = d(loss)/dy (into the gradient arrays given at construction,
#       skipping those given as None: frozen), and write dx = d(loss)/dx unless
#       input_grad is false. x and y are those of the last forward; g is never written.
# Both return 0, or -1 when out of memory. Results must not depend on n_threads.

ctypedef int (*kernel_forward_t)(void *state, const void *x, void *y, Py_ssize_t rows,
                                 int n_threads) noexcept nogil
ctypedef int (*kernel_backward_t)(void *state, const void *x, const void *y,
                                  const void *g, void *dx, Py_ssize_t rows,
                                  bint input_grad, int n_threads) noexcept nogil


cdef class KernelOp:
    cdef kernel_forward_t forward_fn
    cdef kernel_backward_t backward_fn
    cdef void *state
    cdef readonly object dtype
    cdef readonly Py_ssize_t rows           # the batch size it was made for
    cdef readonly tuple in_shape, out_shape  # per sample
    cdef readonly Py_ssize_t d_in, d_out     # their products
    cdef readonly bint reads_y               # whether backward reads y
    cdef list keep                           # arrays the state points into

    cdef void *pointer(self, array, Py_ssize_t size) except? NULL
    cdef void *workspace(self, Py_ssize_t size) except NULL
