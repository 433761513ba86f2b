#include "AddonRollouts.h"

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
        p.sampling.tempered_logprobs = bool_option(o, "temperedLogprobs", false);
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
    o.Set("decodeMs", s.decode_ms);
    o.Set("logitsMs", s.logits_ms);
    o.Set("sampleMs", s.sample_ms);
    o.Set("acceptMs", s.accept_ms);
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
    auto methods = common_methods();
    methods.push_back(InstanceMethod("run", &AddonRollouts::Run));
    methods.push_back(InstanceMethod("requiredCells", &AddonRollouts::RequiredCells));
    return DefineClass(env, "Rollouts", methods);
}

AddonRollouts::AddonRollouts(const Napi::CallbackInfo & info) : AddonEngine(info, "the rollout engine", "new Rollouts(model, options)") {
    const Napi::Object o = options(info);
    still::EngineParams p;
    read_decode_params(o, p);
    p.n_ctx = static_cast<uint32_t>(int_option(o, "contextSize", 0));
    p.kv_unified = int_option(o, "kvUnified", p.kv_unified);
    make(info.Env(), p);
}

Napi::Value AddonRollouts::RequiredCells(const Napi::CallbackInfo & info) {
    Napi::Env env = info.Env();
    const auto requests = to_requests(env, info.Length() > 0 ? info[0] : env.Undefined());
    return Napi::Number::New(env, Get(env)->required_cells(requests));
}

Napi::Value AddonRollouts::Run(const Napi::CallbackInfo & info) {
    Napi::Env env = info.Env();
    if (info.Length() < 2 || !info[1].IsFunction()) throw Napi::TypeError::New(env, "run(requests, onEvent, abortFlag?)");
    auto requests = std::make_shared<std::vector<still::RolloutRequest>>(to_requests(env, info[0]));
    return StartRun(info, requests, "still.rollouts", &still::RolloutEngine::run, result_object, stats_object);
}

} // namespace still_addon
