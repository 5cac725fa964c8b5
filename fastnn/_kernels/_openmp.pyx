"""What the build knows about OpenMP."""

cdef extern from "omp_serial.h":
    pass

cdef extern from *:
    """
    #ifdef _OPENMP
    #include <omp.h>
    #define FN_OPENMP_VERSION _OPENMP
    static int fn_omp_max_threads(void) { return omp_get_max_threads(); }
    static int fn_region_level(int threads) {
        int level = -1;
        #pragma omp parallel num_threads(threads)
        {
            #pragma omp master
            level = omp_get_level();
        }
        return level;
    }
    #else
    #define FN_OPENMP_VERSION 0
    static int fn_omp_max_threads(void) { return 1; }
    static int fn_region_level(int threads) { (void) threads; return 0; }
    #endif
    """
    int FN_OPENMP_VERSION
    int fn_omp_max_threads() nogil
    int fn_region_level(int threads) nogil


def openmp_version():
    """The _OPENMP date macro the kernels were built with (e.g. 201511), 0 if none."""
    return FN_OPENMP_VERSION


def openmp_max_threads():
    """omp_get_max_threads() of the runtime, 1 without OpenMP."""
    return fn_omp_max_threads()


def region_level(int threads):
    """omp_get_level() inside a parallel region of `threads` threads entered from outside
    any region: 0 where the region ran without the OpenMP runtime (one thread, see
    omp_serial.h), 1 where the runtime ran it; 0 without OpenMP."""
    return fn_region_level(threads)
