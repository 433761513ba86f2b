// The forward graph of the llama family (llama, qwen2, qwen3) from the model's own tensors:
// attention over the batch's own K and V under the packing mask (no KV cache), and the
// one-graph path that runs forward, loss and ggml's backward pass over a whole row.
#include <cmath>
#include <cstring>
#include <map>

#include "engine.h"

namespace st {

// --- the forward graph --------------------------------------------------------------------

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

// Hidden states after the final norm, [n_embd, n_tokens].
ggml_tensor * Engine::forward(ggml_context * ctx, ggml_tensor * tokens, ggml_tensor * pos, ggml_tensor * mask) {
    const Hparams & hp = model_.hp;
    const int64_t T = tokens->ne[0];
    const int64_t hd = hp.head_dim;

    ggml_tensor * x = ggml_get_rows(ctx, model_.tok_embd, tokens);
    for (int il = 0; il < hp.n_layer; il++) {
        const Layer & L = model_.layers[il];

        // attention
        ggml_tensor * cur = ggml_mul(ctx, ggml_rms_norm(ctx, x, hp.rms_eps), L.attn_norm);
        ggml_tensor * q = ggml_reshape_3d(ctx, linear(ctx, il, MOD_Q, cur), hd, hp.n_head, T);
        ggml_tensor * k = ggml_reshape_3d(ctx, linear(ctx, il, MOD_K, cur), hd, hp.n_head_kv, T);
        ggml_tensor * v = ggml_reshape_3d(ctx, linear(ctx, il, MOD_V, cur), hd, hp.n_head_kv, T);
        if (L.q_norm) q = ggml_mul(ctx, ggml_rms_norm(ctx, q, hp.rms_eps), L.q_norm);
        if (L.k_norm) k = ggml_mul(ctx, ggml_rms_norm(ctx, k, hp.rms_eps), L.k_norm);
        q = ggml_rope_ext(ctx, q, pos, model_.rope_freqs, (int) hp.n_rot, hp.rope_mode, (int) hp.n_ctx_train,
                          hp.rope_freq_base, hp.rope_freq_scale, 0.0f, 1.0f, 32.0f, 1.0f);
        k = ggml_rope_ext(ctx, k, pos, model_.rope_freqs, (int) hp.n_rot, hp.rope_mode, (int) hp.n_ctx_train,
                          hp.rope_freq_base, hp.rope_freq_scale, 0.0f, 1.0f, 32.0f, 1.0f);

        ggml_tensor * qp = ggml_cont(ctx, ggml_permute(ctx, q, 0, 2, 1, 3)); // [hd, T, n_head], contiguous for the fast kernels
        ggml_tensor * kp = ggml_permute(ctx, k, 0, 2, 1, 3);              // [hd, T, n_head_kv]
        ggml_tensor * kq = ggml_mul_mat(ctx, kp, qp);                      // [T_k, T_q, n_head]; K heads shared by groups of Q heads
        kq = ggml_soft_max_ext(ctx, kq, mask, hp.attn_scale, 0.0f);
        ggml_tensor * vt = ggml_cont(ctx, ggml_permute(ctx, v, 1, 2, 0, 3)); // [T, hd, n_head_kv]
        ggml_tensor * kqv = ggml_mul_mat(ctx, vt, kq);                     // [hd, T_q, n_head]
        cur = ggml_cont(ctx, ggml_permute(ctx, kqv, 0, 2, 1, 3));          // [hd, n_head, T]
        cur = ggml_reshape_2d(ctx, cur, hd * hp.n_head, T);
        x = ggml_add(ctx, x, linear(ctx, il, MOD_O, cur));

        // feed-forward (SwiGLU)
        cur = ggml_mul(ctx, ggml_rms_norm(ctx, x, hp.rms_eps), L.ffn_norm);
        ggml_tensor * h = ggml_swiglu_split(ctx, linear(ctx, il, MOD_GATE, cur), linear(ctx, il, MOD_UP, cur));
        x = ggml_add(ctx, x, linear(ctx, il, MOD_DOWN, h));
    }
    return ggml_mul(ctx, ggml_rms_norm(ctx, x, hp.rms_eps), model_.output_norm);
}

int Engine::graph_size(size_t n_groups) const {
    return (int) (model_.hp.n_layer * 640 + n_groups * 96 + 4096);
}

bool Engine::eval(const Batch & batch, const LossSpec & spec, bool backward, BatchResult & out) {
    const Hparams & hp = model_.hp;
    const int64_t T = batch.n_tokens;
    const int64_t N = (int64_t) batch.rows.size();
    if (N == 0) {
        out.loss = 0;
        out.term_nll.assign(batch.terms.size(), 0.0);
        return true;
    }
    size_t n_groups = 0;
    for (const Batch::Term & t : batch.terms) n_groups += t.groups.size();
    const int size = graph_size(n_groups);

    // the graph's metadata lives in a buffer kept across batches (no fresh pages each time);
    // the rewrite of the backward pass makes a second graph, up to twice as large
    if (!ensure_sched(4 * size)) return false;
    ctx_mem_.resize((size_t) size * 5 * ggml_tensor_overhead() + ggml_graph_overhead_custom(size, true) +
                    ggml_graph_overhead_custom(2 * size, false));
    ggml_init_params ip = {
        /*.mem_size   =*/ ctx_mem_.size(),
        /*.mem_buffer =*/ ctx_mem_.data(),
        /*.no_alloc   =*/ true,
    };
    ggml_context * ctx = ggml_init(ip);
    if (!ctx) {
        fprintf(stderr, "%s: error: ggml_init failed\n", __func__);
        return false;
    }
    struct CtxGuard { ggml_context * c; ~CtxGuard() { ggml_free(c); } } ctx_guard{ctx};

    ggml_tensor * tokens = ggml_new_tensor_1d(ctx, GGML_TYPE_I32, T);
    ggml_tensor * pos    = ggml_new_tensor_1d(ctx, GGML_TYPE_I32, T);
    ggml_tensor * mask   = ggml_new_tensor_2d(ctx, GGML_TYPE_F32, T, T);
    ggml_tensor * rows   = ggml_new_tensor_1d(ctx, GGML_TYPE_I32, N);
    ggml_tensor * labels = ggml_new_tensor_2d(ctx, GGML_TYPE_F32, hp.n_vocab, N);
    for (ggml_tensor * t : {tokens, pos, mask, rows, labels}) ggml_set_input(t);

    // the hidden states of the loss rows only: logits are computed where a token is scored
    ggml_tensor * h = ggml_get_rows(ctx, forward(ctx, tokens, pos, mask), rows); // [n_embd, N]

    // Σ weight · NLL per term. Rows of a group share one weight, so the masking is a
    // selection of rows and ggml's cross-entropy gradient stays exact (a weight folded
    // into the labels would not be: its backward assumes label rows that sum to 1).
    std::vector<ggml_tensor *> nll(batch.terms.size(), nullptr);
    for (size_t ti = 0; ti < batch.terms.size(); ti++) {
        for (const Batch::Group & g : batch.terms[ti].groups) {
            ggml_tensor * hg = ggml_view_2d(ctx, h, h->ne[0], g.count, h->nb[1], g.first * h->nb[1]);
            ggml_tensor * lg = ggml_view_2d(ctx, labels, labels->ne[0], g.count, labels->nb[1], g.first * labels->nb[1]);
            ggml_tensor * logits = ggml_mul_mat(ctx, model_.output, hg);
            ggml_tensor * ce = ggml_scale(ctx, ggml_cross_entropy_loss(ctx, logits, lg), (float) (g.weight * g.count));
            nll[ti] = nll[ti] ? ggml_add(ctx, nll[ti], ce) : ce;
        }
        if (nll[ti]) ggml_set_output(nll[ti]);
    }

    ggml_tensor * loss = loss_graph(ctx, batch, spec, nll);
    if (!loss) return false;
    ggml_set_output(loss);

    ggml_cgraph * gf = ggml_new_graph_custom(ctx, size, backward);
    for (ggml_tensor * t : nll) if (t) ggml_build_forward_expand(gf, t); // metrics read every term
    ggml_build_forward_expand(gf, loss);
    ggml_tensor * loss_grad = nullptr;
    if (backward) {
        ggml_set_loss(loss);
        // gradients of the trainable tensors accumulate into their own tensors across batches
        std::map<const ggml_tensor *, ggml_tensor *> acc;
        for (const Trainable & t : train_) acc[t.param] = t.grad;
        std::vector<ggml_tensor *> grad_accs(ggml_graph_n_nodes(gf), nullptr);
        for (int i = 0; i < ggml_graph_n_nodes(gf); i++) {
            auto it = acc.find(ggml_graph_node(gf, i));
            if (it != acc.end()) grad_accs[i] = it->second;
        }
        ggml_build_backward_expand(ctx, gf, grad_accs.data());
        loss_grad = ggml_graph_get_grad_acc(gf, loss);
        ggml_set_input(loss_grad);
        if (opt_.out_prod_as_mul_mat) gf = rewrite_out_prods(ctx, gf, 2 * size);
    }

    ggml_backend_sched_reset(sched_);
    if (!ggml_backend_sched_alloc_graph(sched_, gf)) {
        fprintf(stderr, "%s: error: cannot allocate the compute graph (%lld tokens; out of memory?)\n", __func__, (long long) T);
        return false;
    }
    ggml_backend_tensor_set(tokens, batch.tokens.data(), 0, T * sizeof(int32_t));
    ggml_backend_tensor_set(pos, batch.pos.data(), 0, T * sizeof(int32_t));
    ggml_backend_tensor_set(mask, batch.mask.data(), 0, (size_t) T * T * sizeof(float));
    ggml_backend_tensor_set(rows, batch.rows.data(), 0, N * sizeof(int32_t));
    {
        // one-hot rows, written in place: no host copy of n_vocab × rows floats
        ggml_backend_tensor_memset(labels, 0, 0, ggml_nbytes(labels));
        const float one = 1.0f;
        for (int64_t i = 0; i < N; i++) ggml_backend_tensor_set(labels, &one, ((size_t) i * hp.n_vocab + batch.labels[i]) * sizeof(float), sizeof(float));
    }
    if (loss_grad) {
        const float one = 1.0f;
        ggml_backend_tensor_set(loss_grad, &one, 0, sizeof(float));
    }
    if (!compute(gf, true)) return false;

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

bool Engine::logits(const std::vector<int32_t> & toks, std::vector<float> & out) {
    const Hparams & hp = model_.hp;
    const int64_t T = (int64_t) toks.size();
    for (int32_t t : toks) {
        if (t < 0 || t >= hp.n_vocab) {
            fprintf(stderr, "%s: error: token %d is not in the vocabulary (%lld tokens)\n", __func__, t, (long long) hp.n_vocab);
            return false;
        }
    }
    const int size = graph_size(1);
    ggml_init_params ip = {(size_t) size * 3 * ggml_tensor_overhead() + ggml_graph_overhead_custom(size, false), nullptr, true};
    ggml_context * ctx = ggml_init(ip);
    if (!ctx) return false;
    struct CtxGuard { ggml_context * c; ~CtxGuard() { ggml_free(c); } } ctx_guard{ctx};
    ggml_tensor * tokens = ggml_new_tensor_1d(ctx, GGML_TYPE_I32, T);
    ggml_tensor * pos    = ggml_new_tensor_1d(ctx, GGML_TYPE_I32, T);
    ggml_tensor * mask   = ggml_new_tensor_2d(ctx, GGML_TYPE_F32, T, T);
    for (ggml_tensor * t : {tokens, pos, mask}) ggml_set_input(t);
    ggml_tensor * logits = ggml_mul_mat(ctx, model_.output, forward(ctx, tokens, pos, mask));
    ggml_set_output(logits);
    ggml_cgraph * gf = ggml_new_graph_custom(ctx, size, false);
    ggml_build_forward_expand(gf, logits);
    ggml_backend_sched_reset(sched_);
    if (!ggml_backend_sched_alloc_graph(sched_, gf)) {
        fprintf(stderr, "%s: error: cannot allocate the compute graph\n", __func__);
        return false;
    }
    std::vector<int32_t> p(T);
    std::vector<float> m((size_t) T * T, -INFINITY);
    for (int64_t i = 0; i < T; i++) {
        p[i] = (int32_t) i;
        for (int64_t k = 0; k <= i; k++) m[(size_t) i * T + k] = 0.0f;
    }
    ggml_backend_tensor_set(tokens, toks.data(), 0, T * sizeof(int32_t));
    ggml_backend_tensor_set(pos, p.data(), 0, T * sizeof(int32_t));
    ggml_backend_tensor_set(mask, m.data(), 0, m.size() * sizeof(float));
    if (!compute(gf, false)) return false;
    out.resize((size_t) hp.n_vocab * T);
    ggml_backend_tensor_get(logits, out.data(), 0, out.size() * sizeof(float));
    return true;
}

} // namespace st
