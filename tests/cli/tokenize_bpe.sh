#!/usr/bin/env bash
# `seqpar tokenize` with a byte-level BPE tokenizer.json (GPT-2's, tests/fixtures/bpe):
# text that is not UTF-8 encodes and decodes back byte for byte, info names the kind and
# checks the file against the tokenizer, the kind is told by content (not by name), and a
# corrupt or unsupported tokenizer.json, or the wrong tokenizer, is refused with exit 1.
# Usage: tokenize_bpe.sh SEQPAR_BINARY SOURCE_DIR
set -u
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
source "$(dirname "$0")/lib.bash"
gpt2=$src/tests/fixtures/bpe/gpt2/tokenizer.json
small=$src/tests/fixtures/bpe/small/tokenizer.json
tok() { "$bin" tokenize "$@"; }

# Latin-1 bytes, a lone 0xFF, a truncated character, CRLF, a special token, two documents.
printf 'caf\xe9 na\xefve \xff\xfe end\r\n\n\xe4\xb8 second 12345 <|endoftext|> \xf0\x9f\x98\x80\n' >"$tmp/in.txt"
check "encode invalid UTF-8" 'tok encode --model "$gpt2" --input "$tmp/in.txt" --output "$tmp/a.tok" --quiet >"$tmp/enc.json"'
check "encode says the kind" 'grep -q "\"tokenizer_kind\":\"bpe\"" "$tmp/enc.json"'
check "two documents" 'grep -q "\"documents\":2" "$tmp/enc.json"'
check "decode" 'tok decode --model "$gpt2" --input "$tmp/a.tok" --output "$tmp/back.txt" >/dev/null'
check "decode gives the exact bytes" 'cmp "$tmp/in.txt" "$tmp/back.txt"'
check "info names the kind" 'tok info --model "$gpt2" --input "$tmp/a.tok" | grep -q "\"kind\": \"bpe\""'
check "the token file records the kind (bpe)" 'tok info --input "$tmp/a.tok" | grep -q "\"tokenizer_kind\": \"bpe\""'
hash=$(python3 -c "
import sys
h = 0xcbf29ce484222325
for b in open(sys.argv[1], 'rb').read(): h = ((h ^ b) * 0x100000001b3) % 2**64
print('%016x' % h)" "$gpt2")
check "hash is FNV-1a 64 of the file" 'tok info --model "$gpt2" | grep -q "\"hash\": \"$hash\""'
cp "$gpt2" "$tmp/renamed.model"
check "kind told by content, not name" 'tok info --model "$tmp/renamed.model" | grep -q "\"kind\": \"bpe\""'

expect "wrong tokenizer refused" 1 "tokenizer" 1 -- tok decode --model "$small" --input "$tmp/a.tok" --output "$tmp/x.txt"
head -c 100000 "$gpt2" >"$tmp/cut.json"
expect "truncated tokenizer.json refused" 1 "not valid JSON" 1 -- tok info --model "$tmp/cut.json"
python3 -c "
import json, sys
j = json.load(open(sys.argv[1])); j['normalizer'] = {'type': 'NFKC'}
json.dump(j, open(sys.argv[2], 'w'))" "$small" "$tmp/nfkc.json"
expect "NFKC normalizer refused by name" 1 "normalizer 'NFKC' is not supported" 1 -- tok encode --model "$tmp/nfkc.json" --input "$tmp/in.txt" --output "$tmp/n.tok"
check "nothing written on refusal" '[ ! -e "$tmp/n.tok" ]'

# Qwen's NFC normalizer: text in NFC encodes and comes back; text that is not is refused.
qwen=$src/tests/fixtures/bpe/qwen-small/tokenizer.json
printf 'caf\xc3\xa9 12345 \xe4\xb8\xad\xe6\x96\x87 \xff\n' >"$tmp/nfc.txt"
check "NFC text encodes" 'tok encode --model "$qwen" --input "$tmp/nfc.txt" --output "$tmp/q.tok" --quiet >/dev/null'
check "and decodes to its bytes" 'tok decode --model "$qwen" --input "$tmp/q.tok" --output "$tmp/q.txt" >/dev/null && cmp "$tmp/nfc.txt" "$tmp/q.txt"'
printf 'line one\ncafe\xcc\x81\n' >"$tmp/nfd.txt"
expect "text not in NFC refused" 1 "not in Unicode NFC" 1 -- tok encode --model "$qwen" --input "$tmp/nfd.txt" --output "$tmp/d.tok"
check "naming the line" 'tok encode --model "$qwen" --input "$tmp/nfd.txt" --output "$tmp/d.tok" 2>&1 | grep -q "line 2"'
finish
