// The model's graph for the llama family (llama, qwen2, qwen3), built from its own tensors
// in pieces (the attention's inputs, the attention itself, the rest of a layer) that both
// ways of taking a step share: the one-graph path here, which runs forward, loss and
// ggml's backward pass over a whole row, and the chunked path (chunked.cpp). Attention is
// computed from the row's own K and V under the packing mask: no KV cache.
#include <cmath>
#include <cstring>
#include <map>

#include "common.h"
#include "engine.h"

namespace st {

// --- pieces of a layer ---------------------------------------------------------------------

// y = W x (+ s · B A x) (+ bias), the LoRA term before the bias as llama.cpp adds it.
ggml_tensor * Engine::linear(ggml_context * ctx, int il, int mod, ggml_tensor * x) {
    const Linear & lin = model_.layers[il].lin[mod];
    ggml_tensor * y = ggml_mul_mat(ctx, lin.w, x);
    if (!lora_.empty() && lora_[il][mod].a) {
        const LoraPair & p = lora_[il][mod];
        ggml_tensor * ab = ggml_mul_mat(ctx, p.b, ggml_mul_mat(ctx, p.a, x));
        y = ggml_add(ctx, y, ggml_scale(ctx, ab, lora_scale()));
    }
    if (lin.b) y = ggml_add(ctx, y, lin.b);
    return y;
}

ggml_tensor * Engine::attn_norm(ggml_context * ctx, int il, ggml_tensor * x) {
    return ggml_mul(ctx, ggml_rms_norm(ctx, x, model_.hp.rms_eps), model_.layers[il].attn_norm);
}

ggml_tensor * Engine::rope(ggml_context * ctx, ggml_tensor * t, ggml_tensor * pos) {
    const Hparams & hp = model_.hp;
    return ggml_rope_ext(ctx, t, pos, model_.rope_freqs, (int) hp.n_rot, hp.rope_mode, (int) hp.n_ctx_train,
                         hp.rope_freq_base, hp.rope_freq_scale, 0.0f, 1.0f, 32.0f, 1.0f);
}

// Queries of `cur` (the normed layer input), [head_dim, n_head, tokens], after q_norm and rope.
ggml_tensor * Engine::queries(ggml_context * ctx, int il, ggml_tensor * cur, ggml_tensor * pos) {
    const Hparams & hp = model_.hp;
    ggml_tensor * q = ggml_reshape_3d(ctx, linear(ctx, il, MOD_Q, cur), hp.head_dim, hp.n_head, cur->ne[1]);
    if (model_.layers[il].q_norm) q = ggml_mul(ctx, ggml_rms_norm(ctx, q, hp.rms_eps), model_.layers[il].q_norm);
    return rope(ctx, q, pos);
}

// Keys of `cur`, [head_dim, n_head_kv, tokens], after k_norm and rope.
ggml_tensor * Engine::keys(ggml_context * ctx, int il, ggml_tensor * cur, ggml_tensor * pos) {
    const Hparams & hp = model_.hp;
    ggml_tensor * k = ggml_reshape_3d(ctx, linear(ctx, il, MOD_K, cur), hp.head_dim, hp.n_head_kv, cur->ne[1]);
    if (model_.layers[il].k_norm) k = ggml_mul(ctx, ggml_rms_norm(ctx, k, hp.rms_eps), model_.layers[il].k_norm);
    return rope(ctx, k, pos);
}

// Values of `cur`, [head_dim, n_head_kv, tokens].
ggml_tensor * Engine::values(ggml_context * ctx, int il, ggml_tensor * cur) {
    const Hparams & hp = model_.hp;
    return ggml_reshape_3d(ctx, linear(ctx, il, MOD_V, cur), hp.head_dim, hp.n_head_kv, cur->ne[1]);
}

// Values laid out for the attention's product: [tokens, hd, n_head_kv].
ggml_tensor * Engine::values_by_token(ggml_context * ctx, ggml_tensor * v) {
    return ggml_permute(ctx, v, 1, 2, 0, 3);
}

// Attention of queries q [hd, n_head, nq] over keys k [hd, n_head_kv, nk] and values vt
// [nk, hd, n_head_kv] (values_by_token) under `mask` [nk, nq]: [hd · n_head, nq]. K heads
// are shared by groups of Q heads.
ggml_tensor * Engine::attention(ggml_context * ctx, ggml_tensor * q, ggml_tensor * k, ggml_tensor * vt, ggml_tensor * mask) {
    const Hparams & hp = model_.hp;
    const int64_t nq = q->ne[2];
    ggml_tensor * qp = ggml_cont(ctx, ggml_permute(ctx, q, 0, 2, 1, 3)); // [hd, nq, n_head], contiguous for the fast kernels
    ggml_tensor * kp = ggml_permute(ctx, k, 0, 2, 1, 3);              // [hd, nk, n_head_kv]
    ggml_tensor * kq = ggml_mul_mat(ctx, kp, qp);                      // [nk, nq, n_head]
    kq = ggml_soft_max_ext(ctx, kq, mask, hp.attn_scale, 0.0f);
    ggml_tensor * kqv = ggml_mul_mat(ctx, vt, kq);                     // [hd, nq, n_head]
    ggml_tensor * cur = ggml_cont(ctx, ggml_permute(ctx, kqv, 0, 2, 1, 3)); // [hd, n_head, nq]
    return ggml_reshape_2d(ctx, cur, hp.head_dim * hp.n_head, nq);
}

// The rest of layer il after the attention: x + O(attn), then the feed-forward (SwiGLU) block.
ggml_tensor * Engine::after_attention(ggml_context * ctx, int il, ggml_tensor * x, ggml_tensor * attn) {
    const Layer & L = model_.layers[il];
    x = ggml_add(ctx, x, linear(ctx, il, MOD_O, attn));
    ggml_tensor * cur = ggml_mul(ctx, ggml_rms_norm(ctx, x, model_.hp.rms_eps), L.ffn_norm);
    ggml_tensor * h = ggml_swiglu_split(ctx, linear(ctx, il, MOD_GATE, cur), linear(ctx, il, MOD_UP, cur));
    return ggml_add(ctx, x, linear(ctx, il, MOD_DOWN, h));
}

ggml_tensor * Engine::final_norm(ggml_context * ctx, ggml_tensor * x) {
    return ggml_mul(ctx, ggml_rms_norm(ctx, x, model_.hp.rms_eps), model_.output_norm);
}

// Hidden states after the final norm, [n_embd, n_tokens], all layers in one graph.
ggml_tensor * Engine::forward(ggml_context * ctx, ggml_tensor * tokens, ggml_tensor * pos, ggml_tensor * mask) {
    ggml_tensor * x = ggml_get_rows(ctx, model_.tok_embd, tokens);
    for (int il = 0; il < model_.hp.n_layer; il++) {
        ggml_tensor * cur = attn_norm(ctx, il, x);
        ggml_tensor * vt = ggml_cont(ctx, values_by_token(ctx, values(ctx, il, cur)));
        ggml_tensor * attn = attention(ctx, queries(ctx, il, cur, pos), keys(ctx, il, cur, pos), vt, mask);
        x = after_attention(ctx, il, x, attn);
    }
    return final_norm(ctx, x);
}

// Σ weight · coef · NLL over groups of loss rows whose hidden states are `h` [n_embd, N]
// (rows of a group share one weight, so the masking is a selection of rows and ggml's
// cross-entropy gradient stays exact: a weight folded into the labels would not be, its
// backward assumes label rows that sum to 1). Each group's weighted NLL node goes to `out`.
void Engine::group_nll(ggml_context * ctx, ggml_tensor * h, ggml_tensor * labels, const std::vector<Batch::Group> & groups,
                       std::vector<ggml_tensor *> & out) {
    out.clear();
    for (const Batch::Group & g : groups) {
        ggml_tensor * hg = ggml_view_2d(ctx, h, h->ne[0], g.count, h->nb[1], g.first * h->nb[1]);
        ggml_tensor * lg = ggml_view_2d(ctx, labels, labels->ne[0], g.count, labels->nb[1], g.first * labels->nb[1]);
        ggml_tensor * logits = ggml_mul_mat(ctx, model_.output, hg);
        out.push_back(ggml_scale(ctx, ggml_cross_entropy_loss(ctx, logits, lg), (float) (g.weight * g.count)));
    }
}

Engine::RowLoss Engine::row_loss(Graph & g, ggml_tensor * h, ggml_tensor * labels, const float * coef, bool entropy, float logit_scale) {
    ggml_context * ctx = g.ctx;
    RowLoss rl;
    ggml_tensor * logits = ggml_mul_mat(ctx, model_.output, h); // [n_vocab, n]
    if (logit_scale != 1.0f) logits = ggml_scale(ctx, logits, logit_scale); // the sampling temperature
    ggml_tensor * p = ggml_soft_max(ctx, logits);
    // −log p(label). The floor keeps the log finite where the softmax underflows (p < 1e-37,
    // a token no sampler would have drawn); above it, value and gradient are exact.
    rl.nll = ggml_scale(ctx, ggml_log(ctx, ggml_scale_bias(ctx, ggml_sum_rows(ctx, ggml_mul(ctx, p, labels)), 1.0f, 1e-37f)), -1.0f);
    g.outputs.push_back(rl.nll);
    if (entropy) {
        rl.entropy = ggml_scale(ctx, ggml_sum_rows(ctx, ggml_mul(ctx, p, ggml_log(ctx, ggml_scale_bias(ctx, p, 1.0f, 1e-37f)))), -1.0f);
        g.outputs.push_back(rl.entropy);
    }
    if (coef) {
        ggml_tensor * c = g.input(ggml_new_tensor_2d(ctx, GGML_TYPE_F32, 1, h->ne[1]), coef);
        rl.loss = ggml_sum(ctx, ggml_mul(ctx, rl.nll, c));
    }
    return rl;
}

void Engine::read_rows(const RowLoss & rl, int64_t r0, BatchResult & out) {
    const int64_t n = rl.nll->ne[1];
    if ((int64_t) out.row_nll.size() < r0 + n) out.row_nll.resize((size_t) (r0 + n));
    ggml_backend_tensor_get(rl.nll, out.row_nll.data() + r0, 0, (size_t) n * sizeof(float));
    if (rl.entropy) {
        if ((int64_t) out.row_entropy.size() < r0 + n) out.row_entropy.resize((size_t) (r0 + n));
        ggml_backend_tensor_get(rl.entropy, out.row_entropy.data() + r0, 0, (size_t) n * sizeof(float));
    }
}

int Engine::graph_size(size_t n_groups) const {
    return (int) (model_.hp.n_layer * 640 + n_groups * 96 + 4096);
}

// --- running one graph ---------------------------------------------------------------------

Engine::Graph::~Graph() {
    if (ctx) ggml_free(ctx);
}

ggml_tensor * Engine::Graph::input(ggml_tensor * t, std::function<void(ggml_tensor *)> fill) {
    ggml_set_input(t);
    inputs.push_back({t, std::move(fill)});
    return t;
}

ggml_tensor * Engine::Graph::input(ggml_tensor * t, const void * data) {
    return input(t, [data](ggml_tensor * x) { ggml_backend_tensor_set(x, data, 0, ggml_nbytes(x)); });
}

ggml_tensor * Engine::Graph::labels(const int32_t * ids, int64_t n, int64_t n_vocab) {
    // one-hot rows, written in place: no host copy of n_vocab × rows floats
    return input(ggml_new_tensor_2d(ctx, GGML_TYPE_F32, n_vocab, n), [ids, n, n_vocab](ggml_tensor * t) {
        ggml_backend_tensor_memset(t, 0, 0, ggml_nbytes(t));
        const float one = 1.0f;
        for (int64_t i = 0; i < n; i++) ggml_backend_tensor_set(t, &one, ((size_t) i * n_vocab + ids[i]) * sizeof(float), sizeof(float));
    });
}

bool Engine::begin(Graph & g, int size) {
    // the graph's metadata lives in a buffer kept across graphs (no fresh pages each time);
    // the rewrite of the backward pass makes a second graph, up to twice as large
    if (!ensure_sched(4 * size)) return false;
    ctx_mem_.resize(std::max(ctx_mem_.size(), (size_t) size * 5 * ggml_tensor_overhead() + ggml_graph_overhead_custom(size, true) +
                                                  ggml_graph_overhead_custom(2 * size, false)));
    ggml_init_params ip = {
        /*.mem_size   =*/ ctx_mem_.size(),
        /*.mem_buffer =*/ ctx_mem_.data(),
        /*.no_alloc   =*/ true,
    };
    g.ctx = ggml_init(ip);
    g.size = size;
    if (!g.ctx) {
        fprintf(stderr, "%s: error: ggml_init failed\n", __func__);
        return false;
    }
    return true;
}

ggml_cgraph * Engine::build(Graph & g, ggml_tensor * loss, ggml_tensor ** loss_grad) {
    ggml_cgraph * gf = ggml_new_graph_custom(g.ctx, g.size, loss != nullptr);
    for (ggml_tensor * t : g.outputs) {
        ggml_set_output(t);
        ggml_build_forward_expand(gf, t);
    }
    *loss_grad = nullptr;
    if (!loss) {
        own_products(g.ctx, gf);
        return gf;
    }
    ggml_set_output(loss);
    ggml_build_forward_expand(gf, loss);
    ggml_set_loss(loss);
    // gradients of the trainable tensors accumulate into their own tensors across graphs,
    // those of the graph's other parameters into the accumulators the graph names
    std::map<const ggml_tensor *, ggml_tensor *> acc;
    for (const Trainable & t : train_) acc[t.param] = t.grad;
    for (const auto & a : g.accumulators) acc[a.first] = a.second;
    std::vector<ggml_tensor *> grad_accs(ggml_graph_n_nodes(gf), nullptr);
    for (int i = 0; i < ggml_graph_n_nodes(gf); i++) {
        auto it = acc.find(ggml_graph_node(gf, i));
        if (it != acc.end()) grad_accs[i] = it->second;
    }
    ggml_build_backward_expand(g.ctx, gf, grad_accs.data());
    *loss_grad = ggml_graph_get_grad_acc(gf, loss);
    ggml_set_input(*loss_grad);
    ggml_cgraph * out = opt_.out_prod_as_mul_mat ? rewrite_out_prods(g.ctx, gf, 2 * g.size) : gf;
    own_products(g.ctx, out);
    return out;
}

void Engine::make_custom(ggml_context * ctx, ggml_tensor * node, ggml_custom_op_t kernel, void * userdata) {
    ggml_tensor * args[2] = {node->src[0], node->src[1]};
    ggml_tensor * c = ggml_custom_4d(ctx, GGML_TYPE_F32, node->ne[0], node->ne[1], node->ne[2], node->ne[3], args, 2, kernel,
                                     GGML_N_TASKS_MAX, userdata);
    node->op = c->op;
    memcpy(node->op_params, c->op_params, sizeof(node->op_params));
    for (int s = 0; s < GGML_MAX_SRC; s++) node->src[s] = c->src[s];
}

void Engine::own_products(ggml_context * ctx, ggml_cgraph * gf) {
    const int n = ggml_graph_n_nodes(gf);
    for (int i = 0; i < n; i++) {
        ggml_tensor * node = ggml_graph_node(gf, i);
        if (node->op == GGML_OP_MUL_MAT && !q8_product(ctx, node)) f32_product(ctx, node, false);
    }
}

bool Engine::run(Graph & g, ggml_tensor * loss) {
    ggml_tensor * loss_grad = nullptr;
    ggml_cgraph * gf = build(g, loss, &loss_grad);
    ggml_backend_sched_reset(sched_);
    if (!ggml_backend_sched_alloc_graph(sched_, gf)) {
        fprintf(stderr, "run_graph: error: cannot allocate a compute graph of %d nodes (out of memory?)\n", ggml_graph_n_nodes(gf));
        return false;
    }
    for (auto & in : g.inputs) in.second(in.first);
    if (getenv("STILL_DEBUG_MEM")) fprintf(stderr, "graph %d nodes: cpu buffer %.1f MB, rss %.1f MB\n", ggml_graph_n_nodes(gf),
        ggml_backend_sched_get_buffer_size(sched_, cpu_) / 1048576.0, current_rss_bytes() / 1048576.0);
    if (loss_grad) {
        const float one = 1.0f;
        ggml_backend_tensor_set(loss_grad, &one, 0, sizeof(float));
    }
    return compute(gf, true);
}

size_t Engine::measure(Graph & g, ggml_tensor * loss) {
    ggml_tensor * loss_grad = nullptr;
    ggml_cgraph * gf = build(g, loss, &loss_grad);
    ggml_backend_t backends[2];
    int n = 0;
    if (gpu_) backends[n++] = gpu_;
    backends[n++] = cpu_;
    // a scheduler of its own: measuring must not grow the buffers the steps use
    ggml_backend_sched_t sched = ggml_backend_sched_new(backends, nullptr, n, (size_t) std::max(4 * g.size, ggml_graph_size(gf)), false, false);
    if (!sched) return SIZE_MAX;
    size_t sizes[2] = {0, 0};
    ggml_backend_sched_reserve_size(sched, gf, sizes);
    ggml_backend_sched_free(sched);
    return sizes[0] + sizes[1];
}

// --- the one-graph path ---------------------------------------------------------------------

// Builds the whole row's step as one graph: forward over all tokens, the loss from the
// loss rows, and (in run()) ggml's backward pass. `mask` holds the row's packing mask
// ([T, T], Batch::mask). Returns the loss node (null on error).
ggml_tensor * Engine::whole_row(Graph & g, const Batch & batch, const LossSpec & spec, const float * mask,
                                std::vector<ggml_tensor *> & nll, RowLoss & rl) {
    const int64_t T = batch.n_tokens;
    const int64_t N = (int64_t) batch.rows.size();
    ggml_context * ctx = g.ctx;
    ggml_tensor * tokens = g.input(ggml_new_tensor_1d(ctx, GGML_TYPE_I32, T), batch.tokens.data());
    ggml_tensor * pos = g.input(ggml_new_tensor_1d(ctx, GGML_TYPE_I32, T), batch.pos.data());
    ggml_tensor * m = g.input(ggml_new_tensor_2d(ctx, GGML_TYPE_F32, T, T), mask);
    ggml_tensor * rows = g.input(ggml_new_tensor_1d(ctx, GGML_TYPE_I32, N), batch.rows.data());
    ggml_tensor * labels = g.labels(batch.labels.data(), N, model_.hp.n_vocab);

    // the hidden states of the loss rows only: logits are computed where a token is scored
    ggml_tensor * h = ggml_get_rows(ctx, forward(ctx, tokens, pos, m), rows); // [n_embd, N]
    if (spec.task == Task::POLICY) {
        rl = row_loss(g, h, labels, spec.row_coef ? spec.row_coef->data() : nullptr, spec.entropy, spec.logit_scale);
        return rl.loss ? rl.loss : rl.nll;
    }
    nll.assign(batch.terms.size(), nullptr);
    std::vector<ggml_tensor *> parts;
    for (size_t ti = 0; ti < batch.terms.size(); ti++) {
        group_nll(ctx, h, labels, batch.terms[ti].groups, parts);
        for (ggml_tensor * p : parts) nll[ti] = nll[ti] ? ggml_add(ctx, nll[ti], p) : p;
        if (nll[ti]) g.outputs.push_back(nll[ti]); // metrics read every term
    }
    return loss_graph(ctx, batch, spec, nll);
}

bool Engine::eval_whole(const Batch & batch, const LossSpec & spec, bool backward, BatchResult & out) {
    size_t n_groups = 0;
    for (const Batch::Term & t : batch.terms) n_groups += t.groups.size();
    Graph g;
    if (!begin(g, graph_size(n_groups))) return false;
    std::vector<float> mask((size_t) batch.n_tokens * (size_t) batch.n_tokens);
    batch.mask(0, batch.n_tokens, 0, batch.n_tokens, mask.data());
    std::vector<ggml_tensor *> nll;
    RowLoss rl;
    ggml_tensor * loss = whole_row(g, batch, spec, mask.data(), nll, rl);
    if (!loss) return false;
    if (!backward) g.outputs.push_back(loss);
    if (!run(g, backward ? loss : nullptr)) return false;
    if (spec.task == Task::POLICY) {
        read_rows(rl, 0, out);
        float v = 0;
        if (rl.loss) ggml_backend_tensor_get(rl.loss, &v, 0, sizeof(float));
        out.loss = v;
        return true;
    }
    float v = 0;
    ggml_backend_tensor_get(loss, &v, 0, sizeof(float));
    out.loss = v;
    out.term_nll.assign(batch.terms.size(), 0.0);
    for (size_t ti = 0; ti < nll.size(); ti++) {
        if (!nll[ti]) continue;
        ggml_backend_tensor_get(nll[ti], &v, 0, sizeof(float));
        out.term_nll[ti] = v;
    }
    return true;
}

bool Engine::eval(const Batch & batch, const LossSpec & spec, bool backward, BatchResult & out) {
    if (batch.rows.empty()) {
        out.loss = 0;
        out.term_nll.assign(batch.terms.size(), 0.0);
        return true;
    }
    if (spec.task == Task::POLICY) {
        if (backward && (!spec.row_coef || spec.row_coef->size() != batch.rows.size())) {
            fprintf(stderr, "%s: error: a policy step needs one coefficient per loss row (%zu rows)\n", __func__, batch.rows.size());
            return false;
        }
        out.row_nll.assign(batch.rows.size(), 0.0f);
        out.row_entropy.assign(spec.entropy ? batch.rows.size() : 0, 0.0f);
    }
    return recompute_ ? eval_chunked(batch, spec, backward, out) : eval_whole(batch, spec, backward, out);
}

bool Engine::logits(const std::vector<int32_t> & toks, std::vector<float> & out) {
    const Hparams & hp = model_.hp;
    const int64_t T = (int64_t) toks.size();
    for (int32_t t : toks) {
        if (t < 0 || t >= hp.n_vocab) {
            fprintf(stderr, "%s: error: token %d is not in the vocabulary (%lld tokens)\n", __func__, t, (long long) hp.n_vocab);
            return false;
        }
    }
    Graph g;
    if (!begin(g, graph_size(1))) return false;
    std::vector<int32_t> p(T);
    for (int64_t i = 0; i < T; i++) p[i] = (int32_t) i;
    std::vector<float> m((size_t) T * T, -INFINITY);
    for (int64_t i = 0; i < T; i++)
        for (int64_t k = 0; k <= i; k++) m[(size_t) i * T + k] = 0.0f;
    ggml_tensor * tokens = g.input(ggml_new_tensor_1d(g.ctx, GGML_TYPE_I32, T), toks.data());
    ggml_tensor * pos = g.input(ggml_new_tensor_1d(g.ctx, GGML_TYPE_I32, T), p.data());
    ggml_tensor * mask = g.input(ggml_new_tensor_2d(g.ctx, GGML_TYPE_F32, T, T), m.data());
    ggml_tensor * logits = ggml_mul_mat(g.ctx, model_.output, forward(g.ctx, tokens, pos, mask));
    g.outputs.push_back(logits);
    if (!run(g, nullptr)) return false;
    out.resize((size_t) hp.n_vocab * T);
    ggml_backend_tensor_get(logits, out.data(), 0, out.size() * sizeof(float));
    return true;
}

} // namespace st
