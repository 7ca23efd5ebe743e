#!/usr/bin/python3
"""ZeRO levels side by side (docs/zero.md): step time and memory.

  time:   step time, per-rank arena peak of params / grads / optim and bytes the shard group
          sent per step, from `seqpar train` under mpiexec, for --zero 0, 1, 2, 3 at each N
          (sp = N, ring, zigzag), the levels interleaved over `--rounds` rounds so that a
          drift in machine load hits them alike; the step time is the minimum over rounds
          of the median of steps 2..steps.
  memory: per-rank arena peak by category from `seqpar check` (dry run, the exact
          allocation sequence) for a deeper model, zero 0 against 3, at N = 1, 2, 4, 8.

Time model: the GPT of the strategy tables (2 layers, C = 256, H = 8, F = 1024, B = 1).
Memory model: 12 layers, C = 512, H = 8, F = 2048, B = 1, L = 8192.

Usage: /usr/bin/python3 bench/zero_bench.py time [--seqpar build/seqpar] [--len 8192]
                                                 [--ranks 2,4] [--steps 4] [--rounds 2]
       /usr/bin/python3 bench/zero_bench.py memory [--seqpar build/seqpar]
"""
import argparse
import json
import os
import statistics
import subprocess
import tempfile

TIME_MODEL = ["--layers", "2", "--dim", "256", "--heads", "8", "--ffn", "1024", "--batch", "1"]
MEM_MODEL = ["--layers", "12", "--dim", "512", "--heads", "8", "--ffn", "2048", "--batch", "1"]
ENV = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1",
           OMPI_MCA_rmaps_base_oversubscribe="1", OMP_NUM_THREADS="1")
MIB = 1024.0 * 1024.0


def mpirun(n):
    return ["mpiexec", "-n", str(n), "--oversubscribe", "--bind-to", "none"] if n > 1 else []


def sp_args(n):
    return ["--sp", str(n), "--sp-strategy", "ring", "--layout", "zigzag"] if n > 1 else []


def train(a, n, zero):
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(mpirun(n) + [a.seqpar, "train", "--seq-len", str(a.len), "--steps",
                                    str(a.steps), "--threads", "1", "--progress", "none",
                                    "--out", tmp + "/run", "--data", "passkey", "--zero",
                                    str(zero)] + sp_args(n) + TIME_MODEL,
                       env=ENV, check=True, stdout=subprocess.DEVNULL)
        return [json.loads(l) for l in open(tmp + "/run/metrics.jsonl")]


def time_table(a):
    ranks = [int(x) for x in a.ranks.split(",")]
    print(f"step time of --zero 0..3, GPT 2x256, L = {a.len}, sp = N (ring, zigzag), "
          f"1 thread/rank; min over {a.rounds} rounds of the median of steps 2..{a.steps}\n")
    print("| N | zero | step ms | x zero 0 | params MiB | grads MiB | optim MiB | "
          "world+shard bytes/step MiB |")
    print("|---|---|---|---|---|---|---|---|")
    for n in ranks:
        best, last = {}, {}
        for _ in range(a.rounds):
            for z in range(4):
                recs = train(a, n, z)
                ms = statistics.median(r["step_ms"] for r in recs[1:])
                best[z] = min(best.get(z, ms), ms)
                last[z] = recs[-1]
        for z in range(4):
            p = last[z]["peak_bytes"]
            print(f"| {n} | {z} | {best[z]:.0f} | {best[z] / best[0]:.3f} | "
                  f"{p['params'] / MIB:.2f} | {p['grads'] / MIB:.2f} | {p['optim'] / MIB:.2f} | "
                  f"{last[z]['bytes_sent']['world'] / MIB:.2f} |", flush=True)


def memory_table(a):
    print(f"per-rank arena peak by category (dry run, seqpar check), GPT 12x512, L = 8192, "
          f"sp = N (ring)\n")
    print("| N | zero | params MiB | grads MiB | optim MiB | acts MiB | total MiB |")
    print("|---|---|---|---|---|---|---|")
    for n in [1, 2, 4, 8]:
        for z in [0, 3]:
            out = subprocess.run(mpirun(n) + [a.seqpar, "check", "--seq-len", "8192", "--data",
                                              "passkey", "--zero", str(z)] + sp_args(n) +
                                 MEM_MODEL, env=ENV, check=True, capture_output=True, text=True)
            d = json.loads(out.stdout[out.stdout.index("{"):])
            c = d["peak_by_category"]
            print(f"| {n} | {z} | {c['params'] / MIB:.1f} | {c['grads'] / MIB:.1f} | "
                  f"{c['optim'] / MIB:.1f} | {c['acts'] / MIB:.1f} | "
                  f"{d['peak_bytes'] / MIB:.1f} |", flush=True)


def main():
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("what", choices=["time", "memory"])
    p.add_argument("--seqpar", default="build/seqpar")
    p.add_argument("--len", type=int, default=8192)
    p.add_argument("--ranks", default="2,4")
    p.add_argument("--steps", type=int, default=4)
    p.add_argument("--rounds", type=int, default=2)
    a = p.parse_args()
    time_table(a) if a.what == "time" else memory_table(a)


if __name__ == "__main__":
    main()
