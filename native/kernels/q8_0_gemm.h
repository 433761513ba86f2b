// Products of Q8_0 weights with F32 activation columns on VNNI (AVX-512 VNNI, or the 256-bit
// AVX-VNNI of client CPUs): the arithmetic, shared by the engine's still-q8 backend
// (native/engine/q8_gemm.cpp: decode steps, prefill, scoring) and the trainer's forward
// passes (native/trainer/q8_products.cpp).
//
// ggml's Q8_0: 32 weights per block, one fp16 scale. For each tile of rows of the weights
// (16 rows in a zmm, 8 in a ymm) and each block, the rows are transposed in registers so
// that one VNNI instruction multiplies four weights of every row of the tile by four
// activations of one column; a block's sums are exact integers, scaled once. ggml's own
// kernel (llamafile's tinyBLAS) keeps 8 partial sums per row and column and scales each:
// 8× the float work. Results equal ggml's to float rounding (about 1e-7 relative), not
// bit for bit.
//
// VNNI multiplies unsigned by signed bytes: weights are shifted to unsigned (+128) and
// the shift is taken back with a per-column, per-block correction (-128 × Σ activations).
#pragma once

#if (defined(__x86_64__) || defined(_M_X64)) && (defined(__GNUC__) || defined(__clang__))
#define STILL_Q8_0_GEMM 1
// GCC's AVX-512 headers start some results from _mm512_undefined_*(), which it then
// reports as (maybe) uninitialized.
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#include <immintrin.h>

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <string>

namespace still::q8 {

constexpr int kBlock = 32;

struct BlockQ8 {
    uint16_t d;
    int8_t qs[kBlock];
};
static_assert(sizeof(BlockQ8) == 34, "Q8_0 block layout");

// Quantized activation columns, as ggml quantizes them for Q8_0 weights: column j's
// quants at q + j·nb·32, its block scales at d + j·nb, its corrections at corr + j·nb.
struct Columns {
    int64_t n = 0, nb = 0;
    int8_t * q = nullptr;
    float * d = nullptr;
    int32_t * corr = nullptr;

    // Bytes of quants, scales and corrections for n columns of nb blocks.
    static size_t bytes(int64_t n, int64_t nb) { return static_cast<size_t>(n * nb) * (kBlock + sizeof(float) + sizeof(int32_t)); }
    // The three arrays laid out one after the other in mem (at least bytes(n, nb) long).
    static Columns in(void * mem, int64_t n, int64_t nb) {
        Columns c;
        c.n = n;
        c.nb = nb;
        c.q = static_cast<int8_t *>(mem);
        c.d = reinterpret_cast<float *>(c.q + n * nb * kBlock);
        c.corr = reinterpret_cast<int32_t *>(c.d + n * nb);
        return c;
    }
};

// One column of nb blocks, quantized as ggml's x86 quantize_row_q8_0 does (scale
// max|x|/127 stored as fp16, x·127/max rounded to nearest even), so each block's integer
// dot product is the one ggml computes; corr[i] = -128 × Σ of block i's quants.
__attribute__((target("avx2,fma,f16c"))) inline void quantize_column(const float * x, int64_t nb, int8_t * q, float * d, int32_t * corr) {
    const __m256 sign = _mm256_set1_ps(-0.0f);
    for (int64_t i = 0; i < nb; i++, x += kBlock) {
        const __m256 v0 = _mm256_loadu_ps(x), v1 = _mm256_loadu_ps(x + 8), v2 = _mm256_loadu_ps(x + 16), v3 = _mm256_loadu_ps(x + 24);
        __m256 m = _mm256_max_ps(_mm256_andnot_ps(sign, v0), _mm256_andnot_ps(sign, v1));
        m = _mm256_max_ps(m, _mm256_andnot_ps(sign, v2));
        m = _mm256_max_ps(m, _mm256_andnot_ps(sign, v3));
        __m128 m4 = _mm_max_ps(_mm256_extractf128_ps(m, 1), _mm256_castps256_ps128(m));
        m4 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
        m4 = _mm_max_ss(m4, _mm_movehdup_ps(m4));
        const float max = _mm_cvtss_f32(m4);
        d[i] = _cvtsh_ss(_cvtss_sh(max / 127.f, 0));
        const __m256 mul = _mm256_set1_ps(max != 0.0f ? 127.f / max : 0.0f);
        const __m256i i0 = _mm256_cvtps_epi32(_mm256_round_ps(_mm256_mul_ps(v0, mul), _MM_ROUND_NEAREST));
        const __m256i i1 = _mm256_cvtps_epi32(_mm256_round_ps(_mm256_mul_ps(v1, mul), _MM_ROUND_NEAREST));
        const __m256i i2 = _mm256_cvtps_epi32(_mm256_round_ps(_mm256_mul_ps(v2, mul), _MM_ROUND_NEAREST));
        const __m256i i3 = _mm256_cvtps_epi32(_mm256_round_ps(_mm256_mul_ps(v3, mul), _MM_ROUND_NEAREST));
        __m256i packed = _mm256_packs_epi16(_mm256_packs_epi32(i0, i1), _mm256_packs_epi32(i2, i3));
        packed = _mm256_permutevar8x32_epi32(packed, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
        _mm256_storeu_si256(reinterpret_cast<__m256i *>(q + kBlock * i), packed);
        // Σ of the 32 quants: widen to 16 bits, pairwise sums, then across the register.
        const __m256i lo = _mm256_cvtepi8_epi16(_mm256_castsi256_si128(packed));
        const __m256i hi = _mm256_cvtepi8_epi16(_mm256_extracti128_si256(packed, 1));
        const __m256i s32 = _mm256_madd_epi16(_mm256_add_epi16(lo, hi), _mm256_set1_epi16(1));
        __m128i s = _mm_add_epi32(_mm256_castsi256_si128(s32), _mm256_extracti128_si256(s32, 1));
        s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0x4e));
        s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0xb1));
        corr[i] = -128 * _mm_cvtsi128_si32(s);
    }
}

// Block l's share (of nb) of a tile's bytes at next (null: nothing), fetched while block l is
// transposed.
__attribute__((always_inline)) inline void prefetch_share(const char * next, size_t tile_bytes, int64_t l, int64_t nb) {
    if (next == nullptr) return;
    const size_t from = (tile_bytes * l / nb) & ~size_t(63), to = tile_bytes * (l + 1) / nb;
    for (size_t o = from; o < to; o += 64) _mm_prefetch(next + o, _MM_HINT_T0);
}

// Block l of 8 rows as 8×8 int32s: W[k] lane r = quants 4k..4k+3 of row r.
__attribute__((target("avx2"), always_inline)) inline void transpose8x8(const BlockQ8 * const * rows, int64_t l, __m256i * W) {
    __m256i a[8], t[8], u[8];
    for (int r = 0; r < 8; r++) a[r] = _mm256_loadu_si256(reinterpret_cast<const __m256i *>(rows[r][l].qs));
    for (int r = 0; r < 8; r += 2) { // rows r, r+1 interleaved: k and k+1 of each, per 128-bit half
        t[r] = _mm256_unpacklo_epi32(a[r], a[r + 1]);
        t[r + 1] = _mm256_unpackhi_epi32(a[r], a[r + 1]);
    }
    for (int r = 0; r < 8; r += 4) { // four rows' k for two k per half
        u[r] = _mm256_unpacklo_epi64(t[r], t[r + 2]);
        u[r + 1] = _mm256_unpackhi_epi64(t[r], t[r + 2]);
        u[r + 2] = _mm256_unpacklo_epi64(t[r + 1], t[r + 3]);
        u[r + 3] = _mm256_unpackhi_epi64(t[r + 1], t[r + 3]);
    }
    for (int k = 0; k < 4; k++) { // u[k] = [k of rows 0-3 | k+4 of rows 0-3], u[k+4] the same for rows 4-7
        W[k] = _mm256_permute2x128_si256(u[k], u[k + 4], 0x20);
        W[k + 4] = _mm256_permute2x128_si256(u[k], u[k + 4], 0x31);
    }
}

// --- AVX-512 VNNI: tiles of 16 rows, one zmm of int32 sums ------------------------------------
#define STILL_AVX512_VNNI __attribute__((target("avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")))

struct Vnni512 {
    static constexpr int kRows = 16;
    using Reg = __m512i;
    static constexpr const char * name = "AVX-512 VNNI";

    static bool cpu_has() {
        __builtin_cpu_init();
        return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl") &&
               __builtin_cpu_supports("avx512vnni") && __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
               __builtin_cpu_supports("f16c");
    }

    // One block of a 16-row tile, transposed: W[k] lane r = quants 4k..4k+3 of row r, +128:
    // rows 0-7 and rows 8-15 each as 8×8 int32s in ymm registers (on CPUs that split zmm
    // work in two halves, as Zen 4 does, cheaper than zmm permutes across all 16), joined.
    STILL_AVX512_VNNI static void transpose_block(const BlockQ8 * const * rows, int64_t l, __m512i * W) {
        __m256i lo[8], hi[8];
        transpose8x8(rows, l, lo);
        transpose8x8(rows + 8, l, hi);
        const __m512i shift = _mm512_set1_epi8(static_cast<char>(0x80));
        for (int k = 0; k < 8; k++) W[k] = _mm512_xor_si512(_mm512_inserti64x4(_mm512_castsi256_si512(lo[k]), hi[k], 1), shift);
    }

    // One tile's 16 rows (rows[i], nb blocks each), transposed into W and their block scales
    // into da; the tile at `next` (tile_bytes long; null for none) is fetched meanwhile.
    STILL_AVX512_VNNI static void load_tile(const BlockQ8 * const * rows, int64_t nb, __m512i * W, float * da, const char * next, size_t tile_bytes) {
        for (int64_t l = 0; l < nb; l++) {
            prefetch_share(next, tile_bytes, l, nb);
            transpose_block(rows, l, W + 8 * l);
            alignas(32) uint16_t h[kRows];
            for (int i = 0; i < kRows; i++) h[i] = rows[i][l].d;
            _mm512_store_ps(da + kRows * l, _mm512_cvtph_ps(_mm256_load_si256(reinterpret_cast<const __m256i *>(h))));
        }
    }

    // CN columns from j0 against a transposed tile: sums over all blocks, stored to dst.
    template <int CN>
    STILL_AVX512_VNNI static void columns(const __m512i * W, const float * da, const Columns & x, int64_t j0, char * dst, size_t dst_stride, int64_t r0) {
        const int64_t nb = x.nb;
        __m512 acc[CN];
        const int32_t * q[CN];
        const float * d[CN];
        const int32_t * corr[CN];
#pragma GCC unroll 16
        for (int c = 0; c < CN; c++) {
            acc[c] = _mm512_setzero_ps();
            q[c] = reinterpret_cast<const int32_t *>(x.q + (j0 + c) * nb * kBlock);
            d[c] = x.d + (j0 + c) * nb;
            corr[c] = x.corr + (j0 + c) * nb;
        }
        for (int64_t l = 0; l < nb; l++, W += 8) {
            __m512i t[CN];
#pragma GCC unroll 16
            for (int c = 0; c < CN; c++) t[c] = _mm512_set1_epi32(corr[c][l]);
#pragma GCC unroll 8
            for (int k = 0; k < 8; k++) {
                const __m512i w = _mm512_load_si512(W + k);
#pragma GCC unroll 16
                for (int c = 0; c < CN; c++) t[c] = _mm512_dpbusd_epi32(t[c], w, _mm512_set1_epi32(q[c][8 * l + k]));
            }
            const __m512 scale = _mm512_load_ps(da + kRows * l);
#pragma GCC unroll 16
            for (int c = 0; c < CN; c++) acc[c] = _mm512_fmadd_ps(_mm512_mul_ps(scale, _mm512_set1_ps(d[c][l])), _mm512_cvtepi32_ps(t[c]), acc[c]);
        }
#pragma GCC unroll 16
        for (int c = 0; c < CN; c++) _mm512_storeu_ps(reinterpret_cast<float *>(dst + (j0 + c) * dst_stride) + r0, acc[c]);
    }

    // Every column of x against a loaded tile, rows r0.. of dst.
    STILL_AVX512_VNNI static void all_columns(const __m512i * W, const float * da, const Columns & x, char * dst, size_t dst_stride, int64_t r0) {
        int64_t j = 0;
        for (; j + 8 <= x.n; j += 8) columns<8>(W, da, x, j, dst, dst_stride, r0);
        for (; j + 4 <= x.n; j += 4) columns<4>(W, da, x, j, dst, dst_stride, r0);
        for (; j < x.n; j++) columns<1>(W, da, x, j, dst, dst_stride, r0);
    }
};

// --- AVX-VNNI (VEX, 256 bits: Intel's client cores since Alder Lake, AMD's since Zen 4):
// tiles of 8 rows, one ymm of int32 sums; 16 registers, so 4 columns at a time ------------------
#define STILL_AVX_VNNI __attribute__((target("avxvnni,avx2,fma,f16c")))

struct Vnni256 {
    static constexpr int kRows = 8;
    using Reg = __m256i;
    static constexpr const char * name = "AVX-VNNI";

    static bool cpu_has() {
        __builtin_cpu_init();
        return __builtin_cpu_supports("avxvnni") && __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
               __builtin_cpu_supports("f16c");
    }

    // One block of an 8-row tile, transposed: W[k] lane r = quants 4k..4k+3 of row r, +128.
    STILL_AVX_VNNI static void transpose_block(const BlockQ8 * const * rows, int64_t l, __m256i * W) {
        transpose8x8(rows, l, W);
        const __m256i shift = _mm256_set1_epi8(static_cast<char>(0x80));
        for (int k = 0; k < 8; k++) W[k] = _mm256_xor_si256(W[k], shift);
    }

    STILL_AVX_VNNI static void load_tile(const BlockQ8 * const * rows, int64_t nb, __m256i * W, float * da, const char * next, size_t tile_bytes) {
        for (int64_t l = 0; l < nb; l++) {
            prefetch_share(next, tile_bytes, l, nb);
            transpose_block(rows, l, W + 8 * l);
            alignas(16) uint16_t h[kRows];
            for (int i = 0; i < kRows; i++) h[i] = rows[i][l].d;
            _mm256_store_ps(da + kRows * l, _mm256_cvtph_ps(_mm_load_si128(reinterpret_cast<const __m128i *>(h))));
        }
    }

    template <int CN>
    STILL_AVX_VNNI static void columns(const __m256i * W, const float * da, const Columns & x, int64_t j0, char * dst, size_t dst_stride, int64_t r0) {
        const int64_t nb = x.nb;
        __m256 acc[CN];
        const int32_t * q[CN];
        const float * d[CN];
        const int32_t * corr[CN];
#pragma GCC unroll 8
        for (int c = 0; c < CN; c++) {
            acc[c] = _mm256_setzero_ps();
            q[c] = reinterpret_cast<const int32_t *>(x.q + (j0 + c) * nb * kBlock);
            d[c] = x.d + (j0 + c) * nb;
            corr[c] = x.corr + (j0 + c) * nb;
        }
        for (int64_t l = 0; l < nb; l++, W += 8) {
            __m256i t[CN];
#pragma GCC unroll 8
            for (int c = 0; c < CN; c++) t[c] = _mm256_set1_epi32(corr[c][l]);
#pragma GCC unroll 8
            for (int k = 0; k < 8; k++) {
                const __m256i w = _mm256_load_si256(W + k);
#pragma GCC unroll 8
                for (int c = 0; c < CN; c++) t[c] = _mm256_dpbusd_avx_epi32(t[c], w, _mm256_set1_epi32(q[c][8 * l + k]));
            }
            const __m256 scale = _mm256_load_ps(da + kRows * l);
#pragma GCC unroll 8
            for (int c = 0; c < CN; c++) acc[c] = _mm256_fmadd_ps(_mm256_mul_ps(scale, _mm256_set1_ps(d[c][l])), _mm256_cvtepi32_ps(t[c]), acc[c]);
        }
#pragma GCC unroll 8
        for (int c = 0; c < CN; c++) _mm256_storeu_ps(reinterpret_cast<float *>(dst + (j0 + c) * dst_stride) + r0, acc[c]);
    }

    STILL_AVX_VNNI static void all_columns(const __m256i * W, const float * da, const Columns & x, char * dst, size_t dst_stride, int64_t r0) {
        int64_t j = 0;
        for (; j + 4 <= x.n; j += 4) columns<4>(W, da, x, j, dst, dst_stride, r0);
        for (; j < x.n; j++) columns<1>(W, da, x, j, dst, dst_stride, r0);
    }
};

// Per-thread room that grows and is kept (64-byte aligned).
struct Scratch {
    void * mem = nullptr;
    size_t size = 0;
    ~Scratch() { std::free(mem); }
    void * get(size_t want) {
        if (want > size) {
            std::free(mem);
            size = (want + 4095) & ~size_t(4095);
            mem = std::aligned_alloc(64, size);
            if (mem == nullptr) size = 0;
        }
        return mem;
    }
};

// A tile of n_rows < K::kRows rows (rows[i] for i < n_rows, a matrix's last rows) into dst's
// rows r0..: the tile is filled up with rows of zero blocks and only the given rows' sums are
// kept, so they are what a whole tile gives them. W and da: room for a loaded tile. False
// when the thread's room cannot be had.
template <class K>
bool short_tile(const BlockQ8 ** rows, int n_rows, typename K::Reg * W, float * da, const Columns & x, char * dst, size_t dst_stride, int64_t r0) {
    thread_local Scratch scratch;
    const size_t zero = (static_cast<size_t>(x.nb) * sizeof(BlockQ8) + 63) & ~size_t(63);
    char * mem = static_cast<char *>(scratch.get(zero + static_cast<size_t>(x.n) * K::kRows * sizeof(float)));
    if (mem == nullptr) return false;
    std::memset(mem, 0, zero); // scale 0, quants 0
    for (int i = n_rows; i < K::kRows; i++) rows[i] = reinterpret_cast<const BlockQ8 *>(mem);
    float * out = reinterpret_cast<float *>(mem + zero);
    K::load_tile(rows, x.nb, W, da, nullptr, 0);
    K::all_columns(W, da, x, reinterpret_cast<char *>(out), K::kRows * sizeof(float), 0);
    for (int64_t j = 0; j < x.n; j++) std::memcpy(reinterpret_cast<float *>(dst + j * dst_stride) + r0, out + j * K::kRows, static_cast<size_t>(n_rows) * sizeof(float));
    return true;
}

// Tiles [t0, t1) of the rows of W·X into dst (x's column j at dst + j·dst_stride; W's `rows`
// rows w_stride bytes apart, in tiles of K::kRows rows, the last one short where rows is not
// a multiple). False when the thread's room for a transposed tile cannot be had.
template <class K>
__attribute__((always_inline)) inline bool gemm_tiles_of(const char * w, size_t w_stride, int64_t rows, int64_t t0, int64_t t1, const Columns & x, char * dst, size_t dst_stride) {
    constexpr int R = K::kRows;
    thread_local Scratch scratch;
    const int64_t nb = x.nb;
    char * mem = static_cast<char *>(scratch.get(static_cast<size_t>(nb) * (8 * sizeof(typename K::Reg) + R * sizeof(float))));
    if (mem == nullptr) return false;
    auto * W = reinterpret_cast<typename K::Reg *>(mem);
    float * da = reinterpret_cast<float *>(mem + static_cast<size_t>(nb) * 8 * sizeof(typename K::Reg));
    // A tile's rows are one contiguous stretch; reading them all at once defeats the
    // hardware prefetchers, so the next tile is fetched while this one is transposed.
    const size_t tile_bytes = R * w_stride;
    for (int64_t t = t0; t < t1; t++) {
        const int64_t r0 = t * R;
        const int n_rows = static_cast<int>(std::min<int64_t>(R, rows - r0));
        const BlockQ8 * tile_rows[R];
        for (int i = 0; i < n_rows; i++) tile_rows[i] = reinterpret_cast<const BlockQ8 *>(w + static_cast<size_t>(r0 + i) * w_stride);
        if (n_rows < R) {
            if (!short_tile<K>(tile_rows, n_rows, W, da, x, dst, dst_stride, r0)) return false;
            continue;
        }
        const bool next_whole = t + 1 < t1 && r0 + 2 * R <= rows;
        K::load_tile(tile_rows, nb, W, da, next_whole ? w + static_cast<size_t>(r0 + R) * w_stride : nullptr, tile_bytes);
        K::all_columns(W, da, x, dst, dst_stride, r0);
    }
    return true;
}

// --- which of them runs ------------------------------------------------------------------------
enum class Isa { None, AvxVnni, Avx512Vnni };

inline const char * isa_name(Isa isa) { return isa == Isa::Avx512Vnni ? Vnni512::name : isa == Isa::AvxVnni ? Vnni256::name : "none"; }

// The kernel this process runs: the widest this CPU has, or the one STILL_Q8_ISA names
// ("avx512vnni" or "avxvnni"; None where the CPU lacks it or the name is unknown, with why).
inline Isa chosen_isa(std::string * why = nullptr) {
    const char * env = std::getenv("STILL_Q8_ISA");
    const std::string asked = env == nullptr ? "" : env;
    auto none = [&](const std::string & reason) {
        if (why != nullptr) *why = reason;
        return Isa::None;
    };
    if (asked.empty() || asked == "auto") {
        if (Vnni512::cpu_has()) return Isa::Avx512Vnni;
        if (Vnni256::cpu_has()) return Isa::AvxVnni;
        return none("this CPU has neither AVX-512 VNNI nor AVX-VNNI");
    }
    if (asked == "avx512vnni") return Vnni512::cpu_has() ? Isa::Avx512Vnni : none("this CPU has no AVX-512 VNNI (STILL_Q8_ISA=avx512vnni)");
    if (asked == "avxvnni") return Vnni256::cpu_has() ? Isa::AvxVnni : none("this CPU has no AVX-VNNI (STILL_Q8_ISA=avxvnni)");
    return none("STILL_Q8_ISA=" + asked + " is not one of avx512vnni, avxvnni, auto");
}

// Rows per tile of a kernel, and the tiles of a matrix of `rows` rows.
inline int tile_rows(Isa isa) { return isa == Isa::Avx512Vnni ? Vnni512::kRows : Vnni256::kRows; }
inline int64_t tiles_of(Isa isa, int64_t rows) { return (rows + tile_rows(isa) - 1) / tile_rows(isa); }

// Tiles [t0, t1) of tiles_of(isa, rows) of W·X on the kernel isa (not None).
STILL_AVX512_VNNI inline bool gemm_tiles_512(const char * w, size_t w_stride, int64_t rows, int64_t t0, int64_t t1, const Columns & x, char * dst, size_t dst_stride) {
    return gemm_tiles_of<Vnni512>(w, w_stride, rows, t0, t1, x, dst, dst_stride);
}
STILL_AVX_VNNI inline bool gemm_tiles_256(const char * w, size_t w_stride, int64_t rows, int64_t t0, int64_t t1, const Columns & x, char * dst, size_t dst_stride) {
    return gemm_tiles_of<Vnni256>(w, w_stride, rows, t0, t1, x, dst, dst_stride);
}
inline bool gemm_tiles(Isa isa, const char * w, size_t w_stride, int64_t rows, int64_t t0, int64_t t1, const Columns & x, char * dst, size_t dst_stride) {
    if (isa == Isa::Avx512Vnni) return gemm_tiles_512(w, w_stride, rows, t0, t1, x, dst, dst_stride);
    return gemm_tiles_256(w, w_stride, rows, t0, t1, x, dst, dst_stride);
}

} // namespace still::q8

#endif
