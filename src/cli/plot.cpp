#include "cli/plot.hpp"

#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>

#include "cli/command.hpp"
#include "core/check.hpp"
#include "core/file.hpp"
#include "train/setup.hpp"

extern char** environ;

namespace seqpar {

namespace fs = std::filesystem;

namespace {

struct Series {
  std::vector<nlohmann::json> rows;  // metrics rows in step order
  std::vector<std::string> mem;      // arena categories with a non-zero peak, then "total"
  bool val = false, answers = false, val_answers = false;
};

Series read_metrics(const std::string& path) {
  std::ifstream in(path);
  SP_CHECK(in.good(), "cannot read ", path);
  Series s;
  std::map<int64_t, nlohmann::json> by_step;  // a resumed run rewrote its tail: last row wins
  for (std::string line; std::getline(in, line);) {
    nlohmann::json r = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
    if (!r.is_object() || !r.contains("step") || !r["step"].is_number_integer()) continue;
    const int64_t step = r["step"].get<int64_t>();
    by_step[step] = std::move(r);
  }
  SP_CHECK(!by_step.empty(), path, " holds no metrics rows (a JSON object with a \"step\" per ",
           "line): has the run logged a step yet?");
  std::set<std::string> nonzero;
  for (auto& [step, r] : by_step) {
    s.val |= r.contains("val_loss");
    s.answers |= r.contains("answer_acc");
    s.val_answers |= r.contains("val_answer_acc");
    if (r.contains("peak_bytes") && r["peak_bytes"].is_object())
      for (auto& [k, v] : r["peak_bytes"].items())
        if (k != "total" && v.is_number() && v.get<double>() > 0) nonzero.insert(k);
    s.rows.push_back(std::move(r));
  }
  s.mem.assign(nonzero.begin(), nonzero.end());
  s.mem.push_back("total");
  return s;
}

// A number for gnuplot, NaN (set datafile missing) when the row lacks it.
std::string num(const nlohmann::json& r, const std::string& key, double scale = 1.0) {
  if (!r.contains(key) || !r[key].is_number()) return "NaN";
  std::ostringstream os;
  os.precision(9);
  os << r[key].get<double>() * scale;
  return os.str();
}

// gnuplot string literal (single quotes: only ' needs doubling).
std::string gp_str(const std::string& s) {
  std::string o(1, '\'');
  for (char c : s) {
    o.push_back(c);
    if (c == '\'') o.push_back('\'');
  }
  o.push_back('\'');
  return o;
}

int run_program(const std::string& exe, const std::vector<std::string>& args,
                const std::string& cwd) {
  std::vector<char*> argv;
  argv.push_back(const_cast<char*>(exe.c_str()));
  for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  // gnuplot reads and writes the files named in the script relative to `cwd`.
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_addchdir_np(&fa, cwd.c_str());
  pid_t pid;
  const int e = posix_spawn(&pid, exe.c_str(), &fa, nullptr, argv.data(), environ);
  posix_spawn_file_actions_destroy(&fa);
  SP_CHECK(e == 0, "cannot start ", exe, ": ", std::strerror(e));
  int status = 0;
  while (waitpid(pid, &status, 0) < 0)
    SP_CHECK(errno == EINTR, "waiting for ", exe, ": ", std::strerror(errno));
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

}  // namespace

std::string find_on_path(const std::string& name) {
  const char* path = std::getenv("PATH");
  if (!path) return "";
  std::stringstream ss(path);
  for (std::string d; std::getline(ss, d, ':');) {
    const fs::path c = fs::path(d.empty() ? std::string(".") : d) / name;  // "" is the cwd
    std::error_code ec;
    if (fs::is_regular_file(c, ec) && ::access(c.c_str(), X_OK) == 0) return c.string();
  }
  return "";
}

std::vector<std::string> plot_run(const std::string& dir) {
  std::error_code ec;
  SP_CHECK(fs::is_directory(dir, ec), "run directory '", dir, "' does not exist");
  const std::string metrics = dir + "/metrics.jsonl";
  SP_CHECK(fs::exists(metrics, ec), "'", dir, "' has no metrics.jsonl: is it a run directory ",
           "(seqpar train --out DIR)?");
  const Series s = read_metrics(metrics);
  const std::string gnuplot = find_on_path("gnuplot");
  SP_CHECK(!gnuplot.empty(),
           "gnuplot not found on PATH: seqpar plot draws with it. Install Debian's gnuplot-nox "
           "(apt-get install gnuplot-nox, or bash scripts/setup.sh), then run seqpar plot ",
           dir, " again");

  const fs::path out = fs::path(dir) / "plots";
  fs::create_directories(out, ec);
  SP_CHECK(!ec, "cannot create ", out.string(), ": ", ec.message());
  {
    std::ofstream t(out / "metrics.tsv");
    t << "# step loss tokens_per_s answer_acc";
    for (const auto& m : s.mem) t << " peak_" << m << "_MiB";
    t << "\n";
    for (const auto& r : s.rows) {
      t << r["step"].get<int64_t>() << '\t' << num(r, "loss") << '\t' << num(r, "tokens_per_s")
        << '\t' << num(r, "answer_acc");
      const nlohmann::json peak = r.value("peak_bytes", nlohmann::json::object());
      for (const auto& m : s.mem) t << '\t' << num(peak, m, 1.0 / (1 << 20));
      t << '\n';
    }
    SP_CHECK(t.good(), "cannot write ", (out / "metrics.tsv").string());
    std::ofstream v(out / "val.tsv");  // only the evaluated steps, so their points connect
    v << "# step val_loss val_answer_acc\n";
    for (const auto& r : s.rows)
      if (r.contains("val_loss"))
        v << r["step"].get<int64_t>() << '\t' << num(r, "val_loss") << '\t'
          << num(r, "val_answer_acc") << '\n';
    SP_CHECK(v.good(), "cannot write ", (out / "val.tsv").string());
  }
  // --profile runs: each step's phases (ms), cumulated left to right for a stacked plot.
  std::vector<std::string> phases;
  for (const auto& r : s.rows)
    if (r.contains("profile_ms") && phases.empty())
      for (const auto& [k, v] : r["profile_ms"].items()) phases.push_back(k);
  if (!phases.empty()) {
    std::ofstream t(out / "profile.tsv");
    t << "# step step_ms, then cumulative ms:";
    for (const auto& ph : phases) t << ' ' << ph;
    t << '\n';
    for (const auto& r : s.rows) {
      if (!r.contains("profile_ms")) continue;
      t << r["step"].get<int64_t>() << '\t' << num(r, "step_ms");
      double acc = 0;
      for (const auto& ph : phases) t << '\t' << (acc += r["profile_ms"].value(ph, 0.0));
      t << '\n';
    }
    SP_CHECK(t.good(), "cannot write ", (out / "profile.tsv").string());
  }
  std::vector<std::string> pngs = {"loss.png", "tokens_per_s.png", "memory.png"};
  if (s.answers || s.val_answers) pngs.push_back("answer_acc.png");
  if (!phases.empty()) pngs.push_back("profile.png");
  {
    const std::string title = fs::path(dir).lexically_normal().filename().string();
    std::ofstream g(out / "plots.gp");
    g << "# written by seqpar plot from " << metrics << "\n"
      << "if (strstrt(GPVAL_TERMINALS, 'pngcairo') > 0) {\n"
      << "  set terminal pngcairo size 900,540 enhanced font 'sans,10'\n"
      << "} else {\n  set terminal png size 900,540\n}\n"
      << "set datafile missing 'NaN'\nset datafile separator '\\t'\n"
      << "set grid\nset key top right\nset xlabel 'step'\n";
    g << "set output 'loss.png'\nset title " << gp_str(title + ": loss") << " noenhanced\n"
      << "set ylabel 'loss (nats per counted target)'\n"
      << "plot 'metrics.tsv' using 1:2 with lines lw 1.5 title 'train loss'"
      << (s.val ? ", 'val.tsv' using 1:2 with linespoints lw 2 pt 7 title 'validation loss'" : "")
      << "\n";
    g << "set output 'tokens_per_s.png'\nset title " << gp_str(title + ": throughput")
      << " noenhanced\n"
      << "set ylabel 'tokens/s (global, step time)'\n"
      << "plot 'metrics.tsv' using 1:3 with lines lw 1.5 title 'tokens/s'\n";
    g << "set output 'memory.png'\nset title " << gp_str(title + ": arena peak per category")
      << " noenhanced\nset ylabel 'peak MiB (rank 0)'\nset yrange [0:*]\nset key outside "
         "right\nplot ";
    for (size_t i = 0; i < s.mem.size(); ++i)
      g << (i ? ", " : "") << "'metrics.tsv' using 1:" << 5 + i << " with lines lw "
        << (s.mem[i] == "total" ? 2.5 : 1.5) << " title " << gp_str(s.mem[i]) << " noenhanced";
    g << "\nset key top right\nset autoscale y\n";
    if (s.answers || s.val_answers) {
      g << "set output 'answer_acc.png'\nset title " << gp_str(title + ": answer accuracy")
        << " noenhanced\nset ylabel 'accuracy'\nset yrange [0:1.05]\nplot ";
      if (s.answers) g << "'metrics.tsv' using 1:4 with lines lw 1.5 title 'train (batch)'";
      if (s.val_answers)
        g << (s.answers ? ", " : "")
          << "'val.tsv' using 1:3 with linespoints lw 2 pt 7 title 'validation'";
      g << "\n";
    }
    if (!phases.empty()) {  // stacked: each phase fills from the one below it
      g << "set output 'profile.png'\nset title " << gp_str(title + ": step time by phase")
        << " noenhanced\nset ylabel 'ms per step (rank 0)'\nset yrange [0:*]\nset key outside "
           "right\nplot ";
      for (size_t i = phases.size(); i-- > 0;) {
        const std::string low = i ? std::to_string(2 + i) : std::string("(0)");
        g << (i + 1 < phases.size() ? ", " : "") << "'profile.tsv' using 1:" << low << ":" << 3 + i
          << " with filledcurves title " << gp_str(phases[i]) << " noenhanced";
      }
      g << ", 'profile.tsv' using 1:2 with lines lw 2 lc 'black' title 'step\\_ms'\n";
      g << "set key top right\nset autoscale y\n";
    }
    g << "unset output\n";
    SP_CHECK(g.good(), "cannot write ", (out / "plots.gp").string());
  }
  // Stale PNGs from an earlier call must not pass for new ones.
  for (const auto& p : pngs) fs::remove(out / p, ec);
  const int rc = run_program(gnuplot, {"plots.gp"}, out.string());
  SP_CHECK(rc == 0, gnuplot, " failed (exit ", rc, ") on ", (out / "plots.gp").string());
  std::vector<std::string> written;
  for (const auto& p : pngs) {
    const fs::path f = out / p;
    SP_CHECK(fs::is_regular_file(f, ec) && fs::file_size(f, ec) > 0, "gnuplot did not write ",
             f.string());
    written.push_back(f.string());
  }
  return written;
}

namespace {

// Draws `png` with gnuplot from files write(dir) puts in a temporary directory of their own
// (script "plot.gp"; the directory is removed after). `flag` names the option in errors.
void draw_png(const std::string& flag, const std::string& png,
              const std::function<void(const fs::path& dir, const fs::path& target)>& write) {
  const std::string gnuplot = find_on_path("gnuplot");
  SP_CHECK(!gnuplot.empty(), "gnuplot not found on PATH: ", flag,
           " draws with it. Install Debian's gnuplot-nox (apt-get install gnuplot-nox, or bash "
           "scripts/setup.sh), or leave out ",
           flag, " ", png);
  std::error_code ec;
  const fs::path target = fs::absolute(png, ec);
  SP_CHECK(!ec && !target.filename().empty(), flag, " '", png, "' is not a file path");
  SP_CHECK(fs::is_directory(target.parent_path(), ec), flag, " '", png, "': directory ",
           target.parent_path().string(), " does not exist");
  char tmpl[] = "/tmp/seqpar-plot-XXXXXX";
  SP_CHECK(::mkdtemp(tmpl) != nullptr,
           "cannot create a temporary directory: ", std::strerror(errno));
  const fs::path tmp = tmpl;
  struct Cleanup {
    fs::path p;
    ~Cleanup() {
      std::error_code e;
      fs::remove_all(p, e);
    }
  } cleanup{tmp};
  write(tmp, target);
  fs::remove(target, ec);  // a stale PNG must not pass for a new one
  const int rc = run_program(gnuplot, {"plot.gp"}, tmp.string());
  SP_CHECK(rc == 0, gnuplot, " failed (exit ", rc, ") drawing ", target.string());
  SP_CHECK(fs::is_regular_file(target, ec) && fs::file_size(target, ec) > 0,
           "gnuplot did not write ", target.string());
}

}  // namespace

void plot_needle_heatmap(const nlohmann::json& sweep, const std::string& png) {
  draw_png("--heatmap", png, [&](const fs::path& tmp, const fs::path& target) {
    const auto& lengths = sweep.at("lengths");
    const auto& depths = sweep.at("depths");
    const auto& acc = sweep.at("digit_acc");
    {
      // One row per cell: length index, depth index, accuracy (image plots want grid indices;
      // the tics carry the real values, so unevenly spaced lengths get even columns).
      std::ofstream d(tmp / "cells.tsv");
      for (size_t i = 0; i < lengths.size(); ++i)
        for (size_t j = 0; j < depths.size(); ++j)
          d << i << '\t' << j << '\t' << acc[i][j].get<double>() << '\n';
      SP_CHECK(d.good(), "cannot write ", (tmp / "cells.tsv").string());
    }
    {
      std::ofstream g(tmp / "plot.gp");
      const int w = 220 + 110 * int(lengths.size()), h = 160 + 60 * int(depths.size());
      g << "if (strstrt(GPVAL_TERMINALS, 'pngcairo') > 0) {\n"
        << "  set terminal pngcairo size " << w << "," << h << " enhanced font 'sans,10'\n"
        << "} else {\n  set terminal png size " << w << "," << h << "\n}\n"
        << "set output " << gp_str(target.string()) << "\n"
        << "set datafile separator '\\t'\n"
        << "set title "
        << gp_str("passkey digit accuracy, step " +
                  std::to_string(sweep.at("step").get<int64_t>()) + ", " +
                  std::to_string(sweep.at("samples").get<int64_t>()) + " validation keys per cell")
        << " noenhanced\n"
        << "set xlabel 'context length L'\nset ylabel 'needle depth (0 = start, 1 = just "
           "before the question)'\n"
        << "set cbrange [0:1]\nset cblabel 'accuracy'\n"
        << "set palette defined (0 '#b2182b', 0.5 '#fddb6d', 1 '#1a9850')\n"
        << "set xrange [-0.5:" << double(lengths.size()) - 0.5 << "]\n"
        << "set yrange [-0.5:" << double(depths.size()) - 0.5 << "]\n"
        << "set xtics (";
      for (size_t i = 0; i < lengths.size(); ++i)
        g << (i ? ", " : "") << "'" << lengths[i].get<int64_t>() << "' " << i;
      g << ")\nset ytics (";
      for (size_t j = 0; j < depths.size(); ++j) {
        std::ostringstream v;
        v << depths[j].get<double>();
        g << (j ? ", " : "") << "'" << v.str() << "' " << j;
      }
      g << ")\nset tics scale 0\nunset key\n"
        << "plot 'cells.tsv' using 1:2:3 with image, \\\n"
        << "     '' using 1:2:(sprintf('%.3f', $3)) with labels font ',10'\n"
        << "unset output\n";
      SP_CHECK(g.good(), "cannot write ", (tmp / "plot.gp").string());
    }
  });
}

void plot_by_position(const std::vector<std::string>& reports, const std::string& png) {
  SP_CHECK_USAGE(!reports.empty(), "--by-position needs at least one eval report");
  // Each report's buckets, read and checked before anything is drawn.
  std::vector<nlohmann::json> rows;
  for (const std::string& f : reports) {
    nlohmann::json j;
    try {
      j = nlohmann::json::parse(read_regular_file(f, "eval report"));
    } catch (const nlohmann::json::exception& e) {
      SP_FAIL_INPUT("eval report '", f, "' is not JSON: ", e.what());
    }
    SP_CHECK_INPUT(
        j.is_object() && j.contains("by_position") && j["by_position"].is_array(), "eval report '",
        f, "' has no \"by_position\": write it with seqpar eval --by-position B --output ", f);
    rows.push_back(j["by_position"]);
  }
  draw_png("--by-position", png, [&](const fs::path& tmp, const fs::path& target) {
    for (size_t i = 0; i < rows.size(); ++i) {
      // x: the bucket's geometric middle position (log axis), y: its mean loss.
      const fs::path data = tmp / ("r" + std::to_string(i) + ".tsv");
      std::ofstream d(data);
      for (const auto& b : rows[i]) {
        if (b.at("loss").is_null()) continue;
        const double lo = std::max(1.0, double(b.at("begin").get<int64_t>()));
        const double hi = double(b.at("end").get<int64_t>());
        d << std::sqrt(lo * hi) << '\t' << b.at("loss").get<double>() << '\n';
      }
      SP_CHECK(d.good(), "cannot write ", data.string());
    }
    std::ofstream g(tmp / "plot.gp");
    g << "if (strstrt(GPVAL_TERMINALS, 'pngcairo') > 0) {\n"
      << "  set terminal pngcairo size 900,560 enhanced font 'sans,10'\n"
      << "} else {\n  set terminal png size 900,560\n}\n"
      << "set output " << gp_str(target.string()) << "\n"
      << "set datafile separator '\\t'\n"
      << "set title 'validation loss by position' noenhanced\n"
      << "set xlabel 'token position (log scale)'\nset ylabel 'mean loss (nats)'\n"
      << "set logscale x 2\nset grid\nset key top right noenhanced\n"
      << "plot ";
    for (size_t i = 0; i < rows.size(); ++i)
      g << (i ? ", \\\n     " : "") << "'r" << i << ".tsv' using 1:2 with linespoints lw 1.5 title "
        << gp_str(fs::path(reports[i]).stem().string());
    g << "\nunset output\n";
    SP_CHECK(g.good(), "cannot write ", (tmp / "plot.gp").string());
  });
}

}  // namespace seqpar

namespace seqpar {

namespace {

class PlotCommand : public Command {
 public:
  explicit PlotCommand(CLI::App& parent) {
    app = parent.add_subcommand(
        "plot",
        "Draw a run's loss, validation loss, tokens/s and arena peak memory per category "
        "against the step, as PNGs in DIR/plots/ (needs gnuplot: Debian's gnuplot-nox). One "
        "process.");
    app->add_option("DIR", dir, "run directory holding metrics.jsonl");
    app->add_option("--by-position", reports,
                    "instead of a run: eval reports written with `seqpar eval --by-position B "
                    "--output REPORT.json` (repeat or list several), drawn as loss against "
                    "position in one figure, one curve each")
        ->expected(1, -1);
    app->add_option("--output", output, "with --by-position: the PNG to write")
        ->default_str("by_position.png");
  }
  bool one_process() const override { return true; }
  nlohmann::json prepare(int) override {
    SP_CHECK_USAGE(dir.empty() != reports.empty(),
                   "give either a run directory DIR or --by-position REPORT.json ...");
    if (!reports.empty()) {
      std::vector<std::pair<std::string, std::string>> inputs;
      for (const std::string& r : reports) inputs.push_back({"--by-position", r});
      check_output_path(output, "--output", inputs);
    }
    return {{"dir", dir}, {"reports", reports}, {"output", output}};
  }
  int run(Comm&) override {
    if (!reports.empty()) {
      plot_by_position(reports, output);
      std::cout << output << std::endl;
      return 0;
    }
    for (const std::string& png : plot_run(dir)) std::cout << png << "\n";
    std::cout << std::flush;
    return 0;
  }

 private:
  std::string dir, output = "by_position.png";
  std::vector<std::string> reports;
};

}  // namespace

std::unique_ptr<Command> make_plot_command(CLI::App& app) {
  return std::make_unique<PlotCommand>(app);
}

}  // namespace seqpar
