#!/usr/bin/python3
"""Load a Hugging Face LLaMA directory written by `seqpar export` with PyTorch alone, and
check that it reproduces seqpar's logits.

The model here is Hugging Face's LlamaForCausalLM written out from its config.json:
RMSNorm, grouped-query attention with rotate-half rotary embeddings (inv_freq =
θ^(−2i/d), cos/sin repeated over the two halves), SwiGLU, and the head lm_head.weight.
It reads nothing but the directory's config.json, model.safetensors and
seqpar_reference.safetensors (tokens and the logits seqpar computed for them), runs the
forward pass in float64 and compares.

Usage:  /usr/bin/python3 tools/check_hf_export.py HF_DIR      (exit 0: the logits agree)
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
        assert info["dtype"] == "F32", (name, info["dtype"])
        b, e = info["data_offsets"]
        out[name] = torch.frombuffer(bytearray(data[b:e]), dtype=torch.float32).reshape(info["shape"]).to(DT)
    return out


def rotate_half(x):
    h = x.shape[-1] // 2
    return torch.cat((-x[..., h:], x[..., :h]), dim=-1)


def llama_logits(c, W, tokens):
    T = tokens.shape[0]
    C, H, Hkv = c["hidden_size"], c["num_attention_heads"], c["num_key_value_heads"]
    d = c.get("head_dim", C // H)
    eps = c["rms_norm_eps"]
    rms = lambda x, w: x * torch.rsqrt((x * x).mean(-1, keepdim=True) + eps) * w
    inv = 1.0 / (c["rope_theta"] ** (torch.arange(0, d, 2, dtype=DT) / d))
    ang = torch.arange(T, dtype=DT)[:, None] * inv[None, :]
    emb = torch.cat((ang, ang), dim=-1)
    cos, sin = emb.cos()[:, None, :], emb.sin()[:, None, :]
    x = W["model.embed_tokens.weight"][tokens]
    mask = torch.triu(torch.ones(T, T, dtype=torch.bool), 1)
    w = c.get("sliding_window") or 0  # Mistral: key j visible to query i when i - w < j <= i
    if w > 0:
        i, j = torch.arange(T)[:, None], torch.arange(T)[None, :]
        mask = mask | (i - j >= w)
    for l in range(c["num_hidden_layers"]):
        p = f"model.layers.{l}."
        h = rms(x, W[p + "input_layernorm.weight"])
        q = (h @ W[p + "self_attn.q_proj.weight"].T).view(T, H, d)
        k = (h @ W[p + "self_attn.k_proj.weight"].T).view(T, Hkv, d)
        v = (h @ W[p + "self_attn.v_proj.weight"].T).view(T, Hkv, d)
        q, k = q * cos + rotate_half(q) * sin, k * cos + rotate_half(k) * sin
        k, v = k.repeat_interleave(H // Hkv, dim=1), v.repeat_interleave(H // Hkv, dim=1)
        s = torch.einsum("ihd,jhd->hij", q, k) / math.sqrt(d)
        a = torch.einsum("hij,jhd->ihd", s.masked_fill(mask, float("-inf")).softmax(-1), v)
        x = x + a.reshape(T, H * d) @ W[p + "self_attn.o_proj.weight"].T
        h = rms(x, W[p + "post_attention_layernorm.weight"])
        g = torch.nn.functional.silu(h @ W[p + "mlp.gate_proj.weight"].T)
        x = x + (g * (h @ W[p + "mlp.up_proj.weight"].T)) @ W[p + "mlp.down_proj.weight"].T
    return rms(x, W["model.norm.weight"]) @ W["lm_head.weight"].T


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    d = sys.argv[1]
    with open(os.path.join(d, "config.json")) as f:
        c = json.load(f)
    W = read_safetensors(os.path.join(d, "model.safetensors"))
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
