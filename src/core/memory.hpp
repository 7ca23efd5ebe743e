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
// the process as training will hold it. Returns the threads of that region: OpenMP's
// default team, which OpenBLAS caps at its own maximum (openblas_set_num_threads sets
// OpenMP's count too: 64 threads in Debian's build), so it may be fewer than the kernels'
// teams (core/threads.hpp: num_threads()). Transient: 8 MiB of output, freed before it
// returns (the process's VmHWM keeps it). Also pins glibc's mmap threshold at 128 KiB
// (its initial value; mallopt turns off the dynamic raise), so that a freed block of
// 128 KiB or more, such as an MPI collective's temporary, goes back to the system at once
// instead of staying resident in the heap for the next, larger one to add to.
int warm_up_runtimes();

// What one OpenMP thread beyond the baseline's holds resident, and the terms of it:
//   static TLS (every loaded object's PT_TLS segment, aligned: 60 KiB of it OpenBLAS's,
//               read from this process) + kThreadStackBytes.
// glibc places the TLS blocks and the thread descriptor at the top of the thread's stack
// mapping and zeroes the TLS when the thread starts, so every page of it is touched.
// kThreadStackBytes: the thread descriptor (struct pthread, 2.3 KiB in glibc 2.36) and the
// stack pages touched by libgomp's thread start, a parallel region's body and the kernels
// it calls (OpenBLAS's single-threaded sgemm included): a worker's stack mapping measured
// 13–17 KiB above its TLS after training steps (docs/memory.md). The kernels' per-thread
// scratch is in the arena (attention_scratch_floats(d, num_threads())), not here.
constexpr uint64_t kThreadStackBytes = 24 << 10;
uint64_t static_tls_bytes();
uint64_t thread_bytes();

// "1GiB", "512MiB", "2G", "1000000" → bytes; `what` names the option in errors (usage
// errors naming the value).
uint64_t parse_bytes(const std::string& s, const std::string& what);

// 1073741824 → "1.00 GiB" (B, KiB, MiB, GiB, TiB; three significant digits).
std::string format_bytes(uint64_t bytes);

}  // namespace seqpar
