// What the process itself holds, outside the arena: the baseline a memory budget must
// include (MPI, OpenBLAS and OpenMP runtimes, the program), and what the machine offers.
// Linux only (/proc, cgroup v2); each reader returns 0 where the value is unavailable.
#pragma once
#include <cstdint>
#include <string>

namespace seqpar {

// Resident set size now (VmRSS) and its high-water mark (VmHWM), in bytes.
uint64_t process_rss_bytes();
uint64_t process_peak_rss_bytes();

// Memory this process may still use: MemAvailable from /proc/meminfo plus what the process
// already holds, capped by the cgroup's memory.max when one is set.
uint64_t available_memory_bytes();

// Rows per cblas_sgemm call in the linear layers' forward (kernels/linear.cpp). OpenBLAS
// (0.3.21) touches its 256 MiB pack-buffer mapping in proportion to the rows of a
// row-major A·Wᵀ product, about 1.4 KB per row once K ≥ 1024 (5.7 MB at 4096 rows, 65 MB
// at 65536): bounding the rows bounds what it touches, and the warm-up below touches that
// once, so the baseline holds it.
constexpr int64_t kGemmMaxRows = 4096;

// Brings up the runtimes whose memory is part of the baseline (OpenBLAS's and OpenMP's
// thread pools, with their stacks and buffers, and the pack buffer at kGemmMaxRows rows)
// by one sgemm and one parallel region, so that process_rss_bytes() afterwards measures
// the process as training will hold it. Transient: 8 MiB of output, freed before it returns.
void warm_up_runtimes();

// "1GiB", "512MiB", "2G", "1000000" → bytes; `what` names the option in errors (usage
// errors naming the value).
uint64_t parse_bytes(const std::string& s, const std::string& what);

// 1073741824 → "1.00 GiB" (B, KiB, MiB, GiB, TiB; three significant digits).
std::string format_bytes(uint64_t bytes);

}  // namespace seqpar
