#!/usr/bin/env python3
"""Edits a seqpar checkpoint manifest and recomputes its own hash, as a careless tool or an
attacker would, so that tests reach the checks behind the hash (the option tables' value
checks, the step against the directory's name).

    python3 tools/edit_manifest.py STEP_DIR/manifest.json "m['model']['heads'] = 0"

The second argument is Python run with the parsed manifest as `m`. The hash is FNV-1a 64 of
the manifest as seqpar writes it (sorted keys, two-space indent, a final newline) without
its "manifest_fnv1a64" key (docs/checkpoints.md).
"""
import json
import sys


def fnv1a64(data: bytes) -> int:
    h = 0xCBF29CE484222325
    for b in data:
        h = ((h ^ b) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return h


def dump(m) -> str:
    return json.dumps(m, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def main() -> None:
    path, code = sys.argv[1], sys.argv[2]
    with open(path, encoding="utf-8") as f:
        m = json.load(f)
    exec(code, {"m": m})
    m.pop("manifest_fnv1a64", None)
    m["manifest_fnv1a64"] = "%016x" % fnv1a64(dump(m).encode("utf-8"))
    with open(path, "w", encoding="utf-8") as f:
        f.write(dump(m))


if __name__ == "__main__":
    main()
