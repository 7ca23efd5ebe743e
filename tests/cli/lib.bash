# Shared by the command-line tests (sourced; not a test itself: CTest runs tests/cli/*.sh).
#   bin, src   the seqpar binary and the source directory (the scripts' two arguments)
#   tmp        a scratch directory removed at exit (with any background jobs)
#   check NAME EXPR   evaluates EXPR, prints "ok   NAME" or "FAIL NAME", counts it
#   mpi K CMD...      CMD under mpiexec -n K, oversubscribed, under a hard time limit
#   expect NAME CODE PATTERN RANKS -- CMD...   a refusal: exit code, message per rank, time
#   finish     prints "N passed, M failed" and exits non-zero on any failure
bin=$1
src=${2:-.}
tmp=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null; rm -rf "$tmp"' EXIT
fails=0
passes=0
check() { if eval "$2"; then echo "ok   $1"; passes=$((passes + 1)); else echo "FAIL $1"; fails=$((fails + 1)); fi; }
mpi() { timeout 300 mpiexec -n "$1" --oversubscribe --bind-to none "${@:2}"; }
# skip_under_asan: a test of resident memory reports itself skipped (exit 77) under
# AddressSanitizer (scripts/test.sh --sanitize), where resident memory is the sanitizer's.
skip_under_asan() {
  if [ -n "${ASAN_OPTIONS:-}" ]; then
    echo "skipped: resident memory is not measurable under AddressSanitizer"
    exit 77
  fi
}
# expect NAME EXIT_CODE PATTERN RANKS -- command...: the exit code, PATTERN printed at
# least RANKS times (once per rank), within 5 s, and no source location in the message.
# With max_rss_kb set (and GNU time installed: scripts/setup.sh), also the largest
# resident set of the command or any process it waited for (mpiexec's ranks) below it.
max_rss_kb=
expect() {
  local name=$1 code=$2 pattern=$3 ranks=$4
  shift 5
  local out rc t0 ms n rss=0 ok=1
  t0=$(date +%s%N)
  if [ -n "$max_rss_kb" ] && [ -x /usr/bin/time ]; then
    out=$(/usr/bin/time -f "max_rss_kb=%M" -o "$tmp/.rss" "$@" 2>&1)
    rc=$?
    rss=$(grep -o "max_rss_kb=[0-9]*" "$tmp/.rss" | cut -d= -f2)
  else
    [ -z "$max_rss_kb" ] || { echo "FAIL $name: /usr/bin/time (GNU time) is missing, cannot measure the resident set"; ok=0; }
    out=$("$@" 2>&1)
    rc=$?
  fi
  ms=$((($(date +%s%N) - t0) / 1000000))
  [ "$rc" = "$code" ] || { echo "FAIL $name: exit $rc, expected $code"; ok=0; }
  n=$(grep -o -- "$pattern" <<<"$out" | wc -l)
  [ "$n" -ge "$ranks" ] || { echo "FAIL $name: '$pattern' printed $n times, expected on $ranks rank(s)"; ok=0; }
  [ "$ms" -lt 5000 ] || { echo "FAIL $name: took $ms ms, expected < 5 s"; ok=0; }
  [ -z "$max_rss_kb" ] || [ "${rss:-0}" -lt "$max_rss_kb" ] || { echo "FAIL $name: resident set $rss kB, expected < $max_rss_kb kB"; ok=0; }
  ! grep -qE "\.[ch]pp:[0-9]" <<<"$out" || { echo "FAIL $name: a source location in the message"; ok=0; }
  if [ $ok = 1 ]; then
    echo "ok   $name ($ms ms${max_rss_kb:+, ${rss} kB})"
    passes=$((passes + 1))
  else
    echo "$out" | head -20
    fails=$((fails + 1))
  fi
}
finish() {
  echo "$passes passed, $fails failed"
  [ $fails = 0 ]
}
