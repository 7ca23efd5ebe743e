#!/usr/bin/env bash
# Decode speed (issue 20, item 1): ms per generated token
#   * of the README's model (the default `seqpar train` shape) with --threads 1 and the default
#     threads, alone and with a competing process busy on one core;
#   * of a ~100M-parameter LLaMA shape against its weight-streaming bound (parameter bytes /
#     the memory bandwidth measured in the same run);
#   * against the cached length (prompts of 64 to 4096 tokens): linear is the goal.
#
#   bash bench/decode.sh [WORK_DIR]      (default /tmp/seqpar-decode; a few minutes)
#
# Prints markdown tables. Timings alternate between the settings compared, and each figure
# is the median of REPEAT (3) runs of 100 new tokens, greedy.
set -euo pipefail
cd "$(dirname "$0")/.."
work=${1:-/tmp/seqpar-decode}
bin=./build/seqpar
repeat=${REPEAT:-3}
mkdir -p "$work"
py=python3; [ -x /usr/bin/python3 ] && py=/usr/bin/python3

# decode_ms RUN THREADS PROMPT_FILE: the median decode ms/token of $repeat runs
decode_ms() {
  local run=$1 threads=$2 prompt=$3 r out=()
  for ((r = 0; r < repeat; ++r)); do
    out+=("$("$bin" generate --run "$run" --prompt-file "$prompt" --max-new-tokens 100 \
      --temperature 0 --threads "$threads" 2>&1 >/dev/null |
      "$py" -c 'import json, sys; print(json.loads(sys.stdin.read().split("seqpar generate: ")[-1])["decode_ms_per_token"])')")
  done
  printf '%s\n' "${out[@]}" | sort -g | sed -n "$(((repeat + 1) / 2))p" | xargs printf '%.3f\n'
}

# The models (one training step: decode time does not depend on the weights' values).
[ -d "$work/readme/checkpoints" ] ||
  "$bin" train --steps 1 --progress none --out "$work/readme" > /dev/null
[ -d "$work/llama100m/checkpoints" ] ||
  "$bin" train --arch llama --data kjv-bpe8k --dim 768 --heads 12 --kv-heads 4 --layers 12 \
    --seq-len 64 --batch 1 --steps 1 --progress none --out "$work/llama100m" > /dev/null
printf 'In the beginning God created the heaven and the earth.' > "$work/short.txt"

echo "## README model, 100 new tokens after a 55-byte prompt"
echo
echo "| load | ms/token, --threads 1 | ms/token, default ($(nproc) cores) | ratio |"
echo "|---|---|---|---|"
for load in alone "one busy process"; do
  pid=""
  if [ "$load" != alone ]; then
    (while :; do :; done) &
    pid=$!
  fi
  t1=$(decode_ms "$work/readme" 1 "$work/short.txt")
  t0=$(decode_ms "$work/readme" 0 "$work/short.txt")
  [ -n "$pid" ] && kill "$pid" && wait "$pid" 2>/dev/null || true
  echo "| $load | $t1 | $t0 | $("$py" -c "print(f'{$t0 / $t1:.2f}')") |"
done

echo
echo "## ~100M-parameter LLaMA (C = 768, 12 layers, 12 heads, 4 kv heads, V = 8192)"
echo
bw=$("$py" - <<'PY'
import time
import numpy as np
a = np.ones(1 << 28, dtype=np.float32)  # 1 GiB, read by sum()
best = 0.0
for _ in range(5):
    t = time.perf_counter(); a.sum(); dt = time.perf_counter() - t
    best = max(best, a.nbytes / dt)
print(f"{best / 1e9:.2f}")
PY
)
params=$("$py" - "$work/llama100m" <<'PY'
import glob, json, struct, sys
f = sorted(glob.glob(sys.argv[1] + "/checkpoints/step_*/model.safetensors"))[-1]
b = open(f, "rb"); n = struct.unpack("<Q", b.read(8))[0]; h = json.loads(b.read(n)); h.pop("__metadata__", None)
print(sum((v["data_offsets"][1] - v["data_offsets"][0]) // 4 for v in h.values()))
PY
)
bound=$("$py" -c "print(f'{4 * $params / ($bw * 1e9) * 1e3:.2f}')")
t1=$(decode_ms "$work/llama100m" 1 "$work/short.txt")
t0=$(decode_ms "$work/llama100m" 0 "$work/short.txt")
echo "parameters $params ($(("$params" * 4 / 1048576)) MiB fp32); memory read bandwidth $bw GB/s (numpy sum of 1 GiB, best of 5)"
echo
echo "| threads | ms/token | weight-streaming bound ms | ratio to bound |"
echo "|---|---|---|---|"
echo "| 1 | $t1 | $bound | $("$py" -c "print(f'{$t1 / $bound:.2f}')") |"
echo "| default | $t0 | $bound | $("$py" -c "print(f'{$t0 / $bound:.2f}')") |"

echo
echo "## Decode time against the cached length (README model, default threads)"
echo
echo "| prompt tokens | ms/token |"
echo "|---|---|"
for n in 64 512 1024 2048 4096; do
  head -c "$n" data/kjv.txt > "$work/p$n.txt"
  echo "| $n | $(decode_ms "$work/readme" 0 "$work/p$n.txt") |"
done
