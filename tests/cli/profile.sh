#!/usr/bin/env bash
# seqpar train --profile (issue 20, item 4), through the real binary: every metrics row has
# the nine phases (core/profile.hpp); they add up to the step time and what no phase covers
# ("other") is under 5 % of it; the losses are bit-identical with and without --profile, on
# one rank and under sp 2 ring (where comm is a phase of its own); the one-line breakdown
# is printed; seqpar plot draws profile.png; --profile is not part of the run's identity
# (a resume may add it); eval and generate report their phases and give the same results.
# Usage: profile.sh SEQPAR_BINARY SOURCE_DIR
set -u
source "$(dirname "$0")/lib.bash"
cd "$tmp" || exit 1
small=(train --arch llama --seq-len 256 --batch 2 --dim 64 --heads 4 --kv-heads 2 --layers 2
       --steps 4 --progress none --threads 1)
"$bin" "${small[@]}" --profile --out p1 > p1.log 2>&1
"$bin" "${small[@]}" --out n1 > n1.log 2>&1
mpi 2 "$bin" "${small[@]}" --profile --sp 2 --sp-strategy ring --out p2 > p2.log 2>&1
mpi 2 "$bin" "${small[@]}" --sp 2 --sp-strategy ring --out n2 > n2.log 2>&1
phases() { python3 - "$1" <<'PY'
import json, sys
want = {"other", "data", "attention_fwd", "attention_bwd", "linear", "norm_act", "loss", "comm", "optimizer"}
rows = [json.loads(l) for l in open(sys.argv[1] + "/metrics.jsonl")]
assert len(rows) == 4, rows
for r in rows:
    p = r["profile_ms"]
    assert set(p) == want, p
    assert all(v >= 0 for v in p.values()), p
    total = sum(p.values())
    assert abs(total - r["step_ms"]) <= 0.05 * r["step_ms"], (total, r["step_ms"])
    assert p["other"] <= 0.05 * r["step_ms"], p
    assert p["linear"] > 0 and p["attention_fwd"] > 0 and p["attention_bwd"] > 0 and p["loss"] > 0, p
PY
}
losses() { python3 -c "
import json, sys
print(' '.join(repr(json.loads(l)['loss']) for l in open(sys.argv[1] + '/metrics.jsonl')))" "$1"; }
check "one rank: nine phases per step, summing to step_ms (5%), other < 5%" 'phases p1'
check "sp 2 ring: the same" 'phases p2'
check "sp 2 ring: comm is measured" 'python3 -c "
import json, sys
assert sum(json.loads(l)[\"profile_ms\"][\"comm\"] for l in open(\"p2/metrics.jsonl\")) > 0"'
check "one rank: losses bit-identical with and without --profile" '[ "$(losses p1)" = "$(losses n1)" ]'
check "sp 2 ring: losses bit-identical with and without --profile" '[ "$(losses p2)" = "$(losses n2)" ]'
check "the one-line breakdown is printed once" '[ "$(grep -c "^profile (rank 0" p2.log)" = 1 ] && grep -q "attention_bwd" p2.log'
check "without --profile: no profile in metrics, no line" '! grep -q profile_ms n1/metrics.jsonl && ! grep -q "^profile" n1.log'
if command -v gnuplot > /dev/null; then
  "$bin" plot p1 > plot.log 2>&1
  check "seqpar plot draws profile.png" '[ -s p1/plots/profile.png ]'
fi
# eval and generate: the report carries the phases; the results are the same without.
e1=$("$bin" eval --run p1 --threads 1 --profile 2> /dev/null | tr -d '\n')
e0=$("$bin" eval --run p1 --threads 1 2> /dev/null | tr -d '\n')
check "eval --profile: phases in the report, the same val_loss" 'python3 -c "
import json, sys
a, b = json.loads(sys.argv[1]), json.loads(sys.argv[2])
assert len(a[\"profile_ms\"]) == 9 and a[\"profile_ms\"][\"linear\"] > 0, a
assert \"profile_ms\" not in b and a[\"val_loss\"] == b[\"val_loss\"], (a, b)" "$e1" "$e0"'
g=(generate --run p1 --prompt "In the beginning God created" --max-new-tokens 8 --temperature 0 --threads 1)
"$bin" "${g[@]}" --profile > g1.txt 2> g1.err
"$bin" "${g[@]}" > g0.txt 2> g0.err
check "generate --profile: prefill and decode phases, the same text" 'cmp -s g1.txt g0.txt && python3 -c "
import json
j = json.loads(open(\"g1.err\").read().split(\"seqpar generate: \")[-1])
p = j[\"profile_ms\"]
assert set(p) == {\"prefill\", \"decode\"} and p[\"decode\"][\"linear\"] > 0, p"'
"$bin" "${small[@]}" --steps 5 --override steps --resume --profile --out n1 > r.log 2>&1
check "a resume may add --profile (not part of the run's identity)" 'grep -q "done after step 5" r.log && tail -1 n1/metrics.jsonl | grep -q profile_ms'
finish
