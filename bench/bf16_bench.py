#!/usr/bin/env python3
"""bf16 against fp32 activations (--precision): step time and memory, side by side.

For each configuration, runs `seqpar train` with --precision fp32 and bf16, alternating
(fp32, bf16, fp32, bf16, ...) so that load on a shared machine hits both alike, and reports
the median step time (first step dropped: it touches the arena), the CPU time of the whole
process tree per run (user + system, from getrusage of the children: far less sensitive
than wall time to other jobs on a shared machine), and the arena's peak bytes by category
from metrics.jsonl. Prints one markdown table with the ratios bf16 / fp32.

  python3 bench/bf16_bench.py --seqpar build/seqpar [--reps 3] [--steps 4] [--threads 2]
"""
import argparse
import json
import resource
import os
import statistics
import subprocess
import tempfile

MODEL = ["--dim", "256", "--heads", "8", "--layers", "2", "--ffn", "1024", "--batch", "1"]


def run(seqpar, out, L, n, strategy, precision, steps, threads):
    cmd = [seqpar, "train", "--data", "kjv", "--seq-len", str(L), "--steps", str(steps),
           "--threads", str(threads), "--progress", "none", "--precision", precision,
           "--out", out] + MODEL
    if n > 1:
        layout = "zigzag" if strategy in ("ring", "usp") else "contiguous"
        cmd = ["mpiexec", "-n", str(n), "--oversubscribe", "--bind-to", "none"] + cmd + [
            "--sp", str(n), "--sp-strategy", strategy, "--layout", layout]
    env = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1",
               OMPI_MCA_rmaps_base_oversubscribe="1")
    r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL, timeout=1200)
    r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)
    rows = [json.loads(l) for l in open(os.path.join(out, "metrics.jsonl"))]
    return [r["step_ms"] for r in rows[1:]], rows[-1]["peak_bytes"], cpu


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seqpar", default="build/seqpar")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--configs", default="4096:1:local,16384:1:local,16384:2:ring,16384:2:ulysses",
                    help="L:N:strategy,...")
    a = ap.parse_args()
    mib = 1 << 20
    print("| L | N | strategy | step fp32 (ms) | step bf16 (ms) | step bf16/fp32 | CPU bf16/fp32 "
          "| acts fp32 (MiB) | acts bf16 (MiB) | acts bf16/fp32 | comm fp32 / bf16 (MiB) "
          "| arena peak bf16/fp32 |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for cfg in a.configs.split(","):
            L, n, strategy = cfg.split(":")
            L, n = int(L), int(n)
            ms = {"fp32": [], "bf16": []}
            cpu = {"fp32": [], "bf16": []}
            peak = {}
            for rep in range(a.reps):
                for p in ("fp32", "bf16"):
                    t, pk, c = run(a.seqpar, os.path.join(tmp, f"{cfg}-{p}-{rep}"), L, n, strategy,
                                   p, a.steps, a.threads)
                    ms[p] += t
                    cpu[p].append(c)
                    peak[p] = pk
            m32, m16 = statistics.median(ms["fp32"]), statistics.median(ms["bf16"])
            a32, a16 = peak["fp32"]["acts"], peak["bf16"]["acts"]
            c32, c16 = statistics.median(cpu["fp32"]), statistics.median(cpu["bf16"])
            print(f"| {L} | {n} | {strategy} | {m32:.0f} | {m16:.0f} | {m16 / m32:.3f} | "
                  f"{c16 / c32:.3f} | "
                  f"{a32 / mib:.1f} | {a16 / mib:.1f} | {a16 / a32:.3f} | "
                  f"{peak['fp32']['comm'] / mib:.1f} / {peak['bf16']['comm'] / mib:.1f} | "
                  f"{peak['bf16']['total'] / peak['fp32']['total']:.3f} |", flush=True)


if __name__ == "__main__":
    main()
