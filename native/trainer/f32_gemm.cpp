// The trainer's F32 matrix products on a kernel of its own: the backward pass's products
// through the frozen weights' F32 copies, attention's, LoRA's.
//
// ggml's F32 kernel (llamafile's tinyBLAS) keeps one vector of partial sums per output and
// adds its lanes together at the end, which costs most when the summed dimension K is short
// (attention's 64 dimensions of a head, LoRA's rank), and it reads the rows of both operands
// straight from memory for every tile of outputs. The kernel here keeps a tile of outputs in
// registers instead (32 rows of the result by 6 columns with AVX-512, 16 by 6 with AVX2) and
// adds one rank-1 update per step of the sum, with the tile's rows of src0 packed K-major
// once per run of columns, so nothing is reduced across lanes and the packed rows stay in
// cache. The sums run in another order than ggml's (partial sums of 32 steps, added in turn,
// so rounding stays at ggml's level): results agree to rounding, not bit for bit. OUT_PROD
// nodes are read with their own strides, so the backward pass needs no transposed copies of
// their operands. On the qwen2.5-0.5b shape (2 threads, Zen 4) a 1,024-token LoRA step ran
// 1.68× faster than with ggml's kernel (bench:train --ctx-sweep 1024 --compare-kernels).
#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "engine.h"

namespace st {

namespace {

// Longest summed dimension handed to this kernel (its packed rows take 128 × K bytes per
// thread); longer ones stay on ggml's.
const int64_t MAX_K = 1 << 16;
const int NR = 6; // result columns per tile

// The operands of a product as the kernel reads them: A(m, k) and B(n, k) at byte strides of
// their own, so MUL_MAT (both summed along rows) and OUT_PROD (both summed across rows) need
// no transposed copies.
struct Operands {
    int64_t M, N, K;
    size_t am, ak, bn, bk; // bytes between A's rows m and steps k, and B's
};

Operands operands(const ggml_tensor * dst, bool out_prod) {
    const ggml_tensor * a = dst->src[0];
    const ggml_tensor * b = dst->src[1];
    if (out_prod) return {a->ne[0], b->ne[0], a->ne[1], a->nb[0], a->nb[1], b->nb[0], b->nb[1]};
    return {a->ne[1], b->ne[1], a->ne[0], a->nb[1], a->nb[0], b->nb[1], b->nb[0]};
}

#if (defined(__x86_64__) || defined(_M_X64)) && (defined(__GNUC__) || defined(__clang__))

// Result columns per work item (a few tiles, so rows of src0 are packed once per item).
const int64_t COLS_PER_ITEM = 96;
const int64_t SUM_BLOCK = 32; // steps of the sum per partial sum (see tile)

// Register vectors of 16 floats (AVX-512) and 8 (AVX2); a tile is two of them tall.
typedef float vf16 __attribute__((vector_size(64)));
typedef float vf8 __attribute__((vector_size(32)));
const int V = 2;

// A tile of V vectors of result rows by C columns: c[r][0 .. V×L) = Σ_k ap[k][·] · b[r][k·bk].
template <typename Vec, int C>
inline __attribute__((always_inline)) void tile(const float * ap, const float * const * b, int64_t bk, int64_t K, float * const * c, int rows) {
    constexpr int L = sizeof(Vec) / sizeof(float);
    // Sums of SUM_BLOCK steps each, added into the totals in turn: rounding grows with
    // SUM_BLOCK + K / SUM_BLOCK terms rather than K (ggml's kernel: K / 16 + 16).
    Vec total[C][V];
    for (int r = 0; r < C; r++)
        for (int v = 0; v < V; v++) total[r][v] = Vec{};
    for (int64_t k0 = 0; k0 < K; k0 += SUM_BLOCK) {
        const int64_t k1 = std::min<int64_t>(K, k0 + SUM_BLOCK);
        Vec acc[C][V];
        for (int r = 0; r < C; r++)
            for (int v = 0; v < V; v++) acc[r][v] = Vec{};
        for (int64_t k = k0; k < k1; k++) {
            Vec a[V];
            for (int v = 0; v < V; v++) memcpy(&a[v], ap + (k * V + v) * L, sizeof(Vec));
            for (int r = 0; r < C; r++) {
                const float s = b[r][k * bk];
                for (int v = 0; v < V; v++) acc[r][v] += a[v] * s;
            }
        }
        for (int r = 0; r < C; r++)
            for (int v = 0; v < V; v++) total[r][v] += acc[r][v];
    }
    for (int r = 0; r < C; r++) {
        if (rows == V * L) {
            for (int v = 0; v < V; v++) memcpy(c[r] + v * L, &total[r][v], sizeof(Vec));
        } else {
            float out[V * L];
            memcpy(out, total[r], sizeof(out));
            memcpy(c[r], out, (size_t) rows * sizeof(float));
        }
    }
}

// The whole product for threads ith of nth: work items are (batch, tile of rows, run of columns).
template <typename Vec>
inline __attribute__((always_inline)) void product(ggml_tensor * dst, int ith, int nth, bool out_prod) {
    const ggml_tensor * a = dst->src[0];
    const ggml_tensor * b = dst->src[1];
    const Operands o = operands(dst, out_prod);
    const int64_t K = o.K, M = o.M, N = o.N;
    const int64_t B2 = dst->ne[2], B3 = dst->ne[3];
    const int64_t r2 = B2 / a->ne[2], r3 = B3 / a->ne[3];
    const int W = V * (int) (sizeof(Vec) / sizeof(float));
    const int64_t row_tiles = (M + W - 1) / W, col_runs = (N + COLS_PER_ITEM - 1) / COLS_PER_ITEM;
    const int64_t items = B2 * B3 * row_tiles * col_runs;
    const int64_t bk = (int64_t) (o.bk / sizeof(float));
    std::vector<float> packed((size_t) (K * W));
    for (int64_t item = ith; item < items; item += nth) {
        const int64_t cr = item % col_runs, rt = (item / col_runs) % row_tiles, bb = item / (col_runs * row_tiles);
        const int64_t i2 = bb % B2, i3 = bb / B2;
        const int64_t m0 = rt * W, rows = std::min<int64_t>(W, M - m0);
        const char * abase = (const char *) a->data + (i2 / r2) * a->nb[2] + (i3 / r3) * a->nb[3] + m0 * o.am;
        if (o.am == sizeof(float)) {
            // A's rows m lie side by side (OUT_PROD): each step k is one run of the tile's rows
            for (int64_t k = 0; k < K; k++) {
                float * to = packed.data() + k * W;
                memcpy(to, abase + k * o.ak, (size_t) rows * sizeof(float));
                for (int64_t i = rows; i < W; i++) to[i] = 0.0f;
            }
        } else {
            for (int64_t i = 0; i < W; i++) {
                const char * src = abase + i * o.am;
                for (int64_t k = 0; k < K; k++) packed[(size_t) (k * W + i)] = i < rows ? *(const float *) (src + k * o.ak) : 0.0f;
            }
        }
        const char * bbase = (const char *) b->data + i2 * b->nb[2] + i3 * b->nb[3];
        char * cbase = (char *) dst->data + i2 * dst->nb[2] + i3 * dst->nb[3] + m0 * sizeof(float);
        const int64_t n1 = std::min(N, (cr + 1) * COLS_PER_ITEM);
        for (int64_t n = cr * COLS_PER_ITEM; n < n1; n += NR) {
            const int cols = (int) std::min<int64_t>(NR, n1 - n);
            const float * bp[NR];
            float * cp[NR];
            for (int r = 0; r < NR; r++) {
                const int64_t j = n + std::min(r, cols - 1);
                bp[r] = (const float *) (bbase + j * o.bn);
                cp[r] = (float *) (cbase + j * dst->nb[1]);
            }
            switch (cols) {
                case 6: tile<Vec, 6>(packed.data(), bp, bk, K, cp, (int) rows); break;
                case 5: tile<Vec, 5>(packed.data(), bp, bk, K, cp, (int) rows); break;
                case 4: tile<Vec, 4>(packed.data(), bp, bk, K, cp, (int) rows); break;
                case 3: tile<Vec, 3>(packed.data(), bp, bk, K, cp, (int) rows); break;
                case 2: tile<Vec, 2>(packed.data(), bp, bk, K, cp, (int) rows); break;
                default: tile<Vec, 1>(packed.data(), bp, bk, K, cp, (int) rows); break;
            }
        }
    }
}

// userdata: null for MUL_MAT's operands, non-null for OUT_PROD's
__attribute__((target("avx512f,avx2,fma"))) void product_avx512(ggml_tensor * dst, int ith, int nth, void * ud) { product<vf16>(dst, ith, nth, ud != nullptr); }
__attribute__((target("avx2,fma"))) void product_avx2(ggml_tensor * dst, int ith, int nth, void * ud) { product<vf8>(dst, ith, nth, ud != nullptr); }

// The widest kernel the CPU runs; STILL_TRAIN_F32_KERNEL=avx2 picks the narrower one where
// both run (tests of the AVX2 kernel on AVX-512 machines).
ggml_custom_op_t kernel_for_cpu() {
    __builtin_cpu_init();
    const bool avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    const char * want = getenv("STILL_TRAIN_F32_KERNEL");
    if (avx2 && __builtin_cpu_supports("avx512f") && !(want && strcmp(want, "avx2") == 0)) return product_avx512;
    if (avx2) return product_avx2;
    return nullptr;
}
#else
ggml_custom_op_t kernel_for_cpu() { return nullptr; }
#endif

} // namespace

ggml_custom_op_t Engine::f32_kernel() const {
    static const ggml_custom_op_t kernel = kernel_for_cpu();
    return gpu_ || !opt_.f32_kernel ? nullptr : kernel;
}

// Makes node (an F32 MUL_MAT, or OUT_PROD when out_prod) a product on the kernel, where the
// kernel takes its shapes; returns whether it did.
bool Engine::f32_product(ggml_context * ctx, ggml_tensor * node, bool out_prod) {
    const ggml_custom_op_t kernel = f32_kernel();
    ggml_tensor * a = node->src[0];
    ggml_tensor * b = node->src[1];
    if (!kernel || a->type != GGML_TYPE_F32 || b->type != GGML_TYPE_F32 || node->type != GGML_TYPE_F32) return false;
    const Operands o = operands(node, out_prod);
    if (o.K > MAX_K || o.M < 16 || o.N < NR || !ggml_is_contiguous(node)) return false;
    // the packed rows are read along m when A's rows lie side by side, else along k
    if (o.am != sizeof(float) && o.ak != sizeof(float)) return false;
    if (node->ne[2] % a->ne[2] != 0 || node->ne[3] % a->ne[3] != 0 || node->ne[2] != b->ne[2] || node->ne[3] != b->ne[3]) return false;
    make_custom(ctx, node, kernel, out_prod ? (void *) node : nullptr);
    f32_products_++;
    return true;
}

} // namespace st
