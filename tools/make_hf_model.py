#!/usr/bin/python3
"""Write a Hugging Face model directory with random weights, as users download one, for
tests/cli/hf_import.sh: config.json as Hugging Face's LlamaConfig, MistralConfig or
Qwen2Config spells it, the weights in model.safetensors (or two shards and
model.safetensors.index.json) in F32 or BF16, and a tokenizer copied in.

    python3 tools/make_hf_model.py OUT llama|mistral|qwen2 f32|bf16 TOKENIZER VOCAB [--sharded]

The three kinds cover what the import must map:
  llama    grouped-query attention (4 heads, 2 kv heads), an untied lm_head, rope_theta 500000
  mistral  the same with sliding_window 8
  qwen2    q/k/v projection biases, a tied head (no lm_head.weight in the file, as
           Qwen2-0.5B ships), use_sliding_window false with an unused sliding_window
Weights are N(0, 0.08²) (sharp enough that attention, and so RoPE and the window, shape the
logits), norm weights 1 + N(0, 0.1²), biases N(0, 0.3²): none is a value that would hide a
mapping error (a zero bias, a unit norm). BF16 rounds to nearest even. Deterministic: the
same arguments give the same bytes.
"""
import json
import os
import shutil
import struct
import sys

import torch


def write_safetensors(path, tensors, dtype):
    header, blobs, off = {}, [], 0
    for name, t in tensors.items():
        t = t.contiguous()
        if dtype == "bf16":
            raw = t.to(torch.bfloat16).view(torch.int16).numpy().tobytes()
            tag = "BF16"
        else:
            raw = t.to(torch.float32).numpy().tobytes()
            tag = "F32"
        header[name] = {"dtype": tag, "shape": list(t.shape), "data_offsets": [off, off + len(raw)]}
        blobs.append(raw)
        off += len(raw)
    header["__metadata__"] = {"format": "pt"}
    h = json.dumps(header).encode()
    h += b" " * (-len(h) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + b"".join(blobs))


def main():
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    if len(args) != 5:
        sys.exit(__doc__)
    out, kind, dtype, tokenizer, vocab = args[0], args[1], args[2], args[3], int(args[4])
    sharded = "--sharded" in sys.argv
    assert kind in ("llama", "mistral", "qwen2") and dtype in ("f32", "bf16"), (kind, dtype)
    C, H, Hkv, F, layers = 64, 4, 2, 160, 2
    d = C // H
    g = torch.Generator().manual_seed({"llama": 1, "mistral": 2, "qwen2": 3}[kind])
    rnd = lambda *shape, sd=0.08: torch.randn(*shape, generator=g, dtype=torch.float64) * sd
    W = {"model.embed_tokens.weight": rnd(vocab, C, sd=0.5)}
    for l in range(layers):
        p = f"model.layers.{l}."
        W[p + "input_layernorm.weight"] = 1 + rnd(C, sd=0.1)
        W[p + "self_attn.q_proj.weight"] = rnd(H * d, C, sd=0.3)
        W[p + "self_attn.k_proj.weight"] = rnd(Hkv * d, C, sd=0.3)
        W[p + "self_attn.v_proj.weight"] = rnd(Hkv * d, C)
        if kind == "qwen2":
            W[p + "self_attn.q_proj.bias"] = rnd(H * d, sd=0.3)
            W[p + "self_attn.k_proj.bias"] = rnd(Hkv * d, sd=0.3)
            W[p + "self_attn.v_proj.bias"] = rnd(Hkv * d, sd=0.3)
        W[p + "self_attn.o_proj.weight"] = rnd(C, H * d)
        W[p + "post_attention_layernorm.weight"] = 1 + rnd(C, sd=0.1)
        W[p + "mlp.gate_proj.weight"] = rnd(F, C)
        W[p + "mlp.up_proj.weight"] = rnd(F, C)
        W[p + "mlp.down_proj.weight"] = rnd(C, F)
    W["model.norm.weight"] = 1 + rnd(C, sd=0.1)
    tied = kind == "qwen2"
    if not tied:
        W["lm_head.weight"] = rnd(vocab, C)

    c = {
        "architectures": [{"llama": "LlamaForCausalLM", "mistral": "MistralForCausalLM",
                           "qwen2": "Qwen2ForCausalLM"}[kind]],
        "model_type": kind,
        "hidden_size": C,
        "intermediate_size": F,
        "num_hidden_layers": layers,
        "num_attention_heads": H,
        "num_key_value_heads": Hkv,
        "hidden_act": "silu",
        "rms_norm_eps": 1e-6,
        "rope_theta": 500000.0 if kind == "llama" else 10000.0,
        "vocab_size": vocab,
        "tie_word_embeddings": tied,
        "max_position_embeddings": 2048,
        "initializer_range": 0.02,
        "attention_dropout": 0.0,
        "bos_token_id": 1,
        "eos_token_id": 2,
        "use_cache": True,
        "torch_dtype": "bfloat16" if dtype == "bf16" else "float32",
        "transformers_version": "4.46.0",
    }
    if kind == "llama":
        c.update({"attention_bias": False, "mlp_bias": False, "pretraining_tp": 1, "head_dim": d})
    if kind == "mistral":
        c["sliding_window"] = 8
    if kind == "qwen2":
        c.update({"use_sliding_window": False, "sliding_window": 4096, "max_window_layers": 21})

    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "config.json"), "w") as f:
        json.dump(c, f, indent=2)
    name = "tokenizer.json" if tokenizer.endswith(".json") else "tokenizer.model"
    shutil.copy(tokenizer, os.path.join(out, name))
    if not sharded:
        write_safetensors(os.path.join(out, "model.safetensors"), W, dtype)
        return
    names = list(W)
    parts = [names[: len(names) // 2], names[len(names) // 2:]]
    index = {"metadata": {"total_size": 0}, "weight_map": {}}
    for i, part in enumerate(parts):
        fn = f"model-{i + 1:05d}-of-{len(parts):05d}.safetensors"
        write_safetensors(os.path.join(out, fn), {n: W[n] for n in part}, dtype)
        for n in part:
            index["weight_map"][n] = fn
    with open(os.path.join(out, "model.safetensors.index.json"), "w") as f:
        json.dump(index, f, indent=2)


if __name__ == "__main__":
    main()
