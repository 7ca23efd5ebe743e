#!/usr/bin/env bash
# `seqpar generate` through the real binary under mpiexec, on small checkpoints trained
# here: greedy decoding (--temperature 0) gives the one-rank tokens under sp 2 and 4 with
# ring, ulysses and allgather, and under tp 2, for a byte gpt and a kjv-bpe8k llama; the
# text streams to stdout; sampling is reproducible by seed; and bad input (a missing
# checkpoint, a tokenizer that does not match, a prompt over the memory limit, a bad flag)
# is refused on every rank with a non-zero exit.
# Usage: generate.sh SEQPAR_BINARY SOURCE_DIR
set -u
source "$(dirname "$0")/lib.bash"
cd "$src" || exit 1
[ -f data/kjv-bpe8k.tok ] || { echo "FAIL data/kjv-bpe8k.tok is missing: run bash scripts/setup.sh"; exit 1; }
tokens() {  # the generated token ids of a run's stderr JSON line
  sed -n 's/^seqpar generate: //p' "$1" | python3 -c 'import json,sys; print(json.load(sys.stdin)["tokens"])'
}
# A byte gpt and a subword llama, trained briefly (the tokens need not be good, only equal).
"$bin" train --seq-len 64 --batch 4 --steps 30 --dim 32 --heads 4 --layers 2 --progress none \
  --threads 1 --lr 3e-3 --out "$tmp/gpt" > "$tmp/gpt.log" 2>&1
"$bin" train --arch llama --data kjv-bpe8k --seq-len 64 --batch 4 --steps 30 --dim 32 --heads 4 \
  --kv-heads 2 --layers 2 --progress none --threads 1 --lr 3e-3 --out "$tmp/llama" > "$tmp/llama.log" 2>&1
check "two small checkpoints trained" 'grep -q "done after step 30" "$tmp/gpt.log" && grep -q "done after step 30" "$tmp/llama.log"'
prompt="In the beginning God created the heaven and the earth. And the earth was without form"
for m in gpt llama; do
  g=(generate --run "$tmp/$m" --prompt "$prompt" --max-new-tokens 24 --temperature 0 --threads 1)
  "$bin" "${g[@]}" > "$tmp/$m.1.out" 2> "$tmp/$m.1.err"
  ref=$(tokens "$tmp/$m.1.err")
  check "$m: one rank generates 24 tokens and streams them" '[ -n "$ref" ] && [ "$(wc -c < "$tmp/$m.1.out")" -gt 1 ]'
  for n in 2 4; do
    for s in ring ulysses allgather; do
      mpi $n "$bin" "${g[@]}" --sp $n --sp-strategy $s --layout zigzag > "$tmp/o" 2> "$tmp/e"
      check "$m: greedy tokens under sp $n $s equal one rank" '[ "$(tokens "$tmp/e")" = "$ref" ] && cmp -s "$tmp/o" "$tmp/$m.1.out"'
    done
  done
  mpi 2 "$bin" "${g[@]}" --tp 2 > "$tmp/o" 2> "$tmp/e"
  check "$m: greedy tokens under tp 2 equal one rank" '[ "$(tokens "$tmp/e")" = "$ref" ]'
  mpi 4 "$bin" "${g[@]}" --tp 2 --sp 2 --sp-strategy ring > "$tmp/o" 2> "$tmp/e"
  check "$m: greedy tokens under tp 2 x sp 2 ring equal one rank" '[ "$(tokens "$tmp/e")" = "$ref" ]'
done
# Sampling: the same seed gives the same text, another seed (almost surely) another one.
s=(generate --run "$tmp/gpt" --prompt "$prompt" --max-new-tokens 32 --temperature 1 --top-k 20 --top-p 0.95 --threads 1)
"$bin" "${s[@]}" --seed 5 > "$tmp/s5a" 2>/dev/null
mpi 2 "$bin" "${s[@]}" --seed 5 --sp 2 --sp-strategy ring > "$tmp/s5b" 2>/dev/null
"$bin" "${s[@]}" --seed 6 > "$tmp/s6" 2>/dev/null
check "sampling is reproducible by seed (one rank and sp 2 alike)" 'cmp -s "$tmp/s5a" "$tmp/s5b" && ! cmp -s "$tmp/s5a" "$tmp/s6"'
printf '%s' "$prompt" > "$tmp/prompt.txt"
"$bin" generate --run "$tmp/gpt" --prompt-file "$tmp/prompt.txt" --max-new-tokens 24 --temperature 0 --threads 1 > "$tmp/pf" 2>/dev/null
check "--prompt-file reads the same prompt as --prompt" 'cmp -s "$tmp/pf" "$tmp/gpt.1.out"'

# Bad input: refused on every rank, non-zero exit, a message naming the problem.
mpi 2 "$bin" generate --run "$tmp/nothing" --prompt x --sp 2 > /dev/null 2> "$tmp/e"; rc=$?
check "a missing checkpoint is refused on every rank (exit 1, as from eval and export)" '[ $rc = 1 ] && [ "$(grep -c "does not exist" "$tmp/e")" = 2 ]'
"$bin" tokenize train --input data/kjv.txt --model "$tmp/other.model" --vocab-size 400 > /dev/null 2>&1
mpi 2 "$bin" generate --run "$tmp/llama" --prompt x --tokenizer "$tmp/other.model" --sp 2 > /dev/null 2> "$tmp/e"; rc=$?
check "a tokenizer that does not match the model is refused on every rank" '[ $rc = 2 ] && [ "$(grep -c "is not the one the model" "$tmp/e")" -ge 2 ]'
"$bin" generate --run "$tmp/gpt" --prompt x --tokenizer data/kjv-bpe8k.model > /dev/null 2> "$tmp/e"; rc=$?
check "a tokenizer given for a byte model is refused" '[ $rc = 2 ] && grep -q "byte-level model" "$tmp/e"'
head -c 200000 data/kjv.txt > "$tmp/long.txt"
mpi 2 "$bin" generate --run "$tmp/gpt" --prompt-file "$tmp/long.txt" --max-memory 64MiB --sp 2 > /dev/null 2> "$tmp/e"; rc=$?
check "a prompt over --max-memory is refused on every rank, naming the need" '[ $rc = 2 ] && [ "$(grep -c "a prompt of 200000 tokens" "$tmp/e")" = 2 ]'
"$bin" generate --run "$tmp/gpt" > /dev/null 2> "$tmp/e"; rc=$?
check "no prompt is a usage error" '[ $rc = 2 ] && grep -q "exactly one of --prompt and --prompt-file" "$tmp/e"'
mpi 2 "$bin" generate --run "$tmp/gpt" --prompt x --sp 2 --sp-strategy nope > /dev/null 2> "$tmp/e"; rc=$?
check "an unknown strategy is refused on every rank" '[ $rc = 2 ] && [ "$(grep -c "unknown attention strategy" "$tmp/e")" = 2 ]'
"$bin" train --arch bert --seq-len 32 --batch 2 --steps 1 --dim 32 --heads 4 --progress none --threads 1 --out "$tmp/bert" > /dev/null 2>&1
"$bin" generate --run "$tmp/bert" --prompt x > /dev/null 2> "$tmp/e"; rc=$?
check "a bert checkpoint is refused (not a causal model)" '[ $rc = 2 ] && grep -q "needs a causal model" "$tmp/e"'
# A manifest whose model fails the command line's checks is refused, not run (heads 0 used
# to end in SIGFPE).
cp -r "$tmp/gpt" "$tmp/gpt0"
m=$(ls -d "$tmp"/gpt0/checkpoints/step_* | tail -1)/manifest.json
python3 "$src/tools/edit_manifest.py" "$m" "m['model']['heads'] = 0"
"$bin" generate --run "$tmp/gpt0" --prompt x > /dev/null 2> "$tmp/e"; rc=$?
check "a manifest with heads 0 is refused as corrupt (exit 1), not a crash" \
  '[ $rc = 1 ] && grep -q "is corrupt: manifest.json: heads must be in \[1, 1048576\], got 0" "$tmp/e"'
finish
