#include "train/run_dir.hpp"

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <sstream>

#include "core/check.hpp"
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
int take_lock(const std::string& out) {
  const std::string path = out + "/run.lock";
  int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  SP_CHECK(fd >= 0, "cannot open the lock file ", path, ": ", std::strerror(errno));
  if (::flock(fd, LOCK_EX | LOCK_NB) != 0) {
    const int e = errno;
    std::string holder;
    char buf[512] = {};
    ssize_t n = ::pread(fd, buf, sizeof buf - 1, 0);
    if (n > 0) holder.assign(buf, size_t(n));
    while (!holder.empty() && std::isspace(static_cast<unsigned char>(holder.back())))
      holder.pop_back();
    ::close(fd);
    SP_CHECK_USAGE(e != EWOULDBLOCK, "run directory '", out, "' is in use by another run (",
                   holder.empty() ? std::string("holder unknown")
                                  : "pid " + holder.substr(0, holder.find(' ')) + " on host " +
                                        holder.substr(holder.find(' ') + 1),
                   ", lock ", path, "); wait for it to finish or choose another --out");
    SP_FAIL("cannot lock ", path, ": ", std::strerror(e));
  }
  const std::string me = std::to_string(::getpid()) + " " + host_name() + "\n";
  if (::ftruncate(fd, 0) != 0 || ::pwrite(fd, me.data(), me.size(), 0) != ssize_t(me.size())) {
    const int e = errno;
    ::close(fd);
    SP_FAIL("cannot write the lock file ", path, ": ", std::strerror(e));
  }
  return fd;
}

}  // namespace

RunDir::RunDir(const std::string& out, Comm& world)
    : out_(out), world_(&world), rank0_(world.rank() == 0) {
  agree_or_throw(world, [&] {
    if (!rank0_) return;
    std::error_code ec;
    fs::create_directories(out_, ec);
    SP_CHECK(!ec, "cannot create output directory '", out_, "': ", ec.message());
    lock_fd_ = take_lock(out_);
    for (const std::string& t : remove_checkpoint_temporaries(checkpoints()))
      std::cout << "removed the unfinished checkpoint " << t << " (left by a killed run)\n";
  });
}

RunDir::~RunDir() {
  if (metrics_fd_ >= 0) ::close(metrics_fd_);
  if (lock_fd_ >= 0) ::close(lock_fd_);  // releases the flock
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
    std::string kept;
    std::ifstream in(path);
    for (std::string line; std::getline(in, line);) {
      // A torn line (no newline at the end of the file, or not JSON) is dropped too.
      if (in.eof()) break;
      nlohmann::json row = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
      if (row.is_object() && row.contains("step") && row["step"].is_number_integer() &&
          row["step"].get<int64_t>() <= keep_through)
        kept += line + "\n";
    }
    in.close();
    write_file_atomic(path, kept);
    metrics_fd_ = ::open(path.c_str(), O_WRONLY | O_APPEND | O_CLOEXEC);
    SP_CHECK(metrics_fd_ >= 0, "cannot open ", path, " for appending: ", std::strerror(errno));
  });
}

void RunDir::append_metrics(const nlohmann::json& row) {
  if (metrics_fd_ < 0) return;
  const std::string line = row.dump() + "\n";
  const off_t before = ::lseek(metrics_fd_, 0, SEEK_END);
  size_t done = 0;
  int e = 0;
  while (done < line.size()) {  // a short write is retried; the retry reports the cause
    const ssize_t n = ::write(metrics_fd_, line.data() + done, line.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      e = n < 0 ? errno : EIO;
      break;
    }
    done += size_t(n);
  }
  if (done == line.size()) return;
  // Cut the partial row back off, so every line in the file stays a whole JSON object.
  if (before >= 0) (void)!::ftruncate(metrics_fd_, before);
  if (metrics_failed_) return;
  metrics_failed_ = true;
  std::string msg = "seqpar: warning: writing " + out_ + "/metrics.jsonl failed (" +
                    std::strerror(e) + ") at step " + row.value("step", nlohmann::json()).dump() +
                    "; rows that cannot be written are dropped, training and checkpoints go on\n";
  (void)!::write(STDERR_FILENO, msg.data(), msg.size());
}

}  // namespace seqpar
