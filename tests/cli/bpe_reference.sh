#!/usr/bin/env bash
# Byte-level BPE against the live reference: tools/make_bpe_fixture.mjs runs the JavaScript
# tokenizers of @lenml/tokenizers (a fork of transformers.js's) under node on varied text
# (digits, whitespace runs, CJK, emoji, special tokens, invalid UTF-8) and seqpar's ids
# must equal its ids, and decode must give the bytes back (test_bpe_tokenizer's
# BpeReference.FromEnvironment). Tokenizers: the committed tests/fixtures/bpe/*/tokenizer.json
# (whose committed reference_ids.json must also still be what the reference says) and, when
# scripts/setup.sh fetched them, LLaMA 3's and Qwen3's full tokenizer.json.
# Without node or the package (data/npm, or $SEQPAR_BPE_REFERENCE_DIR) it reports itself
# skipped (exit 77) with the reason, never passed.
# Usage: bpe_reference.sh SEQPAR_BINARY SOURCE_DIR
set -u
bin=$1
src=$2
npm_dir=${SEQPAR_BPE_REFERENCE_DIR:-$src/data/npm}
lib=$npm_dir/tokenizers/package/dist/main.mjs
test_bin=$(dirname "$bin")/tests/test_bpe_tokenizer
if ! command -v node >/dev/null 2>&1; then
  echo "skipped: node is not installed (the reference tokenizer is JavaScript)"
  exit 77
fi
if [ ! -s "$lib" ]; then
  echo "skipped: the reference @lenml/tokenizers is not at $lib (scripts/setup.sh fetches it with npm when online)"
  exit 77
fi
[ -x "$test_bin" ] || { echo "FAIL: $test_bin is not built"; exit 1; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fails=0
passes=0
run_one() {  # run_one NAME TOKENIZER_JSON [COMMITTED_FIXTURE]
  local name=$1 tok=$2 committed=${3:-}
  if ! node "$src/tools/make_bpe_fixture.mjs" "$lib" "$tok" "$tmp/$name.json" >"$tmp/$name.log" 2>&1; then
    echo "FAIL $name: the reference failed"; cat "$tmp/$name.log"; fails=$((fails + 1)); return
  fi
  local out
  out=$(SEQPAR_BPE_TOKENIZER=$tok SEQPAR_BPE_FIXTURE=$tmp/$name.json \
    "$test_bin" --gtest_filter=BpeReference.FromEnvironment 2>&1)
  if grep -q "\[  PASSED  \] 1 test" <<<"$out" && ! grep -q SKIPPED <<<"$out"; then
    echo "ok   $name: seqpar's ids equal the reference's, decode gives the bytes back"
    passes=$((passes + 1))
  else
    echo "FAIL $name"; echo "$out" | tail -40; fails=$((fails + 1))
  fi
  if [ -n "$committed" ]; then
    if python3 -c "import json,sys; a,b=(json.load(open(p))['cases'] for p in sys.argv[1:]); sys.exit(a!=b)" "$tmp/$name.json" "$committed"; then
      echo "ok   $name: the committed fixture is what the reference says"
      passes=$((passes + 1))
    else
      echo "FAIL $name: $committed differs from the reference's ids (rerun tools/make_bpe_fixture.mjs)"
      fails=$((fails + 1))
    fi
  fi
}
for d in gpt2 small qwen-small; do
  run_one "$d" "$src/tests/fixtures/bpe/$d/tokenizer.json" "$src/tests/fixtures/bpe/$d/reference_ids.json"
done
for m in llama3 qwen3; do
  full=$npm_dir/tokenizer-$m/package/models/tokenizer.json
  if [ -s "$full" ]; then
    run_one "$m" "$full"
  else
    echo "note: $m's full tokenizer.json is not at $full; not checked"
  fi
done
echo "bpe_reference: $passes passed, $fails failed"
[ $fails = 0 ]
