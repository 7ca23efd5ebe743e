#!/usr/bin/env bash
# seqpar import --hf DIR --out RUN and train --init-from DIR (issue 18, item 1), through the
# real binary: a llama trained here is exported (seqpar export) and imported back:
#   * F32: export of the imported model gives back the same tensors, bit for bit, and the
#     same val_loss; BF16 and F16 sources give the tensors rounded to that precision;
#     sharded weights (model.safetensors.index.json) import like one file;
#   * the import resumes like any checkpoint (train --config RUN/config.json --resume), and
#     train --init-from starts a run from the directory under sp 2;
#   * directories written by PyTorch (tools/make_hf_model.py: LLaMA with GQA and an untied
#     head, Mistral with a window, Qwen2 with biases, a tied head and a tokenizer.json; F32,
#     BF16, sharded) import, and seqpar's logits equal Hugging Face's definition computed on
#     the source weights; Qwen2 imported, trained, exported and imported again is the
#     training checkpoint; its training under sp 2 and tp 2 gives the one-rank losses;
#   * unsupported input is refused by name: another architecture, a field
#     seqpar would ignore, rope_scaling, a missing tensor, a tensor of the wrong shape or
#     dtype, a model flag that contradicts config.json.
# Usage: hf_import.sh SEQPAR_BINARY SOURCE_DIR
set -u
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
source "$(dirname "$0")/lib.bash"
cd "$tmp" || exit 1
# Debian's python3 (numpy comes with python3-torch: scripts/setup.sh), not one a version
# manager put first on PATH.
npy=python3; [ -x /usr/bin/python3 ] && npy=/usr/bin/python3
[ -s "$src/data/kjv-bpe8k.tok" ] || { echo "FAIL data/kjv-bpe8k.tok missing (bash scripts/setup.sh builds it)"; exit 1; }
tok="$src/data/kjv-bpe8k.tok" spm="$src/data/kjv-bpe8k.model"
small=(--seq-len 64 --batch 2 --threads 1 --progress none --data "$tok")
"$bin" train --arch llama --dim 64 --heads 4 --kv-heads 2 --layers 2 "${small[@]}" --steps 3 --out base > base.log 2>&1
"$bin" export --run base --out hf --tokenizer "$spm" > /dev/null 2>&1
check "a llama trained and exported as a Hugging Face directory" '[ -s hf/model.safetensors ] && [ -s hf/tokenizer.model ]'
# tensors A B [bits]: every tensor of A's model.safetensors equals B's (bits: compare A
# rounded to bf16/f16 first)
tensors() { "$npy" - "$@" <<'PY'
import json, struct, sys
import numpy as np
def load(p):
    b = open(p, "rb").read(); n = struct.unpack("<Q", b[:8])[0]; h = json.loads(b[8:8 + n]); h.pop("__metadata__", None)
    return {k: np.frombuffer(b[8 + n + v["data_offsets"][0]:8 + n + v["data_offsets"][1]], dtype=np.float32) for k, v in h.items()}
a, b = load(sys.argv[1] + "/model.safetensors"), load(sys.argv[2] + "/model.safetensors")
if "lm_head.weight" not in a and "lm_head.weight" in b:  # a tied source: export writes the head
    assert np.array_equal(b.pop("lm_head.weight"), b["model.embed_tokens.weight"])
form = sys.argv[3] if len(sys.argv) > 3 else "f32"
ok = sorted(a) == sorted(b)
for k in a:
    x = a[k]
    if form == "bf16":
        u = x.view(np.uint32).astype(np.uint64); x = (((u + 0x7FFF + ((u >> 16) & 1)) >> 16) << 16).astype(np.uint32).view(np.float32)
    elif form == "f16":
        x = x.astype(np.float16).astype(np.float32)
    ok = ok and np.array_equal(x.view(np.uint32), b[k].view(np.uint32))
sys.exit(0 if ok else 1)
PY
}
val() { "$bin" eval --run "$1" 2> /dev/null | python3 -c "import json, sys; print(json.load(sys.stdin)['val_loss'])"; }
"$bin" import --hf hf --out imp "${small[@]}" --steps 5 > imp.log 2>&1
"$bin" export --run imp --out hf2 --tokenizer "$spm" > /dev/null 2>&1
check "F32: export of the import gives back every tensor bit for bit" 'tensors hf hf2'
check "F32: the imported model has the trained one's val_loss, exactly" '[ "$(val base)" = "$(val imp)" ]'
"$bin" train --config imp/config.json --resume > res.log 2>&1
check "the import resumes like any checkpoint (train --config RUN/config.json --resume)" 'grep -q "done after step 5" res.log'
for form in bf16 f16 sharded; do
  "$npy" "$src/tools/hf_variants.py" hf "hf_$form" $form
  "$bin" import --hf "hf_$form" --out "imp_$form" "${small[@]}" > /dev/null 2>&1
  "$bin" export --run "imp_$form" --out "hf2_$form" --tokenizer "$spm" > /dev/null 2>&1
  check "$form weights import to the source rounded to their precision, exactly" "tensors hf hf2_$form ${form/sharded/f32}"
done
mpi 2 "$bin" train --init-from hf "${small[@]}" --steps 2 --sp 2 --sp-strategy ring --out init > init.log 2>&1
check "train --init-from under sp 2 starts from the directory's weights" \
  'grep -q "initialised from hf" init.log && grep -q "done after step 2" init.log'

# ---- refusals, by name ------------------------------------------------------------------
variant() {  # variant NAME PYTHON [SOURCE]: a copy of SOURCE (hf) with config.json edited (c)
  rm -rf "bad_$1"; cp -r "${3:-hf}" "bad_$1"
  python3 - "bad_$1" "$2" <<'PY'
import json, os, sys
d = sys.argv[1]; c = json.load(open(d + "/config.json")); exec(sys.argv[2]); json.dump(c, open(d + "/config.json", "w"))
PY
}
variant gpt2 "c['architectures'] = ['GPT2LMHeadModel']"
expect "another architecture is refused by name" 1 "architecture GPT2LMHeadModel is not one seqpar imports" 1 -- "$bin" import --hf bad_gpt2 --out x "${small[@]}"
variant field "c['qk_layernorm'] = True"
expect "a field seqpar would ignore is refused by name" 1 "field 'qk_layernorm' (true) is not one seqpar maps" 1 -- "$bin" import --hf bad_field --out x "${small[@]}"
variant rope "c['rope_scaling'] = {'rope_type': 'yarn', 'factor': 4.0, 'original_max_position_embeddings': 64, 'mscale_all_dim': 1}"
expect "a rope_scaling key seqpar does not map is refused, not dropped" 1 "rope_scaling's 'mscale_all_dim' (1) is not a setting seqpar maps" 1 -- "$bin" import --hf bad_rope --out x "${small[@]}"
variant yarn "c['rope_scaling'] = {'rope_type': 'yarn', 'factor': 4.0, 'original_max_position_embeddings': 64, 'beta_fast': 32.0, 'beta_slow': 1.0}"
"$bin" import --hf bad_yarn --out imp_yarn "${small[@]}" > /dev/null 2>&1
check "rope_scaling yarn imports onto the --rope-* settings" \
  'grep -q "\"rope_scaling\": \"yarn\"" imp_yarn/config.json && grep -q "\"rope_factor\": 4.0" imp_yarn/config.json && grep -q "\"rope_original_len\": 64" imp_yarn/config.json'
variant act "c['hidden_act'] = 'gelu'"
expect "another activation is refused" 1 "'hidden_act' is \"gelu\"; seqpar implements \"silu\" only" 1 -- "$bin" import --hf bad_act --out x "${small[@]}"
rm -rf bad_missing; "$npy" "$src/tools/hf_variants.py" hf bad_missing sharded
python3 -c "import json,sys; p=sys.argv[1]; j=json.load(open(p)); del j['weight_map']['model.norm.weight']; json.dump(j,open(p,'w'))" bad_missing/model.safetensors.index.json
expect "a tensor the index does not list is refused" 1 "holds 'model.norm.weight', which the index does not list" 1 -- "$bin" import --hf bad_missing --out x "${small[@]}"
variant shape "c['intermediate_size'] = 96"
expect "a tensor of another shape than config.json's model is refused" 1 "has shape .* the model needs" 1 -- "$bin" import --hf bad_shape --out x "${small[@]}"
expect "a model flag that contradicts config.json" 2 "is a model with dim = 64; the command line says 128" 1 -- \
  "$bin" train --init-from hf --dim 128 "${small[@]}" --out x
expect "import without --data" 2 "import needs --data" 1 -- "$bin" import --hf hf --out x
expect "import onto a run that has checkpoints" 2 "already holds checkpoints" 1 -- "$bin" import --hf hf --out imp "${small[@]}"
check "nothing was written for the refused imports" '[ ! -e x ]'

# ---- directories written by PyTorch from Hugging Face's definitions (tools/make_hf_model.py) --
# Each is imported, exported back with seqpar's logits on a fixed window, and
# tools/check_hf_export.py recomputes those logits in float64 from the ORIGINAL directory's
# config and weights (F32 or BF16, one file or shards): seqpar's imported model against
# Hugging Face's definition. Qwen2 uses a byte-level BPE tokenizer.json (data encoded with
# it); llama and mistral the KJV SentencePiece model.
if ! /usr/bin/python3 -c 'import torch' 2>/dev/null; then
  echo "$passes passed, $fails failed; the PyTorch-written directories are SKIPPED: no python3-torch (apt-get install python3-torch)"
  [ $fails = 0 ] && exit 77
  exit 1
fi
qjson="$src/tests/fixtures/bpe/qwen-small/tokenizer.json"
head -c 300000 "$src/data/kjv.txt" > kjv300k.txt
"$bin" tokenize encode --model "$qjson" --input kjv300k.txt --output q.tok --quiet > /dev/null 2>&1
qsmall=(--seq-len 64 --batch 2 --threads 1 --progress none --data "$PWD/q.tok")
for spec in "llama f32" "mistral bf16" "qwen2 f32" "qwen2 bf16 --sharded"; do
  set -- $spec
  name="py_$1_$2${3:+_sharded}"
  if [ "$1" = qwen2 ]; then t="$qjson" V=4160 flags=("${qsmall[@]}"); else t="$spm" V=8192 flags=("${small[@]}"); fi
  "$npy" "$src/tools/make_hf_model.py" "$name" "$1" "$2" "$t" "$V" ${3:-} > /dev/null
  "$bin" import --hf "$name" --out "run_$name" "${flags[@]}" > "$name.log" 2>&1
  "$bin" export --run "run_$name" --out "exp_$name" --tokenizer "$t" > /dev/null 2>&1
  check "$spec: imports; seqpar's logits equal Hugging Face's definition on the source weights (float64, 1e-4)" \
    "/usr/bin/python3 '$src/tools/check_hf_export.py' 'exp_$name' '$name'"
done
check "control: another directory's weights do not reproduce them" \
  '! /usr/bin/python3 "$src/tools/check_hf_export.py" exp_py_qwen2_f32 py_qwen2_bf16_sharded > /dev/null'
check "qwen2: export writes a Qwen2 config (biases, tied head) and the tokenizer.json" \
  'grep -q Qwen2ForCausalLM exp_py_qwen2_f32/config.json && grep -q "\"tie_word_embeddings\": true" exp_py_qwen2_f32/config.json && [ -s exp_py_qwen2_f32/tokenizer.json ]'
check "qwen2 F32: export of the import gives back every source tensor bit for bit" 'tensors py_qwen2_f32 exp_py_qwen2_f32'
check "import copies the tokenizer into the run directory" 'cmp -s "$qjson" run_py_qwen2_f32/tokenizer.json'
"$bin" generate --run run_py_qwen2_f32 --prompt "In the beginning" --max-new-tokens 4 --temperature 0 --threads 1 > gen.txt 2> gen.err
check "generate finds the run's tokenizer.json without --tokenizer" '[ -s gen.txt ] && grep -q new_tokens gen.err'

# import -> train 1 step -> export -> import gives the training checkpoint's tensors; training
# resumed from an import under sp 2 ring and tp 2 gives the one-rank losses (q/k/v biases
# and the tied head sharded by tp).
"$bin" train --config run_py_qwen2_f32/config.json --resume --steps 1 --override steps > t1.log 2>&1
"$bin" export --run run_py_qwen2_f32 --out exp_t1 --tokenizer "$qjson" > /dev/null 2>&1
"$bin" import --hf exp_t1 --out run_t1 "${qsmall[@]}" > /dev/null 2>&1
check "import -> train 1 step -> export -> import: the step-1 checkpoint's tensors, bit for bit" \
  'tensors run_py_qwen2_f32/checkpoints/step_00000001 run_t1/checkpoints/step_00000000'
losses() { python3 -c "
import json, sys
print(' '.join('%.6g' % json.loads(l)['loss'] for l in open(sys.argv[1] + '/metrics.jsonl') if '\"loss\"' in l))" "$1"; }
same_losses() { python3 -c "
import sys
a, b = [list(map(float, x.split())) for x in sys.argv[1:3]]
assert len(a) == len(b) == 3, (a, b)
assert all(abs(x - y) <= 2e-5 * abs(x) for x, y in zip(a, b)), (a, b)" "$1" "$2"; }
"$bin" train --init-from py_qwen2_bf16_sharded "${qsmall[@]}" --steps 3 --out r1 > r1.log 2>&1
mpi 2 "$bin" train --init-from py_qwen2_bf16_sharded "${qsmall[@]}" --steps 3 --sp 2 --sp-strategy ring --layout zigzag --out r2 > r2.log 2>&1
mpi 2 "$bin" train --init-from py_qwen2_bf16_sharded "${qsmall[@]}" --steps 3 --tp 2 --out r3 > r3.log 2>&1
check "qwen2 from an import: sp 2 ring zigzag gives the one-rank losses (2e-5)" 'same_losses "$(losses r1)" "$(losses r2)"'
check "qwen2 from an import: tp 2 gives the one-rank losses (2e-5)" 'same_losses "$(losses r1)" "$(losses r3)"'

qvariant() { variant "$1" "$2" py_qwen2_f32; }  # from the Qwen2 directory
qvariant qwin "c['use_sliding_window'] = True"
expect "qwen2: a window on only some layers (max_window_layers 21) is refused" 1 "'max_window_layers' is 21; seqpar implements 0 only" 1 -- "$bin" import --hf bad_qwin --out x "${qsmall[@]}"
qvariant qwin0 "c['use_sliding_window'] = True; c['max_window_layers'] = 0; c['sliding_window'] = 16"
"$bin" import --hf bad_qwin0 --out run_qwin0 "${qsmall[@]}" > /dev/null 2>&1
check "qwen2: a window on every layer imports as --window" 'grep -q "\"window\": 16" run_qwin0/config.json'
qvariant qvocab "c['vocab_size'] = 4000"
expect "a tokenizer larger than vocab_size is refused" 1 "has 4099 pieces, more than config.json's vocab_size 4000" 1 -- "$bin" import --hf bad_qvocab --out x "${qsmall[@]}"
qvariant qtok "pass"
head -c 5000 "$qjson" > bad_qtok/tokenizer.json
expect "a corrupt tokenizer.json is refused" 1 "tokenizer.json" 1 -- "$bin" import --hf bad_qtok --out x "${qsmall[@]}"
qvariant qnotok "pass"
rm bad_qnotok/tokenizer.json
expect "no tokenizer at all is refused" 1 "has neither tokenizer.model" 1 -- "$bin" import --hf bad_qnotok --out x "${qsmall[@]}"
check "nothing was written for the refused imports" '[ ! -e x ]'
finish
