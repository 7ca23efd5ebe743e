#!/usr/bin/env bash
# The context-extension recipe of docs/extend.md, end to end: a LLaMA-style model trained at
# L0 = 512 on the KJV's BPE tokens, extended 16x to L = 8192 under --sp 4 (ring, zigzag)
# with YaRN and, for comparison, with linear position interpolation; the loss by position
# up to 8192 of the base model without scaling, of the base model with each scaling and no
# training, and of each extended model.
#
#   bash bench/extend.sh [OUT_DIR]         (default runs/extend; about an hour on 2 cores)
#
# Every stage is skipped when its result exists, so a killed run resumes where it stopped
# (a training stage resumes from its last checkpoint). Environment: EXT_BASE_STEPS (500),
# EXT_STEPS (80 per extension), EXT_EVAL_BATCHES (4 sequences of 8192 tokens per curve),
# MPIEXEC (mpiexec -n 4 --oversubscribe --bind-to none).
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-runs/extend}
bin=./build/seqpar
base_steps=${EXT_BASE_STEPS:-500}
ext_steps=${EXT_STEPS:-80}
eval_batches=${EXT_EVAL_BATCHES:-4}
mpi=(${MPIEXEC:-mpiexec -n 4 --oversubscribe --bind-to none})
if [ "$(id -u)" = 0 ]; then export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1; fi
[ -x "$bin" ] || { echo "extend: $bin missing: build first (README)" >&2; exit 2; }
[ -s data/kjv-bpe8k.tok ] || { echo "extend: data/kjv-bpe8k.tok missing: bash scripts/setup.sh" >&2; exit 2; }
mkdir -p "$out/curves"
L0=512 L=8192 s=16
model=(--arch llama --data kjv-bpe8k --dim 128 --heads 4 --kv-heads 2 --layers 4)
sp=(--sp 4 --sp-strategy ring --layout zigzag)
linear=(--rope-scaling linear --rope-factor $s)
yarn=(--rope-scaling yarn --rope-factor $s --rope-original-len $L0)
dynamic=(--rope-scaling dynamic --rope-factor $s --rope-original-len $L0)
say() { echo "[extend $(date +%H:%M:%S)] $*"; }
# steps_done RUN: the last step RUN/metrics.jsonl logged (0 if none)
steps_done() {
  python3 -c "
import json, sys
try:
    print(max([json.loads(l).get('step', 0) for l in open(sys.argv[1] + '/metrics.jsonl')] or [0]))
except OSError:
    print(0)" "$1"
}

# 1. The base model at L0 (one rank; resumes if killed).
if [ "$(steps_done "$out/base")" -lt "$base_steps" ]; then
  say "base: $base_steps steps at L = $L0"
  resume=(); [ -d "$out/base/checkpoints" ] && resume=(--resume)
  "$bin" train "${model[@]}" --seq-len $L0 --batch 8 --steps "$base_steps" --lr 3e-3 --min-lr 3e-4 \
    --warmup 30 --eval-every 100 --progress none --out "$out/base" "${resume[@]}"
fi
# Hugging Face form: the extensions start from it with --init-from, as from any model.
[ -s "$out/base_hf/model.safetensors" ] ||
  "$bin" export --run "$out/base" --out "$out/base_hf" --tokenizer data/kjv-bpe8k.model --force

# curve NAME RUN [FLAGS]: the loss in 16 position buckets over [0, L), under sp 4.
curve() {
  local name=$1 run=$2; shift 2
  [ -s "$out/curves/$name.json" ] && return 0
  say "curve $name"
  "${mpi[@]}" "$bin" eval --run "$run" --seq-len $L --batch 1 --eval-batches "$eval_batches" \
    --by-position 16 "${sp[@]}" "$@" --output "$out/curves/$name.json" > /dev/null
}
# 2. The base model at its own length (one rank, the same tokens per curve), at L with no
# scaling, and with each scaling and no training.
if [ ! -s "$out/curves/base_at_L0.json" ]; then
  say "curve base_at_L0"
  "$bin" eval --run "$out/base" --seq-len $L0 --batch 16 --eval-batches "$eval_batches" \
    --by-position 16 --output "$out/curves/base_at_L0.json" > /dev/null
fi
curve base_none "$out/base"
curve base_linear "$out/base" "${linear[@]}"
curve base_dynamic "$out/base" "${dynamic[@]}"
curve base_yarn "$out/base" "${yarn[@]}"

# 3. The extensions: ext_steps steps at L under sp 4, from the base weights.
extend() {
  local name=$1; shift
  if [ "$(steps_done "$out/$name")" -lt "$ext_steps" ]; then
    say "extension $name: $ext_steps steps at L = $L"
    local resume=(--init-from "$out/base_hf")
    [ -d "$out/$name/checkpoints" ] && resume=(--resume)
    "${mpi[@]}" "$bin" train --data kjv-bpe8k --seq-len $L --batch 1 "${sp[@]}" "$@" \
      --steps "$ext_steps" --lr 1e-3 --min-lr 1e-4 --warmup 5 --ckpt-every 20 \
      --progress none --out "$out/$name" "${resume[@]}"
  fi
}
extend ext_yarn "${yarn[@]}"
curve ext_yarn "$out/ext_yarn"
extend ext_linear "${linear[@]}"
curve ext_linear "$out/ext_linear"

# 4. The figure and a table.
if command -v gnuplot > /dev/null; then
  "$bin" plot --by-position "$out"/curves/{base_at_L0,base_none,base_linear,base_dynamic,base_yarn,ext_linear,ext_yarn}.json \
    --output "$out/by_position.png" > /dev/null && say "figure: $out/by_position.png"
fi
python3 - "$out" "$base_steps" "$ext_steps" <<'PY'
import json, sys
out, base_steps, ext_steps = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
names = ["base_none", "base_linear", "base_dynamic", "base_yarn", "ext_linear", "ext_yarn"]
cur = {n: json.load(open(f"{out}/curves/{n}.json")) for n in ["base_at_L0"] + names}
for title, rows in (("L = 8192", names), ("the base at its own L0 = 512", ["base_at_L0"])):
    edges = [b["end"] for b in cur[rows[0]]["by_position"]]
    print(f"\nloss by position bucket (upper edges), {title}:\n")
    print("| model | val loss | " + " | ".join(f"<{e}" for e in edges) + " |")
    print("|---|---|" + "---|" * len(edges))
    for n in rows:
        c = cur[n]
        print(f"| {n} | {c['val_loss']:.3f} | " + " | ".join(f"{b['loss']:.2f}" for b in c["by_position"]) + " |")
tok_base = base_steps * 8 * 512
tok_ext = ext_steps * 8192
print(f"\nbase: {base_steps} steps x 8 x 512 = {tok_base} tokens; each extension: {ext_steps} x 8192 = "
      f"{tok_ext} tokens ({100 * tok_ext / tok_base:.1f} % of the base's)")
PY
