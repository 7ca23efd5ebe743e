#!/usr/bin/env bash
# The sequence-parallel strategies over a network link you can measure on one machine
# (issue 19, item 1, first part): Open MPI's TCP transport over loopback (--mca btl self,tcp
# --mca btl_tcp_if_include lo), rate-limited with the kernel's token bucket
#   tc qdisc add dev lo root tbf rate RATE burst 256kb latency 50ms
# (not 64kb: the loopback's MTU is 65536 bytes, and a token bucket smaller than one packet
# never lets it through. With burst 64kb, a 2-rank ring run spun for minutes without
# finishing a step; 256kb admits a whole segment.)
# and, for comparison, shared memory (btl self,vader). For each strategy at N = 2 and 4 it
# prints the step time, the time rank 0 spent blocked in communication (`train --profile`'s
# comm phase), the bytes rank 0 sent per step, and what those bytes take at the link's rate.
#
#   sudo bash bench/tcp_link.sh [RATES]        (default "1gbit 100mbit"; root: tc needs it)
#
# The qdisc is removed on every exit (normal, error, Ctrl-C); a loopback that already has a
# root qdisc is refused rather than touched. Refuses clearly without tc or root.
set -euo pipefail
cd "$(dirname "$0")/.."
rates=${1:-1gbit 100mbit}
bin=./build/seqpar
py=python3; [ -x /usr/bin/python3 ] && py=/usr/bin/python3
command -v tc > /dev/null || { echo "tcp_link: tc not found (Debian: apt-get install iproute2)" >&2; exit 2; }
[ "$(id -u)" = 0 ] || { echo "tcp_link: shaping the loopback with tc needs root" >&2; exit 2; }
if tc qdisc show dev lo | grep -qv 'noqueue'; then
  echo "tcp_link: lo already has a root qdisc ($(tc qdisc show dev lo | head -1)); not touching it" >&2
  exit 2
fi
added=0
cleanup() { if [ $added = 1 ]; then tc qdisc del dev lo root 2> /dev/null || true; added=0; fi; }
trap cleanup EXIT
trap 'cleanup; exit 130' INT TERM
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
work=$(mktemp -d)
trap 'cleanup; rm -rf "$work"' EXIT

model=(train --arch llama --dim 256 --heads 8 --kv-heads 8 --layers 2 --seq-len 4096 --batch 1
       --steps 4 --threads 1 --progress none --profile)
strategies=("ring --layout zigzag" "usp --usp-ulysses 2 --layout zigzag" "ulysses" "allgather --layout zigzag" "mqsp" "rsa")

# row LINK RATE_BPS N STRATEGY...: one run, its median over steps 2-4
row() {
  local link=$1 bps=$2 n=$3
  shift 3
  local btl=(--mca btl self,vader)
  [ "$link" != shm ] && btl=(--mca btl self,tcp --mca btl_tcp_if_include lo)
  local out="$work/run"
  rm -rf "$out"
  if ! timeout 300 mpiexec -n "$n" --oversubscribe --bind-to none "${btl[@]}" "$bin" "${model[@]}" \
      --sp "$n" --sp-strategy "$@" --out "$out" > "$work/log" 2>&1; then
    echo "| $link | $n | $* | failed: $(tail -1 "$work/log") |||||"
    return
  fi
  "$py" - "$out/metrics.jsonl" "$link" "$bps" "$n" "$*" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])][1:]
link, bps, n, strat = sys.argv[2], float(sys.argv[3]), sys.argv[4], sys.argv[5]
step = statistics.median(r["step_ms"] for r in rows)
comm = statistics.median(r["profile_ms"]["comm"] for r in rows)
sent = statistics.median(r["bytes_sent"]["sp"] + r["bytes_sent"]["world"] for r in rows)
wire = 8 * sent / bps * 1e3 if bps > 0 else float("nan")
print(f"| {link} | {n} | {strat} | {step:.0f} | {comm:.0f} | {100 * comm / step:.0f} % | {sent / 2**20:.1f} | "
      + (f"{wire:.0f}" if bps > 0 else "—") + " |")
PY
}

echo "| link | N | strategy | step ms | comm (blocked) ms | comm share | MiB sent / step (rank 0) | at link rate, ms |"
echo "|---|---|---|---|---|---|---|---|"
for n in 2 4; do
  for s in "${strategies[@]}"; do row shm 0 $n $s; done
done
for rate in $rates; do
  tc qdisc add dev lo root tbf rate "$rate" burst 256kb latency 50ms
  added=1
  bps=$("$py" -c "
import re, sys
m = re.fullmatch(r'([0-9.]+)([kmg]?)bit', sys.argv[1].lower())
print(float(m.group(1)) * {'': 1, 'k': 1e3, 'm': 1e6, 'g': 1e9}[m.group(2)])" "$rate")
  for n in 2 4; do
    for s in "${strategies[@]}"; do row "tcp $rate" "$bps" $n $s; done
  done
  cleanup
done
