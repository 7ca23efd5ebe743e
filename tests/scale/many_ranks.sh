#!/usr/bin/env bash
# 16 and 32 ranks (issue 19, item 5): every strategy and layout trains a tiny llama at
# N = 16 and 32, oversubscribed on whatever cores there are (correctness, not speed), and
# prints the one-rank loss curve. The model has 32 heads and 32 kv heads (d = 2) so Ulysses
# can split heads 32 ways; L = 1000 divides by neither 16 nor 32 (nor by 2N for zigzag), so
# every layout deals uneven shards; one case packs documents (kjv-bpe8k's chapters) with a
# window, another runs tp 2 × sp 8 and dp 2 × sp 16. Dropout off: the losses are compared
# at 1e-4 relative (fp32 sums reordered over 32 shards, carried through 3 AdamW steps).
# Run by ctest under the label `scale` (bash scripts/test.sh --scale); ~2 minutes here.
# Usage: many_ranks.sh SEQPAR_BINARY SOURCE_DIR
set -u
bin=$1 src=$2
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
fails=0 passes=0
base=(train --arch llama --dim 64 --heads 32 --kv-heads 32 --ffn 64 --layers 2 --batch 2
      --steps 3 --threads 1 --progress lines)
bytes=(--data kjv --seq-len 1000)
packed=(--data "$src/data/kjv-bpe8k.tok" --seq-len 1000 --pack-documents --window 300)
losses() { sed -n 's/^step [0-9]*\/[0-9]* loss \([0-9.]*\).*/\1/p' "$1"; }

reference() {  # reference NAME DATA...: the one-rank curve
  "$bin" "${base[@]}" "${@:2}" --out "$tmp/ref_$1" > "$tmp/ref_$1.log" 2>&1
  losses "$tmp/ref_$1.log" > "$tmp/ref_$1.loss"
  [ "$(wc -l < "$tmp/ref_$1.loss")" = 3 ] || { echo "FAIL reference $1"; tail -3 "$tmp/ref_$1.log"; exit 1; }
}
run() {  # run REF N NAME ARGS...
  local ref=$1 n=$2 name=$3
  shift 3
  timeout 300 mpiexec -n "$n" --oversubscribe --bind-to none "$bin" "${base[@]}" "$@" \
    --out "$tmp/$name" > "$tmp/$name.log" 2>&1
  local rc=$?
  losses "$tmp/$name.log" > "$tmp/$name.loss"
  if [ $rc = 0 ] && [ "$(wc -l < "$tmp/$name.loss")" = 3 ] &&
     paste "$tmp/ref_$ref.loss" "$tmp/$name.loss" |
       awk '{d = $1 - $2; if (d < 0) d = -d; if (d > 1e-4 * $1) bad = 1} END {exit bad}'; then
    echo "ok   N=$n $name"
    passes=$((passes + 1))
  else
    echo "FAIL N=$n $name (exit $rc)"; paste "$tmp/ref_$ref.loss" "$tmp/$name.loss"; tail -3 "$tmp/$name.log"
    fails=$((fails + 1))
  fi
}

reference bytes "${bytes[@]}"
reference packed "${packed[@]}"
for n in 16 32; do
  run bytes $n "ring-contiguous-$n" "${bytes[@]}" --sp $n --sp-strategy ring --layout contiguous
  run bytes $n "ring-zigzag-$n" "${bytes[@]}" --sp $n --sp-strategy ring --layout zigzag
  run bytes $n "ring-striped-$n" "${bytes[@]}" --sp $n --sp-strategy ring --layout striped
  run bytes $n "allgather-$n" "${bytes[@]}" --sp $n --sp-strategy allgather --layout zigzag
  run bytes $n "ulysses-$n" "${bytes[@]}" --sp $n --sp-strategy ulysses
  run bytes $n "usp-$n" "${bytes[@]}" --sp $n --sp-strategy usp --usp-ulysses 4 --layout zigzag
  run bytes $n "mqsp-$n" "${bytes[@]}" --sp $n --sp-strategy mqsp
  run bytes $n "rsa-$n" "${bytes[@]}" --sp $n --sp-strategy rsa
  run packed $n "packed-window-ring-striped-$n" "${packed[@]}" --sp $n --sp-strategy ring --layout striped
  run packed $n "packed-window-ulysses-$n" "${packed[@]}" --sp $n --sp-strategy ulysses
done
run bytes 16 "tp2-sp8" "${bytes[@]}" --tp 2 --sp 8 --sp-strategy ring --layout zigzag
run bytes 32 "dp2-sp16" "${bytes[@]}" --sp 16 --sp-strategy usp --usp-ulysses 2 --batch 1
echo "$passes passed, $fails failed"
[ $fails = 0 ]
