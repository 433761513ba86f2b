// How much memory a step needs, measured before training starts, so that a run that would
// not fit is refused up front (with the largest rows that would) instead of dying mid-run.
#include <algorithm>
#include <cstdio>
#include <cstring>

#include "engine.h"

#if defined(__linux__)
#include <fstream>
#include <string>
#endif

namespace st {

namespace {
// The worst row of `T` tokens a plan sizes a step for: one sequence, every position scored.
Batch worst_row(int64_t T, int64_t n_vocab) {
    Batch b;
    b.n_tokens = b.real_tokens = T;
    Batch::Term term;
    term.groups.push_back({0, T - 1, 1.0f});
    term.weight_sum = (double) (T - 1);
    for (int64_t i = 0; i < T; i++) {
        b.tokens.push_back((int32_t) (i % n_vocab));
        b.pos.push_back((int32_t) i);
        b.seq_start.push_back(0);
        if (i + 1 < T) {
            b.rows.push_back((int32_t) i);
            b.labels.push_back((int32_t) ((i + 1) % n_vocab));
        }
    }
    b.terms.push_back(term);
    b.loss_tokens = T - 1;
    return b;
}
} // namespace

Engine::StepMemory Engine::step_memory(int64_t T, bool recompute) {
    const Hparams & hp = model_.hp;
    T = (T + 15) / 16 * 16;
    const Batch b = worst_row(T, hp.n_vocab);
    LossSpec spec;
    spec.scale = 1.0 / (double) (T - 1);
    StepMemory out;
    out.host = (size_t) T * 24; // the row's tokens, positions, sequence starts, loss rows and labels
    if (!recompute) {
        Graph g;
        std::vector<ggml_tensor *> nll;
        if (!begin(g, graph_size(1))) return out;
        out.compute = measure(g, whole_row(g, b, spec, nullptr, nll));
        out.host += (size_t) T * (size_t) T * sizeof(float); // the mask
        return out;
    }
    out.activations = activation_bytes(T);
    size_t compute = 0;
    std::vector<float> mask;
    {
        // the last query chunk: it sees the most keys
        const Chunk c = attention_chunks(b).back();
        const int64_t nq = c.q1 - c.q0, nk = c.q1 - c.k0;
        Graph g;
        if (!begin(g, 2048)) return out;
        auto leaf = [&](int64_t ne0, int64_t ne1, int64_t ne2) {
            ggml_tensor * t = ggml_new_tensor_3d(g.ctx, GGML_TYPE_F32, ne0, ne1, ne2);
            ggml_set_param(t);
            return t;
        };
        ggml_tensor * x = ggml_reshape_2d(g.ctx, leaf(hp.n_embd, nq, 1), hp.n_embd, nq);
        ggml_tensor * y = attention_chunk(g, b, 0, c, mask, x, leaf(hp.head_dim, hp.n_head_kv, nk), leaf(nk, hp.head_dim, hp.n_head_kv));
        ggml_tensor * grad = ggml_new_tensor_2d(g.ctx, GGML_TYPE_F32, hp.n_embd, nq);
        ggml_set_input(grad);
        compute = std::max(compute, measure(g, ggml_sum(g.ctx, ggml_mul(g.ctx, y, grad))));
        out.host += mask.size() * sizeof(float);
    }
    {
        // the loss rows' chunk, over the kept output of the last layer (counted above, not here)
        Graph g;
        if (!begin(g, 4096 + 96 * 4)) return out;
        const LossChunk c = loss_chunks((int64_t) b.rows.size()).front();
        const int64_t n = c.r1 - c.r0;
        ggml_tensor * x = ggml_new_tensor_2d(g.ctx, GGML_TYPE_F32, hp.n_embd, T);
        ggml_set_param(x);
        ggml_tensor * rows = ggml_new_tensor_1d(g.ctx, GGML_TYPE_I32, n);
        ggml_tensor * labels = ggml_new_tensor_2d(g.ctx, GGML_TYPE_F32, hp.n_vocab, n);
        ggml_set_input(rows);
        ggml_set_input(labels);
        std::vector<ggml_tensor *> nll;
        group_nll(g.ctx, final_norm(g.ctx, ggml_get_rows(g.ctx, x, rows)), labels, {{0, n, 1.0f}}, nll);
        const size_t measured = measure(g, nll[0]);
        compute = std::max(compute, measured > ggml_nbytes(x) ? measured - ggml_nbytes(x) : measured);
    }
    out.compute = compute;
    return out;
}

size_t Engine::free_memory() const {
    if (gpu_) {
        size_t free = 0, total = 0;
        ggml_backend_dev_memory(ggml_backend_get_device(gpu_), &free, &total);
        return free;
    }
#if defined(__linux__)
    std::ifstream meminfo("/proc/meminfo");
    std::string key;
    size_t kb = 0;
    std::string unit;
    while (meminfo >> key >> kb >> unit) {
        if (key == "MemAvailable:") return kb * 1024;
    }
#endif
    size_t free = 0, total = 0;
    ggml_backend_dev_memory(ggml_backend_get_device(cpu_), &free, &total);
    return free;
}

} // namespace st
