#include "io.h"

#include <cmath>
#include <cstdio>
#include <cstring>
#include <functional>
#include <map>

#include "gguf.h"

namespace st {

// Writes `g`'s metadata, then each tensor's data as `fetch` supplies it, padded to the
// GGUF alignment, to `path` through a temporary file.
static bool write_gguf(gguf_context * g, size_t n_tensors, const std::function<bool(size_t, std::vector<uint8_t> &)> & fetch,
                       const std::string & path) {
    const std::string tmp = path + ".tmp";
    FILE * f = fopen(tmp.c_str(), "wb");
    if (!f) {
        fprintf(stderr, "write_gguf: error: cannot create %s\n", tmp.c_str());
        return false;
    }
    bool ok = true;
    std::vector<uint8_t> meta(gguf_get_meta_size(g));
    gguf_get_meta_data(g, meta.data());
    ok = ok && fwrite(meta.data(), 1, meta.size(), f) == meta.size();
    const size_t align = gguf_get_alignment(g);
    std::vector<uint8_t> host;
    const uint8_t zeros[64] = {0};
    for (size_t i = 0; ok && i < n_tensors; i++) {
        ok = fetch(i, host);
        const size_t n = host.size();
        ok = ok && fwrite(host.data(), 1, n, f) == n;
        size_t pad = GGML_PAD(n, align) - n;
        while (ok && pad > 0) {
            const size_t k = pad < sizeof(zeros) ? pad : sizeof(zeros);
            ok = fwrite(zeros, 1, k, f) == k;
            pad -= k;
        }
    }
    ok = (fflush(f) == 0) && ok;
    ok = (fclose(f) == 0) && ok;
    if (!ok || rename(tmp.c_str(), path.c_str()) != 0) {
        remove(tmp.c_str());
        fprintf(stderr, "write_gguf: error: could not write %s (disk full?)\n", path.c_str());
        return false;
    }
    return true;
}

// Backend tensors, written as they are.
static bool write_gguf(gguf_context * g, const std::vector<ggml_tensor *> & tensors, const std::string & path) {
    return write_gguf(g, tensors.size(), [&](size_t i, std::vector<uint8_t> & buf) {
        buf.resize(ggml_nbytes(tensors[i]));
        ggml_backend_tensor_get(tensors[i], buf.data(), 0, buf.size());
        return true;
    }, path);
}

static void set_info(gguf_context * g, const KeyValues & info) {
    for (const auto & kv : info) gguf_set_val_str(g, ("still.train." + kv.first).c_str(), kv.second.c_str());
}

bool write_adapter(Engine & e, const std::string & path, const KeyValues & info) {
    const BaseModel & m = e.model();
    gguf_context * g = gguf_init_empty();
    gguf_set_val_str(g, "general.architecture", m.hp.arch.c_str());
    gguf_set_val_str(g, "general.type", "adapter");
    gguf_set_val_str(g, "general.name", ("still LoRA for " + (m.hp.name.empty() ? m.hp.arch : m.hp.name)).c_str());
    gguf_set_val_str(g, "adapter.type", "lora");
    gguf_set_val_f32(g, "adapter.lora.alpha", e.options().lora.alpha);
    gguf_set_val_u32(g, "still.lora.rank", (uint32_t) e.options().lora.rank);
    set_info(g, info);
    // the LoRA tensors cut to the true rank, described by tensors of a metadata-only context
    std::vector<Trainable> & tr = e.trainables();
    ggml_init_params ip = {(tr.size() + 1) * ggml_tensor_overhead(), nullptr, /*.no_alloc =*/ true};
    ggml_context * meta = ggml_init(ip);
    std::vector<std::vector<float>> host(tr.size());
    bool ok = meta != nullptr;
    for (size_t i = 0; ok && i < tr.size(); i++) {
        int64_t ne[2];
        ok = e.lora_host(tr[i], host[i], ne);
        if (!ok) break;
        ggml_tensor * t = ggml_new_tensor_2d(meta, GGML_TYPE_F32, ne[0], ne[1]);
        ggml_set_name(t, tr[i].name.c_str());
        gguf_add_tensor(g, t);
    }
    ok = ok && write_gguf(g, tr.size(), [&](size_t i, std::vector<uint8_t> & buf) {
        buf.resize(host[i].size() * sizeof(float));
        memcpy(buf.data(), host[i].data(), buf.size());
        return true;
    }, path);
    if (meta) ggml_free(meta);
    gguf_free(g);
    return ok;
}

bool write_full_model(Engine & e, const std::string & path, const KeyValues & info) {
    const BaseModel & m = e.model();
    gguf_context * g = gguf_init_empty();
    gguf_set_kv(g, m.meta);
    gguf_set_val_u32(g, "general.file_type", 0); // all F32
    set_info(g, info);
    for (ggml_tensor * t : m.tensors) gguf_add_tensor(g, t);
    const bool ok = write_gguf(g, m.tensors, path);
    gguf_free(g);
    return ok;
}

bool write_checkpoint(Engine & e, const std::string & path, const CheckpointState & st) {
    gguf_context * g = gguf_init_empty();
    gguf_set_val_str(g, "general.type", "still-train-checkpoint");
    gguf_set_val_str(g, "general.architecture", e.model().hp.arch.c_str());
    gguf_set_val_u32(g, "still.checkpoint.version", 1);
    gguf_set_val_i64(g, "still.checkpoint.step", st.step);
    gguf_set_val_i64(g, "still.checkpoint.steps", st.steps);
    gguf_set_val_i64(g, "still.checkpoint.tokens", st.tokens);
    gguf_set_val_f64(g, "still.checkpoint.elapsed", st.elapsed);
    for (const auto & kv : st.config) gguf_set_val_str(g, ("still.config." + kv.first).c_str(), kv.second.c_str());
    std::vector<ggml_tensor *> tensors;
    for (const Trainable & t : e.trainables()) {
        for (ggml_tensor * x : {t.param, t.m, t.v}) {
            gguf_add_tensor(g, x);
            tensors.push_back(x);
        }
    }
    const bool ok = write_gguf(g, tensors, path);
    gguf_free(g);
    return ok;
}

bool read_checkpoint(Engine & e, const std::string & path, const KeyValues & expected, CheckpointState & st) {
    ggml_context * data_ctx = nullptr;
    gguf_init_params gp = {/*.no_alloc =*/ false, /*.ctx =*/ &data_ctx};
    gguf_context * g = gguf_init_from_file(path.c_str(), gp);
    if (!g) {
        fprintf(stderr, "%s: error: cannot read the checkpoint %s (missing or damaged)\n", __func__, path.c_str());
        return false;
    }
    struct Guard { gguf_context * g; ggml_context * c; ~Guard() { gguf_free(g); if (c) ggml_free(c); } } guard{g, data_ctx};
    auto key = [&](const char * k) { return gguf_find_key(g, k); };
    const int64_t type_id = key("general.type");
    if (type_id < 0 || gguf_get_kv_type(g, type_id) != GGUF_TYPE_STRING || strcmp(gguf_get_val_str(g, type_id), "still-train-checkpoint") != 0) {
        fprintf(stderr, "%s: error: %s is not a still-train checkpoint\n", __func__, path.c_str());
        return false;
    }
    const int64_t ids[4] = {key("still.checkpoint.step"), key("still.checkpoint.steps"), key("still.checkpoint.tokens"), key("still.checkpoint.elapsed")};
    for (int64_t id : ids) {
        if (id < 0) {
            fprintf(stderr, "%s: error: %s lacks its step counters\n", __func__, path.c_str());
            return false;
        }
    }
    st.step = gguf_get_val_i64(g, ids[0]);
    st.steps = gguf_get_val_i64(g, ids[1]);
    st.tokens = gguf_get_val_i64(g, ids[2]);
    st.elapsed = gguf_get_val_f64(g, ids[3]);

    for (const auto & kv : expected) {
        const int64_t id = key(("still.config." + kv.first).c_str());
        const std::string stored = id >= 0 && gguf_get_kv_type(g, id) == GGUF_TYPE_STRING ? gguf_get_val_str(g, id) : "(none)";
        if (stored != kv.second) {
            fprintf(stderr, "%s: error: the checkpoint %s was made with %s = %s, but this run has %s; "
                    "resume with the options of the first run, or start a new run\n",
                    __func__, path.c_str(), kv.first.c_str(), stored.c_str(), kv.second.c_str());
            return false;
        }
    }
    st.config = expected;

    for (Trainable & t : e.trainables()) {
        for (ggml_tensor * x : {t.param, t.m, t.v}) {
            ggml_tensor * src = ggml_get_tensor(data_ctx, ggml_get_name(x));
            if (!src || src->type != GGML_TYPE_F32 || !ggml_are_same_shape(src, x)) {
                fprintf(stderr, "%s: error: the checkpoint %s %s tensor %s of this model's shape\n",
                        __func__, path.c_str(), src ? "has a different" : "lacks the", ggml_get_name(x));
                return false;
            }
            ggml_backend_tensor_set(x, src->data, 0, ggml_nbytes(x));
        }
    }
    return true;
}

bool write_ref_logps(const std::string & path, uint64_t fingerprint, const std::vector<double> & chosen, const std::vector<double> & rejected) {
    const std::string tmp = path + ".tmp";
    FILE * f = fopen(tmp.c_str(), "wb");
    if (!f) {
        fprintf(stderr, "%s: error: cannot create %s\n", __func__, tmp.c_str());
        return false;
    }
    const uint32_t version = 1, zero = 0;
    const uint64_t n = chosen.size();
    bool ok = fwrite("STILLREF", 1, 8, f) == 8 && fwrite(&version, 4, 1, f) == 1 && fwrite(&zero, 4, 1, f) == 1 &&
              fwrite(&n, 8, 1, f) == 1 && fwrite(&fingerprint, 8, 1, f) == 1;
    for (size_t i = 0; ok && i < n; i++) {
        ok = fwrite(&chosen[i], 8, 1, f) == 1 && fwrite(&rejected[i], 8, 1, f) == 1;
    }
    ok = (fclose(f) == 0) && ok;
    if (!ok || rename(tmp.c_str(), path.c_str()) != 0) {
        remove(tmp.c_str());
        fprintf(stderr, "%s: error: could not write %s\n", __func__, path.c_str());
        return false;
    }
    return true;
}

bool read_ref_logps(const std::string & path, uint64_t fingerprint, size_t n_pairs,
                    std::vector<double> & chosen, std::vector<double> & rejected, bool * missing) {
    FILE * f = fopen(path.c_str(), "rb");
    if (missing) *missing = f == nullptr;
    if (!f) return false;
    struct Guard { FILE * f; ~Guard() { fclose(f); } } guard{f};
    char magic[8];
    uint32_t version = 0, zero = 0;
    uint64_t n = 0, fp = 0;
    if (fread(magic, 1, 8, f) != 8 || memcmp(magic, "STILLREF", 8) != 0 || fread(&version, 4, 1, f) != 1 ||
        fread(&zero, 4, 1, f) != 1 || fread(&n, 8, 1, f) != 1 || fread(&fp, 8, 1, f) != 1 || version != 1) {
        fprintf(stderr, "%s: error: %s is not a reference log-prob file\n", __func__, path.c_str());
        return false;
    }
    if (n != n_pairs) {
        fprintf(stderr, "%s: error: %s holds reference log-probs for %llu pairs, the data has %zu\n",
                __func__, path.c_str(), (unsigned long long) n, n_pairs);
        return false;
    }
    if (fp != 0 && fp != fingerprint) {
        fprintf(stderr, "%s: error: %s was computed for other data; delete it to compute it again\n", __func__, path.c_str());
        return false;
    }
    chosen.resize(n);
    rejected.resize(n);
    for (size_t i = 0; i < n; i++) {
        if (fread(&chosen[i], 8, 1, f) != 1 || fread(&rejected[i], 8, 1, f) != 1) {
            fprintf(stderr, "%s: error: %s is truncated\n", __func__, path.c_str());
            return false;
        }
        if (!std::isfinite(chosen[i]) || !std::isfinite(rejected[i])) {
            fprintf(stderr, "%s: error: %s: pair %zu has a log-prob that is not finite\n", __func__, path.c_str(), i);
            return false;
        }
    }
    return true;
}

} // namespace st
