#include "AddonModel.h"

#include "AddonAbortFlag.h"
#include "addon.h"

namespace still_addon {

// --- helpers ---------------------------------------------------------------------

static Napi::Value token_or_null(Napi::Env env, llama_token id) {
    return id == LLAMA_TOKEN_NULL ? env.Null() : Napi::Number::New(env, id);
}

static Napi::Int32Array to_int32_array(Napi::Env env, const std::vector<llama_token> & tokens) {
    Napi::Int32Array out = Napi::Int32Array::New(env, tokens.size());
    std::copy(tokens.begin(), tokens.end(), out.Data());
    return out;
}

static bool bool_arg(const Napi::CallbackInfo & info, size_t i, bool fallback) {
    if (info.Length() <= i || info[i].IsUndefined()) return fallback;
    if (!info[i].IsBoolean()) throw Napi::TypeError::New(info.Env(), "argument " + std::to_string(i) + " must be a boolean");
    return info[i].As<Napi::Boolean>().Value();
}

// --- class -----------------------------------------------------------------------

Napi::Function AddonModel::Init(Napi::Env env) {
    return DefineClass(env, "Model", {
        InstanceMethod("facts", &AddonModel::Facts),
        InstanceMethod("tokenize", &AddonModel::Tokenize),
        InstanceMethod("detokenize", &AddonModel::Detokenize),
        InstanceMethod("singleToken", &AddonModel::SingleToken),
        InstanceMethod("applyChatTemplate", &AddonModel::ApplyChatTemplate),
        InstanceMethod("generateGreedy", &AddonModel::GenerateGreedy),
        InstanceMethod("evalLogits", &AddonModel::EvalLogits),
        InstanceMethod("detokenizeBytes", &AddonModel::DetokenizeBytes),
        InstanceMethod("dispose", &AddonModel::Dispose),
        InstanceAccessor("disposed", &AddonModel::Disposed, nullptr),
    });
}

AddonModel::AddonModel(const Napi::CallbackInfo & info) : Napi::ObjectWrap<AddonModel>(info) {}

std::shared_ptr<still::Model> AddonModel::Get(Napi::Env env) const {
    if (!model) throw coded_error(env, "disposed", "the model has been disposed");
    return model;
}

// --- loading ---------------------------------------------------------------------

namespace {
class LoadWorker : public Napi::AsyncProgressWorker<float> {
public:
    LoadWorker(Napi::Env env, std::string path, still::ModelParams params, Napi::Function on_progress,
               std::shared_ptr<std::atomic<bool>> abort)
        : Napi::AsyncProgressWorker<float>(env, "still.loadModel"),
          deferred_(Napi::Promise::Deferred::New(env)),
          path_(std::move(path)),
          params_(params),
          abort_(std::move(abort)) {
        if (!on_progress.IsEmpty()) on_progress_ = Napi::Persistent(on_progress);
    }

    Napi::Promise Promise() { return deferred_.Promise(); }

    void Execute(const ExecutionProgress & progress) override {
        std::string message;
        const bool ok = run_engine([&] {
            model_ = still::Model::load(path_, params_, [&](float p) {
                progress.Send(&p, 1);
                return !(abort_ && abort_->load());
            });
        }, code_, message);
        if (!ok) SetError(message);
    }

    void OnProgress(const float * data, size_t count) override {
        if (on_progress_.IsEmpty() || count == 0) return;
        Napi::HandleScope scope(Env());
        on_progress_.Call({Napi::Number::New(Env(), data[count - 1])});
    }

    void OnOK() override {
        Napi::HandleScope scope(Env());
        Napi::Object obj = addon_data(Env()).model_constructor.New({});
        AddonModel::Unwrap(obj)->model = std::move(model_);
        deferred_.Resolve(obj);
    }

    void OnError(const Napi::Error & e) override {
        Napi::HandleScope scope(Env());
        deferred_.Reject(coded_error(Env(), code_, e.Message()).Value());
    }

private:
    Napi::Promise::Deferred deferred_;
    std::string path_;
    still::ModelParams params_;
    std::shared_ptr<std::atomic<bool>> abort_;
    Napi::FunctionReference on_progress_;
    std::shared_ptr<still::Model> model_;
    std::string code_ = "internal";
};
} // namespace

Napi::Value AddonModel::Load(const Napi::CallbackInfo & info) {
    Napi::Env env = info.Env();
    if (info.Length() < 1 || !info[0].IsString()) throw Napi::TypeError::New(env, "path must be a string");
    still::ModelParams params;
    if (info.Length() > 1 && info[1].IsObject()) {
        Napi::Object o = info[1].As<Napi::Object>();
        params.gpu_layers = int_option(o, "gpuLayers", params.gpu_layers);
        params.use_mmap = bool_option(o, "useMmap", params.use_mmap);
        params.vocab_only = bool_option(o, "vocabOnly", params.vocab_only);
        params.check_tensors = bool_option(o, "checkTensors", params.check_tensors);
    }
    Napi::Function on_progress;
    if (info.Length() > 2 && info[2].IsFunction()) on_progress = info[2].As<Napi::Function>();
    auto abort = AddonAbortFlag::From(env, info.Length() > 3 ? info[3] : env.Undefined());

    auto * worker = new LoadWorker(env, info[0].As<Napi::String>().Utf8Value(), params, on_progress, abort);
    Napi::Promise promise = worker->Promise();
    worker->Queue();
    return promise;
}

// --- facts -----------------------------------------------------------------------

Napi::Value AddonModel::Facts(const Napi::CallbackInfo & info) {
    Napi::Env env = info.Env();
    const still::ModelFacts f = guard(env, [&] { return Get(env)->facts(); });
    Napi::Object o = Napi::Object::New(env);
    o.Set("architecture", f.architecture);
    o.Set("name", f.name);
    o.Set("description", f.description);
    o.Set("fileType", f.file_type);
    o.Set("sizeBytes", Napi::Number::New(env, static_cast<double>(f.size_bytes)));
    o.Set("parameterCount", Napi::Number::New(env, static_cast<double>(f.parameter_count)));
    o.Set("contextLength", f.context_length);
    o.Set("embeddingLength", f.embedding_length);
    o.Set("layerCount", f.layer_count);
    o.Set("headCount", f.head_count);
    o.Set("headCountKv", f.head_count_kv);
    o.Set("vocabSize", f.vocab_size);
    o.Set("vocabType", f.vocab_type);
    Napi::Object tokens = Napi::Object::New(env);
    tokens.Set("bos", token_or_null(env, f.bos));
    tokens.Set("eos", token_or_null(env, f.eos));
    tokens.Set("eot", token_or_null(env, f.eot));
    tokens.Set("sep", token_or_null(env, f.sep));
    tokens.Set("nl", token_or_null(env, f.nl));
    tokens.Set("pad", token_or_null(env, f.pad));
    o.Set("tokens", tokens);
    o.Set("addBos", f.add_bos);
    o.Set("addEos", f.add_eos);
    Napi::Array eog = Napi::Array::New(env, f.eog.size());
    for (size_t i = 0; i < f.eog.size(); i++) eog.Set(static_cast<uint32_t>(i), f.eog[i]);
    o.Set("eog", eog);
    Napi::Array special = Napi::Array::New(env, f.special_tokens.size());
    for (size_t i = 0; i < f.special_tokens.size(); i++) {
        Napi::Object t = Napi::Object::New(env);
        t.Set("id", f.special_tokens[i].id);
        t.Set("text", f.special_tokens[i].text);
        t.Set("kind", f.special_tokens[i].kind);
        special.Set(static_cast<uint32_t>(i), t);
    }
    o.Set("specialTokens", special);
    o.Set("chatTemplate", f.chat_template ? Napi::String::New(env, *f.chat_template) : env.Null());
    o.Set("gpuLayers", f.gpu_layers);
    return o;
}

// --- tokenizer -------------------------------------------------------------------

// tokenize(text, addSpecial, parseSpecial) -> Int32Array
Napi::Value AddonModel::Tokenize(const Napi::CallbackInfo & info) {
    Napi::Env env = info.Env();
    if (info.Length() < 1 || !info[0].IsString()) throw Napi::TypeError::New(env, "text must be a string");
    const std::string text = info[0].As<Napi::String>().Utf8Value();
    const bool add_special = bool_arg(info, 1, false);
    const bool parse_special = bool_arg(info, 2, false);
    return to_int32_array(env, guard(env, [&] { return Get(env)->tokenize(text, add_special, parse_special); }));
}

// detokenize(tokens, removeSpecial, unparseSpecial) -> string
Napi::Value AddonModel::Detokenize(const Napi::CallbackInfo & info) {
    Napi::Env env = info.Env();
    if (info.Length() < 1) throw Napi::TypeError::New(env, "tokens are required");
    const std::vector<llama_token> tokens = int_array(env, info[0], "tokens");
    const bool remove_special = bool_arg(info, 1, false);
    const bool unparse_special = bool_arg(info, 2, false);
    return Napi::String::New(env, guard(env, [&] { return Get(env)->detokenize(tokens, remove_special, unparse_special); }));
}

// singleToken(text) -> id | null
Napi::Value AddonModel::SingleToken(const Napi::CallbackInfo & info) {
    Napi::Env env = info.Env();
    if (info.Length() < 1 || !info[0].IsString()) throw Napi::TypeError::New(env, "text must be a string");
    const std::string text = info[0].As<Napi::String>().Utf8Value();
    return token_or_null(env, guard(env, [&] { return Get(env)->single_token(text); }));
}

// applyChatTemplate([{role, content}], addAssistant, template?) -> string | null
Napi::Value AddonModel::ApplyChatTemplate(const Napi::CallbackInfo & info) {
    Napi::Env env = info.Env();
    if (info.Length() < 1 || !info[0].IsArray()) throw Napi::TypeError::New(env, "messages must be an array");
    Napi::Array arr = info[0].As<Napi::Array>();
    std::vector<std::pair<std::string, std::string>> messages;
    for (uint32_t i = 0; i < arr.Length(); i++) {
        Napi::Value v = arr.Get(i);
        if (!v.IsObject()) throw Napi::TypeError::New(env, "messages[" + std::to_string(i) + "] must be an object");
        Napi::Object m = v.As<Napi::Object>();
        if (!m.Get("role").IsString() || !m.Get("content").IsString())
            throw Napi::TypeError::New(env, "messages[" + std::to_string(i) + "] needs string role and content");
        messages.emplace_back(m.Get("role").As<Napi::String>().Utf8Value(), m.Get("content").As<Napi::String>().Utf8Value());
    }
    const bool add_assistant = bool_arg(info, 1, true);
    std::string tmpl;
    const bool has_tmpl = info.Length() > 2 && info[2].IsString();
    if (has_tmpl) tmpl = info[2].As<Napi::String>().Utf8Value();
    auto out = guard(env, [&] { return Get(env)->apply_chat_template(messages, add_assistant, has_tmpl ? &tmpl : nullptr); });
    return out ? Napi::String::New(env, *out) : env.Null();
}

// --- greedy smoke generation -----------------------------------------------------

namespace {
class GreedyWorker : public PromiseWorker {
public:
    GreedyWorker(Napi::Env env, std::shared_ptr<still::Model> model, std::vector<llama_token> prompt, int32_t max_tokens,
                 int32_t threads, std::shared_ptr<std::atomic<bool>> abort)
        : PromiseWorker(env, "still.generateGreedy"),
          model_(std::move(model)),
          prompt_(std::move(prompt)),
          max_tokens_(max_tokens),
          threads_(threads),
          abort_(std::move(abort)) {}

protected:
    void Run() override { out_ = model_->generate_greedy(prompt_, max_tokens_, threads_, abort_.get()); }
    Napi::Value Result(Napi::Env env) override { return to_int32_array(env, out_); }

private:
    std::shared_ptr<still::Model> model_;
    std::vector<llama_token> prompt_;
    int32_t max_tokens_;
    int32_t threads_;
    std::shared_ptr<std::atomic<bool>> abort_;
    std::vector<llama_token> out_;
};
} // namespace

// generateGreedy(tokens, maxTokens, threads, abortFlag?) -> Promise<Int32Array>
Napi::Value AddonModel::GenerateGreedy(const Napi::CallbackInfo & info) {
    Napi::Env env = info.Env();
    if (info.Length() < 3 || !info[1].IsNumber() || !info[2].IsNumber())
        throw Napi::TypeError::New(env, "generateGreedy(tokens, maxTokens, threads, abortFlag?)");
    auto model = Get(env);
    auto abort = AddonAbortFlag::From(env, info.Length() > 3 ? info[3] : env.Undefined());
    auto * worker = new GreedyWorker(env, model, int_array(env, info[0], "tokens"), info[1].As<Napi::Number>().Int32Value(),
                                     info[2].As<Napi::Number>().Int32Value(), abort);
    return worker->Queue_();
}

// --- direct logits ---------------------------------------------------------------

namespace {
class LogitsWorker : public PromiseWorker {
public:
    LogitsWorker(Napi::Env env, std::shared_ptr<still::Model> model, std::vector<llama_token> tokens, size_t from, int32_t threads)
        : PromiseWorker(env, "still.evalLogits"), model_(std::move(model)), tokens_(std::move(tokens)), from_(from), threads_(threads) {}

protected:
    void Run() override { out_ = model_->eval_logits(tokens_, from_, threads_); }
    Napi::Value Result(Napi::Env env) override {
        Napi::Float32Array a = Napi::Float32Array::New(env, out_.size());
        std::copy(out_.begin(), out_.end(), a.Data());
        return a;
    }

private:
    std::shared_ptr<still::Model> model_;
    std::vector<llama_token> tokens_;
    size_t from_;
    int32_t threads_;
    std::vector<float> out_;
};
} // namespace

// evalLogits(tokens, from, threads) -> Promise<Float32Array> (rows of n_vocab from position `from`)
Napi::Value AddonModel::EvalLogits(const Napi::CallbackInfo & info) {
    Napi::Env env = info.Env();
    if (info.Length() < 3 || !info[1].IsNumber() || !info[2].IsNumber()) throw Napi::TypeError::New(env, "evalLogits(tokens, from, threads)");
    auto model = Get(env);
    const double from = info[1].As<Napi::Number>().DoubleValue();
    if (from < 0) throw Napi::TypeError::New(env, "from must not be negative");
    return (new LogitsWorker(env, model, int_array(env, info[0], "tokens"), static_cast<size_t>(from), info[2].As<Napi::Number>().Int32Value()))->Queue_();
}

// detokenizeBytes(tokens, unparseSpecial) -> Uint8Array: the tokens' pieces laid end to end (no clean-up
// between them, as the engines build text), raw bytes that may end inside a UTF-8 sequence.
Napi::Value AddonModel::DetokenizeBytes(const Napi::CallbackInfo & info) {
    Napi::Env env = info.Env();
    if (info.Length() < 1) throw Napi::TypeError::New(env, "tokens are required");
    const std::vector<llama_token> tokens = int_array(env, info[0], "tokens");
    const bool special = bool_arg(info, 1, false);
    const std::string bytes = guard(env, [&] { return Get(env)->pieces(tokens, special); });
    Napi::Uint8Array out = Napi::Uint8Array::New(env, bytes.size());
    std::copy(bytes.begin(), bytes.end(), out.Data());
    return out;
}

// --- lifetime --------------------------------------------------------------------

Napi::Value AddonModel::Dispose(const Napi::CallbackInfo & info) {
    model.reset();
    return info.Env().Undefined();
}

Napi::Value AddonModel::Disposed(const Napi::CallbackInfo & info) {
    return Napi::Boolean::New(info.Env(), !model);
}

} // namespace still_addon
