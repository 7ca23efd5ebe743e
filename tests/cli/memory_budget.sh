#!/usr/bin/env bash
# The whole process must fit (issue 10, budget part): train and check refuse a plan above
# --max-memory up front, on every rank, before any allocation or file; and a SIGTERM during
# the set-up (here: while a 3 GiB arena is being zeroed) stops the run within seconds,
# before the first step, with 128 + 15 and nothing saved.
# Usage: memory_budget.sh SEQPAR_BINARY SOURCE_DIR
set -u
source "$(dirname "$0")/lib.bash"
cd "$tmp" || exit 1
small=(--steps 2 --progress none --threads 1)

start=$(date +%s)
out=$(mpi 2 "$bin" train "${small[@]}" --sp 2 --sp-strategy ring --max-memory 10MiB --out "$tmp/r1" 2>&1)
rc=$?
check "train above --max-memory: exit 2" '[ $rc = 2 ]'
check "train above --max-memory: every rank names the plan and the limit" \
  '[ $(grep -c "needs .* per rank (arena peak .*, of which checkpoint buffer .*, + runtime baseline .*) but --max-memory is 10MiB" <<<"$out") = 2 ]'
check "train above --max-memory: refused within seconds, no run directory" \
  '[ $(( $(date +%s) - start )) -lt 20 ] && [ ! -e "$tmp/r1" ]'

out=$(mpi 2 "$bin" check --seq-len 65536 --batch 2 --sp 2 --sp-strategy ring --max-memory 1GiB 2>&1)
rc=$?
check "check above --max-memory: ok false, exit 2" '[ $rc = 2 ] && grep -q "\"ok\": false" <<<"$out"'
check "check reports arena, baseline, checkpoint and total" \
  'for k in peak_bytes baseline_bytes checkpoint_bytes total_bytes max_memory_bytes; do grep -q "\"$k\"" <<<"$out" || exit 1; done'
out=$("$bin" check "${small[@]}" --max-memory 8GiB 2>&1)
check "check within --max-memory: ok true, exit 0" '[ $? = 0 ] && grep -q "\"ok\": true" <<<"$out"'
out=$(mpi 2 "$bin" plan --sp 2 --sp-strategy ring --budget 256MiB --max-memory 8GiB 2>&1)
check "plan reports the whole process at its L and compares it with --max-memory" \
  'grep -q "\"baseline_bytes\":[1-9]" <<<"$out" && grep -q "\"fits_max_memory\":true" <<<"$out"'
out=$("$bin" train "${small[@]}" --max-memory 12bananas --out "$tmp/r2" 2>&1)
check "a bad --max-memory is named (exit 2)" '[ $? = 2 ] && grep -q -- "--max-memory .12bananas. has an unknown unit" <<<"$out"'

# SIGTERM while the arena (~3 GiB at L = 65536) is being zeroed: wait until the process
# holds 300 MiB (it is in the set-up), signal it, and time the exit.
"$bin" train --seq-len 65536 --batch 1 --steps 1 --progress none --threads 1 \
  --out "$tmp/sig" > "$tmp/sig.log" 2>&1 &
pid=$!
for _ in $(seq 1 500); do
  rss=$(awk '/VmRSS/ {print $2}' /proc/$pid/status 2>/dev/null || echo 0)
  [ "${rss:-0}" -gt 307200 ] && break
  sleep 0.01
done
t0=$(date +%s%N)
kill -TERM $pid
wait $pid
rc=$?
ms=$(( ($(date +%s%N) - t0) / 1000000 ))
echo "exit $rc, ${ms} ms after SIGTERM"
check "SIGTERM during set-up: exit 143 within 5 s" '[ $rc = 143 ] && [ $ms -lt 5000 ]'
check "SIGTERM during set-up: said so, nothing saved" \
  'grep -q "during set-up, before step 1; nothing was trained or saved" "$tmp/sig.log" && [ ! -e "$tmp/sig/checkpoints/step_00000001" ]'
finish
