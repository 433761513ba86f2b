// The scorer: teacher-forced log-probabilities of given completions after given prompts.
//
// Records are packed into large batches over several sequences of one context, each
// sequence decoding its record's tokens in chunks; logits are computed only where a
// completion token is predicted. Records with the same prompt decode it once: later
// ones start from a copy of its cells and from its saved last logits (as in the
// rollout engine). Log-softmax runs vectorised, spread over the CPU threads.
#pragma once

#include <atomic>
#include <functional>
#include <memory>
#include <vector>

#include "decode.h"

namespace still {

struct ScoreRecord {
    std::vector<llama_token> prompt;     // at least one token
    std::vector<llama_token> completion; // the tokens scored
    // Also decode the last completion token, with logits (unused): the batches then have
    // exactly llama-perplexity's shape, and so its numerics.
    bool decode_last = false;
};

struct ScoreResult {
    int32_t record = 0;
    std::vector<float> logprobs; // log p(completion[i] | prompt, completion[:i])
};

struct ScoreStats {
    int64_t records_done = 0;
    int64_t records_total = 0;
    int64_t tokens_decoded = 0; // prompt tokens (once per distinct prompt) and completion tokens
    int64_t tokens_scored = 0;
    double decode_ms = 0;
    double softmax_ms = 0;
    double elapsed_ms = 0;
    int64_t decodes = 0;
};

struct ScorerParams : DecodeParams {
    ScorerParams() {
        n_parallel = 4;
        flash_attn = LLAMA_FLASH_ATTN_TYPE_DISABLED; // exact F32 attention; see Scorer.ts
    }
    uint32_t seq_cells = 0; // KV cells per sequence; 0: the longest record
};

class Scorer : public DecodeEngine {
public:
    Scorer(std::shared_ptr<Model> model, const ScorerParams & params);

    // Scores every record; `on_result` gets each as it completes (on this thread).
    // When `abort` turns true the run stops within one decode.
    ScoreStats run(const std::vector<ScoreRecord> & records,
                   const std::function<void(ScoreResult &&)> & on_result,
                   const std::function<void(const ScoreStats &)> & on_progress,
                   const std::atomic<bool> * abort);

private:
    ScorerParams params_;
};

} // namespace still
