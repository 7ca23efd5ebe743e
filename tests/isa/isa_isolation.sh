#!/usr/bin/env bash
# The bf16 ISA tests run no instruction of their ISA before their CPU check (issue 17, item
# 9): each test binary holds no VEX or EVEX instruction at all (it is built for plain x86-64;
# only its module, dlopen()ed after the check, is built for the ISA) and does not link its
# module. Where qemu-x86_64 is installed (Debian: qemu-user), the binaries also run on
# emulated CPUs without the ISA and must report a skip: Haswell (AVX2, no AVX-512) and
# Nehalem (SSE4.2, no AVX). Not for AddressSanitizer builds (see below): there the first
# check, on the instructions, is the proof.
# Usage: isa_isolation.sh DIR_WITH_THE_TEST_BINARIES
set -u
dir=$1
fails=0
passes=0
check() { if eval "$2"; then echo "ok   $1"; passes=$((passes + 1)); else echo "FAIL $1"; fails=$((fails + 1)); fi; }
# Instructions whose first byte (after segment or address-size prefixes) opens a VEX (c4,
# c5) or EVEX (62: BOUND is invalid in 64-bit mode) prefix, with the function they are in.
vector_insns() {
  objdump -d -w "$1" | awk -F'\t' '
    /^[0-9a-f]+ <.*>:$/ { fn = $0; next }
    NF >= 3 { n = split($2, b, " "); i = 1
              while (i <= n && b[i] ~ /^(26|2e|36|3e|64|65|67)$/) i++
              if (b[i] == "62" || b[i] == "c4" || b[i] == "c5") print fn " " $3 }'
}
for isa in scalar avx2 avx512f; do
  t=$dir/test_bf16_isa_$isa
  found=$(vector_insns "$t" | head -3)
  check "test_bf16_isa_$isa has no VEX/EVEX instruction${found:+ (has: $found)}" '[ -z "$found" ]'
  check "test_bf16_isa_$isa does not link its module" \
    '! readelf -d "$t" | grep -q "NEEDED.*_module"'
done
found=$(vector_insns "$dir/libtest_bf16_isa_avx512f_module.so" | grep -c zmm)
check "the AVX-512F module does use 512-bit registers ($found instructions)" '[ "$found" -gt 0 ]'
# An AddressSanitizer binary maps 16 TiB of shadow; qemu-user backs its page tables for
# all of it and is killed for memory (24 GB resident here): never run one under qemu.
asan=0
readelf -d "$dir/test_bf16_isa_avx512f" | grep -q "NEEDED.*libasan" && asan=1
if command -v qemu-x86_64 >/dev/null && [ $asan = 0 ]; then
  for cpu in Haswell:avx512f Nehalem:avx2; do
    c=${cpu%%:*} isa=${cpu#*:}
    out=$(timeout 120 qemu-x86_64 -cpu "$c" "$dir/test_bf16_isa_$isa" 2>&1)
    rc=$?
    check "test_bf16_isa_$isa on a $c CPU: exit 0 and a skip naming the ISA" \
      '[ $rc = 0 ] && grep -q "SKIPPED" <<<"$out" && grep -q "this CPU has no $isa" <<<"$out"'
  done
  out=$(timeout 120 qemu-x86_64 -cpu Haswell "$dir/test_bf16_isa_avx2" 2>&1)
  check "test_bf16_isa_avx2 on a Haswell CPU: runs and passes" \
    '[ $? = 0 ] && grep -q "PASSED" <<<"$out" && ! grep -q SKIPPED <<<"$out"'
else
  echo "(qemu-x86_64 absent or AddressSanitizer build: the emulated-CPU runs are skipped)"
fi
echo "$passes passed, $fails failed"
[ $fails = 0 ]
