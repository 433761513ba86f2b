#include "q8_gemm.h"

#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <memory>
#include <mutex>
#include <new>
#include <stdexcept>
#include <string>
#include <vector>

#include "ggml-backend-impl.h"
#include "ggml-backend.h"
#include "ggml.h"
#include "work_pool.h"

#include "q8_0_gemm.h"

namespace still {

#if STILL_Q8_0_GEMM

namespace {

using namespace q8;

// --- the backend ---------------------------------------------------------------------------
constexpr int64_t kMinColumns = 8;
constexpr const char * kName = "still-q8";

std::atomic<uint64_t> products{0}; // computed since the process started

// Which products the backend takes: none, the output layer's only (the default), or all.
enum class Mode { Off, Output, All };
Mode mode = Mode::Off;
Isa isa = Isa::None; // the kernel that runs them

// The output layer's weights: its own or, in models that tie them, the token embeddings
// (llama.cpp's names). Nothing is computed from its product but logits, so its rounding
// differences stay in the logits (about 1e-7 of their scale) and every hidden state is
// llama.cpp's bit for bit.
bool is_output_weight(const ggml_tensor * w) {
    return std::strcmp(w->name, "output.weight") == 0 || std::strcmp(w->name, "token_embd.weight") == 0;
}

struct Context {
    int n_threads = 1;
    Scratch columns; // the quantized activations of the product being computed
    std::unique_ptr<WorkPool> pool; // n_threads - 1 workers, made again when that changes

    // fn(ith, nth) on nth threads, the caller among them.
    void run(int nth, const std::function<void(int, int)> & fn) {
        if (pool == nullptr || pool->workers() != n_threads - 1) pool = std::make_unique<WorkPool>(n_threads - 1);
        pool->run(nth, [&](int32_t ith) { fn(ith, nth); });
    }
};

bool buffer_is_host(const ggml_backend_buffer_t b) { return b == nullptr || ggml_backend_buffer_is_host(b); }

bool supported(const ggml_tensor * op) {
    if (op->op != GGML_OP_MUL_MAT || op->type != GGML_TYPE_F32) return false;
    const ggml_tensor * w = op->src[0];
    const ggml_tensor * x = op->src[1];
    if (w->type != GGML_TYPE_Q8_0 || x->type != GGML_TYPE_F32) return false;
    if (w->ne[2] != 1 || w->ne[3] != 1 || x->ne[2] != 1 || x->ne[3] != 1) return false;
    if (w->ne[0] % kBlock != 0 || x->ne[1] < kMinColumns) return false;
    if (w->nb[0] != sizeof(BlockQ8) || w->nb[1] != static_cast<size_t>(w->ne[0] / kBlock) * sizeof(BlockQ8)) return false;
    if (x->nb[0] != sizeof(float) || op->nb[0] != sizeof(float)) return false;
    // Weights another CPU kernel has repacked at load time are not in Q8_0's layout.
    if (w->extra != nullptr || !buffer_is_host(w->buffer)) return false;
    return mode == Mode::All || (mode == Mode::Output && is_output_weight(w));
}

ggml_status mul_mat(Context & ctx, ggml_tensor * op) {
    const ggml_tensor * w = op->src[0];
    const ggml_tensor * src = op->src[1];
    const int64_t n = src->ne[1], nb = w->ne[0] / kBlock;
    void * mem = ctx.columns.get(Columns::bytes(n, nb));
    if (mem == nullptr) return GGML_STATUS_ALLOC_FAILED;
    const Columns x = Columns::in(mem, n, nb);
    const int64_t tiles = tiles_of(isa, w->ne[1]);
    const int nth = static_cast<int>(std::max<int64_t>(1, std::min<int64_t>(ctx.n_threads, tiles)));
    std::atomic<bool> ok{true};
    const std::function<void(int, int)> job = [&](int ith, int n) {
        for (int64_t j = ith; j < x.n; j += n) {
            const float * col = reinterpret_cast<const float *>(static_cast<const char *>(src->data) + j * src->nb[1]);
            quantize_column(col, x.nb, x.q + j * x.nb * kBlock, x.d + j * x.nb, x.corr + j * x.nb);
        }
    };
    ctx.run(nth, job);
    const std::function<void(int, int)> product = [&](int ith, int n) {
        if (!gemm_tiles(isa, static_cast<const char *>(w->data), w->nb[1], w->ne[1], tiles * ith / n, tiles * (ith + 1) / n, x, static_cast<char *>(op->data), op->nb[1])) ok = false;
    };
    ctx.run(nth, product);
    products.fetch_add(1, std::memory_order_relaxed);
    return ok ? GGML_STATUS_SUCCESS : GGML_STATUS_ALLOC_FAILED;
}

const char * backend_name(ggml_backend_t) { return kName; }

void backend_free(ggml_backend_t backend) {
    delete static_cast<Context *>(backend->context);
    delete backend;
}

ggml_status backend_graph_compute(ggml_backend_t backend, ggml_cgraph * graph) {
    Context & ctx = *static_cast<Context *>(backend->context);
    for (int i = 0; i < ggml_graph_n_nodes(graph); i++) {
        ggml_tensor * node = ggml_graph_node(graph, i);
        switch (node->op) {
            case GGML_OP_MUL_MAT: {
                ggml_status s;
                try {
                    s = mul_mat(ctx, node);
                } catch (const std::bad_alloc &) {
                    s = GGML_STATUS_ALLOC_FAILED;
                } catch (const std::exception &) { // e.g. a worker thread that could not start
                    s = GGML_STATUS_FAILED;
                }
                if (s != GGML_STATUS_SUCCESS) return s;
                break;
            }
            case GGML_OP_NONE:
            case GGML_OP_RESHAPE:
            case GGML_OP_VIEW:
            case GGML_OP_PERMUTE:
            case GGML_OP_TRANSPOSE:
                break;
            default:
                return GGML_STATUS_FAILED;
        }
    }
    return GGML_STATUS_SUCCESS;
}

ggml_guid_t backend_guid() {
    static ggml_guid guid = {0x73, 0x74, 0x69, 0x6c, 0x6c, 0x2d, 0x71, 0x38, 0x2d, 0x67, 0x65, 0x6d, 0x6d, 0x00, 0x00, 0x01};
    return &guid;
}

const char * dev_name(ggml_backend_dev_t) { return kName; }
const char * dev_description(ggml_backend_dev_t) { return "Q8_0 matrix products on VNNI"; }
void dev_memory(ggml_backend_dev_t, size_t * free, size_t * total) { *free = *total = 0; }
enum ggml_backend_dev_type dev_type(ggml_backend_dev_t) { return GGML_BACKEND_DEVICE_TYPE_ACCEL; }

void dev_props(ggml_backend_dev_t dev, ggml_backend_dev_props * props) {
    std::memset(props, 0, sizeof(*props));
    props->name = dev_name(dev);
    props->description = dev_description(dev);
    props->type = GGML_BACKEND_DEVICE_TYPE_ACCEL;
}

ggml_backend_t dev_init(ggml_backend_dev_t dev, const char *);

// Products read the CPU backend's tensors in place and write into its buffers.
ggml_backend_buffer_type_t dev_buffer_type(ggml_backend_dev_t) { return ggml_backend_cpu_buffer_type(); }
bool dev_supports_op(ggml_backend_dev_t, const ggml_tensor * op) { return supported(op); }
bool dev_supports_buft(ggml_backend_dev_t, ggml_backend_buffer_type_t buft) { return ggml_backend_buft_is_host(buft); }
bool dev_offload_op(ggml_backend_dev_t, const ggml_tensor *) { return false; }

const char * reg_name(ggml_backend_reg_t) { return kName; }
size_t reg_device_count(ggml_backend_reg_t) { return 1; }
ggml_backend_dev_t reg_device(ggml_backend_reg_t reg, size_t);

void set_n_threads(ggml_backend_t backend, int n_threads) {
    static_cast<Context *>(backend->context)->n_threads = n_threads > 0 ? n_threads : 1;
}

void * reg_proc_address(ggml_backend_reg_t, const char * name) {
    if (std::strcmp(name, "ggml_backend_set_n_threads") == 0) return reinterpret_cast<void *>(&set_n_threads);
    return nullptr;
}

ggml_backend_reg the_reg = {
    /* .api_version = */ GGML_BACKEND_API_VERSION,
    /* .iface       = */ {reg_name, reg_device_count, reg_device, reg_proc_address},
    /* .context     = */ nullptr,
};

ggml_backend_device the_device = {
    /* .iface = */ {
        /* .get_name             = */ dev_name,
        /* .get_description      = */ dev_description,
        /* .get_memory           = */ dev_memory,
        /* .get_type             = */ dev_type,
        /* .get_props            = */ dev_props,
        /* .init_backend         = */ dev_init,
        /* .get_buffer_type      = */ dev_buffer_type,
        /* .get_host_buffer_type = */ nullptr,
        /* .buffer_from_host_ptr = */ nullptr,
        /* .supports_op          = */ dev_supports_op,
        /* .supports_buft        = */ dev_supports_buft,
        /* .offload_op           = */ dev_offload_op,
        /* .event_new            = */ nullptr,
        /* .event_free           = */ nullptr,
        /* .event_synchronize    = */ nullptr,
    },
    /* .reg     = */ &the_reg,
    /* .context = */ nullptr,
};

ggml_backend_dev_t reg_device(ggml_backend_reg_t, size_t) { return &the_device; }

ggml_backend_t dev_init(ggml_backend_dev_t dev, const char *) {
    ggml_backend_i iface = {};
    iface.get_name = backend_name;
    iface.free = backend_free;
    iface.graph_compute = backend_graph_compute;
    return new ggml_backend{backend_guid(), iface, dev, new Context()};
}

std::atomic<bool> registered{false};
std::once_flag once;
std::string what = "off (a GPU device is present)";

} // namespace

void q8_gemm_register() {
    std::call_once(once, [] {
        const char * env = std::getenv("STILL_Q8_GEMM");
        const std::string asked = env == nullptr ? "output" : env;
        if (asked == "0" || asked == "off") {
            what = "off (STILL_Q8_GEMM=" + asked + ")";
            return;
        }
        if (asked == "1" || asked == "all") {
            mode = Mode::All;
        } else if (asked == "output") {
            mode = Mode::Output;
        } else {
            what = "off (STILL_Q8_GEMM=" + asked + " is not one of output, all, 0)";
            return;
        }
        std::string why;
        isa = chosen_isa(&why);
        if (isa == Isa::None) {
            what = "off (" + why + ")";
        } else if (ggml_backend_dev_by_type(GGML_BACKEND_DEVICE_TYPE_CPU) == nullptr) {
            what = "off (no CPU backend)";
        } else {
            ggml_backend_register(&the_reg);
            registered = true;
            what = std::string(mode == Mode::All ? "on: every Q8_0 product (" : "on: the output layer's Q8_0 product (") + isa_name(isa) + ")";
        }
    });
}

bool q8_gemm_active() { return registered; }

std::string q8_gemm_mode() {
    if (!registered) return "off";
    return mode == Mode::All ? "all" : "output";
}

std::string q8_gemm_status() { return what; }

std::string q8_gemm_isa() { return registered ? isa_name(isa) : "none"; }

uint64_t q8_gemm_products() { return products.load(); }

#else

void q8_gemm_register() {}
bool q8_gemm_active() { return false; }
std::string q8_gemm_mode() { return "off"; }
std::string q8_gemm_status() { return "off (not an x86-64 build)"; }
std::string q8_gemm_isa() { return "none"; }
uint64_t q8_gemm_products() { return 0; }

#endif

} // namespace still
