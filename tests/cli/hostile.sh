#!/usr/bin/env bash
# Hostile files and huge numbers (issue 17): each item reproduced, each now a clean refusal:
# the exit code (2 usage, 1 input), the message on every rank, within 5 s, no source
# location, nothing the user saved changed, and for oversized requests a resident set
# under 100 MB. (Token files: hostile_tokens.sh. Run-directory locks and signals:
# run_safety.sh.)
#   1  a manifest edited without its hash, or consistently forged (tools/edit_manifest.py)
#      with values the command line refuses (heads 0, kv_heads -4, step 3 in step_2, step
#      -5, eval_batches 2^40, vocab 2^31-1, other data): refused as corrupt by every reader
#   2  run-directory entries that are symbolic links: refused, their targets untouched
#   3  readers never write into what they read: export/eval outputs inside a checkpoint or
#      equal to an input; export into a non-empty directory without --force
#   4  the data behind a resume or an eval: another file of the same name, a changed file
#   6  sizes refused before they are allocated
#   8  usage errors that exited 1; EACCES reported as such
# Usage: hostile.sh SEQPAR_BINARY SOURCE_DIR
set -u
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
source "$(dirname "$0")/lib.bash"
edit() { python3 "$src/tools/edit_manifest.py" "$@"; }
sha() { sha256sum "$1" | cut -d' ' -f1; }
tree_sha() { (cd "$1" && find . -type f -print0 | sort -z | xargs -0 sha256sum | sha256sum | cut -d' ' -f1); }

# Runs in its own directory, on its own copy of a text, so that relative data paths are
# ours to move.
mkdir -p "$tmp/a" "$tmp/b"
cd "$tmp/a" || exit 1
if [ -s "$src/data/kjv.txt" ]; then head -c 200000 "$src/data/kjv.txt" > text.txt; else cat /usr/share/common-licenses/* > text.txt; fi
small=(--dim 64 --heads 4 --layers 1 --seq-len 64 --batch 2 --threads 1 --progress none --data text.txt)
"$bin" train "${small[@]}" --steps 2 --out R > R.log 2>&1
"$bin" train "${small[@]}" --arch llama --steps 2 --out L > L.log 2>&1
check "two small runs to attack" '[ -f R/checkpoints/step_00000002/manifest.json ] && [ -f L/checkpoints/step_00000002/manifest.json ]'
S=R/checkpoints/step_00000002
fresh() { rm -rf F; cp -r R F; }  # a copy of R to damage

# ---- 1: manifests -----------------------------------------------------------------------
fresh
sed -i 's/"eval_batches": 8/"eval_batches": 9/' F/checkpoints/step_00000002/manifest.json
for c in "eval --run F" "generate --run F --prompt x" "export --run F --out X"; do
  # shellcheck disable=SC2086
  expect "1: an edited manifest fails its own hash ($c)" 1 "manifest.json fails its hash check" 1 -- "$bin" $c
done
expect "1: ... and on resume" 1 "manifest.json fails its hash check" 1 -- \
  "$bin" train "${small[@]}" --steps 4 --override steps --resume --out F
max_rss_kb=102400
forged() {  # forged NAME PYTHON PATTERN: every reader refuses the consistent forgery
  fresh
  edit F/checkpoints/step_00000002/manifest.json "$2"
  expect "1: $1: eval" 1 "$3" 1 -- "$bin" eval --run F
  expect "1: $1: generate" 1 "$3" 1 -- "$bin" generate --run F --prompt x --max-new-tokens 2
  expect "1: $1: resume" 1 "$3" 1 -- "$bin" train "${small[@]}" --steps 4 --override steps --resume --out F
}
forged "heads 0" "m['model']['heads'] = 0" "is corrupt: manifest.json: heads must be in \[1, 1048576\], got 0"
forged "kv_heads -4" "m['model']['kv_heads'] = -4" "is corrupt: manifest.json: kv heads Hkv=-4"
forged "step 3 in step_00000002" "m['step'] = 3" "manifest.json says step 3 but the directory is step_00000002"
forged "step -5" "m['step'] = -5" "manifest.json says step -5"
forged "eval_batches 2^40" "m['train']['eval_batches'] = 2**40" "eval_batches must be in \[1, 16777216\], got 1099511627776"
forged "vocab 2^31-1" "m['model']['vocab'] = 2**31 - 1; m['train']['vocab'] = 2**31 - 1" "vocab must be in \[2, 1073741824\], got 2147483647"
fresh
edit F/checkpoints/step_00000002/manifest.json "m['train']['data'] = '/etc/passwd'"
expect "1: a manifest naming other data: eval refuses it by content" 1 "the data is not what checkpoint" 1 -- "$bin" eval --run F
max_rss_kb=

# ---- 2: redirected run directories ------------------------------------------------------
echo keep > victim
fresh
rm F/config.json && ln -s "$PWD/victim" F/config.json
expect "2: a config.json that is a link is refused" 1 "config.json is a symbolic link" 1 -- \
  "$bin" train "${small[@]}" --steps 4 --override steps --resume --out F
fresh
ln -s "$PWD/victim" F/checkpoints/step_00000009
expect "2: a link among the checkpoints is refused" 1 "step_00000009 is a symbolic link" 1 -- \
  "$bin" train "${small[@]}" --steps 4 --override steps --resume --out F
check "2: the links' target is untouched" '[ "$(cat victim)" = keep ]'

# ---- 3: readers never write into what they read -----------------------------------------
before=$(tree_sha R)
expect "3: export --out a step directory" 2 "is inside the checkpoint" 1 -- "$bin" export --run L --out L/checkpoints/step_00000002
expect "3: export --out a new directory under checkpoints/" 2 "is inside the checkpoint" 1 -- "$bin" export --run L --out L/checkpoints/exported
expect "3: eval --output onto the weights" 2 "is inside the checkpoint" 1 -- "$bin" eval --run R --output "$S/model.safetensors"
expect "3: eval --output onto the data" 2 "is the same file as the data" 1 -- "$bin" eval --run R --output ./text.txt
ln -s text.txt text-link
expect "3: eval --heatmap through a link to the data" 2 "is the same file as the data" 1 -- \
  "$bin" eval --run R --task passkey --lengths 128 --heatmap text-link
check "3: nothing in R changed" '[ "$(tree_sha R)" = "$before" ]'
"$bin" export --run L --out X > /dev/null 2>&1
echo '{"mine": 1}' > X/config.json
expect "3: export into a non-empty directory" 2 "already holds files" 1 -- "$bin" export --run L --out X
check "3: ... left its files as they were" 'grep -q mine X/config.json'
"$bin" export --run L --out X --force > /dev/null 2>&1
check "3: export --force replaces them" '! grep -q mine X/config.json && [ -s X/model.safetensors ]'

# ---- 4: the data behind a resume and an eval ---------------------------------------------
cp -r R "$tmp/b/R"
head -c 150000 text.txt > "$tmp/b/text.txt"  # the same name, other bytes, elsewhere
expect "4: resume from another directory, where text.txt is another file" 1 \
  "the data is not what checkpoint .* was trained on: it was '$tmp/a/text.txt' (200000 bytes" 1 -- \
  bash -c "cd '$tmp/b' && '$bin' train ${small[*]} --steps 4 --override steps --resume --out R"
expect "4: eval from there scores no other file" 1 "the data is not what checkpoint" 1 -- \
  bash -c "cd '$tmp/b' && '$bin' eval --run R"
fresh
cp text.txt text.orig
printf 'X' | dd of=text.txt bs=1 seek=1000 conv=notrunc 2> /dev/null  # one byte, same size
expect "4: resume on a changed file" 1 "this launch reads '$tmp/a/text.txt' (200000 bytes, xxh64" 1 -- \
  "$bin" train "${small[@]}" --steps 4 --override steps --resume --out F
"$bin" train "${small[@]}" --steps 4 --override steps --override data --resume --out F > F.log 2>&1
check "4: --override data accepts the change" 'grep -q "done after step 4" F.log'
mv text.orig text.txt
cp -r R "$tmp/b/R2" && cp text.txt "$tmp/b/moved.txt"
"$bin" eval --run "$tmp/b/R2" > moved.json 2>&1
check "4: the same bytes elsewhere pass (eval from the run's directory)" 'grep -q val_loss moved.json'

# ---- 6: sizes refused before they are allocated ------------------------------------------
max_rss_kb=102400
expect "6: generate --max-new-tokens 2147483647" 2 "max_new_tokens must be in \[0, 1073741824\]" 1 -- \
  "$bin" generate --run R --prompt x --max-new-tokens 2147483647
expect "6: generate --max-new-tokens 2^30 (within the row, beyond memory)" 2 "needs .* per rank" 1 -- \
  "$bin" generate --run R --prompt x --max-new-tokens 1073741824
expect "6: train --layers 2147483647" 2 "layers must be in \[1, 65536\]" 1 -- "$bin" train --layers 2147483647 --out N
expect "6: check --layers 2147483647" 2 "layers must be in \[1, 65536\]" 1 -- "$bin" check --layers 2147483647
expect "6: a model beyond 2^40 parameters" 2 "beyond this engine's limit of 2^40" 1 -- "$bin" check --dim 1048576 --heads 16 --layers 4096
expect "6: --threads 100000" 2 "threads must be in \[0, 1024\]" 1 -- "$bin" train --threads 100000 --out N
expect "6: OMP_NUM_THREADS=100000" 2 "OMP_NUM_THREADS=100000 is beyond 1024" 1 -- env OMP_NUM_THREADS=100000 "$bin" check
expect "6: --prompt-file /dev/zero" 1 "is not a regular file" 1 -- "$bin" generate --run R --prompt-file /dev/zero
truncate -s 100M big.txt
expect "6: a prompt file of 100 MiB" 1 "has 104857600 bytes, more than the 67108864" 1 -- "$bin" generate --run R --prompt-file big.txt
expect "6: eval --batch 100000" 2 "needs .* per rank" 1 -- "$bin" eval --run R --batch 100000
expect "6: train --batch 1048576" 2 "needs .* per rank" 1 -- "$bin" train "${small[@]}" --batch 1048576 --out N
max_rss_kb=
check "6: nothing was created for the refused runs" '[ ! -e N ]'

# ---- 8: exit codes and words --------------------------------------------------------------
expect "8: --data passkey --seq-len 64" 2 "the passkey task needs --seq-len >= 128, got 64" 1 -- \
  "$bin" train --data passkey --seq-len 64 --steps 1 --out N
expect "8: materialized at sp 2" 2 "runs with --sp 1 only" 2 -- mpi 2 "$bin" check --sp 2 --sp-strategy materialized
expect "8: local at sp 2" 2 "runs with --sp 1 only" 2 -- mpi 2 "$bin" check --sp 2 --sp-strategy local
expect "8: --usp-ulysses 3 at sp 4" 2 "usp-ulysses 3 does not divide --sp 4" 4 -- \
  mpi 4 "$bin" check --sp 4 --sp-strategy usp --usp-ulysses 3
echo '{"dim": 1e400}' > big.json
expect "8: a config number out of range names the file" 2 "config file 'big.json' is not valid JSON: .*1e400" 1 -- \
  "$bin" train --config big.json --out N
# Permission denied is not "does not exist" (as root, run as nobody: root reads anything).
mkdir -p locked && cp text.txt locked/ && chmod 000 locked/text.txt && chmod 755 "$tmp" "$tmp/a"
as_user=()
[ "$(id -u)" = 0 ] && as_user=(setpriv --reuid=nobody --regid=nogroup --clear-groups)
expect "8: an unreadable data file says why" 1 "'locked/text.txt' cannot be accessed: Permission denied\|open(locked/text.txt) failed: Permission denied" 1 -- \
  "${as_user[@]}" "$bin" check --data locked/text.txt --seq-len 64
chmod 000 locked
expect "8: an unreadable directory says why" 1 "cannot be accessed: Permission denied" 1 -- \
  "${as_user[@]}" "$bin" check --data locked/text.txt --seq-len 64
chmod 755 locked
finish
