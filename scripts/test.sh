#!/usr/bin/env bash
# Runs the test suite (unit tests, multi-rank tests under mpiexec, CLI tests).
#   bash scripts/test.sh [CTEST_ARGS...]                  # all of it, the release build in
#       build/ (CI)
#   bash scripts/test.sh --sanitize [CTEST_ARGS...]       # configures and builds the debug
#       preset (AddressSanitizer + UndefinedBehaviorSanitizer, build-debug/) and runs the
#       budgeted subset there: the tests labelled `sanitize` in tests/CMakeLists.txt
#   bash scripts/test.sh --sanitize-full [CTEST_ARGS...]  # the same build, every test
set -euo pipefail
cd "$(dirname "$0")/.."
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
mode=${1:-}
case "$mode" in
  --sanitize | --sanitize-full) shift ;;
  *) exec ctest --preset release "$@" ;;
esac

# Every process the tests start (test binaries, mpiexec's ranks, the CLI scripts' seqpar)
# inherits these: CTest's ENVIRONMENT test property only adds to the environment.
#  * Any report fails the process, with a stack, at a distinctive exit status (66) that no
#    test expects (the CLI tests expect 1 and 2 from seqpar's own errors).
#  * fast_unwind_on_malloc=0: OpenMPI's libraries have no frame pointers; without the
#    slow unwinder their allocation stacks stop at one frame and lsan.supp cannot match.
#  * lsan.supp: leaks of third-party libraries only (OpenMPI, hwloc, libevent, OpenBLAS).
supp=$PWD/tools/sanitizers
# (UBSan errors are also fatal at compile time: the preset builds with -fno-sanitize-recover=all.)
export ASAN_OPTIONS="halt_on_error=1:exitcode=66:detect_leaks=1:fast_unwind_on_malloc=0:malloc_context_size=30:detect_stack_use_after_return=1:check_initialization_order=1:strict_init_order=1:print_suppressions=0"
export LSAN_OPTIONS="suppressions=$supp/lsan.supp:print_suppressions=0"
export UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1:exitcode=66"

cmake --preset debug >/dev/null
cmake --build --preset debug
if [ "$mode" = --sanitize ]; then
  ctest --preset debug -L '^sanitize$' "$@"
else
  ctest --preset debug "$@"
fi
