#!/usr/bin/env bash
# Bad input gets a clear error on EVERY rank and a non-zero exit, never a hang:
# missing data file, out-of-range config value, unknown flag, corrupt config file,
# a shape that does not divide, packing options, and a corrupt checkpoint on --resume.
# The error is for the user: it names the file or value and the problem, never a source
# file or line of seqpar (those are for failed invariants, bugs).
# Usage: bad_input.sh SEQPAR_BINARY SOURCE_DIR
set -u
bin=$1
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fails=0
passes=0
mpi() { timeout 120 mpiexec -n "$1" --oversubscribe --bind-to none "${@:2}"; }

# expect NAME EXIT_CODE PATTERN RANKS -- command...  (and no source location in the output,
# unless with_location=1 is set for the call)
expect() {
  local name=$1 code=$2 pattern=$3 ranks=$4
  shift 5
  local out rc
  out=$("$@" 2>&1)
  rc=$?
  local ok=1
  [ "$rc" = "$code" ] || { echo "FAIL $name: exit $rc, expected $code"; ok=0; }
  local n
  n=$(grep -o -- "$pattern" <<<"$out" | wc -l)
  [ "$n" -ge "$ranks" ] || { echo "FAIL $name: '$pattern' printed $n times, expected on $ranks rank(s)"; ok=0; }
  [ "${with_location:-0}" = 1 ] ||
    ! grep -qE "\.[ch]pp:[0-9]|/src/(cli|comm|core|data|infer|kernels|model|parallel|train)/" <<<"$out" ||
    { echo "FAIL $name: a source location in the message"; ok=0; }
  if [ $ok = 1 ]; then echo "ok   $name"; passes=$((passes + 1)); else echo "$out" | head -20; fails=$((fails + 1)); fi
}

common=(--steps 1 --progress none --out "$tmp/run" --threads 1)
expect missing-data 1 "does not exist" 2 -- mpi 2 "$bin" train "${common[@]}" --data "$tmp/nope.txt"
expect heads-not-dividing 2 "not divisible by heads" 2 -- mpi 2 "$bin" train "${common[@]}" --dim 30 --heads 4
expect negative-steps 2 "steps must be >= 0" 2 -- mpi 2 "$bin" train "${common[@]}" --steps -3
expect dropout-range 2 "dropout must be in" 2 -- mpi 2 "$bin" train "${common[@]}" --dropout 1.5
expect beta1-range 2 "beta1 must be in \[0, 1), got 1.5" 2 -- mpi 2 "$bin" train "${common[@]}" --beta1 1.5
expect batch-overflow 2 "config 'batch' = 4294967298 is out of range" 2 -- mpi 2 "$bin" train "${common[@]}" --batch 4294967298
expect unknown-flag 2 "unknown-flag" 2 -- mpi 2 "$bin" train --unknown-flag 3
printf '{"seq_len": 64,' > "$tmp/bad.json"
expect corrupt-config 2 "not valid JSON" 2 -- mpi 2 "$bin" train "${common[@]}" --config "$tmp/bad.json"
echo '{"layers": 2.5}' > "$tmp/frac.json"
expect fractional-layers 2 "config 'layers' must be an integer" 1 -- "$bin" train "${common[@]}" --config "$tmp/frac.json"
echo '{"seq_lenn": 64}' > "$tmp/typo.json"
expect unknown-config-key 2 "unknown config key 'seq_lenn'" 1 -- "$bin" train "${common[@]}" --config "$tmp/typo.json"
printf 'short' > "$tmp/short.txt"
expect data-too-short 1 "fewer than seq_len" 2 -- mpi 2 "$bin" train "${common[@]}" --data "$tmp/short.txt"
expect sp-not-dividing-world 2 "not divisible by tp·sp = 1·2" 3 -- mpi 3 "$bin" train "${common[@]}" --data passkey --seq-len 128 --sp 2
expect tp-not-dividing-heads 2 "not divisible by tp=3" 3 -- mpi 3 "$bin" train "${common[@]}" --data passkey --seq-len 192 --tp 3 --batch 3
# Any L >= sp splits (tests/cli/any_length.sh); a shorter one leaves a rank without tokens.
expect l-below-sp 2 "L=2 is shorter than the sequence-parallel degree sp=3" 3 -- mpi 3 "$bin" train "${common[@]}" --data passkey --seq-len 2 --sp 3 --sp-strategy ring --layout zigzag
expect unknown-strategy 2 "unknown attention strategy 'bogus'" 2 -- mpi 2 "$bin" train "${common[@]}" --data passkey --seq-len 128 --sp 2 --sp-strategy bogus
# Ranks launched with different arguments (MPMD): the configuration check names them.
# (Comm::check_same fails with SP_FAIL and cli/main.cpp re-labels it a usage error, so the
# message still carries comm.cpp's location.)
expect ranks-disagree 2 "disagrees across ranks" 2 -- timeout 120 mpiexec --oversubscribe \
  -n 1 "$bin" train "${common[@]}" --data passkey --seq-len 128 : \
  -n 1 "$bin" train "${common[@]}" --data passkey --seq-len 256

# `seqpar check` validates without training: a good config prints its memory, a bad one
# is refused on every rank.
expect check-ok 0 '"peak_bytes"' 1 -- mpi 2 "$bin" check --data passkey --seq-len 256 --sp 2 --sp-strategy ring --layout zigzag
# The planner starts its search where the configuration is valid (mqsp needs L >= m).
expect plan-mqsp-micro 0 '"longest_seq_len":[1-9]' 1 -- mpi 2 "$bin" plan --sp 2 --sp-strategy mqsp --mqsp-micro 4 --budget 64MiB --dim 64 --heads 2
expect mqsp-micro-above-L 2 "must be at most L=8" 2 -- mpi 2 "$bin" train "${common[@]}" --data passkey --seq-len 8 --sp 2 --sp-strategy mqsp --mqsp-micro 16
expect check-l-below-sp 2 "L=2 is shorter than the sequence-parallel degree sp=3" 3 -- mpi 3 "$bin" check --data passkey --seq-len 2 --sp 3 --sp-strategy ring --layout zigzag

# Packed documents and windows (docs/data.md): bad values are named, byte data (no
# document table) is refused naming the data, reset positions need packing.
expect window-negative 2 "window must be >= 0 (0 = off), got -1" 2 -- mpi 2 "$bin" train "${common[@]}" --data passkey --seq-len 128 --window -1
expect doc-positions-unknown 2 "unknown doc_positions 'banana' (expected global or reset)" 2 -- mpi 2 "$bin" train "${common[@]}" --data passkey --seq-len 128 --doc-positions banana
expect pack-bytes-kjv 2 "bytes without a document table: kjv from" 2 -- mpi 2 "$bin" train "${common[@]}" --data kjv --pack-documents
expect pack-bytes-passkey 2 "bytes without a document table: synthetic passkey" 2 -- mpi 2 "$bin" train "${common[@]}" --data passkey --seq-len 128 --pack-documents
expect pack-bytes-check 2 "bytes without a document table: kjv from" 2 -- mpi 2 "$bin" check --data kjv --pack-documents
expect reset-without-packing 2 "doc_positions reset needs --pack-documents" 2 -- mpi 2 "$bin" train "${common[@]}" --data passkey --seq-len 128 --doc-positions reset

# A run directory holding checkpoints is never restarted over without --resume.
"$bin" train "${common[@]}" --data passkey --seq-len 128 --steps 1 --out "$tmp/keep" >/dev/null 2>&1
expect no-overwrite 2 "already holds checkpoints" 2 -- mpi 2 "$bin" train "${common[@]}" --data passkey --seq-len 128 --out "$tmp/keep"
mkfifo "$tmp/fifo"
expect data-not-regular 1 "is not a regular file" 2 -- mpi 2 "$bin" train "${common[@]}" --data "$tmp/fifo"

# A corrupt checkpoint is refused on resume, and the checkpoint is left as it was.
"$bin" train "${common[@]}" --data passkey --seq-len 128 --steps 2 >/dev/null 2>&1 || { echo "FAIL setup run"; fails=$((fails + 1)); }
f=$(ls "$tmp"/run/checkpoints/step_*/model.safetensors | head -1)
truncate -s -16 "$f"
size_before=$(stat -c %s "$f")
expect corrupt-checkpoint 1 "corrupt" 2 -- mpi 2 "$bin" train "${common[@]}" --data passkey --seq-len 128 --steps 4 --resume
if [ "$(stat -c %s "$f")" = "$size_before" ]; then echo "ok   corrupt checkpoint left as it was"; passes=$((passes + 1)); else echo "FAIL corrupt checkpoint was modified"; fails=$((fails + 1)); fi

# Token files: missing, or cut short (training on two ranks, and tokenize info).
printf 'SEQPTOKS\001\000\000\000' > "$tmp/cut.tok"
expect cut-token-file 1 "token file '$tmp/cut.tok' is truncated" 2 -- mpi 2 "$bin" train "${common[@]}" --data "$tmp/cut.tok"
expect info-missing-token-file 1 "token file '$tmp/nope.tok' does not exist" 1 -- "$bin" tokenize info --input "$tmp/nope.tok"
expect info-cut-token-file 1 "token file '$tmp/cut.tok' is truncated" 1 -- "$bin" tokenize info --input "$tmp/cut.tok"

echo "$passes passed, $fails failed"
[ $fails = 0 ]
