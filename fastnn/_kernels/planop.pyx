"""KernelOp: the base of the kernel ops that compiled plans run (see planop.pxd)."""

import numpy as np


cdef class KernelOp:
    """One op of a compiled plan, for one batch size and dtype. Subclasses set
    forward_fn, backward_fn and state in their constructor, after calling
    `_shape(dtype, rows, in_shape, out_shape, reads_y)`."""

    def __cinit__(self, *args, **kwargs):
        self.keep = []
        self.forward_fn = NULL
        self.backward_fn = NULL
        self.state = NULL

    def _shape(self, dtype, Py_ssize_t rows, tuple in_shape, tuple out_shape, bint reads_y):
        self.dtype = np.dtype(dtype)
        if self.dtype not in (np.float32, np.float64):
            raise TypeError(f"{type(self).__name__}: expected float32 or float64, got "
                            f"{self.dtype}")
        if rows <= 0:
            raise ValueError(f"{type(self).__name__}: expected at least one row, got {rows}")
        self.rows = rows
        self.in_shape, self.out_shape = in_shape, out_shape
        self.d_in = int(np.prod(in_shape, dtype=np.int64))
        self.d_out = int(np.prod(out_shape, dtype=np.int64))
        self.reads_y = reads_y

    cdef void *pointer(self, array, Py_ssize_t size) except? NULL:
        """The data pointer of a writeable C-contiguous array of the op's dtype and
        `size` elements, kept alive with the op; NULL for None."""
        if array is None:
            return NULL
        if (not isinstance(array, np.ndarray) or array.dtype != self.dtype
                or array.size != size or not array.flags.c_contiguous
                or not array.flags.writeable):
            raise ValueError(
                f"{type(self).__name__}: expected a writeable C-contiguous {self.dtype} "
                f"array of {size} elements, got {getattr(array, 'dtype', type(array))} "
                f"{getattr(array, 'shape', '')}")
        self.keep.append(array)
        return <void *> <size_t> array.__array_interface__["data"][0]

    cdef void *workspace(self, Py_ssize_t size) except NULL:
        """A new array of `size` elements of the op's dtype, kept with the op."""
        return self.pointer(np.empty(max(size, 1), self.dtype), max(size, 1))

    @property
    def workspace_bytes(self):
        """Bytes of the arrays the op keeps (its parameters' included)."""
        return sum(a.nbytes for a in self.keep)

    def _check(self, name, array, Py_ssize_t d):
        if (not isinstance(array, np.ndarray) or array.dtype != self.dtype
                or array.ndim == 0 or array.shape[0] != self.rows
                or array.size != self.rows * d or not array.flags.c_contiguous):
            raise ValueError(
                f"{type(self).__name__}: {name} must be a C-contiguous {self.dtype} array "
                f"of {self.rows} rows of {d}, got {getattr(array, 'dtype', type(array))} "
                f"{getattr(array, 'shape', '')}")

    def run_forward(self, x, y, int n_threads):
        """y = f(x): arrays of (rows, *in_shape) and (rows, *out_shape)."""
        self._check("x", x, self.d_in)
        self._check("y", y, self.d_out)
        if not y.flags.writeable:
            raise ValueError(f"{type(self).__name__}: y is read-only")
        cdef size_t px = x.__array_interface__["data"][0]
        cdef size_t py = y.__array_interface__["data"][0]
        cdef int status
        with nogil:
            status = self.forward_fn(self.state, <const void *> px, <void *> py, self.rows,
                                     n_threads)
        if status != 0:
            raise MemoryError(f"{type(self).__name__}: cannot allocate a workspace")
        return y

    def run_backward(self, x, y, g, dx, bint input_grad, int n_threads):
        """Accumulate the parameter gradients for g = d(loss)/dy and write dx (unless
        input_grad is false; dx may then be None). x, y: the last forward's."""
        self._check("x", x, self.d_in)
        self._check("y", y, self.d_out)
        self._check("g", g, self.d_out)
        cdef size_t pdx = 0
        if input_grad:
            self._check("dx", dx, self.d_in)
            if not dx.flags.writeable:
                raise ValueError(f"{type(self).__name__}: dx is read-only")
            pdx = dx.__array_interface__["data"][0]
        cdef size_t px = x.__array_interface__["data"][0]
        cdef size_t py = y.__array_interface__["data"][0]
        cdef size_t pg = g.__array_interface__["data"][0]
        cdef int status
        with nogil:
            status = self.backward_fn(self.state, <const void *> px, <const void *> py,
                                      <const void *> pg, <void *> pdx, self.rows,
                                      input_grad, n_threads)
        if status != 0:
            raise MemoryError(f"{type(self).__name__}: cannot allocate a workspace")
        return dx if input_grad else None
