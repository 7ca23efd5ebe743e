// `seqpar generate`: text from a checkpoint, with a KV cache and a sequence-parallel
// prefill (infer/generate.hpp). Runs under mpiexec on tp·sp ranks; the text streams to
// stdout from rank 0 as it is sampled, and one JSON line of figures goes to stderr.
#pragma once
#include <nlohmann/json.hpp>

namespace CLI {
class App;
}

namespace seqpar {

class Comm;

// Adds the `generate` subcommand to `app`; the parsed values live in this file's state.
CLI::App* add_generate_command(CLI::App& app);
// The parsed options, validated on this rank alone (no communication): what every rank
// must have alike. Throws UsageError for a bad value.
nlohmann::json generate_options();
// Runs it. Collective over world. Returns the exit code (errors are thrown).
int run_generate(Comm& world);

}  // namespace seqpar
