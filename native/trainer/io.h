// Files the trainer writes and reads back: the LoRA adapter (llama.cpp's adapter GGUF),
// the full model (full fine-tuning), checkpoints, and the cached reference log-probs.
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "engine.h"

namespace st {

using KeyValues = std::vector<std::pair<std::string, std::string>>;

// The adapter in llama.cpp's LoRA format: general.type = adapter, adapter.type = lora,
// adapter.lora.alpha, tensors <base tensor>.lora_a [n_in, r] and .lora_b [r, n_out].
// `info` goes in as still.train.* strings. Written to a temporary file, then renamed.
bool write_adapter(Engine & e, const std::string & path, const KeyValues & info);

// The whole model, F32, with the base model's metadata (full fine-tuning).
bool write_full_model(Engine & e, const std::string & path, const KeyValues & info);

struct CheckpointState {
    int64_t step = 0;        // optimizer steps done
    int64_t steps = 0;       // in the whole run
    int64_t tokens = 0;      // tokens processed so far
    double elapsed = 0;      // seconds of training so far
    KeyValues config;        // the options that define the run; a resume must match them
};

// Trainable tensors, their AdamW moments, the step and the run's configuration.
bool write_checkpoint(Engine & e, const std::string & path, const CheckpointState & st);
// Restores the tensors; `expected` is compared with the stored configuration first.
bool read_checkpoint(Engine & e, const std::string & path, const KeyValues & expected, CheckpointState & st);

// Reference log-probabilities per DPO pair: magic "STILLREF", u32 version 1, u32 0,
// u64 n_pairs, u64 data fingerprint (0: not checked), then n_pairs × (f64 chosen, f64 rejected).
bool write_ref_logps(const std::string & path, uint64_t fingerprint, const std::vector<double> & chosen, const std::vector<double> & rejected);
// false with *missing = true when the file does not exist (and no error printed).
bool read_ref_logps(const std::string & path, uint64_t fingerprint, size_t n_pairs,
                    std::vector<double> & chosen, std::vector<double> & rejected, bool * missing);

} // namespace st
