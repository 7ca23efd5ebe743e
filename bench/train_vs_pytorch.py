#!/usr/bin/python3
"""Training throughput and peak memory: seqpar vs the same model in PyTorch, one run.

The model: GPT, 2 layers, C=256, H=4 (d=64), F=1024, byte vocabulary, RoPE, tied head.
PyTorch 1.13 (Debian's python3-torch, CPU, fp32) runs the textbook attention
(matmul + softmax + matmul, an L×L matrix per head), which is what that version offers
on the CPU. Both get the same thread count and train with AdamW for a few steps; the
figure is the median tokens/s of the steps after the first two (warm-up), and the peak
resident memory of the process (ru_maxrss). seqpar also reports its arena peak.

Usage: /usr/bin/python3 bench/train_vs_pytorch.py [--seqpar build/seqpar] [--threads 2]
                                                  [--lens 1024,4096] [--steps 6] [--arch llama]
--arch llama: 2 layers, C=256, H=4, Hkv=2, SwiGLU F=704, V=8192, untied head (PyTorch:
RMSNorm, SwiGLU and the same attention, cross-entropy over the full logits).
"""
import argparse
import json
import math
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time


LLAMA_TORCH = """
class RMSNorm(torch.nn.Module):
    def __init__(s):
        super().__init__(); s.w = torch.nn.Parameter(torch.ones(C))
    def forward(s, x):
        return x * torch.rsqrt((x * x).mean(-1, keepdim=True) + 1e-5) * s.w
class Block(torch.nn.Module):
    def __init__(s):
        super().__init__()
        s.n1, s.n2 = RMSNorm(), RMSNorm()
        s.qkv = torch.nn.Linear(C, (H + 2 * HKV) * d, bias=False)
        s.proj = torch.nn.Linear(C, C, bias=False)
        s.gu = torch.nn.Linear(C, 2 * F, bias=False)
        s.down = torch.nn.Linear(F, C, bias=False)
    def forward(s, x, cos, sin, mask):
        q, k, v = s.qkv(s.n1(x)).split([H * d, HKV * d, HKV * d], -1)
        q, k, v = q.view(B, L, H, d), k.view(B, L, HKV, d), v.view(B, L, HKV, d)
        def rope(t):
            t0, t1 = t[..., 0::2], t[..., 1::2]
            return torch.stack((t0 * cos - t1 * sin, t0 * sin + t1 * cos), -1).flatten(-2)
        q, k = rope(q), rope(k)
        k, v = k.repeat_interleave(H // HKV, 2), v.repeat_interleave(H // HKV, 2)
        q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
        att = (q @ k.transpose(-1, -2)) / math.sqrt(d)
        att = att.masked_fill(mask, float('-inf')).softmax(-1)
        x = x + s.proj((att @ v).transpose(1, 2).reshape(B, L, C))
        g, u = s.gu(s.n2(x)).chunk(2, -1)
        return x + s.down(torch.nn.functional.silu(g) * u)
class GPT(torch.nn.Module):
    def __init__(s):
        super().__init__()
        s.wte = torch.nn.Embedding(V, C)
        s.blocks = torch.nn.ModuleList([Block() for _ in range(NL)])
        s.lnf = RMSNorm()
        s.head = torch.nn.Linear(C, V, bias=False)
    def forward(s, idx, tgt, cos, sin, mask):
        x = s.wte(idx)
        for b in s.blocks: x = b(x, cos, sin, mask)
        logits = s.head(s.lnf(x))
        return torch.nn.functional.cross_entropy(logits.view(-1, V), tgt.view(-1))
"""


def torch_run(L, B, steps, threads, arch="gpt"):
    # Runs in a child process so its peak RSS is its own.
    if arch == "llama":
        head = f"L, B, C, H, HKV, F, V, NL = {L}, {B}, 256, 4, 2, 704, 8192, 2\nd = C // H\n"
        code = (f"import math, resource, statistics, time, json, torch\n"
                f"torch.set_num_threads({threads}); torch.manual_seed(0)\n" + head + LLAMA_TORCH +
                TORCH_LOOP.format(steps=steps))
        return torch_measure(code)
    code = f"""
import math, resource, statistics, time, json, torch
torch.set_num_threads({threads}); torch.manual_seed(0)
L, B, C, H, F, V, NL = {L}, {B}, 256, 4, 1024, 256, 2
d = C // H
class Block(torch.nn.Module):
    def __init__(s):
        super().__init__()
        s.ln1, s.ln2 = torch.nn.LayerNorm(C), torch.nn.LayerNorm(C)
        s.qkv, s.proj = torch.nn.Linear(C, 3 * C), torch.nn.Linear(C, C)
        s.fc1, s.fc2 = torch.nn.Linear(C, F), torch.nn.Linear(F, C)
    def forward(s, x, cos, sin, mask):
        q, k, v = s.qkv(s.ln1(x)).view(B, L, 3, H, d).unbind(2)
        def rope(t):
            t0, t1 = t[..., 0::2], t[..., 1::2]
            return torch.stack((t0 * cos - t1 * sin, t0 * sin + t1 * cos), -1).flatten(-2)
        q, k, v = rope(q).transpose(1, 2), rope(k).transpose(1, 2), v.transpose(1, 2)
        att = (q @ k.transpose(-1, -2)) / math.sqrt(d)
        att = att.masked_fill(mask, float('-inf')).softmax(-1)
        x = x + s.proj((att @ v).transpose(1, 2).reshape(B, L, C))
        return x + s.fc2(torch.nn.functional.gelu(s.fc1(s.ln2(x)), approximate='tanh'))
class GPT(torch.nn.Module):
    def __init__(s):
        super().__init__()
        s.wte = torch.nn.Embedding(V, C)
        s.blocks = torch.nn.ModuleList([Block() for _ in range(NL)])
        s.lnf = torch.nn.LayerNorm(C)
    def forward(s, idx, tgt, cos, sin, mask):
        x = s.wte(idx)
        for b in s.blocks: x = b(x, cos, sin, mask)
        logits = s.lnf(x) @ s.wte.weight.T
        return torch.nn.functional.cross_entropy(logits.view(-1, V), tgt.view(-1))
""" + TORCH_LOOP.format(steps=steps)
    return torch_measure(code)


TORCH_LOOP = """
m = GPT()
opt = torch.optim.AdamW(m.parameters(), lr=1e-3)
pos = torch.arange(L, dtype=torch.float32)
ang = pos[:, None] * (10000.0 ** (-torch.arange(0, d, 2, dtype=torch.float32) / d))[None]
cos, sin = ang.cos()[None, :, None, :], ang.sin()[None, :, None, :]
mask = torch.ones(L, L, dtype=torch.bool).triu(1)
times = []
for s in range({steps}):
    idx = torch.randint(0, V, (B, L)); tgt = torch.randint(0, V, (B, L))
    t0 = time.perf_counter()
    opt.zero_grad(); loss = m(idx, tgt, cos, sin, mask); loss.backward(); opt.step()
    times.append(time.perf_counter() - t0)
print(json.dumps({{"tok_s": B * L / statistics.median(times[2:]),
                  "rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}}))
"""


def torch_measure(code):
    rc, stdout, stderr, rss = run_measured(["/usr/bin/python3", "-c", code])
    if rc != 0:
        return {"error": stderr.strip().splitlines()[-1] if stderr else "failed"}
    r = json.loads(stdout.strip().splitlines()[-1])
    r["rss"] = rss
    return r


def run_measured(cmd):
    """Runs cmd; returns (exit code, stdout, stderr, peak RSS bytes of that child alone)."""
    with tempfile.TemporaryFile("w+") as o, tempfile.TemporaryFile("w+") as e:
        p = subprocess.Popen(cmd, stdout=o, stderr=e, text=True)
        _, status, ru = os.wait4(p.pid, 0)
        p.returncode = os.waitstatus_to_exitcode(status)
        o.seek(0)
        e.seek(0)
        return p.returncode, o.read(), e.read(), ru.ru_maxrss * 1024


def seqpar_run(binary, L, B, steps, threads, arch="gpt"):
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [binary, "train", "--seq-len", str(L), "--batch", str(B), "--steps", str(steps),
               "--dim", "256", "--heads", "4", "--layers", "2", "--threads", str(threads),
               "--progress", "none", "--out", tmp, "--data", "passkey"]
        if arch == "llama":  # the passkey bytes are ids < 256 of an 8192-id vocabulary
            cmd += ["--arch", "llama", "--kv-heads", "2", "--ffn", "704", "--vocab", "8192"]
        rc, _, stderr, rss = run_measured(cmd)
        if rc != 0:
            return {"error": stderr.strip()}
        rows = [json.loads(l) for l in open(os.path.join(tmp, "metrics.jsonl"))]
        return {"tok_s": statistics.median(r["tokens_per_s"] for r in rows[2:]),
                "rss": rss, "arena": rows[-1]["peak_bytes"]["total"]}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    here = os.path.dirname(os.path.abspath(__file__))
    ap.add_argument("--seqpar", default=os.path.join(here, "..", "build", "seqpar"))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--lens", default="1024,4096")
    ap.add_argument("--tokens", type=int, default=4096, help="tokens per step (B = tokens / L)")
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--arch", default="gpt", choices=["gpt", "llama"])
    a = ap.parse_args()
    mib = lambda b: f"{b / 2**20:.0f}"
    model = ("GPT 2 layers, C=256, H=4, F=1024, V=256" if a.arch == "gpt" else
             "LLaMA 2 layers, C=256, H=4, Hkv=2, SwiGLU F=704, V=8192, untied head")
    print(f"{model}; {a.threads} threads; {a.tokens} tokens/step; median of steps 3..{a.steps}")
    print("| L | B | seqpar tok/s | PyTorch tok/s | speed-up | seqpar RSS MiB | seqpar arena MiB | PyTorch RSS MiB |")
    print("|---|---|---|---|---|---|---|---|")
    for L in map(int, a.lens.split(",")):
        B = max(1, a.tokens // L)
        s = seqpar_run(a.seqpar, L, B, a.steps, a.threads, a.arch)
        t = torch_run(L, B, a.steps, a.threads, a.arch)
        if "error" in s or "error" in t:
            print(f"| {L} | {B} | {s.get('error', '')} | {t.get('error', '')} |")
            continue
        print(f"| {L} | {B} | {s['tok_s']:.0f} | {t['tok_s']:.0f} | {s['tok_s'] / t['tok_s']:.2f}x | "
              f"{mib(s['rss'])} | {mib(s['arena'])} | {mib(t['rss'])} |", flush=True)


if __name__ == "__main__":
    main()
