#!/usr/bin/env bash
# Held-out evaluation and the loss mask through the real binary under mpiexec:
#  * --eval-every logs val_loss / val_ppl, the same for every mesh (1 rank, sp 2 ring and
#    ulysses, dp 2, tp 2) with the same global batch;
#  * seqpar eval --run / --checkpoint gives the val_loss the run logged at that step, on
#    the training mesh exactly and on another mesh within fp32 rounding;
#  * --loss-on answer counts exactly the 5 answer digits per sample, on any mesh;
#  * bad input (no or missing checkpoint, run dir without checkpoints, --loss-on answer on
#    text) is refused on every rank with a non-zero exit.
# Usage: eval.sh SEQPAR_BINARY SOURCE_DIR
set -u
source "$(dirname "$0")/lib.bash"
small=(--data passkey --seq-len 128 --dim 32 --heads 4 --kv-heads 2 --layers 2 --threads 1
       --progress none --warmup 2 --lr 3e-3)
py() { python3 - "$@"; }

# ---- val_loss in metrics.jsonl, and the same for every mesh ---------------------------
"$bin" train "${small[@]}" --batch 4 --steps 6 --eval-every 3 --eval-batches 2 --ckpt-every 3 \
  --out "$tmp/ref" > "$tmp/ref.log" 2>&1
check "one rank trains with --eval-every 3" 'grep -q "done after step 6" "$tmp/ref.log"'
check "val_loss, val_ppl = exp(val_loss), val_tokens at steps 3 and 6 only" 'py "$tmp/ref/metrics.jsonl" <<"PY"
import json, math, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
val = {r["step"]: r for r in rows if "val_loss" in r}
ok = sorted(val) == [3, 6] and all(abs(r["val_ppl"] - math.exp(r["val_loss"])) <= 1e-9 * r["val_ppl"]
                                   and r["val_tokens"] == 2 * 4 * 128 for r in val.values())
ok = ok and len(rows) == 6 and val[6]["val_loss"] < val[3]["val_loss"]
sys.exit(0 if ok else 1)
PY'
check "config.json records eval_every, eval_batches and loss_on" 'py "$tmp/ref/config.json" <<"PY"
import json, sys
c = json.load(open(sys.argv[1]))
sys.exit(0 if (c["eval_every"], c["eval_batches"], c["loss_on"]) == (3, 2, "all") else 1)
PY'
# val_loss at step n of run $2 within $3 (relative) of the one-rank run's
same_val() {
  py "$tmp/ref/metrics.jsonl" "$1/metrics.jsonl" "$2" <<'PY'
import json, sys
a = {r["step"]: r for r in map(json.loads, open(sys.argv[1])) if "val_loss" in r}
b = {r["step"]: r for r in map(json.loads, open(sys.argv[2])) if "val_loss" in r}
tol = float(sys.argv[3])
ok = sorted(a) == sorted(b) == [3, 6] and all(
    abs(a[s]["val_loss"] - b[s]["val_loss"]) <= tol * a[s]["val_loss"] and
    a[s]["val_tokens"] == b[s]["val_tokens"] for s in a)
sys.exit(0 if ok else 1)
PY
}
# fp32 sums in another order (shards, ring hops, tp heads, dp gradient sums), carried by
# AdamW over 6 steps: the training curves agree to ~1e-6 relative, so 1e-4 is loose enough
# for rounding and far below what a wrong shard or a mis-weighted mean would move.
runs=("--sp 2 --sp-strategy ring --layout zigzag --batch 4"
      "--sp 2 --sp-strategy ulysses --batch 4"
      "--tp 2 --batch 4"
      "--batch 2")  # dp 2: the same global batch of 4
for run in "${runs[@]}"; do
  name=$(tr -c 'a-z0-9' _ <<<"$run")
  mpi 2 "$bin" train "${small[@]}" $run --steps 6 --eval-every 3 --eval-batches 2 \
    --out "$tmp/$name" > "$tmp/$name.log" 2>&1
  check "val_loss of '$run' equals one rank's (1e-4)" 'same_val "$tmp/$name" 1e-4'
done
# Control: another validation set size changes val_loss (the comparison can fail).
"$bin" train "${small[@]}" --batch 4 --steps 6 --eval-every 3 --eval-batches 1 \
  --out "$tmp/one_batch" > /dev/null 2>&1
check "control: --eval-batches 1 gives another val_loss" '! same_val "$tmp/one_batch" 1e-4'

# ---- seqpar eval on the saved run ------------------------------------------------------
logged() { py "$tmp/ref/metrics.jsonl" "$1" <<'PY'
import json, sys
print(repr([r for r in map(json.loads, open(sys.argv[1])) if r["step"] == int(sys.argv[2])][0]["val_loss"]))
PY
}
# close JSON_LINE VALUE TOL: the report's val_loss within TOL (relative) of VALUE
close() { py "$1" "$2" "$3" <<'PY'
import json, sys
j = json.loads(sys.argv[1])
sys.exit(0 if abs(j["val_loss"] - float(sys.argv[2])) <= float(sys.argv[3]) * float(sys.argv[2]) else 1)
PY
}
out=$("$bin" eval --run "$tmp/ref" --output "$tmp/report.json" 2> "$tmp/eval.err")
rc=$?
# The same arithmetic on the same mesh: equal to the last bit (JSON keeps doubles exact).
check "eval --run: exit 0, the val_loss logged at step 6 exactly" \
  '[ $rc = 0 ] && close "$out" "$(logged 6)" 0 && grep -q "\"step\":6" <<<"$out"'
check "eval --output writes the same report" 'py "$tmp/report.json" "$out" <<"PY"
import json, sys
sys.exit(0 if json.load(open(sys.argv[1])) == json.loads(sys.argv[2]) else 1)
PY'
out=$("$bin" eval --checkpoint "$tmp/ref/checkpoints/step_00000003" 2> "$tmp/eval3.err")
check "eval --checkpoint step_3: the val_loss logged at step 3" 'close "$out" "$(logged 3)" 0'
# Another mesh on the same weights: only the forward's fp32 sum order differs (1e-5).
out=$(mpi 2 "$bin" eval --run "$tmp/ref" --sp 2 --sp-strategy ring --layout zigzag 2> "$tmp/eval_sp.err")
check "eval --run under sp 2 ring: the logged val_loss (1e-5), printed once" \
  '[ "$(grep -c val_loss <<<"$out")" = 1 ] && close "$out" "$(logged 6)" 1e-5'
out=$(mpi 2 "$bin" eval --run "$tmp/ref" --batch 2 2> /dev/null)
check "eval --run under dp 2 (batch 2): the logged val_loss (1e-5)" 'close "$out" "$(logged 6)" 1e-5'

# ---- --loss-on answer ------------------------------------------------------------------
answer_counts() {  # every step counts B·dp·5 = 20 targets; validation 2·4·5 = 40
  py "$1/metrics.jsonl" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
ok = len(rows) == 4 and all(r["target_tokens"] == 20 for r in rows)
ok = ok and [r["val_tokens"] for r in rows if "val_tokens" in r] == [40, 40]
sys.exit(0 if ok else 1)
PY
}
ans=(train "${small[@]}" --loss-on answer --steps 4 --eval-every 2 --eval-batches 2)
"$bin" "${ans[@]}" --batch 4 --out "$tmp/ans1" > /dev/null 2>&1
check "--loss-on answer: 20 targets per step of 4 samples, 40 per evaluation" 'answer_counts "$tmp/ans1"'
mpi 2 "$bin" "${ans[@]}" --batch 4 --sp 2 --sp-strategy ring --out "$tmp/ans_sp" > /dev/null 2>&1
check "--loss-on answer under sp 2 (answers on one rank): the same counts" 'answer_counts "$tmp/ans_sp"'
mpi 2 "$bin" "${ans[@]}" --batch 2 --out "$tmp/ans_dp" > /dev/null 2>&1
check "--loss-on answer under dp 2: the same counts" 'answer_counts "$tmp/ans_dp"'
check "--loss-on answer: sp 2 loss equals one rank's (1e-4)" 'py "$tmp/ans1/metrics.jsonl" "$tmp/ans_sp/metrics.jsonl" <<"PY"
import json, sys
a = [json.loads(l)["loss"] for l in open(sys.argv[1])]
b = [json.loads(l)["loss"] for l in open(sys.argv[2])]
sys.exit(0 if len(a) == len(b) == 4 and all(abs(x - y) <= 1e-4 * x for x, y in zip(a, b)) else 1)
PY'
check "config.json records loss_on answer" 'grep -q "\"loss_on\": \"answer\"" "$tmp/ans1/config.json"'
out=$("$bin" "${ans[@]}" --batch 4 --loss-on all --steps 6 --resume --out "$tmp/ans1" 2>&1)
rc=$?
check "resume with another --loss-on is refused (exit 2, naming it)" \
  '[ $rc = 2 ] && grep -q "loss_on \"answer\" -> \"all\"" <<<"$out"'
out=$("$bin" eval --run "$tmp/ans1" 2>&1)
check "eval of a --loss-on answer run scores the answers (40 tokens)" 'grep -q "\"val_tokens\":40" <<<"$out"'

# ---- bad input, on every rank ----------------------------------------------------------
head -c 5000 /dev/urandom | base64 > "$tmp/text.txt"
# expect NAME EXIT PATTERN RANKS -- command...
# ---- --by-position: the loss by position bucket ----------------------------------------
"$bin" eval --run "$tmp/ref" --by-position 5 --output "$tmp/pos1.json" > /dev/null 2>&1
mpi 2 "$bin" eval --run "$tmp/ref" --by-position 5 --sp 2 --sp-strategy ring --layout zigzag \
  --output "$tmp/pos2.json" > /dev/null 2>&1
check "--by-position 5: log-spaced buckets tile [0, L); their tokens and losses add up to val_loss" \
  'py "$tmp/pos1.json" <<"PY"
import json, math, sys
r = json.load(open(sys.argv[1]))
b = r["by_position"]
edges = [x["begin"] for x in b] + [b[-1]["end"]]
ok = edges[0] == 0 and edges[-1] == 128 and all(x < y for x, y in zip(edges, edges[1:]))
ok = ok and [x["end"] for x in b] == [2, 6, 18, 48, 128]  # floor(128^(k/5)), k = 1..5
ok = ok and sum(x["tokens"] for x in b) == r["val_tokens"]
mean = sum(x["loss"] * x["tokens"] for x in b) / r["val_tokens"]
ok = ok and abs(mean - r["val_loss"]) <= 1e-5 * r["val_loss"]  # fp32 row losses summed in double
ok = ok and all(abs(x["ppl"] - math.exp(x["loss"])) <= 1e-9 * x["ppl"] for x in b)
sys.exit(0 if ok else 1)
PY'
check "--by-position under sp 2 zigzag gives the one-rank buckets (fp32 rounding)" \
  'py "$tmp/pos1.json" "$tmp/pos2.json" <<"PY"
import json, sys
a, b = (json.load(open(f))["by_position"] for f in sys.argv[1:3])
ok = len(a) == len(b) and all(x["tokens"] == y["tokens"] and abs(x["loss"] - y["loss"]) <= 1e-4 * abs(x["loss"]) for x, y in zip(a, b))
sys.exit(0 if ok else 1)
PY'
if [ -n "$(command -v gnuplot)" ]; then
  "$bin" plot --by-position "$tmp/pos1.json" "$tmp/pos2.json" --output "$tmp/pos.png" > /dev/null 2>&1
  check "seqpar plot --by-position draws both reports" '[ -s "$tmp/pos.png" ] && [ "$(head -c 4 "$tmp/pos.png" | tail -c 3)" = PNG ]'
else
  echo "FAIL seqpar plot --by-position: gnuplot is missing (scripts/setup.sh installs gnuplot-nox)"
  fails=$((fails + 1))
fi
"$bin" plot --by-position "$tmp/ref/config.json" --output "$tmp/x.png" > "$tmp/pe" 2>&1; rc=$?
check "plot --by-position of a file without buckets is refused, naming it" \
  '[ $rc = 1 ] && grep -q "has no \"by_position\"" "$tmp/pe"'

expect() {
  local name=$1 code=$2 pattern=$3 ranks=$4
  shift 5
  local o r n
  o=$("$@" 2>&1)
  r=$?
  n=$(grep -c -- "$pattern" <<<"$o")
  check "$name (exit $code, on $ranks ranks)" '[ "$r" = "$code" ] && [ "$n" -ge "$ranks" ]' ||
    echo "$o" | head -5
}
expect "eval --run of a missing directory" 1 "no checkpoint at '$tmp/nope': path does not exist" 2 -- \
  mpi 2 "$bin" eval --run "$tmp/nope"
expect "eval --checkpoint of a missing path" 1 "no checkpoint at '$tmp/nope/step_3': path does not exist" 2 -- \
  mpi 2 "$bin" eval --checkpoint "$tmp/nope/step_3"
mkdir -p "$tmp/empty"
expect "eval --run of a directory without checkpoints" 1 "no checkpoint in $tmp/empty" 2 -- \
  mpi 2 "$bin" eval --run "$tmp/empty"
expect "eval --checkpoint of a directory without one" 1 "no checkpoint in $tmp/empty" 2 -- \
  mpi 2 "$bin" eval --checkpoint "$tmp/empty"
expect "eval without --run or --checkpoint" 2 "no checkpoint given: --checkpoint PATH" 2 -- \
  mpi 2 "$bin" eval
expect "eval with a mesh that does not divide the world" 2 "not divisible by tp·sp" 3 -- \
  mpi 3 "$bin" eval --run "$tmp/ref" --sp 2
expect "--loss-on answer on text" 2 "needs a retrieval task with answer positions" 2 -- \
  mpi 2 "$bin" train --data "$tmp/text.txt" --seq-len 64 --steps 1 --loss-on answer --progress none --out "$tmp/t"
expect "--loss-on bogus" 2 "unknown loss_on 'bogus' (expected all or answer)" 2 -- \
  mpi 2 "$bin" train "${small[@]}" --steps 1 --loss-on bogus --out "$tmp/t"
finish
