"""The BLAS behind fastnn's matrix products, switchable at run time.

fastnn._blas chooses the backend and fills the table with function addresses; the
kernels read it through blas_fns() (backend.pxd) at every product.
"""

from scipy.linalg.cython_blas cimport sgemm, dgemm
from libc.stdint cimport uintptr_t

cdef BlasFns _fns


cdef BlasFns *blas_fns() noexcept nogil:
    return &_fns


def scipy_addresses():
    """(sgemm, dgemm): the addresses of scipy's BLAS functions (scipy.linalg.cython_blas)."""
    return <uintptr_t> sgemm, <uintptr_t> dgemm


def use_addresses(uintptr_t sgemm_address, uintptr_t dgemm_address,
                  uintptr_t set_threads_local_address=0, bint whole_products=False,
                  uintptr_t other_sgemm_address=0, uintptr_t other_dgemm_address=0,
                  bint by_shape=False, bint nn_other=False,
                  uintptr_t openblas_get_threads_address=0,
                  uintptr_t openblas_set_threads_address=0):
    """Route the products to the Fortran-interface sgemm/dgemm at these addresses.

    set_threads_local_address is 0 for a BLAS that runs one thread per call, else the
    address of an int(int) that sets the calling thread's BLAS thread count (see
    backend.pxd). whole_products: hand the BLAS whole products and fastnn's thread count
    (needs set_threads_local), else slabs of one thread each. The other BLAS's sgemm and
    dgemm (both or neither; one thread per call) take the products of fewer than
    FN_GEMM_NARROW output columns, and where by_shape is set those that backend.pxd's
    to_other names (nn_other: those with neither operand transposed too).
    openblas_get/set_threads: the addresses of the OpenBLAS's int(void) and void(int)
    that read and set its process-wide thread count (both or neither), which each
    product then holds at hold_openblas_threads's count. The caller keeps the libraries
    loaded for as long as they are in use.
    """
    if sgemm_address == 0 or dgemm_address == 0:
        raise ValueError("sgemm and dgemm addresses must not be 0")
    if whole_products and set_threads_local_address == 0:
        raise ValueError("whole_products needs the BLAS's set_threads_local")
    if (other_sgemm_address == 0) != (other_dgemm_address == 0):
        raise ValueError("the other BLAS needs both its sgemm and dgemm addresses")
    if (by_shape or nn_other) and other_sgemm_address == 0:
        raise ValueError("by_shape and nn_other need the other BLAS")
    if (openblas_get_threads_address == 0) != (openblas_set_threads_address == 0):
        raise ValueError("the OpenBLAS thread count needs both its getter and setter")
    _fns.sgemm = <sgemm_fn> sgemm_address
    _fns.dgemm = <dgemm_fn> dgemm_address
    _fns.set_threads_local = <set_threads_fn> set_threads_local_address
    _fns.whole_products = whole_products
    _fns.sgemm_other = <sgemm_fn> other_sgemm_address
    _fns.dgemm_other = <dgemm_fn> other_dgemm_address
    _fns.by_shape = by_shape
    _fns.nn_other = nn_other
    _fns.openblas_get_threads = <get_count_fn> openblas_get_threads_address
    _fns.openblas_set_threads = <set_count_fn> openblas_set_threads_address


def hold_openblas_threads(int n):
    """The thread count every product holds the OpenBLAS in use at (see backend.pxd): 1
    with OpenMP (fastnn's slabs), fastnn's own count in a build without it."""
    if n < 1:
        raise ValueError(f"hold_openblas_threads: n must be >= 1, got {n}")
    _fns.openblas_threads = n


def openblas_threads_held():
    """The count hold_openblas_threads set (1 until then)."""
    return _fns.openblas_threads


def goes_to_other(Py_ssize_t m, Py_ssize_t n, Py_ssize_t k, bint trans_a, bint trans_b):
    """Whether the table sends an op(a) (m x k) @ op(b) (k x n) product to the other BLAS
    (to_other, for the tests)."""
    return to_other(&_fns, m, n, k, trans_a, trans_b)


_fns.openblas_threads = 1
use_addresses(*scipy_addresses())  # scipy's BLAS, until fastnn._blas chooses
