#!/usr/bin/python3
"""Load a Hugging Face LLaMA directory written by `seqpar export` with PyTorch alone, and
check that it reproduces seqpar's logits.

The model here is Hugging Face's LlamaForCausalLM written out from its config.json:
RMSNorm, grouped-query attention with rotate-half rotary embeddings (inv_freq =
θ^(−2i/d), cos/sin repeated over the two halves), SwiGLU, and the head lm_head.weight.
It reads nothing but the directory's config.json, model.safetensors and
seqpar_reference.safetensors (tokens and the logits seqpar computed for them), runs the
forward pass in float64 and compares.

Usage:  /usr/bin/python3 tools/check_hf_export.py HF_DIR [SOURCE_DIR]   (exit 0: they agree)

With SOURCE_DIR (a Hugging Face directory seqpar imported, then exported as HF_DIR), the
config and weights are SOURCE_DIR's, as they were before the import (F32 or BF16, one
file or shards), and only the reference logits are HF_DIR's: seqpar's logits of the
imported model against Hugging Face's definition on the original weights.
"""
import json
import math
import os
import struct
import sys

import torch

DT = torch.float64


def read_safetensors(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        data = f.read()
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        b, e = info["data_offsets"]
        dt = {"F32": torch.float32, "BF16": torch.bfloat16, "F16": torch.float16}[info["dtype"]]
        out[name] = torch.frombuffer(bytearray(data[b:e]), dtype=dt).reshape(info["shape"]).to(DT)
    return out


def read_weights(d):
    """model.safetensors, or the shards model.safetensors.index.json lists."""
    index = os.path.join(d, "model.safetensors.index.json")
    if not os.path.exists(index):
        return read_safetensors(os.path.join(d, "model.safetensors"))
    with open(index) as f:
        files = sorted(set(json.load(f)["weight_map"].values()))
    W = {}
    for fn in files:
        W.update(read_safetensors(os.path.join(d, fn)))
    return W


def rotate_half(x):
    h = x.shape[-1] // 2
    return torch.cat((-x[..., h:], x[..., :h]), dim=-1)


def rope_inv_freq(c, d, T):
    """Hugging Face's rope_scaling (modeling_rope_utils): the inverse frequencies of the d/2
    rotated pairs and the attention factor on cos and sin, for a window of T tokens."""
    theta = c["rope_theta"]
    i2 = torch.arange(0, d, 2, dtype=DT) / d
    inv = 1.0 / (theta ** i2)
    r = c.get("rope_scaling")
    if not r:
        return inv, 1.0
    t, s = r["rope_type"], r["factor"]
    if t == "linear":
        return inv / s, 1.0
    if t == "dynamic":
        L0 = c["max_position_embeddings"]
        L = max(T, L0)
        base = theta * ((s * L / L0) - (s - 1)) ** (d / (d - 2))
        return 1.0 / (base ** i2), 1.0
    L0 = r["original_max_position_embeddings"]
    if t == "yarn":
        def corr(rot):
            return (d * math.log(L0 / (rot * 2 * math.pi))) / (2 * math.log(theta))
        lo = max(math.floor(corr(r.get("beta_fast", 32))), 0)
        hi = min(math.ceil(corr(r.get("beta_slow", 1))), d - 1)
        if lo == hi:
            hi += 0.001
        ramp = ((torch.arange(d // 2, dtype=DT) - lo) / (hi - lo)).clamp(0, 1)
        inv = (inv / s) * ramp + inv * (1 - ramp)
        m = r.get("attention_factor") or (0.1 * math.log(s) + 1.0 if s > 1 else 1.0)
        return inv, m
    if t == "llama3":
        lo, hi = r["low_freq_factor"], r["high_freq_factor"]
        wl = 2 * math.pi / inv
        out = torch.where(wl > L0 / lo, inv / s, inv)
        sm = (L0 / wl - lo) / (hi - lo)
        mid = (wl >= L0 / hi) & (wl <= L0 / lo)
        return torch.where(mid, (1 - sm) * inv / s + sm * inv, out), 1.0
    raise SystemExit(f"unknown rope_type {t}")


def llama_logits(c, W, tokens):
    T = tokens.shape[0]
    C, H, Hkv = c["hidden_size"], c["num_attention_heads"], c["num_key_value_heads"]
    d = c.get("head_dim", C // H)
    eps = c["rms_norm_eps"]
    rms = lambda x, w: x * torch.rsqrt((x * x).mean(-1, keepdim=True) + eps) * w
    inv, m = rope_inv_freq(c, d, T)
    ang = torch.arange(T, dtype=DT)[:, None] * inv[None, :]
    emb = torch.cat((ang, ang), dim=-1)
    cos, sin = m * emb.cos()[:, None, :], m * emb.sin()[:, None, :]
    x = W["model.embed_tokens.weight"][tokens]
    mask = torch.triu(torch.ones(T, T, dtype=torch.bool), 1)
    # Mistral: key j visible to query i when i - w < j <= i; Qwen2 the same, only with
    # use_sliding_window (and then on layers from max_window_layers on: 0 here).
    w = c.get("sliding_window") or 0
    if c.get("model_type") == "qwen2":
        assert c.get("max_window_layers", 0) == 0 or not c.get("use_sliding_window"), c
        w = w if c.get("use_sliding_window") else 0
    if w > 0:
        i, j = torch.arange(T)[:, None], torch.arange(T)[None, :]
        mask = mask | (i - j >= w)
    for l in range(c["num_hidden_layers"]):
        p = f"model.layers.{l}."
        h = rms(x, W[p + "input_layernorm.weight"])
        def proj(n, heads):  # Qwen2 has q/k/v biases
            y = h @ W[p + f"self_attn.{n}_proj.weight"].T
            if p + f"self_attn.{n}_proj.bias" in W:
                y = y + W[p + f"self_attn.{n}_proj.bias"]
            return y.view(T, heads, d)
        q, k, v = proj("q", H), proj("k", Hkv), proj("v", Hkv)
        q, k = q * cos + rotate_half(q) * sin, k * cos + rotate_half(k) * sin
        k, v = k.repeat_interleave(H // Hkv, dim=1), v.repeat_interleave(H // Hkv, dim=1)
        s = torch.einsum("ihd,jhd->hij", q, k) / math.sqrt(d)
        a = torch.einsum("hij,jhd->ihd", s.masked_fill(mask, float("-inf")).softmax(-1), v)
        x = x + a.reshape(T, H * d) @ W[p + "self_attn.o_proj.weight"].T
        h = rms(x, W[p + "post_attention_layernorm.weight"])
        g = torch.nn.functional.silu(h @ W[p + "mlp.gate_proj.weight"].T)
        x = x + (g * (h @ W[p + "mlp.up_proj.weight"].T)) @ W[p + "mlp.down_proj.weight"].T
    head = W.get("lm_head.weight", W["model.embed_tokens.weight"])  # absent when tied
    return rms(x, W["model.norm.weight"]) @ head.T


def main():
    if len(sys.argv) not in (2, 3):
        sys.exit(__doc__)
    d = sys.argv[1]
    src = sys.argv[2] if len(sys.argv) == 3 else d
    with open(os.path.join(src, "config.json")) as f:
        c = json.load(f)
    W = read_weights(src)
    ref = read_safetensors(os.path.join(d, "seqpar_reference.safetensors"))
    tokens = ref["tokens"][0].long()
    got = llama_logits(c, W, tokens)
    err = ((got - ref["logits"]).abs().max() / ref["logits"].abs().max()).item()
    # seqpar computes in fp32 (~1e-7 relative per op, through a few dozen sums): 1e-4 is
    # rounding; a wrong RoPE pairing, a transposed weight or a missing norm give O(1).
    ok = err < 1e-4
    print(f"{'ok' if ok else 'MISMATCH'}: PyTorch logits vs seqpar's, max relative error {err:.2e} "
          f"({tokens.numel()} tokens, vocab {c['vocab_size']})")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
