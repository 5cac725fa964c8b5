#!/usr/bin/env bash
# Build fastnn's kernels with AddressSanitizer into a temporary copy of this checkout and
# run the kernel tests there, with gcc's libasan preloaded into Python.
#
#   tools/asan.sh [pytest arguments]   (default: the kernel, layer, property and
#                                       robustness tests, two training threads included)
#
# An out-of-bounds read or write, a use after free or a double free in a kernel stops
# the run with ASan's report (exit status 1). Leak detection is off: CPython keeps
# memory alive until exit on purpose. PYTHONMALLOC=malloc sends Python's own
# allocations through malloc too, so that ASan sees their bounds.
# Needs gcc with libasan (Debian: libasan8, part of gcc's usual install), the
# dependencies of the test extra, and about 2-5 minutes on 2 cores.
set -euo pipefail
src=$(cd "$(dirname "$0")/.." && pwd)
python=${PYTHON:-python}
libasan=$(${CC:-gcc} -print-file-name=libasan.so)
if [ ! -e "$libasan" ] || [ "$libasan" = libasan.so ]; then
  echo "asan: libasan.so not found (gcc -print-file-name=libasan.so)" >&2
  exit 2
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# the tracked sources only: no build/, no compiled modules from the checkout
(cd "$src" && git ls-files -z 2>/dev/null || find . -type f -print0) |
  (cd "$src" && xargs -0 cp --parents -t "$work")
cd "$work"
echo "asan: building in $work"
# The flags go into CC, so that every compile and link gets them, setup.py's OpenMP
# probe included (LDFLAGS does not reach its link of a test program).
CC="${CC:-gcc} -fsanitize=address -fno-omit-frame-pointer" CFLAGS="-g -O1" \
  "$python" setup.py -q build_ext --inplace >build.log 2>&1 || { tail -30 build.log; exit 1; }
grep -q "openmp = True" fastnn/_build_info.py || {
  echo "asan: the sanitized build has no OpenMP (see $work/build.log)" >&2; exit 1; }
asan_env=(env LD_PRELOAD="$libasan" PYTHONMALLOC=malloc
  ASAN_OPTIONS="detect_leaks=0:abort_on_error=0:halt_on_error=1:exitcode=1:allocator_may_return_null=1")
# Positive control: a kernel called directly, past fastnn.ops' checks, with an output
# shorter than its input, writes out of bounds; ASan must catch it.
if "${asan_env[@]}" "$python" -c "
import numpy as np
from fastnn._kernels import activations as k
k.act_forward(k.ACTIVATIONS['relu'], np.ones(4096, np.float32), np.empty(16, np.float32), 0.0, 1)
" 2>control.log || ! grep -q "heap-buffer-overflow" control.log; then
  echo "asan: the positive control was not caught: ASan is not active" >&2
  tail -20 control.log >&2
  exit 1
fi
echo "asan: positive control caught (heap-buffer-overflow in a kernel called without checks)"
if [ $# -eq 0 ]; then
  set -- tests/test_matmul.py tests/test_activations.py tests/test_fused.py \
    tests/test_reductions.py tests/test_batchnorm.py tests/test_dropout.py \
    tests/test_losses.py tests/test_optim.py tests/test_clip.py tests/test_augment.py \
    tests/test_validation.py tests/test_nn.py tests/test_properties.py \
    tests/test_robustness.py -k "not do_not_leak"  # (ASan's quarantine holds freed memory)
fi
echo "asan: running pytest $*"
"${asan_env[@]}" "$python" -m pytest -q -p no:cacheprovider "$@"
echo "asan: no errors"
