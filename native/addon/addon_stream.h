// A long engine call run on its own thread, streaming results to JS: each result, the
// (throttled) progress, and finally the promise's settlement all go through one
// thread-safe function, so JS sees them in order.
#pragma once

#include <napi.h>

#include <atomic>
#include <chrono>
#include <functional>
#include <memory>
#include <string>
#include <thread>

#include "addon.h"

namespace still_addon {

template <typename Result, typename Stats>
class StreamJob {
public:
    using ResultToJs = Napi::Value (*)(Napi::Env, const Result &);
    using StatsToJs = Napi::Object (*)(Napi::Env, const Stats &);
    // The work: gets the callbacks for results and progress, returns the final stats.
    using Work = std::function<Stats(const std::function<void(Result &&)> &, const std::function<void(const Stats &)> &)>;

    // Starts `work` on a new thread; `on_event(kind, payload)` gets "result" and "progress".
    // `abort` is set if the JS callback throws; `busy` is cleared when the run settles.
    static Napi::Promise Start(Napi::Env env, Napi::Function on_event, const char * name, Work work,
                               std::shared_ptr<std::atomic<bool>> abort, std::shared_ptr<std::atomic<bool>> busy,
                               ResultToJs result_to_js, StatsToJs stats_to_js) {
        auto * job = new StreamJob(env);
        job->abort_ = std::move(abort);
        job->busy_ = std::move(busy);
        job->result_to_js_ = result_to_js;
        job->stats_to_js_ = stats_to_js;
        Napi::Promise promise = job->deferred_.Promise();
        Tsfn tsfn = Tsfn::New(env, on_event, name, 0, 1, job, Finalize, static_cast<void *>(nullptr));
        job->thread_ = std::thread([work = std::move(work), tsfn]() mutable {
            auto last_progress = std::chrono::steady_clock::now();
            Message * done = new Message();
            try {
                done->stats = work(
                    [&](Result && r) {
                        Message * m = new Message();
                        m->kind = Message::sample;
                        m->result = std::move(r);
                        tsfn.NonBlockingCall(m);
                    },
                    [&](const Stats & s) {
                        const auto now = std::chrono::steady_clock::now();
                        if (now - last_progress < std::chrono::milliseconds(100)) return;
                        last_progress = now;
                        Message * m = new Message();
                        m->kind = Message::progress;
                        m->stats = s;
                        tsfn.NonBlockingCall(m);
                    });
            } catch (const still::EngineError & e) {
                done->kind = Message::failed;
                done->code = e.code;
                done->error = e.what();
            } catch (const std::exception & e) {
                done->kind = Message::failed;
                done->code = "internal";
                done->error = e.what();
            }
            tsfn.NonBlockingCall(done);
            tsfn.Release();
        });
        return promise;
    }

private:
    struct Message {
        enum Kind { sample, progress, done, failed } kind = done;
        Result result;
        Stats stats;
        std::string code, error;
    };

    static void CallJs(Napi::Env env, Napi::Function callback, StreamJob * job, Message * msg) {
        std::unique_ptr<Message> owned(msg);
        if (env == nullptr || job == nullptr) return;
        Napi::HandleScope scope(env);
        try {
            switch (msg->kind) {
                case Message::sample:
                    callback.Call({Napi::String::New(env, "result"), job->result_to_js_(env, msg->result)});
                    break;
                case Message::progress:
                    callback.Call({Napi::String::New(env, "progress"), job->stats_to_js_(env, msg->stats)});
                    break;
                case Message::done:
                    job->busy_->store(false);
                    if (!job->callback_error_.IsEmpty()) job->deferred_.Reject(job->callback_error_.Value());
                    else job->deferred_.Resolve(job->stats_to_js_(env, msg->stats));
                    break;
                case Message::failed:
                    job->busy_->store(false);
                    job->deferred_.Reject(coded_error(env, msg->code, msg->error).Value());
                    break;
            }
        } catch (const Napi::Error & e) {
            // A throwing callback must not end the process: stop the run, reject at its end.
            if (job->callback_error_.IsEmpty()) job->callback_error_ = Napi::Persistent(e.Value());
            job->abort_->store(true);
        }
    }

    using Tsfn = Napi::TypedThreadSafeFunction<StreamJob, Message, CallJs>;

    static void Finalize(Napi::Env, void *, StreamJob * job) {
        if (job->thread_.joinable()) job->thread_.join();
        delete job;
    }

    explicit StreamJob(Napi::Env env) : deferred_(Napi::Promise::Deferred::New(env)) {}

    Napi::Promise::Deferred deferred_;
    std::shared_ptr<std::atomic<bool>> abort_;
    std::shared_ptr<std::atomic<bool>> busy_;
    ResultToJs result_to_js_ = nullptr;
    StatsToJs stats_to_js_ = nullptr;
    std::thread thread_;
    Napi::ObjectReference callback_error_;
};

} // namespace still_addon
