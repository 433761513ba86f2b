#include "model.h"

#include <algorithm>
#include <climits>

#include "decode.h"
#include "log.h"

namespace still {

// --- loading ---------------------------------------------------------------------

namespace {
struct ProgressState {
    const std::function<bool(float)> * fn;
    bool cancelled = false;
};

bool on_progress(float progress, void * user_data) {
    auto * state = static_cast<ProgressState *>(user_data);
    if (state->fn == nullptr || !*state->fn) return true;
    if ((*state->fn)(progress)) return true;
    state->cancelled = true;
    return false;
}
} // namespace

std::shared_ptr<Model> Model::load(const std::string & path, const ModelParams & params,
                                   const std::function<bool(float)> & progress) {
    LogCapture capture;
    ProgressState state{&progress};

    llama_model_params mp = llama_model_default_params();
    mp.n_gpu_layers = params.gpu_layers;
    if (!params.use_mmap) mp.load_mode = LLAMA_LOAD_MODE_NONE;
    mp.vocab_only = params.vocab_only;
    mp.check_tensors = params.check_tensors;
    mp.progress_callback = on_progress;
    mp.progress_callback_user_data = &state;

    llama_model * model = llama_model_load_from_file(path.c_str(), mp);
    if (model == nullptr) {
        if (state.cancelled) throw EngineError("cancelled", "loading the model was cancelled");
        std::string reason = capture.summary();
        if (reason.empty()) reason = "llama.cpp could not load it";
        throw EngineError("load_failed", reason);
    }
    return std::shared_ptr<Model>(new Model(model, params));
}

Model::Model(llama_model * model, const ModelParams & params)
    : model_(model), vocab_(llama_model_get_vocab(model)), params_(params) {}

Model::~Model() { llama_model_free(model_); }

// --- facts -----------------------------------------------------------------------

std::optional<std::string> Model::meta(const char * key) const {
    std::vector<char> buf(256);
    int32_t n = llama_model_meta_val_str(model_, key, buf.data(), buf.size());
    if (n < 0) return std::nullopt;
    if (static_cast<size_t>(n) >= buf.size()) {
        buf.resize(n + 1);
        n = llama_model_meta_val_str(model_, key, buf.data(), buf.size());
        if (n < 0) return std::nullopt;
    }
    return std::string(buf.data(), n);
}

static const char * vocab_type_name(enum llama_vocab_type t) {
    switch (t) {
        case LLAMA_VOCAB_TYPE_NONE: return "none";
        case LLAMA_VOCAB_TYPE_SPM: return "spm";
        case LLAMA_VOCAB_TYPE_BPE: return "bpe";
        case LLAMA_VOCAB_TYPE_WPM: return "wpm";
        case LLAMA_VOCAB_TYPE_UGM: return "ugm";
        case LLAMA_VOCAB_TYPE_RWKV: return "rwkv";
        case LLAMA_VOCAB_TYPE_PLAMO2: return "plamo2";
        default: return "other";
    }
}

ModelFacts Model::facts() const {
    ModelFacts f;
    f.architecture = meta("general.architecture").value_or("");
    f.name = meta("general.name").value_or("");
    char desc[256];
    const int32_t n_desc = llama_model_desc(model_, desc, sizeof(desc));
    if (n_desc > 0) f.description.assign(desc, std::min<size_t>(n_desc, sizeof(desc) - 1));
    f.file_type = llama_ftype_name(llama_model_ftype(model_));
    // Without weights llama.cpp reads no hyperparameters, and asking for per-layer
    // ones aborts; the caller fills these from the file's metadata instead.
    if (!params_.vocab_only) {
        f.size_bytes = llama_model_size(model_);
        f.parameter_count = llama_model_n_params(model_);
        f.context_length = llama_model_n_ctx_train(model_);
        f.embedding_length = llama_model_n_embd(model_);
        f.layer_count = llama_model_n_layer(model_);
        f.head_count = llama_model_n_head(model_);
        f.head_count_kv = llama_model_n_head_kv(model_);
    }
    f.vocab_size = llama_vocab_n_tokens(vocab_);
    f.vocab_type = vocab_type_name(llama_vocab_type(vocab_));
    f.bos = llama_vocab_bos(vocab_);
    f.eos = llama_vocab_eos(vocab_);
    f.eot = llama_vocab_eot(vocab_);
    f.sep = llama_vocab_sep(vocab_);
    f.nl = llama_vocab_nl(vocab_);
    f.pad = llama_vocab_pad(vocab_);
    f.add_bos = llama_vocab_get_add_bos(vocab_);
    f.add_eos = llama_vocab_get_add_eos(vocab_);
    for (llama_token id = 0; id < f.vocab_size; id++) {
        if (llama_vocab_is_eog(vocab_, id)) f.eog.push_back(id);
        const auto attr = llama_vocab_get_attr(vocab_, id);
        const char * kind = nullptr;
        if (attr & LLAMA_TOKEN_ATTR_CONTROL) kind = "control";
        else if (attr & LLAMA_TOKEN_ATTR_USER_DEFINED) kind = "user_defined";
        else if (attr & LLAMA_TOKEN_ATTR_UNKNOWN) kind = "unknown";
        if (kind != nullptr) f.special_tokens.push_back({id, llama_vocab_get_text(vocab_, id), kind});
    }
    if (const char * tmpl = llama_model_chat_template(model_, nullptr)) f.chat_template = tmpl;
    f.gpu_layers = params_.gpu_layers;
    return f;
}

// --- tokenizer -------------------------------------------------------------------

std::vector<llama_token> Model::tokenize(const std::string & text, bool add_special, bool parse_special) const {
    if (text.size() > static_cast<size_t>(INT32_MAX))
        throw EngineError("invalid_argument", "text is too long to tokenize (over 2 GiB)");
    std::vector<llama_token> tokens(text.size() + 8);
    int32_t n = llama_tokenize(vocab_, text.data(), static_cast<int32_t>(text.size()), tokens.data(),
                               static_cast<int32_t>(tokens.size()), add_special, parse_special);
    if (n == INT32_MIN) throw EngineError("invalid_argument", "text is too long to tokenize");
    if (n < 0) {
        tokens.resize(-n);
        n = llama_tokenize(vocab_, text.data(), static_cast<int32_t>(text.size()), tokens.data(),
                           static_cast<int32_t>(tokens.size()), add_special, parse_special);
        if (n < 0) throw EngineError("invalid_argument", "tokenization failed");
    }
    tokens.resize(n);
    return tokens;
}

std::string Model::detokenize(const std::vector<llama_token> & tokens, bool remove_special, bool unparse_special) const {
    check_tokens(tokens.data(), tokens.size(), llama_vocab_n_tokens(vocab_), "the input");
    if (tokens.size() > static_cast<size_t>(INT32_MAX)) throw EngineError("invalid_argument", "too many tokens");
    std::string text(std::max<size_t>(64, tokens.size() * 8), '\0');
    int32_t n = llama_detokenize(vocab_, tokens.data(), static_cast<int32_t>(tokens.size()), text.data(),
                                 static_cast<int32_t>(text.size()), remove_special, unparse_special);
    if (n < 0) {
        text.resize(-n);
        n = llama_detokenize(vocab_, tokens.data(), static_cast<int32_t>(tokens.size()), text.data(),
                             static_cast<int32_t>(text.size()), remove_special, unparse_special);
        if (n < 0) throw EngineError("invalid_argument", "detokenization failed");
    }
    text.resize(n);
    return text;
}

std::string Model::pieces(const std::vector<llama_token> & tokens, bool unparse_special) const {
    check_tokens(tokens.data(), tokens.size(), llama_vocab_n_tokens(vocab_), "the input");
    std::string out;
    char piece[256];
    for (const llama_token token : tokens) {
        int32_t n = llama_token_to_piece(vocab_, token, piece, sizeof(piece), 0, unparse_special);
        if (n >= 0) {
            out.append(piece, static_cast<size_t>(n));
            continue;
        }
        std::string big(static_cast<size_t>(-n), '\0');
        n = llama_token_to_piece(vocab_, token, big.data(), static_cast<int32_t>(big.size()), 0, unparse_special);
        if (n < 0) throw EngineError("invalid_argument", "detokenization failed");
        out.append(big.data(), static_cast<size_t>(n));
    }
    return out;
}

llama_token Model::single_token(const std::string & text) const {
    const std::vector<llama_token> tokens = tokenize(text, false, true);
    if (tokens.size() != 1) return LLAMA_TOKEN_NULL;
    if (detokenize(tokens, false, true) != text) return LLAMA_TOKEN_NULL;
    return tokens[0];
}

// --- chat template ---------------------------------------------------------------

std::optional<std::string> Model::apply_chat_template(const std::vector<std::pair<std::string, std::string>> & messages,
                                                      bool add_assistant, const std::string * tmpl) const {
    const char * t = tmpl != nullptr ? tmpl->c_str() : llama_model_chat_template(model_, nullptr);
    // llama.cpp would fall back to ChatML here; a model without a template must say so instead.
    if (t == nullptr) throw EngineError("invalid_argument", "the model has no chat template");

    std::vector<llama_chat_message> chat;
    size_t chars = 0;
    for (const auto & m : messages) {
        chat.push_back({m.first.c_str(), m.second.c_str()});
        chars += m.first.size() + m.second.size();
    }
    std::string out(2 * chars + 256, '\0');
    int32_t n = llama_chat_apply_template(t, chat.data(), chat.size(), add_assistant, out.data(), static_cast<int32_t>(out.size()));
    if (n < 0) return std::nullopt;
    if (static_cast<size_t>(n) > out.size()) {
        out.resize(n);
        n = llama_chat_apply_template(t, chat.data(), chat.size(), add_assistant, out.data(), static_cast<int32_t>(out.size()));
        if (n < 0) return std::nullopt;
    }
    out.resize(n);
    return out;
}

// --- greedy smoke generation -----------------------------------------------------

std::vector<llama_token> Model::generate_greedy(const std::vector<llama_token> & prompt, int32_t max_tokens,
                                                int32_t n_threads, const std::atomic<bool> * abort) const {
    if (params_.vocab_only) throw EngineError("invalid_argument", "the model was loaded without weights (vocabOnly)");
    if (prompt.empty()) throw EngineError("invalid_argument", "the prompt has no tokens");
    if (max_tokens < 0) throw EngineError("invalid_argument", "maxTokens must not be negative");
    check_tokens(prompt.data(), prompt.size(), llama_vocab_n_tokens(vocab_), "the prompt");

    AbortSlot abort_slot;
    AbortSlot::Scope abort_scope(abort_slot, abort);
    ContextSpec spec;
    spec.n_ctx = static_cast<uint32_t>(prompt.size() + max_tokens + 1);
    spec.n_threads = n_threads;
    spec.abort = &abort_slot;
    const ContextPtr ctx = make_context(*this, spec);

    struct SamplerDeleter {
        void operator()(llama_sampler * s) const { llama_sampler_free(s); }
    };
    std::unique_ptr<llama_sampler, SamplerDeleter> sampler(llama_sampler_chain_init(llama_sampler_chain_default_params()));
    llama_sampler_chain_add(sampler.get(), llama_sampler_init_greedy());

    std::vector<llama_token> out;
    decode_all(ctx.get(), prompt.data(), prompt.size(), spec.n_batch);
    while (static_cast<int32_t>(out.size()) < max_tokens) {
        if (abort_slot.requested()) throw EngineError("cancelled", "generation was cancelled");
        llama_token next = llama_sampler_sample(sampler.get(), ctx.get(), -1);
        if (llama_vocab_is_eog(vocab_, next)) break;
        out.push_back(next);
        decode_all(ctx.get(), &next, 1, spec.n_batch);
    }
    return out;
}

// --- logits ----------------------------------------------------------------------

std::vector<float> Model::eval_logits(const std::vector<llama_token> & tokens, size_t from, int32_t n_threads) const {
    if (params_.vocab_only) throw EngineError("invalid_argument", "the model was loaded without weights (vocabOnly)");
    if (tokens.empty() || from >= tokens.size()) throw EngineError("invalid_argument", "no positions to evaluate");
    check_tokens(tokens.data(), tokens.size(), llama_vocab_n_tokens(vocab_), "the input");
    const int32_t n_vocab = llama_vocab_n_tokens(vocab_);
    ContextSpec spec;
    spec.n_ctx = static_cast<uint32_t>(tokens.size());
    spec.n_batch = static_cast<uint32_t>(tokens.size());
    spec.n_threads = n_threads;
    // Flash attention on the CPU accumulates in F16: a reference should not.
    spec.flash_attn = LLAMA_FLASH_ATTN_TYPE_DISABLED;
    const ContextPtr ctx = make_context(*this, spec);
    llama_batch batch = llama_batch_init(static_cast<int32_t>(tokens.size()), 0, 1);
    for (size_t i = 0; i < tokens.size(); i++) {
        batch.token[i] = tokens[i];
        batch.pos[i] = static_cast<llama_pos>(i);
        batch.n_seq_id[i] = 1;
        batch.seq_id[i][0] = 0;
        batch.logits[i] = i >= from;
    }
    batch.n_tokens = static_cast<int32_t>(tokens.size());
    LogCapture capture;
    const int32_t rc = llama_decode(ctx.get(), batch);
    llama_batch_free(batch);
    if (rc != 0) throw EngineError("decode_failed", "llama_decode failed (" + std::to_string(rc) + "): " + capture.summary());
    std::vector<float> out;
    out.reserve((tokens.size() - from) * static_cast<size_t>(n_vocab));
    for (size_t i = from; i < tokens.size(); i++) {
        const float * row = llama_get_logits_ith(ctx.get(), static_cast<int32_t>(i));
        out.insert(out.end(), row, row + n_vocab);
    }
    return out;
}

// --- probe -----------------------------------------------------------------------

void Model::probe(const std::string & path, bool vocab_only) {
    LogCapture capture;
    llama_model_params mp = llama_model_default_params();
    mp.n_gpu_layers = 0;
    mp.no_alloc = true;
    mp.load_mode = LLAMA_LOAD_MODE_NONE; // no_alloc requires it: nothing is mapped
    mp.vocab_only = vocab_only;
    llama_model * model = llama_model_load_from_file(path.c_str(), mp);
    if (model == nullptr) {
        std::string reason = capture.summary();
        throw EngineError("load_failed", reason.empty() ? "llama.cpp could not load it" : reason);
    }
    ModelParams params;
    params.vocab_only = vocab_only;
    std::shared_ptr<Model> m(new Model(model, params));
    (void) m->facts();
    const std::string sample = "Probe 12 + 3 = 15.\n";
    (void) m->detokenize(m->tokenize(sample, true, true), false, true);
    if (vocab_only) return;

    // Creating a context builds the compute graph (to size its buffers), which is
    // where llama.cpp checks that the architecture's shapes fit together.
    ContextSpec spec;
    spec.n_ctx = 64;
    spec.n_batch = 32;
    spec.n_ubatch = 32;
    spec.n_threads = 1;
    try {
        (void) make_context(*m, spec);
    } catch (const EngineError & e) {
        throw EngineError("load_failed", e.what());
    }
}

// --- quantization ----------------------------------------------------------------

void quantize_model(const std::string & in_path, const std::string & out_path, int32_t ftype, int32_t n_threads) {
    LogCapture capture;
    llama_model_quantize_params qp = llama_model_quantize_default_params();
    qp.ftype = static_cast<enum llama_ftype>(ftype);
    qp.nthread = n_threads;
    if (llama_model_quantize(in_path.c_str(), out_path.c_str(), &qp) != 0) {
        std::string reason = capture.summary();
        throw EngineError("quantize_failed", reason.empty() ? "llama_model_quantize failed" : reason);
    }
}

} // namespace still
