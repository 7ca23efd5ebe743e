#!/usr/bin/python3
"""Sequence-parallel strategies side by side: memory, communication and time.

  memory: the longest sequence each strategy trains for one step under a per-rank
          budget, at N = 1, 2, 4, 8 ranks, from `seqpar plan` (dry run: the exact
          allocation sequence of a training step, no arithmetic). Writes a table, a data
          file and a gnuplot PNG.
  time:   step time, per-rank arena peak by category and bytes sent per rank per step
          (attention group), from `seqpar train` under mpiexec, at N = 1, 2, 4 and a few L.

Fixed model: GPT, 2 layers, C = 256, H = 8 (d = 32), F = 1024, B = 1. MQSP uses m = N
micro-query chunks (the paper's setting), ring and usp the zigzag layout.

Usage: /usr/bin/python3 bench/sp_bench.py memory [--budget 1GiB] [--out docs/img]
       /usr/bin/python3 bench/sp_bench.py time [--lens 2048,4096,8192] [--ranks 1,2,4]
                                               [--strategies local,ring,ulysses]
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
MODEL = ["--layers", "2", "--dim", "256", "--heads", "8", "--ffn", "1024", "--batch", "1"]
STRATEGIES = ["rsa", "mqsp", "ulysses", "ring", "usp"]
# Megatron tensor + sequence parallelism at tp = N (sp 1), with the blocked kernel and with
# the paper's materialised baseline (every layer's T×T probabilities kept).
MEGATRON = {"megatron": "local", "megatron-materialized": "materialized"}
ALL = STRATEGIES + list(MEGATRON)


def parallel_args(s, n):
    if s in MEGATRON:
        return ["--tp", str(n), "--sp", "1", "--sp-strategy", MEGATRON[s]]
    return ["--sp", str(n), "--sp-strategy", s, "--layout", layout(s)]
ENV = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1",
           OMP_NUM_THREADS="1")


def layout(s):
    return "zigzag" if s in ("ring", "usp") else "contiguous"


def mpirun(n, args, timeout=600):
    cmd = ["mpiexec", "-n", str(n), "--oversubscribe", "--bind-to", "none"] + args
    return subprocess.run(cmd, capture_output=True, text=True, env=ENV, timeout=timeout)


def memory(a):
    rows = []
    for s in ["local"] + ALL:
        for n in [1, 2, 4, 8]:
            if s == "local" and n > 1:
                continue
            args = [a.seqpar, "plan"] + parallel_args(s, n) + [
                    "--budget", a.budget, "--data", "passkey"] + MODEL
            r = mpirun(n, args)
            if r.returncode != 0:
                print(f"{s} N={n}: {r.stderr.strip().splitlines()[-1] if r.stderr else 'failed'}",
                      file=sys.stderr)
                continue
            j = json.loads(r.stdout.strip().splitlines()[-1])
            rows.append((s, n, j["longest_seq_len"], j["peak_by_category"]))
            print(f"{s:8s} N={n}: L={j['longest_seq_len']}", file=sys.stderr, flush=True)
    print(f"Longest sequence that trains one step under {a.budget} per rank "
          f"(GPT 2x256, H=8, B=1; dry-run peak)\n")
    print("| strategy | N=1 | N=2 | N=4 | N=8 | N=8 / N=1 |")
    print("|---|---|---|---|---|---|")
    by = {}
    for s, n, L, _ in rows:
        by.setdefault(s, {})[n] = L
    for s in ["local"] + ALL:
        if s not in by:
            continue
        cells = [str(by[s].get(n, "")) for n in [1, 2, 4, 8]]
        ratio = f"{by[s][8] / by[s][1]:.2f}" if 8 in by[s] and 1 in by[s] else ""
        print(f"| {s} | " + " | ".join(cells) + f" | {ratio} |")
    os.makedirs(a.out, exist_ok=True)
    dat = os.path.join(a.out, "longest_seq.dat")
    with open(dat, "w") as f:
        f.write("# N " + " ".join(s for s in ALL) + "\n")
        for n in [1, 2, 4, 8]:
            f.write(f"{n} " + " ".join(str(by.get(s, {}).get(n, "NaN")) for s in ALL) + "\n")
    png = os.path.join(a.out, "longest_seq.png")
    plot = [f"set terminal pngcairo size 800,500", f"set output '{png}'",
            f"set title 'Longest trainable sequence under {a.budget} per rank'",
            "set xlabel 'ranks N'", "set ylabel 'sequence length L'", "set logscale xy 2",
            "set key top left", "set grid"]
    series = [f"'{dat}' using 1:{i + 2} with linespoints title '{s}'" for i, s in enumerate(ALL)]
    plot.append("plot " + ", ".join(series))
    r = subprocess.run(["gnuplot"], input="\n".join(plot), text=True, capture_output=True)
    print(f"\nplot: {png}" if r.returncode == 0 else f"\ngnuplot failed: {r.stderr}")


def time_mode(a):
    print("Step time, per-rank arena peak and bytes sent per rank per step "
          "(GPT 2x256, H=8, B=1, 1 thread/rank, median of steps 2-3)\n")
    print("| strategy | N | L | step ms | peak MiB | acts MiB | scratch MiB | comm MiB | sp bytes/step MiB | tp bytes/step MiB |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for L in map(int, a.lens.split(",")):
        for n in map(int, a.ranks.split(",")):
            for s in (["local"] if n == 1 else []) + ALL:
                if a.strategies and s not in a.strategies.split(","):
                    continue
                with tempfile.TemporaryDirectory() as tmp:
                    args = [a.seqpar, "train"] + parallel_args(s, n) + [
                            "--seq-len", str(L), "--steps", "3", "--threads", "1",
                            "--progress", "none", "--out", tmp, "--data", "passkey"] + MODEL
                    try:
                        r = mpirun(n, args, timeout=a.timeout)
                    except subprocess.TimeoutExpired:
                        print(f"| {s} | {n} | {L} | timeout |")
                        continue
                    if r.returncode != 0:
                        err = r.stderr.strip().splitlines()[-1] if r.stderr else "failed"
                        print(f"| {s} | {n} | {L} | error: {err[:80]} |")
                        continue
                    recs = [json.loads(x) for x in open(os.path.join(tmp, "metrics.jsonl"))]
                    ms = statistics.median(x["step_ms"] for x in recs[1:])
                    pk = recs[-1]["peak_bytes"]
                    mib = lambda b: f"{b / 2**20:.1f}"
                    print(f"| {s} | {n} | {L} | {ms:.0f} | {mib(pk['total'])} | {mib(pk['acts'])} | "
                          f"{mib(pk['scratch'])} | {mib(pk['comm'])} | "
                          f"{mib(recs[-1]['bytes_sent']['sp'])} | {mib(recs[-1]['bytes_sent']['tp'])} |",
                          flush=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("mode", choices=["memory", "time"])
    ap.add_argument("--seqpar", default=os.path.join(HERE, "..", "build", "seqpar"))
    ap.add_argument("--budget", default="1GiB")
    ap.add_argument("--out", default=os.path.join(HERE, "..", "docs", "img"))
    ap.add_argument("--lens", default="2048,4096,8192")
    ap.add_argument("--ranks", default="1,2,4")
    ap.add_argument("--timeout", type=int, default=300)
    ap.add_argument("--strategies", default="", help="comma-separated subset (time mode)")
    a = ap.parse_args()
    memory(a) if a.mode == "memory" else time_mode(a)


if __name__ == "__main__":
    main()
