#!/usr/bin/env bash
# One set-up path (train/setup.hpp): the same bad input gets the same message and the same
# exit code from every subcommand that takes it. Five bad inputs, each through every
# subcommand that has the setting, on 2 ranks (and export on 1, it runs on one process):
#   missing checkpoint   eval, generate, export          exit 1 (a file the user named)
#   unknown strategy     train, plan, check, eval, generate   exit 2 (a value the user chose)
#   --sp 0               train, plan, check, eval, generate   exit 2
#   bad --max-memory     train, plan, check, generate     exit 2
#   missing data         train, plan, check               exit 1
# Each message must be identical across the subcommands (after "seqpar: error: [rank r] "),
# printed by every rank, and carry no source location.
# Usage: same_errors.sh SEQPAR_BINARY SOURCE_DIR
set -u
source "$(dirname "$0")/lib.bash"

# A small run with a checkpoint, so eval and generate reach the setting under test.
"$bin" train --dim 32 --heads 2 --layers 1 --seq-len 32 --batch 2 --steps 1 --progress none \
  --threads 1 --out "$tmp/run" > /dev/null 2>&1
check "a run to evaluate" '[ -d "$tmp/run/checkpoints" ]'

small=(--dim 32 --heads 2 --layers 1 --seq-len 32 --batch 2 --steps 1 --progress none
  --threads 1 --out "$tmp/out")
# The arguments that bring each subcommand up to the setting under test.
declare -A base=(
  [train]="${small[*]}" [plan]="${small[*]} --budget 64MiB" [check]="${small[*]}"
  [eval]="--checkpoint $tmp/run" [generate]="--checkpoint $tmp/run --prompt x --max-new-tokens 1"
  [export]="--out $tmp/hf")

# row NAME CODE "SUBCOMMANDS" ARGS... : runs every subcommand with ARGS, expects CODE and one
# message, the same from all.
row() {
  local name=$1 code=$2 subs=$3
  shift 3
  local first="" sub
  for sub in $subs; do
    local ranks=2 out rc
    [ "$sub" = export ] && ranks=1
    # shellcheck disable=SC2086
    if [ $ranks = 1 ]; then
      out=$(timeout 60 "$bin" $sub ${base[$sub]} "$@" 2>&1 >/dev/null)
    else
      out=$(mpi 2 "$bin" $sub ${base[$sub]} "$@" 2>&1 >/dev/null)
    fi
    rc=$?
    # The message of each rank, without the prefix; MPI's own lines dropped.
    local msgs
    msgs=$(grep '^seqpar: error: ' <<<"$out" | sed -E 's/^seqpar: error: (\[rank [0-9]+\] )?//' | sort -u)
    local n
    n=$(grep -c '^seqpar: error: ' <<<"$out")
    check "$name: $sub exits $code (got $rc)" '[ "$rc" = "$code" ]'
    check "$name: $sub prints it on each of $ranks rank(s), one message" \
      '[ "$n" = "$ranks" ] && [ "$(wc -l <<<"$msgs")" = 1 ]'
    check "$name: $sub names no source file" '! grep -qE "\.[ch]pp:[0-9]" <<<"$msgs"'
    if [ -z "$first" ]; then
      first=$msgs
      echo "     $name: $msgs"
    else
      check "$name: $sub says what the others say" '[ "$msgs" = "$first" ]' ||
        echo "     got: $msgs"
    fi
  done
}

base[eval]="" base[generate]="--prompt x --max-new-tokens 1"
row "missing checkpoint" 1 "eval generate export" --checkpoint "$tmp/nope"
base[eval]="--checkpoint $tmp/run" base[generate]="--checkpoint $tmp/run --prompt x --max-new-tokens 1"
row "unknown strategy" 2 "train plan check eval generate" --sp-strategy bogus
row "sp 0" 2 "train plan check eval generate" --sp 0
row "bad --max-memory" 2 "train plan check generate" --max-memory 12XB
row "missing data" 1 "train plan check" --data "$tmp/nope.txt"
finish
