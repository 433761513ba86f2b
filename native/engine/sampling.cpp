#include "sampling.h"

#include <algorithm>
#include <cmath>
#include <cstring>

namespace still {

// --- seeds -----------------------------------------------------------------------

static uint64_t splitmix64(uint64_t x) {
    x += 0x9e3779b97f4a7c15ULL;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
    return x ^ (x >> 31);
}

uint32_t sample_seed(uint64_t seed, int32_t index) {
    const uint32_t s = static_cast<uint32_t>(splitmix64(seed ^ splitmix64(static_cast<uint64_t>(index) + 1)));
    return s == LLAMA_DEFAULT_SEED ? s - 1 : s;
}

// --- log-sum-exp -----------------------------------------------------------------

// exp(x) for x <= 0 (Cephes' expf: range reduction by ln 2, degree-7 polynomial),
// written with truncating conversions so compilers vectorise the loop on plain SSE2.
static inline float exp_nonpositive(float x) {
    x = x < -87.0f ? -87.0f : x;
    const float n = static_cast<float>(static_cast<int32_t>(x * 1.44269504088896341f - 0.5f));
    const float r = x - n * 0.693359375f + n * 2.12194440e-4f;
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * r * r + r + 1.0f;
    const int32_t bits = (static_cast<int32_t>(n) + 127) << 23;
    float scale;
    std::memcpy(&scale, &bits, sizeof(scale));
    return p * scale;
}

float log_sum_exp(const float * x, int32_t n, int32_t * argmax) {
    float max = x[0];
    int32_t best = 0;
    for (int32_t i = 1; i < n; i++) {
        if (x[i] > max) {
            max = x[i];
            best = i;
        }
    }
    // Eight partial sums: vectorisable, and more accurate than one running sum.
    float acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    int32_t i = 0;
    for (; i + 8 <= n; i += 8)
        for (int32_t j = 0; j < 8; j++) acc[j] += exp_nonpositive(x[i + j] - max);
    double sum = 0;
    for (; i < n; i++) sum += exp_nonpositive(x[i] - max);
    for (float a : acc) sum += a;
    if (argmax != nullptr) *argmax = best;
    return max + static_cast<float>(std::log(sum));
}

// --- sampler ---------------------------------------------------------------------

Sampler::Sampler(const SamplingParams & params, uint32_t seed, int32_t n_vocab) : params_(params), n_vocab_(n_vocab) {
    if (params.temperature <= 0.0f) return; // greedy: no chain
    llama_sampler_chain_params cp = llama_sampler_chain_default_params();
    cp.no_perf = true;
    chain_ = llama_sampler_chain_init(cp);
    if (params.top_p < 1.0f) llama_sampler_chain_add(chain_, llama_sampler_init_top_p(params.top_p, 1));
    if (params.min_p > 0.0f) llama_sampler_chain_add(chain_, llama_sampler_init_min_p(params.min_p, 1));
    if (params.temperature != 1.0f) llama_sampler_chain_add(chain_, llama_sampler_init_temp(params.temperature));
    llama_sampler_chain_add(chain_, llama_sampler_init_dist(seed));
    const int32_t k = params.top_k > 0 && params.top_k < n_vocab ? params.top_k : n_vocab;
    candidates_.reserve(k);
}

Sampler::~Sampler() {
    if (chain_ != nullptr) llama_sampler_free(chain_);
}

llama_token Sampler::sample(const float * logits, float * logprob) {
    int32_t best = 0;
    const float lse = log_sum_exp(logits, n_vocab_, &best);
    if (chain_ == nullptr) {
        *logprob = logits[best] - lse;
        return best;
    }

    candidates_.clear();
    const int32_t k = params_.top_k > 0 && params_.top_k < n_vocab_ ? params_.top_k : n_vocab_;
    if (k == n_vocab_) {
        for (int32_t i = 0; i < n_vocab_; i++) candidates_.push_back({i, logits[i], 0.0f});
    } else {
        // The k largest logits through a min-heap of size k: one pass, almost every
        // element rejected by a single comparison with the heap's smallest.
        auto greater = [](const llama_token_data & a, const llama_token_data & b) { return a.logit > b.logit; };
        for (int32_t i = 0; i < k; i++) candidates_.push_back({i, logits[i], 0.0f});
        std::make_heap(candidates_.begin(), candidates_.end(), greater);
        for (int32_t i = k; i < n_vocab_; i++) {
            if (logits[i] <= candidates_.front().logit) continue;
            std::pop_heap(candidates_.begin(), candidates_.end(), greater);
            candidates_.back() = {i, logits[i], 0.0f};
            std::push_heap(candidates_.begin(), candidates_.end(), greater);
        }
    }

    llama_token_data_array cur = {candidates_.data(), candidates_.size(), -1, false};
    llama_sampler_apply(chain_, &cur);
    const llama_token token = cur.data[cur.selected].id;
    llama_sampler_accept(chain_, token);
    *logprob = logits[token] - lse;
    return token;
}

} // namespace still
