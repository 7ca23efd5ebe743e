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
namespace fs = std::filesystem;

namespace {

std::string errno_text(int e) { return std::system_category().message(e); }

}  // namespace

// ---- checked system calls -------------------------------------------------------------

Fd& Fd::operator=(Fd&& o) noexcept {
  if (this != &o) {
    if (fd_ >= 0) ::close(fd_);
    fd_ = std::exchange(o.fd_, -1);
  }
  return *this;
}

Fd::~Fd() {
  if (fd_ >= 0) ::close(fd_);
}

void Fd::close_checked(const std::string& path) {
  const int fd = std::exchange(fd_, -1);
  if (::close(fd) != 0) SP_FAIL_INPUT("close(", path, ") failed: ", errno_text(errno));
}

Fd open_checked(const std::string& path, int flags, mode_t mode, Symlinks links) {
  if (links == Symlinks::refuse) flags |= O_NOFOLLOW;
  int fd;
  do {
    fd = ::open(path.c_str(), flags | O_CLOEXEC, mode);
  } while (fd < 0 && errno == EINTR);
  if (fd >= 0) return Fd(fd);
  const int e = errno;
  // O_NOFOLLOW on a link fails with ELOOP, whose text ("Too many levels of symbolic
  // links") does not say what happened.
  if (e == ELOOP && links == Symlinks::refuse)
    SP_FAIL_INPUT("open(", path, ") refused: it is a symbolic link");
  SP_FAIL_INPUT("open(", path, ") failed: ", errno_text(e));
}

void write_all(int fd, const void* data, size_t n, const std::string& path) {
  const char* p = static_cast<const char*>(data);
  while (n > 0) {
    const ssize_t w = ::write(fd, p, n);
    if (w < 0 && errno == EINTR) continue;
    if (w < 0) SP_FAIL_INPUT("write(", path, ") failed: ", errno_text(errno));
    if (w == 0) SP_FAIL_INPUT("write(", path, ") failed: ", errno_text(EIO));  // no progress
    p += w;
    n -= static_cast<size_t>(w);
  }
}

void pwrite_all(int fd, const void* data, size_t n, uint64_t offset, const std::string& path) {
  const char* p = static_cast<const char*>(data);
  while (n > 0) {
    const ssize_t w = ::pwrite(fd, p, n, static_cast<off_t>(offset));
    if (w < 0 && errno == EINTR) continue;
    if (w < 0) SP_FAIL_INPUT("write(", path, ") failed: ", errno_text(errno));
    if (w == 0) SP_FAIL_INPUT("write(", path, ") failed: ", errno_text(EIO));  // no progress
    p += w;
    n -= static_cast<size_t>(w);
    offset += static_cast<uint64_t>(w);
  }
}

void pread_all(int fd, void* data, size_t n, uint64_t offset, const std::string& path) {
  char* p = static_cast<char*>(data);
  while (n > 0) {
    const ssize_t r = ::pread(fd, p, n, static_cast<off_t>(offset));
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) SP_FAIL_INPUT("read(", path, ") failed: ", errno_text(errno));
    if (r == 0) SP_FAIL_INPUT("read(", path, "): unexpected end of file at byte ", offset);
    p += r;
    n -= static_cast<size_t>(r);
    offset += static_cast<uint64_t>(r);
  }
}

uint64_t file_size(int fd, const std::string& path) {
  struct stat st;
  if (::fstat(fd, &st) != 0) SP_FAIL_INPUT("fstat(", path, ") failed: ", errno_text(errno));
  return static_cast<uint64_t>(st.st_size);
}

void fsync_file(int fd, const std::string& path) {
  if (::fsync(fd) != 0) SP_FAIL_INPUT("fsync(", path, ") failed: ", errno_text(errno));
}

void fsync_dir(const std::string& dir) {
  Fd fd = open_checked(dir, O_RDONLY | O_DIRECTORY);
  fsync_file(fd.get(), dir);
  fd.close_checked(dir);
}

std::string parent_dir(const std::string& path) {
  std::string p = fs::path(path).parent_path().string();
  return p.empty() ? "." : p;
}

void rename_file(const std::string& from, const std::string& to) {
  if (::rename(from.c_str(), to.c_str()) != 0)
    SP_FAIL_INPUT("rename(", from, ", ", to, ") failed: ", errno_text(errno));
}

bool rename_no_replace(const std::string& from, const std::string& to) {
  if (::renameat2(AT_FDCWD, from.c_str(), AT_FDCWD, to.c_str(), RENAME_NOREPLACE) == 0) return true;
  const int e = errno;
  if (e == EEXIST) return false;
  SP_CHECK_INPUT(e == EINVAL || e == ENOSYS || e == ENOTSUP, "renameat2(", from, ", ", to,
                 ", RENAME_NOREPLACE) failed: ", errno_text(e));
  // Filesystems without RENAME_NOREPLACE: check, then rename (not atomic: the caller's
  // lock must keep other writers of `to` out).
  std::error_code ec;
  if (fs::exists(to, ec)) return false;
  rename_file(from, to);
  return true;
}

std::string temp_path(const std::string& path) {
  return path + ".tmp." + std::to_string(static_cast<long long>(::getpid()));
}

// ---- whole files ----------------------------------------------------------------------

bool path_exists(const std::string& path, const std::string& what) {
  struct stat st;
  if (::stat(path.c_str(), &st) == 0) return true;
  const int e = errno;
  if (e == ENOENT || e == ENOTDIR) return false;
  SP_FAIL_INPUT(what, " '", path, "' cannot be accessed: ", errno_text(e));
}

std::string read_file(const std::string& path, Symlinks links) {
  Fd fd = open_checked(path, O_RDONLY, 0, links);
  std::string s(file_size(fd.get(), path), '\0');
  pread_all(fd.get(), s.data(), s.size(), 0, path);
  return s;
}

namespace {

// Refuses what cannot be read as a whole file, with messages naming its role.
void require_regular_file(const std::string& path, const std::string& what) {
  std::error_code ec;
  SP_CHECK_INPUT(path_exists(path, what), what, " '", path, "' does not exist");
  SP_CHECK_INPUT(!fs::is_directory(path, ec), what, " '", path, "' is a directory");
  SP_CHECK_INPUT(fs::is_regular_file(path, ec), what, " '", path,
                 "' is not a regular file (a pipe or a device cannot be read as a whole)");
}

}  // namespace

std::string read_regular_file(const std::string& path, const std::string& what,
                              uint64_t max_bytes) {
  require_regular_file(path, what);
  Fd fd = open_checked(path, O_RDONLY, 0, Symlinks::follow);
  const uint64_t n = file_size(fd.get(), path);
  SP_CHECK_INPUT(n <= max_bytes, what, " '", path, "' has ", n, " bytes, more than the ", max_bytes,
                 " this command reads");
  std::string s(n, '\0');
  pread_all(fd.get(), s.data(), s.size(), 0, path);
  return s;
}

void write_file_atomic(const std::string& path, std::string_view bytes, Symlinks links) {
  AtomicFileWriter w(path, links);
  w.write(bytes.data(), bytes.size());
  w.commit();
}

uint64_t fnv1a64_file(const std::string& path, Symlinks links) {
  Fd fd = open_checked(path, O_RDONLY, 0, links);
  std::vector<char> buf(1 << 20);
  Fnv1a64 h;
  for (;;) {
    const ssize_t r = ::read(fd.get(), buf.data(), buf.size());
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) SP_FAIL_INPUT("read(", path, ") failed: ", errno_text(errno));
    if (r == 0) break;
    h.update(buf.data(), static_cast<size_t>(r));
  }
  return h.value();
}

// ---- MappedFile ---------------------------------------------------------------------

MappedFile::MappedFile(const std::string& path, const std::string& what) : path_(path) {
  require_regular_file(path, what);
  Fd fd = open_checked(path, O_RDONLY);
  size_ = file_size(fd.get(), path);
  if (size_ > 0) {
    void* p = ::mmap(nullptr, size_, PROT_READ, MAP_SHARED, fd.get(), 0);
    // The mapping keeps the file open; the descriptor closes on return.
    SP_CHECK_INPUT(p != MAP_FAILED, "mmap(", path, ", ", size_,
                   " bytes) failed: ", errno_text(errno));
    data_ = static_cast<const unsigned char*>(p);
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

AtomicFileWriter::AtomicFileWriter(std::string path, Symlinks links)
    : path_(std::move(path)),
      tmp_(temp_path(path_)),
      fd_(open_checked(tmp_, O_WRONLY | O_CREAT | O_TRUNC, 0644, links)) {}

AtomicFileWriter::~AtomicFileWriter() {
  if (!committed_) ::unlink(tmp_.c_str());
}

void AtomicFileWriter::write(const void* data, size_t n) { write_at(end_, data, n); }

void AtomicFileWriter::write_at(uint64_t offset, const void* data, size_t n) {
  SP_CHECK(fd_.is_open(), "write to '", path_, "' after commit");
  SP_CHECK(offset <= end_, "write at byte ", offset, " of '", tmp_, "' leaves a hole (it has ",
           end_, " bytes)");
  pwrite_all(fd_.get(), data, n, offset, tmp_);
  end_ = std::max(end_, offset + n);
}

void AtomicFileWriter::commit() {
  SP_CHECK(fd_.is_open(), "'", path_, "' committed twice");
  fsync_file(fd_.get(), tmp_);
  fd_.close_checked(tmp_);  // close can report a deferred write error
  rename_file(tmp_, path_);
  committed_ = true;
  fsync_dir(parent_dir(path_));
}

}  // namespace seqpar
