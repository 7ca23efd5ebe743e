// Import of a Hugging Face model directory (`seqpar import --hf DIR --out RUN`, and
// `seqpar train --init-from DIR`): the inverse of train/hf_export.
//
// DIR is a model as users download it:
//   config.json    LlamaForCausalLM or MistralForCausalLM; every field is either mapped
//                  onto a model setting (hidden_size → dim, intermediate_size → ffn,
//                  num_hidden_layers → layers, num_attention_heads → heads,
//                  num_key_value_heads → kv_heads, rms_norm_eps → norm_eps, rope_theta,
//                  vocab_size → vocab, tie_word_embeddings, sliding_window → the run's
//                  window), checked to hold the one value seqpar implements (hidden_act
//                  silu, no attention or MLP biases, head_dim = hidden_size / heads, no
//                  rope_scaling yet), or known to carry no meaning for the weights
//                  (token ids, dtype, version strings). Anything else is refused by name:
//                  never a field silently ignored.
//   weights        model.safetensors, or shards listed by model.safetensors.index.json, in
//                  F32, BF16 or F16; every tensor the model needs, of its shape, and no
//                  tensor it would ignore (lm_head.weight of a tied model excepted).
//                  Converted to fp32 one tensor at a time, so the import never holds more
//                  than one tensor beside the file it streams into.
//   tokenizer      tokenizer.model (SentencePiece) or, without one, tokenizer.json
//                  (byte-level BPE: LLaMA 3, Qwen, SmolLM): loaded, its FNV-1a 64 becomes
//                  the model's tokenizer hash (data must be encoded with it), its size at
//                  most vocab_size. Import copies it into the run directory, where
//                  generate finds it.
// q_proj and k_proj rows go from Hugging Face's rotate-half order back to seqpar's
// interleaved pairs. The result is an ordinary checkpoint (step 0, AdamW moments zero)
// that resumes under any mesh.
#pragma once
#include <nlohmann/json.hpp>
#include <string>

#include "train/config.hpp"

namespace seqpar {

// The model settings config.json of `hf_dir` describes, as option-table keys ("dim",
// "heads", ..., and "window" for a sliding window), with "tokenizer_hash" from its
// tokenizer. InputError naming the file and the field for anything unsupported.
nlohmann::json hf_model_settings(const std::string& hf_dir);

// DIR/tokenizer.model if present, else DIR/tokenizer.json; InputError if neither.
std::string hf_tokenizer_path(const std::string& hf_dir);

// Writes step_00000000 of `checkpoints_root` from the weights of `hf_dir` for the run
// `cfg` (whose model must be the one hf_model_settings describes), recording `data_id`
// (data_identity) in the manifest. Returns the step directory. One process.
std::string import_hf(const std::string& hf_dir, const std::string& checkpoints_root,
                      const TrainConfig& cfg, const nlohmann::json& data_id);

}  // namespace seqpar
