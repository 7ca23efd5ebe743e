// File utilities shared by the layers that read and write data files: the FNV-1a 64
// content hash, a read-only memory map, and an atomic writer (temp + fsync + rename).
// Every failure throws seqpar::Error naming the file and the system's reason.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>

namespace seqpar {

// FNV-1a 64: h = 0xcbf29ce484222325; for each byte b: h = (h ^ b) * 0x100000001b3.
// Pass the previous result as `h` to continue a stream.
constexpr uint64_t kFnv1a64Basis = 0xcbf29ce484222325ull;
uint64_t fnv1a64(const void* data, size_t n, uint64_t h = kFnv1a64Basis);
// FNV-1a 64 of a whole file, read in chunks.
uint64_t fnv1a64_file(const std::string& path);
// A hash as 16 lowercase hex digits, as errors and tools print it.
std::string hash_hex(uint64_t h);

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

// Writes <path>.tmp.<pid>; commit() fsyncs it, renames it over <path> and fsyncs the
// directory. Without commit (an exception on the way) the temp file is removed and
// <path> is untouched, so a reader never sees a half-written file under <path>.
class AtomicFileWriter {
 public:
  explicit AtomicFileWriter(std::string path);
  AtomicFileWriter(const AtomicFileWriter&) = delete;
  AtomicFileWriter& operator=(const AtomicFileWriter&) = delete;
  ~AtomicFileWriter();

  // Appends n bytes at the end.
  void write(const void* data, size_t n);
  // Overwrites n bytes at `offset` < bytes_written() (e.g. a header patched at the end).
  void write_at(uint64_t offset, const void* data, size_t n);
  uint64_t bytes_written() const { return end_; }
  const std::string& path() const { return path_; }
  void commit();

 private:
  std::string path_, tmp_;
  int fd_ = -1;
  uint64_t end_ = 0;
  bool committed_ = false;
};

}  // namespace seqpar
