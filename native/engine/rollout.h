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
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "decode.h"
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
    // Where the time goes (wall clock, every phase of every step):
    double decode_ms = 0;   // llama_decode (prompt and generated tokens)
    double logits_ms = 0;   // reading the logits rows' addresses (llama_get_logits_ith)
    double sample_ms = 0;   // the samplers: top-k, temperature, the draw and the token's log-prob
    double accept_ms = 0;   // taking the tokens: end-of-generation and stop checks, text, bookkeeping
    double elapsed_ms = 0;
    int64_t decodes = 0;
};

struct EngineParams : DecodeParams {
    uint32_t n_ctx = 0;     // KV cells; 0: sized for each run (parallel × (longest prompt + max tokens))
    int32_t kv_unified = 0; // 1: one KV buffer for all slots (prompt cells shared; attention over all cells)
};

class RolloutEngine : public DecodeEngine {
public:
    RolloutEngine(std::shared_ptr<Model> model, const EngineParams & params);

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
    EngineParams params_;
};

} // namespace still
