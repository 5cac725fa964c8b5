"""What the build knows about OpenMP."""

cdef extern from *:
    """
    #ifdef _OPENMP
    #include <omp.h>
    #define FN_OPENMP_VERSION _OPENMP
    static int fn_omp_max_threads(void) { return omp_get_max_threads(); }
    #else
    #define FN_OPENMP_VERSION 0
    static int fn_omp_max_threads(void) { return 1; }
    #endif
    """
    int FN_OPENMP_VERSION
    int fn_omp_max_threads() nogil


def openmp_version():
    """The _OPENMP date macro the kernels were built with (e.g. 201511), 0 if none."""
    return FN_OPENMP_VERSION


def openmp_max_threads():
    """omp_get_max_threads() of the runtime, 1 without OpenMP."""
    return fn_omp_max_threads()
