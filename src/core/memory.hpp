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

// Brings up the runtimes whose memory is part of the baseline (OpenBLAS's and OpenMP's
// thread pools, with their stacks and buffers) by one small sgemm and one parallel region,
// so that process_rss_bytes() afterwards measures the process as training will hold it.
void warm_up_runtimes();

// "1GiB", "512MiB", "2G", "1000000" → bytes; `what` names the option in errors (usage
// errors naming the value).
uint64_t parse_bytes(const std::string& s, const std::string& what);

// 1073741824 → "1.00 GiB" (B, KiB, MiB, GiB, TiB; three significant digits).
std::string format_bytes(uint64_t bytes);

}  // namespace seqpar
