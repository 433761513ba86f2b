#include "decode.h"

#include <algorithm>
#include <thread>

#include "log.h"

namespace still {

ContextPtr make_context(const Model & model, const ContextSpec & spec) {
    LogCapture capture;
    llama_context_params cp = llama_context_default_params();
    cp.n_ctx = spec.n_ctx;
    cp.n_batch = spec.n_batch;
    cp.n_ubatch = std::min(spec.n_ubatch, spec.n_batch);
    cp.n_seq_max = static_cast<uint32_t>(spec.n_seq_max);
    if (spec.n_threads > 0) cp.n_threads = cp.n_threads_batch = spec.n_threads;
    cp.kv_unified = spec.kv_unified;
    cp.flash_attn_type = static_cast<llama_flash_attn_type>(spec.flash_attn);
    cp.no_perf = true;
    if (spec.abort != nullptr) {
        cp.abort_callback = AbortSlot::callback;
        cp.abort_callback_data = spec.abort;
    }
    ContextPtr ctx(llama_init_from_model(model.raw(), cp));
    if (!ctx) {
        const std::string reason = capture.summary();
        throw EngineError("context_failed", "could not create a context of " + std::to_string(cp.n_ctx) + " KV cells for " +
                                                std::to_string(spec.n_seq_max) + " sequence" + (spec.n_seq_max == 1 ? "" : "s") +
                                                (reason.empty() ? "" : ": " + reason));
    }
    return ctx;
}

void check_tokens(const llama_token * tokens, size_t n, int32_t n_vocab, const std::string & what) {
    for (size_t i = 0; i < n; i++) {
        if (tokens[i] < 0 || tokens[i] >= n_vocab)
            throw EngineError("invalid_argument", what + " has token " + std::to_string(tokens[i]) + " at index " + std::to_string(i) +
                                                      ", outside the vocabulary (0.." + std::to_string(n_vocab - 1) + ")");
    }
}

void decode_all(llama_context * ctx, const llama_token * tokens, size_t n, uint32_t n_batch) {
    for (size_t i = 0; i < n; i += n_batch) {
        const int32_t len = static_cast<int32_t>(std::min<size_t>(n_batch, n - i));
        const int32_t rc = llama_decode(ctx, llama_batch_get_one(const_cast<llama_token *>(tokens + i), len));
        if (rc == 2) throw EngineError("cancelled", "the decode was cancelled");
        if (rc != 0) throw EngineError("decode_failed", "llama_decode failed with code " + std::to_string(rc));
    }
}

int32_t resolve_threads(int32_t n) {
    return n > 0 ? n : static_cast<int32_t>(std::max(1u, std::thread::hardware_concurrency()));
}

DecodeEngine::DecodeEngine(std::shared_ptr<Model> model, const DecodeParams & params, int32_t max_parallel) : model_(std::move(model)) {
    if (params.n_parallel < 1 || params.n_parallel > max_parallel)
        throw EngineError("invalid_argument", "parallel must be between 1 and " + std::to_string(max_parallel));
    if (model_->params().vocab_only) throw EngineError("invalid_argument", "the model was loaded without weights (vocabOnly)");
}

llama_context * DecodeEngine::begin_run(const DecodeParams & params, uint32_t n_ctx, bool kv_unified) {
    ContextSpec spec;
    spec.n_ctx = n_ctx;
    spec.n_batch = static_cast<uint32_t>(params.n_batch);
    spec.n_ubatch = static_cast<uint32_t>(params.n_ubatch);
    spec.n_seq_max = params.n_parallel;
    spec.n_threads = params.n_threads;
    spec.kv_unified = kv_unified;
    spec.flash_attn = params.flash_attn;
    spec.abort = &abort_;
    const bool fits = ctx_ && spec.n_ctx <= ctx_cells_ && spec.n_seq_max == ctx_spec_.n_seq_max &&
                      spec.kv_unified == ctx_spec_.kv_unified;
    if (!fits) {
        ctx_.reset(); // the old context's memory goes before the new one takes its own
        ctx_ = make_context(*model_, spec);
        ctx_spec_ = spec;
        ctx_cells_ = llama_n_ctx(ctx_.get());
    }
    llama_memory_clear(llama_get_memory(ctx_.get()), true);
    apply_adapters(ctx_.get(), adapters_);
    return ctx_.get();
}

} // namespace still
