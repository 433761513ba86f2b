// The training engine: backends, the base model, the trainable tensors (LoRA A/B, or
// every weight in full mode) with their gradient accumulators and AdamW moments, and
// the graphs: the forward pass built from the model's tensors (attention from the
// batch's own K and V under a block-diagonal causal mask, no KV cache), the losses,
// ggml's automatic backward pass and the AdamW step.
#pragma once

#include <array>
#include <atomic>
#include <cstdint>
#include <string>
#include <vector>

#include "data.h"
#include "ggml-backend.h"
#include "ggml.h"
#include "loss.h"
#include "model.h"

namespace st {

struct LoraConfig {
    int64_t rank = 8;
    float alpha = 16.0f;
    bool modules[MOD_COUNT] = {true, true, true, true, true, true, true};
};

struct EngineOptions {
    std::string model_path;
    std::string backend_dir;     // where the ggml backend modules live (GGML_BACKEND_DL builds)
    int threads = 1;
    int poll = 50;               // thread pool busy-wait level, 0 (sleep) to 100 (spin)
    bool full = false;           // train every weight (F32) instead of LoRA
    LoraConfig lora;
    std::string init_adapter;    // start LoRA from this adapter GGUF instead of A random, B = 0
    bool init_random_b = false;  // B random too (gradient checks, so A gets a gradient)
    uint64_t seed = 0;
    bool out_prod_as_mul_mat = true; // backward products on the matrix-multiply kernels (see rewrite_out_prods)
    bool use_gpu = true;         // offload to a GPU backend when one is registered
    bool frozen_bf16 = false;    // backward products through frozen weights in BF16 (faster, less exact)
};

// A tensor the optimizer updates, with its gradient accumulator and AdamW moments.
struct Trainable {
    std::string name;            // name in checkpoints and adapters
    ggml_tensor * param = nullptr;
    ggml_tensor * grad  = nullptr;
    ggml_tensor * m     = nullptr;
    ggml_tensor * v     = nullptr;
};

// One packed row, ready for the graph.
struct Batch {
    int64_t n_tokens = 0;            // with padding
    int64_t real_tokens = 0;         // without
    std::vector<int32_t> tokens;
    std::vector<int32_t> pos;
    std::vector<float> mask;         // [n_tokens, n_tokens]: 0 where a query may see a key, -inf elsewhere
    // loss rows: the positions whose output predicts a weighted token, grouped by term
    std::vector<int32_t> rows;
    std::vector<int32_t> labels;     // the token predicted at each loss row
    struct Group { int64_t first, count; float weight; };
    struct Term { std::vector<Group> groups; double weight_sum = 0; };
    std::vector<Term> terms;         // each term sums weight · NLL over its groups
    struct Pair { int64_t item; int chosen, rejected, sft; };
    std::vector<Pair> pairs;         // DPO: term indices per pair (sft may equal chosen)
    int64_t loss_tokens = 0;
};

Batch make_batch(const Dataset & data, const Row & row);

struct BatchResult {
    double loss = 0;                  // the scaled loss of this batch
    std::vector<double> term_nll;     // Σ weight · NLL per term
};

class Engine {
public:
    Engine() = default;
    ~Engine();
    Engine(const Engine &) = delete;
    Engine & operator=(const Engine &) = delete;

    bool init(const EngineOptions & opt);

    // Forward (and backward, accumulating into the gradients) over one batch.
    bool eval(const Batch & batch, const LossSpec & spec, bool backward, BatchResult & out);
    // Logits for every position of one sequence: rows of n_vocab floats.
    bool logits(const std::vector<int32_t> & tokens, std::vector<float> & out);
    // L2 norm of the accumulated gradients.
    bool grad_norm(double & out);
    // One AdamW step on the accumulated gradients (scaled by `clip`), then zeroes them.
    struct Adam { float lr, beta1, beta2, eps, wd; int64_t iter; };
    bool opt_step(const Adam & adam, float clip);
    void zero_grads();

    // Host copies of trainable tensors, for checks and for writing files.
    bool get(ggml_tensor * t, std::vector<float> & out) const;
    bool set(ggml_tensor * t, const std::vector<float> & in);

    void set_abort_flag(const std::atomic<bool> * flag) { abort_flag_ = flag; }
    bool aborted() const { return aborted_; }

    const BaseModel & model() const { return model_; }
    const EngineOptions & options() const { return opt_; }
    float lora_scale() const { return opt_.lora.alpha / (float) opt_.lora.rank; }
    // LoRA tensors are stored with the rank rounded up to a multiple of RANK_PAD, the extra
    // rows and columns zero: the products over the rank then run on the fast matrix kernels
    // (they need whole vector blocks), and zeros get zero gradients, so they stay zero.
    static const int64_t RANK_PAD = 16;
    int64_t stored_rank() const { return (opt_.lora.rank + RANK_PAD - 1) / RANK_PAD * RANK_PAD; }
    // The adapter as llama.cpp reads it: each trainable LoRA tensor cut to the true rank.
    bool lora_host(const Trainable & t, std::vector<float> & out, int64_t ne[2]) const;
    std::vector<Trainable> & trainables() { return train_; }
    int64_t trainable_count() const;

private:
    struct LoraPair { ggml_tensor * a = nullptr; ggml_tensor * b = nullptr; };

    ggml_tensor * linear(ggml_context * ctx, int il, int mod, ggml_tensor * x);
    ggml_tensor * forward(ggml_context * ctx, ggml_tensor * tokens, ggml_tensor * pos, ggml_tensor * mask);
    ggml_cgraph * rewrite_out_prods(ggml_context * ctx, ggml_cgraph * gf, int graph_size);
    void chunked_product(ggml_context * ctx, ggml_cgraph * out, ggml_tensor * node);
    bool compute(ggml_cgraph * gf, bool abortable);
    bool init_lora();
    bool load_adapter(const std::string & path);
    int graph_size(size_t n_groups) const;
    bool ensure_sched(int size);

    EngineOptions opt_;
    BaseModel model_;
    std::vector<std::array<LoraPair, MOD_COUNT>> lora_;
    std::vector<Trainable> train_;

    ggml_backend_t cpu_ = nullptr;
    ggml_threadpool_t threadpool_ = nullptr;
    void (*tp_free_)(ggml_threadpool_t) = nullptr;
    ggml_backend_t gpu_ = nullptr;
    ggml_backend_sched_t sched_ = nullptr;
    int sched_size_ = 0;
    ggml_context * ctx_lora_ = nullptr;
    ggml_context * ctx_grad_ = nullptr;
    ggml_context * ctx_moments_ = nullptr;
    ggml_backend_buffer_t buf_lora_ = nullptr;
    ggml_backend_buffer_t buf_grad_ = nullptr;
    ggml_backend_buffer_t buf_moments_ = nullptr;

    std::vector<uint8_t> ctx_mem_;   // graph metadata, reused

    const std::atomic<bool> * abort_flag_ = nullptr;
    bool abortable_ = false;
    bool aborted_ = false;
    static bool abort_callback(void * data);
};

} // namespace st
