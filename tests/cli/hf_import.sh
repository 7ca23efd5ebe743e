#!/usr/bin/env bash
# seqpar import --hf DIR --out RUN and train --init-from DIR (issue 18, item 1), through the
# real binary: a llama trained here is exported (seqpar export) and imported back:
#   * F32: export of the imported model gives back the same tensors, bit for bit, and the
#     same val_loss; BF16 and F16 sources give the tensors rounded to that precision;
#     sharded weights (model.safetensors.index.json) import like one file;
#   * the import resumes like any checkpoint (train --config RUN/config.json --resume), and
#     train --init-from starts a run from the directory under sp 2;
#   * unsupported input is refused by name: another architecture (Qwen2's biases), a field
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
variant() {  # variant NAME PYTHON: a copy of hf with config.json edited (c) or files changed
  rm -rf "bad_$1"; cp -r hf "bad_$1"
  python3 - "bad_$1" "$2" <<'PY'
import json, os, sys
d = sys.argv[1]; c = json.load(open(d + "/config.json")); exec(sys.argv[2]); json.dump(c, open(d + "/config.json", "w"))
PY
}
variant qwen "c['architectures'] = ['Qwen2ForCausalLM']"
expect "Qwen2 is refused by what it needs" 1 "Qwen2ForCausalLM has q/k/v projection biases" 1 -- "$bin" import --hf bad_qwen --out x "${small[@]}"
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
finish
