#include "train/progress.hpp"

#include <unistd.h>

#include <cstdio>

namespace seqpar {

Progress::Progress(ProgressMode mode, bool active, int64_t total_steps)
    : total_(total_steps), start_(std::chrono::steady_clock::now()) {
  if (!active || mode == ProgressMode::none) return;
  bar_ = mode == ProgressMode::bar || (mode == ProgressMode::automatic && isatty(STDERR_FILENO));
  lines_ = !bar_;
}

static std::string hms(double s) {
  char b[32];
  int t = int(s + 0.5);
  if (t >= 3600)
    std::snprintf(b, sizeof(b), "%dh%02dm", t / 3600, t / 60 % 60);
  else
    std::snprintf(b, sizeof(b), "%dm%02ds", t / 60, t % 60);
  return b;
}

void Progress::update(int64_t step, double loss, double tokens_per_s, const nlohmann::json& rec) {
  if (first_step_ < 0) {
    first_step_ = step - 1;
    start_ = std::chrono::steady_clock::now();
  }
  const double elapsed =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
  const double done = double(step - first_step_);
  const double eta = done > 0 ? elapsed / done * double(total_ - step) : 0.0;
  if (bar_) {
    const int width = 30;
    int filled = total_ > 0 ? int(width * step / total_) : width;
    std::string b(filled, '#');
    b.resize(width, '.');
    std::fprintf(stderr, "\r[%s] %lld/%lld loss %.4f  %.0f tok/s  ETA %s ", b.c_str(),
                 (long long)step, (long long)total_, loss, tokens_per_s, hms(eta).c_str());
    std::fflush(stderr);
  } else if (lines_) {
    std::printf("step %lld/%lld loss %.4f grad_norm %.3f lr %.3g %.0f tok/s %.0f ms",
                (long long)step, (long long)total_, loss, rec.value("grad_norm", 0.0),
                rec.value("lr", 0.0), tokens_per_s, rec.value("step_ms", 0.0));
    if (rec.contains("answer_acc"))
      std::printf(" answer_acc %.3f", rec["answer_acc"].get<double>());
    if (rec.contains("val_loss"))
      std::printf(" val_loss %.4f val_ppl %.3f", rec["val_loss"].get<double>(),
                  rec["val_ppl"].get<double>());
    if (rec.contains("val_answer_acc"))
      std::printf(" val_answer_acc %.3f", rec["val_answer_acc"].get<double>());
    std::printf("\n");
    std::fflush(stdout);
  }
}

void Progress::finish() {
  if (bar_) std::fprintf(stderr, "\n");
}

}  // namespace seqpar
