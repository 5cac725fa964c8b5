"""Whole-network passes: the forward and the backward pass of a chain of ops (GEMM with
a bias/activation epilogue, batch normalization, activation, dropout, the kernel ops of
other layer families, residual branches), each in one call with the GIL released and no
Python between the ops.

A Plan is built once per batch size: fastnn.nn.Sequential asks each layer to add its
op(s) (Module.add_to_plan), from the layers' own
parameter, gradient and buffer arrays and from workspaces it allocates. It runs the
same kernel cores as the per-layer entry points (the .pxi files, included here), in the
same order and with the same thread count, so its results are bitwise those of the
layer-by-layer path; what it saves is the Python between the kernels, which dominates
small batches. Arrays are checked when the Plan is built; here they are trusted.
"""

from cython cimport floating
from cython.parallel cimport prange
# one-thread parallel regions skip the OpenMP runtime (see the header)
cdef extern from "omp_serial.h":
    pass
from libc.limits cimport INT_MAX
from libc.math cimport sqrt
from libc.stdint cimport int64_t, uint64_t
from libc.stdlib cimport calloc, free, malloc
from libc.string cimport memcpy, memset

import numpy as np

from .backend cimport BlasFns, blas_fns, to_other
from .blas cimport gemm, gemm_threads
from .planop cimport KernelOp, kernel_backward_t, kernel_forward_t
from .simd cimport (
    FN_ACT_IDENTITY,
    FN_ACT_READS_INPUT,
    FN_ACT_RELU,
    FN_CHUNK,
    FN_GEMM_MAX_DIM,
    FN_GEMM_PARALLEL_MIN,
    FN_PARALLEL_MIN,
    FN_REDUCE_COLS,
    FN_REDUCE_ROWS,
    fn_act_backward_acc_d,
    fn_act_backward_acc_f,
    fn_act_backward_d,
    fn_act_backward_f,
    fn_act_forward_d,
    fn_act_forward_f,
    fn_add_row_d,
    fn_add_row_f,
    fn_bias_act_forward_d,
    fn_bias_act_forward_f,
    fn_bn_dx_d,
    fn_bn_dx_f,
    fn_bn_grad_acc_d,
    fn_bn_grad_acc_f,
    fn_dropout_d,
    fn_dropout_f,
    fn_dropout_gate_d,
    fn_dropout_gate_f,
    fn_merge_mean_m2_d,
    fn_merge_mean_m2_f,
    fn_scale_shift_d,
    fn_scale_shift_f,
    fn_tile_mean_m2_d,
    fn_tile_mean_m2_f,
)

include "matmul_core.pxi"
include "reduce_core.pxi"
include "bn_core.pxi"
include "activation_core.pxi"
include "dropout_core.pxi"


cdef enum:
    OP_LINEAR = 0
    OP_BATCHNORM = 1
    OP_ACTIVATION = 2
    OP_DROPOUT = 3
    OP_KERNEL = 4       # a KernelOp: function pointers over a state of its own
    OP_RESIDUAL = 5     # y = f(block(x) + shortcut(x)), each branch a plan of its own


cdef struct Op:
    int kind
    int act             # activation code (Linear, BatchNorm1d, Residual: of its epilogue)
    double slope
    bint grad_from_x    # activation backward reads the forward input (LeakyReLU)
    bint has_act        # Linear, BatchNorm1d, Residual: an activation in its epilogue
    bint gated          # a ReLU whose gradient the dropout right after it applies (with
                        # its own): the backward pass skips it
    Py_ssize_t d_in, d_out
    # Linear
    void *w
    void *w_grad
    void *b             # the bias, or zeros when there is none but an activation;
                        # NULL: no epilogue
    void *b_grad        # NULL without a bias
    bint w_assign       # the first op of a backward pass to write w_grad (b_grad): in
    bint b_assign       # a pass that assigns gradients, it writes them, not adds
    void *dz            # activation gradient (rows x d_out); NULL without activation or
                        # when gated (Linear), then the upstream gradient is dz
    void *db            # bias-gradient column sums (d_out)
    void *z             # Linear, BatchNorm1d, Residual: the epilogue's input, kept for an
                        # activation whose gradient reads it (rows x d_out); else NULL
    # BatchNorm1d (w, b, w_grad, b_grad: gamma, beta and their gradients)
    void *running_mean
    void *running_var
    void *mean
    void *inv_std
    double momentum, eps
    bint training
    # Dropout
    uint64_t *seed
    int64_t *step
    uint64_t key
    unsigned int threshold
    double scale
    bint active, zero   # dropping at all; dropping everything (p == 1)
    bint gate           # after a ReLU, over its output: the gradient is g * scale where
                        # y > 0, which is the dropout's and the ReLU's (see add_dropout)
    # KernelOp
    kernel_forward_t k_forward
    kernel_backward_t k_backward
    void *k_state
    # Residual (act, slope, has_act, dz: its epilogue): the branches' op tables; a
    # shortcut of n_short == 0 ops is the identity
    Op *block
    Op *short
    int n_block, n_short
    void *block_dx      # where each branch's input gradient ends; NULL: the gradient
    void *short_dx      # it was given (no op of the branch changes it)
    # every layer
    bint y_read         # whether the backward pass reads y (else an activation right
                        # after may work in place over it)
    void *y             # forward output (rows x d_out); NULL when it passes x on
    void *dx            # input gradient (rows x d_in)
    const void *x       # the forward input, for the backward pass


cdef inline uint64_t _splitmix64(uint64_t z) noexcept nogil:
    z = z + 0x9E3779B97F4A7C15ULL
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL
    return z ^ (z >> 31)


cdef inline void *_address(array):
    return <void *> <size_t> array.__array_interface__["data"][0]


cdef inline void _add_to(floating *dst, const floating *src, Py_ssize_t n,
                         bint assign) noexcept nogil:
    """dst = src (assign) or dst += src, n elements."""
    cdef Py_ssize_t j
    if assign:
        memcpy(dst, src, n * sizeof(floating))
    else:
        for j in range(n):
            dst[j] = dst[j] + src[j]


cdef inline void _apply_dropout(const Op *op, const floating *src, floating *dst,
                                Py_ssize_t rows, int n_threads) noexcept nogil:
    """dst = src with op's mask of this step (all zero when p == 1)."""
    if op.zero:
        memset(dst, 0, rows * op.d_out * sizeof(floating))
    else:
        _dropout(src, dst, rows * op.d_out, op.key, op.threshold, <floating> op.scale,
                 n_threads)


cdef void _add_act(int act, const floating *a, const floating *b, floating *y, floating *z,
                   Py_ssize_t n, floating slope, int n_threads) noexcept nogil:
    """y = act(a + b), element-wise, in chunks over threads; y may be a or b. z: NULL,
    or where a + b goes too (for an act whose gradient reads its input)."""
    cdef Py_ssize_t chunks = (n + FN_CHUNK - 1) // FN_CHUNK
    cdef Py_ssize_t c, lo, size
    cdef int parts = n_threads if n >= FN_PARALLEL_MIN else 1
    cdef floating *s = y if z == NULL else z  # where the sum goes
    for c in prange(chunks, schedule='static', num_threads=parts):
        lo = c * FN_CHUNK
        size = min(FN_CHUNK, n - lo)
        if s + lo != a + lo:
            memcpy(s + lo, a + lo, size * sizeof(floating))
        if floating is float:
            fn_add_row_f(s + lo, b + lo, size)
            if act != FN_ACT_IDENTITY:
                fn_act_forward_f(act, s + lo, y + lo, size, slope)
        else:
            fn_add_row_d(s + lo, b + lo, size)
            if act != FN_ACT_IDENTITY:
                fn_act_forward_d(act, s + lo, y + lo, size, slope)


cdef inline const void *_act_read(const Op *op) noexcept nogil:
    """What the gradient of an epilogue's activation reads: its input or its output."""
    return op.y if op.z == NULL else op.z


cdef int _forward(Op *ops, int n_ops, Py_ssize_t rows, const floating *x,
                  const floating **out, int n_threads) noexcept nogil:
    """The forward pass from x; *out is the last output. -1 when out of memory."""
    cdef Op *op
    cdef int i
    cdef floating *y
    cdef floating *z
    cdef const floating *yb
    cdef const floating *ys
    for i in range(n_ops):
        op = &ops[i]
        op.x = x
        y = <floating *> op.y
        if op.kind == OP_LINEAR:
            z = y if op.z == NULL else <floating *> op.z
            _matmul(False, False, rows, op.d_out, op.d_in, x, op.d_in, <floating *> op.w,
                    op.d_out, 0, z, n_threads)
            if op.b != NULL:
                _bias_act_forward(op.act, z, <floating *> op.b, y, <floating *> op.z, rows,
                                  op.d_out, <floating> op.slope, n_threads)
        elif op.kind == OP_BATCHNORM:
            if _bn_forward(x, rows, op.d_out, <floating *> op.w, <floating *> op.b,
                           <floating *> op.running_mean, <floating *> op.running_var,
                           op.training, op.momentum, op.eps, <floating *> op.mean,
                           <floating *> op.inv_std, y, n_threads, op.act,
                           <floating> op.slope, <floating *> op.z) != 0:
                return -1
        elif op.kind == OP_ACTIVATION:
            _act_forward(op.act, x, y, rows * op.d_out, <floating> op.slope, n_threads)
        elif op.kind == OP_DROPOUT:
            if not op.active:
                continue
            # the key of this call, then one more train-mode forward (as nn.Dropout)
            op.key = _splitmix64(_splitmix64(op.seed[0]) ^ <uint64_t> op.step[0])
            op.step[0] += 1
            _apply_dropout(op, x, y, rows, n_threads)
        elif op.kind == OP_KERNEL:
            if op.k_forward(op.k_state, x, y, rows, n_threads) != 0:
                return -1
        elif op.kind == OP_RESIDUAL:
            if _forward(op.block, op.n_block, rows, x, &yb, n_threads) != 0:
                return -1
            ys = x
            if op.n_short and _forward(op.short, op.n_short, rows, x, &ys, n_threads) != 0:
                return -1
            _add_act(op.act, yb, ys, y, <floating *> op.z, rows * op.d_out,
                     <floating> op.slope, n_threads)
        x = y
    out[0] = x
    return 0


cdef int _backward(Op *ops, int n_ops, Py_ssize_t rows, const floating *g,
                   bint input_grad, int n_threads, bint assign) noexcept nogil:
    """The backward pass from g = d(loss)/d(output), accumulating parameter gradients
    (assign: the first op to write each one writes it, not adds to it, see
    Plan.assigns); the input gradient ends in ops[0].dx. -1 when out of memory."""
    cdef Op *op
    cdef int i
    cdef floating *dx
    cdef const floating *dz
    cdef floating *db
    cdef floating *w_grad
    cdef const floating *gb
    cdef const floating *gs
    for i in range(n_ops - 1, -1, -1):
        op = &ops[i]
        dx = <floating *> op.dx
        if op.kind == OP_LINEAR:
            db = <floating *> op.db
            if op.dz == NULL:
                dz = g
                if _column_sums(SUM_X, 0, g, NULL, NULL, NULL, NULL, db, NULL, rows,
                                op.d_out, 0, n_threads) != 0:
                    return -1
            else:
                dz = <floating *> op.dz
                if _column_sums(SUM_ACT_GRAD, op.act, g, <const floating *> _act_read(op),
                                <floating *> dz, NULL, NULL, db, NULL, rows, op.d_out,
                                <floating> op.slope, n_threads) != 0:
                    return -1
            if op.w_grad != NULL:  # NULL: the weight is frozen
                _matmul(True, False, op.d_in, op.d_out, rows, <const floating *> op.x,
                        op.d_in, dz, op.d_out, 0 if assign and op.w_assign else 1,
                        <floating *> op.w_grad, n_threads)
            if op.b_grad != NULL:
                _add_to(<floating *> op.b_grad, db, op.d_out, assign and op.b_assign)
            if i == 0 and not input_grad:
                return 0
            _matmul(False, True, rows, op.d_in, op.d_out, dz, op.d_out, <floating *> op.w,
                    op.d_out, 0, dx, n_threads)
        elif op.kind == OP_BATCHNORM:
            if op.has_act and not op.gated:  # the epilogue's gradient first
                _act_backward(op.act, g, <const floating *> _act_read(op), <floating *> op.dz,
                              rows * op.d_out, <floating> op.slope, n_threads)
                g = <floating *> op.dz
            # db: sum(dy) (the beta gradient); dz: sum(dy * xhat) (the gamma gradient)
            db = <floating *> op.db
            w_grad = db + op.d_out
            if _column_sums(SUM_BN_GRAD, 0, g, <const floating *> op.x, NULL,
                            <floating *> op.mean, <floating *> op.inv_std, db, w_grad, rows,
                            op.d_out, 0, n_threads) != 0:
                return -1
            if _bn_backward_dx(g, <const floating *> op.x, rows, op.d_out, <floating *> op.w,
                               <floating *> op.mean, <floating *> op.inv_std, db, w_grad,
                               op.training, dx, n_threads) != 0:
                return -1
            if op.w_grad != NULL:  # NULL: gamma is frozen
                _add_to(<floating *> op.w_grad, w_grad, op.d_out, assign and op.w_assign)
            if op.b_grad != NULL:  # NULL: beta is frozen
                _add_to(<floating *> op.b_grad, db, op.d_out, assign and op.b_assign)
        elif op.kind == OP_ACTIVATION:
            if op.gated:  # the dropout after it applied its gradient
                continue
            _act_backward(op.act, g,
                          <const floating *> op.x if op.grad_from_x else <floating *> op.y,
                          dx, rows * op.d_out, <floating> op.slope, n_threads)
        elif op.kind == OP_DROPOUT:
            if not op.active:
                continue
            if op.gate:
                _dropout_gate(g, <const floating *> op.y, dx, rows * op.d_out,
                              <floating> op.scale, n_threads)
            else:
                _apply_dropout(op, g, dx, rows, n_threads)  # the forward pass's mask
        elif op.kind == OP_KERNEL:
            if op.k_backward(op.k_state, op.x, op.y, g, dx, rows,
                             input_grad or i > 0, n_threads) != 0:
                return -1
            if i == 0 and not input_grad:
                return 0
        elif op.kind == OP_RESIDUAL:
            if op.has_act and not op.gated:  # the epilogue's gradient, for both branches
                _act_backward(op.act, g, <const floating *> _act_read(op), <floating *> op.dz,
                              rows * op.d_out, <floating> op.slope, n_threads)
                g = <floating *> op.dz
            if _backward(op.block, op.n_block, rows, g, True, n_threads, assign) != 0:
                return -1
            gb = g if op.block_dx == NULL else <floating *> op.block_dx
            gs = g
            if op.n_short:
                if _backward(op.short, op.n_short, rows, g, True, n_threads, assign) != 0:
                    return -1
                if op.short_dx != NULL:
                    gs = <floating *> op.short_dx
            _add_act(FN_ACT_IDENTITY, gb, gs, dx, NULL, rows * op.d_in, 0, n_threads)
        g = dx
    return 0


def unchanged(list checks):
    """Whether getattr(obj, name) still is (an array: the same object) or equals
    (anything else) the value, for every (obj, name, value) in checks."""
    cdef tuple check
    for check in checks:
        value = getattr(check[0], check[1])
        expected = check[2]
        if value is expected:
            continue
        if type(value) is not type(expected) or hasattr(value, "__array_interface__"):
            return False
        if not (value == expected):
            return False
    return True


cdef class Plan:
    """The compiled passes of one layer chain for one batch size, dtype and mode.

    Built by fastnn.nn.Sequential: `add_*` once per layer (in order), then `forward(x,
    n_threads)` and `backward(dout, input_grad, n_threads)` as often as wanted. The Plan
    holds references to every array it points into.
    """

    cdef Op *ops
    cdef readonly int n_ops  # ops added so far (a fused activation adds none)
    cdef int capacity
    cdef readonly Py_ssize_t rows, d_in, d_out
    cdef readonly tuple in_shape, shape  # per sample: of the input, of the output
    cdef readonly object dtype
    cdef readonly Py_ssize_t workspace_bytes  # of the arrays the plan made itself
    cdef bint is_double, forwarded, has_gradients
    cdef object written     # assigns()' answer, once known (False: None)
    cdef list keep          # every array the ops point into
    cdef dict branches      # residual op index: its (block, shortcut) plans
    cdef list outputs       # per op: its output (rows, d_out), or None if it passes x on
    cdef list input_grads   # per op: its input gradient (rows, d_in), or None
    cdef object x_ref       # the last forward input, alive for the backward pass
    cdef object output      # the array forward returns (False: x itself), once known
    cdef object input_grad  # the array backward returns (False: dout itself), once known

    def __cinit__(self, Py_ssize_t rows, Py_ssize_t d_in, dtype, int capacity,
                  tuple shape=None):
        self.ops = <Op *> calloc(max(capacity, 1), sizeof(Op))
        if self.ops == NULL:
            raise MemoryError("Plan: cannot allocate its layer table")
        self.capacity = capacity
        self.n_ops = 0
        self.rows, self.d_in, self.d_out = rows, d_in, d_in
        self.shape = self.in_shape = (d_in,) if shape is None else shape
        if int(np.prod(self.shape, dtype=np.int64)) != d_in:
            raise ValueError(f"Plan: a sample of shape {self.shape} is not {d_in} wide")
        self.dtype = dtype
        self.is_double = dtype.itemsize == 8
        self.keep, self.outputs, self.input_grads = [], [], []
        self.branches = {}
        self.forwarded = self.has_gradients = False
        self.workspace_bytes = 0
        self.x_ref = self.output = self.input_grad = self.written = None

    def __dealloc__(self):
        free(self.ops)

    cdef Op *_append(self, int kind, Py_ssize_t d_out) except NULL:
        if self.n_ops == self.capacity:
            raise ValueError("Plan: more layers than declared")
        cdef Op *op = &self.ops[self.n_ops]
        op.kind, op.act, op.d_in, op.d_out = kind, FN_ACT_IDENTITY, self.d_out, d_out
        self.n_ops += 1
        if d_out != self.d_out:
            self.shape = (d_out,)
        self.d_out = d_out
        return op

    cdef void *_array(self, array, Py_ssize_t size) except? NULL:
        """The data pointer of a C-contiguous array of the plan's dtype and this size."""
        if array is None:
            return NULL
        if (array.dtype != self.dtype or array.size != size
                or not array.flags.c_contiguous or not array.flags.writeable):
            raise ValueError(
                f"Plan: expected a writeable C-contiguous {self.dtype} array of {size} "
                f"elements, got {array.dtype} {array.shape}")
        self.keep.append(array)
        return _address(array)

    cdef void *_workspace(self, Py_ssize_t d, list into) except NULL:
        """A new (rows, d) workspace, or (d,) one when `into` is None."""
        cdef object shape = (d,)
        if into is not None:
            shape = (self.rows, d)
        array = np.empty(shape, self.dtype)
        if into is not None:
            into.append(array)
        self.keep.append(array)
        self.workspace_bytes += array.nbytes
        return _address(array)

    def add_linear(self, Py_ssize_t d_out, weight, weight_grad, bias, bias_grad, act,
                   double slope, zero_bias):
        """y = f(x @ weight + bias): act is f's code, or None (no activation). Without a
        bias, zero_bias stands in when there is an activation. A gradient array None:
        that parameter is frozen (no gradient accumulated)."""
        if max(self.d_out, d_out) > INT_MAX:  # a row length BLAS is given (_matmul)
            raise ValueError(f"Plan: a Linear layer {self.d_out} -> {d_out} wide is over "
                             f"BLAS's limit of 2**31 - 1 per row")
        cdef Op *op = self._append(OP_LINEAR, d_out)
        op.w = self._array(weight, op.d_in * d_out)
        op.w_grad = self._array(weight_grad, op.d_in * d_out)
        op.b_grad = self._array(bias_grad, d_out)
        op.slope = slope
        if act is not None:
            op.act = act
        if act is not None or bias is not None:  # the epilogue adds b and applies act
            op.b = self._array(zero_bias if bias is None else bias, d_out)
        op.has_act = act is not None
        op.y = self._workspace(d_out, self.outputs)
        self._keep_epilogue_input(op)

    cdef _keep_epilogue_input(self, Op *op):
        """A workspace for the input of op's epilogue activation when its gradient reads
        it; else the backward pass reads the output."""
        if op.has_act and FN_ACT_READS_INPUT(op.act):
            op.z = self._workspace(op.d_out, [])  # (rows, d_out), not an output
        op.y_read = op.has_act and op.z == NULL

    def add_batchnorm(self, gamma, beta, gamma_grad, beta_grad, running_mean, running_var,
                      bint training, double momentum, double eps, act=None,
                      double slope=0.0):
        """Batch normalization of d features; gamma_grad or beta_grad None: frozen. act:
        the code of an activation applied in the same pass, or None."""
        cdef Py_ssize_t d = gamma.size
        cdef Op *op = self._append(OP_BATCHNORM, d)
        if op.d_in != d:
            raise ValueError(f"Plan: BatchNorm1d of {d} features after {op.d_in}")
        if training and self.rows < 2:
            raise ValueError("Plan: training batch normalization needs more than 1 row")
        op.w, op.b = self._array(gamma, d), self._array(beta, d)
        op.w_grad, op.b_grad = self._array(gamma_grad, d), self._array(beta_grad, d)
        op.running_mean = self._array(running_mean, d)
        op.running_var = self._array(running_var, d)
        op.training, op.momentum, op.eps = training, momentum, eps
        op.mean = self._workspace(d, None)
        op.inv_std = self._workspace(d, None)
        op.slope = slope
        if act is not None:
            op.act = act
        op.has_act = act is not None
        op.y = self._workspace(d, self.outputs)
        self._keep_epilogue_input(op)

    def add_activation(self, int act, double slope, bint grad_from_x):
        cdef Op *op = self._append(OP_ACTIVATION, self.d_out)
        op.act, op.slope, op.grad_from_x = act, slope, grad_from_x
        cdef Op *before = &self.ops[self.n_ops - 2] if self.n_ops > 1 else NULL
        op.y_read = not grad_from_x
        if (not grad_from_x and before != NULL and before.y != NULL and not before.y_read
                and before.kind in (OP_BATCHNORM, OP_KERNEL, OP_RESIDUAL)):
            # in place over the output before, which no backward pass reads (indexes
            # from the end are spelled out: this module does not wrap around)
            op.y = before.y
            self.outputs.append(self.outputs[len(self.outputs) - 1])
        else:
            op.y = self._workspace(op.d_out, self.outputs)

    def add_dropout(self, seed, step, bint active, unsigned int threshold, double scale,
                    bint zero):
        """seed (uint64) and step (int64): the layer's 0-d buffers; step counts the
        train-mode forwards and moves on with each."""
        cdef Op *op = self._append(OP_DROPOUT, self.d_out)
        if seed.dtype != np.uint64 or seed.shape != () or step.dtype != np.int64 \
                or step.shape != () or not step.flags.writeable:
            raise ValueError("Plan: dropout seed and step must be 0-d uint64 and int64 arrays")
        self.keep += [seed, step]
        op.seed = <uint64_t *> _address(seed)
        op.step = <int64_t *> _address(step)
        op.active, op.threshold, op.scale, op.zero = active, threshold, scale, zero
        cdef Op *before = &self.ops[self.n_ops - 2] if self.n_ops > 1 else NULL
        if (active and before != NULL and before.y != NULL and before.act == FN_ACT_RELU
                and (before.kind == OP_ACTIVATION or before.has_act)):
            # after a ReLU (alone or in an epilogue), over its output: y > 0 exactly where
            # the mask kept a positive value (scale >= 1), so the backward pass needs
            # neither the ReLU's output nor the mask's hashes (exactly the two gradients)
            op.gate = before.gated = True
            before.y_read = False
            op.y = before.y
            op.y_read = True
            self.outputs.append(self.outputs[len(self.outputs) - 1])
        elif active:
            op.y = self._workspace(op.d_out, self.outputs)
        else:
            self.outputs.append(None)

    def reshape(self, tuple shape):
        """Read the output as samples of another shape of the same size (a Flatten)."""
        if int(np.prod(shape, dtype=np.int64)) != self.d_out:
            raise ValueError(f"Plan: cannot view samples of {self.shape} as {shape}")
        self.shape = shape

    def add_kernel(self, KernelOp op):
        """A KernelOp made for this plan's rows and dtype, taking samples of the plan's
        current shape; its output becomes the plan's."""
        if op.rows != self.rows or op.dtype != self.dtype or op.in_shape != self.shape:
            raise ValueError(
                f"Plan: {type(op).__name__} takes {op.rows} rows of {op.in_shape} "
                f"{op.dtype}, the plan has {self.rows} rows of {self.shape} {self.dtype}")
        if op.forward_fn == NULL or op.backward_fn == NULL or op.state == NULL:
            raise ValueError(f"Plan: {type(op).__name__} is not set up")
        cdef Op *o = self._append(OP_KERNEL, op.d_out)
        o.k_forward, o.k_backward, o.k_state = op.forward_fn, op.backward_fn, op.state
        o.y_read = op.reads_y
        self.keep.append(op)
        o.y = self._workspace(op.d_out, self.outputs)
        self.shape = op.out_shape

    def branch(self, int capacity):
        """A new plan over this plan's current output (rows, dtype, sample shape), for
        a branch of add_residual; capacity: how many layers it may hold."""
        return Plan(self.rows, self.d_out, self.dtype, capacity, self.shape)

    def add_residual(self, Plan block, Plan shortcut, act, double slope):
        """y = act(block(x) + shortcut(x)), x this plan's current output; shortcut None:
        the identity. block and shortcut: plans from branch(), filled; act None: no
        activation."""
        branches = [block] if shortcut is None else [block, shortcut]
        for b in branches:
            if b.rows != self.rows or b.d_in != self.d_out or b.dtype != self.dtype:
                raise ValueError("Plan: a residual branch made for another input")
        out_shape = block.shape
        if (shortcut.shape if shortcut is not None else self.shape) != out_shape:
            raise ValueError(
                f"Plan: residual branches give samples of {out_shape} and "
                f"{shortcut.shape if shortcut is not None else self.shape}")
        cdef Op *op = self._append(OP_RESIDUAL, block.d_out)
        op.block, op.n_block = block.ops, block.n_ops
        if shortcut is not None:
            op.short, op.n_short = shortcut.ops, shortcut.n_ops
        op.slope = slope
        if act is not None:
            op.act = act
        op.has_act = act is not None
        self.branches[self.n_ops - 1] = (block, shortcut)
        op.y = self._workspace(op.d_out, self.outputs)
        self._keep_epilogue_input(op)
        self.shape = out_shape

    def assigns(self):
        """The parameter gradients backward(assign=True) writes, as a set of (address,
        bytes), each op that writes one first (in backward order) marked to write it,
        the others (a weight used twice) to add to it; None where a pass cannot assign
        (an op that adds to gradients of its own: a KernelOp)."""
        if self.written is None:
            writes = set()
            self.written = writes if self._mark_writers(writes, set()) else False
        return self.written or None

    cdef bint _mark_writers(self, set writes, set seen) except -1:
        cdef int i
        cdef Op *op
        cdef size_t size
        cdef bint ok = True
        for i in range(self.n_ops - 1, -1, -1):
            op = &self.ops[i]
            if op.kind == OP_KERNEL:
                ok = False
            elif op.kind == OP_RESIDUAL:
                block, shortcut = self.branches[i]
                ok = (<Plan> block)._mark_writers(writes, seen) and ok
                if shortcut is not None:
                    ok = (<Plan> shortcut)._mark_writers(writes, seen) and ok
            elif op.kind == OP_LINEAR or op.kind == OP_BATCHNORM:
                size = self.dtype.itemsize * (op.d_in * op.d_out if op.kind == OP_LINEAR
                                              else op.d_out)
                if op.w_grad != NULL:
                    op.w_assign = <size_t> op.w_grad not in seen
                    seen.add(<size_t> op.w_grad)
                    writes.add((<size_t> op.w_grad, size))
                if op.b_grad != NULL:
                    op.b_assign = <size_t> op.b_grad not in seen
                    seen.add(<size_t> op.b_grad)
                    writes.add((<size_t> op.b_grad, self.dtype.itemsize * op.d_out))
        return ok

    cdef void *_input_grad_address(self):
        """Where backward leaves the input gradient: the first op's that makes one; NULL
        when no op changes the gradient (it is the one given)."""
        cdef int i
        for i in range(self.n_ops):
            if self.ops[i].dx != NULL:
                return self.ops[i].dx
        return NULL

    cdef _gradient_widths(self, dict widths, int depth, int role):
        """The widest gradient of this plan and of each branch below it, by (depth,
        role): role 0 for a residual's block, 1 for its shortcut."""
        cdef int i
        cdef Py_ssize_t width = 1
        for i in range(self.n_ops):
            width = max(width, self.ops[i].d_in, self.ops[i].d_out)
        widths[depth, role] = max(widths.get((depth, role), 0), width)
        for block, shortcut in self.branches.values():
            (<Plan> block)._gradient_widths(widths, depth + 1, 0)
            if shortcut is not None:
                (<Plan> shortcut)._gradient_widths(widths, depth + 1, 1)

    cdef _allocate_all_gradients(self):
        """The backward pass's workspaces, made at its first call (a plan that only
        predicts never needs them). One pair of gradient buffers serves the plan and
        one each branch depth and role: branches at one depth never run at once, while
        a residual's block keeps its input gradient in its pair as its shortcut runs."""
        widths = {}
        self._gradient_widths(widths, 0, 0)
        pool = {key: [np.empty(self.rows * width, self.dtype) for _ in range(2)]
                for key, width in widths.items()}
        for pair in pool.values():
            self.keep += pair
            self.workspace_bytes += 2 * pair[0].nbytes
        self._allocate_gradients(pool, 0, 0)

    cdef _allocate_gradients(self, dict pool, int depth, int role):
        """Point each op at its gradient workspaces. Gradients flow through the two
        buffers of this plan's depth and role, taken in turn: a layer that may work in
        place (BatchNorm1d, activations, Dropout, the activation gradient of a Linear's
        or a residual sum's epilogue) writes over the gradient it reads, unless that is
        the caller's; an input gradient computed from a gradient it still reads (a
        Linear's, a KernelOp's, a residual sum's) goes to the other buffer."""
        cdef Op *op
        cdef int i, k, cur = -1  # the buffer holding the gradient; -1: the caller's
        pair = pool[depth, role]
        grads = [None] * self.n_ops
        for i in range(self.n_ops - 1, -1, -1):
            op = &self.ops[i]
            if (op.kind == OP_DROPOUT and not op.active) or (
                    op.kind == OP_ACTIVATION and op.gated):
                continue  # passes the gradient on
            k = cur if cur >= 0 else 0
            if op.kind == OP_KERNEL:
                k = 1 - cur if cur >= 0 else 0  # reads g while it writes dx
            elif op.kind == OP_RESIDUAL:
                block, shortcut = self.branches[i]
                (<Plan> block)._allocate_gradients(pool, depth + 1, 0)
                op.block_dx = (<Plan> block)._input_grad_address()
                if shortcut is not None:
                    (<Plan> shortcut)._allocate_gradients(pool, depth + 1, 1)
                    op.short_dx = (<Plan> shortcut)._input_grad_address()
                # the branches read dz; the sum reads their gradients
                if op.has_act and not op.gated:
                    op.dz = _address(pair[k])
                    k = 1 - k
                else:
                    k = 1 - cur if cur >= 0 else 0
            elif op.kind == OP_LINEAR:
                op.db = self._workspace(op.d_out, None)
                if op.has_act and not op.gated:
                    op.dz = _address(pair[k])
                else:
                    k = cur  # dz is the incoming gradient itself
                k = 1 - k if k >= 0 else 0
            elif op.kind == OP_BATCHNORM:
                op.db = self._workspace(2 * op.d_out, None)
                if op.has_act and not op.gated:  # in place, as its input gradient
                    op.dz = _address(pair[k])
            op.dx = _address(pair[k])
            grads[i] = pair[k][:self.rows * op.d_in].reshape(self.rows, op.d_in)
            cur = k
        self.input_grads = grads
        self.has_gradients = True

    def forward(self, x, int n_threads):
        """The network's output for x (rows, d_in), C-contiguous of the plan's dtype: a
        workspace (or x itself when every layer passes it on), valid until the next
        forward."""
        cdef int status
        cdef const void *out = NULL
        cdef const float[:, ::1] xf
        cdef const double[:, ::1] xd
        if x.shape[0] != self.rows or x.shape[1] != self.d_in:
            raise ValueError(f"Plan: expected input of shape ({self.rows}, {self.d_in}), "
                             f"got {x.shape}")
        if self.rows == 0 or self.d_in == 0:
            raise ValueError("Plan: empty input")
        if self.is_double:
            xd = x
            with nogil:
                status = _forward(self.ops, self.n_ops, self.rows, &xd[0, 0],
                                  <const double **> &out, n_threads)
        else:
            xf = x
            with nogil:
                status = _forward(self.ops, self.n_ops, self.rows, &xf[0, 0],
                                  <const float **> &out, n_threads)
        if status != 0:
            raise MemoryError("network forward: cannot allocate a workspace")
        self.x_ref = x
        self.forwarded = True
        if self.output is None:  # the last layer's output that is not its input
            self.output = next((y for y in reversed(self.outputs) if y is not None), False)
        return x if self.output is False else self.output

    def backward(self, dout, bint input_grad, int n_threads, bint assign=False):
        """Backpropagate dout (rows, d_out) through the last forward; returns the input
        gradient (a workspace; dout itself when no layer changes gradients), or None
        with input_grad=False. The parameter gradients are added to, or with assign
        (where assigns() is not None) written, as if zeroed first."""
        cdef int status
        cdef const float[:, ::1] gf
        cdef const double[:, ::1] gd
        if not self.forwarded:
            raise RuntimeError("backward: call forward first")
        if not self.has_gradients:
            self._allocate_all_gradients()
        if assign and self.assigns() is None:
            raise ValueError("backward: this plan cannot assign its gradients")
        if dout.shape[0] != self.rows or dout.shape[1] != self.d_out:
            raise ValueError(f"backward: expected dout of shape ({self.rows}, {self.d_out}), "
                             f"got {dout.shape}")
        if self.is_double:
            gd = dout
            with nogil:
                status = _backward(self.ops, self.n_ops, self.rows, &gd[0, 0], input_grad,
                                   n_threads, assign)
        else:
            gf = dout
            with nogil:
                status = _backward(self.ops, self.n_ops, self.rows, &gf[0, 0], input_grad,
                                   n_threads, assign)
        if status != 0:
            raise MemoryError("network backward: cannot allocate a workspace")
        if not input_grad:
            return None
        if self.input_grad is None:  # the first layer's gradient that is not passed on
            self.input_grad = next((g for g in self.input_grads if g is not None), False)
        return dout if self.input_grad is False else self.input_grad
