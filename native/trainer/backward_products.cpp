// The backward pass's products on the matrix-multiply kernels (OUT_PROD rewritten as MUL_MAT).
#include <algorithm>
#include <cstring>
#include <map>
#include <vector>

#include "engine.h"

namespace st {

// --- graph rewrite: OUT_PROD as MUL_MAT -------------------------------------------------------
//
// ggml's backward pass of y = W x is built from OUT_PROD: the gradient of x is
// OUT_PROD(W, dyᵀ) and that of W is OUT_PROD(x, dy). The CPU kernel for OUT_PROD is a loop
// of axpy's, one per (row of the result, step of the sum), and for a quantized or F16 W it
// dequantizes every row of W once per token, which dominates LoRA training on quantized
// bases; GPU backends have no quantized OUT_PROD at all. OUT_PROD(a, b) = MUL_MAT(aᵀ, bᵀ)
// with both transposes made contiguous, and bᵀ is often free (b is itself a transposed
// view), so this pass moves OUT_PROD nodes onto the matrix-multiply kernels where that is
// cheaper: always for a weight that is not F32, else by the cost estimate below. A frozen
// weight is dequantized to F32 and transposed right before its first use in the graph, so
// the copy lives only briefly. Everything else ggml's autodiff built stays as it is.
namespace {
// Rough CPU costs in ns (AVX-512, one thread), enough to rank the two ways.
const double AXPY_CALL = 4.0;       // overhead of one axpy in OUT_PROD
const double AXPY_ELEM = 0.1;       // per element of an axpy
const double DEQUANT_ELEM = 0.5;    // per element dequantized inside OUT_PROD
const double TRANSPOSE_ELEM = 0.5;  // per element of a transposing copy (transpose_to_f32)
const double GEMM_FMA = 0.02;       // per multiply-add in the blocked matrix kernel
}

// A frozen weight whose F32 transpose would be larger than this is multiplied in slices.
const size_t FROZEN_CHUNK_BYTES = 64u << 20;

// dst = src[0] with dims 0 and 1 swapped, contiguous F32 (or BF16); src[0] is F32 (any strides) or
// a type with a row dequantizer (rows contiguous). A blocked copy: ggml's own transposing
// CONT copies element by element, which costs more than the products it feeds.
static void transpose_to_f32(ggml_tensor * dst, int ith, int nth, void *) {
    const ggml_tensor * src = dst->src[0];
    const int64_t M = src->ne[0], K = src->ne[1], B2 = src->ne[2], B3 = src->ne[3];
    const int64_t BK = 64;
    const int64_t blocks_k = (K + BK - 1) / BK;
    const int64_t total = blocks_k * B2 * B3;
    const ggml_type_traits * tr = ggml_get_type_traits(src->type);
    const bool f32_rows = src->type == GGML_TYPE_F32 && src->nb[0] == sizeof(float);
    std::vector<float> buf((size_t) BK * M);
    for (int64_t job = ith; job < total; job += nth) {
        const int64_t kb = job % blocks_k, b2 = (job / blocks_k) % B2, b3 = job / (blocks_k * B2);
        const int64_t k0 = kb * BK, nk = std::min(BK, K - k0);
        for (int64_t k = 0; k < nk; k++) {
            const char * row = (const char *) src->data + (k0 + k) * src->nb[1] + b2 * src->nb[2] + b3 * src->nb[3];
            float * out = buf.data() + k * M;
            if (f32_rows) {
                memcpy(out, row, M * sizeof(float));
            } else if (src->type == GGML_TYPE_F32) {
                for (int64_t m = 0; m < M; m++) out[m] = *(const float *) (row + m * src->nb[0]);
            } else {
                tr->to_float(row, out, M);
            }
        }
        char * base = (char *) dst->data + b2 * dst->nb[2] + b3 * dst->nb[3];
        if (dst->type == GGML_TYPE_F32) {
            for (int64_t m = 0; m < M; m++) {
                float * d = (float *) (base + m * dst->nb[1]) + k0;
                for (int64_t k = 0; k < nk; k++) d[k] = buf[k * M + m];
            }
        } else {
            // BF16, rounded to nearest even (finite weights only)
            for (int64_t m = 0; m < M; m++) {
                uint16_t * d = (uint16_t *) (base + m * dst->nb[1]) + k0;
                for (int64_t k = 0; k < nk; k++) {
                    uint32_t u;
                    memcpy(&u, &buf[k * M + m], sizeof(u));
                    d[k] = (uint16_t) ((u + 0x7fff + ((u >> 16) & 1)) >> 16);
                }
            }
        }
    }
}

// --- frozen weights transposed once per layer ------------------------------------------------
//
// A chunked step runs a layer's backward pass as many small graphs (one per chunk of
// queries or tokens), and each would transpose the same frozen weights again. Instead the
// layer's weights are transposed once into act_.wt before its chunks, and the rewrite below
// multiplies by those copies: one layer's worth of memory, the same products.

bool Engine::is_frozen(const ggml_tensor * w) const {
    return w->buffer == model_.buf && !(w->flags & GGML_TENSOR_FLAG_PARAM) && ggml_n_dims(w) == 2;
}

ggml_type Engine::frozen_t_type() const {
    return !gpu_ && opt_.frozen_bf16 ? GGML_TYPE_BF16 : GGML_TYPE_F32;
}

// An uninitialised tensor for w's transposed copy, in ctx.
ggml_tensor * Engine::new_frozen_t(ggml_context * ctx, const ggml_tensor * w) const {
    return ggml_new_tensor_2d(ctx, frozen_t_type(), w->ne[1], w->ne[0]);
}

size_t Engine::frozen_t_bytes() const {
    size_t n = 0;
    for (int mod = 0; mod < MOD_COUNT; mod++) {
        const ggml_tensor * w = model_.layers.empty() ? nullptr : model_.layers[0].lin[mod].w;
        if (w && is_frozen(w)) n += (size_t) ggml_nelements(w) * ggml_type_size(frozen_t_type());
    }
    return n;
}

// Fills act_.wt with layer il's frozen weights transposed and points frozen_t_ at them.
bool Engine::transpose_frozen(int il) {
    frozen_t_.clear();
    Graph g;
    if (!begin(g, 64)) return false;
    std::vector<std::pair<const ggml_tensor *, ggml_tensor *>> pairs;
    for (int mod = 0; mod < MOD_COUNT; mod++) {
        ggml_tensor * w = model_.layers[(size_t) il].lin[mod].w;
        ggml_tensor * wt = act_.wt[mod];
        if (!w || !wt || !is_frozen(w) || w->ne[0] != wt->ne[1] || w->ne[1] != wt->ne[0]) continue;
        ggml_tensor * t;
        if (!gpu_ && (w->type == GGML_TYPE_F32 || ggml_is_contiguous(w))) {
            ggml_tensor * args[1] = {w};
            t = ggml_custom_4d(g.ctx, wt->type, w->ne[1], w->ne[0], 1, 1, args, 1, transpose_to_f32, GGML_N_TASKS_MAX, nullptr);
        } else {
            t = ggml_cont(g.ctx, ggml_transpose(g.ctx, w->type == GGML_TYPE_F32 ? w : ggml_cast(g.ctx, w, GGML_TYPE_F32)));
            if (wt->type != GGML_TYPE_F32) t = ggml_cast(g.ctx, t, wt->type);
        }
        g.outputs.push_back(ggml_cpy(g.ctx, t, wt));
        pairs.push_back({w, wt});
    }
    if (pairs.empty()) return true;
    if (!run(g, nullptr)) return false;
    for (const auto & [w, wt] : pairs) frozen_t_[w] = wt;
    return true;
}

// node = OUT_PROD(W, dyᵀ) with W [M, K] frozen: node := Σ over slices of K of MUL_MAT(W_sliceᵀ, dy_slice).
void Engine::chunked_product(ggml_context * ctx, ggml_cgraph * out, ggml_tensor * node) {
    ggml_tensor * w = node->src[0];
    ggml_tensor * dy = node->src[1]->src[0]; // [K, N], contiguous
    const int64_t M = w->ne[0], K = w->ne[1], N = dy->ne[1];
    int64_t kc = (int64_t) (FROZEN_CHUNK_BYTES / (M * sizeof(float))) / 256 * 256;
    kc = std::max<int64_t>(256, kc);
    ggml_tensor * sum = nullptr;
    for (int64_t k0 = 0; k0 < K; k0 += kc) {
        const int64_t n = std::min(kc, K - k0);
        ggml_tensor * ws = ggml_view_2d(ctx, w, M, n, w->nb[1], k0 * w->nb[1]);
        ggml_tensor * wt;
        if (!gpu_) {
            ggml_tensor * args[1] = {ws};
            wt = ggml_custom_4d(ctx, opt_.frozen_bf16 ? GGML_TYPE_BF16 : GGML_TYPE_F32, n, M, 1, 1, args, 1, transpose_to_f32, GGML_N_TASKS_MAX, nullptr);
        } else {
            wt = ggml_cont(ctx, ggml_transpose(ctx, ws->type == GGML_TYPE_F32 ? ws : ggml_cast(ctx, ggml_cont(ctx, ws), GGML_TYPE_F32)));
        }
        ggml_tensor * dys = ggml_cont(ctx, ggml_view_2d(ctx, dy, n, N, dy->nb[1], k0 * sizeof(float)));
        ggml_tensor * p = ggml_mul_mat(ctx, wt, dys); // [M, N]
        if (k0 + n < K) {
            // summed as the slices come, so each slice's copies can be freed before the next
            sum = sum ? ggml_add(ctx, sum, p) : p;
            ggml_build_forward_expand(out, sum);
            continue;
        }
        // the node itself becomes the last product or sum (its consumers keep pointing at it)
        memset(node->op_params, 0, sizeof(node->op_params));
        for (int i = 0; i < GGML_MAX_SRC; i++) node->src[i] = nullptr;
        if (sum == nullptr) {
            ggml_build_forward_expand(out, wt);
            ggml_build_forward_expand(out, dys);
            node->op = GGML_OP_MUL_MAT;
            node->src[0] = wt;
            node->src[1] = dys;
        } else {
            ggml_build_forward_expand(out, p);
            node->op = GGML_OP_ADD;
            node->src[0] = sum;
            node->src[1] = p;
        }
    }
}

ggml_cgraph * Engine::rewrite_out_prods(ggml_context * ctx, ggml_cgraph * gf, int size) {
    ggml_cgraph * out = ggml_new_graph_custom(ctx, size, false);
    std::map<ggml_tensor *, ggml_tensor *> transposed; // a tensor -> its contiguous F32 transpose
    auto free_transpose = [&](ggml_tensor * t) {
        return transposed.count(t) || frozen_t_.count(t) || (t->op == GGML_OP_TRANSPOSE && t->src[0]->type == GGML_TYPE_F32 && ggml_is_contiguous(t->src[0]));
    };
    auto transpose_of = [&](ggml_tensor * t) {
        ggml_tensor *& tt = transposed[t];
        if (!tt) {
            if (auto it = frozen_t_.find(t); it != frozen_t_.end()) {
                tt = it->second; // transposed before the graph (transpose_frozen)
                return tt;
            }
            if (t->op == GGML_OP_TRANSPOSE && t->src[0]->type == GGML_TYPE_F32 && ggml_is_contiguous(t->src[0])) {
                tt = t->src[0];
            } else {
                const bool rows_ok = t->type == GGML_TYPE_F32 || ggml_is_contiguous(t);
                if (!gpu_ && rows_ok) {
                    ggml_tensor * args[1] = {t};
                    const bool low = opt_.frozen_bf16 && t->buffer == model_.buf;
                    tt = ggml_custom_4d(ctx, low ? GGML_TYPE_BF16 : GGML_TYPE_F32, t->ne[1], t->ne[0], t->ne[2], t->ne[3], args, 1,
                                        transpose_to_f32, GGML_N_TASKS_MAX, nullptr);
                } else {
                    ggml_tensor * f = t->type == GGML_TYPE_F32 ? t : ggml_cast(ctx, t, GGML_TYPE_F32);
                    tt = ggml_cont(ctx, ggml_transpose(ctx, f));
                }
            }
            ggml_build_forward_expand(out, tt);
        }
        return tt;
    };
    const int n = ggml_graph_n_nodes(gf);
    for (int i = 0; i < n; i++) {
        ggml_tensor * node = ggml_graph_node(gf, i);
        if (node->op == GGML_OP_OUT_PROD && node->type == GGML_TYPE_F32) {
            ggml_tensor * a = node->src[0]; // [M, K, ...]
            ggml_tensor * b = node->src[1]; // [N, K, ...]
            if (!frozen_t_.count(a) && f32_product(ctx, node, true)) {
                // both operands read where they are by still's F32 kernel (f32_gemm.cpp): no transposed copies
                ggml_build_forward_expand(out, node);
                continue;
            }
            const double M = (double) a->ne[0], K = (double) a->ne[1], N = (double) b->ne[0];
            const double batches = (double) (node->ne[2] * node->ne[3]);
            const double a_batches = (double) (a->ne[2] * a->ne[3]);
            double out_prod_ns = batches * N * K * (AXPY_CALL + M * AXPY_ELEM);
            if (a->type != GGML_TYPE_F32) out_prod_ns += batches * N * K * M * DEQUANT_ELEM;
            double mul_mat_ns = batches * M * N * K * GEMM_FMA;
            if (!free_transpose(a)) mul_mat_ns += a_batches * M * K * TRANSPOSE_ELEM;
            if (!free_transpose(b)) mul_mat_ns += batches * N * K * TRANSPOSE_ELEM;
            // the blocked kernel needs the summed dimension in whole vector blocks
            const bool blocked = a->ne[1] % 16 == 0 && a->ne[0] % 4 == 0;
            const bool frozen = is_frozen(a) && ggml_n_dims(node) == 2 && free_transpose(b) && !transposed.count(a) && !frozen_t_.count(a);
            if (frozen && K * M * sizeof(float) > FROZEN_CHUNK_BYTES) {
                // a large frozen weight (a vocabulary projection): transposed and multiplied in
                // slices of its rows, so no full transposed copy is held at any time
                chunked_product(ctx, out, node);
            } else if (a->type != GGML_TYPE_F32 || (blocked && mul_mat_ns < out_prod_ns)) {
                ggml_tensor * at = transpose_of(a); // [K, M]
                ggml_tensor * bt = transpose_of(b); // [K, N]
                node->op = GGML_OP_MUL_MAT;
                node->src[0] = at;
                node->src[1] = bt;
                memset(node->op_params, 0, sizeof(node->op_params));
            }
        }
        ggml_build_forward_expand(out, node);
    }
    return out;
}

} // namespace st
