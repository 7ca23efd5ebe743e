#include "core/file.hpp"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <filesystem>
#include <system_error>
#include <utility>
#include <vector>

#include "core/check.hpp"

namespace seqpar {
namespace {

std::string errno_text(int e) { return std::system_category().message(e); }

int open_checked(const std::string& path, int flags, mode_t mode = 0) {
  int fd;
  do {
    fd = ::open(path.c_str(), flags | O_CLOEXEC, mode);
  } while (fd < 0 && errno == EINTR);
  if (fd < 0) SP_FAIL("open(", path, ") failed: ", errno_text(errno));
  return fd;
}

}  // namespace

uint64_t fnv1a64(const void* data, size_t n, uint64_t h) {
  const unsigned char* p = static_cast<const unsigned char*>(data);
  for (size_t i = 0; i < n; ++i) h = (h ^ p[i]) * 0x100000001b3ull;
  return h;
}

uint64_t fnv1a64_file(const std::string& path) {
  const int fd = open_checked(path, O_RDONLY);
  std::vector<char> buf(1 << 20);
  uint64_t h = kFnv1a64Basis;
  for (;;) {
    ssize_t r = ::read(fd, buf.data(), buf.size());
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) {
      const int e = errno;
      ::close(fd);
      SP_FAIL("read(", path, ") failed: ", errno_text(e));
    }
    if (r == 0) break;
    h = fnv1a64(buf.data(), static_cast<size_t>(r), h);
  }
  ::close(fd);
  return h;
}

std::string hash_hex(uint64_t h) {
  char buf[17];
  std::snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(h));
  return buf;
}

// ---- MappedFile ---------------------------------------------------------------------

MappedFile::MappedFile(const std::string& path, const std::string& what) : path_(path) {
  namespace fs = std::filesystem;
  std::error_code ec;
  SP_CHECK(fs::exists(path, ec), what, " '", path, "' does not exist");
  SP_CHECK(!fs::is_directory(path, ec), what, " '", path, "' is a directory");
  SP_CHECK(fs::is_regular_file(path, ec), what, " '", path,
           "' is not a regular file (a pipe or a device cannot be mapped)");
  const int fd = open_checked(path, O_RDONLY);
  struct stat st;
  if (::fstat(fd, &st) != 0) {
    const int e = errno;
    ::close(fd);
    SP_FAIL("fstat(", path, ") failed: ", errno_text(e));
  }
  size_ = static_cast<uint64_t>(st.st_size);
  if (size_ > 0) {
    void* p = ::mmap(nullptr, size_, PROT_READ, MAP_SHARED, fd, 0);
    const int e = errno;
    ::close(fd);  // the mapping keeps the file open
    SP_CHECK(p != MAP_FAILED, "mmap(", path, ", ", size_, " bytes) failed: ", errno_text(e));
    data_ = static_cast<const unsigned char*>(p);
  } else {
    ::close(fd);
  }
}

MappedFile::MappedFile(MappedFile&& o) noexcept
    : path_(std::move(o.path_)),
      data_(std::exchange(o.data_, nullptr)),
      size_(std::exchange(o.size_, 0)) {}

MappedFile& MappedFile::operator=(MappedFile&& o) noexcept {
  if (this != &o) {
    release();
    path_ = std::move(o.path_);
    data_ = std::exchange(o.data_, nullptr);
    size_ = std::exchange(o.size_, 0);
  }
  return *this;
}

MappedFile::~MappedFile() { release(); }

void MappedFile::release() {
  if (data_) ::munmap(const_cast<unsigned char*>(data_), size_);
  data_ = nullptr;
  size_ = 0;
}

// ---- AtomicFileWriter ---------------------------------------------------------------

AtomicFileWriter::AtomicFileWriter(std::string path)
    : path_(std::move(path)), tmp_(path_ + ".tmp." + std::to_string(::getpid())) {
  fd_ = open_checked(tmp_, O_WRONLY | O_CREAT | O_TRUNC, 0644);
}

AtomicFileWriter::~AtomicFileWriter() {
  if (fd_ >= 0) ::close(fd_);
  if (!committed_) ::unlink(tmp_.c_str());
}

void AtomicFileWriter::write(const void* data, size_t n) { write_at(end_, data, n); }

void AtomicFileWriter::write_at(uint64_t offset, const void* data, size_t n) {
  SP_CHECK(fd_ >= 0, "write to '", path_, "' after commit");
  SP_CHECK(offset <= end_, "write at byte ", offset, " of '", tmp_, "' leaves a hole (it has ",
           end_, " bytes)");
  const char* p = static_cast<const char*>(data);
  uint64_t at = offset;
  while (n > 0) {
    ssize_t w = ::pwrite(fd_, p, n, static_cast<off_t>(at));
    if (w < 0 && errno == EINTR) continue;
    if (w < 0) SP_FAIL("write(", tmp_, ") failed: ", errno_text(errno));
    p += w;
    n -= static_cast<size_t>(w);
    at += static_cast<uint64_t>(w);
  }
  end_ = std::max(end_, at);
}

void AtomicFileWriter::commit() {
  SP_CHECK(fd_ >= 0, "'", path_, "' committed twice");
  if (::fsync(fd_) != 0) SP_FAIL("fsync(", tmp_, ") failed: ", errno_text(errno));
  const int fd = std::exchange(fd_, -1);
  // close can report a deferred write error.
  if (::close(fd) != 0) SP_FAIL("close(", tmp_, ") failed: ", errno_text(errno));
  if (::rename(tmp_.c_str(), path_.c_str()) != 0)
    SP_FAIL("rename(", tmp_, ", ", path_, ") failed: ", errno_text(errno));
  committed_ = true;
  // The rename is only durable once the directory holding the entry is synced.
  const std::string parent = std::filesystem::path(path_).parent_path().string();
  const std::string dir = parent.empty() ? std::string(".") : parent;
  const int dfd = open_checked(dir, O_RDONLY | O_DIRECTORY);
  const int rc = ::fsync(dfd);
  const int e = errno;
  ::close(dfd);
  SP_CHECK(rc == 0, "fsync(", dir, ") failed: ", errno_text(e));
}

}  // namespace seqpar
