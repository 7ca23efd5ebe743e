// The one file-I/O layer: every file seqpar reads or writes (checkpoints, token files,
// tokenizer models, run directories, exports) goes through these calls.
//   - checked system calls: open (optionally refusing symbolic links), write, pread, fsync
//     of a file and of a directory, rename (also without replacing);
//   - whole files: read_file, write_file_atomic, fnv1a64_file, a read-only MappedFile;
//   - AtomicFileWriter: temp file + fsync + rename + directory fsync, so a reader sees the
//     old file or the new one, never half of one.
// A failed call throws seqpar::InputError (something outside the program: a missing file,
// a full disk) naming the file and the system's reason; misuse of the API (writing after
// commit) is a plain seqpar::Error.
#pragma once
#include <sys/types.h>

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "core/hash.hpp"  // fnv1a64, Fnv1a64, hash_hex: files are hashed as they are written

namespace seqpar {

// What an open does with a symbolic link as the last component of the path. `refuse`
// (O_NOFOLLOW) fails with an error naming the link, so a file planted as a link in a
// directory we write cannot redirect the write (or the read) elsewhere.
enum class Symlinks { follow, refuse };

// Owns a file descriptor. close_checked() reports a failed close (which can carry a
// deferred write error); the destructor closes silently, for the unwinding path.
class Fd {
 public:
  Fd() = default;
  explicit Fd(int fd) : fd_(fd) {}
  Fd(Fd&& o) noexcept : fd_(o.fd_) { o.fd_ = -1; }
  Fd& operator=(Fd&& o) noexcept;
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  ~Fd();
  int get() const { return fd_; }
  bool is_open() const { return fd_ >= 0; }
  // Closes; `path` names the file in the error.
  void close_checked(const std::string& path);

 private:
  int fd_ = -1;
};

// open(2) with O_CLOEXEC, retried on EINTR; throws "open(<path>) failed: <reason>".
Fd open_checked(const std::string& path, int flags, mode_t mode = 0,
                Symlinks links = Symlinks::follow);
// All n bytes at the file offset (write) or at `offset` (pwrite); retried on EINTR and
// short writes. `path` names the file in errors.
void write_all(int fd, const void* data, size_t n, const std::string& path);
void pwrite_all(int fd, const void* data, size_t n, uint64_t offset, const std::string& path);
// Exactly n bytes at `offset`: a file that ends first is an error naming it and the offset.
void pread_all(int fd, void* data, size_t n, uint64_t offset, const std::string& path);
// Size in bytes (fstat).
uint64_t file_size(int fd, const std::string& path);
void fsync_file(int fd, const std::string& path);
// A create, rename or unlink is durable only once the directory holding the entry is synced.
void fsync_dir(const std::string& dir);
// The directory holding `path`: "." for a bare name.
std::string parent_dir(const std::string& path);
// rename(2): replaces `to` if it exists.
void rename_file(const std::string& from, const std::string& to);
// Renames `from` to `to` only if `to` does not exist: false (and nothing moved) if it does.
// One atomic step (renameat2 RENAME_NOREPLACE), so of two processes installing the same
// name one wins; on a filesystem without it, a check then a rename.
bool rename_no_replace(const std::string& from, const std::string& to);
// The name this process writes `path` under before renaming it into place:
// "<path>.tmp.<pid>" (cleanup code recognises ".tmp." in a name).
std::string temp_path(const std::string& path);

// True if `path` exists (following symbolic links), false if it or a directory on its way
// does not (ENOENT, ENOTDIR). Anything else (EACCES, ELOOP, EIO) is an InputError naming
// `what`, the path and the reason: a file seqpar may not read is not reported as missing.
bool path_exists(const std::string& path, const std::string& what);

// The whole file.
std::string read_file(const std::string& path, Symlinks links = Symlinks::follow);
// As read_file, first refusing a missing path, a directory and a non-regular file (pipe,
// device) with a message naming the file's role: "<what> '<path>' does not exist".
// A file above `max_bytes` is refused by its size, before it is read.
std::string read_regular_file(const std::string& path, const std::string& what,
                              uint64_t max_bytes = UINT64_MAX);
// Replaces `path` with `bytes` atomically (an AtomicFileWriter).
void write_file_atomic(const std::string& path, std::string_view bytes,
                       Symlinks links = Symlinks::follow);
// FNV-1a 64 of a whole file, read in chunks.
uint64_t fnv1a64_file(const std::string& path, Symlinks links = Symlinks::follow);

// Read-only shared mapping of a whole regular file: many processes on one node that map
// the same file share its pages in the page cache, and pages are read on first touch.
// `what` names the file's role in errors ("token file", "text file"). A missing path, a
// directory or a non-regular file (pipe, device) is refused. An empty file maps to
// (nullptr, 0). The file must not be truncated while mapped (reads would SIGBUS).
class MappedFile {
 public:
  MappedFile() = default;
  explicit MappedFile(const std::string& path, const std::string& what = "file");
  MappedFile(MappedFile&& o) noexcept;
  MappedFile& operator=(MappedFile&& o) noexcept;
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;
  ~MappedFile();

  const unsigned char* data() const { return data_; }
  uint64_t size() const { return size_; }
  const std::string& path() const { return path_; }

 private:
  void release();
  std::string path_;
  const unsigned char* data_ = nullptr;
  uint64_t size_ = 0;
};

// Writes temp_path(path); commit() fsyncs it, renames it over <path> and fsyncs the
// directory. Without commit (an exception on the way) the temp file is removed and
// <path> is untouched, so a reader never sees a half-written file under <path>.
// With Symlinks::refuse the temp file is not opened through a link planted under its name
// (the rename replaces a link at <path> itself, never its target).
class AtomicFileWriter {
 public:
  explicit AtomicFileWriter(std::string path, Symlinks links = Symlinks::follow);
  AtomicFileWriter(const AtomicFileWriter&) = delete;
  AtomicFileWriter& operator=(const AtomicFileWriter&) = delete;
  ~AtomicFileWriter();

  // Appends n bytes at the end.
  void write(const void* data, size_t n);
  // Overwrites n bytes at `offset` <= bytes_written() (e.g. a header patched at the end).
  void write_at(uint64_t offset, const void* data, size_t n);
  uint64_t bytes_written() const { return end_; }
  const std::string& path() const { return path_; }
  void commit();

 private:
  std::string path_, tmp_;
  Fd fd_;
  uint64_t end_ = 0;
  bool committed_ = false;
};

}  // namespace seqpar
