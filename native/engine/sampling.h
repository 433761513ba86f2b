// Per-sample token sampling from a row of logits.
//
// Each sample owns a llama.cpp sampler chain (top-p, min-p, temperature, dist with its
// own seed), in llama.cpp's order. Two things happen here first, because they would
// otherwise dominate the time between decodes on a large vocabulary: the top-k cut is a
// single pass with a small heap (no sort of all candidates), and the model's own
// log-probability of the chosen token (temperature 1, full vocabulary) comes from one
// vectorisable log-sum-exp pass.
#pragma once

#include <cstdint>
#include <vector>

#include "llama.h"

namespace still {

struct SamplingParams {
    float temperature = 1.0f; // 0: greedy
    int32_t top_k = 0;        // 0: off
    float top_p = 1.0f;       // 1: off
    float min_p = 0.0f;       // 0: off
    uint64_t seed = 0;        // a sample's seed follows from this and its index
    bool tempered_logprobs = false; // report log softmax(logits / temperature) instead of log softmax(logits)
};

// The seed of sample `index` of a request seeded with `seed` (never LLAMA_DEFAULT_SEED,
// which llama.cpp reads as "random").
uint32_t sample_seed(uint64_t seed, int32_t index);

class Sampler {
public:
    Sampler(const SamplingParams & params, uint32_t seed, int32_t n_vocab);
    ~Sampler();
    Sampler(const Sampler &) = delete;
    Sampler & operator=(const Sampler &) = delete;

    // Picks a token from `logits` (n_vocab floats); `logprob` receives log p(token) under
    // the model's full distribution at temperature 1.
    llama_token sample(const float * logits, float * logprob);

private:
    SamplingParams params_;
    int32_t n_vocab_;
    llama_sampler * chain_ = nullptr;
    std::vector<llama_token_data> candidates_;
    std::vector<float> block_max_;
};

// log(sum(exp(x - max))) + max over n values, and the index of the largest.
float log_sum_exp(const float * x, int32_t n, int32_t * argmax);

} // namespace still
