#!/usr/bin/env python3
"""Longest sequence under a per-rank budget with ZeRO and bf16 (issue 10).

For each model (the GPT of the strategy table in docs/results.md, and a BERT-large-shaped
model), each budget, each N in 1 2 4 8, precision fp32|bf16 and ZeRO 0|3, runs
`mpiexec -n N seqpar plan --sp N --sp-strategy ring` (the dry-run arena: the exact
allocation sequence of a training step) and prints one markdown table per model and
budget, plus the per-category peak of the longest plan as JSON lines on stderr.

Usage: /usr/bin/python3 bench/scale_bench.py [--seqpar build/seqpar] [--budgets 1GiB,4GiB]
                                             [--models gpt,bert-large] [--ns 1,2,4,8]
A configuration that does not fit at any L (BERT-large at 16 bytes per parameter in a
4 GiB budget) shows as "-".
"""
import argparse
import json
import os
import subprocess
import sys

ENV = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1",
           OMP_NUM_THREADS="1")
MODELS = {
    # The model of "longest sequence under 1 GiB per rank" in docs/results.md.
    "gpt": ["--arch", "gpt", "--layers", "2", "--dim", "256", "--heads", "8", "--ffn", "1024",
            "--data", "passkey"],
    # BERT-large's shape: 24 layers, C = 1024, 16 heads, F = 4096, WordPiece-sized vocabulary
    # (335M parameters: 5.4 GB of fp32 weights, gradients and AdamW moments without ZeRO).
    "bert-large": ["--arch", "bert", "--layers", "24", "--dim", "1024", "--heads", "16",
                   "--ffn", "4096", "--vocab", "30522", "--data", "passkey"],
}


def plan(a, model, n, budget, precision, zero):
    layout = "zigzag" if model == "gpt" else "contiguous"
    args = [a.seqpar, "plan", "--sp", str(n), "--sp-strategy", "ring" if n > 1 else "local",
            "--layout", layout, "--batch", "1", "--budget", budget, "--precision", precision,
            "--zero", str(zero)] + MODELS[model]
    cmd = ["mpiexec", "-n", str(n), "--oversubscribe", "--bind-to", "none"] + args
    r = subprocess.run(cmd, capture_output=True, text=True, env=ENV, timeout=900)
    if r.returncode != 0:
        last = (r.stderr.strip().splitlines() or ["failed"])[-1]
        print(f"{model} N={n} {budget} {precision} zero{zero}: {last}", file=sys.stderr)
        return None
    j = json.loads(r.stdout.strip().splitlines()[-1])
    print(json.dumps({"model": model, "n": n, "budget": budget, "precision": precision,
                      "zero": zero, "L": j["longest_seq_len"],
                      "peak_by_category": j["peak_by_category"]}), file=sys.stderr, flush=True)
    return j["longest_seq_len"]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seqpar", default="build/seqpar")
    ap.add_argument("--budgets", default="1GiB,4GiB")
    ap.add_argument("--models", default="gpt,bert-large")
    ap.add_argument("--ns", default="1,2,4,8")
    a = ap.parse_args()
    ns = [int(x) for x in a.ns.split(",")]
    combos = [("fp32", 0), ("bf16", 0), ("fp32", 3), ("bf16", 3)]
    for model in a.models.split(","):
        for budget in a.budgets.split(","):
            print(f"\n{model}, arena budget {budget} per rank, B = 1, ring (N > 1)\n")
            print("| precision | zero | " + " | ".join(f"N={n}" for n in ns) + " |")
            print("|---|---|" + "---|" * len(ns))
            for precision, zero in combos:
                cells = []
                for n in ns:
                    L = plan(a, model, n, budget, precision, zero)
                    cells.append("-" if not L else str(L))
                print(f"| {precision} | {zero} | " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
