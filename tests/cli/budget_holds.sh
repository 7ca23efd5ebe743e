#!/usr/bin/env bash
# The budget holds (issue 10): plan the longest L under a small arena budget at N = 2, train
# there with a checkpoint save, and compare the peak resident memory (VmHWM, max over ranks,
# printed by the trainer after its final save) with the whole-process plan it was admitted
# under (--max-memory). The save streams through the arena's checkpoint buffer, so it adds
# nothing outside the plan (the old whole-model host copies were 12 bytes per parameter,
# ~19 MB or 12 % here, and fail this check).
# Tolerance 3 %: what remains outside the plan is memory the first training step touches
# (not yet identified: 3.5–3.8 MB, 2.3 %, at N = 2 with ring; 0.7 MB on one rank; likely
# MPI's transport buffers), measured in docs/results.md: the budget does not fully hold yet.
# Usage: budget_holds.sh SEQPAR_BINARY SOURCE_DIR
set -u
source "$(dirname "$0")/lib.bash"
cd "$tmp" || exit 1
run=(--sp 2 --sp-strategy ring --batch 1 --threads 1 --progress none)

plan=$(mpi 2 "$bin" plan "${run[@]}" --budget 128MiB 2>&1)
L=$(grep -o '"longest_seq_len":[0-9]*' <<<"$plan" | cut -d: -f2)
check "plan finds a length under 128 MiB" '[ "${L:-0}" -gt 1000 ]'

out=$(mpi 2 "$bin" train "${run[@]}" --seq-len "$L" --steps 2 --max-memory 192MiB --out "$tmp/r" 2>&1)
rc=$?
echo "$out" | grep -E "memory plan|peak resident|saved"
hwm=$(grep -o 'VmHWM, max over ranks): [0-9]*' <<<"$out" | grep -o '[0-9]*$')
plan_total=$(grep -o 'plan [0-9]* bytes' <<<"$out" | grep -o '[0-9]*')
check "train at the planned L with a save: exit 0" '[ $rc = 0 ] && grep -q "saved checkpoint" <<<"$out"'
check "VmHWM (every rank, the max) within 3 % of the plan, and under --max-memory" \
  '[ -n "$hwm" ] && [ -n "$plan_total" ] && [ $((hwm * 100)) -le $((plan_total * 103)) ] && [ "$hwm" -le $((192 * 1048576)) ]'
echo "VmHWM $hwm bytes, plan $plan_total bytes"
finish
