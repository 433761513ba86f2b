#include "AddonScorer.h"

#include "AddonAbortFlag.h"
#include "AddonAdapter.h"
#include "AddonModel.h"
#include "addon.h"
#include "addon_stream.h"

namespace still_addon {

static Napi::Object stats_object(Napi::Env env, const still::ScoreStats & s) {
    Napi::Object o = Napi::Object::New(env);
    o.Set("recordsDone", Napi::Number::New(env, static_cast<double>(s.records_done)));
    o.Set("recordsTotal", Napi::Number::New(env, static_cast<double>(s.records_total)));
    o.Set("tokensDecoded", Napi::Number::New(env, static_cast<double>(s.tokens_decoded)));
    o.Set("tokensScored", Napi::Number::New(env, static_cast<double>(s.tokens_scored)));
    o.Set("decodeMs", s.decode_ms);
    o.Set("softmaxMs", s.softmax_ms);
    o.Set("elapsedMs", s.elapsed_ms);
    o.Set("decodes", Napi::Number::New(env, static_cast<double>(s.decodes)));
    return o;
}

static Napi::Value result_object(Napi::Env env, const still::ScoreResult & r) {
    Napi::Object o = Napi::Object::New(env);
    o.Set("record", r.record);
    Napi::Float32Array logprobs = Napi::Float32Array::New(env, r.logprobs.size());
    std::copy(r.logprobs.begin(), r.logprobs.end(), logprobs.Data());
    o.Set("logprobs", logprobs);
    return o;
}

Napi::Function AddonScorer::Init(Napi::Env env) {
    return DefineClass(env, "Scorer", {
        InstanceMethod("run", &AddonScorer::Run),
        InstanceMethod("setAdapters", &AddonScorer::SetAdapters),
        InstanceMethod("dispose", &AddonScorer::Dispose),
    });
}

AddonScorer::AddonScorer(const Napi::CallbackInfo & info) : Napi::ObjectWrap<AddonScorer>(info) {
    Napi::Env env = info.Env();
    if (info.Length() < 1 || !info[0].IsObject() || !info[0].As<Napi::Object>().InstanceOf(addon_data(env).model_constructor.Value()))
        throw Napi::TypeError::New(env, "new Scorer(model, options)");
    auto model = AddonModel::Unwrap(info[0].As<Napi::Object>())->Get(env);
    still::ScorerParams p;
    if (info.Length() > 1 && info[1].IsObject()) {
        Napi::Object o = info[1].As<Napi::Object>();
        p.n_parallel = int_option(o, "parallel", p.n_parallel);
        p.seq_cells = static_cast<uint32_t>(int_option(o, "sequenceCells", 0));
        p.n_batch = int_option(o, "batchSize", p.n_batch);
        p.n_ubatch = int_option(o, "ubatchSize", p.n_ubatch);
        p.n_threads = int_option(o, "threads", p.n_threads);
        p.flash_attn = int_option(o, "flashAttn", p.flash_attn);
    }
    scorer_ = guard(env, [&] { return std::make_shared<still::Scorer>(model, p); });
}

std::shared_ptr<still::Scorer> AddonScorer::Get(Napi::Env env) const {
    if (!scorer_) throw coded_error(env, "disposed", "the scorer has been disposed");
    return scorer_;
}

Napi::Value AddonScorer::SetAdapters(const Napi::CallbackInfo & info) {
    Napi::Env env = info.Env();
    if (busy_->load()) throw coded_error(env, "busy", "adapters cannot change while a run is in progress");
    Get(env)->set_adapters(adapter_list(env, info.Length() > 0 ? info[0] : env.Undefined()));
    return env.Undefined();
}

Napi::Value AddonScorer::Run(const Napi::CallbackInfo & info) {
    Napi::Env env = info.Env();
    if (info.Length() < 2 || !info[0].IsArray() || !info[1].IsFunction()) throw Napi::TypeError::New(env, "run(records, onEvent, abortFlag?)");
    auto scorer = Get(env);
    Napi::Array arr = info[0].As<Napi::Array>();
    auto records = std::make_shared<std::vector<still::ScoreRecord>>(arr.Length());
    for (uint32_t i = 0; i < arr.Length(); i++) {
        Napi::Value v = arr.Get(i);
        if (!v.IsObject()) throw Napi::TypeError::New(env, "records[" + std::to_string(i) + "] must be an object");
        Napi::Object o = v.As<Napi::Object>();
        (*records)[i].prompt = int_array(env, o.Get("prompt"), "prompt");
        (*records)[i].completion = int_array(env, o.Get("completion"), "completion");
        (*records)[i].decode_last = bool_option(o, "decodeLast", false);
    }
    auto abort = AddonAbortFlag::From(env, info.Length() > 2 ? info[2] : env.Undefined());
    if (!abort) abort = std::make_shared<std::atomic<bool>>(false);
    if (busy_->exchange(true)) throw coded_error(env, "busy", "this scorer is already running; wait for the run to end");
    using Job = StreamJob<still::ScoreResult, still::ScoreStats>;
    return Job::Start(env, info[1].As<Napi::Function>(), "still.score",
        [scorer, records, abort](const auto & on_result, const auto & on_progress) {
            return scorer->run(*records, on_result, on_progress, abort.get());
        },
        abort, busy_, result_object, stats_object);
}

Napi::Value AddonScorer::Dispose(const Napi::CallbackInfo & info) {
    scorer_.reset(); // a run in progress keeps its own reference until it ends
    return info.Env().Undefined();
}

} // namespace still_addon
