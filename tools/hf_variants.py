#!/usr/bin/env python3
"""Rewrites a Hugging Face model directory's F32 model.safetensors (as seqpar export writes
it) in another form, for tests/cli/hf_import.sh:

    python3 tools/hf_variants.py SRC DST bf16|f16|sharded

bf16 rounds each weight to nearest-even, f16 converts with numpy; sharded splits the F32
tensors over two files listed by model.safetensors.index.json. config.json and
tokenizer.model are copied unchanged.
"""
import json
import os
import shutil
import struct
import sys

import numpy as np


def load(path):
    b = open(path, "rb").read()
    n = struct.unpack("<Q", b[:8])[0]
    h = json.loads(b[8:8 + n])
    h.pop("__metadata__", None)
    out = {}
    for k, v in h.items():
        a, e = v["data_offsets"]
        out[k] = np.frombuffer(b[8 + n + a:8 + n + e], dtype=np.float32).reshape(v["shape"])
    return out


def save(path, tensors):
    header, blobs, off = {}, [], 0
    for k, (dtype, arr) in tensors.items():
        raw = arr.tobytes()
        header[k] = {"dtype": dtype, "shape": list(arr.shape), "data_offsets": [off, off + len(raw)]}
        blobs.append(raw)
        off += len(raw)
    h = json.dumps(header).encode()
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + b"".join(blobs))


def main():
    src, dst, form = sys.argv[1:4]
    os.makedirs(dst, exist_ok=True)
    for f in ("config.json", "tokenizer.model"):
        if os.path.exists(os.path.join(src, f)):
            shutil.copy(os.path.join(src, f), dst)
    t = load(os.path.join(src, "model.safetensors"))
    if form == "bf16":
        out = {}
        for k, a in t.items():
            u = a.view(np.uint32).astype(np.uint64)
            r = ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype(np.uint16)
            out[k] = ("BF16", r)
        save(os.path.join(dst, "model.safetensors"), out)
    elif form == "f16":
        save(os.path.join(dst, "model.safetensors"), {k: ("F16", a.astype(np.float16)) for k, a in t.items()})
    elif form == "sharded":
        names = list(t)
        half = len(names) // 2
        parts = {"model-00001-of-00002.safetensors": names[:half], "model-00002-of-00002.safetensors": names[half:]}
        wmap = {}
        for f, ks in parts.items():
            save(os.path.join(dst, f), {k: ("F32", t[k]) for k in ks})
            wmap.update({k: f for k in ks})
        json.dump({"metadata": {}, "weight_map": wmap}, open(os.path.join(dst, "model.safetensors.index.json"), "w"))
    else:
        sys.exit("form must be bf16, f16 or sharded")


if __name__ == "__main__":
    main()
