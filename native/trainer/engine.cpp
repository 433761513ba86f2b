#include "engine.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <map>

#include "common.h"
#include "ggml-alloc.h"

namespace st {

// --- set-up ------------------------------------------------------------------------------

Engine::~Engine() {
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

static bool load_backends(const std::string & dir) {
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

// Module sizes as ne of the weight: [n_in, n_out].
static void module_dims(const BaseModel & m, int mod, int64_t & n_in, int64_t & n_out) {
    const ggml_tensor * w = m.layers[0].lin[mod].w;
    n_in = w->ne[0];
    n_out = w->ne[1];
}

bool Engine::init_lora() {
    const LoraConfig & lc = opt_.lora;
    const int64_t n_layer = model_.hp.n_layer;
    int n_mod = 0;
    for (int mod = 0; mod < MOD_COUNT; mod++) n_mod += lc.modules[mod];
    if (n_mod == 0) {
        fprintf(stderr, "%s: error: no LoRA modules chosen\n", __func__);
        return false;
    }
    ggml_init_params ip = {/*.mem_size =*/ (2 * n_layer * n_mod + 1) * ggml_tensor_overhead(), nullptr, /*.no_alloc =*/ true};
    ctx_lora_ = ggml_init(ip);
    if (!ctx_lora_) {
        fprintf(stderr, "%s: error: ggml_init failed\n", __func__);
        return false;
    }
    lora_.resize(n_layer);
    for (int64_t il = 0; il < n_layer; il++) {
        for (int mod = 0; mod < MOD_COUNT; mod++) {
            if (!lc.modules[mod]) continue;
            int64_t n_in, n_out;
            module_dims(model_, mod, n_in, n_out);
            const std::string base = ggml_get_name(model_.layers[il].lin[mod].w);
            LoraPair & p = lora_[il][mod];
            p.a = ggml_new_tensor_2d(ctx_lora_, GGML_TYPE_F32, n_in, stored_rank());
            p.b = ggml_new_tensor_2d(ctx_lora_, GGML_TYPE_F32, stored_rank(), n_out);
            ggml_set_name(p.a, (base + ".lora_a").c_str());
            ggml_set_name(p.b, (base + ".lora_b").c_str());
            ggml_set_param(p.a);
            ggml_set_param(p.b);
            train_.push_back({ggml_get_name(p.a), p.a, nullptr, nullptr, nullptr});
            train_.push_back({ggml_get_name(p.b), p.b, nullptr, nullptr, nullptr});
        }
    }
    ggml_backend_buffer_type_t buft = gpu_ ? ggml_backend_get_default_buffer_type(gpu_) : ggml_backend_cpu_buffer_type();
    buf_lora_ = ggml_backend_alloc_ctx_tensors_from_buft(ctx_lora_, buft);
    if (!buf_lora_) {
        fprintf(stderr, "%s: error: cannot allocate the LoRA tensors\n", __func__);
        return false;
    }
    // A like PEFT (Kaiming-uniform, bound 1/sqrt(n_in)), B = 0: the adapter starts as a no-op.
    Rng rng(opt_.seed * 0x9e3779b97f4a7c15ULL + 12345);
    const int64_t r = lc.rank, rp = stored_rank();
    std::vector<float> host;
    for (int64_t il = 0; il < n_layer; il++) {
        for (int mod = 0; mod < MOD_COUNT; mod++) {
            LoraPair & p = lora_[il][mod];
            if (!p.a) continue;
            const int64_t n_in = p.a->ne[0], n_out = p.b->ne[1];
            const float bound_a = 1.0f / sqrtf((float) n_in);
            host.assign(ggml_nelements(p.a), 0.0f);
            for (int64_t k = 0; k < r; k++) {
                for (int64_t i = 0; i < n_in; i++) host[k * n_in + i] = (float) ((rng.uniform() * 2 - 1) * bound_a);
            }
            ggml_backend_tensor_set(p.a, host.data(), 0, host.size() * sizeof(float));
            host.assign(ggml_nelements(p.b), 0.0f);
            if (opt_.init_random_b) {
                // sized so that the adapter's change stays moderate whatever alpha / rank
                const float bound_b = 0.5f / (lora_scale() * sqrtf((float) r));
                for (int64_t o = 0; o < n_out; o++) {
                    for (int64_t k = 0; k < r; k++) host[o * rp + k] = (float) ((rng.uniform() * 2 - 1) * bound_b);
                }
            }
            ggml_backend_tensor_set(p.b, host.data(), 0, host.size() * sizeof(float));
        }
    }
    return true;
}

bool Engine::lora_host(const Trainable & t, std::vector<float> & out, int64_t ne[2]) const {
    std::vector<float> all;
    if (!get(t.param, all)) return false;
    const int64_t r = opt_.lora.rank, rp = stored_rank();
    const bool is_a = t.name.size() > 7 && t.name.compare(t.name.size() - 7, 7, ".lora_a") == 0;
    if (is_a) {
        ne[0] = t.param->ne[0];
        ne[1] = r;
        out.assign(all.begin(), all.begin() + ne[0] * r); // the first r rows of [n_in, rp]
    } else {
        ne[0] = r;
        ne[1] = t.param->ne[1];
        out.resize(ne[0] * ne[1]);
        for (int64_t o = 0; o < ne[1]; o++) {
            for (int64_t k = 0; k < r; k++) out[o * r + k] = all[o * rp + k];
        }
    }
    return true;
}

bool Engine::load_adapter(const std::string & path) {
    ggml_context * meta_ctx = nullptr;
    gguf_init_params gp = {/*.no_alloc =*/ false, /*.ctx =*/ &meta_ctx};
    gguf_context * g = gguf_init_from_file(path.c_str(), gp);
    if (!g) {
        fprintf(stderr, "%s: error: cannot read the adapter %s as a GGUF file\n", __func__, path.c_str());
        return false;
    }
    struct Guard { gguf_context * g; ggml_context * c; ~Guard() { gguf_free(g); if (c) ggml_free(c); } } guard{g, meta_ctx};
    auto str = [&](const char * key) -> std::string {
        const int64_t id = gguf_find_key(g, key);
        return id >= 0 && gguf_get_kv_type(g, id) == GGUF_TYPE_STRING ? gguf_get_val_str(g, id) : "";
    };
    if (str("general.type") != "adapter" || str("adapter.type") != "lora") {
        fprintf(stderr, "%s: error: %s is not a LoRA adapter (general.type = adapter, adapter.type = lora)\n", __func__, path.c_str());
        return false;
    }
    if (str("general.architecture") != model_.hp.arch) {
        fprintf(stderr, "%s: error: %s is an adapter for '%s' models, but the base model is '%s'\n",
                __func__, path.c_str(), str("general.architecture").c_str(), model_.hp.arch.c_str());
        return false;
    }
    const int64_t alpha_id = gguf_find_key(g, "adapter.lora.alpha");
    if (alpha_id < 0 || gguf_get_kv_type(g, alpha_id) != GGUF_TYPE_FLOAT32) {
        fprintf(stderr, "%s: error: %s lacks adapter.lora.alpha (f32)\n", __func__, path.c_str());
        return false;
    }

    // which modules, which rank: from the tensors
    const int64_t n_layer = model_.hp.n_layer;
    std::map<std::string, std::pair<int64_t, int>> by_base; // weight name -> (layer, module)
    for (int64_t il = 0; il < n_layer; il++) {
        for (int mod = 0; mod < MOD_COUNT; mod++) by_base[ggml_get_name(model_.layers[il].lin[mod].w)] = {il, mod};
    }
    LoraConfig lc;
    for (bool & b : lc.modules) b = false;
    lc.rank = 0;
    lc.alpha = gguf_get_val_f32(g, alpha_id);
    std::vector<std::array<std::pair<ggml_tensor *, ggml_tensor *>, MOD_COUNT>> found(n_layer);
    for (int64_t ti = 0; ti < gguf_get_n_tensors(g); ti++) {
        ggml_tensor * t = ggml_get_tensor(meta_ctx, gguf_get_tensor_name(g, ti));
        std::string name = ggml_get_name(t);
        const bool is_a = name.size() > 7 && name.compare(name.size() - 7, 7, ".lora_a") == 0;
        const bool is_b = name.size() > 7 && name.compare(name.size() - 7, 7, ".lora_b") == 0;
        auto it = by_base.find(name.substr(0, name.size() - 7));
        if ((!is_a && !is_b) || it == by_base.end()) {
            fprintf(stderr, "%s: error: %s holds tensor '%s', which is not a LoRA tensor of a module the trainer adapts\n",
                    __func__, path.c_str(), name.c_str());
            return false;
        }
        if (t->type != GGML_TYPE_F32 && t->type != GGML_TYPE_F16) {
            fprintf(stderr, "%s: error: %s: tensor %s has type %s; LoRA tensors must be F32 or F16\n",
                    __func__, path.c_str(), name.c_str(), ggml_type_name(t->type));
            return false;
        }
        auto & slot = found[it->second.first][it->second.second];
        (is_a ? slot.first : slot.second) = t;
        lc.modules[it->second.second] = true;
    }
    for (int64_t il = 0; il < n_layer; il++) {
        for (int mod = 0; mod < MOD_COUNT; mod++) {
            if (!lc.modules[mod]) continue;
            auto & slot = found[il][mod];
            const std::string base = ggml_get_name(model_.layers[il].lin[mod].w);
            if (!slot.first || !slot.second) {
                fprintf(stderr, "%s: error: %s lacks %s.lora_%s (every layer must adapt the same modules)\n",
                        __func__, path.c_str(), base.c_str(), slot.first ? "b" : "a");
                return false;
            }
            int64_t n_in, n_out;
            module_dims(model_, mod, n_in, n_out);
            const int64_t r = slot.first->ne[1];
            if (lc.rank == 0) lc.rank = r;
            if (slot.first->ne[0] != n_in || r != lc.rank || slot.second->ne[0] != lc.rank || slot.second->ne[1] != n_out ||
                ggml_n_dims(slot.first) > 2 || ggml_n_dims(slot.second) > 2) {
                fprintf(stderr, "%s: error: %s: %s.lora_a/b have shapes [%lld, %lld] and [%lld, %lld]; expected [%lld, r] and [r, %lld] with one rank\n",
                        __func__, path.c_str(), base.c_str(), (long long) slot.first->ne[0], (long long) slot.first->ne[1],
                        (long long) slot.second->ne[0], (long long) slot.second->ne[1], (long long) n_in, (long long) n_out);
                return false;
            }
        }
    }
    if (lc.rank == 0) {
        fprintf(stderr, "%s: error: %s holds no LoRA tensors\n", __func__, path.c_str());
        return false;
    }
    opt_.lora = lc;
    if (!init_lora()) return false;
    std::vector<float> host;
    for (int64_t il = 0; il < n_layer; il++) {
        for (int mod = 0; mod < MOD_COUNT; mod++) {
            if (!lc.modules[mod]) continue;
            ggml_tensor * src[2] = {found[il][mod].first, found[il][mod].second};
            ggml_tensor * dst[2] = {lora_[il][mod].a, lora_[il][mod].b};
            for (int k = 0; k < 2; k++) {
                const int64_t n = ggml_nelements(src[k]);
                host.resize(n);
                if (src[k]->type == GGML_TYPE_F32) memcpy(host.data(), src[k]->data, n * sizeof(float));
                else ggml_get_type_traits(GGML_TYPE_F16)->to_float(src[k]->data, host.data(), n);
                // into the stored layout: rank rows padded with zeros
                std::vector<float> padded(ggml_nelements(dst[k]), 0.0f);
                const int64_t r = lc.rank, rp = stored_rank();
                if (k == 0) {
                    std::copy(host.begin(), host.end(), padded.begin());
                } else {
                    for (int64_t o = 0; o < src[k]->ne[1]; o++) {
                        for (int64_t j = 0; j < r; j++) padded[o * rp + j] = host[o * r + j];
                    }
                }
                ggml_backend_tensor_set(dst[k], padded.data(), 0, padded.size() * sizeof(float));
            }
        }
    }
    return true;
}

// --- the forward graph --------------------------------------------------------------------

// y = W x (+ s · B A x) (+ bias), the LoRA term before the bias as llama.cpp adds it.
ggml_tensor * Engine::linear(ggml_context * ctx, int il, int mod, ggml_tensor * x) {
    const Linear & lin = model_.layers[il].lin[mod];
    ggml_tensor * y = ggml_mul_mat(ctx, lin.w, x);
    if (!lora_.empty() && lora_[il][mod].a) {
        const LoraPair & p = lora_[il][mod];
        ggml_tensor * ab = ggml_mul_mat(ctx, p.b, ggml_mul_mat(ctx, p.a, x));
        y = ggml_add(ctx, y, ggml_scale(ctx, ab, lora_scale()));
    }
    if (lin.b) y = ggml_add(ctx, y, lin.b);
    return y;
}

// Hidden states after the final norm, [n_embd, n_tokens].
ggml_tensor * Engine::forward(ggml_context * ctx, ggml_tensor * tokens, ggml_tensor * pos, ggml_tensor * mask) {
    const Hparams & hp = model_.hp;
    const int64_t T = tokens->ne[0];
    const int64_t hd = hp.head_dim;

    ggml_tensor * x = ggml_get_rows(ctx, model_.tok_embd, tokens);
    for (int il = 0; il < hp.n_layer; il++) {
        const Layer & L = model_.layers[il];

        // attention
        ggml_tensor * cur = ggml_mul(ctx, ggml_rms_norm(ctx, x, hp.rms_eps), L.attn_norm);
        ggml_tensor * q = ggml_reshape_3d(ctx, linear(ctx, il, MOD_Q, cur), hd, hp.n_head, T);
        ggml_tensor * k = ggml_reshape_3d(ctx, linear(ctx, il, MOD_K, cur), hd, hp.n_head_kv, T);
        ggml_tensor * v = ggml_reshape_3d(ctx, linear(ctx, il, MOD_V, cur), hd, hp.n_head_kv, T);
        if (L.q_norm) q = ggml_mul(ctx, ggml_rms_norm(ctx, q, hp.rms_eps), L.q_norm);
        if (L.k_norm) k = ggml_mul(ctx, ggml_rms_norm(ctx, k, hp.rms_eps), L.k_norm);
        q = ggml_rope_ext(ctx, q, pos, model_.rope_freqs, (int) hp.n_rot, hp.rope_mode, (int) hp.n_ctx_train,
                          hp.rope_freq_base, hp.rope_freq_scale, 0.0f, 1.0f, 32.0f, 1.0f);
        k = ggml_rope_ext(ctx, k, pos, model_.rope_freqs, (int) hp.n_rot, hp.rope_mode, (int) hp.n_ctx_train,
                          hp.rope_freq_base, hp.rope_freq_scale, 0.0f, 1.0f, 32.0f, 1.0f);

        ggml_tensor * qp = ggml_cont(ctx, ggml_permute(ctx, q, 0, 2, 1, 3)); // [hd, T, n_head], contiguous for the fast kernels
        ggml_tensor * kp = ggml_permute(ctx, k, 0, 2, 1, 3);              // [hd, T, n_head_kv]
        ggml_tensor * kq = ggml_mul_mat(ctx, kp, qp);                      // [T_k, T_q, n_head]; K heads shared by groups of Q heads
        kq = ggml_soft_max_ext(ctx, kq, mask, hp.attn_scale, 0.0f);
        ggml_tensor * vt = ggml_cont(ctx, ggml_permute(ctx, v, 1, 2, 0, 3)); // [T, hd, n_head_kv]
        ggml_tensor * kqv = ggml_mul_mat(ctx, vt, kq);                     // [hd, T_q, n_head]
        cur = ggml_cont(ctx, ggml_permute(ctx, kqv, 0, 2, 1, 3));          // [hd, n_head, T]
        cur = ggml_reshape_2d(ctx, cur, hd * hp.n_head, T);
        x = ggml_add(ctx, x, linear(ctx, il, MOD_O, cur));

        // feed-forward (SwiGLU)
        cur = ggml_mul(ctx, ggml_rms_norm(ctx, x, hp.rms_eps), L.ffn_norm);
        ggml_tensor * h = ggml_swiglu_split(ctx, linear(ctx, il, MOD_GATE, cur), linear(ctx, il, MOD_UP, cur));
        x = ggml_add(ctx, x, linear(ctx, il, MOD_DOWN, h));
    }
    return ggml_mul(ctx, ggml_rms_norm(ctx, x, hp.rms_eps), model_.output_norm);
}

int Engine::graph_size(size_t n_groups) const {
    return (int) (model_.hp.n_layer * 640 + n_groups * 96 + 4096);
}

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
        return transposed.count(t) || (t->op == GGML_OP_TRANSPOSE && t->src[0]->type == GGML_TYPE_F32 && ggml_is_contiguous(t->src[0]));
    };
    auto transpose_of = [&](ggml_tensor * t) {
        ggml_tensor *& tt = transposed[t];
        if (!tt) {
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
            const bool frozen = a->buffer == model_.buf && !(a->flags & GGML_TENSOR_FLAG_PARAM) && ggml_n_dims(a) == 2 &&
                                ggml_n_dims(node) == 2 && free_transpose(b) && !transposed.count(a);
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
    return true;
}

// Rows are padded to a multiple of this many tokens: the backward pass contracts over the
// tokens, and the CPU's fast matrix kernels need that dimension in whole vector blocks.
static const int64_t ROW_PAD = 16;

Batch make_batch(const Dataset & data, const Row & row) {
    Batch b;
    const int64_t T = (row.tokens + ROW_PAD - 1) / ROW_PAD * ROW_PAD;
    b.n_tokens = T;
    b.real_tokens = row.tokens;
    b.tokens.reserve(T);
    b.pos.reserve(T);
    b.mask.assign((size_t) T * T, -INFINITY);

    // lays out one sequence; returns its offset in the row
    auto place = [&](const Sequence & s) {
        const int64_t off = (int64_t) b.tokens.size();
        const int64_t n = (int64_t) s.tokens.size();
        for (int64_t j = 0; j < n; j++) {
            b.tokens.push_back(s.tokens[j]);
            b.pos.push_back((int32_t) j);
            float * mrow = b.mask.data() + (size_t) (off + j) * T;  // query off+j
            for (int64_t k = 0; k <= j; k++) mrow[off + k] = 0.0f;
        }
        return off;
    };
    // appends a term: every weighted prediction of the given sequences, grouped by weight
    struct Pick { int32_t row; int32_t label; float w; };
    auto add_term = [&](std::vector<Pick> picks) {
        std::stable_sort(picks.begin(), picks.end(), [](const Pick & x, const Pick & y) { return x.w < y.w; });
        Batch::Term term;
        for (size_t i = 0; i < picks.size(); i++) {
            if (i == 0 || picks[i].w != picks[i - 1].w) term.groups.push_back({(int64_t) b.rows.size(), 0, picks[i].w});
            term.groups.back().count++;
            term.weight_sum += picks[i].w;
            b.rows.push_back(picks[i].row);
            b.labels.push_back(picks[i].label);
        }
        b.terms.push_back(term);
        return (int) b.terms.size() - 1;
    };
    auto picks_of = [](const Sequence & s, const std::vector<float> & w, int64_t off, std::vector<Pick> & out) {
        for (size_t j = 1; j < s.tokens.size(); j++) {
            if (w[j] > 0) out.push_back({(int32_t) (off + (int64_t) j - 1), s.tokens[j], w[j]});
        }
    };

    if (data.task == Task::SFT) {
        std::vector<Pick> picks;
        for (int64_t idx : row.items) {
            const Sequence & s = data.items[idx].a;
            picks_of(s, s.weights, place(s), picks);
        }
        add_term(picks);
    } else {
        for (int64_t idx : row.items) {
            const Item & it = data.items[idx];
            const int64_t off_c = place(it.a);
            const int64_t off_r = place(it.b);
            std::vector<Pick> pc, pr, ps;
            picks_of(it.a, it.a.weights, off_c, pc);
            picks_of(it.b, it.b.weights, off_r, pr);
            Batch::Pair p;
            p.item = idx;
            p.chosen = add_term(pc);
            p.rejected = add_term(pr);
            if (it.a.sft_weights == it.a.weights) {
                p.sft = p.chosen;
            } else {
                picks_of(it.a, it.a.sft_weights, off_c, ps);
                p.sft = add_term(ps);
            }
            b.pairs.push_back(p);
        }
    }
    // padding: token 0 at position 0, seeing only itself, never scored
    for (int64_t i = (int64_t) b.tokens.size(); i < T; i++) {
        b.tokens.push_back(0);
        b.pos.push_back(0);
        b.mask[(size_t) i * T + i] = 0.0f;
    }
    b.loss_tokens = (int64_t) b.rows.size();
    return b;
}

bool Engine::eval(const Batch & batch, const LossSpec & spec, bool backward, BatchResult & out) {
    const Hparams & hp = model_.hp;
    const int64_t T = batch.n_tokens;
    const int64_t N = (int64_t) batch.rows.size();
    if (N == 0) {
        out.loss = 0;
        out.term_nll.assign(batch.terms.size(), 0.0);
        return true;
    }
    size_t n_groups = 0;
    for (const Batch::Term & t : batch.terms) n_groups += t.groups.size();
    const int size = graph_size(n_groups);

    // the graph's metadata lives in a buffer kept across batches (no fresh pages each time);
    // the rewrite of the backward pass makes a second graph, up to twice as large
    if (!ensure_sched(4 * size)) return false;
    ctx_mem_.resize((size_t) size * 5 * ggml_tensor_overhead() + ggml_graph_overhead_custom(size, true) +
                    ggml_graph_overhead_custom(2 * size, false));
    ggml_init_params ip = {
        /*.mem_size   =*/ ctx_mem_.size(),
        /*.mem_buffer =*/ ctx_mem_.data(),
        /*.no_alloc   =*/ true,
    };
    ggml_context * ctx = ggml_init(ip);
    if (!ctx) {
        fprintf(stderr, "%s: error: ggml_init failed\n", __func__);
        return false;
    }
    struct CtxGuard { ggml_context * c; ~CtxGuard() { ggml_free(c); } } ctx_guard{ctx};

    ggml_tensor * tokens = ggml_new_tensor_1d(ctx, GGML_TYPE_I32, T);
    ggml_tensor * pos    = ggml_new_tensor_1d(ctx, GGML_TYPE_I32, T);
    ggml_tensor * mask   = ggml_new_tensor_2d(ctx, GGML_TYPE_F32, T, T);
    ggml_tensor * rows   = ggml_new_tensor_1d(ctx, GGML_TYPE_I32, N);
    ggml_tensor * labels = ggml_new_tensor_2d(ctx, GGML_TYPE_F32, hp.n_vocab, N);
    for (ggml_tensor * t : {tokens, pos, mask, rows, labels}) ggml_set_input(t);

    // the hidden states of the loss rows only: logits are computed where a token is scored
    ggml_tensor * h = ggml_get_rows(ctx, forward(ctx, tokens, pos, mask), rows); // [n_embd, N]

    // Σ weight · NLL per term. Rows of a group share one weight, so the masking is a
    // selection of rows and ggml's cross-entropy gradient stays exact (a weight folded
    // into the labels would not be: its backward assumes label rows that sum to 1).
    std::vector<ggml_tensor *> nll(batch.terms.size(), nullptr);
    for (size_t ti = 0; ti < batch.terms.size(); ti++) {
        for (const Batch::Group & g : batch.terms[ti].groups) {
            ggml_tensor * hg = ggml_view_2d(ctx, h, h->ne[0], g.count, h->nb[1], g.first * h->nb[1]);
            ggml_tensor * lg = ggml_view_2d(ctx, labels, labels->ne[0], g.count, labels->nb[1], g.first * labels->nb[1]);
            ggml_tensor * logits = ggml_mul_mat(ctx, model_.output, hg);
            ggml_tensor * ce = ggml_scale(ctx, ggml_cross_entropy_loss(ctx, logits, lg), (float) (g.weight * g.count));
            nll[ti] = nll[ti] ? ggml_add(ctx, nll[ti], ce) : ce;
        }
        if (nll[ti]) ggml_set_output(nll[ti]);
    }

    ggml_tensor * loss = nullptr;
    auto add = [&](ggml_tensor * t) { loss = loss ? ggml_add(ctx, loss, t) : t; };
    if (spec.task == Task::SFT) {
        for (ggml_tensor * t : nll) if (t) add(t);
    } else {
        // DPO, one flat place for the variants. With d = (lp_c − lp_r) − (ref_c − ref_r):
        //   sigmoid (Rafailov et al.):  −log σ(β d) = softplus(−β d)
        //   ipo (Azar et al.):          (d − 1/(2β))²
        //   hinge (SLiC):               max(0, 1 − β d)
        // plus sft_alpha · the chosen completion's mean NLL (the SFT term).
        // Here lp = −NLL, so lp_c − lp_r = nll_r − nll_c; refs enter as constants.
        for (const Batch::Pair & p : batch.pairs) {
            ggml_tensor * nc = nll[p.chosen];
            ggml_tensor * nr = nll[p.rejected];
            if (!nc || !nr) {
                fprintf(stderr, "%s: error: pair %lld has no weighted tokens in its chosen or rejected completion\n", __func__, (long long) p.item);
                return false;
            }
            const double ref_margin = (*spec.ref_chosen)[p.item] - (*spec.ref_rejected)[p.item];
            ggml_tensor * margin = ggml_sub(ctx, nr, nc); // lp_c − lp_r
            const float beta = spec.beta;
            ggml_tensor * term = nullptr;
            switch (spec.dpo_loss) {
                case DpoLoss::SIGMOID:
                    term = ggml_softplus(ctx, ggml_scale_bias(ctx, margin, -beta, (float) (beta * ref_margin)));
                    break;
                case DpoLoss::IPO:
                    term = ggml_sqr(ctx, ggml_scale_bias(ctx, margin, 1.0f, (float) (-ref_margin - 1.0 / (2.0 * beta))));
                    break;
                case DpoLoss::HINGE:
                    term = ggml_relu(ctx, ggml_scale_bias(ctx, margin, -beta, (float) (1.0 + beta * ref_margin)));
                    break;
            }
            add(term);
            if (spec.sft_alpha > 0 && nll[p.sft]) {
                add(ggml_scale(ctx, nll[p.sft], (float) (spec.sft_alpha / batch.terms[p.sft].weight_sum)));
            }
        }
    }
    loss = ggml_scale(ctx, loss, (float) spec.scale);
    ggml_set_output(loss);

    ggml_cgraph * gf = ggml_new_graph_custom(ctx, size, backward);
    for (ggml_tensor * t : nll) if (t) ggml_build_forward_expand(gf, t); // metrics read every term
    ggml_build_forward_expand(gf, loss);
    ggml_tensor * loss_grad = nullptr;
    if (backward) {
        ggml_set_loss(loss);
        // gradients of the trainable tensors accumulate into their own tensors across batches
        std::map<const ggml_tensor *, ggml_tensor *> acc;
        for (const Trainable & t : train_) acc[t.param] = t.grad;
        std::vector<ggml_tensor *> grad_accs(ggml_graph_n_nodes(gf), nullptr);
        for (int i = 0; i < ggml_graph_n_nodes(gf); i++) {
            auto it = acc.find(ggml_graph_node(gf, i));
            if (it != acc.end()) grad_accs[i] = it->second;
        }
        ggml_build_backward_expand(ctx, gf, grad_accs.data());
        loss_grad = ggml_graph_get_grad_acc(gf, loss);
        ggml_set_input(loss_grad);
        if (opt_.out_prod_as_mul_mat) gf = rewrite_out_prods(ctx, gf, 2 * size);
    }

    ggml_backend_sched_reset(sched_);
    if (!ggml_backend_sched_alloc_graph(sched_, gf)) {
        fprintf(stderr, "%s: error: cannot allocate the compute graph (%lld tokens; out of memory?)\n", __func__, (long long) T);
        return false;
    }
    ggml_backend_tensor_set(tokens, batch.tokens.data(), 0, T * sizeof(int32_t));
    ggml_backend_tensor_set(pos, batch.pos.data(), 0, T * sizeof(int32_t));
    ggml_backend_tensor_set(mask, batch.mask.data(), 0, (size_t) T * T * sizeof(float));
    ggml_backend_tensor_set(rows, batch.rows.data(), 0, N * sizeof(int32_t));
    {
        // one-hot rows, written in place: no host copy of n_vocab × rows floats
        ggml_backend_tensor_memset(labels, 0, 0, ggml_nbytes(labels));
        const float one = 1.0f;
        for (int64_t i = 0; i < N; i++) ggml_backend_tensor_set(labels, &one, ((size_t) i * hp.n_vocab + batch.labels[i]) * sizeof(float), sizeof(float));
    }
    if (loss_grad) {
        const float one = 1.0f;
        ggml_backend_tensor_set(loss_grad, &one, 0, sizeof(float));
    }
    if (!compute(gf, true)) return false;

    float v = 0;
    ggml_backend_tensor_get(loss, &v, 0, sizeof(float));
    out.loss = v;
    out.term_nll.assign(batch.terms.size(), 0.0);
    for (size_t ti = 0; ti < nll.size(); ti++) {
        if (!nll[ti]) continue;
        ggml_backend_tensor_get(nll[ti], &v, 0, sizeof(float));
        out.term_nll[ti] = v;
    }
    return true;
}

bool Engine::logits(const std::vector<int32_t> & toks, std::vector<float> & out) {
    const Hparams & hp = model_.hp;
    const int64_t T = (int64_t) toks.size();
    for (int32_t t : toks) {
        if (t < 0 || t >= hp.n_vocab) {
            fprintf(stderr, "%s: error: token %d is not in the vocabulary (%lld tokens)\n", __func__, t, (long long) hp.n_vocab);
            return false;
        }
    }
    const int size = graph_size(1);
    ggml_init_params ip = {(size_t) size * 3 * ggml_tensor_overhead() + ggml_graph_overhead_custom(size, false), nullptr, true};
    ggml_context * ctx = ggml_init(ip);
    if (!ctx) return false;
    struct CtxGuard { ggml_context * c; ~CtxGuard() { ggml_free(c); } } ctx_guard{ctx};
    ggml_tensor * tokens = ggml_new_tensor_1d(ctx, GGML_TYPE_I32, T);
    ggml_tensor * pos    = ggml_new_tensor_1d(ctx, GGML_TYPE_I32, T);
    ggml_tensor * mask   = ggml_new_tensor_2d(ctx, GGML_TYPE_F32, T, T);
    for (ggml_tensor * t : {tokens, pos, mask}) ggml_set_input(t);
    ggml_tensor * logits = ggml_mul_mat(ctx, model_.output, forward(ctx, tokens, pos, mask));
    ggml_set_output(logits);
    ggml_cgraph * gf = ggml_new_graph_custom(ctx, size, false);
    ggml_build_forward_expand(gf, logits);
    ggml_backend_sched_reset(sched_);
    if (!ggml_backend_sched_alloc_graph(sched_, gf)) {
        fprintf(stderr, "%s: error: cannot allocate the compute graph\n", __func__);
        return false;
    }
    std::vector<int32_t> p(T);
    std::vector<float> m((size_t) T * T, -INFINITY);
    for (int64_t i = 0; i < T; i++) {
        p[i] = (int32_t) i;
        for (int64_t k = 0; k <= i; k++) m[(size_t) i * T + k] = 0.0f;
    }
    ggml_backend_tensor_set(tokens, toks.data(), 0, T * sizeof(int32_t));
    ggml_backend_tensor_set(pos, p.data(), 0, T * sizeof(int32_t));
    ggml_backend_tensor_set(mask, m.data(), 0, m.size() * sizeof(float));
    if (!compute(gf, false)) return false;
    out.resize((size_t) hp.n_vocab * T);
    ggml_backend_tensor_get(logits, out.data(), 0, out.size() * sizeof(float));
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
