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

#if defined(__GNUC__) || defined(__clang__)
#pragma GCC diagnostic ignored "-Wpsabi"
#define STILL_INLINE __attribute__((always_inline)) inline
#else
#define STILL_INLINE inline
#endif

// exp(x) for x <= 0: Cephes' expf (range reduction by ln 2, degree-7 polynomial). The
// polynomial on the reduced argument r, for a float or a vector of floats; `p` holds its
// leading coefficient (1.9875691500e-4) on entry.
template <typename F>
static STILL_INLINE F exp_polynomial(F r, F p) {
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    return p * r * r + r + 1.0f;
}

static inline float exp_nonpositive(float x) {
    x = x < -87.0f ? -87.0f : x;
    const float n = static_cast<float>(static_cast<int32_t>(x * 1.44269504088896341f - 0.5f));
    const float r = x - n * 0.693359375f + n * 2.12194440e-4f;
    const float p = exp_polynomial(r, 1.9875691500e-4f);
    const int32_t bits = (static_cast<int32_t>(n) + 127) << 23;
    float scale;
    std::memcpy(&scale, &bits, sizeof(scale));
    return p * scale;
}

#if defined(__GNUC__) || defined(__clang__)
// The same in GCC/Clang vector extensions, 16 lanes (AVX-512, or 2×AVX2, 4×SSE). These
// helpers are always inlined into their callers, so the vector ABI never crosses a call.
typedef float vf16 __attribute__((vector_size(64), aligned(4)));
typedef int32_t vi16 __attribute__((vector_size(64), aligned(4)));

static inline vf16 exp_nonpositive(vf16 x) {
    const vf16 lo = vf16{} - 87.0f;
    const vi16 below = x < lo;
    x = (vf16) (((vi16) x & ~below) | ((vi16) lo & below));
    const vi16 ni = __builtin_convertvector(x * 1.44269504088896341f - 0.5f, vi16);
    const vf16 n = __builtin_convertvector(ni, vf16);
    const vf16 r = x - n * 0.693359375f + n * 2.12194440e-4f;
    return exp_polynomial(r, vf16{} + 1.9875691500e-4f) * (vf16) ((ni + 127) << 23);
}
#endif

// One pass over a row of logits gives what sampling needs, so the row (600 KB for a
// 152k vocabulary) is read once: its log-sum-exp (running maximum, rescaled sum), the
// index of its largest entry, and optionally its k largest entries in a min-heap.
// Blocks of 64 whose maximum cannot enter the heap skip it after one comparison.
namespace {
struct Scan {
    float lse;
    int32_t argmax;
};

inline bool heap_greater(const llama_token_data & a, const llama_token_data & b) { return a.logit > b.logit; }

inline void heap_offer(std::vector<llama_token_data> & heap, int32_t k, int32_t id, float logit) {
    if (static_cast<int32_t>(heap.size()) < k) {
        heap.push_back({id, logit, 0.0f});
        std::push_heap(heap.begin(), heap.end(), heap_greater);
    } else if (logit > heap.front().logit) {
        std::pop_heap(heap.begin(), heap.end(), heap_greater);
        heap.back() = {id, logit, 0.0f};
        std::push_heap(heap.begin(), heap.end(), heap_greater);
    }
}
} // namespace

constexpr int32_t kBlock = 64;

// The vectorised pass: log-sum-exp, argmax, and each block's maximum (for the top-k).
STILL_VECTOR_CLONES
static Scan scan_logits(const float * x, int32_t n, float * block_max) {
    float max = -INFINITY;
    int32_t max_block = 0;
    double sum = 0;
    int32_t i = 0;
    auto rescale = [&](float new_max, auto & acc) {
        // Everything summed so far was relative to the old maximum.
        const float f = max == -INFINITY ? 0.0f : exp_nonpositive(max - new_max);
        acc *= f;
        sum *= f;
        max = new_max;
    };
#if defined(__GNUC__) || defined(__clang__)
    vf16 acc = vf16{};
    for (; i + kBlock <= n; i += kBlock) {
        vf16 v[4];
        std::memcpy(v, x + i, sizeof(v));
        vf16 m = v[0];
        for (int32_t j = 1; j < 4; j++) {
            const vi16 gt = v[j] > m;
            m = (vf16) (((vi16) v[j] & gt) | ((vi16) m & ~gt));
        }
        float bmax = m[0];
        for (int32_t j = 1; j < 16; j++) bmax = m[j] > bmax ? m[j] : bmax;
        if (block_max != nullptr) block_max[i / kBlock] = bmax;
        if (bmax > max) {
            rescale(bmax, acc);
            max_block = i;
        }
        for (int32_t j = 0; j < 4; j++) acc += exp_nonpositive(v[j] - max);
    }
    for (int32_t j = 0; j < 16; j++) sum += acc[j];
#else
    float acc = 0;
#endif
    if (i < n && block_max != nullptr) block_max[i / kBlock] = -INFINITY;
    for (; i < n; i++) {
        if (block_max != nullptr && x[i] > block_max[i / kBlock]) block_max[i / kBlock] = x[i];
        if (x[i] > max) {
            rescale(x[i], acc);
            max_block = i;
        }
        sum += exp_nonpositive(x[i] - max);
    }
    int32_t argmax = max_block;
    while (argmax < n - 1 && x[argmax] != max) argmax++;
    return {max + static_cast<float>(std::log(sum)), argmax};
}

// log Σ exp(scale · (x_i − max)) over the vocabulary (max the largest x_i): a second pass
// for log-probabilities at a temperature (scale = 1 / T).
STILL_VECTOR_CLONES
static double scaled_log_sum(const float * x, int32_t n, float max, float scale) {
    double sum = 0;
    int32_t i = 0;
#if defined(__GNUC__) || defined(__clang__)
    vf16 acc = vf16{};
    for (; i + 16 <= n; i += 16) {
        vf16 v;
        std::memcpy(&v, x + i, sizeof(v));
        acc += exp_nonpositive((v - max) * scale);
    }
    for (int32_t j = 0; j < 16; j++) sum += acc[j];
#endif
    for (; i < n; i++) sum += exp_nonpositive((x[i] - max) * scale);
    return std::log(sum);
}

// The k largest logits, visiting only blocks whose maximum could enter the heap.
static void top_k(const float * x, int32_t n, int32_t k, const float * block_max, std::vector<llama_token_data> & heap) {
    heap.clear();
    const int32_t blocks = (n + kBlock - 1) / kBlock;
    for (int32_t b = 0; b < blocks; b++) {
        if (static_cast<int32_t>(heap.size()) == k && block_max[b] <= heap.front().logit) continue;
        const int32_t end = std::min(n, (b + 1) * kBlock);
        for (int32_t i = b * kBlock; i < end; i++) heap_offer(heap, k, i, x[i]);
    }
    // A canonical order (most likely first, as llama.cpp's top-k leaves it): the draw
    // then does not depend on how the heap happened to be arranged.
    std::sort(heap.begin(), heap.end(), [](const llama_token_data & a, const llama_token_data & b) {
        return a.logit > b.logit || (a.logit == b.logit && a.id < b.id);
    });
}

float log_sum_exp(const float * x, int32_t n, int32_t * argmax) {
    const Scan s = scan_logits(x, n, nullptr);
    if (argmax != nullptr) *argmax = s.argmax;
    return s.lse;
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
    block_max_.resize((n_vocab + kBlock - 1) / kBlock);
}

Sampler::~Sampler() {
    if (chain_ != nullptr) llama_sampler_free(chain_);
}

llama_token Sampler::sample(const float * logits, float * logprob) {
    const int32_t k = params_.top_k > 0 && params_.top_k < n_vocab_ ? params_.top_k : n_vocab_;
    const bool cut = chain_ != nullptr && k < n_vocab_;
    const Scan scan = scan_logits(logits, n_vocab_, cut ? block_max_.data() : nullptr);
    if (chain_ == nullptr) {
        *logprob = logits[scan.argmax] - scan.lse;
        return scan.argmax;
    }
    if (cut) {
        top_k(logits, n_vocab_, k, block_max_.data(), candidates_);
    } else {
        candidates_.clear();
        for (int32_t i = 0; i < n_vocab_; i++) candidates_.push_back({i, logits[i], 0.0f});
    }
    const float lse = scan.lse;

    llama_token_data_array cur = {candidates_.data(), candidates_.size(), -1, false};
    llama_sampler_apply(chain_, &cur);
    const llama_token token = cur.data[cur.selected].id;
    llama_sampler_accept(chain_, token);
    if (params_.tempered_logprobs && params_.temperature != 1.0f) {
        const float max = logits[scan.argmax], scale = 1.0f / params_.temperature;
        *logprob = static_cast<float>((logits[token] - max) * scale - scaled_log_sum(logits, n_vocab_, max, scale));
    } else {
        *logprob = logits[token] - lse;
    }
    return token;
}

} // namespace still
