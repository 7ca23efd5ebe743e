#!/usr/bin/env bash
# `--arch llama` on subword tokens (kjv-bpe8k) through the real binary under mpiexec: every
# sequence-parallel strategy and vocabulary-parallel --tp 2 give the one-rank loss curve
# over 20 steps with dropout on, with the fused loss and with the materialized one.
# Usage: llama.sh SEQPAR_BINARY SOURCE_DIR
set -u
source "$(dirname "$0")/lib.bash"
cd "$src" || exit 1
[ -f data/kjv-bpe8k.tok ] || { echo "FAIL data/kjv-bpe8k.tok is missing: run bash scripts/setup.sh"; exit 1; }
args=(train --arch llama --data kjv-bpe8k --seq-len 64 --batch 2 --steps 20 --dim 32 --heads 4
      --kv-heads 2 --layers 2 --dropout 0.1 --attn-dropout 0.1 --progress none --threads 1
      --warmup 4 --lr 3e-3)
same_curve() {  # same_curve REF RUN: every step's loss within 1e-4 relative
  python3 - "$1/metrics.jsonl" "$2/metrics.jsonl" <<'PY'
import json, sys
a = [json.loads(l)["loss"] for l in open(sys.argv[1])]
b = [json.loads(l)["loss"] for l in open(sys.argv[2])]
# fp32 sums in another order (shards, vocabulary shards), carried by AdamW over 20 steps
sys.exit(0 if len(a) == len(b) == 20 and all(abs(x - y) <= 1e-4 * x for x, y in zip(a, b)) else 1)
PY
}
"$bin" "${args[@]}" --out "$tmp/ref" > "$tmp/ref.log" 2>&1
check "one rank trains llama on kjv-bpe8k (V = 8192 from the token file)" 'grep -q "\"vocab\": 8192" "$tmp/ref/config.json" && grep -q "done after step 20" "$tmp/ref.log"'
for run in "ring --layout zigzag" "ulysses" "usp" "mqsp" "rsa"; do
  mpi 2 "$bin" "${args[@]}" --sp 2 --sp-strategy $run --out "$tmp/sp_${run%% *}" > /dev/null 2>&1
  check "sp 2 $run equals one rank" 'same_curve "$tmp/ref" "$tmp/sp_${run%% *}"'
done
mpi 2 "$bin" "${args[@]}" --tp 2 --out "$tmp/tp2" > /dev/null 2>&1
check "tp 2 (vocabulary-parallel embedding and head) equals one rank" 'same_curve "$tmp/ref" "$tmp/tp2"'
mpi 2 "$bin" "${args[@]}" --tp 2 --tp-sp off --loss materialized --out "$tmp/tp2m" > /dev/null 2>&1
check "tp 2 without sequence parallelism, materialized loss, equals one rank" 'same_curve "$tmp/ref" "$tmp/tp2m"'
mpi 4 "$bin" "${args[@]}" --tp 2 --sp 2 --sp-strategy ring --recompute full --out "$tmp/tpsp" > /dev/null 2>&1
check "tp 2 x sp 2 ring, full recompute, equals one rank" 'same_curve "$tmp/ref" "$tmp/tpsp"'
# A vocabulary that does not divide by tp: 8193 rows split 4097 + 4096.
"$bin" "${args[@]}" --vocab 8193 --out "$tmp/ref_odd" > /dev/null 2>&1
mpi 2 "$bin" "${args[@]}" --vocab 8193 --tp 2 --out "$tmp/tp2_odd" > /dev/null 2>&1
check "tp 2 with an uneven vocabulary (V = 8193) equals one rank" 'same_curve "$tmp/ref_odd" "$tmp/tp2_odd"'
"$bin" "${args[@]}" --loss materialized --out "$tmp/mat" > /dev/null 2>&1
check "materialized loss equals the fused one" 'same_curve "$tmp/ref" "$tmp/mat"'
check "a model with another vocabulary than the data is refused" '"$bin" train --arch llama --data kjv-bpe8k --vocab 300 --steps 1 --out "$tmp/v" 2>&1 | grep -q "smaller than the data"'
finish
