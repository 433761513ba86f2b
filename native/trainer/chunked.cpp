// The chunked step: memory linear in the row's length, gradients exact.
//
// ggml differentiates one graph and keeps every forward intermediate its backward needs,
// so one graph over a long row holds each layer's attention scores (rows² × heads) and
// the logits of every scored token (vocabulary × rows). Here a step is many small graphs:
//
//  forward    per layer: the keys and values of every token (in token chunks), then the
//             rest of the layer for chunks of queries, each attending to the keys it may
//             see (its sequences' own, causally; earlier keys are skipped, not masked).
//             Kept: each layer's input and its keys and values.
//  loss       in chunks of loss rows: the final norm, the logits and the cross-entropy of
//             those rows only. A DPO step first sums each term's NLL (a forward pass) and
//             takes ∂loss/∂nll per term on the host (loss.h); the backward pass then
//             weighs each row's NLL by its term's coefficient: the same gradient.
//  backward   per layer from the top: each query chunk's part of the layer recomputed from
//             its input rows and the kept K and V, its output dotted with the gradient
//             arriving from above as the graph's loss; the backward pass gives the LoRA
//             gradients, the gradient of its input rows, and of the keys and values it saw.
//             Then the keys and values recomputed in token chunks, dotted with their
//             gradients: the rest of the input's gradient and of the K/V LoRA gradients.
//             The layer's frozen weights are transposed once before its chunks (see
//             transpose_frozen), not once per chunk's graph.
//
// Each graph's gradients go straight into accumulators (ggml's grad_accs): the trainables'
// own, and for the kept tensors (set as parameters) ∂loss/∂x and ∂loss/∂K, ∂loss/∂V.
// Only standard ggml ops with backward passes are used, so the same path runs on GPUs.
#include <algorithm>
#include <cmath>
#include <cstring>

#include "engine.h"

namespace st {

namespace {
const int64_t MAX_CHUNK = 1024;   // queries or tokens per chunk, at most
const int64_t CHUNK_ALIGN = 16;   // chunk sizes in whole vector blocks where the row allows
}

// --- sizes ---------------------------------------------------------------------------------

size_t Engine::activation_bytes(int64_t T) const {
    const Hparams & hp = model_.hp;
    const size_t kv = (size_t) (hp.head_dim * hp.n_head_kv);
    return (size_t) T * sizeof(float) * ((size_t) (hp.n_layer + 1) * (size_t) hp.n_embd + 2 * (size_t) hp.n_layer * kv +
                                         2 * (size_t) hp.n_embd + 2 * kv) + frozen_t_bytes();
}

// Queries per chunk: as many as fit the chunk budget with the keys they see (scores,
// softmax and their gradients for every head; the feed-forward activations).
std::vector<Engine::Chunk> Engine::attention_chunks(const Batch & b) const {
    const Hparams & hp = model_.hp;
    const int64_t T = b.n_tokens;
    std::vector<Chunk> out;
    for (int64_t q0 = 0; q0 < T;) {
        int64_t nq = std::min(T - q0, opt_.block_tokens > 0 ? opt_.block_tokens : MAX_CHUNK);
        if (opt_.block_tokens <= 0) {
            for (;;) {
                const int64_t nk = q0 + nq - b.first_key(q0, q0 + nq);
                const double bytes = (double) nq * ((double) nk * (double) hp.n_head * 8.0 + (double) hp.n_ff * 24.0 + (double) hp.n_embd * 48.0);
                if (bytes <= (double) opt_.chunk_bytes || nq <= CHUNK_ALIGN) break;
                nq = std::max(CHUNK_ALIGN, (nq / 2) / CHUNK_ALIGN * CHUNK_ALIGN);
            }
        }
        out.push_back({q0, q0 + nq, b.first_key(q0, q0 + nq)});
        q0 += nq;
    }
    return out;
}

std::vector<Engine::Chunk> Engine::token_chunks(int64_t T) const {
    const int64_t n = opt_.block_tokens > 0 ? opt_.block_tokens : MAX_CHUNK;
    std::vector<Chunk> out;
    for (int64_t t0 = 0; t0 < T; t0 += n) out.push_back({t0, std::min(T, t0 + n), t0});
    return out;
}

std::vector<Engine::LossChunk> Engine::loss_chunks(int64_t n_rows, bool per_row) const {
    // the logits, their softmax and gradients, and the one-hot labels of a chunk's rows (policy
    // rows: also the products with the labels, and the entropy's log and product)
    const size_t per_token = (size_t) model_.hp.n_vocab * sizeof(float) * (per_row ? 8 : 5);
    const int64_t fit = std::max<int64_t>(1, (int64_t) (opt_.chunk_bytes / per_token));
    const int64_t n = opt_.loss_rows > 0 ? opt_.loss_rows : std::min<int64_t>(fit, MAX_CHUNK);
    std::vector<LossChunk> out;
    for (int64_t r0 = 0; r0 < n_rows; r0 += n) out.push_back({r0, std::min(n_rows, r0 + n)});
    return out;
}

// --- the kept tensors ----------------------------------------------------------------------

void Engine::free_activations() {
    if (act_.buf) ggml_backend_buffer_free(act_.buf);
    if (act_.ctx) ggml_free(act_.ctx);
    act_ = Activations();
}

bool Engine::ensure_activations(int64_t T) {
    if (act_.T >= T) return true;
    free_activations();
    const Hparams & hp = model_.hp;
    const size_t n = (size_t) (3 * hp.n_layer + 5 + MOD_COUNT);
    ggml_init_params ip = {(n + 1) * ggml_tensor_overhead(), nullptr, /*.no_alloc =*/ true};
    act_.ctx = ggml_init(ip);
    if (!act_.ctx) return false;
    auto make = [&](int64_t ne0, int64_t ne1, int64_t ne2, const char * name, int il, bool param) {
        ggml_tensor * t = ne2 > 0 ? ggml_new_tensor_3d(act_.ctx, GGML_TYPE_F32, ne0, ne1, ne2) : ggml_new_tensor_2d(act_.ctx, GGML_TYPE_F32, ne0, ne1);
        if (il >= 0) ggml_format_name(t, "%s.%d", name, il);
        else ggml_set_name(t, name);
        if (param) ggml_set_param(t); // their gradients go to the accumulators below
        return t;
    };
    for (int il = 0; il <= hp.n_layer; il++) act_.x.push_back(make(hp.n_embd, T, 0, "ckpt.x", il, true));
    for (int il = 0; il < hp.n_layer; il++) {
        act_.k.push_back(make(hp.head_dim, hp.n_head_kv, T, "ckpt.k", il, true));
        act_.v.push_back(make(T, hp.head_dim, hp.n_head_kv, "ckpt.v", il, true));
    }
    act_.gx[0] = make(hp.n_embd, T, 0, "grad.x0", -1, false);
    act_.gx[1] = make(hp.n_embd, T, 0, "grad.x1", -1, false);
    act_.gk = make(hp.head_dim, hp.n_head_kv, T, "grad.k", -1, false);
    act_.gv = make(T, hp.head_dim, hp.n_head_kv, "grad.v", -1, false);
    for (int mod = 0; mod < MOD_COUNT; mod++) {
        const ggml_tensor * w = model_.layers[0].lin[mod].w;
        if (!w || !is_frozen(w)) continue;
        act_.wt[mod] = new_frozen_t(act_.ctx, w);
        ggml_format_name(act_.wt[mod], "frozen_t.%d", mod);
    }
    ggml_backend_buffer_type_t buft = gpu_ ? ggml_backend_get_default_buffer_type(gpu_) : ggml_backend_cpu_buffer_type();
    act_.buf = ggml_backend_alloc_ctx_tensors_from_buft(act_.ctx, buft);
    if (!act_.buf) {
        fprintf(stderr, "%s: error: cannot allocate the kept activations of rows of %lld tokens (%.2f GB)\n", __func__,
                (long long) T, activation_bytes(T) / 1e9);
        free_activations();
        return false;
    }
    act_.T = T;
    return true;
}

// Tokens [r0, r1) of the kept values or their gradient ([T, hd, n_head_kv]), as a view.
ggml_tensor * Engine::value_rows(ggml_context * ctx, ggml_tensor * t, int64_t r0, int64_t r1) {
    return ggml_view_3d(ctx, t, r1 - r0, t->ne[1], t->ne[2], t->nb[1], t->nb[2], (size_t) r0 * t->nb[0]);
}

// Tokens [r0, r1) of a kept [*, T] or [*, *, T] tensor, as a view.
ggml_tensor * Engine::rows_of(ggml_context * ctx, ggml_tensor * t, int64_t r0, int64_t r1) {
    if (ggml_n_dims(t) <= 2) return ggml_view_2d(ctx, t, t->ne[0], r1 - r0, t->nb[1], (size_t) r0 * t->nb[1]);
    return ggml_view_3d(ctx, t, t->ne[0], t->ne[1], r1 - r0, t->nb[1], t->nb[2], (size_t) r0 * t->nb[2]);
}

// --- graphs --------------------------------------------------------------------------------

// Layer il's output rows for the queries of chunk c, from their input rows x and the keys
// and values k, v they may see.
ggml_tensor * Engine::attention_chunk(Graph & g, const Batch & b, int il, const Chunk & c, std::vector<float> & mask,
                                      ggml_tensor * x, ggml_tensor * k, ggml_tensor * v) {
    const int64_t nq = c.q1 - c.q0, nk = c.q1 - c.k0;
    ggml_context * ctx = g.ctx;
    mask.resize((size_t) nq * (size_t) nk);
    b.mask(c.q0, nq, c.k0, nk, mask.data());
    ggml_tensor * pos = g.input(ggml_new_tensor_1d(ctx, GGML_TYPE_I32, nq), b.pos.data() + c.q0);
    ggml_tensor * m = g.input(ggml_new_tensor_2d(ctx, GGML_TYPE_F32, nk, nq), mask.data());
    return after_attention(ctx, il, x, attention(ctx, queries(ctx, il, attn_norm(ctx, il, x), pos), k, v, m));
}

// The kept rows chunk c reads: its input rows, and the keys and values it may see.
Engine::ChunkLeaves Engine::kept_rows(ggml_context * ctx, int il, const Chunk & c) {
    return {rows_of(ctx, act_.x[il], c.q0, c.q1), rows_of(ctx, act_.k[il], c.k0, c.q1), value_rows(ctx, act_.v[il], c.k0, c.q1)};
}

// The loss rows of chunk c: each (term, weight) group's weighted NLL, with its term.
void Engine::loss_chunk(Graph & g, const Batch & b, const LossChunk & c, std::vector<std::pair<int, ggml_tensor *>> & parts) {
    ggml_context * ctx = g.ctx;
    const int64_t n = c.r1 - c.r0;
    ggml_tensor * rows = g.input(ggml_new_tensor_1d(ctx, GGML_TYPE_I32, n), b.rows.data() + c.r0);
    ggml_tensor * labels = g.labels(b.labels.data() + c.r0, n, model_.hp.n_vocab);
    ggml_tensor * h = final_norm(ctx, ggml_get_rows(ctx, act_.x[model_.hp.n_layer], rows)); // [n_embd, n]
    parts.clear();
    std::vector<Batch::Group> groups;
    std::vector<int> terms;
    for (size_t ti = 0; ti < b.terms.size(); ti++) {
        for (const Batch::Group & gr : b.terms[ti].groups) {
            const int64_t first = std::max(gr.first, c.r0), last = std::min(gr.first + gr.count, c.r1);
            if (first >= last) continue;
            groups.push_back({first - c.r0, last - first, gr.weight});
            terms.push_back((int) ti);
        }
    }
    std::vector<ggml_tensor *> nll;
    group_nll(ctx, h, labels, groups, nll);
    for (size_t i = 0; i < nll.size(); i++) parts.push_back({terms[i], nll[i]});
}

// --- the step ------------------------------------------------------------------------------

bool Engine::forward_layers(const Batch & b) {
    const Hparams & hp = model_.hp;
    const int64_t T = b.n_tokens;
    const std::vector<Chunk> tokens = token_chunks(T);
    for (const Chunk & c : tokens) {
        Graph g;
        if (!begin(g, 256)) return false;
        ggml_tensor * ids = g.input(ggml_new_tensor_1d(g.ctx, GGML_TYPE_I32, c.q1 - c.q0), b.tokens.data() + c.q0);
        g.outputs.push_back(ggml_cpy(g.ctx, ggml_get_rows(g.ctx, model_.tok_embd, ids), rows_of(g.ctx, act_.x[0], c.q0, c.q1)));
        if (!run(g, nullptr)) return false;
    }
    const std::vector<Chunk> chunks = attention_chunks(b);
    for (int il = 0; il < hp.n_layer; il++) {
        for (const Chunk & c : tokens) {
            Graph g;
            if (!begin(g, 1024)) return false;
            ggml_tensor * pos = g.input(ggml_new_tensor_1d(g.ctx, GGML_TYPE_I32, c.q1 - c.q0), b.pos.data() + c.q0);
            ggml_tensor * cur = attn_norm(g.ctx, il, rows_of(g.ctx, act_.x[il], c.q0, c.q1));
            g.outputs.push_back(ggml_cpy(g.ctx, keys(g.ctx, il, cur, pos), rows_of(g.ctx, act_.k[il], c.q0, c.q1)));
            g.outputs.push_back(ggml_cpy(g.ctx, values_by_token(g.ctx, values(g.ctx, il, cur)), value_rows(g.ctx, act_.v[il], c.q0, c.q1)));
            if (!run(g, nullptr)) return false;
        }
        std::vector<float> mask;
        // the chunk that sees the most keys first: the compute buffer grows once, not at every chunk
        for (auto it = chunks.rbegin(); it != chunks.rend(); ++it) {
            const Chunk & c = *it;
            Graph g;
            if (!begin(g, 2048)) return false;
            const ChunkLeaves in = kept_rows(g.ctx, il, c);
            ggml_tensor * y = attention_chunk(g, b, il, c, mask, in.x, in.k, in.v);
            g.outputs.push_back(ggml_cpy(g.ctx, y, rows_of(g.ctx, act_.x[il + 1], c.q0, c.q1)));
            if (!run(g, nullptr)) return false;
        }
    }
    return true;
}

// Each term's NLL from the loss chunks; with `coef` (∂loss/∂nll per term) also the backward
// pass, whose gradient of the last layer's output goes to gx[n_layer % 2].
bool Engine::loss_pass(const Batch & b, const std::vector<double> * coef, std::vector<double> & term_nll) {
    const int L = (int) model_.hp.n_layer;
    term_nll.assign(b.terms.size(), 0.0);
    std::vector<std::pair<int, ggml_tensor *>> parts;
    for (const LossChunk & c : loss_chunks((int64_t) b.rows.size(), false)) {
        int groups = 0;
        for (const Batch::Term & t : b.terms)
            for (const Batch::Group & gr : t.groups) groups += gr.first < c.r1 && gr.first + gr.count > c.r0;
        Graph g;
        if (!begin(g, 1024 + 96 * groups)) return false;
        loss_chunk(g, b, c, parts);
        ggml_tensor * loss = nullptr;
        for (const auto & [t, nll] : parts) {
            g.outputs.push_back(nll);
            if (!coef) continue;
            ggml_tensor * weighted = ggml_scale(g.ctx, nll, (float) (*coef)[(size_t) t]);
            loss = loss ? ggml_add(g.ctx, loss, weighted) : weighted;
        }
        if (coef) g.accumulators.push_back({act_.x[L], act_.gx[L % 2]});
        if (!run(g, loss)) return false;
        for (const auto & [t, nll] : parts) {
            float v = 0;
            ggml_backend_tensor_get(nll, &v, 0, sizeof(float));
            term_nll[(size_t) t] += v;
        }
    }
    return true;
}

// Policy rows, chunk by chunk: every row's NLL (and entropy), and with `backward` the
// gradient of Σ coef · NLL into ∂loss/∂x of the last layer's output.
bool Engine::row_loss_pass(const Batch & b, const LossSpec & spec, bool backward, BatchResult & out) {
    const int L = (int) model_.hp.n_layer;
    out.loss = 0;
    for (const LossChunk & c : loss_chunks((int64_t) b.rows.size(), true)) {
        const int64_t n = c.r1 - c.r0;
        Graph g;
        if (!begin(g, 1024)) return false;
        ggml_tensor * rows = g.input(ggml_new_tensor_1d(g.ctx, GGML_TYPE_I32, n), b.rows.data() + c.r0);
        ggml_tensor * labels = g.labels(b.labels.data() + c.r0, n, model_.hp.n_vocab);
        ggml_tensor * h = final_norm(g.ctx, ggml_get_rows(g.ctx, act_.x[L], rows));
        const RowLoss rl = row_loss(g, h, labels, backward ? spec.row_coef->data() + c.r0 : nullptr, spec.entropy, spec.logit_scale);
        if (backward) {
            g.outputs.push_back(rl.loss);
            g.accumulators.push_back({act_.x[L], act_.gx[L % 2]});
        }
        if (!run(g, backward ? rl.loss : nullptr)) return false;
        read_rows(rl, c.r0, out);
        if (backward) {
            float v = 0;
            ggml_backend_tensor_get(rl.loss, &v, 0, sizeof(float));
            out.loss += v;
        }
    }
    return true;
}

// Layer il's backward pass: from ∂loss/∂(its output) in gx[(il + 1) % 2] to ∂loss/∂(its
// input) in gx[il % 2], accumulating its parameters' gradients.
bool Engine::backward_layer(const Batch & b, int il) {
    ggml_tensor * g_out = act_.gx[(il + 1) % 2];
    ggml_tensor * g_in = act_.gx[il % 2];
    for (ggml_tensor * t : {g_in, act_.gk, act_.gv}) ggml_backend_tensor_memset(t, 0, 0, ggml_nbytes(t));
    if (!transpose_frozen(il)) return false;
    FrozenScope scope{frozen_t_};
    std::vector<float> mask;
    const std::vector<Chunk> chunks = attention_chunks(b);
    for (auto it = chunks.rbegin(); it != chunks.rend(); ++it) {
        const Chunk & c = *it;
        Graph g;
        if (!begin(g, 2048)) return false;
        const ChunkLeaves in = kept_rows(g.ctx, il, c);
        ggml_tensor * y = attention_chunk(g, b, il, c, mask, in.x, in.k, in.v);
        ggml_tensor * loss = ggml_sum(g.ctx, ggml_mul(g.ctx, y, rows_of(g.ctx, g_out, c.q0, c.q1)));
        g.accumulators = {{act_.x[il], g_in}, {act_.k[il], act_.gk}, {act_.v[il], act_.gv}};
        if (!run(g, loss)) return false;
    }
    for (const Chunk & c : token_chunks(b.n_tokens)) {
        Graph g;
        if (!begin(g, 1024)) return false;
        g.accumulators = {{act_.x[il], g_in}};
        if (!run(g, key_value_loss(g, b, il, c, act_.x[il], act_.gk, act_.gv))) return false;
    }
    return true;
}

// The keys and values of the tokens of chunk c recomputed from the layer's input x, dotted
// with their gradients gk, gv: a loss whose backward pass gives their share of ∂loss/∂x.
ggml_tensor * Engine::key_value_loss(Graph & g, const Batch & b, int il, const Chunk & c, ggml_tensor * x, ggml_tensor * gk, ggml_tensor * gv) {
    ggml_tensor * pos = g.input(ggml_new_tensor_1d(g.ctx, GGML_TYPE_I32, c.q1 - c.q0), b.pos.data() + c.q0);
    ggml_tensor * cur = attn_norm(g.ctx, il, rows_of(g.ctx, x, c.q0, c.q1));
    ggml_tensor * lk = ggml_sum(g.ctx, ggml_mul(g.ctx, keys(g.ctx, il, cur, pos), rows_of(g.ctx, gk, c.q0, c.q1)));
    ggml_tensor * vt = ggml_cont(g.ctx, values_by_token(g.ctx, values(g.ctx, il, cur)));
    ggml_tensor * lv = ggml_sum(g.ctx, ggml_mul(g.ctx, vt, value_rows(g.ctx, gv, c.q0, c.q1)));
    return ggml_add(g.ctx, lk, lv);
}

// Full fine-tuning: the token embeddings' gradient from ∂loss/∂x of the first layer's input.
bool Engine::embedding_backward(const Batch & b) {
    if (!(model_.tok_embd->flags & GGML_TENSOR_FLAG_PARAM)) return true;
    for (const Chunk & c : token_chunks(b.n_tokens)) {
        Graph g;
        if (!begin(g, 256)) return false;
        ggml_tensor * ids = g.input(ggml_new_tensor_1d(g.ctx, GGML_TYPE_I32, c.q1 - c.q0), b.tokens.data() + c.q0);
        ggml_tensor * x0 = ggml_get_rows(g.ctx, model_.tok_embd, ids);
        if (!run(g, ggml_sum(g.ctx, ggml_mul(g.ctx, x0, rows_of(g.ctx, act_.gx[0], c.q0, c.q1))))) return false;
    }
    return true;
}

// The gradient of the loss with respect to the last layer's output, into gx[L % 2] (with
// `backward`), and the batch's results.
bool Engine::output_loss(const Batch & b, const LossSpec & spec, bool backward, BatchResult & out) {
    const int L = (int) model_.hp.n_layer;
    if (backward) ggml_backend_tensor_memset(act_.gx[L % 2], 0, 0, ggml_nbytes(act_.gx[L % 2]));
    if (spec.task == Task::POLICY) return row_loss_pass(b, spec, backward, out);
    std::vector<double> coef;
    if (!backward || spec.task != Task::SFT) {
        // the terms' sums first: the loss, and ∂loss/∂nll for the backward pass
        if (!loss_pass(b, nullptr, out.term_nll)) return false;
        out.loss = loss_value(b, spec, out.term_nll, &coef);
        if (!backward) return true;
    } else {
        coef.assign(b.terms.size(), spec.scale);
    }
    std::vector<double> term_nll;
    if (!loss_pass(b, &coef, term_nll)) return false;
    if (spec.task == Task::SFT) {
        out.term_nll = term_nll;
        out.loss = loss_value(b, spec, term_nll, nullptr);
    }
    return true;
}

bool Engine::eval_chunked(const Batch & b, const LossSpec & spec, bool backward, BatchResult & out) {
    if (!ensure_activations(b.n_tokens) || !forward_layers(b) || !output_loss(b, spec, backward, out)) return false;
    if (!backward) return true;
    for (int il = (int) model_.hp.n_layer - 1; il >= 0; il--)
        if (!backward_layer(b, il)) return false;
    return embedding_backward(b);
}

} // namespace st
