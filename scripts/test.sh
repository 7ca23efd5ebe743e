#!/usr/bin/env bash
# Runs the whole test suite (unit tests, multi-rank tests under mpiexec, CLI tests).
set -euo pipefail
cd "$(dirname "$0")/.."
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
ctest --preset release "$@"
