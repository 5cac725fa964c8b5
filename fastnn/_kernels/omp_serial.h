/* A parallel region that runs on one thread, entered without the OpenMP runtime.
 *
 * Every kernel's `prange(..., use_threads_if=cond)` compiles to
 * `#pragma omp parallel if(cond)`, and GCC turns that into a call to libgomp's
 * GOMP_parallel(fn, data, cond ? n : 1, flags) whatever cond is. With one thread,
 * libgomp still builds a team and ends it with a barrier whose release is a futex
 * system call: about 0.3 us a region alone (a loop of empty regions on the AMD EPYC
 * VM: 321 ns each, 11 ns with the shortcut below), 0.6 us as the kernels' regions
 * come. A 64-128-128-10 training step at batch 32 enters some 27 of them for arrays
 * too small to split, all on one thread: 54 futex calls and 12% of a 127 us step.
 *
 * This module's own definition of GOMP_parallel (hidden: the calls of this shared
 * object bind to it, nobody else's do) runs fn(data) directly when one thread is asked
 * for outside any parallel region, and passes every other region to libgomp's. Inside
 * fn, omp_get_thread_num() is 0 and omp_get_num_threads() 1 either way, so a static
 * `omp for` gives the one thread every iteration; barriers outside a team return at
 * once. Inside another parallel region (omp_get_level() > 0) thread numbers belong to
 * that region's team, so there libgomp runs it.
 *
 * GCC and libgomp only (clang's OpenMP enters regions through __kmpc_fork_call); a
 * build without OpenMP has no regions.
 */
#ifndef FASTNN_OMP_SERIAL_H
#define FASTNN_OMP_SERIAL_H

#if defined(_OPENMP) && defined(__GNUC__) && !defined(__clang__) && defined(__ELF__)
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <dlfcn.h>
#include <omp.h>

typedef void (*fn_gomp_parallel_t)(void (*)(void *), void *, unsigned, unsigned);

__attribute__((visibility("hidden")))
void GOMP_parallel(void (*fn)(void *), void *data, unsigned num_threads, unsigned flags)
{
    static fn_gomp_parallel_t runtime;  /* libgomp's, looked up on first use */
    fn_gomp_parallel_t enter;
    if (num_threads == 1 && omp_get_level() == 0) {
        fn(data);
        return;
    }
    enter = __atomic_load_n(&runtime, __ATOMIC_ACQUIRE);
    if (enter == NULL) {
        enter = (fn_gomp_parallel_t) dlsym(RTLD_NEXT, "GOMP_parallel");
        __atomic_store_n(&runtime, enter, __ATOMIC_RELEASE);
    }
    if (enter == NULL) {  /* not found: on this thread alone, still every iteration */
        fn(data);
        return;
    }
    enter(fn, data, num_threads, flags);
}
#endif

#endif
