#!/usr/bin/env bash
# `seqpar tokenize`: train → encode → decode gives the text back byte for byte, training
# twice gives the same model, and bad input gets a clear message and the right exit code
# (2 usage, 1 runtime). Trains its own small model (vocabulary 400) on a slice of
# data/kjv.txt, or on Debian's license texts when the corpus is not there.
# Usage: tokenize.sh SEQPAR_BINARY SOURCE_DIR
set -u
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1  # for the mpiexec case, as root
bin=$1
src=$2
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fails=0
passes=0

# expect NAME EXIT_CODE PATTERN -- command...
expect() {
  local name=$1 code=$2 pattern=$3
  shift 4
  local out rc
  out=$("$@" 2>&1)
  rc=$?
  local ok=1
  [ "$rc" = "$code" ] || { echo "FAIL $name: exit $rc, expected $code"; ok=0; }
  grep -q -- "$pattern" <<<"$out" || { echo "FAIL $name: '$pattern' not in the output"; ok=0; }
  if [ $ok = 1 ]; then echo "ok   $name"; passes=$((passes + 1)); else echo "$out" | head -20; fails=$((fails + 1)); fi
}
check() {  # check NAME command...: passes if the command succeeds
  local name=$1
  shift
  if "$@"; then echo "ok   $name"; passes=$((passes + 1)); else echo "FAIL $name"; fails=$((fails + 1)); fi
}

if [ -s "$src/data/kjv.txt" ]; then
  head -n 3000 "$src/data/kjv.txt" > "$tmp/text.txt"
else
  cat /usr/share/common-licenses/* > "$tmp/text.txt"
fi
printf '\n\nA last paragraph with  two spaces, a tab\there, and \xe2\x80\x9cquotes\xe2\x80\x9d.\n' >> "$tmp/text.txt"

t=("$bin" tokenize)
expect train 0 '"vocab":400' -- "${t[@]}" train --input "$tmp/text.txt" --vocab-size 400 --model "$tmp/m.model"
expect train-again 0 '"vocab":400' -- "${t[@]}" train --input "$tmp/text.txt" --vocab-size 400 --model "$tmp/m2.model"
check deterministic cmp -s "$tmp/m.model" "$tmp/m2.model"
expect encode 0 '"documents":' -- "${t[@]}" encode --model "$tmp/m.model" --input "$tmp/text.txt" --output "$tmp/text.tok" --doc-split blank-line
expect encode-progress 0 'tokens/s' -- "${t[@]}" encode --model "$tmp/m.model" --input "$tmp/text.txt" --output "$tmp/text2.tok"
expect info 0 '"tokenizer_hash"' -- "${t[@]}" info --input "$tmp/text.tok" --model "$tmp/m.model"
expect "info: the token file records the kind" 0 '"tokenizer_kind": "sentencepiece"' -- "${t[@]}" info --input "$tmp/text.tok"
expect decode 0 '"bytes":' -- "${t[@]}" decode --model "$tmp/m.model" --input "$tmp/text.tok" --output "$tmp/back.txt"
check round-trip cmp -s "$tmp/text.txt" "$tmp/back.txt"

# Usage errors: exit 2, the message names the problem.
expect unknown-flag 2 "bogus" -- "${t[@]}" encode --model "$tmp/m.model" --input "$tmp/text.txt" --output "$tmp/x.tok" --bogus 3
expect missing-option 2 "--output is required" -- "${t[@]}" encode --model "$tmp/m.model" --input "$tmp/text.txt"
expect bad-doc-split 2 "chapters" -- "${t[@]}" encode --model "$tmp/m.model" --input "$tmp/text.txt" --output "$tmp/x.tok" --doc-split chapters
expect vocab-too-small 2 "--vocab-size" -- "${t[@]}" train --input "$tmp/text.txt" --vocab-size 100 --model "$tmp/x.model"
expect no-subcommand 2 "subcommand is required" -- "${t[@]}"
expect help 0 "--doc-split" -- "${t[@]}" encode --help
expect several-ranks 2 "runs on one process" -- timeout 120 mpiexec -n 2 --oversubscribe --bind-to none "${t[@]}" info --model "$tmp/m.model"

# Runtime errors: exit 1, the message names the file and what is wrong.
expect missing-input 1 "'$tmp/nope.txt' does not exist" -- "${t[@]}" encode --model "$tmp/m.model" --input "$tmp/nope.txt" --output "$tmp/x.tok"
expect missing-model 1 "nope.model' does not exist" -- "${t[@]}" decode --model "$tmp/nope.model" --input "$tmp/text.tok" --output "$tmp/x.txt"
expect text-as-tokens 1 "is not a seqpar token file" -- "${t[@]}" decode --model "$tmp/m.model" --input "$tmp/text.txt" --output "$tmp/x.txt"
expect text-as-model 1 "is not a SentencePiece model" -- "${t[@]}" encode --model "$tmp/text.txt" --input "$tmp/text.txt" --output "$tmp/x.tok"
"${t[@]}" train --input "$tmp/text.txt" --vocab-size 360 --model "$tmp/other.model" >/dev/null 2>&1
expect other-tokenizer 1 "was written with the tokenizer of hash" -- "${t[@]}" decode --model "$tmp/other.model" --input "$tmp/text.tok" --output "$tmp/x.txt"
cp "$tmp/text.tok" "$tmp/cut.tok" && truncate -s -9 "$tmp/cut.tok"
expect truncated 1 "cut.tok' is truncated" -- "${t[@]}" info --input "$tmp/cut.tok"
check no-partial-output test ! -e "$tmp/x.tok" -a ! -e "$tmp/x.txt" -a ! -e "$tmp/x.model"

echo "$passes passed, $fails failed"
[ $fails = 0 ]
