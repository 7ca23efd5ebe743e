#!/usr/bin/env python3
"""Prefill tokens/s and decode ms/token of `seqpar generate`, one rank vs sequence-parallel.

Trains nothing: `seqpar train --steps 0` saves the initial weights of the GPT of the
strategy table (2 layers, C = 256, H = 8, F = 1024; speed does not depend on the values),
then for each prompt length (bytes of the KJV text) and each N runs
`mpiexec -n N seqpar generate --sp N --sp-strategy ring --layout zigzag --temperature 0`
and reads the JSON line the command prints on stderr.

Usage: /usr/bin/python3 bench/generate_bench.py [--seqpar build/seqpar] [--lengths 4096,16384]
                                                [--ns 1,2,4] [--new 32]
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile

ENV = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1",
           OMP_NUM_THREADS="1")
MODEL = ["--layers", "2", "--dim", "256", "--heads", "8", "--ffn", "1024"]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seqpar", default="build/seqpar")
    ap.add_argument("--lengths", default="4096,16384,65536")
    ap.add_argument("--ns", default="1,2,4")
    ap.add_argument("--new", type=int, default=32)
    ap.add_argument("--strategy", default="ring")
    a = ap.parse_args()
    tmp = tempfile.mkdtemp()
    run = os.path.join(tmp, "run")
    subprocess.run([a.seqpar, "train", "--steps", "0", "--out", run, "--progress", "none"] + MODEL,
                   check=True, capture_output=True, env=ENV)
    text = open("data/kjv.txt", "rb").read()
    print("| prompt tokens | N | prefill s | prefill tokens/s | decode ms/token | arena peak MiB/rank |")
    print("|---|---|---|---|---|---|")
    for L in [int(x) for x in a.lengths.split(",")]:
        prompt = os.path.join(tmp, f"p{L}.txt")
        with open(prompt, "wb") as f:
            f.write(text[:L])
        for n in [int(x) for x in a.ns.split(",")]:
            cmd = ["mpiexec", "-n", str(n), "--oversubscribe", "--bind-to", "none", a.seqpar,
                   "generate", "--run", run, "--prompt-file", prompt, "--max-new-tokens",
                   str(a.new), "--temperature", "0", "--threads", "1", "--sp", str(n),
                   "--sp-strategy", a.strategy if n > 1 else "local", "--layout", "zigzag"]
            r = subprocess.run(cmd, capture_output=True, env=ENV, timeout=3600)
            err = r.stderr.decode("utf-8", "replace")  # untrained weights emit any bytes
            line = [l for l in err.splitlines() if l.startswith("seqpar generate: ")]
            if r.returncode != 0 or not line:
                print(f"L={L} N={n}: failed: {err.strip()[-300:]}", file=sys.stderr)
                continue
            j = json.loads(line[-1][len("seqpar generate: "):])
            print(f"| {L} | {n} | {j['prefill_s']:.2f} | {j['prefill_tokens_per_s']:.0f} | "
                  f"{j['decode_ms_per_token']:.2f} | {j['arena_peak_bytes'] / 2**20:.1f} |", flush=True)


if __name__ == "__main__":
    main()
