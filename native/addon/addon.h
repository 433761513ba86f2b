// Shared pieces of the Node-API face: per-environment data, errors, promise workers.
#pragma once

#include <napi.h>

#include <string>
#include <vector>

#include "model.h"

namespace still_addon {

struct AddonData {
    Napi::FunctionReference model_constructor;
    Napi::FunctionReference abort_flag_constructor;
    Napi::FunctionReference adapter_constructor;
};

inline AddonData & addon_data(Napi::Env env) { return *env.GetInstanceData<AddonData>(); }

// A JS Error carrying a stable `code` ("load_failed", "cancelled", ...) for the TS layer.
inline Napi::Error coded_error(Napi::Env env, const std::string & code, const std::string & message) {
    Napi::Error err = Napi::Error::New(env, message);
    err.Set("code", Napi::String::New(env, code));
    return err;
}

// --- argument conversion (cheap checks; the TS layer validates properly) ---

// An array of strings; undefined or null is empty.
inline std::vector<std::string> string_array(Napi::Env env, const Napi::Value & value, const char * what) {
    std::vector<std::string> out;
    if (value.IsUndefined() || value.IsNull()) return out;
    if (!value.IsArray()) throw Napi::TypeError::New(env, std::string(what) + " must be an array of strings");
    Napi::Array arr = value.As<Napi::Array>();
    for (uint32_t i = 0; i < arr.Length(); i++) {
        Napi::Value v = arr.Get(i);
        if (!v.IsString()) throw Napi::TypeError::New(env, std::string(what) + " must be an array of strings");
        out.push_back(v.As<Napi::String>().Utf8Value());
    }
    return out;
}

// An Int32Array or an array of integers; undefined is empty.
inline std::vector<int32_t> int_array(Napi::Env env, const Napi::Value & value, const char * what) {
    std::vector<int32_t> out;
    if (value.IsUndefined()) return out;
    if (value.IsTypedArray() && value.As<Napi::TypedArray>().TypedArrayType() == napi_int32_array) {
        Napi::Int32Array arr = value.As<Napi::Int32Array>();
        out.assign(arr.Data(), arr.Data() + arr.ElementLength());
        return out;
    }
    if (!value.IsArray()) throw Napi::TypeError::New(env, std::string(what) + " must be an Int32Array or an array of integers");
    Napi::Array arr = value.As<Napi::Array>();
    out.reserve(arr.Length());
    for (uint32_t i = 0; i < arr.Length(); i++) {
        Napi::Value v = arr.Get(i);
        if (!v.IsNumber()) throw Napi::TypeError::New(env, std::string(what) + "[" + std::to_string(i) + "] is not a number");
        out.push_back(v.As<Napi::Number>().Int32Value());
    }
    return out;
}

inline double number_option(Napi::Object o, const char * key, double fallback) {
    Napi::Value v = o.Get(key);
    if (v.IsUndefined()) return fallback;
    if (!v.IsNumber()) throw Napi::TypeError::New(o.Env(), std::string(key) + " must be a number");
    return v.As<Napi::Number>().DoubleValue();
}

inline int32_t int_option(Napi::Object o, const char * key, int32_t fallback) {
    return static_cast<int32_t>(number_option(o, key, fallback));
}

inline bool bool_option(Napi::Object o, const char * key, bool fallback) {
    Napi::Value v = o.Get(key);
    if (v.IsUndefined()) return fallback;
    if (!v.IsBoolean()) throw Napi::TypeError::New(o.Env(), std::string(key) + " must be a boolean");
    return v.As<Napi::Boolean>().Value();
}

// Runs engine work on a worker thread; on failure returns false with the error's code
// (EngineError keeps its own) and message.
template <typename F>
bool run_engine(F && fn, std::string & code, std::string & message) {
    try {
        fn();
        return true;
    } catch (const still::EngineError & e) {
        code = e.code;
        message = e.what();
    } catch (const std::exception & e) {
        code = "internal";
        message = e.what();
    }
    return false;
}

// An AsyncWorker that settles a promise; Execute() runs off the event loop and reports
// failure by throwing (EngineError keeps its code).
class PromiseWorker : public Napi::AsyncWorker {
public:
    explicit PromiseWorker(Napi::Env env, const char * name)
        : Napi::AsyncWorker(env, name), deferred_(Napi::Promise::Deferred::New(env)) {}

    Napi::Promise Queue_() {
        Queue();
        return deferred_.Promise();
    }

protected:
    virtual void Run() = 0;
    virtual Napi::Value Result(Napi::Env env) = 0;

private:
    void Execute() override {
        std::string message;
        if (!run_engine([&] { Run(); }, code_, message)) SetError(message);
    }
    void OnOK() override {
        Napi::HandleScope scope(Env());
        try {
            deferred_.Resolve(Result(Env()));
        } catch (const Napi::Error & e) {
            deferred_.Reject(e.Value());
        }
    }
    void OnError(const Napi::Error & e) override {
        Napi::HandleScope scope(Env());
        deferred_.Reject(coded_error(Env(), code_, e.Message()).Value());
    }

    Napi::Promise::Deferred deferred_;
    std::string code_ = "internal";
};

// Runs `fn` and turns engine errors into coded JS errors (for synchronous methods).
template <typename F>
auto guard(Napi::Env env, F && fn) -> decltype(fn()) {
    try {
        return fn();
    } catch (const still::EngineError & e) {
        throw coded_error(env, e.code, e.what());
    } catch (const Napi::Error &) {
        throw;
    } catch (const std::exception & e) {
        throw coded_error(env, "internal", e.what());
    }
}

} // namespace still_addon
