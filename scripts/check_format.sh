#!/usr/bin/env bash
# Checks that every C++ file under src/ tests/ bench/ is formatted as .clang-format says
# (clang-format 14, Debian's `clang-format`; another version may format differently).
# Lists the files that are not, and the command that formats them; exits 1 if any.
#   bash scripts/check_format.sh
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v clang-format > /dev/null; then
  echo "check_format: clang-format is not installed (apt-get install clang-format; scripts/setup.sh)" >&2
  exit 2
fi

# In a git checkout, tracked and untracked-but-not-ignored files (what a commit would hold);
# elsewhere (an exported tree), every file.
if git rev-parse --is-inside-work-tree > /dev/null 2>&1; then
  list=(git ls-files --cached --others --exclude-standard -- src tests bench)
else
  list=(find src tests bench -type f)
fi
mapfile -t files < <("${list[@]}" | grep -E '\.(cpp|hpp|h|cc|cxx|hh)$' | sort -u)
# One clang-format per file (its exit status names the file), several at a time.
# shellcheck disable=SC2016  # the inner script's $f is the inner shell's
mapfile -t bad < <(printf '%s\0' "${files[@]}" | xargs -0 -r -n 8 -P "$(nproc)" sh -c '
  for f; do [ ! -f "$f" ] || clang-format --dry-run -Werror "$f" > /dev/null 2>&1 || echo "$f"; done
' sh | sort)

if [ ${#bad[@]} -gt 0 ]; then
  echo "check_format: ${#bad[@]} of ${#files[@]} C++ files are not clang-formatted:"
  printf '  %s\n' "${bad[@]}"
  echo "fix: clang-format -i ${bad[*]}"
  exit 1
fi
echo "check_format: ${#files[@]} C++ files under src/ tests/ bench/ are clang-formatted ($(clang-format --version | grep -o 'version [0-9.]*'))"
