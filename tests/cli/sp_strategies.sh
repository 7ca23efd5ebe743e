#!/usr/bin/env bash
# The command line end to end: `mpiexec -n 4 seqpar train --sp 4 --sp-strategy S` for every
# strategy, and dp × sp and tp × sp meshes, print the same loss curve as one rank, with
# dropout and attention dropout on. Usage: sp_strategies.sh SEQPAR_BINARY SOURCE_DIR
set -u
bin=$1
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fails=0
passes=0
common=(train --data passkey --seq-len 128 --batch 2 --steps 4 --dim 32 --heads 4 --kv-heads 2
        --ffn 64 --dropout 0.1 --attn-dropout 0.1 --progress lines --threads 1)
losses() { sed -n 's/^step [0-9]*\/[0-9]* loss \([0-9.]*\).*/\1/p' "$1"; }

"$bin" "${common[@]}" --out "$tmp/ref" > "$tmp/ref.log" 2>&1 || { echo "FAIL reference run"; cat "$tmp/ref.log"; exit 1; }
losses "$tmp/ref.log" > "$tmp/ref.loss"
[ "$(wc -l < "$tmp/ref.loss")" = 4 ] || { echo "FAIL reference printed no losses"; exit 1; }

run() {  # run NAME BATCH ARGS...: compare with the reference (batch 2 per replica)
  local name=$1
  shift
  timeout 300 mpiexec -n 4 --oversubscribe --bind-to none "$bin" "${common[@]}" "$@" \
    --out "$tmp/$name" > "$tmp/$name.log" 2>&1
  local rc=$?
  losses "$tmp/$name.log" > "$tmp/$name.loss"
  # fp32 rounding of reordered sums, carried through 4 AdamW steps: 1e-4 relative.
  if [ $rc = 0 ] && [ "$(wc -l < "$tmp/$name.loss")" = 4 ] &&
     paste "$tmp/ref.loss" "$tmp/$name.loss" |
       awk '{d = $1 - $2; if (d < 0) d = -d; if (d > 1e-4 * $1) bad = 1} END {exit bad}'; then
    echo "ok   $name"
    passes=$((passes + 1))
  else
    echo "FAIL $name (exit $rc)"; paste "$tmp/ref.loss" "$tmp/$name.loss"; tail -3 "$tmp/$name.log"
    fails=$((fails + 1))
  fi
}

run ring --sp 4 --sp-strategy ring --layout zigzag
run ulysses --sp 4 --sp-strategy ulysses
run usp --sp 4 --sp-strategy usp --usp-ulysses 2
run mqsp --sp 4 --sp-strategy mqsp
run rsa --sp 4 --sp-strategy rsa
run tp2-sp2 --tp 2 --sp 2 --sp-strategy ring --recompute selective
# tp 4 with Hkv = 2: each kv head replicated on 2 ranks, its gradient summed over them.
run tp4-kv-replicated --tp 4
# dp 2 × sp 2: each replica takes batch 1, so the global batch is the reference's 2.
run dp2-sp2 --sp 2 --sp-strategy ulysses --batch 1

echo "$passes passed, $fails failed"
[ $fails = 0 ]
