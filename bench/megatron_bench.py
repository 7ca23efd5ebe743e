#!/usr/bin/python3
"""Megatron tensor (+ sequence) parallelism: per-rank memory by category and step time.

For tp = 1, 2, 4, with and without Megatron sequence parallelism, with each recompute
mode, and with the blocked attention kernel or the paper's materialised baseline: runs
`seqpar train` for 3 steps under mpiexec and reports the per-rank arena peak by category
and the median step time of steps 2-3. The activation bytes of one layer are shown next
to the Megatron paper's per-layer formula (Korthikanti et al. 2022, Table 2) scaled to
fp32: every 2-byte tensor becomes 4 bytes, the 1-byte dropout masks stay 1 byte:
  no parallelism          sbh(34 + 5as/h)           → sbh(66 + 9as/h)
  tensor parallel         sbh(10 + 24/t + 5as/(ht)) → sbh(18 + 48/t + 9as/(ht))
  tensor + sequence par.  sbh(34/t + 5as/(ht))      → sbh(66/t + 9as/(ht))
  selective recompute     drops the as² term;  full recompute keeps sbh·4 (the input).
seqpar regenerates dropout masks from the counter-based RNG (0 bytes), keeps P only in
the materialised baseline (4as²b/t, no separate dropout output) and otherwise an LSE per
(head, token) (4asb/t).

Usage: /usr/bin/python3 bench/megatron_bench.py [--seqpar build/seqpar] [--seq-len 2048]
"""
import argparse
import json
import os
import statistics
import subprocess
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ENV = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1",
           OMP_NUM_THREADS="1")
LAYERS, C, H, F, V, B = 2, 256, 8, 1024, 256, 1


def paper_fp32(s, t, tp_sp, recompute, materialized):
    b, h, a = B, C, H
    if recompute == "full":
        return 4 * s * b * h / (t if tp_sp else 1)
    quad = 0 if (recompute == "selective" or not materialized) else 9 * a * s / (h * t)
    if t == 1:
        return s * b * h * (66 + quad)
    if tp_sp:
        return s * b * h * (66 / t + quad)
    return s * b * h * (18 + 48 / t + quad)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seqpar", default=os.path.join(HERE, "..", "build", "seqpar"))
    ap.add_argument("--seq-len", type=int, default=2048)
    ap.add_argument("--tps", default="1,2,4")
    a = ap.parse_args()
    L = a.seq_len
    mib = lambda x: f"{x / 2**20:.1f}"
    print(f"GPT {LAYERS} layers, C={C}, H={H}, F={F}, L={L}, B={B}; 1 thread per rank; "
          f"per-rank arena peaks (MiB)\n")
    print("| tp | seq. par. | recompute | attention | step ms | params | grads | optim | acts | "
          "scratch | acts/layer | paper fp32 /layer | tp MiB/step |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for t in map(int, a.tps.split(",")):
        for tp_sp in (["on", "off"] if t > 1 else ["on"]):
            for rc in ["none", "selective", "full"]:
                for attn in ["local", "materialized"]:
                    # The per-layer activation bytes are the difference between a run with
                    # one more layer and this one (the shared recompute working set, the
                    # head and the embedding output cancel).
                    runs = {}
                    for layers in (LAYERS, LAYERS + 1):
                        with tempfile.TemporaryDirectory() as tmp:
                            cmd = ["mpiexec", "-n", str(t), "--oversubscribe", "--bind-to", "none",
                                   a.seqpar, "train", "--tp", str(t), "--tp-sp", tp_sp,
                                   "--recompute", rc, "--sp-strategy", attn, "--seq-len", str(L),
                                   "--batch", str(B), "--layers", str(layers), "--dim", str(C),
                                   "--heads", str(H), "--ffn", str(F), "--steps", "3",
                                   "--threads", "1", "--progress", "none", "--out", tmp,
                                   "--data", "passkey", "--dropout", "0.1"]
                            r = subprocess.run(cmd, capture_output=True, text=True, env=ENV)
                            if r.returncode == 0:
                                runs[layers] = [json.loads(x) for x in
                                                open(os.path.join(tmp, "metrics.jsonl"))]
                    if len(runs) < 2:
                        print(f"| {t} | {tp_sp} | {rc} | {attn} | error |")
                        continue
                    recs = runs[LAYERS]
                    pk = recs[-1]["peak_bytes"]
                    ms = statistics.median(x["step_ms"] for x in recs[1:])
                    per_layer = runs[LAYERS + 1][-1]["peak_bytes"]["acts"] - pk["acts"]
                    paper = paper_fp32(L, t, tp_sp == "on", rc, attn == "materialized")
                    print(f"| {t} | {tp_sp} | {rc} | {attn} | {ms:.0f} | {mib(pk['params'])} | "
                          f"{mib(pk['grads'])} | {mib(pk['optim'])} | {mib(pk['acts'])} | "
                          f"{mib(pk['scratch'])} | {mib(per_layer)} | {mib(paper)} | "
                          f"{mib(recs[-1]['bytes_sent']['tp'])} |", flush=True)


if __name__ == "__main__":
    main()
