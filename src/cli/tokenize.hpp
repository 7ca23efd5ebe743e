// `seqpar tokenize train|encode|decode|info`: SentencePiece tokenizers and token files
// (src/data/). Runs on one process: under mpiexec with more than one rank every rank
// refuses (exit 2) rather than have several processes write the same files.
#pragma once

namespace CLI {
class App;
}

namespace seqpar {

// Adds the `tokenize` subcommand and its own subcommands to `app`. The parsed values are
// kept in this file's state for the life of the process.
CLI::App* add_tokenize_command(CLI::App& app);

// Runs the parsed `tokenize` subcommand. Returns the exit code: 0 done, 1 runtime error
// (a missing or corrupt file, a tokenizer that does not match), 2 usage error.
int run_tokenize(int rank, int size);

}  // namespace seqpar
