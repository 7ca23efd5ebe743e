#include <CLI/CLI.hpp>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <iostream>
#include <nlohmann/json.hpp>

#include "cli/command.hpp"
#include "core/file.hpp"
#include "data/corpus.hpp"
#include "data/token_file.hpp"
#include "data/tokenizer.hpp"
#include "train/setup.hpp"

namespace seqpar {
namespace {

struct TokenizeOptions {
  CLI::App *cmd = nullptr, *train = nullptr, *encode = nullptr, *decode = nullptr, *info = nullptr;
  std::string input, model, output, doc_split = "auto", model_type = "bpe";
  int vocab_size = 0;
  bool verbose = false, quiet = false;
};
TokenizeOptions opt;

// "4.40 MB", "1.15 M": human figures for progress lines.
std::string si(double v, const char* unit) {
  char b[32];
  if (v >= 1e9)
    std::snprintf(b, sizeof b, "%.2f G%s", v / 1e9, unit);
  else if (v >= 1e6)
    std::snprintf(b, sizeof b, "%.2f M%s", v / 1e6, unit);
  else if (v >= 1e3)
    std::snprintf(b, sizeof b, "%.1f k%s", v / 1e3, unit);
  else
    std::snprintf(b, sizeof b, "%.0f %s", v, unit);
  return b;
}

nlohmann::json token_file_json(const TokenFile& f) {
  return {{"token_file", f.path()},
          {"format_version", f.version()},
          {"vocab", f.vocab()},
          {"dtype", f.token_bytes() == 2 ? "uint16" : "uint32"},
          {"tokens", f.num_tokens()},
          {"documents", f.num_docs()},
          {"eos", f.eos()},
          {"tokenizer_hash", hash_hex(f.tokenizer_hash())},
          {"tokenizer_kind", tokenizer_record_name(f.tokenizer_kind(), f.tokenizer_hash())},
          {"body_checksum", hash_hex(f.body_checksum())},
          {"bytes", f.file_bytes()}};
}

nlohmann::json tokenizer_json(const Tokenizer& t) {
  return {{"model", t.path()},         {"kind", tokenizer_kind_name(t.kind())},
          {"describe", t.describe()},  {"vocab", t.vocab_size()},
          {"bos", t.bos_id()},         {"eos", t.eos_id()},
          {"hash", hash_hex(t.hash())}};
}

void run_train() {
  const auto t0 = std::chrono::steady_clock::now();
  TokenizerTrainOptions o;
  o.vocab_size = opt.vocab_size;
  o.model_type = opt.model_type;
  o.verbose = opt.verbose;
  train_tokenizer(opt.input, opt.model, o);
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  nlohmann::json j = tokenizer_json(Tokenizer(opt.model));
  j["input"] = opt.input;
  j["seconds"] = s;
  std::cout << j.dump() << std::endl;
}

void run_encode() {
  Tokenizer tok(opt.model);
  auto last = std::chrono::steady_clock::now();
  auto progress = [&](const EncodeStats& st) {
    const auto now = std::chrono::steady_clock::now();
    const bool done = st.bytes == st.bytes_total;
    if (opt.quiet || (!done && now - last < std::chrono::seconds(2))) return;
    last = now;
    std::cerr << "tokenize encode: " << int(100.0 * st.bytes / st.bytes_total) << "% ("
              << si(double(st.bytes), "B") << " of " << si(double(st.bytes_total), "B") << "), "
              << si(double(st.tokens), "tokens") << ", " << st.docs << " documents, "
              << si(st.tokens / std::max(st.seconds, 1e-9), "tokens/s") << std::endl;
  };
  const EncodeStats st =
      encode_text_file(tok, opt.input, opt.output, parse_doc_split(opt.doc_split), progress);
  nlohmann::json j = token_file_json(TokenFile(opt.output));
  j["tokenizer_kind"] = tokenizer_kind_name(tok.kind());
  j["input"] = opt.input;
  j["doc_split"] = doc_split_name(st.split);
  j["seconds"] = st.seconds;
  j["tokens_per_second"] = st.tokens / std::max(st.seconds, 1e-9);
  std::cout << j.dump() << std::endl;
}

void run_decode() {
  Tokenizer tok(opt.model);
  const DecodeStats st = decode_token_file(tok, opt.input, opt.output);
  nlohmann::json j = {
      {"output", opt.output},  {"bytes", st.bytes},
      {"tokens", st.tokens},   {"documents", st.docs},
      {"seconds", st.seconds}, {"tokens_per_second", st.tokens / std::max(st.seconds, 1e-9)}};
  std::cout << j.dump() << std::endl;
}

void run_info() {
  nlohmann::json j = nlohmann::json::object();
  if (!opt.model.empty()) j["tokenizer"] = tokenizer_json(Tokenizer(opt.model));
  if (!opt.input.empty()) {
    const auto t0 = std::chrono::steady_clock::now();
    TokenFile f(opt.input);  // validates the whole file
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (!opt.model.empty()) {
      f.check_tokenizer(Tokenizer(opt.model).hash(), "tokenizer '" + opt.model + "'");
    }
    j["file"] = token_file_json(f);
    j["file"]["validate_seconds"] = s;
  }
  std::cout << j.dump(2) << std::endl;
}

}  // namespace

static CLI::App* add_tokenize_command(CLI::App& app) {
  opt.cmd = app.add_subcommand(
      "tokenize",
      "Tokenizers (SentencePiece .model files, trained here or not, and Hugging Face "
      "tokenizer.json files with a byte-level BPE model) and token files (pre-tokenized, "
      "memory-mapped training data). Runs on one process.");
  opt.cmd->require_subcommand(1);

  opt.train = opt.cmd->add_subcommand(
      "train",
      "Train a byte-fallback BPE tokenizer on the lines of a text file. Deterministic (all "
      "lines, no sampling, one thread) and lossless on UTF-8 (decode gives the text back).");
  opt.train
      ->add_option("--input", opt.input, "text file to train on (UTF-8, one sentence per line)")
      ->required();
  opt.train
      ->add_option("--vocab-size", opt.vocab_size,
                   "vocabulary size V, including 3 control ids (<unk>, <s>, </s>) and 256 byte "
                   "pieces, e.g. 8192")
      ->required()
      ->check(CLI::Range(260, 1 << 24));
  opt.train->add_option("--model", opt.model, "SentencePiece model file to write, e.g. OUT.model")
      ->required();
  opt.train->add_option("--model-type", opt.model_type, "bpe (default) or unigram")
      ->check(CLI::IsMember({"bpe", "unigram"}));
  opt.train->add_flag("--verbose", opt.verbose, "show SentencePiece's training log");

  opt.encode = opt.cmd->add_subcommand(
      "encode",
      "Tokenize a UTF-8 text file into a token file: documents, each followed by EOS, with "
      "the vocabulary size, the tokenizer's hash and a body checksum in the header. Text that "
      "is not UTF-8 is refused for a SentencePiece model, naming the first bad byte (a byte-level "
      "BPE tokenizer.json encodes any bytes). Progress goes to stderr.");
  opt.encode
      ->add_option("--model", opt.model,
                   "tokenizer: a SentencePiece .model (e.g. from tokenize train) or a byte-level "
                   "BPE tokenizer.json; told apart by content")
      ->required();
  opt.encode->add_option("--input", opt.input, "text file to encode")->required();
  opt.encode->add_option("--output", opt.output, "token file to write, e.g. OUT.tok")->required();
  opt.encode
      ->add_option("--doc-split", opt.doc_split,
                   "how the text is cut into documents: none (one document), blank-line (a "
                   "blank line ends a document), kjv-chapter (one per Bible chapter, from the "
                   "'Ge1:1 ' verse references), or auto (default: kjv-chapter if the first line "
                   "starts with a verse reference, else blank-line)")
      ->type_name(join_names(enum_names<DocSplit>(), "|"));
  opt.encode->add_flag("--quiet", opt.quiet, "no progress lines on stderr");

  opt.decode = opt.cmd->add_subcommand(
      "decode",
      "Turn a token file back into text: each document without its EOS, one after another. "
      "The model must be the one that encoded the file (its hash is checked).");
  opt.decode
      ->add_option("--model", opt.model,
                   "tokenizer (.model or tokenizer.json) that encoded the input")
      ->required();
  opt.decode->add_option("--input", opt.input, "token file to decode")->required();
  opt.decode->add_option("--output", opt.output, "text file to write")->required();

  opt.info = opt.cmd->add_subcommand(
      "info",
      "Validate a token file (header, size, body checksum, document table, every token < V) "
      "and/or a model, and print what they hold as JSON; with both, check the file was "
      "encoded by the model.");
  opt.info->add_option("--input", opt.input, "token file to validate and describe");
  opt.info->add_option("--model", opt.model, "tokenizer (.model or tokenizer.json) to describe");
  return opt.cmd;
}

namespace {

class TokenizeCommand : public Command {
 public:
  explicit TokenizeCommand(CLI::App& parent) { app = add_tokenize_command(parent); }
  bool one_process() const override { return true; }
  nlohmann::json prepare(int) override {
    SP_CHECK_USAGE(!opt.info->parsed() || !opt.input.empty() || !opt.model.empty(),
                   "tokenize info needs --input TOKEN_FILE and/or --model MODEL (see --help)");
    if (opt.encode->parsed()) (void)parse_doc_split(opt.doc_split);  // a usage error, up front
    // Before anything is read or written: every command that writes names its inputs here.
    // (train/setup's check_output_path: the same inode under any name, or a checkpoint.)
    if (opt.train->parsed())
      check_output_path(opt.model, "train --model", {{"--input", opt.input}});
    if (opt.encode->parsed() || opt.decode->parsed())
      check_output_path(opt.output, opt.encode->parsed() ? "encode --output" : "decode --output",
                        {{"--input", opt.input}, {"--model", opt.model}});
    return nlohmann::json::object();
  }
  int run(Comm&) override {
    if (opt.train->parsed()) run_train();
    if (opt.encode->parsed()) run_encode();
    if (opt.decode->parsed()) run_decode();
    if (opt.info->parsed()) run_info();
    return 0;
  }
};

}  // namespace

std::unique_ptr<Command> make_tokenize_command(CLI::App& app) {
  return std::make_unique<TokenizeCommand>(app);
}

}  // namespace seqpar
