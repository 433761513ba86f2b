// The engine's set-up and upkeep: backends and the scheduler, the trainable tensors with
// their gradient accumulators and AdamW moments, running graphs, the optimizer step.
#include "engine.h"

#include <algorithm>
#include <cmath>

#include "common.h"

namespace st {

// --- set-up ------------------------------------------------------------------------------

Engine::~Engine() {
    free_activations();
    if (sched_) ggml_backend_sched_free(sched_);
    if (buf_lora_) ggml_backend_buffer_free(buf_lora_);
    if (buf_grad_) ggml_backend_buffer_free(buf_grad_);
    if (buf_moments_) ggml_backend_buffer_free(buf_moments_);
    if (ctx_lora_) ggml_free(ctx_lora_);
    if (ctx_grad_) ggml_free(ctx_grad_);
    if (ctx_moments_) ggml_free(ctx_moments_);
    if (gpu_) ggml_backend_free(gpu_);
    if (cpu_) ggml_backend_free(cpu_);
    if (threadpool_ && tp_free_) tp_free_(threadpool_);
}

bool Engine::abort_callback(void * data) {
    Engine * e = (Engine *) data;
    if (e->abortable_ && e->abort_flag_ && e->abort_flag_->load()) {
        e->aborted_ = true;
        return true;
    }
    return false;
}

bool load_backends(const std::string & dir) {
    // Builds with GGML_BACKEND_DL (the prebuilt packages) register nothing until their
    // backend modules are loaded; static builds come with their backends.
    if (ggml_backend_dev_by_type(GGML_BACKEND_DEVICE_TYPE_CPU) == nullptr && !dir.empty()) {
        ggml_backend_load_all_from_path(dir.c_str());
    }
    if (ggml_backend_dev_by_type(GGML_BACKEND_DEVICE_TYPE_CPU) == nullptr) {
        ggml_backend_load_all();
    }
    if (ggml_backend_dev_by_type(GGML_BACKEND_DEVICE_TYPE_CPU) == nullptr) {
        fprintf(stderr, "load_backends: error: no CPU backend found%s%s; pass the folder of the ggml backend libraries with --backend-dir\n",
                dir.empty() ? "" : " in ", dir.c_str());
        return false;
    }
    return true;
}

bool Engine::init(const EngineOptions & opt) {
    opt_ = opt;
    if (!load_backends(opt.backend_dir)) return false;

    cpu_ = ggml_backend_init_by_type(GGML_BACKEND_DEVICE_TYPE_CPU, nullptr);
    if (!cpu_) {
        fprintf(stderr, "%s: error: cannot start the CPU backend\n", __func__);
        return false;
    }
    ggml_backend_reg_t cpu_reg = ggml_backend_dev_backend_reg(ggml_backend_get_device(cpu_));
    auto set_threads = (ggml_backend_set_n_threads_t) ggml_backend_reg_get_proc_address(cpu_reg, "ggml_backend_set_n_threads");
    if (set_threads) set_threads(cpu_, std::max(1, opt.threads));
    auto set_abort = (ggml_backend_set_abort_callback_t) ggml_backend_reg_get_proc_address(cpu_reg, "ggml_backend_set_abort_callback");
    if (set_abort) set_abort(cpu_, abort_callback, this);
    // one thread pool for the whole run (without it every graph starts and joins its threads)
    if (opt.threads > 1) {
        using tp_new_t = ggml_threadpool_t (*)(ggml_threadpool_params *);
        using tp_set_t = void (*)(ggml_backend_t, ggml_threadpool_t);
        auto tp_new = (tp_new_t) ggml_backend_reg_get_proc_address(cpu_reg, "ggml_threadpool_new");
        auto tp_set = (tp_set_t) ggml_backend_reg_get_proc_address(cpu_reg, "ggml_backend_cpu_set_threadpool");
        tp_free_ = (void (*)(ggml_threadpool_t)) ggml_backend_reg_get_proc_address(cpu_reg, "ggml_threadpool_free");
        if (tp_new && tp_set && tp_free_) {
            ggml_threadpool_params tpp = ggml_threadpool_params_default(opt.threads);
            tpp.poll = (uint32_t) opt.poll;
            threadpool_ = tp_new(&tpp);
            if (threadpool_) tp_set(cpu_, threadpool_);
        }
    }

    if (opt.use_gpu) {
        ggml_backend_dev_t dev = ggml_backend_dev_by_type(GGML_BACKEND_DEVICE_TYPE_GPU);
        if (!dev) dev = ggml_backend_dev_by_type(GGML_BACKEND_DEVICE_TYPE_IGPU);
        if (dev) {
            gpu_ = ggml_backend_dev_init(dev, nullptr);
            if (!gpu_) {
                fprintf(stderr, "%s: error: cannot start the %s backend\n", __func__, ggml_backend_dev_name(dev));
                return false;
            }
        }
    }
    ggml_backend_buffer_type_t buft = gpu_ ? ggml_backend_get_default_buffer_type(gpu_) : ggml_backend_cpu_buffer_type();

    if (!load_base_model(opt.model_path, opt.full, buft, model_)) return false;

    // trainable tensors
    if (opt.full) {
        for (ggml_tensor * t : model_.tensors) {
            if (t == model_.rope_freqs) continue; // frequency factors have no gradient in ggml
            ggml_set_param(t);
            train_.push_back({ggml_get_name(t), t, nullptr, nullptr, nullptr});
        }
    } else {
        if (!opt.init_adapter.empty()) {
            if (!load_adapter(opt.init_adapter)) return false;
        } else if (!init_lora()) {
            return false;
        }
    }

    // gradient accumulators and AdamW moments, in two buffers so the gradients can be zeroed at once
    const size_t n = train_.size();
    ggml_init_params gp = {/*.mem_size =*/ (n + 1) * ggml_tensor_overhead(), nullptr, /*.no_alloc =*/ true};
    ggml_init_params mp = {/*.mem_size =*/ (2 * n + 1) * ggml_tensor_overhead(), nullptr, /*.no_alloc =*/ true};
    ctx_grad_ = ggml_init(gp);
    ctx_moments_ = ggml_init(mp);
    if (!ctx_grad_ || !ctx_moments_) {
        fprintf(stderr, "%s: error: ggml_init failed\n", __func__);
        return false;
    }
    for (Trainable & t : train_) {
        t.grad = ggml_new_tensor(ctx_grad_, GGML_TYPE_F32, GGML_MAX_DIMS, t.param->ne);
        t.m = ggml_new_tensor(ctx_moments_, GGML_TYPE_F32, GGML_MAX_DIMS, t.param->ne);
        t.v = ggml_new_tensor(ctx_moments_, GGML_TYPE_F32, GGML_MAX_DIMS, t.param->ne);
        ggml_format_name(t.grad, "grad:%s", t.name.c_str());
        ggml_format_name(t.m, "adam_m:%s", t.name.c_str());
        ggml_format_name(t.v, "adam_v:%s", t.name.c_str());
    }
    buf_grad_ = ggml_backend_alloc_ctx_tensors_from_buft(ctx_grad_, buft);
    buf_moments_ = ggml_backend_alloc_ctx_tensors_from_buft(ctx_moments_, buft);
    if (!buf_grad_ || !buf_moments_) {
        fprintf(stderr, "%s: error: cannot allocate memory for gradients and optimizer state\n", __func__);
        return false;
    }
    ggml_backend_buffer_clear(buf_grad_, 0);
    ggml_backend_buffer_clear(buf_moments_, 0);

    return ensure_sched(2 * graph_size(64));
}

// The scheduler sizes its tables for a number of graph nodes: it is made again, larger,
// when a graph outgrows it (rows with many DPO pairs or many distinct loss weights).
bool Engine::ensure_sched(int size) {
    if (sched_ && size <= sched_size_) return true;
    if (sched_) ggml_backend_sched_free(sched_);
    ggml_backend_t backends[2];
    int n_backends = 0;
    if (gpu_) backends[n_backends++] = gpu_;
    backends[n_backends++] = cpu_;
    sched_size_ = size;
    sched_ = ggml_backend_sched_new(backends, nullptr, n_backends, (size_t) size, false, false);
    if (!sched_) {
        fprintf(stderr, "ensure_sched: error: cannot create the backend scheduler\n");
        return false;
    }
    return true;
}

int64_t Engine::trainable_count() const {
    int64_t n = 0;
    for (const Trainable & t : train_) n += ggml_nelements(t.param);
    return n;
}

// --- running graphs ------------------------------------------------------------------------

bool Engine::compute(ggml_cgraph * gf, bool abortable) {
    abortable_ = abortable;
    const ggml_status st = ggml_backend_sched_graph_compute(sched_, gf);
    abortable_ = false;
    if (st == GGML_STATUS_ABORTED) {
        aborted_ = true;
        return false;
    }
    if (st != GGML_STATUS_SUCCESS) {
        fprintf(stderr, "%s: error: graph computation failed (status %d)\n", __func__, (int) st);
        return false;
    }
    if (take_q8_failure()) {
        fprintf(stderr, "%s: error: out of memory for the activations of a Q8_0 matrix product (--q8-products ggml avoids them)\n", __func__);
        return false;
    }
    return true;
}

bool Engine::grad_norm(double & out) {
    const int size = (int) (train_.size() * 4 + 16);
    ggml_init_params ip = {(size_t) size * 2 * ggml_tensor_overhead() + ggml_graph_overhead_custom(size, false), nullptr, true};
    ggml_context * ctx = ggml_init(ip);
    if (!ctx) return false;
    struct CtxGuard { ggml_context * c; ~CtxGuard() { ggml_free(c); } } ctx_guard{ctx};
    ggml_tensor * total = nullptr;
    for (const Trainable & t : train_) {
        ggml_tensor * s = ggml_sum(ctx, ggml_sqr(ctx, t.grad));
        total = total ? ggml_add(ctx, total, s) : s;
    }
    ggml_set_output(total);
    ggml_cgraph * gf = ggml_new_graph_custom(ctx, size, false);
    ggml_build_forward_expand(gf, total);
    ggml_backend_sched_reset(sched_);
    if (!ggml_backend_sched_alloc_graph(sched_, gf) || !compute(gf, false)) {
        fprintf(stderr, "%s: error: cannot compute the gradient norm\n", __func__);
        return false;
    }
    float v = 0;
    ggml_backend_tensor_get(total, &v, 0, sizeof(float));
    out = std::sqrt((double) v);
    return true;
}

bool Engine::opt_step(const Adam & a, float clip) {
    const int size = (int) (train_.size() * 4 + 16);
    ggml_init_params ip = {(size_t) size * 2 * ggml_tensor_overhead() + ggml_graph_overhead_custom(size, false), nullptr, true};
    ggml_context * ctx = ggml_init(ip);
    if (!ctx) return false;
    struct CtxGuard { ggml_context * c; ~CtxGuard() { ggml_free(c); } } ctx_guard{ctx};
    ggml_tensor * params = ggml_new_tensor_1d(ctx, GGML_TYPE_F32, 7);
    ggml_set_input(params);
    ggml_cgraph * gf = ggml_new_graph_custom(ctx, size, false);
    for (const Trainable & t : train_) {
        ggml_tensor * g = clip < 1.0f ? ggml_scale(ctx, t.grad, clip) : t.grad;
        ggml_build_forward_expand(gf, ggml_opt_step_adamw(ctx, t.param, g, t.m, t.v, params));
    }
    ggml_backend_sched_reset(sched_);
    if (!ggml_backend_sched_alloc_graph(sched_, gf)) {
        fprintf(stderr, "%s: error: cannot allocate the optimizer graph\n", __func__);
        return false;
    }
    // AdamW with bias correction: ggml's kernel takes 1/(1 − β^t) for both moments
    const float p[7] = {a.lr, a.beta1, a.beta2, a.eps, a.wd,
                        (float) (1.0 / (1.0 - std::pow((double) a.beta1, (double) a.iter))),
                        (float) (1.0 / (1.0 - std::pow((double) a.beta2, (double) a.iter)))};
    ggml_backend_tensor_set(params, p, 0, sizeof(p));
    if (!compute(gf, false)) return false;
    zero_grads();
    return true;
}

void Engine::zero_grads() {
    ggml_backend_buffer_clear(buf_grad_, 0);
}

bool Engine::get(ggml_tensor * t, std::vector<float> & out) const {
    if (t->type != GGML_TYPE_F32) return false;
    out.resize(ggml_nelements(t));
    ggml_backend_tensor_get(t, out.data(), 0, out.size() * sizeof(float));
    return true;
}

bool Engine::set(ggml_tensor * t, const std::vector<float> & in) {
    if (t->type != GGML_TYPE_F32 || (int64_t) in.size() != ggml_nelements(t)) return false;
    ggml_backend_tensor_set(t, in.data(), 0, in.size() * sizeof(float));
    return true;
}

} // namespace st
