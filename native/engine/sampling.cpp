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

// The loops below run over the whole vocabulary for every sample and token, so they are
// compiled for several instruction sets and picked at load time (GCC and Clang on x86).
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__)) && !defined(_WIN32)
#define STILL_VECTOR_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define STILL_VECTOR_CLONES
#endif

// exp(x) for x <= 0: Cephes' expf (range reduction by ln 2, degree-7 polynomial).
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

#if defined(__GNUC__) || defined(__clang__)
// The same in GCC/Clang vector extensions, 16 lanes (AVX-512, or 2×AVX2, 4×SSE). These
// helpers are always inlined into their callers, so the vector ABI never crosses a call.
#pragma GCC diagnostic ignored "-Wpsabi"
typedef float vf16 __attribute__((vector_size(64), aligned(4)));
typedef int32_t vi16 __attribute__((vector_size(64), aligned(4)));

static inline vf16 exp_nonpositive(vf16 x) {
    const vf16 lo = vf16{} - 87.0f;
    const vi16 below = x < lo;
    x = (vf16) (((vi16) x & ~below) | ((vi16) lo & below));
    const vi16 ni = __builtin_convertvector(x * 1.44269504088896341f - 0.5f, vi16);
    const vf16 n = __builtin_convertvector(ni, vf16);
    const vf16 r = x - n * 0.693359375f + n * 2.12194440e-4f;
    vf16 p = vf16{} + 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * r * r + r + 1.0f;
    return p * (vf16) ((ni + 127) << 23);
}
#endif

STILL_VECTOR_CLONES
static inline float max_of(const float * x, int32_t n) {
    float best = -INFINITY;
    int32_t i = 0;
#if defined(__GNUC__) || defined(__clang__)
    vf16 m = vf16{} - INFINITY;
    for (; i + 16 <= n; i += 16) {
        vf16 v;
        std::memcpy(&v, x + i, sizeof(v));
        const vi16 gt = v > m;
        m = (vf16) (((vi16) v & gt) | ((vi16) m & ~gt));
    }
    for (int32_t j = 0; j < 16; j++) best = m[j] > best ? m[j] : best;
#endif
    for (; i < n; i++) best = x[i] > best ? x[i] : best;
    return best;
}

STILL_VECTOR_CLONES
static double sum_exp_shifted(const float * x, int32_t n, float shift) {
    double sum = 0;
    int32_t i = 0;
#if defined(__GNUC__) || defined(__clang__)
    // Sixteen partial sums: one vector, and more accurate than one running sum.
    vf16 acc = vf16{};
    for (; i + 16 <= n; i += 16) {
        vf16 v;
        std::memcpy(&v, x + i, sizeof(v));
        acc += exp_nonpositive(v - shift);
    }
    for (int32_t j = 0; j < 16; j++) sum += acc[j];
#endif
    for (; i < n; i++) sum += exp_nonpositive(x[i] - shift);
    return sum;
}

float log_sum_exp(const float * x, int32_t n, int32_t * argmax) {
    const float max = max_of(x, n);
    if (argmax != nullptr) {
        int32_t best = 0;
        while (best < n - 1 && x[best] != max) best++;
        *argmax = best;
    }
    return max + static_cast<float>(std::log(sum_exp_shifted(x, n, max)));
}

// The k largest logits through a min-heap of size k. Blocks whose largest element cannot
// enter the heap are skipped after one vectorised comparison, which is nearly all of them.
STILL_VECTOR_CLONES
static void top_k(const float * logits, int32_t n, int32_t k, std::vector<llama_token_data> & out) {
    auto greater = [](const llama_token_data & a, const llama_token_data & b) { return a.logit > b.logit; };
    out.clear();
    for (int32_t i = 0; i < k; i++) out.push_back({i, logits[i], 0.0f});
    std::make_heap(out.begin(), out.end(), greater);
    constexpr int32_t block = 64;
    int32_t i = k;
    for (; i < n; i += block) {
        const int32_t end = std::min(n, i + block);
        if (max_of(logits + i, end - i) <= out.front().logit) continue;
        for (int32_t j = i; j < end; j++) {
            if (logits[j] <= out.front().logit) continue;
            std::pop_heap(out.begin(), out.end(), greater);
            out.back() = {j, logits[j], 0.0f};
            std::push_heap(out.begin(), out.end(), greater);
        }
    }
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
    const float lse = log_sum_exp(logits, n_vocab_, chain_ == nullptr ? &best : nullptr);
    if (chain_ == nullptr) {
        *logprob = logits[best] - lse;
        return best;
    }

    const int32_t k = params_.top_k > 0 && params_.top_k < n_vocab_ ? params_.top_k : n_vocab_;
    if (k == n_vocab_) {
        candidates_.clear();
        for (int32_t i = 0; i < n_vocab_; i++) candidates_.push_back({i, logits[i], 0.0f});
    } else {
        top_k(logits, n_vocab_, k, candidates_);
    }

    llama_token_data_array cur = {candidates_.data(), candidates_.size(), -1, false};
    llama_sampler_apply(chain_, &cur);
    const llama_token token = cur.data[cur.selected].id;
    llama_sampler_accept(chain_, token);
    *logprob = logits[token] - lse;
    return token;
}

} // namespace still
