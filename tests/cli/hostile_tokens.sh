#!/usr/bin/env bash
# Hostile token files and tokenize arguments (issue 17, item 5 and tokenize's part of 3),
# each reproduced and now refused cleanly, within 5 s:
#   - a token flipped to another id below V: the body checksum refuses the file (train on
#     two ranks, every rank says so; tokenize info), naming "body checksum" and both values;
#   - a damaged magic (SEQPTOKX), under a *.tok name or not, and text named *.tok: refused
#     as token files, never trained on as text; a version-1 file (no checksum): refused,
#     naming the command that re-creates it;
#   - tokenize encode of text that is not UTF-8: refused naming the byte offset (the
#     tokenizer would read it as U+FFFD, which does not decode back), nothing written;
#   - an output that is one of the command's inputs (same path, ./path, a symbolic or a
#     hard link): a usage error (exit 2) before anything is written; the input unchanged.
# Trains its own small model (vocabulary 400) on a slice of data/kjv.txt, or on Debian's
# license texts when the corpus is not there.
# Usage: hostile_tokens.sh SEQPAR_BINARY SOURCE_DIR
set -u
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
source "$(dirname "$0")/lib.bash"

# Patches a file: poke FILE OFFSET STRUCT_FORMAT VALUE... (Python's struct, little-endian).
poke() { python3 -c "
import struct, sys
p, at, fmt = sys.argv[1], int(sys.argv[2]), sys.argv[3]
b = bytearray(open(p, 'rb').read())
vals = [int(v) if v.lstrip('-').isdigit() else v.encode() for v in sys.argv[4:]]
b[at:at + struct.calcsize(fmt)] = struct.pack(fmt, *vals)
open(p, 'wb').write(b)" "$@"; }
# Recomputes a token file's header hash: FNV-1a 64 of bytes [0, 56) at 56.
rehash() { python3 -c "
import struct, sys
b = bytearray(open(sys.argv[1], 'rb').read())
h = 0xcbf29ce484222325
for c in b[:56]: h = ((h ^ c) * 0x100000001b3) % 2**64
b[56:64] = struct.pack('<Q', h)
open(sys.argv[1], 'wb').write(b)" "$1"; }
sha() { sha256sum "$1" | cut -d' ' -f1; }

if [ -s "$src/data/kjv.txt" ]; then
  head -n 3000 "$src/data/kjv.txt" > "$tmp/text.txt"
else
  cat /usr/share/common-licenses/* > "$tmp/text.txt"
fi
t=("$bin" tokenize)
"${t[@]}" train --input "$tmp/text.txt" --vocab-size 400 --model "$tmp/m.model" > /dev/null 2>&1
"${t[@]}" encode --model "$tmp/m.model" --input "$tmp/text.txt" --output "$tmp/good.tok" --quiet > /dev/null 2>&1
check "setup: a model and a token file" '[ -s "$tmp/m.model" ] && [ -s "$tmp/good.tok" ]'
train=(train --seq-len 64 --batch 2 --steps 1 --dim 32 --heads 4 --layers 1 --progress none --threads 1)
# The control: the intact file trains, so each refusal below is the damage's doing.
expect intact-trains 0 "done after step 1" 1 -- "$bin" "${train[@]}" --data "$tmp/good.tok" --out "$tmp/run0"

# ---- a token flipped to another id below V: only the body checksum sees it ----------
cp "$tmp/good.tok" "$tmp/flip.tok"
old=$(python3 -c "import struct; print(struct.unpack_from('<H', open('$tmp/flip.tok','rb').read(), 64 + 2*10)[0])")
new=$(( old == 5 ? 6 : 5 ))
poke "$tmp/flip.tok" $((64 + 2 * 10)) '<H' $new
recorded=$(python3 -c "import struct; print('%016x' % struct.unpack_from('<Q', open('$tmp/flip.tok','rb').read(), 48)[0])")
expect flipped-token-train 1 "token file '$tmp/flip.tok' has a corrupt body: its header records body checksum $recorded, its bytes \[64, [0-9]*) hash to [0-9a-f]\{16\}" 2 \
  -- mpi 2 "$bin" "${train[@]}" --data "$tmp/flip.tok" --out "$tmp/run1"
check "flipped token: no run written" '[ ! -e "$tmp/run1/checkpoints" ]'
expect flipped-token-info 1 "body checksum $recorded" 1 -- "${t[@]}" info --input "$tmp/flip.tok"
expect flipped-token-decode 1 "body checksum" 1 -- "${t[@]}" decode --model "$tmp/m.model" --input "$tmp/flip.tok" --output "$tmp/flip.txt"

# ---- a damaged magic, text named *.tok, version 1: token files, refused -------------
cp "$tmp/good.tok" "$tmp/magic.tok"
poke "$tmp/magic.tok" 7 '<c' X
expect damaged-magic-train 1 "token file '$tmp/magic.tok' has a damaged magic: it starts with \"SEQPTOKX\"" 2 \
  -- mpi 2 "$bin" "${train[@]}" --data "$tmp/magic.tok" --out "$tmp/run2"
cp "$tmp/magic.tok" "$tmp/magic.bin"  # without the suffix: the near-miss magic alone
expect damaged-magic-any-name 1 "has a damaged magic" 1 -- "$bin" "${train[@]}" --data "$tmp/magic.bin" --out "$tmp/run3"
cp "$tmp/good.tok" "$tmp/magic2.bin"
poke "$tmp/magic2.bin" 3 '<c' X
poke "$tmp/magic2.bin" 7 '<c' X
expect two-bytes-off 1 "SEQXTOKX" 1 -- "$bin" "${train[@]}" --data "$tmp/magic2.bin" --out "$tmp/run4"
cp "$tmp/text.txt" "$tmp/text.tok"
expect text-named-tok 1 "'$tmp/text.tok' is not a seqpar token file.*never read as text" 1 \
  -- "$bin" "${train[@]}" --data "$tmp/text.tok" --out "$tmp/run5"
expect missing-tok 1 "token file '$tmp/nope.tok' does not exist" 1 -- "$bin" "${train[@]}" --data "$tmp/nope.tok" --out "$tmp/run6"
check "refused files: no run written" '[ ! -e "$tmp/run2/checkpoints" ] && [ ! -e "$tmp/run3/checkpoints" ] && [ ! -e "$tmp/run5/checkpoints" ]'
cp "$tmp/good.tok" "$tmp/v1.tok"
poke "$tmp/v1.tok" 8 '<I' 1
poke "$tmp/v1.tok" 48 '<Q' 0
rehash "$tmp/v1.tok"
expect version-1 1 "format version 1, which records no body checksum.*seqpar tokenize encode" 1 \
  -- "$bin" "${train[@]}" --data "$tmp/v1.tok" --out "$tmp/run7"

# ---- text that is not UTF-8: refused, naming the byte ---------------------------------
printf 'Ge1:1 In the beginning\nGe1:2 caf\xe9 au lait\n' > "$tmp/latin1.txt"
expect invalid-utf8 1 "text file '$tmp/latin1.txt' is not UTF-8: byte 32 (line 2) is 0xe9" 1 \
  -- "${t[@]}" encode --model "$tmp/m.model" --input "$tmp/latin1.txt" --output "$tmp/latin1.tok"
printf 'a lone continuation \x80 byte\n' > "$tmp/lone.txt"
expect invalid-utf8-continuation 1 "byte 20 (line 1) is 0x80" 1 \
  -- "${t[@]}" encode --model "$tmp/m.model" --input "$tmp/lone.txt" --output "$tmp/lone.tok"
check "invalid UTF-8: nothing written" '! ls "$tmp" | grep -q "^latin1.tok\|^lone.tok"'
# Valid UTF-8 of every length, and a NUL, do come back byte for byte.
printf 'caf\xc3\xa9 \xe2\x80\x94 \xf0\x9f\x98\x80 a\x00b\n' > "$tmp/utf8.txt"
"${t[@]}" encode --model "$tmp/m.model" --input "$tmp/utf8.txt" --output "$tmp/utf8.tok" --quiet > /dev/null 2>&1
"${t[@]}" decode --model "$tmp/m.model" --input "$tmp/utf8.tok" --output "$tmp/utf8.back" > /dev/null 2>&1
check "valid UTF-8 round-trips" 'cmp -s "$tmp/utf8.txt" "$tmp/utf8.back"'

# ---- outputs that are inputs: exit 2 before anything is written -----------------------
text_sum=$(sha "$tmp/text.txt") model_sum=$(sha "$tmp/m.model") tok_sum=$(sha "$tmp/good.tok")
ln -s "$tmp/text.txt" "$tmp/text-link.txt"
ln "$tmp/text.txt" "$tmp/text-hard.txt"
ln -s "$tmp/m.model" "$tmp/model-link"
enc=("${t[@]}" encode --model "$tmp/m.model" --input "$tmp/text.txt" --quiet)
expect encode-output-is-input 2 "encode --output '$tmp/text.txt' is the same file as --input" 1 -- "${enc[@]}" --output "$tmp/text.txt"
expect encode-output-is-input-dot 2 "is the same file as --input" 1 -- "${enc[@]}" --output "$tmp/./text.txt"
expect encode-output-is-input-symlink 2 "is the same file as --input" 1 -- "${enc[@]}" --output "$tmp/text-link.txt"
expect encode-output-is-input-hardlink 2 "is the same file as --input" 1 -- "${enc[@]}" --output "$tmp/text-hard.txt"
expect encode-output-is-model 2 "encode --output '$tmp/m.model' is the same file as --model" 1 -- "${enc[@]}" --output "$tmp/m.model"
expect encode-output-is-model-symlink 2 "is the same file as --model" 1 -- "${enc[@]}" --output "$tmp/model-link"
dec=("${t[@]}" decode --model "$tmp/m.model" --input "$tmp/good.tok")
expect decode-output-is-input 2 "decode --output '$tmp/good.tok' is the same file as --input" 1 -- "${dec[@]}" --output "$tmp/good.tok"
expect decode-output-is-model 2 "is the same file as --model" 1 -- "${dec[@]}" --output "$tmp/model-link"
expect train-model-is-input 2 "train --model '$tmp/text-link.txt' is the same file as --input" 1 \
  -- "${t[@]}" train --input "$tmp/text.txt" --vocab-size 400 --model "$tmp/text-link.txt"
check "inputs unchanged" '[ "$(sha "$tmp/text.txt")" = "$text_sum" ] && [ "$(sha "$tmp/m.model")" = "$model_sum" ] && [ "$(sha "$tmp/good.tok")" = "$tok_sum" ]'
check "links still links" '[ -L "$tmp/text-link.txt" ] && [ -L "$tmp/model-link" ]'
check "no temp files left" '! ls "$tmp" | grep -q "\.tmp\."'

finish
