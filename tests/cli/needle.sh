#!/usr/bin/env bash
# The needle-in-a-haystack sweep, seqpar eval --task passkey, through the real binary:
#  * the JSON has one row per length and one value per depth, accuracies in [0, 1], whole-key
#    accuracy <= digit accuracy, the sample count rounded up to whole global batches, the
#    markdown tables have the same shape;
#  * the sweep is the same under sp 2 (ring, zigzag) and sp 2 ulysses as on one rank;
#  * the depth moves the needle (cells of one length differ), the length is the one asked;
#  * --heatmap writes a PNG; without gnuplot a clear error before any work;
#  * bad input (a depth outside [0, 1], a length < 128, a mesh that does not divide the
#    world, a sweep flag without --task, --samples 0) is refused on every rank.
# Usage: needle.sh SEQPAR_BINARY SOURCE_DIR
set -u
source "$(dirname "$0")/lib.bash"
py() { python3 - "$@"; }

# A tiny model trained a little on the answers: its accuracies are far from 0 and 1 in
# places, so a wrong shard or a misplaced needle would move them.
"$bin" train --data passkey --seq-len 128 --loss-on answer --dim 32 --heads 4 --layers 2 \
  --batch 8 --steps 40 --lr 5e-3 --warmup 2 --threads 1 --progress none --out "$tmp/run" \
  > "$tmp/train.log" 2>&1
check "a tiny passkey model trains" 'grep -q "done after step 40" "$tmp/train.log"'

sweep=(eval --run "$tmp/run" --task passkey --lengths 128,258 --depths 0,0.5,1 --samples 6)
"$bin" "${sweep[@]}" --output "$tmp/one.json" > "$tmp/one.md" 2> "$tmp/one.err"
check "one rank: exit 0 and a JSON report" '[ -s "$tmp/one.json" ]'
check "shape 2 lengths x 3 depths, values in [0,1], key_acc <= digit_acc, 8 samples (6 -> 1 batch of 8)" \
  'py "$tmp/one.json" <<"PY"
import json, sys
j = json.load(open(sys.argv[1]))
ok = j["lengths"] == [128, 258] and j["depths"] == [0, 0.5, 1] and j["samples"] == 8
for k in ("digit_acc", "key_acc", "answer_loss"):
    ok = ok and len(j[k]) == 2 and all(len(r) == 3 for r in j[k])
for r, s in zip(j["digit_acc"], j["key_acc"]):
    ok = ok and all(0 <= a <= 1 and 0 <= b <= a for a, b in zip(r, s))
    # 8 samples: digit accuracy is a multiple of 1/40, key accuracy of 1/8
    ok = ok and all(abs(a * 40 - round(a * 40)) < 1e-9 for a in r) and all(abs(b * 8 - round(b * 8)) < 1e-9 for b in s)
ok = ok and all(l > 0 for r in j["answer_loss"] for l in r)
sys.exit(0 if ok else 1)
PY'
check "markdown: two tables, each a header, a rule and 2 rows of 3 depths" \
  '[ "$(grep -c "^| L \\\\ depth | 0 | 0.5 | 1 |$" "$tmp/one.md")" = 2 ] &&
   [ "$(grep -cE "^\| (128|258) \|( [01]\.[0-9]{3} \|){3}$" "$tmp/one.md")" = 4 ]'
check "the depth moves the needle: the answer loss differs across depths" 'py "$tmp/one.json" <<"PY"
import json, sys
j = json.load(open(sys.argv[1]))
sys.exit(0 if all(len(set(round(l, 6) for l in r)) == 3 for r in j["answer_loss"]) else 1)
PY'

# The same sweep sharded: the answer loss within fp32 rounding (1e-4 relative: other sum
# orders in the ring hops and the all-to-alls), the digit counts equal up to one digit per
# cell (an argmax between two logits closer than the rounding may flip; a wrong shard or
# a misplaced needle moves the loss far more than 1e-4).
same() {
  py "$tmp/one.json" "$1" <<'PY'
import json, sys
a, b = (json.load(open(p)) for p in sys.argv[1:3])
ok = a["lengths"] == b["lengths"] and a["depths"] == b["depths"] and a["samples"] == b["samples"]
for ra, rb in zip(a["answer_loss"], b["answer_loss"]):
    ok = ok and all(abs(x - y) <= 1e-4 * x for x, y in zip(ra, rb))
for ra, rb in zip(a["digit_acc"], b["digit_acc"]):
    ok = ok and all(abs(x - y) * 40 <= 1 + 1e-9 for x, y in zip(ra, rb))
sys.exit(0 if ok else 1)
PY
}
mpi 2 "$bin" "${sweep[@]}" --sp 2 --sp-strategy ring --layout zigzag --output "$tmp/ring.json" \
  > "$tmp/ring.md" 2> "$tmp/ring.err"
check "sp 2 ring zigzag (uneven shards of 258): the sweep of one rank" 'same "$tmp/ring.json"'
check "sp 2: the tables printed once" '[ "$(grep -c "^| L" "$tmp/ring.md")" = 2 ]'
mpi 2 "$bin" "${sweep[@]}" --sp 2 --sp-strategy ulysses --output "$tmp/uly.json" > /dev/null 2>&1
check "sp 2 ulysses: the sweep of one rank" 'same "$tmp/uly.json"'
# Control: other lengths give another sweep (the comparison can fail).
"$bin" eval --run "$tmp/run" --task passkey --lengths 128,384 --depths 0,0.5,1 --samples 6 \
  --output "$tmp/other.json" > /dev/null 2>&1
check "control: lengths 128,384 differ from 128,258" '! same "$tmp/other.json"'

# ---- bad input, on every rank ----------------------------------------------------------
# expect NAME EXIT PATTERN RANKS -- command...
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
ev=(mpi 2 "$bin" eval --run "$tmp/run" --task passkey)
expect "a depth above 1" 2 "depths: 1.5 is outside \[0, 1\]" 2 -- "${ev[@]}" --lengths 128 --depths 0,1.5
expect "a negative depth" 2 "depths: -0.1 is outside \[0, 1\]" 2 -- "${ev[@]}" --lengths 128 --depths=-0.1
expect "a length below 128" 2 "lengths: 100 is shorter than the passkey task's shortest" 2 -- \
  "${ev[@]}" --lengths 256,100
expect "a mesh that does not divide the world" 2 "not divisible by tp·sp" 3 -- \
  mpi 3 "$bin" eval --run "$tmp/run" --task passkey --lengths 128 --sp 2
expect "a length that is not a number" 2 "lengths: '1k' is not an integer" 2 -- "${ev[@]}" --lengths 1k
expect "--samples 0" 2 "samples must be at least 1, got 0" 2 -- "${ev[@]}" --lengths 128 --samples 0
expect "--lengths without --task" 2 "add --task passkey" 2 -- \
  mpi 2 "$bin" eval --run "$tmp/run" --lengths 128
expect "--task without --lengths" 2 "needs --lengths" 2 -- "${ev[@]}"

# A PATH holding everything on the real one but gnuplot (MPI's singleton start needs the
# rest), so seqpar sees exactly "no gnuplot".
mkdir -p "$tmp/bin"
IFS=: read -ra dirs <<<"$PATH"
for d in "${dirs[@]}"; do
  [ -d "$d" ] || continue
  find "$d" -maxdepth 1 ! -name 'gnuplot*' \( -type f -o -type l \) -exec ln -s -t "$tmp/bin" {} + 2>/dev/null
done
out=$(PATH="$tmp/bin" "$bin" "${sweep[@]}" --heatmap "$tmp/h0.png" 2>&1)
rc=$?
check "--heatmap without gnuplot: exit 2 before the sweep, says how to install it" \
  '[ $rc = 2 ] && grep -q "gnuplot not found on PATH" <<<"$out" && grep -q "gnuplot-nox" <<<"$out" &&
   ! grep -q "^| L" <<<"$out" && [ ! -e "$tmp/h0.png" ]'

if ! command -v gnuplot > /dev/null; then
  echo "skipped: gnuplot is not installed (apt-get install gnuplot-nox; scripts/setup.sh)"
  finish > /dev/null || exit 1
  exit 77
fi
mpi 2 "$bin" "${sweep[@]}" --sp 2 --sp-strategy ring --heatmap "$tmp/heat.png" > "$tmp/heat.md" 2>&1
check "--heatmap under sp 2: a non-empty PNG" \
  '[ -s "$tmp/heat.png" ] && [ "$(head -c 8 "$tmp/heat.png" | od -An -tx1 | tr -d " ")" = 89504e470d0a1a0a ]'
finish
