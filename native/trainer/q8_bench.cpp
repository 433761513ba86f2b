// still-train q8-bench: still's Q8_0 kernel (each tile width this CPU runs) against ggml's
// own product of the same Q8_0 weights and F32 activation columns, on the CPU backend, its
// thread pool and the threads the trainer uses (the engine's still-q8 backend runs the same
// kernel on its own threads). Weights: random values quantized by ggml; every kernel runs
// each column count in turn, `repeats` rounds, and the best time of each is reported, with
// the largest difference of its results from ggml's over ggml's largest value. One JSON line
// per shape, column count and kernel:
//   {"type":"q8_bench","rows":R,"k":K,"columns":N,"kernel":"ggml","tile_rows":0,"ms":…,"gmacs":…,"max_rel_diff":0}
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <memory>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "common.h"
#include "engine.h"
#include "ggml-alloc.h"
#include "ggml-backend.h"
#include "ggml-cpu.h"
#include "ggml.h"
#include "train.h"

namespace st {

namespace {

struct Freer {
    void operator()(ggml_context * c) const { ggml_free(c); }
    void operator()(ggml_backend_buffer * b) const { ggml_backend_buffer_free(b); }
    void operator()(ggml_gallocr * g) const { ggml_gallocr_free(g); }
    void operator()(ggml_backend * b) const { ggml_backend_free(b); }
};

// One kernel's graph for the first n columns of x: W·X on ggml's kernel, or on still's
// where k is given.
struct Product {
    std::unique_ptr<ggml_context, Freer> ctx;
    ggml_cgraph * graph = nullptr;
    ggml_tensor * out = nullptr;
};

Product product(ggml_tensor * w, ggml_tensor * x, int64_t n, const Q8Kernel * k) {
    Product p;
    ggml_init_params params = {ggml_tensor_overhead() * 8 + ggml_graph_overhead(), nullptr, true};
    p.ctx.reset(ggml_init(params));
    if (!p.ctx) throw std::bad_alloc();
    ggml_tensor * cols = ggml_view_2d(p.ctx.get(), x, x->ne[0], n, x->nb[1], 0);
    ggml_tensor * args[2] = {w, cols};
    p.out = k == nullptr ? ggml_mul_mat(p.ctx.get(), w, cols)
                         : ggml_custom_4d(p.ctx.get(), GGML_TYPE_F32, w->ne[1], n, 1, 1, args, 2, k->op, GGML_N_TASKS_MAX, k->userdata);
    p.graph = ggml_new_graph(p.ctx.get());
    ggml_build_forward_expand(p.graph, p.out);
    return p;
}

} // namespace

int run_q8_bench(const EngineOptions & eo, const std::vector<std::pair<int64_t, int64_t>> & shapes, const std::vector<int64_t> & columns, int repeats) {
    if (!load_backends(eo.backend_dir)) return EXIT_ERROR;
    std::unique_ptr<ggml_backend, Freer> cpu(ggml_backend_init_by_type(GGML_BACKEND_DEVICE_TYPE_CPU, nullptr));
    if (!cpu) {
        fprintf(stderr, "%s: error: cannot start the CPU backend\n", __func__);
        return EXIT_ERROR;
    }
    ggml_backend_reg_t reg = ggml_backend_dev_backend_reg(ggml_backend_get_device(cpu.get()));
    auto set_threads = (ggml_backend_set_n_threads_t) ggml_backend_reg_get_proc_address(reg, "ggml_backend_set_n_threads");
    if (set_threads) set_threads(cpu.get(), std::max(1, eo.threads));
    const std::vector<Q8Kernel> kernels = q8_kernels();
    const int64_t n_max = *std::max_element(columns.begin(), columns.end());
    std::mt19937 rng(20260);
    std::uniform_real_distribution<float> uniform(-1.0f, 1.0f);

    for (const auto & [rows, k] : shapes) {
        ggml_init_params params = {ggml_tensor_overhead() * 4, nullptr, true};
        std::unique_ptr<ggml_context, Freer> ctx(ggml_init(params));
        if (!ctx) throw std::bad_alloc();
        ggml_tensor * w = ggml_new_tensor_2d(ctx.get(), GGML_TYPE_Q8_0, k, rows);
        ggml_tensor * x = ggml_new_tensor_2d(ctx.get(), GGML_TYPE_F32, k, n_max);
        std::unique_ptr<ggml_backend_buffer, Freer> buf(ggml_backend_alloc_ctx_tensors(ctx.get(), cpu.get()));
        if (!buf) {
            fprintf(stderr, "%s: error: no memory for a %lld × %lld Q8_0 matrix\n", __func__, (long long) rows, (long long) k);
            return EXIT_ERROR;
        }
        // the weights, quantized by ggml a slice of rows at a time
        const int64_t slice = 1024;
        std::vector<float> values(static_cast<size_t>(slice * k));
        std::vector<char> quants(ggml_row_size(GGML_TYPE_Q8_0, k) * slice);
        for (int64_t r0 = 0; r0 < rows; r0 += slice) {
            const int64_t nr = std::min(slice, rows - r0);
            for (int64_t i = 0; i < nr * k; i++) values[i] = uniform(rng);
            const size_t bytes = ggml_quantize_chunk(GGML_TYPE_Q8_0, values.data(), quants.data(), 0, nr, k, nullptr);
            ggml_backend_tensor_set(w, quants.data(), r0 * w->nb[1], bytes);
        }
        std::vector<float> xs(static_cast<size_t>(n_max * k));
        for (float & v : xs) v = uniform(rng);
        ggml_backend_tensor_set(x, xs.data(), 0, xs.size() * sizeof(float));

        for (const int64_t n : columns) {
            // ggml's first, then each width of still's; each with its own graph and buffer
            std::vector<Product> products;
            std::vector<std::unique_ptr<ggml_gallocr, Freer>> allocs;
            products.push_back(product(w, x, n, nullptr));
            for (const Q8Kernel & kern : kernels) products.push_back(product(w, x, n, &kern));
            for (Product & p : products) {
                allocs.emplace_back(ggml_gallocr_new(ggml_backend_get_default_buffer_type(cpu.get())));
                if (!ggml_gallocr_alloc_graph(allocs.back().get(), p.graph)) {
                    fprintf(stderr, "%s: error: no memory for %lld columns\n", __func__, (long long) n);
                    return EXIT_ERROR;
                }
            }
            std::vector<double> best(products.size(), INFINITY);
            for (int r = 0; r < repeats; r++) {
                for (size_t i = 0; i < products.size(); i++) {
                    const auto t0 = std::chrono::steady_clock::now();
                    if (ggml_backend_graph_compute(cpu.get(), products[i].graph) != GGML_STATUS_SUCCESS || take_q8_failure()) {
                        fprintf(stderr, "%s: error: the product failed\n", __func__);
                        return EXIT_ERROR;
                    }
                    best[i] = std::min(best[i], std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
                }
            }
            std::vector<float> ref(static_cast<size_t>(rows * n)), got(ref.size());
            ggml_backend_tensor_get(products[0].out, ref.data(), 0, ref.size() * sizeof(float));
            float scale = 0;
            for (float v : ref) scale = std::max(scale, std::fabs(v));
            for (size_t i = 0; i < products.size(); i++) {
                double diff = 0;
                if (i > 0) {
                    ggml_backend_tensor_get(products[i].out, got.data(), 0, got.size() * sizeof(float));
                    for (size_t j = 0; j < got.size(); j++) diff = std::max(diff, (double) std::fabs(got[j] - ref[j]));
                }
                const bool ours = i > 0;
                JsonLine()
                    .str("type", "q8_bench")
                    .integer("rows", rows)
                    .integer("k", k)
                    .integer("columns", n)
                    .str("kernel", ours ? kernels[i - 1].name : std::string("ggml"))
                    .integer("tile_rows", ours ? kernels[i - 1].tile_rows : 0)
                    .integer("threads", std::max(1, eo.threads))
                    .num("ms", best[i])
                    .num("gmacs", (double) rows * k * n / (best[i] * 1e6))
                    .num("max_rel_diff", scale > 0 ? diff / scale : diff)
                    .print();
            }
        }
    }
    return EXIT_OK;
}

} // namespace st
