#include "train/run_dir.hpp"

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <cctype>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <iostream>
#include <string_view>

#include "core/check.hpp"
#include "core/file.hpp"
#include "train/checkpoint.hpp"

namespace seqpar {

namespace fs = std::filesystem;

namespace {

std::string host_name() {
  char h[256] = {};
  if (gethostname(h, sizeof h - 1) != 0) return "unknown-host";
  return h;
}

// Takes the exclusive lock on <out>/run.lock; returns its fd (closed at exit, which
// releases the lock even if the process is killed).
Fd take_lock(const std::string& out) {
  const std::string path = out + "/run.lock";
  // Not through a symbolic link: `ln -s ~/x R/run.lock` must not let a run write into x.
  Fd fd = open_checked(path, O_RDWR | O_CREAT, 0644, Symlinks::refuse);
  if (::flock(fd.get(), LOCK_EX | LOCK_NB) != 0) {
    const int e = errno;
    std::string holder;
    char buf[512] = {};
    ssize_t n = ::pread(fd.get(), buf, sizeof buf - 1, 0);
    if (n > 0) holder.assign(buf, size_t(n));
    while (!holder.empty() && std::isspace(static_cast<unsigned char>(holder.back())))
      holder.pop_back();
    SP_CHECK_USAGE(e != EWOULDBLOCK, "run directory '", out, "' is in use by another run (",
                   holder.empty() ? std::string("holder unknown")
                                  : "pid " + holder.substr(0, holder.find(' ')) + " on host " +
                                        holder.substr(holder.find(' ') + 1),
                   ", lock ", path, "); wait for it to finish or choose another --out");
    SP_FAIL_INPUT("cannot lock ", path, ": ", std::strerror(e));
  }
  const std::string me = std::to_string(::getpid()) + " " + host_name() + "\n";
  if (::ftruncate(fd.get(), 0) != 0)
    SP_FAIL_INPUT("cannot write the lock file ", path, ": ", std::strerror(errno));
  pwrite_all(fd.get(), me.data(), me.size(), 0, path);
  return fd;
}

// What seqpar writes in a run directory is its own: an entry that is a symbolic link would
// send those writes (and the checkpoints' renames and removals) somewhere else. The
// directory itself may be a link (runs/ on a scratch disk); its entries may not.
void refuse_redirected_entries(const std::string& out) {
  std::vector<fs::path> entries;
  for (const char* name : {"run.lock", "config.json", "metrics.jsonl", "checkpoints"})
    entries.push_back(fs::path(out) / name);
  std::error_code ec;
  const fs::path ckpts = fs::path(out) / "checkpoints";
  if (!fs::is_symlink(ckpts, ec) && fs::is_directory(ckpts, ec))
    for (fs::directory_iterator it(ckpts, ec), end; !ec && it != end; it.increment(ec))
      entries.push_back(it->path());
  for (const fs::path& e : entries)
    SP_CHECK_INPUT(!fs::is_symlink(e, ec), "run directory '", out, "': ", e.string(),
                   " is a symbolic link (to ", fs::read_symlink(e, ec).string(),
                   "); seqpar writes only its own files there. Remove the link, or choose "
                   "another --out");
}

}  // namespace

RunDir::RunDir(const std::string& out, Comm& world)
    : out_(out), world_(&world), rank0_(world.rank() == 0) {
  agree_or_throw(world, [&] {
    if (!rank0_) return;
    std::error_code ec;
    fs::create_directories(out_, ec);
    SP_CHECK_INPUT(!ec, "cannot create output directory '", out_, "': ", ec.message());
    lock_fd_ = take_lock(out_);  // (refuses a run.lock that is a link, naming it)
    refuse_redirected_entries(out_);
    for (const std::string& t : remove_checkpoint_temporaries(checkpoints()))
      std::cout << "removed the unfinished checkpoint " << t << " (left by a killed run)\n";
  });
}

void RunDir::write_config(const nlohmann::json& cfg) {
  agree_or_throw(*world_, [&] {
    if (rank0_) write_file_atomic(out_ + "/config.json", cfg.dump(2) + "\n");
  });
}

void RunDir::open_metrics(int64_t keep_through) {
  agree_or_throw(*world_, [&] {
    if (!rank0_) return;
    const std::string path = out_ + "/metrics.jsonl";
    std::error_code ec;
    const std::string old = fs::exists(path, ec) ? read_file(path) : std::string();
    std::string kept;
    // Whole lines only: a torn last line (no newline at the end of the file) is dropped,
    // and so is a line that is not JSON.
    for (size_t pos = 0, end; (end = old.find('\n', pos)) != std::string::npos; pos = end + 1) {
      const std::string_view line(old.data() + pos, end - pos);
      nlohmann::json row = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
      if (row.is_object() && row.contains("step") && row["step"].is_number_integer() &&
          row["step"].get<int64_t>() <= keep_through)
        kept.append(line).append("\n");
    }
    write_file_atomic(path, kept);
    metrics_fd_ = open_checked(path, O_WRONLY | O_APPEND, 0, Symlinks::refuse);
  });
}

void RunDir::append_metrics(const nlohmann::json& row) {
  if (!metrics_fd_.is_open()) return;
  const std::string line = row.dump() + "\n";
  const off_t before = ::lseek(metrics_fd_.get(), 0, SEEK_END);
  size_t done = 0;
  int e = 0;
  while (done < line.size()) {  // a short write is retried; the retry reports the cause
    const ssize_t n = ::write(metrics_fd_.get(), line.data() + done, line.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      e = n < 0 ? errno : EIO;
      break;
    }
    done += size_t(n);
  }
  if (done == line.size()) return;
  // Cut the partial row back off, so every line in the file stays a whole JSON object.
  if (before >= 0) (void)!::ftruncate(metrics_fd_.get(), before);
  if (metrics_failed_) return;
  metrics_failed_ = true;
  std::string msg = "seqpar: warning: writing " + out_ + "/metrics.jsonl failed (" +
                    std::strerror(e) + ") at step " + row.value("step", nlohmann::json()).dump() +
                    "; rows that cannot be written are dropped, training and checkpoints go on\n";
  (void)!::write(STDERR_FILENO, msg.data(), msg.size());
}

}  // namespace seqpar
