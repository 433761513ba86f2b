// The frozen base model: hyperparameters and weights read from a GGUF file with gguf.h,
// for the llama family that the trainer builds its own graph for (llama, qwen2, qwen3).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "ggml-backend.h"
#include "ggml.h"
#include "gguf.h"

namespace st {

struct Hparams {
    std::string arch;          // "llama", "qwen2" or "qwen3"
    std::string name;          // general.name, for messages
    int64_t n_vocab    = 0;
    int64_t n_embd     = 0;
    int64_t n_layer    = 0;
    int64_t n_ff       = 0;
    int64_t n_head     = 0;
    int64_t n_head_kv  = 0;
    int64_t head_dim   = 0;    // key and value size per head
    int64_t n_rot      = 0;
    int64_t n_ctx_train = 0;
    float   rms_eps    = 0;
    float   rope_freq_base  = 10000.0f;
    float   rope_freq_scale = 1.0f;
    float   attn_scale = 0;    // 1/sqrt(head_dim) unless the file says otherwise
    int     rope_mode  = 0;    // GGML_ROPE_TYPE_NORMAL (llama) or GGML_ROPE_TYPE_NEOX (qwen)
    bool    tied_output = false;
};

// The linear maps LoRA can adapt, in the order of the --modules names.
enum Module { MOD_Q, MOD_K, MOD_V, MOD_O, MOD_GATE, MOD_UP, MOD_DOWN, MOD_COUNT };
extern const char * const MODULE_NAMES[MOD_COUNT];   // "q", "k", ...
extern const char * const MODULE_TENSORS[MOD_COUNT]; // "attn_q", "attn_k", ...

struct Linear {
    ggml_tensor * w = nullptr;  // ne = [n_in, n_out]
    ggml_tensor * b = nullptr;  // optional bias, ne = [n_out]
};

struct Layer {
    ggml_tensor * attn_norm = nullptr;
    ggml_tensor * ffn_norm  = nullptr;
    ggml_tensor * q_norm    = nullptr; // qwen3
    ggml_tensor * k_norm    = nullptr; // qwen3
    Linear lin[MOD_COUNT];
};

struct BaseModel {
    Hparams hp;
    std::string path;
    gguf_context * meta = nullptr;        // the file's metadata, kept to write a full model back
    ggml_context * ctx = nullptr;         // weight tensors
    ggml_backend_buffer_t buf = nullptr;  // their memory
    ggml_tensor * tok_embd    = nullptr;
    ggml_tensor * output_norm = nullptr;
    ggml_tensor * output      = nullptr;  // == tok_embd when the embeddings are tied
    ggml_tensor * rope_freqs  = nullptr;  // llama 3 frequency factors (optional)
    std::vector<Layer> layers;
    std::vector<ggml_tensor *> tensors;   // every weight, in file order
    bool f32 = false;                     // weights converted to F32 (full fine-tuning)

    BaseModel() = default;
    BaseModel(const BaseModel &) = delete;
    BaseModel & operator=(const BaseModel &) = delete;
    ~BaseModel();
};

// Reads and checks `path`: architecture, hyperparameters, every tensor's name, shape and
// type, and that the file holds all tensor data. `to_f32` converts every weight to F32
// (full fine-tuning). Prints one error line and returns false on any problem.
bool load_base_model(const std::string & path, bool to_f32, ggml_backend_buffer_type_t buft, BaseModel & model);

// Whether the trainer can keep a frozen weight of this type (CPU kernels for the forward
// product and for the gradient through it exist).
bool frozen_type_supported(ggml_type type);

} // namespace st
