"""The BLAS behind fastnn's matrix products, switchable at run time.

fastnn._blas chooses the backend and fills the table with function addresses; the
kernels read it through blas_fns() (backend.pxd) at every product.
"""

from scipy.linalg.cython_blas cimport sgemm, dgemm
from libc.stdint cimport uintptr_t

cdef BlasFns _fns


cdef BlasFns *blas_fns() noexcept nogil:
    return &_fns


def use_scipy():
    """Route the products to scipy's BLAS (its sgemm/dgemm, run on one thread)."""
    _fns.sgemm = <sgemm_fn> sgemm
    _fns.dgemm = <dgemm_fn> dgemm
    _fns.set_threads_local = NULL
    _fns.whole_products = False
    _fns.sgemm_other = NULL
    _fns.dgemm_other = NULL
    _fns.other_min_dim = 0
    _fns.other_below = 0


def use_addresses(uintptr_t sgemm_address, uintptr_t dgemm_address,
                  uintptr_t set_threads_local_address, bint whole_products=False,
                  int other_min_dim=0, double other_below=0):
    """Route the products to the Fortran-interface sgemm/dgemm at these addresses.

    set_threads_local_address is 0 for a BLAS that runs one thread per call, else the
    address of an int(int) that sets the calling thread's BLAS thread count (see
    backend.pxd). whole_products: hand the BLAS whole products and fastnn's thread count
    (needs set_threads_local), else slabs of one thread each. Products of fewer than
    FN_GEMM_NARROW output columns stay on scipy's BLAS, and so do those with every
    dimension at least other_min_dim where it is not 0 and those of fewer than
    other_below multiply-adds whose b is not transposed. The caller keeps the library
    loaded for as long as it is in use.
    """
    if other_min_dim < 0 or not other_below >= 0:
        raise ValueError("other_min_dim and other_below must be >= 0")
    if whole_products and set_threads_local_address == 0:
        raise ValueError("whole_products needs the BLAS's set_threads_local")
    if sgemm_address == 0 or dgemm_address == 0:
        raise ValueError("sgemm and dgemm addresses must not be 0")
    _fns.sgemm = <sgemm_fn> sgemm_address
    _fns.dgemm = <dgemm_fn> dgemm_address
    _fns.set_threads_local = <set_threads_fn> set_threads_local_address
    _fns.whole_products = whole_products
    _fns.sgemm_other = <sgemm_fn> sgemm
    _fns.dgemm_other = <dgemm_fn> dgemm
    _fns.other_min_dim = other_min_dim
    _fns.other_below = other_below



use_scipy()  # until fastnn._blas chooses
