#!/usr/bin/env bash
# seqpar plot DIR: the PNGs of a run (loss with validation loss, tokens/s, memory per arena
# category, answer accuracy) are written to DIR/plots/ and are PNG files; without gnuplot on
# PATH, and for a missing run directory, a clear error and exit 1; under mpiexec with more
# than one rank, refused. Skipped (77) after the error checks where gnuplot is not installed.
# Usage: plot.sh SEQPAR_BINARY SOURCE_DIR
set -u
source "$(dirname "$0")/lib.bash"
"$bin" train --data passkey --seq-len 128 --batch 2 --steps 4 --dim 32 --heads 2 --layers 1 \
  --threads 1 --progress none --eval-every 2 --eval-batches 1 --out "$tmp/run" > /dev/null 2>&1
check "a short run with evaluation trains" '[ -s "$tmp/run/metrics.jsonl" ]'

# A PATH holding everything on the real one but gnuplot (MPI's singleton start needs the
# rest), so seqpar sees exactly "no gnuplot".
mkdir -p "$tmp/bin"
IFS=: read -ra dirs <<<"$PATH"
for d in "${dirs[@]}"; do
  [ -d "$d" ] || continue
  find "$d" -maxdepth 1 ! -name 'gnuplot*' \( -type f -o -type l \) -exec ln -s -t "$tmp/bin" {} + 2>/dev/null
done
out=$(PATH="$tmp/bin" "$bin" plot "$tmp/run" 2>&1)
rc=$?
check "without gnuplot: exit 1, says so and how to install it" \
  '[ $rc = 1 ] && grep -q "gnuplot not found on PATH" <<<"$out" && grep -q "gnuplot-nox" <<<"$out"'
check "without gnuplot: no PNG written" '! ls "$tmp/run/plots/"*.png > /dev/null 2>&1'
out=$("$bin" plot "$tmp/nope" 2>&1)
rc=$?
check "a missing run directory: exit 1, naming it" '[ $rc = 1 ] && grep -q "run directory .*nope.* does not exist" <<<"$out"'
mkdir -p "$tmp/empty"
out=$("$bin" plot "$tmp/empty" 2>&1)
rc=$?
check "a directory without metrics.jsonl: exit 1, naming it" '[ $rc = 1 ] && grep -q "has no metrics.jsonl" <<<"$out"'
out=$(mpi 2 "$bin" plot "$tmp/run" 2>&1)
rc=$?
check "under mpiexec -n 2: refused (exit 2) on both ranks" \
  '[ $rc = 2 ] && [ "$(grep -c "runs on one process" <<<"$out")" -ge 2 ]'

if ! command -v gnuplot > /dev/null; then
  echo "skipped: gnuplot is not installed (apt-get install gnuplot-nox; scripts/setup.sh)"
  finish > /dev/null || exit 1
  exit 77
fi
out=$("$bin" plot "$tmp/run" 2>&1)
rc=$?
check "seqpar plot exits 0 and lists its PNGs" '[ $rc = 0 ] && [ "$(grep -c "\.png$" <<<"$out")" = 4 ]'
for f in loss tokens_per_s memory answer_acc; do
  check "plots/$f.png is a non-empty PNG" \
    '[ -s "$tmp/run/plots/$f.png" ] && [ "$(head -c 8 "$tmp/run/plots/$f.png" | od -An -tx1 | tr -d " ")" = 89504e470d0a1a0a ]'
done
check "the validation loss is among the plotted data (steps 2 and 4)" \
  '[ "$(grep -vc "^#" "$tmp/run/plots/val.tsv")" = 2 ]'
finish
