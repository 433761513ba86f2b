// The forward products of Q8_0 weights (the frozen base of a LoRA step, the log-prob passes)
// on still's VNNI kernel (native/kernels/q8_0_gemm.h) instead of ggml's, which
// keeps 8 partial sums per output and scales each of them (about a quarter of a LoRA step
// on the qwen2.5-0.5b shape). The activations are quantized to Q8_0 exactly as ggml does,
// and every block's integer dot product is ggml's; the sums are scaled once per block
// instead of per 4 values, so results agree with ggml's to float rounding, not bit for bit.
//
// A custom op cannot wait for its other threads, so each thread takes a share of the
// activation columns, quantizes them itself and runs every tile of weights over them (each
// thread transposes every tile: under 1% of the work with a few hundred columns each).
#include <algorithm>
#include <atomic>
#include <cmath>

#include "engine.h"
#include "q8_0_gemm.h"

namespace st {

namespace {

std::atomic<bool> failed{false}; // a thread could not get room for its columns

const int64_t MIN_COLUMNS = 16; // fewer activation columns stay on ggml's kernel
const int64_t GROUP = 8;        // columns per group of the kernel's widest step

#if STILL_Q8_0_GEMM
using namespace still::q8;

const Isa isa = chosen_isa(); // STILL_Q8_ISA, or the widest this CPU has

// dst = W·X for this thread's columns: X's columns (all of its dimensions past the first,
// flattened) split between the threads in groups of 8.
void product(Isa use, ggml_tensor * dst, const ggml_tensor * w, const ggml_tensor * x, int ith, int nth) {
    const int64_t nb = w->ne[0] / kBlock;
    const int64_t n1 = x->ne[1], n2 = x->ne[2];
    const int64_t N = n1 * n2 * x->ne[3];
    const int64_t groups = (N + GROUP - 1) / GROUP;
    const int64_t j0 = std::min(N, groups * ith / nth * GROUP), j1 = std::min(N, groups * (ith + 1) / nth * GROUP);
    if (j0 >= j1) return;
    thread_local Scratch room;
    void * mem = room.get(Columns::bytes(j1 - j0, nb));
    if (mem == nullptr) {
        failed = true;
        for (int64_t j = j0; j < j1; j++) {
            float * out = (float *) ((char *) dst->data + j * dst->nb[1]);
            for (int64_t i = 0; i < dst->ne[0]; i++) out[i] = NAN;
        }
        return;
    }
    const Columns cols = Columns::in(mem, j1 - j0, nb);
    for (int64_t j = j0; j < j1; j++) {
        const int64_t i1 = j % n1, i2 = (j / n1) % n2, i3 = j / (n1 * n2);
        const float * col = (const float *) ((const char *) x->data + i1 * x->nb[1] + i2 * x->nb[2] + i3 * x->nb[3]);
        const int64_t c = j - j0;
        quantize_column(col, nb, cols.q + c * nb * kBlock, cols.d + c * nb, cols.corr + c * nb);
    }
    if (!gemm_tiles(use, (const char *) w->data, w->nb[1], w->ne[1], 0, tiles_of(use, w->ne[1]), cols, (char *) dst->data + j0 * dst->nb[1], dst->nb[1])) failed = true;
}

// userdata: the Isa to run (null: the process's choice)
void q8_op(ggml_tensor * dst, int ith, int nth, void * userdata) {
    product(userdata != nullptr ? *static_cast<const Isa *>(userdata) : isa, dst, dst->src[0], dst->src[1], ith, nth);
}

ggml_custom_op_t kernel_for_cpu() { return isa != Isa::None ? q8_op : nullptr; }

const Isa kWidths[] = {Isa::Avx512Vnni, Isa::AvxVnni};
#else
ggml_custom_op_t kernel_for_cpu() { return nullptr; }
#endif

} // namespace

std::vector<Q8Kernel> q8_kernels() {
    std::vector<Q8Kernel> out;
#if STILL_Q8_0_GEMM
    for (const Isa & w : kWidths) {
        const bool has = w == Isa::Avx512Vnni ? Vnni512::cpu_has() : Vnni256::cpu_has();
        if (has) out.push_back({isa_name(w), tile_rows(w), q8_op, const_cast<Isa *>(&w)});
    }
#endif
    return out;
}

bool take_q8_failure() { return failed.exchange(false); }

// Makes node (a MUL_MAT of Q8_0 weights by F32 activations) a product on the kernel, where
// the kernel takes its shapes; returns whether it did.
bool Engine::q8_product(ggml_context * ctx, ggml_tensor * node) {
    static const ggml_custom_op_t kernel = kernel_for_cpu();
    if (!kernel || gpu_ || !opt_.q8_kernel) return false;
    ggml_tensor * w = node->src[0];
    ggml_tensor * x = node->src[1];
    if (w->type != GGML_TYPE_Q8_0 || x->type != GGML_TYPE_F32 || node->type != GGML_TYPE_F32) return false;
    if (w->ne[2] != 1 || w->ne[3] != 1 || w->ne[0] % 32 != 0 || w->nb[0] != ggml_type_size(GGML_TYPE_Q8_0)) return false;
    if (w->extra != nullptr || (w->buffer && !ggml_backend_buffer_is_host(w->buffer))) return false;
    if (x->nb[0] != sizeof(float) || !ggml_is_contiguous(node) || ggml_nrows(x) < MIN_COLUMNS) return false;
    make_custom(ctx, node, kernel, nullptr);
    q8_products_++;
    return true;
}

} // namespace st
