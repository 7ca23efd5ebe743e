#!/usr/bin/env bash
# Nothing lost, nothing mixed: the run directory and resume, through the real binary.
#  1. two runs on one --out: the second is refused, naming the holder's pid and host
#  2. a missing checkpoints/latest: no restart over the step directories; resume finds them
#  3. resume continues the data position (batch/dp may change), refuses a changed
#     data/seq-len/schedule unless --override names it, and says when nothing is left
#  4. left-overs: unfinished checkpoint temporaries removed; metrics cut back to the
#     checkpoint on resume; a write failure reported once, with the reason, no torn line
#  5. a flag bad on one rank only, an unknown flag there, or another subcommand: every
#     rank says one line, exit 2; the other usage errors exit 2 too
#  6. a second SIGINT ends the process at once; after SIGTERM to mpiexec every step
#     directory is complete and --resume continues from the newest
#  7. floats shown as written (config.json, manifest, config: line, metrics)
#  8. --steps 0 saves the initial weights as step 0
# Usage: run_safety.sh SEQPAR_BINARY SOURCE_DIR
set -u
source "$(dirname "$0")/lib.bash"
small=(--data passkey --seq-len 128 --batch 2 --dim 32 --heads 2 --layers 1 --threads 1 --progress lines --warmup 2)
wait_for() { for _ in $(seq 1 600); do grep -qs "$2" "$1" && return 0; sleep 0.1; done; return 1; }
json_lines_ok() { python3 -c 'import json,sys; [json.loads(l) for l in open(sys.argv[1])]' "$1" 2>/dev/null; }
steps_of() { python3 -c 'import json,sys; print(" ".join(str(json.loads(l)["step"]) for l in open(sys.argv[1])))' "$1"; }
count() { grep -c -- "$1" "$2"; }

# ---- 1. one run per directory ---------------------------------------------------------
timeout 300 "$bin" train "${small[@]}" --steps 100000 --ckpt-every 5 --seed 1 --out "$tmp/a" > "$tmp/a.log" 2>&1 &
apid=$!
wait_for "$tmp/a.log" "^step 2/"
holder=$(pgrep -P $apid)  # timeout → seqpar
timeout 60 "$bin" train "${small[@]}" --steps 10 --seed 2 --out "$tmp/a" > "$tmp/b.log" 2>&1
rc=$?
check "second run on one --out exits 2 (got $rc)" '[ $rc = 2 ]'
check "second run names the holder's pid and host" 'grep -q "in use by another run (pid $holder on host $(hostname)" "$tmp/b.log"'
mpi 2 "$bin" train "${small[@]}" --steps 10 --resume --out "$tmp/a" > "$tmp/b2.log" 2>&1
rc=$?
check "a concurrent --resume under mpiexec is refused on every rank, exit 2 (got $rc)" '[ $rc = 2 ] && [ "$(count "seqpar: error:" "$tmp/b2.log")" = 2 ]'
kill -TERM $apid; wait $apid
check "the holder's config.json is intact (seed 1)" 'grep -q "\"seed\": 1," "$tmp/a/config.json"'
check "metrics of the holder only, every line whole" 'json_lines_ok "$tmp/a/metrics.jsonl"'

# ---- 2. missing latest ----------------------------------------------------------------
"$bin" train "${small[@]}" --steps 4 --ckpt-every 2 --out "$tmp/c" > /dev/null 2>&1
rm "$tmp/c/checkpoints/latest"
sum=$(md5sum < "$tmp/c/checkpoints/step_00000004/model.safetensors")
"$bin" train "${small[@]}" --steps 4 --out "$tmp/c" > "$tmp/c.log" 2>&1
rc=$?
check "no restart over step directories without latest (exit $rc)" '[ $rc = 2 ] && grep -q "already holds checkpoints" "$tmp/c.log"'
check "step_00000004 untouched" '[ "$(md5sum < "$tmp/c/checkpoints/step_00000004/model.safetensors")" = "$sum" ]'
"$bin" train "${small[@]}" --steps 6 --override steps --resume --out "$tmp/c" > "$tmp/c2.log" 2>&1
check "resume finds step 4 without latest" 'grep -q "resumed from .*step_00000004 at step 4" "$tmp/c2.log" && grep -q "done after step 6" "$tmp/c2.log"'

# ---- 3. honest resume -----------------------------------------------------------------
# Uninterrupted: 1 rank, batch 2. Interrupted at 3, resumed on 2 ranks with batch 1: the
# same global samples per step, so the same losses (data position continues).
"$bin" train "${small[@]}" --steps 6 --out "$tmp/ref" > /dev/null 2>&1
"$bin" train "${small[@]}" --steps 6 --stop-after 3 --out "$tmp/d" > /dev/null 2>&1
mpi 2 "$bin" train "${small[@]}" --steps 6 --batch 1 --resume --out "$tmp/d" > "$tmp/d.log" 2>&1
same=$(python3 - "$tmp/ref/metrics.jsonl" "$tmp/d/metrics.jsonl" <<'PY'
import json, sys
a = {r["step"]: r["loss"] for r in map(json.loads, open(sys.argv[1]))}
b = {r["step"]: r["loss"] for r in map(json.loads, open(sys.argv[2]))}
# fp32 sums in another order over 2 ranks: ~1e-6 relative after 3 AdamW steps
print(int(sorted(a) == sorted(b) and all(abs(a[s] - b[s]) <= 1e-4 * a[s] for s in a)))
PY
)
check "resume on dp 2 x batch 1 continues the data: losses equal the uninterrupted run" '[ "$same" = 1 ]'
check "resume says the sample it continues from" 'grep -q "at step 3, sample 6" "$tmp/d.log"'
# A batch change continues from the saved sample index: 6 + 3 steps x 1 = 9.
"$bin" train "${small[@]}" --steps 6 --stop-after 3 --out "$tmp/e" > /dev/null 2>&1
"$bin" train "${small[@]}" --steps 6 --batch 1 --resume --out "$tmp/e" > /dev/null 2>&1
check "batch 2 -> 1: state.json next_sample continues (9)" 'grep -q "\"next_sample\": 9" "$tmp/e/checkpoints/step_00000006/state.json"'
"$bin" train "${small[@]}" --steps 6 --stop-after 3 --out "$tmp/f" > /dev/null 2>&1
for change in "--seq-len 256:seq_len" "--lr 3e-3:lr" "--data kjv:data" "--warmup 3:warmup" "--steps 9:steps"; do
  flags=${change%%:*}; key=${change##*:}
  mpi 2 "$bin" train "${small[@]}" --steps 6 --resume --out "$tmp/f" $flags > "$tmp/f.log" 2>&1
  rc=$?
  check "resume with $flags refused on every rank, exit 2 (got $rc)" '[ $rc = 2 ] && [ "$(count "override $key" "$tmp/f.log")" = 2 ]'
done
"$bin" train "${small[@]}" --steps 6 --resume --out "$tmp/f" --lr 3e-3 --override lr > "$tmp/f2.log" 2>&1
check "--override lr accepts the change" 'grep -q "done after step 6" "$tmp/f2.log"'
mpi 2 "$bin" train "${small[@]}" --steps 6 --resume --out "$tmp/f" > "$tmp/f3.log" 2>&1
rc=$?
check "--steps at the checkpoint: nothing left to do, exit 0 (got $rc)" '[ $rc = 0 ] && grep -q "nothing left to do" "$tmp/f3.log"'
"$bin" train "${small[@]}" --steps 4 --resume --out "$tmp/f" --override steps > "$tmp/f4.log" 2>&1
check "--steps below the checkpoint: nothing left to do" 'grep -q "nothing left to do.*at step 6 and --steps is 4" "$tmp/f4.log" && [ ! -e "$tmp/f/checkpoints/step_00000004" ]'

# ---- 4. left-overs ----------------------------------------------------------------------
"$bin" train "${small[@]}" --steps 5 --ckpt-every 3 --out "$tmp/g" > /dev/null 2>&1
rm -rf "$tmp/g/checkpoints/step_00000005"          # as if killed after step 5, before its save
mkdir -p "$tmp/g/checkpoints/step_00000005.tmp.99999"  # a save killed half-way
echo partial > "$tmp/g/checkpoints/step_00000005.tmp.99999/model.safetensors"
printf '{"step": 6, "loss": 1.2' >> "$tmp/g/metrics.jsonl"  # a torn last line
"$bin" train "${small[@]}" --steps 5 --resume --out "$tmp/g" > "$tmp/g.log" 2>&1
check "unfinished temporary removed" '[ ! -e "$tmp/g/checkpoints/step_00000005.tmp.99999" ] && grep -q "removed the unfinished checkpoint" "$tmp/g.log"'
check "metrics cut back on resume: steps 1..5 once each" '[ "$(steps_of "$tmp/g/metrics.jsonl")" = "1 2 3 4 5" ]'
# A file-size limit (as a full disk): one warning with the reason; no torn line. (OpenMPI's
# shared-memory files would hit the limit first: PMIx's hash store and tcp instead.)
( ulimit -f 16; export PMIX_MCA_gds=hash OMPI_MCA_btl=self,tcp
  exec "$bin" train "${small[@]}" --steps 80 --progress none --out "$tmp/h" ) > "$tmp/h.log" 2>&1
check "metrics write failure reported once, with the reason" '[ "$(count "warning: writing .*metrics.jsonl failed (File too large)" "$tmp/h.log")" = 1 ]'
check "metrics.jsonl has no torn line after the failure" 'json_lines_ok "$tmp/h/metrics.jsonl"'

# ---- 5. multi-rank usage errors -----------------------------------------------------------
mpmd() { timeout 120 mpiexec --oversubscribe --bind-to none -n 1 "$bin" $1 --out "$tmp/m" : -n 1 "$bin" $2 --out "$tmp/m"; }
for pair in "train|train --lr -1" "train|train --bogus-flag 3" "train|check"; do
  mpmd "${pair%%|*}" "${pair##*|}" > "$tmp/m.log" 2>&1
  rc=$?
  check "MPMD '${pair##*|}' on rank 1: exit 2 (got $rc), one line on each rank" '[ $rc = 2 ] && [ "$(count "seqpar: error:" "$tmp/m.log")" = 2 ] && ! grep -q "MPI_ERR\|NBC_Progress" "$tmp/m.log"'
done
check "rank 0 says it refused because of rank 1" 'grep -q "rank 0 refused: rank 1" "$tmp/m.log" || grep -q "disagrees across ranks" "$tmp/m.log"'
mpi 2 "$bin" plan --budget banana > "$tmp/p.log" 2>&1
rc=$?
check "plan --budget banana exits 2 (got $rc)" '[ $rc = 2 ] && grep -q "not a number of bytes" "$tmp/p.log"'

# ---- 6. signals ---------------------------------------------------------------------------
# A model large enough that a step and its save take a while: the second SIGINT, 20 ms
# after the first, lands while the first is still waiting for the step to end.
timeout 120 "$bin" train "${small[@]}" --dim 512 --layers 4 --steps 100000 --out "$tmp/s" > "$tmp/s.log" 2>&1 &
spid=$!
wait_for "$tmp/s.log" "^step 2/"
child=$(pgrep -P $spid)  # timeout → seqpar
kill -INT $child; sleep 0.02; kill -INT $child
wait $spid
rc=$?
check "a second SIGINT ends the process at once, exit 130 (got $rc)" '[ $rc = 130 ] && grep -q "second interrupt" "$tmp/s.log"'
# SIGTERM to mpiexec itself: OpenMPI forwards it, exits 1 whatever the ranks do, stops
# relaying their output and kills them 1 s later (docs/checkpoints.md), so whether this
# stop's own save completes depends on timing. What must hold either way: every installed
# step directory is complete, and --resume continues from the newest one.
timeout 120 mpiexec -n 2 --oversubscribe --bind-to none "$bin" train "${small[@]}" --steps 100000 --ckpt-every 20 --out "$tmp/t" > "$tmp/t.log" 2>&1 &
tpid=$!
wait_for "$tmp/t.log" "saved checkpoint .*step_00000040"
mpx=$(pgrep -P $tpid -x mpiexec)
kill -TERM $mpx
wait $tpid
rc=$?
complete=1
for d in "$tmp"/t/checkpoints/step_*; do [ -f "$d/manifest.json" ] || case "$d" in *.tmp.*) ;; *) complete=0 ;; esac; done
check "SIGTERM to mpiexec (exit $rc): every installed step directory is complete" '[ $complete = 1 ] && ls "$tmp"/t/checkpoints/step_*/manifest.json > /dev/null 2>&1'
newest=$(ls -d "$tmp"/t/checkpoints/step_[0-9]* | grep -v "\.tmp\." | sort | tail -1)
timeout 120 mpiexec -n 2 --oversubscribe --bind-to none "$bin" train "${small[@]}" --steps 100000 --stop-after $(( 10#${newest##*step_} + 2 )) --resume --out "$tmp/t" > "$tmp/t2.log" 2>&1
rc=$?
check "after SIGTERM to mpiexec, --resume continues from ${newest##*/} (exit $rc)" '[ $rc = 0 ] && grep -q "resumed from .*${newest##*/}" "$tmp/t2.log"'

# ---- 7. floats as written -------------------------------------------------------------------
"$bin" train "${small[@]}" --steps 2 --lr 2e-3 --min-lr 1e-5 --out "$tmp/w" > "$tmp/w.log" 2>&1
check "config.json shows lr 0.002" 'grep -q "\"lr\": 0.002," "$tmp/w/config.json" && grep -q "\"min_lr\": 1e-05" "$tmp/w/config.json"'
check "manifest shows lr 0.002" 'grep -q "\"lr\": 0.002," "$tmp/w/checkpoints/step_00000002/manifest.json"'
check "config: line shows lr 0.002" 'grep -q "\"lr\":0.002," "$tmp/w.log"'
check "metrics lr short (0.001 at warm-up step 1)" 'grep -q "\"lr\":0.001," "$tmp/w/metrics.jsonl"'
check "no float widening noise anywhere" '! grep -q "0000000[0-9]\{4\}" "$tmp/w/config.json" "$tmp/w/metrics.jsonl"'

# ---- 8. step 0 -----------------------------------------------------------------------------
"$bin" train "${small[@]}" --steps 0 --out "$tmp/z" > "$tmp/z.log" 2>&1
rc=$?
check "--steps 0 saves the initial model as step 0 (exit $rc)" '[ $rc = 0 ] && [ -f "$tmp/z/checkpoints/step_00000000/manifest.json" ] && grep -q "done after step 0$" "$tmp/z.log"'

[ $fails = 0 ] || { echo "--- logs"; for f in "$tmp"/*.log; do echo "== $f"; tail -n 4 "$f"; done; }
# A run directory must not be redirected: a run.lock that is a symbolic link is refused
# (O_NOFOLLOW), and the file it points to is left as it was.
"$bin" train "${small[@]}" --steps 1 --out "$tmp/ln" > /dev/null 2>&1
printf 'keep\n' > "$tmp/victim"
rm -f "$tmp/ln/run.lock" && ln -s "$tmp/victim" "$tmp/ln/run.lock"
"$bin" train "${small[@]}" --steps 2 --resume --out "$tmp/ln" > "$tmp/ln.log" 2>&1
rc=$?
check "a run.lock symlink is refused (exit $rc), naming it" \
  '[ $rc = 1 ] && grep -q "run.lock) refused: it is a symbolic link" "$tmp/ln.log"'
check "the symlink's target is untouched" '[ "$(cat "$tmp/victim")" = keep ]'
# The step inside a manifest must be the step its directory is named for.
"$bin" train "${small[@]}" --steps 2 --out "$tmp/st" > /dev/null 2>&1
python3 "$src/tools/edit_manifest.py" "$tmp/st/checkpoints/step_00000002/manifest.json" "m['step'] = 1"
"$bin" train "${small[@]}" --steps 3 --resume --override steps --out "$tmp/st" > "$tmp/st.log" 2>&1
rc=$?
check "a manifest whose step is not its directory's is refused (exit $rc)" \
  '[ $rc = 1 ] && grep -q "says step 1 but the directory is step_00000002" "$tmp/st.log"'
finish
