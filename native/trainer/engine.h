// The training engine: backends, the base model, the trainable tensors (LoRA A/B, or
// every weight in full mode) with their gradient accumulators and AdamW moments, and
// the graphs: the forward pass built from the model's tensors (attention from the
// batch's own K and V under a block-diagonal causal mask, no KV cache), the losses,
// ggml's automatic backward pass and the AdamW step.
#pragma once

#include <array>
#include <atomic>
#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "data.h"
#include "ggml-backend.h"
#include "ggml.h"
#include "loss.h"
#include "model.h"

namespace st {

// Whether a Q8_0 product on still's kernel failed (no room for its columns) since the last
// call; its outputs are NaN then.
bool take_q8_failure();

// Each width of still's Q8_0 kernel this CPU runs (q8_products.cpp), whatever STILL_Q8_ISA
// says: its name, rows per tile, and the custom op with the userdata that runs it.
struct Q8Kernel {
    std::string name;
    int tile_rows;
    ggml_custom_op_t op;
    void * userdata;
};
std::vector<Q8Kernel> q8_kernels();

// Loads ggml's backend modules from dir (where the build has them as modules); false, with
// the error printed, when no CPU backend results.
bool load_backends(const std::string & dir);

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
    bool f32_kernel = true;      // F32 products (and those of frozen weights' BF16 copies) on still's kernels (f32_gemm.cpp) rather than ggml's
    bool q8_kernel = true;       // forward products of Q8_0 weights on still's (q8_products.cpp) where the CPU has AVX-512 VNNI or AVX-VNNI
    int64_t block_tokens = 0;    // chunked steps: queries per attention chunk and tokens per chunk (0: sized by chunk_bytes)
    int64_t loss_rows = 0;       // chunked steps: loss rows per chunk (0: sized by chunk_bytes)
    size_t chunk_bytes = 256u << 20; // chunked steps: the compute memory one chunk's graph aims for
};

// How a step is taken: one graph over the whole row (its memory grows with the square of
// the row's length), or chunked with recomputation (memory linear in it; see chunked.cpp).
enum class Recompute { OFF, ON, AUTO };

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
    std::vector<int64_t> seq_start;  // per token: where its sequence starts (a padding token: itself)
    // loss rows: the positions whose output predicts a weighted token, grouped by term
    std::vector<int32_t> rows;
    std::vector<int32_t> labels;     // the token predicted at each loss row
    struct Group { int64_t first, count; float weight; };
    struct Term { std::vector<Group> groups; double weight_sum = 0; };
    std::vector<Term> terms;         // each term sums weight · NLL over its groups
    struct Pair { int64_t item; int chosen, rejected, sft; };
    std::vector<Pair> pairs;         // DPO: term indices per pair (sft may equal chosen)
    struct Span { int64_t item, first, count; };
    std::vector<Span> spans;         // policy: each sample's completion, as loss rows [first, first + count)
    int64_t loss_tokens = 0;

    // The packing mask of queries [q0, q0+nq) against keys [k0, k0+nk), as ggml's soft_max
    // takes it ([nk, nq], query-major): 0 where the query may see the key (its own sequence,
    // causally), -inf elsewhere.
    void mask(int64_t q0, int64_t nq, int64_t k0, int64_t nk, float * out) const;
    // The first key any query of [q0, q1) may see: keys before it are masked for all of them.
    int64_t first_key(int64_t q0, int64_t q1) const;
};

Batch make_batch(const Dataset & data, const Row & row);

struct BatchResult {
    double loss = 0;                  // the scaled loss of this batch
    std::vector<double> term_nll;     // Σ weight · NLL per term
    std::vector<float> row_nll;       // policy: the NLL of every loss row
    std::vector<float> row_entropy;   // policy, when asked: the entropy of the distribution at every loss row
};

class Engine {
public:
    Engine() = default;
    ~Engine();
    Engine(const Engine &) = delete;
    Engine & operator=(const Engine &) = delete;

    bool init(const EngineOptions & opt);

    // Forward (and backward, accumulating into the gradients) over one batch, by the way
    // set_recompute() chose.
    bool eval(const Batch & batch, const LossSpec & spec, bool backward, BatchResult & out);
    void set_recompute(bool on) { recompute_ = on; }
    bool recompute() const { return recompute_; }
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

    // Memory a step over rows of `tokens` tokens needs beyond what is allocated now: the
    // activations kept between graphs, the largest graph's compute buffer (measured by
    // ggml's allocator without allocating it) and host buffers, for either way of stepping;
    // `per_row`: with policy rows' loss (every token scored on its own, entropy too).
    struct StepMemory {
        size_t activations = 0, compute = 0, host = 0;
        size_t total() const { return activations + compute + host; }
    };
    StepMemory step_memory(int64_t tokens, bool recompute, bool per_row = false);
    // Free memory where the step's tensors go (the GPU's, or the machine's).
    size_t free_memory() const;

    int64_t f32_products() const { return f32_products_; } // products handed to f32_gemm.cpp's kernel so far
    int64_t q8_products() const { return q8_products_; }   // and to q8_products.cpp's

private:
    struct LoraPair { ggml_tensor * a = nullptr; ggml_tensor * b = nullptr; };

    // One graph to build and run: its context (over the reusable metadata buffer), the
    // inputs to fill once it is allocated, the outputs to compute, and the accumulators
    // that the gradients of its parameters (besides the trainables) go to.
    struct Graph {
        ggml_context * ctx = nullptr;
        int size = 0;
        std::vector<std::pair<ggml_tensor *, std::function<void(ggml_tensor *)>>> inputs;
        std::vector<ggml_tensor *> outputs;
        std::vector<std::pair<ggml_tensor *, ggml_tensor *>> accumulators;
        ~Graph();
        ggml_tensor * input(ggml_tensor * t, std::function<void(ggml_tensor *)> fill);
        ggml_tensor * input(ggml_tensor * t, const void * data); // `data` must outlive run()
        ggml_tensor * labels(const int32_t * ids, int64_t n, int64_t n_vocab); // one-hot rows
    };
    bool begin(Graph & g, int size);
    ggml_cgraph * build(Graph & g, ggml_tensor * loss, ggml_tensor ** loss_grad);
    // Runs the graph: forward only when `loss` is null, else forward and backward.
    bool run(Graph & g, ggml_tensor * loss);
    // The compute buffer the graph would need, measured without allocating it.
    size_t measure(Graph & g, ggml_tensor * loss);

    // pieces of the model's graph (graph.cpp)
    ggml_tensor * linear(ggml_context * ctx, int il, int mod, ggml_tensor * x);
    ggml_tensor * attn_norm(ggml_context * ctx, int il, ggml_tensor * x);
    ggml_tensor * rope(ggml_context * ctx, ggml_tensor * t, ggml_tensor * pos);
    ggml_tensor * queries(ggml_context * ctx, int il, ggml_tensor * cur, ggml_tensor * pos);
    ggml_tensor * keys(ggml_context * ctx, int il, ggml_tensor * cur, ggml_tensor * pos);
    ggml_tensor * values(ggml_context * ctx, int il, ggml_tensor * cur);
    ggml_tensor * values_by_token(ggml_context * ctx, ggml_tensor * v);
    ggml_tensor * attention(ggml_context * ctx, ggml_tensor * q, ggml_tensor * k, ggml_tensor * vt, ggml_tensor * mask);
    ggml_tensor * after_attention(ggml_context * ctx, int il, ggml_tensor * x, ggml_tensor * attn);
    ggml_tensor * final_norm(ggml_context * ctx, ggml_tensor * x);
    ggml_tensor * forward(ggml_context * ctx, ggml_tensor * tokens, ggml_tensor * pos, ggml_tensor * mask);
    void group_nll(ggml_context * ctx, ggml_tensor * h, ggml_tensor * labels, const std::vector<Batch::Group> & groups,
                   std::vector<ggml_tensor *> & out);
    // Policy rows: the NLL of each row ([1, n]), its entropy when `entropy` is given, and
    // the loss Σ coef · NLL when `coef` is (else null).
    struct RowLoss { ggml_tensor * nll = nullptr, * entropy = nullptr, * loss = nullptr; };
    RowLoss row_loss(Graph & g, ggml_tensor * h, ggml_tensor * labels, const float * coef, bool entropy, float logit_scale = 1.0f);
    void read_rows(const RowLoss & rl, int64_t r0, BatchResult & out);

    // the one-graph step (graph.cpp)
    ggml_tensor * whole_row(Graph & g, const Batch & batch, const LossSpec & spec, const float * mask,
                            std::vector<ggml_tensor *> & nll, RowLoss & rl);
    bool eval_whole(const Batch & batch, const LossSpec & spec, bool backward, BatchResult & out);

    // the chunked step (chunked.cpp)
    struct Chunk { int64_t q0, q1, k0; }; // queries [q0, q1), the keys they may see from k0 on
    struct LossChunk { int64_t r0, r1; }; // loss rows [r0, r1)
    std::vector<Chunk> attention_chunks(const Batch & b) const;
    std::vector<Chunk> token_chunks(int64_t T) const;
    std::vector<LossChunk> loss_chunks(int64_t n_rows, bool per_row) const;
    bool ensure_activations(int64_t T);
    size_t activation_bytes(int64_t T) const;
    bool eval_chunked(const Batch & b, const LossSpec & spec, bool backward, BatchResult & out);
    bool forward_layers(const Batch & b);
    bool loss_pass(const Batch & b, const std::vector<double> * coef, std::vector<double> & term_nll);
    bool row_loss_pass(const Batch & b, const LossSpec & spec, bool backward, BatchResult & out);
    bool output_loss(const Batch & b, const LossSpec & spec, bool backward, BatchResult & out);
    bool backward_layer(const Batch & b, int il);
    bool embedding_backward(const Batch & b);
    ggml_tensor * rows_of(ggml_context * ctx, ggml_tensor * t, int64_t r0, int64_t r1);
    ggml_tensor * value_rows(ggml_context * ctx, ggml_tensor * t, int64_t r0, int64_t r1);
    struct ChunkLeaves { ggml_tensor * x, * k, * v; };
    ChunkLeaves kept_rows(ggml_context * ctx, int il, const Chunk & c);
    ggml_tensor * attention_chunk(Graph & g, const Batch & b, int il, const Chunk & c, std::vector<float> & mask,
                                  ggml_tensor * x, ggml_tensor * k, ggml_tensor * v);
    ggml_tensor * key_value_loss(Graph & g, const Batch & b, int il, const Chunk & c, ggml_tensor * x, ggml_tensor * gk, ggml_tensor * gv);
    void loss_chunk(Graph & g, const Batch & b, const LossChunk & c, std::vector<std::pair<int, ggml_tensor *>> & parts);

    // Tensors kept between the graphs of one row's chunked step, for rows of up to T tokens.
    struct Activations {
        int64_t T = 0;
        ggml_context * ctx = nullptr;
        ggml_backend_buffer_t buf = nullptr;
        std::vector<ggml_tensor *> x;    // the input of each layer, and the last layer's output [n_embd, T]
        std::vector<ggml_tensor *> k;    // each layer's keys (after rope) [head_dim, n_head_kv, T]
        std::vector<ggml_tensor *> v;    // each layer's values, by token [T, head_dim, n_head_kv]
        ggml_tensor * gx[2] = {nullptr, nullptr}; // ∂loss/∂x of a layer's output and of its input, in turn
        ggml_tensor * gk = nullptr;      // ∂loss/∂K, ∂loss/∂V of the layer being differentiated (laid out as k, v)
        ggml_tensor * gv = nullptr;
        // the frozen weights of the layer being differentiated, transposed once for all its
        // chunks' backward products (F32, or BF16 with frozen_bf16 on the CPU) [n_in, n_out]
        std::array<ggml_tensor *, MOD_COUNT> wt{};
    } act_;
    // frozen weight -> its transposed copy, for the graphs built while it is set
    std::map<const ggml_tensor *, ggml_tensor *> frozen_t_;
    int64_t f32_products_ = 0, q8_products_ = 0;
    // empties frozen_t_ when it goes out of scope (its tensors live only as long as their graphs)
    struct FrozenScope {
        std::map<const ggml_tensor *, ggml_tensor *> & m;
        ~FrozenScope() { m.clear(); }
    };
    bool is_frozen(const ggml_tensor * w) const;
    ggml_type frozen_t_type() const;
    // the graph's matrix products on still's kernels where they take them (f32_gemm.cpp, q8_products.cpp)
    void own_products(ggml_context * ctx, ggml_cgraph * gf);
    bool f32_product(ggml_context * ctx, ggml_tensor * node, bool out_prod);
    bool q8_product(ggml_context * ctx, ggml_tensor * node);
    // node becomes a custom op of kernel over its two sources (its consumers keep pointing at it)
    static void make_custom(ggml_context * ctx, ggml_tensor * node, ggml_custom_op_t kernel, void * userdata);
    ggml_tensor * new_frozen_t(ggml_context * ctx, const ggml_tensor * w) const;
    size_t frozen_t_bytes() const;
    bool transpose_frozen(int il);
    void free_activations();
    bool recompute_ = false;

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
