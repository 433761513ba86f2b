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
// The worst row of `T` tokens a plan sizes a step for: one sequence, every position scored
// (as one SFT term, or as policy rows).
Batch worst_row(int64_t T, int64_t n_vocab, bool per_row) {
    Batch b;
    b.n_tokens = b.real_tokens = T;
    Batch::Term term;
    term.groups.push_back({0, T - 1, 1.0f});
    term.weight_sum = (double) (T - 1);
    if (per_row) b.spans.push_back({0, 0, T - 1});
    for (int64_t i = 0; i < T; i++) {
        b.tokens.push_back((int32_t) (i % n_vocab));
        b.pos.push_back((int32_t) i);
        b.seq_start.push_back(0);
        if (i + 1 < T) {
            b.rows.push_back((int32_t) i);
            b.labels.push_back((int32_t) ((i + 1) % n_vocab));
        }
    }
    if (!per_row) b.terms.push_back(term);
    b.loss_tokens = T - 1;
    return b;
}
} // namespace

Engine::StepMemory Engine::step_memory(int64_t T, bool recompute, bool per_row) {
    const Hparams & hp = model_.hp;
    T = (T + 15) / 16 * 16;
    const Batch b = worst_row(T, hp.n_vocab, per_row);
    const std::vector<float> coef(per_row ? (size_t) T : 0); // never read: nothing is computed
    LossSpec spec;
    spec.task = per_row ? Task::POLICY : Task::SFT;
    spec.scale = 1.0 / (double) (T - 1);
    spec.row_coef = &coef;
    spec.entropy = per_row;
    StepMemory out;
    out.host = (size_t) T * (per_row ? 36 : 24); // the row's tokens, positions, sequence starts, loss rows and labels (and row values)
    if (!recompute) {
        Graph g;
        std::vector<ggml_tensor *> nll;
        RowLoss rl;
        if (!begin(g, graph_size(1))) return out;
        out.compute = measure(g, whole_row(g, b, spec, nullptr, nll, rl));
        out.host += (size_t) T * (size_t) T * sizeof(float); // the mask
        return out;
    }
    out.activations = activation_bytes(T);
    size_t compute = 0;
    std::vector<float> mask;
    // The graphs as a step builds them, over stand-ins for the kept tensors and their
    // gradients' accumulators. Those live outside the compute buffer: the stand-ins claim a
    // place in an existing buffer so that the allocator leaves them out (nothing is computed).
    auto kept = [&](Graph & g, int64_t ne0, int64_t ne1, int64_t ne2, bool param) {
        ggml_tensor * t = ne2 > 0 ? ggml_new_tensor_3d(g.ctx, GGML_TYPE_F32, ne0, ne1, ne2) : ggml_new_tensor_2d(g.ctx, GGML_TYPE_F32, ne0, ne1);
        if (param) ggml_set_param(t);
        t->buffer = buf_grad_;
        t->data = ggml_backend_buffer_get_base(buf_grad_);
        return t;
    };
    // the layer's frozen weights, transposed before its chunks' graphs (counted in activations)
    auto frozen = [&](Graph & g) {
        frozen_t_.clear();
        for (int mod = 0; mod < MOD_COUNT; mod++) {
            const ggml_tensor * w = model_.layers[0].lin[mod].w;
            if (!w || !is_frozen(w)) continue;
            ggml_tensor * t = new_frozen_t(g.ctx, w);
            t->buffer = buf_grad_;
            t->data = ggml_backend_buffer_get_base(buf_grad_);
            frozen_t_[w] = t;
        }
    };
    FrozenScope scope{frozen_t_};
    // the backward graphs of the query chunks with the most queries, the most keys, and the
    // most scores (queries × keys)
    const std::vector<Chunk> chunks = attention_chunks(b);
    auto most = [&](auto size) {
        return *std::max_element(chunks.begin(), chunks.end(), [&](const Chunk & x, const Chunk & y) { return size(x) < size(y); });
    };
    const Chunk widest = most([](const Chunk & c) { return c.q1 - c.q0; });
    const Chunk deepest = most([](const Chunk & c) { return c.q1 - c.k0; });
    const Chunk largest = most([](const Chunk & c) { return (c.q1 - c.q0) * (c.q1 - c.k0); });
    for (const Chunk & c : {widest, deepest, largest}) {
        Graph g;
        if (!begin(g, 2048)) return out;
        frozen(g);
        ggml_tensor * x = kept(g, hp.n_embd, T, 0, true);
        ggml_tensor * k = kept(g, hp.head_dim, hp.n_head_kv, T, true);
        ggml_tensor * v = kept(g, T, hp.head_dim, hp.n_head_kv, true);
        ggml_tensor * grad = kept(g, hp.n_embd, T, 0, false);
        g.accumulators = {{x, kept(g, hp.n_embd, T, 0, false)}, {k, kept(g, hp.head_dim, hp.n_head_kv, T, false)},
                          {v, kept(g, T, hp.head_dim, hp.n_head_kv, false)}};
        ggml_tensor * y = attention_chunk(g, b, 0, c, mask, rows_of(g.ctx, x, c.q0, c.q1), rows_of(g.ctx, k, c.k0, c.q1), value_rows(g.ctx, v, c.k0, c.q1));
        compute = std::max(compute, measure(g, ggml_sum(g.ctx, ggml_mul(g.ctx, y, rows_of(g.ctx, grad, c.q0, c.q1)))));
        out.host = std::max(out.host, (size_t) T * 24 + mask.size() * sizeof(float));
    }
    {
        // the backward graph of the keys and values of a chunk of tokens
        const Chunk c = token_chunks(T).front();
        Graph g;
        if (!begin(g, 1024)) return out;
        frozen(g);
        ggml_tensor * x = kept(g, hp.n_embd, T, 0, true);
        ggml_tensor * gk = kept(g, hp.head_dim, hp.n_head_kv, T, false);
        ggml_tensor * gv = kept(g, T, hp.head_dim, hp.n_head_kv, false);
        g.accumulators = {{x, kept(g, hp.n_embd, T, 0, false)}};
        compute = std::max(compute, measure(g, key_value_loss(g, b, 0, c, x, gk, gv)));
    }
    {
        // the backward graph of a chunk of loss rows
        frozen_t_.clear();
        Graph g;
        if (!begin(g, 1024 + 96)) return out;
        const LossChunk c = loss_chunks((int64_t) b.rows.size(), per_row).front();
        const int64_t n = c.r1 - c.r0;
        ggml_tensor * x = kept(g, hp.n_embd, T, 0, true);
        g.accumulators = {{x, kept(g, hp.n_embd, T, 0, false)}};
        ggml_tensor * rows = ggml_new_tensor_1d(g.ctx, GGML_TYPE_I32, n);
        ggml_tensor * labels = ggml_new_tensor_2d(g.ctx, GGML_TYPE_F32, hp.n_vocab, n);
        ggml_set_input(rows);
        ggml_set_input(labels);
        ggml_tensor * h = final_norm(g.ctx, ggml_get_rows(g.ctx, x, rows));
        if (per_row) {
            compute = std::max(compute, measure(g, row_loss(g, h, labels, coef.data(), true).loss));
        } else {
            std::vector<ggml_tensor *> nll;
            group_nll(g.ctx, h, labels, {{0, n, 1.0f}}, nll);
            compute = std::max(compute, measure(g, nll[0]));
        }
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
