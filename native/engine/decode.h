// The decode core that the rollout engine, the scorer and the model's one-off contexts
// share: context creation with an owned lifetime, the abort flag a running call hands to
// llama.cpp, token checks, timing, and the base of a batched engine (one context over
// parallel sequences, adapters applied per run).
#pragma once

#include <atomic>
#include <chrono>
#include <memory>
#include <string>
#include <vector>

#include "adapter.h"
#include "model.h"

namespace still {

using Clock = std::chrono::steady_clock;

inline double ms_between(Clock::time_point a, Clock::time_point b) {
    return std::chrono::duration<double, std::milli>(b - a).count();
}

// Where a context's abort callback looks for the running call's flag: llama.cpp reads it
// between graph nodes, so a set flag stops a decode within one node.
class AbortSlot {
public:
    bool requested() const { return flag_ != nullptr && flag_->load(std::memory_order_relaxed); }
    static bool callback(void * slot) { return static_cast<const AbortSlot *>(slot)->requested(); }

    // Points the slot at `flag` for the scope's lifetime.
    class Scope {
    public:
        Scope(AbortSlot & slot, const std::atomic<bool> * flag) : slot_(slot) { slot_.flag_ = flag; }
        ~Scope() { slot_.flag_ = nullptr; }
        Scope(const Scope &) = delete;
        Scope & operator=(const Scope &) = delete;

    private:
        AbortSlot & slot_;
    };

private:
    const std::atomic<bool> * flag_ = nullptr;
};

// How a batched engine decodes: sequences together, batch sizes, threads, attention kernel.
struct DecodeParams {
    int32_t n_parallel = 8; // sequences (slots) decoded together
    int32_t n_batch = 2048; // most tokens per llama_decode call
    int32_t n_ubatch = 512; // most tokens per compute graph inside a decode
    int32_t n_threads = 0;  // 0: hardware threads
    int32_t flash_attn = LLAMA_FLASH_ATTN_TYPE_AUTO;
};

struct ContextDeleter {
    void operator()(llama_context * ctx) const { llama_free(ctx); }
};
using ContextPtr = std::unique_ptr<llama_context, ContextDeleter>;

struct ContextSpec {
    uint32_t n_ctx = 0;    // KV cells
    uint32_t n_batch = 512;
    uint32_t n_ubatch = 512;
    int32_t n_seq_max = 1;
    int32_t n_threads = 0; // 0: llama.cpp's default
    bool kv_unified = false;
    int32_t flash_attn = LLAMA_FLASH_ATTN_TYPE_AUTO;
    AbortSlot * abort = nullptr;
};

// A llama.cpp context for `model`; EngineError "context_failed" with llama.cpp's reason.
ContextPtr make_context(const Model & model, const ContextSpec & spec);

// Throws EngineError "invalid_argument" naming `what` when a token is outside 0..n_vocab-1.
void check_tokens(const llama_token * tokens, size_t n, int32_t n_vocab, const std::string & what);

// A thread count: `n` when positive, else the hardware's.
int32_t resolve_threads(int32_t n);

// Feeds `tokens` to a single-sequence context in batches of `n_batch`, positions from 0.
// EngineError "cancelled" when aborted, "decode_failed" otherwise.
void decode_all(llama_context * ctx, const llama_token * tokens, size_t n, uint32_t n_batch);

// The part of a batched engine that does not depend on what it decodes: the model, one
// context over `parallel` sequences kept across runs (made again when a run needs more),
// the adapters, and the running call's abort flag.
class DecodeEngine {
public:
    DecodeEngine(const DecodeEngine &) = delete;
    DecodeEngine & operator=(const DecodeEngine &) = delete;

    // LoRA adapters with their scales, applied from the next run on.
    void set_adapters(AdapterList adapters) { adapters_ = std::move(adapters); }

protected:
    // Checks the decode parameters (1 ≤ parallel ≤ max_parallel) and that the model has weights.
    DecodeEngine(std::shared_ptr<Model> model, const DecodeParams & params, int32_t max_parallel);
    ~DecodeEngine() = default;

    // Makes sure the context has at least `n_ctx` cells for `params`' sequences in the
    // given cache layout, then starts a run on it: memory cleared, adapters applied.
    llama_context * begin_run(const DecodeParams & params, uint32_t n_ctx, bool kv_unified);
    uint32_t context_cells() const { return ctx_cells_; }

    std::shared_ptr<Model> model_;
    AbortSlot abort_;

private:
    AdapterList adapters_;
    ContextPtr ctx_;
    ContextSpec ctx_spec_;
    uint32_t ctx_cells_ = 0;
};

} // namespace still
