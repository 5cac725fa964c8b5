"""Losses with their gradients in one pass, and weight penalties.

Each loss kernel writes the gradient of the mean loss and the per-row losses; the
caller sums the rows (in a fixed order, so the value does not depend on the thread
count). Arguments are checked by fastnn.losses; here they are trusted.
"""

from cython cimport floating
from cython.parallel cimport prange
# one-thread parallel regions skip the OpenMP runtime (see the header)
cdef extern from "omp_serial.h":
    pass

from .simd cimport (
    FN_PARALLEL_MIN,
    fn_bce_logits_row_d,
    fn_bce_logits_row_f,
    fn_hinge_row_d,
    fn_hinge_row_f,
    fn_mse_row_d,
    fn_mse_row_f,
    fn_penalty_block_d,
    fn_penalty_block_f,
    fn_softmax_xent_row_d,
    fn_softmax_xent_row_f,
)

cpdef enum LossKind:
    SOFTMAX_CROSS_ENTROPY = 0
    MULTICLASS_HINGE = 1
    MSE = 2
    BCE_WITH_LOGITS = 3

# Elements per block of a weight penalty: the blocks, and the order their sums are
# added in, depend on the size alone.
cdef Py_ssize_t _PENALTY_BLOCK = 8192
PENALTY_BLOCK = _PENALTY_BLOCK


def class_loss(int kind, const floating[:, ::1] scores, const Py_ssize_t[::1] labels,
               floating[:, ::1] grad, double[::1] row_loss, double param, int n_threads):
    """Softmax cross-entropy (kind 0; param: the label smoothing) or multiclass hinge
    (kind 1; param: the margin) against integer labels.

    row_loss[r] is row r's loss; grad is d(mean loss)/d(scores).
    """
    cdef Py_ssize_t rows = scores.shape[0], n = scores.shape[1], r
    cdef floating scale = <floating> (1.0 / rows)
    cdef floating p = <floating> param
    for r in prange(rows, nogil=True, schedule='static', num_threads=n_threads,
                    use_threads_if=n_threads > 1 and rows * n >= FN_PARALLEL_MIN):
        if kind == SOFTMAX_CROSS_ENTROPY:
            if floating is float:
                row_loss[r] = fn_softmax_xent_row_f(&scores[r, 0], n, labels[r], &grad[r, 0],
                                                    scale, p)
            else:
                row_loss[r] = fn_softmax_xent_row_d(&scores[r, 0], n, labels[r], &grad[r, 0],
                                                    scale, p)
        elif floating is float:
            row_loss[r] = fn_hinge_row_f(&scores[r, 0], n, labels[r], p, &grad[r, 0], scale)
        else:
            row_loss[r] = fn_hinge_row_d(&scores[r, 0], n, labels[r], p, &grad[r, 0], scale)


def target_loss(int kind, const floating[:, ::1] scores, const floating[:, ::1] targets,
                floating[:, ::1] grad, double[::1] row_loss, int n_threads):
    """Squared error (kind 2) or binary cross-entropy on logits (kind 3), element-wise
    against targets of the same shape; grad is d(mean over all elements)/d(scores)."""
    cdef Py_ssize_t rows = scores.shape[0], n = scores.shape[1], r
    cdef floating scale = <floating> (1.0 / (rows * n))
    for r in prange(rows, nogil=True, schedule='static', num_threads=n_threads,
                    use_threads_if=n_threads > 1 and rows * n >= FN_PARALLEL_MIN):
        if kind == MSE:
            if floating is float:
                row_loss[r] = fn_mse_row_f(&scores[r, 0], &targets[r, 0], n, &grad[r, 0], scale)
            else:
                row_loss[r] = fn_mse_row_d(&scores[r, 0], &targets[r, 0], n, &grad[r, 0], scale)
        elif floating is float:
            row_loss[r] = fn_bce_logits_row_f(&scores[r, 0], &targets[r, 0], n, &grad[r, 0],
                                              scale)
        else:
            row_loss[r] = fn_bce_logits_row_d(&scores[r, 0], &targets[r, 0], n, &grad[r, 0],
                                              scale)


def penalty(const floating[::1] w, floating[::1] g, double c2, double c1, double lam,
            double[::1] block_sums, int n_threads):
    """block_sums[b] = sum over block b of c2 w^2 + c1 |w|; g += lam (2 c2 w + c1 sign w).

    block_sums has ceil(len(w) / PENALTY_BLOCK) entries.
    """
    cdef Py_ssize_t n = w.shape[0], blk, start, size
    cdef Py_ssize_t step = _PENALTY_BLOCK
    for blk in prange(block_sums.shape[0], nogil=True, schedule='static',
                      num_threads=n_threads, use_threads_if=n_threads > 1 and n >= FN_PARALLEL_MIN):
        start = blk * step
        size = min(step, n - start)
        if floating is float:
            block_sums[blk] = fn_penalty_block_f(&w[start], &g[start], size, <float> c2,
                                                 <float> c1, <float> lam)
        else:
            block_sums[blk] = fn_penalty_block_d(&w[start], &g[start], size, c2, c1, lam)


def labels_in_range(const Py_ssize_t[::1] labels, Py_ssize_t n_classes):
    """Whether every label is in [0, n_classes)."""
    cdef Py_ssize_t i
    cdef bint ok = True
    with nogil:
        for i in range(labels.shape[0]):
            if labels[i] < 0 or labels[i] >= n_classes:
                ok = False
                break
    return ok
