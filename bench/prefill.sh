#!/usr/bin/env bash
# Long-prompt prefill against the kernel's rate (issue 20, item 2): a 2-layer byte GPT
# (C = 256) with head dim d = 32, 64 and 128 (8, 4 and 2 heads) prefills prompts of L bytes
# on one rank; `generate --profile` splits the prefill into phases, so the attention's own
# rate is its causal FLOPs (2·L²·C per layer: QKᵀ and PV, half the square) over its
# attention_fwd time, against the sgemm rate of the same run (bench_attention's 1024³).
#
#   bash bench/prefill.sh [WORK_DIR] [LENGTHS]     (default /tmp/seqpar-prefill, "4096 16384")
#
# Prints a markdown table.
set -euo pipefail
cd "$(dirname "$0")/.."
work=${1:-/tmp/seqpar-prefill}
lengths=${2:-4096 16384}
bin=./build/seqpar
threads=${THREADS:-$(nproc)}
mkdir -p "$work"
py=python3; [ -x /usr/bin/python3 ] && py=/usr/bin/python3
sgemm=$(./build/bench/bench_attention --threads "$threads" --quick 2>&1 |
  sed -n 's/.*cblas_sgemm 1024^3: \([0-9.]*\) GFLOP\/s.*/\1/p')
echo "sgemm 1024³ with $threads threads: $sgemm GFLOP/s"
echo
echo "| d | heads | L | prefill s | tokens/s | attention_fwd s | attention GFLOP/s | ÷ sgemm | linear s | other phases s |"
echo "|---|---|---|---|---|---|---|---|---|---|"
for heads in 8 4 2; do
  d=$((256 / heads))
  run="$work/gpt_d$d"
  [ -d "$run/checkpoints" ] ||
    "$bin" train --dim 256 --heads "$heads" --layers 2 --seq-len 64 --batch 1 --steps 1 \
      --progress none --out "$run" > /dev/null
  for L in $lengths; do
    head -c "$L" data/kjv.txt > "$work/p$L.txt"
    "$bin" generate --run "$run" --prompt-file "$work/p$L.txt" --max-new-tokens 1 \
      --temperature 0 --threads "$threads" --profile 2>&1 >/dev/null |
      "$py" -c "
import json, sys
j = json.loads(sys.stdin.read().split('seqpar generate: ')[-1])
p = j['profile_ms']['prefill']
L, C, layers, d, sgemm = $L, 256, 2, $d, $sgemm
flops = 2.0 * L * L * C * layers
att = p['attention_fwd'] / 1e3
rest = sum(v for k, v in p.items() if k not in ('attention_fwd', 'linear')) / 1e3
rate = flops / att / 1e9
print(f\"| {d} | {256 // d} | {L} | {j['prefill_s']:.2f} | {j['prefill_tokens_per_s']:.0f} | {att:.2f} | {rate:.1f} | {rate / sgemm:.2f} | {p['linear'] / 1e3:.2f} | {rest:.2f} |\")"
  done
done
