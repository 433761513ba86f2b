// The Node-API module: process set-up, device facts, quantization, and the Model class.
#include <napi.h>

#include "AddonAbortFlag.h"
#include "AddonAdapter.h"
#include "AddonModel.h"
#include "AddonRollouts.h"
#include "AddonScorer.h"
#include "addon.h"
#include "backend.h"
#include "log.h"
#include "q8_gemm.h"

namespace still_addon {

// init(libDir, fallbackDirs) -> undefined. Loads backend modules once per process.
static Napi::Value Init(const Napi::CallbackInfo & info) {
    Napi::Env env = info.Env();
    if (info.Length() < 1 || !info[0].IsString()) throw Napi::TypeError::New(env, "libDir must be a string");
    const std::string lib_dir = info[0].As<Napi::String>().Utf8Value();
    const std::vector<std::string> fallback = string_array(env, info.Length() > 1 ? info[1] : env.Undefined(), "fallbackDirs");
    const std::string cpu_backend = info.Length() > 2 && info[2].IsString() ? info[2].As<Napi::String>().Utf8Value() : "";
    const std::string error = still::backend_init(lib_dir, fallback, cpu_backend);
    if (!error.empty()) throw Napi::Error::New(env, error);
    return env.Undefined();
}

static Napi::Value Devices(const Napi::CallbackInfo & info) {
    Napi::Env env = info.Env();
    const auto devices = still::backend_devices();
    Napi::Array out = Napi::Array::New(env, devices.size());
    for (size_t i = 0; i < devices.size(); i++) {
        Napi::Object d = Napi::Object::New(env);
        d.Set("name", devices[i].name);
        d.Set("description", devices[i].description);
        d.Set("type", devices[i].type);
        d.Set("memoryFree", Napi::Number::New(env, static_cast<double>(devices[i].memory_free)));
        d.Set("memoryTotal", Napi::Number::New(env, static_cast<double>(devices[i].memory_total)));
        out.Set(static_cast<uint32_t>(i), d);
    }
    return out;
}

static Napi::Value SystemInfo(const Napi::CallbackInfo & info) {
    return Napi::String::New(info.Env(), still::backend_system_info());
}

// q8Kernel() -> {active, mode, status, isa, products}: still's Q8_0 kernel (STILL_Q8_GEMM), what it does here.
static Napi::Value Q8Kernel(const Napi::CallbackInfo & info) {
    Napi::Env env = info.Env();
    Napi::Object o = Napi::Object::New(env);
    o.Set("active", Napi::Boolean::New(env, still::q8_gemm_active()));
    o.Set("mode", still::q8_gemm_mode());
    o.Set("status", still::q8_gemm_status());
    o.Set("isa", still::q8_gemm_isa());
    o.Set("products", Napi::Number::New(env, static_cast<double>(still::q8_gemm_products())));
    return o;
}

// ggmlTypeInfo(typeId) -> {name, blockSize, typeSize} | null
static Napi::Value GgmlTypeInfo(const Napi::CallbackInfo & info) {
    Napi::Env env = info.Env();
    if (info.Length() < 1 || !info[0].IsNumber()) throw Napi::TypeError::New(env, "type must be a number");
    const still::TypeInfo t = still::ggml_type_info(info[0].As<Napi::Number>().Int32Value());
    if (!t.known) return env.Null();
    Napi::Object o = Napi::Object::New(env);
    o.Set("name", t.name);
    o.Set("blockSize", Napi::Number::New(env, static_cast<double>(t.block_size)));
    o.Set("typeSize", Napi::Number::New(env, static_cast<double>(t.type_size)));
    return o;
}

// setLogLevel(0..4): 0 = silent, 1 = debug ... 4 = errors only.
static Napi::Value SetLogLevel(const Napi::CallbackInfo & info) {
    Napi::Env env = info.Env();
    if (info.Length() < 1 || !info[0].IsNumber()) throw Napi::TypeError::New(env, "level must be a number");
    still::log_set_level(info[0].As<Napi::Number>().Int32Value());
    return env.Undefined();
}

namespace {
class QuantizeWorker : public PromiseWorker {
public:
    QuantizeWorker(Napi::Env env, std::string in, std::string out, int32_t ftype, int32_t threads)
        : PromiseWorker(env, "still.quantize"), in_(std::move(in)), out_(std::move(out)), ftype_(ftype), threads_(threads) {}

protected:
    void Run() override { still::quantize_model(in_, out_, ftype_, threads_); }
    Napi::Value Result(Napi::Env env) override { return env.Undefined(); }

private:
    std::string in_, out_;
    int32_t ftype_, threads_;
};
} // namespace

namespace {
class ProbeWorker : public PromiseWorker {
public:
    ProbeWorker(Napi::Env env, std::string path, bool vocab_only)
        : PromiseWorker(env, "still.probeModel"), path_(std::move(path)), vocab_only_(vocab_only) {}

protected:
    void Run() override { still::Model::probe(path_, vocab_only_); }
    Napi::Value Result(Napi::Env env) override { return env.Undefined(); }

private:
    std::string path_;
    bool vocab_only_;
};
} // namespace

// probeModel(path, vocabOnly) -> Promise<void>; see still::Model::probe.
static Napi::Value ProbeModel(const Napi::CallbackInfo & info) {
    Napi::Env env = info.Env();
    if (info.Length() < 1 || !info[0].IsString()) throw Napi::TypeError::New(env, "path must be a string");
    const bool vocab_only = info.Length() > 1 && info[1].IsBoolean() && info[1].As<Napi::Boolean>().Value();
    return (new ProbeWorker(env, info[0].As<Napi::String>().Utf8Value(), vocab_only))->Queue_();
}

// quantize(inPath, outPath, ftype, threads) -> Promise<void>
static Napi::Value Quantize(const Napi::CallbackInfo & info) {
    Napi::Env env = info.Env();
    if (info.Length() < 4 || !info[0].IsString() || !info[1].IsString() || !info[2].IsNumber() || !info[3].IsNumber())
        throw Napi::TypeError::New(env, "quantize(inPath, outPath, ftype, threads)");
    auto * worker = new QuantizeWorker(env, info[0].As<Napi::String>().Utf8Value(), info[1].As<Napi::String>().Utf8Value(),
                                       info[2].As<Napi::Number>().Int32Value(), info[3].As<Napi::Number>().Int32Value());
    return worker->Queue_();
}

static Napi::Object RegisterModule(Napi::Env env, Napi::Object exports) {
    still::log_install();
    auto * data = new AddonData();
    env.SetInstanceData(data);

    Napi::Function model = AddonModel::Init(env);
    data->model_constructor = Napi::Persistent(model);
    Napi::Function abort_flag = AddonAbortFlag::Init(env);
    data->abort_flag_constructor = Napi::Persistent(abort_flag);
    Napi::Function adapter = AddonAdapter::Init(env);
    data->adapter_constructor = Napi::Persistent(adapter);
    Napi::Function rollouts = AddonRollouts::Init(env);
    Napi::Function scorer = AddonScorer::Init(env);

    exports.Set("variant", Napi::String::New(env, STILL_VARIANT));
    exports.Set("llamaRelease", Napi::String::New(env, STILL_LLAMA_RELEASE));
    exports.Set("init", Napi::Function::New(env, Init, "init"));
    exports.Set("devices", Napi::Function::New(env, Devices, "devices"));
    exports.Set("systemInfo", Napi::Function::New(env, SystemInfo, "systemInfo"));
    exports.Set("q8Kernel", Napi::Function::New(env, Q8Kernel, "q8Kernel"));
    exports.Set("ggmlTypeInfo", Napi::Function::New(env, GgmlTypeInfo, "ggmlTypeInfo"));
    exports.Set("setLogLevel", Napi::Function::New(env, SetLogLevel, "setLogLevel"));
    exports.Set("quantize", Napi::Function::New(env, Quantize, "quantize"));
    exports.Set("probeModel", Napi::Function::New(env, ProbeModel, "probeModel"));
    exports.Set("loadModel", Napi::Function::New(env, AddonModel::Load, "loadModel"));
    exports.Set("loadAdapter", Napi::Function::New(env, AddonAdapter::Load, "loadAdapter"));
    exports.Set("Model", model);
    exports.Set("Adapter", adapter);
    exports.Set("Rollouts", rollouts);
    exports.Set("Scorer", scorer);
    exports.Set("AbortFlag", abort_flag);
    return exports;
}

} // namespace still_addon

static Napi::Object Register(Napi::Env env, Napi::Object exports) { return still_addon::RegisterModule(env, exports); }

NODE_API_MODULE(still, Register)
