#include "core/memory.hpp"

#include <cblas.h>
#include <link.h>
#include <malloc.h>
#include <omp.h>
#include <sys/mman.h>

#include <cstdio>
#include <fstream>
#include <sstream>
#include <vector>

#include "core/check.hpp"

namespace seqpar {
namespace {

// The value in kB of a "Key:   123 kB" line of a /proc file, in bytes; 0 if absent.
uint64_t proc_kb(const char* path, const std::string& key) {
  std::ifstream f(path);
  std::string line;
  while (std::getline(f, line))
    if (line.compare(0, key.size(), key) == 0 && line.size() > key.size() &&
        line[key.size()] == ':') {
      std::istringstream in(line.substr(key.size() + 1));
      uint64_t kb = 0;
      in >> kb;
      return kb * 1024;
    }
  return 0;
}

}  // namespace

uint64_t process_rss_bytes() { return proc_kb("/proc/self/status", "VmRSS"); }
uint64_t process_peak_rss_bytes() { return proc_kb("/proc/self/status", "VmHWM"); }

uint64_t available_memory_bytes() {
  uint64_t avail = proc_kb("/proc/meminfo", "MemAvailable");
  if (avail > 0) avail += process_rss_bytes();  // what this process holds is ours as well
  // cgroup v2: a numeric memory.max below the machine's memory is the real limit.
  std::ifstream f("/sys/fs/cgroup/memory.max");
  std::string s;
  if (f >> s && s != "max") {
    try {
      const uint64_t limit = std::stoull(s);
      if (limit > 0 && (avail == 0 || limit < avail)) avail = limit;
    } catch (const std::exception&) {
    }
  }
  return avail;
}

uint64_t static_tls_bytes() {
  uint64_t total = 0;
  dl_iterate_phdr(
      [](dl_phdr_info* info, size_t, void* data) {
        for (int i = 0; i < info->dlpi_phnum; ++i) {
          const ElfW(Phdr)& ph = info->dlpi_phdr[i];
          if (ph.p_type != PT_TLS) continue;
          const uint64_t align = ph.p_align > 0 ? ph.p_align : 1;
          *static_cast<uint64_t*>(data) += (ph.p_memsz + align - 1) / align * align;
        }
        return 0;
      },
      &total);
  return total;
}

uint64_t thread_bytes() { return static_tls_bytes() + kThreadStackBytes; }

int warm_up_runtimes() {
  // M_MMAP_THRESHOLD fixed: no dynamic raise (up to 32 MiB) after a large block is freed.
  mallopt(M_MMAP_THRESHOLD, 128 << 10);
  // The largest product the linear layers issue, as far as the pack buffer is concerned:
  // kGemmMaxRows rows of A·Wᵀ with K = 1024 (what OpenBLAS touches grows with K up to
  // ~1024 and stays flat beyond) and N = 513 (a single thread packs this way only from
  // N > K/2). Measured after it, 4096-row products A·Wᵀ and A·W with K, N in
  // {256, 1024, 4096} add at most 0.16 MB (1 and 2 threads). A and W are never written: they are
  // untouched anonymous pages, which read as zeros through the shared zero page and add nothing
  // resident; only the output is.
  constexpr int64_t M = kGemmMaxRows, K = 1024, N = 513;
  const size_t in_bytes = size_t(M * K + N * K) * sizeof(float);
  void* in = ::mmap(nullptr, in_bytes, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  SP_CHECK(in != MAP_FAILED, "warm_up_runtimes: mmap of ", in_bytes, " bytes failed");
  // The output is mapped too, so that it goes back to the system at once (a freed heap
  // block of this size may stay resident under glibc's dynamic mmap threshold).
  const size_t out_bytes = size_t(M * N) * sizeof(float);
  void* out =
      ::mmap(nullptr, out_bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  SP_CHECK(out != MAP_FAILED, "warm_up_runtimes: mmap of ", out_bytes, " bytes failed");
  const float* a = static_cast<const float*>(in);
  const float* w = a + M * K;
  float* c = static_cast<float*>(out);
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, int(M), int(N), int(K), 1.0f, a, int(K), w,
              int(K), 0.0f, c, int(N));
  volatile float sink = 0.0f;
  int team = 1;
#pragma omp parallel
  {
    if (omp_get_thread_num() == 0) {
      sink = c[0];
      team = omp_get_num_threads();
    }
  }
  (void)sink;
  ::munmap(in, in_bytes);
  ::munmap(out, out_bytes);
  return team;
}

uint64_t parse_bytes(const std::string& s, const std::string& what) {
  size_t used = 0;
  double v = 0;
  try {
    v = std::stod(s, &used);
  } catch (const std::exception&) {
    SP_FAIL_USAGE(what, " '", s, "' is not a number of bytes (e.g. 1GiB, 512MiB)");
  }
  const std::string unit = s.substr(used);
  double mult = 1;
  if (unit == "" || unit == "B")
    mult = 1;
  else if (unit == "K" || unit == "KiB")
    mult = 1024.0;
  else if (unit == "M" || unit == "MiB")
    mult = 1024.0 * 1024;
  else if (unit == "G" || unit == "GiB")
    mult = 1024.0 * 1024 * 1024;
  else if (unit == "T" || unit == "TiB")
    mult = 1024.0 * 1024 * 1024 * 1024;
  else
    SP_FAIL_USAGE(what, " '", s, "' has an unknown unit '", unit, "' (B, KiB, MiB, GiB, TiB)");
  SP_CHECK_USAGE(v > 0, what, " must be > 0, got '", s, "'");
  return uint64_t(v * mult);
}

std::string format_bytes(uint64_t bytes) {
  const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  double v = double(bytes);
  int u = 0;
  while (v >= 1024.0 && u < 4) v /= 1024.0, ++u;
  char buf[32];
  if (u == 0)
    std::snprintf(buf, sizeof buf, "%llu B", static_cast<unsigned long long>(bytes));
  else
    std::snprintf(buf, sizeof buf,
                  v < 10    ? "%.2f %s"
                  : v < 100 ? "%.1f %s"
                            : "%.0f %s",
                  v, units[u]);
  return buf;
}

}  // namespace seqpar
