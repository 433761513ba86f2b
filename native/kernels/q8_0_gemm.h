// Products of Q8_0 weights with F32 activation columns on AVX-512 VNNI: the arithmetic,
// shared by the engine's still-q8 backend (native/engine/q8_gemm.cpp: decode steps,
// prefill, scoring) and the trainer's forward passes (native/trainer/q8_products.cpp).
//
// ggml's Q8_0: 32 weights per block, one fp16 scale. For each 16-row tile of the weights
// and each block, the 16 rows are transposed in registers so that one VNNI instruction
// multiplies four weights of all 16 rows by four activations of one column; a block's
// 16 sums are exact integers, scaled once. ggml's own kernel (llamafile's tinyBLAS)
// keeps 8 partial sums per row and column and scales each: 8× the float work. Results
// equal ggml's to float rounding (about 1e-7 relative), not bit for bit.
//
// VNNI multiplies unsigned by signed bytes: weights are shifted to unsigned (+128) and
// the shift is taken back with a per-column, per-block correction (-128 × Σ activations).
#pragma once

#if (defined(__x86_64__) || defined(_M_X64)) && (defined(__GNUC__) || defined(__clang__))
#define STILL_Q8_0_GEMM 1
// GCC's AVX-512 headers start some results from _mm512_undefined_*(), which it then
// reports as maybe uninitialized.
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <cstring>

namespace still::q8 {

constexpr int kTile = 16; // rows per tile: one zmm of int32 sums
constexpr int kBlock = 32;

struct BlockQ8 {
    uint16_t d;
    int8_t qs[kBlock];
};
static_assert(sizeof(BlockQ8) == 34, "Q8_0 block layout");

// Whether this CPU runs the kernel.
inline bool cpu_can_run() {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl") &&
           __builtin_cpu_supports("avx512vnni") && __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
           __builtin_cpu_supports("f16c");
}

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

#define STILL_AVX512_VNNI __attribute__((target("avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")))

// One block of a 16-row tile, transposed: W[k] lane r = quants 4k..4k+3 of row r, +128.
// The rows come in as 8 registers [row p | row p+8]; three exchanges of a register-index
// bit with a lane-index bit turn (register = row mod 8, lane = 8·(row div 8) + k) into
// (register = k, lane = row).
STILL_AVX512_VNNI inline void transpose_block(const BlockQ8 * const * rows, int64_t l, __m512i * W) {
    __m512i a[8];
    for (int p = 0; p < 8; p++) {
        const __m256i lo = _mm256_loadu_si256(reinterpret_cast<const __m256i *>(rows[p][l].qs));
        const __m256i hi = _mm256_loadu_si256(reinterpret_cast<const __m256i *>(rows[p + 8][l].qs));
        a[p] = _mm512_inserti64x4(_mm512_castsi256_si512(lo), hi, 1);
    }
    static const __m512i keep[3] = {
        _mm512_setr_epi32(0, 16, 2, 18, 4, 20, 6, 22, 8, 24, 10, 26, 12, 28, 14, 30),
        _mm512_setr_epi32(0, 1, 16, 17, 4, 5, 20, 21, 8, 9, 24, 25, 12, 13, 28, 29),
        _mm512_setr_epi32(0, 1, 2, 3, 16, 17, 18, 19, 8, 9, 10, 11, 24, 25, 26, 27)};
    static const __m512i take[3] = {
        _mm512_setr_epi32(1, 17, 3, 19, 5, 21, 7, 23, 9, 25, 11, 27, 13, 29, 15, 31),
        _mm512_setr_epi32(2, 3, 18, 19, 6, 7, 22, 23, 10, 11, 26, 27, 14, 15, 30, 31),
        _mm512_setr_epi32(4, 5, 6, 7, 20, 21, 22, 23, 12, 13, 14, 15, 28, 29, 30, 31)};
    for (int b = 0; b < 3; b++) {
        const int bit = 1 << b;
        __m512i out[8];
        for (int x = 0; x < 8; x++) {
            if (x & bit) continue;
            out[x] = _mm512_permutex2var_epi32(a[x], keep[b], a[x | bit]);
            out[x | bit] = _mm512_permutex2var_epi32(a[x], take[b], a[x | bit]);
        }
        for (int x = 0; x < 8; x++) a[x] = out[x];
    }
    const __m512i shift = _mm512_set1_epi8(static_cast<char>(0x80));
    for (int k = 0; k < 8; k++) W[k] = _mm512_xor_si512(a[k], shift);
}

// CN columns from j0 against a transposed tile: sums over all blocks, stored to dst.
template <int CN>
STILL_AVX512_VNNI inline void tile_columns(const __m512i * W, const float * da, const Columns & x, int64_t j0, char * dst, size_t dst_stride, int64_t r0) {
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
        const __m512 scale = _mm512_load_ps(da + kTile * l);
#pragma GCC unroll 16
        for (int c = 0; c < CN; c++) acc[c] = _mm512_fmadd_ps(_mm512_mul_ps(scale, _mm512_set1_ps(d[c][l])), _mm512_cvtepi32_ps(t[c]), acc[c]);
    }
#pragma GCC unroll 16
    for (int c = 0; c < CN; c++) _mm512_storeu_ps(reinterpret_cast<float *>(dst + (j0 + c) * dst_stride) + r0, acc[c]);
}

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

// One tile's 16 rows (rows[i], nb blocks each), transposed into W and their block scales
// into da; the tile at `next` (tile_bytes long; null for none) is fetched meanwhile.
STILL_AVX512_VNNI inline void load_tile(const BlockQ8 * const * rows, int64_t nb, __m512i * W, float * da, const char * next, size_t tile_bytes) {
    for (int64_t l = 0; l < nb; l++) {
        if (next != nullptr) {
            const size_t from = (tile_bytes * l / nb) & ~size_t(63), to = tile_bytes * (l + 1) / nb;
            for (size_t o = from; o < to; o += 64) _mm_prefetch(next + o, _MM_HINT_T0);
        }
        transpose_block(rows, l, W + 8 * l);
        alignas(32) uint16_t h[kTile];
        for (int i = 0; i < kTile; i++) h[i] = rows[i][l].d;
        _mm512_store_ps(da + kTile * l, _mm512_cvtph_ps(_mm256_load_si256(reinterpret_cast<const __m256i *>(h))));
    }
}

// Every column of x against a loaded tile, rows r0.. of dst.
STILL_AVX512_VNNI inline void tile_all_columns(const __m512i * W, const float * da, const Columns & x, char * dst, size_t dst_stride, int64_t r0) {
    int64_t j = 0;
    for (; j + 8 <= x.n; j += 8) tile_columns<8>(W, da, x, j, dst, dst_stride, r0);
    for (; j + 4 <= x.n; j += 4) tile_columns<4>(W, da, x, j, dst, dst_stride, r0);
    for (; j < x.n; j++) tile_columns<1>(W, da, x, j, dst, dst_stride, r0);
}

// The tiles of a matrix of `rows` rows, the last one short of 16 rows where rows is not a multiple of 16.
inline int64_t tiles_of(int64_t rows) { return (rows + kTile - 1) / kTile; }

// A tile of n_rows < 16 rows (rows[i] for i < n_rows, a matrix's last rows) into dst's rows
// r0..: the tile is filled up with rows of zero blocks and only the given rows' sums are
// kept, so they are what a whole tile gives them. W and da: room for a loaded tile. False
// when the thread's room cannot be had.
STILL_AVX512_VNNI inline bool short_tile(const BlockQ8 ** rows, int n_rows, __m512i * W, float * da, const Columns & x, char * dst, size_t dst_stride, int64_t r0) {
    thread_local Scratch scratch;
    const size_t zero = (static_cast<size_t>(x.nb) * sizeof(BlockQ8) + 63) & ~size_t(63);
    char * mem = static_cast<char *>(scratch.get(zero + static_cast<size_t>(x.n) * kTile * sizeof(float)));
    if (mem == nullptr) return false;
    std::memset(mem, 0, zero); // scale 0, quants 0
    for (int i = n_rows; i < kTile; i++) rows[i] = reinterpret_cast<const BlockQ8 *>(mem);
    float * out = reinterpret_cast<float *>(mem + zero);
    load_tile(rows, x.nb, W, da, nullptr, 0);
    tile_all_columns(W, da, x, reinterpret_cast<char *>(out), kTile * sizeof(float), 0);
    for (int64_t j = 0; j < x.n; j++) std::memcpy(reinterpret_cast<float *>(dst + j * dst_stride) + r0, out + j * kTile, static_cast<size_t>(n_rows) * sizeof(float));
    return true;
}

// Tiles [t0, t1) of the rows of W·X into dst (x's column j at dst + j·dst_stride; W's `rows`
// rows w_stride bytes apart, in tiles_of(rows) tiles). False when the thread's room for a
// transposed tile cannot be had.
STILL_AVX512_VNNI inline bool gemm_tiles(const char * w, size_t w_stride, int64_t rows, int64_t t0, int64_t t1, const Columns & x, char * dst, size_t dst_stride) {
    thread_local Scratch scratch;
    const int64_t nb = x.nb;
    char * mem = static_cast<char *>(scratch.get(static_cast<size_t>(nb) * (8 * 64 + kTile * 4)));
    if (mem == nullptr) return false;
    __m512i * W = reinterpret_cast<__m512i *>(mem);
    float * da = reinterpret_cast<float *>(mem + static_cast<size_t>(nb) * 8 * 64);
    // A tile's 16 rows are one contiguous stretch; reading 16 rows at once defeats the
    // hardware prefetchers, so the next tile is fetched while this one is transposed.
    const size_t tile_bytes = kTile * w_stride;
    for (int64_t t = t0; t < t1; t++) {
        const int64_t r0 = t * kTile;
        const int n_rows = static_cast<int>(std::min<int64_t>(kTile, rows - r0));
        const BlockQ8 * tile_rows[kTile];
        for (int i = 0; i < n_rows; i++) tile_rows[i] = reinterpret_cast<const BlockQ8 *>(w + static_cast<size_t>(r0 + i) * w_stride);
        if (n_rows < kTile) {
            if (!short_tile(tile_rows, n_rows, W, da, x, dst, dst_stride, r0)) return false;
            continue;
        }
        const bool next_whole = t + 1 < t1 && r0 + 2 * kTile <= rows;
        load_tile(tile_rows, nb, W, da, next_whole ? w + static_cast<size_t>(r0 + kTile) * w_stride : nullptr, tile_bytes);
        tile_all_columns(W, da, x, dst, dst_stride, r0);
    }
    return true;
}

} // namespace still::q8

#endif
