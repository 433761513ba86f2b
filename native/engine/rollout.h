// The rollout engine: many samples per prompt, generated with continuous batching over
// a fixed number of parallel slots in one llama.cpp context.
//
// A request's prompt is decoded once, into one slot; its other samples start from copies
// of that slot's prompt cells (llama_memory_seq_cp) and sample their first token from
// the prompt's saved last logits, so the prompt is paid for once however many samples
// it has and whenever they start. When a sample ends, its slot takes the next waiting
// sample at once: of its own request (the prompt is already there), else of the oldest
// request with samples left, else a new request's prompt. The whole token loop runs on
// the calling thread (sampling spreads over the CPU threads between decodes); nothing
// crosses into JS per token.
#pragma once

#include <atomic>
#include <chrono>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "model.h"
#include "sampling.h"

namespace still {

struct GenerationParams {
    SamplingParams sampling;
    int32_t max_tokens = 256;
    std::vector<std::string> stop_strings;  // end a sample; cut from its text
    std::vector<std::string> keep_strings;  // end a sample; kept at the end of its text
    std::vector<llama_token> stop_tokens;   // end a sample; kept in its tokens and text
    bool stop_at_eog = true;                // end-of-generation tokens end a sample; dropped
};

struct RolloutRequest {
    std::vector<llama_token> prompt;
    std::vector<int32_t> samples; // the sample indices to run; each seeds its own sampler
    GenerationParams params;
};

enum class FinishReason { stop, length, aborted };
const char * finish_reason_name(FinishReason r);

struct RolloutResult {
    int32_t request = 0; // index into the submitted requests
    int32_t sample = 0;  // sample index
    std::vector<llama_token> tokens;
    std::vector<float> logprobs; // per token: log p under the model at temperature 1
    std::string text;
    FinishReason finish = FinishReason::length;
    std::string stop; // the stop string or token text that ended the sample
    int32_t prompt_tokens = 0;
    double start_ms = 0, first_token_ms = 0, end_ms = 0; // since the run began
};

struct RolloutStats {
    int64_t prompt_tokens = 0; // decoded prompt tokens (once per request)
    int64_t generated_tokens = 0;
    int64_t samples_done = 0;
    int64_t samples_total = 0;
    double prompt_ms = 0;   // decode time spent on prompt tokens
    double generate_ms = 0; // decode and sampling time spent on generated tokens
    double sample_ms = 0;   // of which sampling
    double elapsed_ms = 0;
    int64_t decodes = 0;
};

struct EngineParams {
    int32_t n_parallel = 8;
    uint32_t n_ctx = 0;     // KV cells; 0: sized for each run (parallel × (longest prompt + max tokens))
    int32_t n_batch = 2048;
    int32_t n_ubatch = 512;
    int32_t n_threads = 0;  // 0: hardware threads
    int32_t kv_unified = 0; // 1: one KV buffer for all slots (prompt cells shared; attention over all cells)
    int32_t flash_attn = LLAMA_FLASH_ATTN_TYPE_AUTO;
};

class Adapter {
public:
    static std::shared_ptr<Adapter> load(std::shared_ptr<Model> model, const std::string & path);
    ~Adapter();
    llama_adapter_lora * raw() const { return adapter_; }

private:
    Adapter(std::shared_ptr<Model> model, llama_adapter_lora * adapter) : model_(std::move(model)), adapter_(adapter) {}
    std::shared_ptr<Model> model_; // the adapter must not outlive its model
    llama_adapter_lora * adapter_;
};

// Sets `adapters` (with their scales) on a context; [] removes them.
void apply_adapters(llama_context * ctx, const std::vector<std::pair<std::shared_ptr<Adapter>, float>> & adapters);

// Points an engine's abort pointer (read by llama.cpp's abort callback) at a call's flag
// for the call's duration.
class AbortScope {
public:
    AbortScope(const std::atomic<bool> *& slot, const std::atomic<bool> * flag) : slot_(slot) { slot_ = flag; }
    ~AbortScope() { slot_ = nullptr; }
    AbortScope(const AbortScope &) = delete;
    AbortScope & operator=(const AbortScope &) = delete;

private:
    const std::atomic<bool> *& slot_;
};

class RolloutEngine {
public:
    RolloutEngine(std::shared_ptr<Model> model, const EngineParams & params);
    ~RolloutEngine();
    RolloutEngine(const RolloutEngine &) = delete;
    RolloutEngine & operator=(const RolloutEngine &) = delete;

    // LoRA adapters with their scales, applied from the next run on.
    void set_adapters(std::vector<std::pair<std::shared_ptr<Adapter>, float>> adapters);

    // Runs all requests; `on_result` gets each sample as it ends (on this thread),
    // `on_progress` gets running totals after each decode. When `abort` turns true the
    // run stops within one decode; unfinished samples come back as FinishReason::aborted.
    RolloutStats run(const std::vector<RolloutRequest> & requests,
                     const std::function<void(RolloutResult &&)> & on_result,
                     const std::function<void(const RolloutStats &)> & on_progress,
                     const std::atomic<bool> * abort);

    // The KV cells a run of these requests needs with this engine's parallelism.
    uint32_t required_cells(const std::vector<RolloutRequest> & requests) const;

private:
    void ensure_context(uint32_t n_ctx, bool unified, int32_t n_seq_max);

    std::shared_ptr<Model> model_;
    EngineParams params_;
    llama_context * ctx_ = nullptr;
    uint32_t ctx_cells_ = 0;
    bool ctx_unified_ = false;
    int32_t ctx_seq_max_ = 0;
    std::vector<std::pair<std::shared_ptr<Adapter>, float>> adapters_;
    const std::atomic<bool> * abort_ = nullptr; // the running call's flag, read by llama.cpp between graph nodes
    static bool abort_callback(void * engine);
};

} // namespace still
