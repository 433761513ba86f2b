// LoRA tensors: a fresh adapter (A like PEFT, B = 0), one read from llama.cpp's adapter
// GGUF, and the host copies cut to the true rank for writing.
#include <cmath>
#include <cstring>
#include <map>

#include "common.h"
#include "engine.h"

namespace st {

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

} // namespace st
