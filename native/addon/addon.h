// Shared pieces of the Node-API face: per-environment data, errors, promise workers.
#pragma once

#include <napi.h>

#include <string>

#include "model.h"

namespace still_addon {

struct AddonData {
    Napi::FunctionReference model_constructor;
    Napi::FunctionReference abort_flag_constructor;
};

inline AddonData & addon_data(Napi::Env env) { return *env.GetInstanceData<AddonData>(); }

// A JS Error carrying a stable `code` ("load_failed", "cancelled", ...) for the TS layer.
inline Napi::Error coded_error(Napi::Env env, const std::string & code, const std::string & message) {
    Napi::Error err = Napi::Error::New(env, message);
    err.Set("code", Napi::String::New(env, code));
    return err;
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
