# Shared by the command-line tests (sourced; not a test itself: CTest runs tests/cli/*.sh).
#   bin, src   the seqpar binary and the source directory (the scripts' two arguments)
#   tmp        a scratch directory removed at exit (with any background jobs)
#   check NAME EXPR   evaluates EXPR, prints "ok   NAME" or "FAIL NAME", counts it
#   mpi K CMD...      CMD under mpiexec -n K, oversubscribed, under a hard time limit
#   finish     prints "N passed, M failed" and exits non-zero on any failure
bin=$1
src=${2:-.}
tmp=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null; rm -rf "$tmp"' EXIT
fails=0
passes=0
check() { if eval "$2"; then echo "ok   $1"; passes=$((passes + 1)); else echo "FAIL $1"; fails=$((fails + 1)); fi; }
mpi() { timeout 300 mpiexec -n "$1" --oversubscribe --bind-to none "${@:2}"; }
finish() {
  echo "$passes passed, $fails failed"
  [ $fails = 0 ]
}
