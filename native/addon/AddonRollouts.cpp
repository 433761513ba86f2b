#include "AddonRollouts.h"

#include "AddonAbortFlag.h"
#include "AddonAdapter.h"
#include "AddonModel.h"
#include "addon.h"
#include "addon_stream.h"

namespace still_addon {

// --- conversions -----------------------------------------------------------------

static std::vector<still::RolloutRequest> to_requests(Napi::Env env, const Napi::Value & value) {
    if (!value.IsArray()) throw Napi::TypeError::New(env, "requests must be an array");
    Napi::Array arr = value.As<Napi::Array>();
    std::vector<still::RolloutRequest> out(arr.Length());
    for (uint32_t i = 0; i < arr.Length(); i++) {
        Napi::Value v = arr.Get(i);
        if (!v.IsObject()) throw Napi::TypeError::New(env, "requests[" + std::to_string(i) + "] must be an object");
        Napi::Object o = v.As<Napi::Object>();
        still::RolloutRequest & r = out[i];
        r.prompt = int_array(env, o.Get("prompt"), "prompt");
        r.samples = int_array(env, o.Get("samples"), "samples");
        still::GenerationParams & p = r.params;
        p.max_tokens = int_option(o, "maxTokens", p.max_tokens);
        p.sampling.temperature = static_cast<float>(number_option(o, "temperature", p.sampling.temperature));
        p.sampling.top_k = int_option(o, "topK", p.sampling.top_k);
        p.sampling.top_p = static_cast<float>(number_option(o, "topP", p.sampling.top_p));
        p.sampling.min_p = static_cast<float>(number_option(o, "minP", p.sampling.min_p));
        p.sampling.seed = static_cast<uint64_t>(number_option(o, "seed", 0));
        p.stop_tokens = int_array(env, o.Get("stopTokens"), "stopTokens");
        p.stop_strings = string_array(env, o.Get("stopStrings"), "stopStrings");
        p.keep_strings = string_array(env, o.Get("keepStrings"), "keepStrings");
        p.stop_at_eog = bool_option(o, "stopAtEog", p.stop_at_eog);
    }
    return out;
}

static Napi::Object stats_object(Napi::Env env, const still::RolloutStats & s) {
    Napi::Object o = Napi::Object::New(env);
    o.Set("promptTokens", Napi::Number::New(env, static_cast<double>(s.prompt_tokens)));
    o.Set("generatedTokens", Napi::Number::New(env, static_cast<double>(s.generated_tokens)));
    o.Set("samplesDone", Napi::Number::New(env, static_cast<double>(s.samples_done)));
    o.Set("samplesTotal", Napi::Number::New(env, static_cast<double>(s.samples_total)));
    o.Set("promptMs", s.prompt_ms);
    o.Set("generateMs", s.generate_ms);
    o.Set("sampleMs", s.sample_ms);
    o.Set("elapsedMs", s.elapsed_ms);
    o.Set("decodes", Napi::Number::New(env, static_cast<double>(s.decodes)));
    return o;
}

static Napi::Value result_object(Napi::Env env, const still::RolloutResult & r) {
    Napi::Object o = Napi::Object::New(env);
    o.Set("request", r.request);
    o.Set("sample", r.sample);
    Napi::Int32Array tokens = Napi::Int32Array::New(env, r.tokens.size());
    std::copy(r.tokens.begin(), r.tokens.end(), tokens.Data());
    o.Set("tokens", tokens);
    Napi::Float32Array logprobs = Napi::Float32Array::New(env, r.logprobs.size());
    std::copy(r.logprobs.begin(), r.logprobs.end(), logprobs.Data());
    o.Set("logprobs", logprobs);
    o.Set("text", Napi::String::New(env, r.text));
    o.Set("finish", still::finish_reason_name(r.finish));
    o.Set("stop", r.stop.empty() ? env.Null() : Napi::String::New(env, r.stop));
    o.Set("promptTokens", r.prompt_tokens);
    o.Set("startMs", r.start_ms);
    o.Set("firstTokenMs", r.first_token_ms);
    o.Set("endMs", r.end_ms);
    return o;
}

// --- class -----------------------------------------------------------------------

Napi::Function AddonRollouts::Init(Napi::Env env) {
    return DefineClass(env, "Rollouts", {
        InstanceMethod("run", &AddonRollouts::Run),
        InstanceMethod("setAdapters", &AddonRollouts::SetAdapters),
        InstanceMethod("requiredCells", &AddonRollouts::RequiredCells),
        InstanceMethod("dispose", &AddonRollouts::Dispose),
    });
}

AddonRollouts::AddonRollouts(const Napi::CallbackInfo & info) : Napi::ObjectWrap<AddonRollouts>(info) {
    Napi::Env env = info.Env();
    if (info.Length() < 1 || !info[0].IsObject() || !info[0].As<Napi::Object>().InstanceOf(addon_data(env).model_constructor.Value()))
        throw Napi::TypeError::New(env, "new Rollouts(model, options)");
    auto model = AddonModel::Unwrap(info[0].As<Napi::Object>())->Get(env);
    still::EngineParams p;
    if (info.Length() > 1 && info[1].IsObject()) {
        Napi::Object o = info[1].As<Napi::Object>();
        p.n_parallel = int_option(o, "parallel", p.n_parallel);
        p.n_ctx = static_cast<uint32_t>(int_option(o, "contextSize", 0));
        p.n_batch = int_option(o, "batchSize", p.n_batch);
        p.n_ubatch = int_option(o, "ubatchSize", p.n_ubatch);
        p.n_threads = int_option(o, "threads", p.n_threads);
        p.kv_unified = int_option(o, "kvUnified", p.kv_unified);
        p.flash_attn = int_option(o, "flashAttn", p.flash_attn);
    }
    engine_ = guard(env, [&] { return std::make_shared<still::RolloutEngine>(model, p); });
}

std::shared_ptr<still::RolloutEngine> AddonRollouts::Get(Napi::Env env) const {
    if (!engine_) throw coded_error(env, "disposed", "the rollout engine has been disposed");
    return engine_;
}

Napi::Value AddonRollouts::SetAdapters(const Napi::CallbackInfo & info) {
    Napi::Env env = info.Env();
    if (busy_->load()) throw coded_error(env, "busy", "adapters cannot change while a run is in progress");
    Get(env)->set_adapters(adapter_list(env, info.Length() > 0 ? info[0] : env.Undefined()));
    return env.Undefined();
}

Napi::Value AddonRollouts::RequiredCells(const Napi::CallbackInfo & info) {
    Napi::Env env = info.Env();
    const auto requests = to_requests(env, info.Length() > 0 ? info[0] : env.Undefined());
    return Napi::Number::New(env, Get(env)->required_cells(requests));
}

Napi::Value AddonRollouts::Run(const Napi::CallbackInfo & info) {
    Napi::Env env = info.Env();
    if (info.Length() < 2 || !info[1].IsFunction()) throw Napi::TypeError::New(env, "run(requests, onEvent, abortFlag?)");
    auto engine = Get(env);
    auto requests = std::make_shared<std::vector<still::RolloutRequest>>(to_requests(env, info[0]));
    auto abort = AddonAbortFlag::From(env, info.Length() > 2 ? info[2] : env.Undefined());
    if (!abort) abort = std::make_shared<std::atomic<bool>>(false);
    if (busy_->exchange(true)) throw coded_error(env, "busy", "this rollout engine is already running; wait for the run to end");
    using Job = StreamJob<still::RolloutResult, still::RolloutStats>;
    return Job::Start(env, info[1].As<Napi::Function>(), "still.rollouts",
        [engine, requests, abort](const auto & on_result, const auto & on_progress) {
            return engine->run(*requests, on_result, on_progress, abort.get());
        },
        abort, busy_, result_object, stats_object);
}

Napi::Value AddonRollouts::Dispose(const Napi::CallbackInfo & info) {
    engine_.reset(); // a run in progress keeps its own reference until it ends
    return info.Env().Undefined();
}

} // namespace still_addon
