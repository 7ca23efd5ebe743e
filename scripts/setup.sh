#!/usr/bin/env bash
# Installs what seqpar needs from Debian (idempotent), builds it in ./build, and
# extracts the embedded default corpus (King James Bible from bible-kjv) to data/kjv.txt.
#   bash scripts/setup.sh            # install + build
#   SEQPAR_NO_APT=1 bash scripts/setup.sh   # build only
set -euo pipefail
cd "$(dirname "$0")/.."

pkgs=(build-essential cmake g++ libopenmpi-dev openmpi-bin libopenblas-openmp-dev libgtest-dev
      libgmock-dev libbenchmark-dev libcli11-dev nlohmann-json3-dev bible-kjv procps)
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

if [ ! -s data/kjv.txt ] && command -v bible >/dev/null 2>&1; then
  echo "setup: extracting the King James Bible to data/kjv.txt"
  mkdir -p data
  bible -f Gen1:1-Rev22:21 > data/kjv.txt.tmp && mv data/kjv.txt.tmp data/kjv.txt
fi

cmake --preset release >/dev/null
cmake --build --preset release
