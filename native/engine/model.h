// A loaded GGUF model: facts, tokenizer, chat template, a greedy smoke generator.
// Plain C++ over llama.h; the Node addon and the tests drive it.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include "llama.h"

namespace still {

// An error with a stable code the JS side maps to its error classes:
// "load_failed", "cancelled", "invalid_argument", "decode_failed", "quantize_failed".
class EngineError : public std::runtime_error {
public:
    EngineError(std::string code, const std::string & message) : std::runtime_error(message), code(std::move(code)) {}
    std::string code;
};

struct ModelParams {
    int32_t gpu_layers = 0;  // layers to offload; negative = all
    bool use_mmap = true;
    bool vocab_only = false; // tokenizer and facts only, no weights
    bool check_tensors = false;
};

struct SpecialToken {
    llama_token id;
    std::string text;
    std::string kind; // "control", "user_defined", "unknown"
};

struct ModelFacts {
    std::string architecture;
    std::string name;
    std::string description;
    std::string file_type;
    uint64_t size_bytes = 0;
    uint64_t parameter_count = 0;
    int32_t context_length = 0;
    int32_t embedding_length = 0;
    int32_t layer_count = 0;
    int32_t head_count = 0;
    int32_t head_count_kv = 0;
    int32_t vocab_size = 0;
    std::string vocab_type;
    llama_token bos = LLAMA_TOKEN_NULL, eos = LLAMA_TOKEN_NULL, eot = LLAMA_TOKEN_NULL;
    llama_token sep = LLAMA_TOKEN_NULL, nl = LLAMA_TOKEN_NULL, pad = LLAMA_TOKEN_NULL;
    bool add_bos = false, add_eos = false;
    std::vector<llama_token> eog;
    std::vector<SpecialToken> special_tokens;
    std::optional<std::string> chat_template;
    int32_t gpu_layers = 0; // as requested at load
};

class Model {
public:
    // Returns false from `progress` to cancel (EngineError "cancelled").
    static std::shared_ptr<Model> load(const std::string & path, const ModelParams & params,
                                       const std::function<bool(float)> & progress);
    // Runs llama.cpp's own checks on a model file without reading tensor data: metadata,
    // hyperparameters, vocabulary, tensor shapes (no_alloc load), then facts and a tokenizer
    // round trip (`vocab_only`: the vocabulary part alone). llama.cpp asserts on some
    // malformed metadata, so callers run this in a child process.
    static void probe(const std::string & path, bool vocab_only);

    ~Model();
    Model(const Model &) = delete;
    Model & operator=(const Model &) = delete;

    llama_model * raw() const { return model_; }
    const llama_vocab * vocab() const { return vocab_; }
    const ModelParams & params() const { return params_; }

    ModelFacts facts() const;
    std::optional<std::string> meta(const char * key) const;

    std::vector<llama_token> tokenize(const std::string & text, bool add_special, bool parse_special) const;
    std::string detokenize(const std::vector<llama_token> & tokens, bool remove_special, bool unparse_special) const;
    // Each token's piece laid end to end, as the rollout engine builds a sample's text: no
    // clean-up between pieces (llama_detokenize drops spaces before punctuation for some
    // vocabularies, Llama 3's among them), so a token's bytes start where the previous ended.
    std::string pieces(const std::vector<llama_token> & tokens, bool unparse_special) const;
    // The id of `text` when it is exactly one token (special tokens included), else LLAMA_TOKEN_NULL.
    llama_token single_token(const std::string & text) const;

    // Applies the model's chat template (or `tmpl`, when given) with llama.cpp's built-in
    // formatter. nullopt when the template is not one llama.cpp recognises.
    std::optional<std::string> apply_chat_template(const std::vector<std::pair<std::string, std::string>> & messages,
                                                   bool add_assistant, const std::string * tmpl) const;

    // Greedy continuation of `prompt` in a fresh single-sequence context, stopping at
    // end-of-generation or `max_tokens`. A smoke test of the loaded weights, not the rollout engine.
    std::vector<llama_token> generate_greedy(const std::vector<llama_token> & prompt, int32_t max_tokens,
                                             int32_t n_threads, const std::atomic<bool> * abort) const;

    // Logits at every position from `from` on, for `tokens` decoded as one sequence in a
    // fresh context: rows of n_vocab floats. A direct reference for sampled log-probabilities.
    std::vector<float> eval_logits(const std::vector<llama_token> & tokens, size_t from, int32_t n_threads) const;

private:
    Model(llama_model * model, const ModelParams & params);

    llama_model * model_;
    const llama_vocab * vocab_;
    ModelParams params_;
};

// Rewrites a GGUF model with tensors of type `ftype` (a llama_ftype), through llama.cpp's quantizer.
void quantize_model(const std::string & in_path, const std::string & out_path, int32_t ftype, int32_t n_threads);

} // namespace still
