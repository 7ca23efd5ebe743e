#!/usr/bin/env bash
# `seqpar export` of a llama checkpoint loads in PyTorch alone (tools/check_hf_export.py,
# rotate-half RoPE as Hugging Face's LLaMA) with seqpar's logits. Needs Debian's
# python3-torch: without it the test reports itself skipped (exit 77), never passed.
# Usage: hf_export.sh SEQPAR_BINARY SOURCE_DIR
set -u
source "$(dirname "$0")/lib.bash"
cd "$src" || exit 1
small=(--data kjv-bpe8k --seq-len 64 --batch 2 --steps 3 --dim 32 --heads 4 --kv-heads 2 --layers 2
       --progress none --threads 1)
"$bin" train --arch llama "${small[@]}" --out "$tmp/run" > /dev/null 2>&1
"$bin" export --checkpoint "$tmp/run" --out "$tmp/hf" --tokenizer data/kjv-bpe8k.model > "$tmp/e.log" 2>&1
check "export writes the Hugging Face files" '[ -f "$tmp/hf/model.safetensors" ] && [ -f "$tmp/hf/config.json" ] && [ -f "$tmp/hf/tokenizer.model" ] && grep -q "\"num_key_value_heads\": 2" "$tmp/hf/config.json"'
"$bin" train --arch gpt --data kjv --seq-len 64 --batch 2 --steps 1 --dim 32 --heads 4 --progress none --threads 1 --out "$tmp/gpt" > /dev/null 2>&1
"$bin" export --checkpoint "$tmp/gpt" --out "$tmp/hf_gpt" > "$tmp/g.log" 2>&1; rc=$?
check "a gpt checkpoint is refused, exit 2 (got $rc)" '[ $rc = 2 ] && grep -q "for llama models" "$tmp/g.log"'
printf 'not the tokenizer' > "$tmp/other.model"
"$bin" export --checkpoint "$tmp/run" --out "$tmp/hf2" --tokenizer "$tmp/other.model" > "$tmp/t.log" 2>&1; rc=$?
check "a tokenizer that does not match is refused, exit 2 (got $rc)" '[ $rc = 2 ] && grep -q "is not the one the model was trained with" "$tmp/t.log"'
if ! /usr/bin/python3 -c 'import torch' 2>/dev/null; then
  echo "$passes passed, $fails failed; the PyTorch check is SKIPPED: no python3-torch (apt-get install python3-torch)"
  [ $fails = 0 ] && exit 77
  exit 1
fi
/usr/bin/python3 tools/check_hf_export.py "$tmp/hf" > "$tmp/py.log" 2>&1; rc=$?
cat "$tmp/py.log"
check "PyTorch reproduces seqpar's logits from the exported files" '[ $rc = 0 ]'
# A model trained with a sliding window exports as Mistral (the same weights, plus
# sliding_window), and PyTorch reproduces its windowed logits; without the window in the
# config the check fails (the window reached the reference logits).
"$bin" train --arch llama "${small[@]}" --window 8 --out "$tmp/win" > /dev/null 2>&1
"$bin" export --checkpoint "$tmp/win" --out "$tmp/hfw" > "$tmp/w.log" 2>&1
check "a windowed llama exports as mistral with sliding_window 8" \
  'grep -q "\"model_type\": \"mistral\"" "$tmp/hfw/config.json" && grep -q "\"sliding_window\": 8" "$tmp/hfw/config.json"'
/usr/bin/python3 tools/check_hf_export.py "$tmp/hfw" > "$tmp/pyw.log" 2>&1; rc=$?
cat "$tmp/pyw.log"
check "PyTorch reproduces the windowed logits" '[ $rc = 0 ]'
python3 - "$tmp/hfw/config.json" <<'PY'
import json, sys
c = json.load(open(sys.argv[1])); del c["sliding_window"]; json.dump(c, open(sys.argv[1], "w"))
PY
/usr/bin/python3 tools/check_hf_export.py "$tmp/hfw" > /dev/null 2>&1; rc=$?
check "without sliding_window the windowed logits differ (exit $rc)" '[ $rc = 1 ]'
# The check can fail: a config that disagrees with the weights (another RoPE base) is caught.
python3 - "$tmp/hf/config.json" <<'PY'
import json, sys
c = json.load(open(sys.argv[1])); c["rope_theta"] *= 2; json.dump(c, open(sys.argv[1], "w"))
PY
/usr/bin/python3 tools/check_hf_export.py "$tmp/hf" > /dev/null 2>&1; rc=$?
check "a wrong RoPE base is caught by the check (exit $rc)" '[ $rc = 1 ]'
# RoPE scaling exports as Hugging Face's rope_scaling, and PyTorch with Hugging Face's
# definitions reproduces the logits over the 32-token window, past L0 = 16 (dynamic: its
# base scaled for L = 32); without rope_scaling the check fails.
for sc in "linear --rope-factor 4" "dynamic --rope-factor 2 --rope-original-len 16" \
          "yarn --rope-factor 4 --rope-original-len 16" \
          "llama3 --rope-factor 8 --rope-original-len 16 --rope-high-freq-factor 8"; do
  name=${sc%% *}
  "$bin" train --arch llama "${small[@]}" --rope-scaling $sc --out "$tmp/r_$name" > /dev/null 2>&1
  "$bin" export --checkpoint "$tmp/r_$name" --out "$tmp/hf_$name" > /dev/null 2>&1
  /usr/bin/python3 tools/check_hf_export.py "$tmp/hf_$name" > "$tmp/py.log" 2>&1; rc=$?
  check "rope_scaling $name: PyTorch reproduces seqpar's logits (exit $rc)" '[ $rc = 0 ]'
  python3 - "$tmp/hf_$name/config.json" <<'PY'
import json, sys
c = json.load(open(sys.argv[1])); del c["rope_scaling"]; json.dump(c, open(sys.argv[1], "w"))
PY
  /usr/bin/python3 tools/check_hf_export.py "$tmp/hf_$name" > /dev/null 2>&1; rc=$?
  check "rope_scaling $name: without it the logits differ (exit $rc)" '[ $rc = 1 ]'
done
finish
