// What the JS faces of the batched engines (rollouts, scorer) share: made over a Model,
// adapters set between runs, one run at a time on its own thread, streamed to JS through a
// StreamJob, disposed from JS while a run keeps its own reference.
#pragma once

#include <napi.h>

#include <atomic>
#include <memory>
#include <string>
#include <vector>

#include "AddonAbortFlag.h"
#include "AddonAdapter.h"
#include "AddonModel.h"
#include "addon.h"
#include "addon_stream.h"
#include "decode.h"

namespace still_addon {

template <typename Derived, typename Engine>
class AddonEngine : public Napi::ObjectWrap<Derived> {
protected:
    using Wrap = Napi::ObjectWrap<Derived>;

    // `what` names the engine in errors ("the scorer"); `usage` is the constructor's call shape.
    AddonEngine(const Napi::CallbackInfo & info, const char * what, const char * usage) : Wrap(info), what_(what) {
        Napi::Env env = info.Env();
        if (info.Length() < 1 || !info[0].IsObject() || !info[0].template As<Napi::Object>().InstanceOf(addon_data(env).model_constructor.Value()))
            throw Napi::TypeError::New(env, usage);
        model_ = AddonModel::Unwrap(info[0].template As<Napi::Object>())->Get(env);
    }

    // The constructor's options object (empty when not given).
    static Napi::Object options(const Napi::CallbackInfo & info) {
        return info.Length() > 1 && info[1].IsObject() ? info[1].template As<Napi::Object>() : Napi::Object::New(info.Env());
    }

    // The decode parameters every engine takes: {parallel, batchSize, ubatchSize, threads, flashAttn}.
    static void read_decode_params(const Napi::Object & o, still::DecodeParams & p) {
        p.n_parallel = int_option(o, "parallel", p.n_parallel);
        p.n_batch = int_option(o, "batchSize", p.n_batch);
        p.n_ubatch = int_option(o, "ubatchSize", p.n_ubatch);
        p.n_threads = int_option(o, "threads", p.n_threads);
        p.flash_attn = int_option(o, "flashAttn", p.flash_attn);
    }

    // The methods every engine has, for DefineClass.
    static std::vector<Napi::ClassPropertyDescriptor<Derived>> common_methods() {
        return {Wrap::InstanceMethod("setAdapters", &AddonEngine::SetAdapters), Wrap::InstanceMethod("dispose", &AddonEngine::Dispose)};
    }

    // Makes the engine from the constructor's model and options (engine errors become coded JS errors).
    template <typename Params>
    void make(Napi::Env env, const Params & params) {
        engine_ = guard(env, [&] { return std::make_shared<Engine>(model_, params); });
    }

    std::shared_ptr<Engine> Get(Napi::Env env) const {
        if (!engine_) throw coded_error(env, "disposed", std::string(what_) + " has been disposed");
        return engine_;
    }

    // run(input, onEvent(kind, payload), abortFlag?) -> Promise<stats>: `input` already
    // converted from info[0]; the engine's run() streams results and progress.
    template <typename Input, typename Result, typename Stats>
    Napi::Value StartRun(const Napi::CallbackInfo & info, std::shared_ptr<Input> input, const char * name,
                         Stats (Engine::*run)(const Input &, const std::function<void(Result &&)> &,
                                              const std::function<void(const Stats &)> &, const std::atomic<bool> *),
                         Napi::Value (*result_to_js)(Napi::Env, const Result &), Napi::Object (*stats_to_js)(Napi::Env, const Stats &)) {
        Napi::Env env = info.Env();
        auto engine = Get(env);
        auto abort = AddonAbortFlag::From(env, info.Length() > 2 ? info[2] : env.Undefined());
        if (!abort) abort = std::make_shared<std::atomic<bool>>(false);
        if (busy_->exchange(true)) throw coded_error(env, "busy", std::string(what_) + " is already running; wait for the run to end");
        return StreamJob<Result, Stats>::Start(env, info[1].template As<Napi::Function>(), name,
            [engine, input, abort, run](const auto & on_result, const auto & on_progress) {
                return ((*engine).*run)(*input, on_result, on_progress, abort.get());
            },
            abort, busy_, result_to_js, stats_to_js);
    }

    std::shared_ptr<still::Model> model_;

private:
    // setAdapters([[adapter, scale], ...])
    Napi::Value SetAdapters(const Napi::CallbackInfo & info) {
        Napi::Env env = info.Env();
        if (busy_->load()) throw coded_error(env, "busy", "adapters cannot change while a run is in progress");
        Get(env)->set_adapters(adapter_list(env, info.Length() > 0 ? info[0] : env.Undefined()));
        return env.Undefined();
    }

    Napi::Value Dispose(const Napi::CallbackInfo & info) {
        engine_.reset(); // a run in progress keeps its own reference until it ends
        return info.Env().Undefined();
    }

    const char * what_;
    std::shared_ptr<Engine> engine_;
    std::shared_ptr<std::atomic<bool>> busy_ = std::make_shared<std::atomic<bool>>(false);
};

} // namespace still_addon
