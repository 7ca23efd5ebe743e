#!/usr/bin/env bash
# SIGTERM during training saves a checkpoint and exits cleanly; --resume continues from it.
#  1. one process (no mpiexec): SIGTERM → checkpoint, exit status 0;
#  2. two ranks under mpiexec: SIGTERM to the rank processes (what a batch scheduler's
#     scancel/kill does) → every rank stops after the same step, rank 0 saves, exit 0.
#     (SIGTERM to mpiexec itself is not used: OpenMPI's mpiexec then kills the ranks
#     after a short grace period, which may be too short to write a checkpoint.)
#  3. --resume on two ranks continues from that step to the end, exit status 0.
# Usage: sigterm_resume.sh SEQPAR_BINARY SOURCE_DIR
set -u
bin=$1
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fails=0
passes=0
check() { if eval "$2"; then echo "ok   $1"; passes=$((passes + 1)); else echo "FAIL $1"; fails=$((fails + 1)); fi; }
args() {  # args OUT STEPS
  echo train --data passkey --seq-len 128 --batch 2 --dim 64 --heads 2 --steps "$2" \
    --progress lines --out "$1" --threads 1
}
wait_for_step() { for _ in $(seq 1 600); do grep -qs "^step $2/" "$1" && return; sleep 0.1; done; }

# 1. single process
timeout 300 "$bin" $(args "$tmp/one" 100000) > "$tmp/log1" 2>&1 &
pid=$!
wait_for_step "$tmp/log1" 3
kill -TERM "$pid"
wait "$pid"
rc=$?
check "single-rank exit status 0 after SIGTERM (got $rc)" '[ $rc = 0 ]'
check "single-rank checkpoint saved" '[ -f "$tmp/one/checkpoints/latest" ] && grep -q "saved checkpoint" "$tmp/log1"'

# 2. two ranks
timeout 300 mpiexec -n 2 --oversubscribe --bind-to none "$bin" $(args "$tmp/two" 100000) > "$tmp/log2" 2>&1 &
pid=$!
wait_for_step "$tmp/log2" 3
sleep 0.5
mpx=$(pgrep -P "$pid")          # timeout → mpiexec → ranks
ranks=$(pgrep -P "$mpx" -d ' ')
kill -TERM $ranks
wait "$pid"
rc=$?
check "two ranks exit status 0 after SIGTERM (got $rc)" '[ $rc = 0 ]'
check "two ranks stop on the signal" 'grep -q "stop signal received" "$tmp/log2"'
check "two ranks saved a checkpoint" '[ -f "$tmp/two/checkpoints/latest" ]'
check "no rank reported an error" '! grep -q "error:" "$tmp/log2"'
step=$(sed -n 's/.*checkpointing at step \([0-9]*\).*/\1/p' "$tmp/log2" | head -1)
[ -n "$step" ] || step=0

# 3. resume for two more steps
# Another --steps changes the cosine schedule: the resume names it with --override.
timeout 300 mpiexec -n 2 --oversubscribe --bind-to none "$bin" $(args "$tmp/two" $((step + 2))) --resume --override steps > "$tmp/log3" 2>&1
rc=$?
check "resume exit status 0 (got $rc)" '[ $rc = 0 ]'
check "resumed at step $step" 'grep -q "resumed from .*step_$(printf %08d "$step") at step $step" "$tmp/log3"'
check "finished after step $((step + 2))" 'grep -q "done after step $((step + 2))" "$tmp/log3"'
[ $fails = 0 ] || { echo "--- logs"; for f in "$tmp"/log*; do tail -n 5 "$f"; done; }
echo "$passes passed, $fails failed"
[ $fails = 0 ]
