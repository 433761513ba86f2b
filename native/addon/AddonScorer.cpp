#include "AddonScorer.h"

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
    auto methods = common_methods();
    methods.push_back(InstanceMethod("run", &AddonScorer::Run));
    return DefineClass(env, "Scorer", methods);
}

AddonScorer::AddonScorer(const Napi::CallbackInfo & info) : AddonEngine(info, "the scorer", "new Scorer(model, options)") {
    const Napi::Object o = options(info);
    still::ScorerParams p;
    read_decode_params(o, p);
    p.seq_cells = static_cast<uint32_t>(int_option(o, "sequenceCells", 0));
    make(info.Env(), p);
}

Napi::Value AddonScorer::Run(const Napi::CallbackInfo & info) {
    Napi::Env env = info.Env();
    if (info.Length() < 2 || !info[0].IsArray() || !info[1].IsFunction()) throw Napi::TypeError::New(env, "run(records, onEvent, abortFlag?)");
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
    return StartRun(info, records, "still.score", &still::Scorer::run, result_object, stats_object);
}

} // namespace still_addon
