#!/usr/bin/env bash
# RoPE scaling (--rope-scaling linear|dynamic|yarn|llama3) through the real binary: bad
# combinations are usage errors (exit 2); a scaled llama trains, records the scaling in
# config.json and its manifest, resumes only with the same scaling (unless --override),
# evaluates and generates (one rank and sp 2 alike), and exports Hugging Face's rope_scaling.
# Usage: rope_scaling.sh SEQPAR_BINARY SOURCE_DIR
set -u
source "$(dirname "$0")/lib.bash"
cd "$src" || exit 1
small=(train --arch llama --seq-len 64 --batch 2 --dim 32 --heads 4 --kv-heads 2 --layers 2
       --progress none --threads 1 --lr 3e-3)
expect "a factor without a type" 2 "rope-factor does not apply" 1 -- "$bin" "${small[@]}" --steps 1 --rope-factor 4 --out "$tmp/x"
expect "an unknown type" 2 "ntk" 1 -- "$bin" "${small[@]}" --steps 1 --rope-scaling ntk --rope-factor 4 --out "$tmp/x"
expect "yarn without an original length" 2 "rope-original-len" 1 -- "$bin" "${small[@]}" --steps 1 --rope-scaling yarn --rope-factor 4 --out "$tmp/x"
expect "dynamic without an original length" 2 "rope-original-len" 1 -- "$bin" "${small[@]}" --steps 1 --rope-scaling dynamic --rope-factor 4 --out "$tmp/x"
expect "llama3 with low >= high" 2 "rope-low-freq-factor" 1 -- "$bin" "${small[@]}" --steps 1 --rope-scaling llama3 --rope-factor 8 --rope-original-len 32 --rope-low-freq-factor 4 --rope-high-freq-factor 2 --out "$tmp/x"
expect "yarn with beta_fast <= beta_slow" 2 "rope-beta-fast" 1 -- "$bin" "${small[@]}" --steps 1 --rope-scaling yarn --rope-factor 4 --rope-original-len 32 --rope-beta-fast 1 --rope-beta-slow 2 --out "$tmp/x"
expect "a yarn parameter on linear" 2 "does not apply to --rope-scaling linear" 1 -- "$bin" "${small[@]}" --steps 1 --rope-scaling linear --rope-factor 4 --rope-beta-fast 8 --out "$tmp/x"
expect "a factor below 1" 2 "rope_factor" 1 -- "$bin" "${small[@]}" --steps 1 --rope-scaling linear --rope-factor 0.5 --out "$tmp/x"
expect "mpi: a factor without a type, every rank" 2 "rope-factor does not apply" 2 -- mpi 2 "$bin" "${small[@]}" --steps 1 --sp 2 --sp-strategy ring --rope-factor 4 --out "$tmp/x"
check "nothing was written by the refusals" '[ ! -e "$tmp/x" ]'

yarn=(--rope-scaling yarn --rope-factor 4 --rope-original-len 16)
"$bin" "${small[@]}" --steps 3 "${yarn[@]}" --out "$tmp/y" > "$tmp/y.log" 2>&1
check "a yarn llama trains" 'grep -q "done after step 3" "$tmp/y.log"'
check "config.json and the manifest's model block hold the scaling" 'python3 - "$tmp/y" <<PY
import json, sys, glob
c = json.load(open(sys.argv[1] + "/config.json"))
m = json.load(open(sorted(glob.glob(sys.argv[1] + "/checkpoints/step_*/manifest.json"))[-1]))["model"]
for d in (c, m):
    assert d["rope_scaling"] == "yarn" and d["rope_factor"] == 4 and d["rope_original_len"] == 16, d
PY'
expect "resume with another scaling is refused" 2 "rope_scaling" 1 -- "$bin" "${small[@]}" --steps 4 --override steps --rope-scaling linear --rope-factor 4 --resume --out "$tmp/y"
expect "resume without the scaling is refused" 2 "rope_scaling" 1 -- "$bin" "${small[@]}" --steps 4 --override steps --resume --out "$tmp/y"
"$bin" "${small[@]}" --steps 4 --override steps "${yarn[@]}" --resume --out "$tmp/y" > "$tmp/y4.log" 2>&1
check "resume with the same scaling continues" 'grep -q "done after step 4" "$tmp/y4.log"'
"$bin" "${small[@]}" --steps 5 --override steps --rope-scaling linear --rope-factor 4 --resume --out "$tmp/y" \
  --override rope_scaling --override rope_original_len > "$tmp/y5.log" 2>&1
check "resume with another scaling and --override continues" 'grep -q "done after step 5" "$tmp/y5.log"'

# dynamic at L = 64 > L0 = 16 scales its base; eval and generate use the run's scaling.
dyn=(--rope-scaling dynamic --rope-factor 2 --rope-original-len 16)
"$bin" "${small[@]}" --steps 3 "${dyn[@]}" --out "$tmp/d" > "$tmp/d.log" 2>&1
check "a dynamic llama trains" 'grep -q "done after step 3" "$tmp/d.log"'
for run in y d; do
  out1=$("$bin" eval --run "$tmp/$run" --threads 1 2> /dev/null | tr -d '\n')
  out2=$(mpi 2 "$bin" eval --run "$tmp/$run" --sp 2 --sp-strategy ring --threads 1 2> /dev/null | tr -d '\n')
  check "$run: eval runs, sp 2 ring gives the one-rank loss" 'python3 -c "
import json, sys
a, b = json.loads(sys.argv[1]), json.loads(sys.argv[2])
assert abs(a[\"val_loss\"] - b[\"val_loss\"]) <= 1e-5 * a[\"val_loss\"], (a, b)" "$out1" "$out2"'
  g=(generate --run "$tmp/$run" --prompt "In the beginning God created the heaven" --max-new-tokens 12 --temperature 0 --threads 1)
  "$bin" "${g[@]}" > "$tmp/g1" 2> "$tmp/g1.err"
  mpi 2 "$bin" "${g[@]}" --sp 2 --sp-strategy ring > "$tmp/g2" 2> "$tmp/g2.err"
  check "$run: generate runs; sp 2 ring gives the one-rank text" '[ -s "$tmp/g1" ] && cmp -s "$tmp/g1" "$tmp/g2"'
done

# A scaling is not a weight: eval and generate apply one to a model trained without it
# (the no-training baselines of docs/extend.md), at twice the trained length. Weights
# drawn with std 0.5 make attention sharp, so the outputs depend on the positions (a model
# trained a few steps at std 0.02 is nearly position-blind: its text would not change).
echo '{"init_std": 0.5}' > "$tmp/sharp.json"
"$bin" "${small[@]}" --config "$tmp/sharp.json" --steps 1 --out "$tmp/n" > "$tmp/n.log" 2>&1
ev=(eval --run "$tmp/n" --threads 1 --seq-len 128 --batch 1 --eval-batches 2)
plain=$("$bin" "${ev[@]}" 2> "$tmp/e0.err" | tr -d '\n')
lin=$("$bin" "${ev[@]}" --rope-scaling linear --rope-factor 2 2> "$tmp/e1.err" | tr -d '\n')
lin2=$(mpi 2 "$bin" "${ev[@]}" --rope-scaling linear --rope-factor 2 --sp 2 --sp-strategy ring 2> "$tmp/e2.err" | tr -d '\n')
check "eval --rope-scaling linear on an unscaled run: another loss; sp 2 ring gives the one-rank one" 'python3 -c "
import json, sys
a, b, c = (json.loads(x) for x in sys.argv[1:4])
assert a[\"val_loss\"] != b[\"val_loss\"], (a, b)
assert abs(b[\"val_loss\"] - c[\"val_loss\"]) <= 1e-5 * b[\"val_loss\"], (b, c)" "$plain" "$lin" "$lin2"'
expect "eval: a factor without a type is refused" 2 "rope-factor does not apply" 1 -- "$bin" "${ev[@]}" --rope-factor 2
g=(generate --run "$tmp/n" --prompt "In the beginning God created the heaven" --max-new-tokens 12 --temperature 0 --threads 1)
"$bin" "${g[@]}" > "$tmp/gn0" 2> /dev/null
"$bin" "${g[@]}" --rope-scaling linear --rope-factor 4 > "$tmp/gn1" 2> "$tmp/gn1.err"
mpi 2 "$bin" "${g[@]}" --rope-scaling linear --rope-factor 4 --sp 2 --sp-strategy ring > "$tmp/gn2" 2> /dev/null
check "generate --rope-scaling on an unscaled run: other text; sp 2 ring gives the one-rank text" \
  '[ -s "$tmp/gn1" ] && ! cmp -s "$tmp/gn0" "$tmp/gn1" && cmp -s "$tmp/gn1" "$tmp/gn2"'
expect "generate: yarn without an original length is refused" 2 "rope-original-len" 1 -- "$bin" "${g[@]}" --rope-scaling yarn --rope-factor 4

"$bin" export --run "$tmp/y" --out "$tmp/hf" > /dev/null 2>&1
check "export writes Hugging Face's rope_scaling" 'python3 - "$tmp/hf/config.json" <<PY
import json, sys
r = json.load(open(sys.argv[1]))["rope_scaling"]
assert r == {"rope_type": "linear", "factor": 4.0}, r
PY'
"$bin" export --run "$tmp/d" --out "$tmp/hfd" > /dev/null 2>&1
check "export of dynamic: original length as max_position_embeddings" 'python3 - "$tmp/hfd/config.json" <<PY
import json, sys
c = json.load(open(sys.argv[1]))
assert c["rope_scaling"] == {"rope_type": "dynamic", "factor": 2.0, "original_max_position_embeddings": 16}, c
assert c["max_position_embeddings"] == 16, c
PY'
finish
