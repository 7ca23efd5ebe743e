// Export a `llama` checkpoint as a Hugging Face LLaMA directory:
//   model.safetensors           the weights under LLaMA's names ([out, in] layouts), F32
//   config.json                 LlamaConfig's fields (architectures, hidden_size, ...)
//   tokenizer.model             the SentencePiece model, when given (its hash must match)
//   seqpar_reference.safetensors  "tokens" (1, T) and seqpar's "logits" (T, V) for them, so a
//                               reader can check that it reproduces the model (tools/
//                               check_hf_export.py does, with PyTorch alone)
//
// RoPE convention. seqpar rotates interleaved pairs (x[2i], x[2i+1]) of each head; Hugging
// Face's LLaMA rotates halves (x[i], x[i + d/2]). The exported q_proj and k_proj have the
// rows of every head permuted, row 2i → i and 2i+1 → d/2 + i, so a rotate-half reader
// computes the same attention: the permutation maps interleaved pairs onto half pairs, and
// q·k is unchanged when q and k are permuted alike. Nothing else changes. (This is the
// inverse of the permutation Hugging Face's convert_llama_weights_to_hf.py applies to
// Meta's interleaved checkpoints.) docs/llama.md has the details.
#pragma once
#include <nlohmann/json.hpp>
#include <string>

#include "model/config.hpp"

namespace seqpar {

// `checkpoint`: a step directory or a checkpoint root (its newest complete step).
// `tokenizer`: a SentencePiece .model to copy beside the weights ("" for none); refused if
// its hash is not the one the model was trained with. Writes into out_dir (created; files
// there are replaced). Returns a one-line summary.
// Hugging Face's rope_scaling object of the model ({"rope_type", "factor",
// "original_max_position_embeddings", and the type's own keys}); null for none.
nlohmann::json hf_rope_scaling(const ModelConfig& cfg);

std::string export_hf(const std::string& checkpoint, const std::string& out_dir,
                      const std::string& tokenizer);

}  // namespace seqpar
