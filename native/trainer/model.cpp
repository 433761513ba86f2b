#include "model.h"

#include <cmath>
#include <cstring>
#include <map>
#include <set>

#include "ggml-alloc.h"

namespace st {

const char * const MODULE_NAMES[MOD_COUNT]   = {"q", "k", "v", "o", "gate", "up", "down"};
const char * const MODULE_TENSORS[MOD_COUNT] = {"attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down"};

BaseModel::~BaseModel() {
    if (buf) ggml_backend_buffer_free(buf);
    if (ctx) ggml_free(ctx);
    if (meta) gguf_free(meta);
}

bool frozen_type_supported(ggml_type type) {
    switch (type) {
        case GGML_TYPE_F32: case GGML_TYPE_F16:
        case GGML_TYPE_Q4_0: case GGML_TYPE_Q4_1: case GGML_TYPE_Q5_0: case GGML_TYPE_Q5_1: case GGML_TYPE_Q8_0:
        case GGML_TYPE_Q2_K: case GGML_TYPE_Q3_K: case GGML_TYPE_Q4_K: case GGML_TYPE_Q5_K: case GGML_TYPE_Q6_K:
        case GGML_TYPE_IQ4_NL: case GGML_TYPE_IQ4_XS:
            return true;
        default:
            return false;
    }
}

// --- metadata readers: integers may be stored as any integer type ----------------------

static bool kv_int(const gguf_context * g, const std::string & key, int64_t & out) {
    const int64_t id = gguf_find_key(g, key.c_str());
    if (id < 0) return false;
    switch (gguf_get_kv_type(g, id)) {
        case GGUF_TYPE_UINT8:  out = gguf_get_val_u8(g, id); return true;
        case GGUF_TYPE_INT8:   out = gguf_get_val_i8(g, id); return true;
        case GGUF_TYPE_UINT16: out = gguf_get_val_u16(g, id); return true;
        case GGUF_TYPE_INT16:  out = gguf_get_val_i16(g, id); return true;
        case GGUF_TYPE_UINT32: out = gguf_get_val_u32(g, id); return true;
        case GGUF_TYPE_INT32:  out = gguf_get_val_i32(g, id); return true;
        case GGUF_TYPE_UINT64: out = (int64_t) gguf_get_val_u64(g, id); return true;
        case GGUF_TYPE_INT64:  out = gguf_get_val_i64(g, id); return true;
        default: out = -1; return true; // present with another type: callers report it
    }
}

static bool kv_float(const gguf_context * g, const std::string & key, double & out) {
    const int64_t id = gguf_find_key(g, key.c_str());
    if (id < 0) return false;
    switch (gguf_get_kv_type(g, id)) {
        case GGUF_TYPE_FLOAT32: out = gguf_get_val_f32(g, id); return true;
        case GGUF_TYPE_FLOAT64: out = gguf_get_val_f64(g, id); return true;
        default: out = NAN; return true;
    }
}

static std::string kv_str(const gguf_context * g, const std::string & key) {
    const int64_t id = gguf_find_key(g, key.c_str());
    if (id < 0 || gguf_get_kv_type(g, id) != GGUF_TYPE_STRING) return "";
    return gguf_get_val_str(g, id);
}

static bool read_hparams(const std::string & path, const gguf_context * g, Hparams & hp) {
    hp.arch = kv_str(g, "general.architecture");
    hp.name = kv_str(g, "general.name");
    if (hp.arch.empty()) {
        fprintf(stderr, "%s: error: %s has no general.architecture; it is not a model file\n", __func__, path.c_str());
        return false;
    }
    if (kv_str(g, "general.type") == "adapter") {
        fprintf(stderr, "%s: error: %s is a LoRA adapter, not a base model\n", __func__, path.c_str());
        return false;
    }
    if (hp.arch != "llama" && hp.arch != "qwen2" && hp.arch != "qwen3") {
        fprintf(stderr, "%s: error: %s is a '%s' model; the trainer supports llama, qwen2 and qwen3\n",
                __func__, path.c_str(), hp.arch.c_str());
        return false;
    }
    const std::string a = hp.arch + ".";

    auto need_int = [&](const char * key, int64_t & out) {
        if (!kv_int(g, a + key, out)) {
            fprintf(stderr, "%s: error: %s lacks %s%s\n", __func__, path.c_str(), a.c_str(), key);
            return false;
        }
        if (out <= 0) {
            fprintf(stderr, "%s: error: %s: %s%s must be a positive integer (an array per layer is not supported)\n",
                    __func__, path.c_str(), a.c_str(), key);
            return false;
        }
        return true;
    };
    auto opt_int = [&](const char * key, int64_t & out, int64_t def) {
        if (!kv_int(g, a + key, out)) { out = def; return true; }
        if (out <= 0) {
            fprintf(stderr, "%s: error: %s: %s%s must be a positive integer (an array per layer is not supported)\n",
                    __func__, path.c_str(), a.c_str(), key);
            return false;
        }
        return true;
    };

    if (!need_int("embedding_length", hp.n_embd) || !need_int("block_count", hp.n_layer) ||
        !need_int("feed_forward_length", hp.n_ff) || !need_int("attention.head_count", hp.n_head)) {
        return false;
    }
    if (!opt_int("attention.head_count_kv", hp.n_head_kv, hp.n_head)) return false;
    if (!opt_int("context_length", hp.n_ctx_train, 4096)) return false;
    if (hp.n_head % hp.n_head_kv != 0) {
        fprintf(stderr, "%s: error: %s: %lld heads are not a multiple of %lld key/value heads\n",
                __func__, path.c_str(), (long long) hp.n_head, (long long) hp.n_head_kv);
        return false;
    }
    int64_t key_len = 0, value_len = 0;
    if (!opt_int("attention.key_length", key_len, hp.n_embd / hp.n_head)) return false;
    if (!opt_int("attention.value_length", value_len, key_len)) return false;
    if (key_len != value_len) {
        fprintf(stderr, "%s: error: %s: key size %lld differs from value size %lld; not supported\n",
                __func__, path.c_str(), (long long) key_len, (long long) value_len);
        return false;
    }
    hp.head_dim = key_len;
    if (hp.head_dim % 2 != 0) {
        fprintf(stderr, "%s: error: %s: head size %lld is odd; rotary embeddings need an even size\n", __func__, path.c_str(), (long long) hp.head_dim);
        return false;
    }
    if (!opt_int("rope.dimension_count", hp.n_rot, hp.head_dim)) return false;
    if (hp.n_rot != hp.head_dim) {
        fprintf(stderr, "%s: error: %s: partial rotary embeddings (%lld of %lld dimensions) are not supported\n",
                __func__, path.c_str(), (long long) hp.n_rot, (long long) hp.head_dim);
        return false;
    }

    double v = 0;
    if (!kv_float(g, a + "attention.layer_norm_rms_epsilon", v) || !(v > 0 && v < 1)) {
        fprintf(stderr, "%s: error: %s lacks a valid %sattention.layer_norm_rms_epsilon\n", __func__, path.c_str(), a.c_str());
        return false;
    }
    hp.rms_eps = (float) v;
    if (kv_float(g, a + "rope.freq_base", v)) {
        if (!(v > 0)) {
            fprintf(stderr, "%s: error: %s: %srope.freq_base must be positive\n", __func__, path.c_str(), a.c_str());
            return false;
        }
        hp.rope_freq_base = (float) v;
    }
    const std::string scaling = kv_str(g, a + "rope.scaling.type");
    if (!scaling.empty() && scaling != "none" && scaling != "linear") {
        fprintf(stderr, "%s: error: %s uses '%s' rope scaling; the trainer supports none and linear\n",
                __func__, path.c_str(), scaling.c_str());
        return false;
    }
    if (scaling == "linear" && kv_float(g, a + "rope.scaling.factor", v) && v > 0) hp.rope_freq_scale = (float) (1.0 / v);
    if (kv_float(g, a + "rope.scale_linear", v) && v > 0) hp.rope_freq_scale = (float) (1.0 / v);

    hp.attn_scale = 1.0f / sqrtf((float) hp.head_dim);
    if (hp.arch == "llama" && kv_float(g, a + "attention.scale", v) && v != 0) hp.attn_scale = (float) v;

    int64_t experts = 0;
    if (kv_int(g, a + "expert_count", experts) && experts > 0) {
        fprintf(stderr, "%s: error: %s is a mixture-of-experts model (%lld experts); the trainer supports dense models only\n",
                __func__, path.c_str(), (long long) experts);
        return false;
    }
    hp.rope_mode = hp.arch == "llama" ? GGML_ROPE_TYPE_NORMAL : GGML_ROPE_TYPE_NEOX;
    return true;
}

// --- tensors ---------------------------------------------------------------------------

namespace {

struct Wanted {
    std::string name;
    std::vector<int64_t> ne;
    bool required;
    bool is_vector; // norms and biases: stored as F32 by every converter
    ggml_tensor ** slot;
};

} // namespace

bool load_base_model(const std::string & path, bool to_f32, ggml_backend_buffer_type_t buft, BaseModel & m) {
    m.path = path;
    m.f32 = to_f32;

    ggml_context * meta_ctx = nullptr;
    gguf_init_params gp = {/*.no_alloc =*/ true, /*.ctx =*/ &meta_ctx};
    m.meta = gguf_init_from_file(path.c_str(), gp);
    if (!m.meta) {
        fprintf(stderr, "%s: error: cannot read %s as a GGUF file (missing, not GGUF, or damaged)\n", __func__, path.c_str());
        return false;
    }
    struct MetaCtxGuard { ggml_context * c; ~MetaCtxGuard() { if (c) ggml_free(c); } } meta_guard{meta_ctx};

    Hparams & hp = m.hp;
    if (!read_hparams(path, m.meta, hp)) return false;

    // vocabulary size from the embedding matrix
    ggml_tensor * embd_meta = ggml_get_tensor(meta_ctx, "token_embd.weight");
    if (!embd_meta) {
        fprintf(stderr, "%s: error: %s has no token_embd.weight tensor\n", __func__, path.c_str());
        return false;
    }
    hp.n_vocab = embd_meta->ne[1];
    hp.tied_output = ggml_get_tensor(meta_ctx, "output.weight") == nullptr;

    const int64_t n_q  = hp.n_head * hp.head_dim;
    const int64_t n_kv = hp.n_head_kv * hp.head_dim;
    const bool qk_norm = hp.arch == "qwen3";

    m.layers.resize(hp.n_layer);
    std::vector<Wanted> wanted;
    wanted.push_back({"token_embd.weight", {hp.n_embd, hp.n_vocab}, true, false, &m.tok_embd});
    wanted.push_back({"output_norm.weight", {hp.n_embd}, true, true, &m.output_norm});
    if (!hp.tied_output) wanted.push_back({"output.weight", {hp.n_embd, hp.n_vocab}, true, false, &m.output});
    if (hp.arch == "llama") wanted.push_back({"rope_freqs.weight", {hp.head_dim / 2}, false, true, &m.rope_freqs});
    for (int64_t il = 0; il < hp.n_layer; il++) {
        Layer & L = m.layers[il];
        const std::string b = "blk." + std::to_string(il) + ".";
        const int64_t n_in[MOD_COUNT]  = {hp.n_embd, hp.n_embd, hp.n_embd, n_q, hp.n_embd, hp.n_embd, hp.n_ff};
        const int64_t n_out[MOD_COUNT] = {n_q, n_kv, n_kv, hp.n_embd, hp.n_ff, hp.n_ff, hp.n_embd};
        wanted.push_back({b + "attn_norm.weight", {hp.n_embd}, true, true, &L.attn_norm});
        wanted.push_back({b + "ffn_norm.weight", {hp.n_embd}, true, true, &L.ffn_norm});
        if (qk_norm) {
            wanted.push_back({b + "attn_q_norm.weight", {hp.head_dim}, true, true, &L.q_norm});
            wanted.push_back({b + "attn_k_norm.weight", {hp.head_dim}, true, true, &L.k_norm});
        }
        for (int mod = 0; mod < MOD_COUNT; mod++) {
            const std::string t = b + MODULE_TENSORS[mod];
            wanted.push_back({t + ".weight", {n_in[mod], n_out[mod]}, true, false, &L.lin[mod].w});
            // qwen2 always has Q/K/V biases; llama files may carry any of them
            const bool bias_required = hp.arch == "qwen2" && mod <= MOD_V;
            wanted.push_back({t + ".bias", {n_out[mod]}, bias_required, true, &L.lin[mod].b});
        }
    }

    // every tensor in the file must be one the graph uses: anything else means an
    // architecture variant whose math the trainer would get wrong
    {
        std::set<std::string> known;
        for (const Wanted & w : wanted) known.insert(w.name);
        const int64_t n = gguf_get_n_tensors(m.meta);
        for (int64_t i = 0; i < n; i++) {
            const char * name = gguf_get_tensor_name(m.meta, i);
            if (!known.count(name)) {
                fprintf(stderr, "%s: error: %s holds tensor '%s', which the trainer's %s graph does not use "
                        "(an architecture variant it does not support)\n", __func__, path.c_str(), name, hp.arch.c_str());
                return false;
            }
        }
    }

    // shapes, types, and that the data lies inside the file
    FILE * f = fopen(path.c_str(), "rb");
    if (!f) {
        fprintf(stderr, "%s: error: cannot open %s\n", __func__, path.c_str());
        return false;
    }
    struct FileGuard { FILE * f; ~FileGuard() { fclose(f); } } file_guard{f};
    if (fseek(f, 0, SEEK_END) != 0) {
        fprintf(stderr, "%s: error: cannot seek in %s\n", __func__, path.c_str());
        return false;
    }
    const uint64_t file_size = (uint64_t) ftell(f);
    const size_t data_offset = gguf_get_data_offset(m.meta);

    std::vector<const Wanted *> present;
    for (const Wanted & w : wanted) {
        ggml_tensor * t = ggml_get_tensor(meta_ctx, w.name.c_str());
        if (!t) {
            if (w.required) {
                fprintf(stderr, "%s: error: %s lacks tensor %s\n", __func__, path.c_str(), w.name.c_str());
                return false;
            }
            continue;
        }
        for (int d = 0; d < GGML_MAX_DIMS; d++) {
            const int64_t want = d < (int) w.ne.size() ? w.ne[d] : 1;
            if (t->ne[d] != want) {
                std::string want_s, got_s;
                for (int e = 0; e < GGML_MAX_DIMS; e++) {
                    if (e < (int) w.ne.size()) want_s += (e ? ", " : "") + std::to_string(w.ne[e]);
                    if (e < ggml_n_dims(t)) got_s += (e ? ", " : "") + std::to_string(t->ne[e]);
                }
                fprintf(stderr, "%s: error: %s: tensor %s has shape [%s], expected [%s]\n",
                        __func__, path.c_str(), w.name.c_str(), got_s.c_str(), want_s.c_str());
                return false;
            }
        }
        if (w.is_vector ? t->type != GGML_TYPE_F32 : !frozen_type_supported(t->type)) {
            fprintf(stderr, "%s: error: %s: tensor %s has type %s, which the trainer does not support%s\n",
                    __func__, path.c_str(), w.name.c_str(), ggml_type_name(t->type),
                    w.is_vector ? " (norms and biases must be F32)" : " (use F32, F16, Q8_0, Q4_0/1, Q5_0/1 or a K-quant)");
            return false;
        }
        const int64_t id = gguf_find_tensor(m.meta, w.name.c_str());
        const uint64_t end = data_offset + gguf_get_tensor_offset(m.meta, id) + ggml_nbytes(t);
        if (end > file_size) {
            fprintf(stderr, "%s: error: %s is truncated: tensor %s ends at byte %llu but the file has %llu bytes\n",
                    __func__, path.c_str(), w.name.c_str(), (unsigned long long) end, (unsigned long long) file_size);
            return false;
        }
        present.push_back(&w);
    }

    // weight tensors in our own context and backend buffer
    ggml_init_params ip = {/*.mem_size =*/ (present.size() + 1) * ggml_tensor_overhead(), /*.mem_buffer =*/ nullptr, /*.no_alloc =*/ true};
    m.ctx = ggml_init(ip);
    if (!m.ctx) {
        fprintf(stderr, "%s: error: ggml_init failed\n", __func__);
        return false;
    }
    for (const Wanted * w : present) {
        ggml_tensor * src = ggml_get_tensor(meta_ctx, w->name.c_str());
        ggml_tensor * t = ggml_new_tensor(m.ctx, to_f32 ? GGML_TYPE_F32 : src->type, GGML_MAX_DIMS, src->ne);
        ggml_set_name(t, w->name.c_str());
        *w->slot = t;
        m.tensors.push_back(t);
    }
    if (hp.tied_output) m.output = m.tok_embd;
    m.buf = ggml_backend_alloc_ctx_tensors_from_buft(m.ctx, buft);
    if (!m.buf) {
        fprintf(stderr, "%s: error: cannot allocate memory for the weights of %s\n", __func__, path.c_str());
        return false;
    }
    ggml_backend_buffer_set_usage(m.buf, GGML_BACKEND_BUFFER_USAGE_WEIGHTS);

    const bool host = ggml_backend_buffer_is_host(m.buf);
    std::vector<uint8_t> staging;
    std::vector<float> converted;
    for (size_t i = 0; i < present.size(); i++) {
        ggml_tensor * src = ggml_get_tensor(meta_ctx, present[i]->name.c_str());
        ggml_tensor * dst = m.tensors[i];
        const int64_t id = gguf_find_tensor(m.meta, present[i]->name.c_str());
        const size_t nbytes = ggml_nbytes(src);
        if (fseek(f, (long) (data_offset + gguf_get_tensor_offset(m.meta, id)), SEEK_SET) != 0) {
            fprintf(stderr, "%s: error: cannot seek in %s\n", __func__, path.c_str());
            return false;
        }
        const bool direct = host && dst->type == src->type;
        uint8_t * into = direct ? (uint8_t *) dst->data : nullptr;
        if (!direct) {
            staging.resize(nbytes);
            into = staging.data();
        }
        if (fread(into, 1, nbytes, f) != nbytes) {
            fprintf(stderr, "%s: error: could not read tensor %s from %s\n", __func__, present[i]->name.c_str(), path.c_str());
            return false;
        }
        if (direct) continue;
        if (dst->type == src->type) {
            ggml_backend_tensor_set(dst, staging.data(), 0, nbytes);
            continue;
        }
        // to F32 for full fine-tuning
        const int64_t n = ggml_nelements(src);
        converted.resize(n);
        if (src->type == GGML_TYPE_F32) {
            memcpy(converted.data(), staging.data(), n * sizeof(float));
        } else {
            const ggml_type_traits * tr = ggml_get_type_traits(src->type);
            if (!tr->to_float) {
                fprintf(stderr, "%s: error: cannot convert %s tensors to F32\n", __func__, ggml_type_name(src->type));
                return false;
            }
            tr->to_float(staging.data(), converted.data(), n);
        }
        ggml_backend_tensor_set(dst, converted.data(), 0, n * sizeof(float));
    }
    return true;
}

} // namespace st
