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
// With --backward-weights bf16 the frozen weights' transposed copies are BF16, and their
// products run on a kernel of the same shape over AVX-512 BF16's pair dot products (the
// F32 operand rounded to BF16 as ggml rounds it), where the CPU has them.
#include <algorithm>
#include <cstdint>
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

// still's kernels for this CPU (none where it runs none)
struct Kernels {
    ggml_custom_op_t f32 = nullptr, bf16 = nullptr;
};

#if (defined(__x86_64__) || defined(_M_X64)) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>

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

// One work item of a product: a tile of result rows [m0, m0 + rows) by a run of columns
// [n0, n1) of one batch, with where its operands and results begin.
struct Item {
    int64_t batch, m0, rows, n0, n1; // batch: i2 + i3 · ne2 of the result
    const char * a; // A's row m0
    const char * b; // B's batch
    char * c;       // the result's batch, row m0
};

// Thread ith's share of dst's work items (batch, tile of W rows, run of columns), in turn:
// the runs of columns of one tile one after the other, or with rows_first the tiles of one run.
class Items {
public:
    Items(ggml_tensor * dst, const Operands & o, int64_t W, int ith, int nth, int64_t cols_per_item = COLS_PER_ITEM, bool rows_first = false)
        : dst_(dst), o_(o), W_(W), run_(cols_per_item), item_(ith), nth_(nth), rows_first_(rows_first) {
        B2_ = dst->ne[2];
        r2_ = B2_ / dst->src[0]->ne[2];
        r3_ = dst->ne[3] / dst->src[0]->ne[3];
        row_tiles_ = (o.M + W - 1) / W;
        col_runs_ = (o.N + run_ - 1) / run_;
        items_ = B2_ * dst->ne[3] * row_tiles_ * col_runs_;
    }
    bool next(Item & it) {
        if (item_ >= items_) return false;
        const int64_t inner = item_ % (col_runs_ * row_tiles_), bb = item_ / (col_runs_ * row_tiles_);
        const int64_t cr = rows_first_ ? inner / row_tiles_ : inner % col_runs_, rt = rows_first_ ? inner % row_tiles_ : inner / col_runs_;
        const int64_t i2 = bb % B2_, i3 = bb / B2_, m0 = rt * W_;
        const ggml_tensor * a = dst_->src[0];
        const ggml_tensor * b = dst_->src[1];
        it = {bb, m0, std::min<int64_t>(W_, o_.M - m0), cr * run_, std::min(o_.N, (cr + 1) * run_),
              (const char *) a->data + (i2 / r2_) * a->nb[2] + (i3 / r3_) * a->nb[3] + m0 * o_.am,
              (const char *) b->data + i2 * b->nb[2] + i3 * b->nb[3],
              (char *) dst_->data + i2 * dst_->nb[2] + i3 * dst_->nb[3] + m0 * sizeof(float)};
        item_ += nth_;
        return true;
    }

private:
    ggml_tensor * dst_;
    Operands o_;
    int64_t W_, run_, item_, nth_, B2_ = 1, r2_ = 1, r3_ = 1, row_tiles_ = 0, col_runs_ = 0, items_ = 0;
    bool rows_first_;
};

// The item's columns from n in a group of up to NR: how many, and the result's columns (a
// short group repeats its last column); col(r) is the column of slot r.
struct Group {
    int cols;
    int64_t n;
    int64_t col(int r) const { return n + std::min(r, cols - 1); }
};
inline Group group(const Item & it, int64_t n) { return {(int) std::min<int64_t>(NR, it.n1 - n), n}; }

// The whole product for threads ith of nth.
template <typename Vec>
inline __attribute__((always_inline)) void product(ggml_tensor * dst, int ith, int nth, bool out_prod) {
    const Operands o = operands(dst, out_prod);
    const int64_t K = o.K;
    const int W = V * (int) (sizeof(Vec) / sizeof(float));
    const int64_t bk = (int64_t) (o.bk / sizeof(float));
    std::vector<float> packed((size_t) (K * W));
    Items items(dst, o, W, ith, nth);
    for (Item it; items.next(it);) {
        if (o.am == sizeof(float)) {
            // A's rows m lie side by side (OUT_PROD): each step k is one run of the tile's rows
            for (int64_t k = 0; k < K; k++) {
                float * to = packed.data() + k * W;
                memcpy(to, it.a + k * o.ak, (size_t) it.rows * sizeof(float));
                for (int64_t i = it.rows; i < W; i++) to[i] = 0.0f;
            }
        } else {
            for (int64_t i = 0; i < W; i++) {
                const char * src = it.a + i * o.am;
                for (int64_t k = 0; k < K; k++) packed[(size_t) (k * W + i)] = i < it.rows ? *(const float *) (src + k * o.ak) : 0.0f;
            }
        }
        for (int64_t n = it.n0; n < it.n1; n += NR) {
            const Group g = group(it, n);
            const float * bp[NR];
            float * cp[NR];
            for (int r = 0; r < NR; r++) {
                bp[r] = (const float *) (it.b + g.col(r) * o.bn);
                cp[r] = (float *) (it.c + g.col(r) * dst->nb[1]);
            }
            switch (g.cols) {
                case 6: tile<Vec, 6>(packed.data(), bp, bk, K, cp, (int) it.rows); break;
                case 5: tile<Vec, 5>(packed.data(), bp, bk, K, cp, (int) it.rows); break;
                case 4: tile<Vec, 4>(packed.data(), bp, bk, K, cp, (int) it.rows); break;
                case 3: tile<Vec, 3>(packed.data(), bp, bk, K, cp, (int) it.rows); break;
                case 2: tile<Vec, 2>(packed.data(), bp, bk, K, cp, (int) it.rows); break;
                default: tile<Vec, 1>(packed.data(), bp, bk, K, cp, (int) it.rows); break;
            }
        }
    }
}

// --- BF16 copies of the frozen weights (--backward-weights bf16) ---------------------------
// A is BF16 (summed along its rows), B F32 rounded to BF16 as ggml rounds a BF16 product's
// second operand (to nearest even); AVX-512 BF16 multiplies pairs of steps of the sum at
// once, twice the FMA kernel's rate. A tile of 32 result rows is two registers of pairs.

#define STILL_BF16 __attribute__((target("avx512f,avx512bw,avx512vl,avx512bf16,avx2,fma")))

// c[r][0 .. 32) = Σ_p ap[p] · b[r][p] over P pairs of steps, partial sums of SUM_BLOCK steps.
template <int C>
STILL_BF16 inline void tile_bf16(const uint32_t * ap, const uint32_t * const * b, int64_t P, float * const * c, int rows) {
    __m512 total[C][2];
    for (int r = 0; r < C; r++) total[r][0] = total[r][1] = _mm512_setzero_ps();
    for (int64_t p0 = 0; p0 < P; p0 += SUM_BLOCK / 2) {
        const int64_t p1 = std::min<int64_t>(P, p0 + SUM_BLOCK / 2);
        __m512 acc[C][2];
        for (int r = 0; r < C; r++) acc[r][0] = acc[r][1] = _mm512_setzero_ps();
        for (int64_t p = p0; p < p1; p++) {
            const __m512bh a0 = (__m512bh) _mm512_loadu_si512(ap + 32 * p), a1 = (__m512bh) _mm512_loadu_si512(ap + 32 * p + 16);
            for (int r = 0; r < C; r++) {
                const __m512bh s = (__m512bh) _mm512_set1_epi32((int) b[r][p]);
                acc[r][0] = _mm512_dpbf16_ps(acc[r][0], a0, s);
                acc[r][1] = _mm512_dpbf16_ps(acc[r][1], a1, s);
            }
        }
        for (int r = 0; r < C; r++) {
            total[r][0] = _mm512_add_ps(total[r][0], acc[r][0]);
            total[r][1] = _mm512_add_ps(total[r][1], acc[r][1]);
        }
    }
    for (int r = 0; r < C; r++) {
        alignas(64) float out[32];
        _mm512_store_ps(out, total[r][0]);
        _mm512_store_ps(out + 16, total[r][1]);
        memcpy(c[r], out, (size_t) rows * sizeof(float));
    }
}

// MUL_MAT of a BF16 A (steps of the sum side by side) by an F32 B, for threads ith of nth:
// work items are (batch, tile of 32 rows, run of columns), the tiles of a run in turn, so a
// thread converts each run of B's columns to BF16 pairs once (runs of about 8 MB, at least
// 96 columns) and packs each tile of A once per run.
STILL_BF16 void product_bf16(ggml_tensor * dst, int ith, int nth, void *) {
    const Operands o = operands(dst, false);
    const int64_t K = o.K, P = (K + 1) / 2;
    // STILL_TRAIN_BF16_RUN_COLUMNS sets the run (tests of products that take several runs)
    static const int64_t forced = [] {
        const char * v = getenv("STILL_TRAIN_BF16_RUN_COLUMNS");
        return v ? std::max<int64_t>(NR, atoll(v) / NR * NR) : 0;
    }();
    const int64_t run = forced > 0 ? forced : std::max<int64_t>((int64_t) (8u << 20) / (2 * K) / NR * NR, COLS_PER_ITEM);
    // A's tile as pairs: 16 words p·32 + 16v + i hold row 16v + i's steps 2p and 2p + 1
    thread_local std::vector<uint32_t> packed;
    thread_local std::vector<uint32_t> cols; // a run of B's columns as pairs of BF16
    packed.resize((size_t) (32 * P));
    cols.resize((size_t) (run * P));
    int64_t converted_batch = -1, converted_n0 = -1;
    Items items(dst, o, 32, ith, nth, run, true);
    for (Item it; items.next(it);) {
        if (it.batch != converted_batch || it.n0 != converted_n0) {
            converted_batch = it.batch;
            converted_n0 = it.n0;
            for (int64_t j = it.n0; j < it.n1; j++) {
                const char * col = it.b + j * o.bn;
                uint32_t * to = cols.data() + (j - it.n0) * P;
                int64_t k = 0;
                if (o.bk == sizeof(float)) {
                    for (; k + 32 <= K; k += 32) {
                        const __m512bh v = _mm512_cvtne2ps_pbh(_mm512_loadu_ps((const float *) col + k + 16), _mm512_loadu_ps((const float *) col + k));
                        _mm512_storeu_si512(to + k / 2, (__m512i) v);
                    }
                }
                for (; k < K; k += 2) {
                    const uint32_t lo = ggml_fp32_to_bf16(*(const float *) (col + k * o.bk)).bits;
                    const uint32_t hi = k + 1 < K ? ggml_fp32_to_bf16(*(const float *) (col + (k + 1) * o.bk)).bits : 0;
                    to[k / 2] = lo | hi << 16;
                }
            }
        }
        for (int64_t i = 0; i < 32; i++) {
            const uint16_t * row = (const uint16_t *) (it.a + i * o.am);
            uint32_t * to = packed.data() + i;
            for (int64_t p = 0; p < P; p++) {
                uint32_t v = 0;
                if (i < it.rows) v = row[2 * p] | (2 * p + 1 < K ? (uint32_t) row[2 * p + 1] << 16 : 0);
                to[p * 32] = v;
            }
        }
        for (int64_t n = it.n0; n < it.n1; n += NR) {
            const Group g = group(it, n);
            const uint32_t * bp[NR];
            float * cp[NR];
            for (int r = 0; r < NR; r++) {
                bp[r] = cols.data() + (g.col(r) - it.n0) * P;
                cp[r] = (float *) (it.c + g.col(r) * dst->nb[1]);
            }
            switch (g.cols) {
                case 6: tile_bf16<6>(packed.data(), bp, P, cp, (int) it.rows); break;
                case 5: tile_bf16<5>(packed.data(), bp, P, cp, (int) it.rows); break;
                case 4: tile_bf16<4>(packed.data(), bp, P, cp, (int) it.rows); break;
                case 3: tile_bf16<3>(packed.data(), bp, P, cp, (int) it.rows); break;
                case 2: tile_bf16<2>(packed.data(), bp, P, cp, (int) it.rows); break;
                default: tile_bf16<1>(packed.data(), bp, P, cp, (int) it.rows); break;
            }
        }
    }
}

// userdata: null for MUL_MAT's operands, non-null for OUT_PROD's
__attribute__((target("avx512f,avx2,fma"))) void product_avx512(ggml_tensor * dst, int ith, int nth, void * ud) { product<vf16>(dst, ith, nth, ud != nullptr); }
__attribute__((target("avx2,fma"))) void product_avx2(ggml_tensor * dst, int ith, int nth, void * ud) { product<vf8>(dst, ith, nth, ud != nullptr); }

// The widest F32 kernel the CPU runs, and the BF16 one where it runs; STILL_TRAIN_F32_KERNEL=avx2
// picks the narrower F32 kernel where both run (tests of the AVX2 kernel on AVX-512 machines).
Kernels kernels_for_cpu() {
    __builtin_cpu_init();
    Kernels k;
    const bool avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    const bool avx512 = avx2 && __builtin_cpu_supports("avx512f");
    const char * want = getenv("STILL_TRAIN_F32_KERNEL");
    if (avx512 && !(want && strcmp(want, "avx2") == 0)) k.f32 = product_avx512;
    else if (avx2) k.f32 = product_avx2;
    if (avx512 && __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512bf16")) k.bf16 = product_bf16;
    return k;
}
#else
Kernels kernels_for_cpu() { return {}; }
#endif

} // namespace

// Makes node (an F32 MUL_MAT, or OUT_PROD when out_prod; or a MUL_MAT of a BF16 copy of a
// frozen weight by F32) a product on still's kernel, where the kernel takes its shapes;
// returns whether it did.
bool Engine::f32_product(ggml_context * ctx, ggml_tensor * node, bool out_prod) {
    static const Kernels kernels = kernels_for_cpu();
    if (gpu_ || !opt_.f32_kernel) return false;
    ggml_tensor * a = node->src[0];
    ggml_tensor * b = node->src[1];
    if (b->type != GGML_TYPE_F32 || node->type != GGML_TYPE_F32) return false;
    const bool bf16 = a->type == GGML_TYPE_BF16 && !out_prod;
    const ggml_custom_op_t kernel = bf16 ? kernels.bf16 : a->type == GGML_TYPE_F32 ? kernels.f32 : nullptr;
    if (!kernel) return false;
    const Operands o = operands(node, out_prod);
    if (o.K > MAX_K || o.M < 16 || o.N < NR || !ggml_is_contiguous(node)) return false;
    // the packed rows are read along m when A's rows lie side by side, else along k (BF16: along k only)
    if (bf16 ? o.ak != sizeof(uint16_t) : o.am != sizeof(float) && o.ak != sizeof(float)) return false;
    if (node->ne[2] % a->ne[2] != 0 || node->ne[3] % a->ne[3] != 0 || node->ne[2] != b->ne[2] || node->ne[3] != b->ne[3]) return false;
    make_custom(ctx, node, kernel, out_prod ? (void *) node : nullptr);
    f32_products_++;
    return true;
}

} // namespace st
