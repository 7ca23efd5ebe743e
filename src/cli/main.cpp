// seqpar command line. The only place that parses argv or chooses an exit code:
//   0 success, 1 runtime error (bad data, I/O, divergence), 2 usage error (flags, config,
//   shapes that do not divide, a setting a resume refuses).
// Start-up is two phases. Each rank first parses its argv and config on its own, with no
// communication, whatever it finds. Then every rank takes part in one agreement (an
// all-gather of each rank's verdict, then of its command and configuration), so a rank
// with a bad flag, an unknown one, or another subcommand (an MPMD launch) is refused on
// every rank together: the bad rank prints its reason, the others "rank k refused: ...",
// one line each. Errors found later that every rank learns of together (agree_or_throw)
// exit at once; one that only some ranks hit waits briefly for the others, then aborts the
// job so no rank waits forever in a collective.
#include <mpi.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <chrono>
#include <csignal>
#include <iostream>
#include <thread>

#include "cli/command.hpp"
#include "comm/comm.hpp"
#include "core/check.hpp"

using namespace seqpar;

namespace {

// Waits up to `timeout_s` for every rank to reach the same point; false if some never do.
bool all_ranks_arrive(double timeout_s) {
  MPI_Request req;
  if (MPI_Ibarrier(MPI_COMM_WORLD, &req) != MPI_SUCCESS) return false;
  auto t0 = std::chrono::steady_clock::now();
  int done = 0;
  while (!done) {
    if (MPI_Test(&req, &done, MPI_STATUS_IGNORE) != MPI_SUCCESS) return false;
    if (std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count() > timeout_s)
      return false;
    if (!done) std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  return true;
}

// One line per error, written with one write(2) so ranks sharing a terminal do not
// interleave mid-line.
void print_line(const std::string& line) {
  const std::string l = line + "\n";
  (void)!::write(STDERR_FILENO, l.data(), l.size());
}

int fail(const std::exception& e, int rank, int size) {
  const auto* err = dynamic_cast<const Error*>(&e);
  const int code = dynamic_cast<const UsageError*>(&e) ? 2 : 1;
  std::string m = e.what();
  if (size > 1 && m.rfind("[rank ", 0) != 0 && m.rfind("rank ", 0) != 0)
    m = "[rank " + std::to_string(rank) + "] " + m;
  print_line("seqpar: error: " + m);
  if (size > 1 && !(err && err->agreed) && !all_ranks_arrive(10.0)) {
    print_line("seqpar: [rank " + std::to_string(rank) +
               "] other ranks did not fail; aborting the job");
    MPI_Abort(MPI_COMM_WORLD, code);
  }
  return code;
}

}  // namespace

int main(int argc, char** argv) {
  // A file-size limit (ulimit -f) then fails the write with EFBIG, reported like a full
  // disk, instead of killing the process mid-checkpoint.
  std::signal(SIGXFSZ, SIG_IGN);
  MpiSession mpi(&argc, &argv);
  int rank = 0, size = 1;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &size);

  CLI::App app{
      "seqpar: train long-sequence Transformers with sequence parallelism over MPI.\n"
      "Run under mpiexec for several ranks, e.g. mpiexec -n 4 seqpar train --sp 1 (data "
      "parallel)."};
  app.require_subcommand(1);
  app.set_version_flag("--version", "seqpar 0.1.0");
  std::vector<std::unique_ptr<Command>> commands;
  for (auto make : {make_train_command, make_plan_command, make_check_command,
                    make_tokenize_command, make_generate_command, make_export_command,
                    make_eval_command, make_plot_command, make_import_command})
    commands.push_back(make(app));

  // ---- phase 1: this rank alone (no communication, whatever it finds) ----------------
  Command* cmd = nullptr;
  std::string name;  // the subcommand, "help", or "" after an error
  std::exception_ptr local_error;
  nlohmann::json agreed;  // what every rank must have alike
  try {
    try {
      app.parse(argc, argv);
    } catch (const CLI::ParseError& e) {
      if (e.get_exit_code() != 0)
        SP_FAIL_USAGE(e.what(), " (see seqpar ",
                      app.get_subcommands().empty()
                          ? std::string("--help")
                          : app.get_subcommands()[0]->get_name() + " --help",
                      ")");
      name = "help";
      if (rank == 0) app.exit(e);  // prints the help or the version
    }
    if (name.empty()) {
      CLI::App* chosen = app.get_subcommands().at(0);
      name = chosen->get_name();
      for (auto& c : commands)
        if (c->app == chosen) cmd = c.get();
      SP_CHECK(cmd, "no command for subcommand ", name);
      SP_CHECK_USAGE(!cmd->one_process() || size == 1, "seqpar ", name,
                     " runs on one process, got ", size, " ranks: run it without mpiexec");
      agreed = cmd->prepare(size);
    }
  } catch (...) {
    local_error = std::current_exception();
  }

  // ---- phase 2: one agreement that every rank reaches ---------------------------------
  try {
    Comm world = Comm::world();
    agree_or_throw(world, [&] {
      if (local_error) std::rethrow_exception(local_error);
    });
    try {
      world.check_same("the command line (subcommand and configuration)",
                       name + " " + agreed.dump());
    } catch (Error& e) {
      UsageError u(e.what());
      u.agreed = true;  // every rank saw the same values and throws alike
      throw u;
    }
    if (name == "help") return 0;
    // ---- phase 3: the subcommand -----------------------------------------------------
    return cmd->run(world);
  } catch (const std::exception& e) {
    return fail(e, rank, size);
  }
}
