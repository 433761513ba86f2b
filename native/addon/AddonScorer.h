// JS face of still::Scorer: teacher-forced log-probabilities, streamed per record.
#pragma once

#include <napi.h>

#include <atomic>
#include <memory>

#include "scorer.h"

namespace still_addon {

class AddonScorer : public Napi::ObjectWrap<AddonScorer> {
public:
    static Napi::Function Init(Napi::Env env);
    // new Scorer(model, {parallel, sequenceCells, batchSize, ubatchSize, threads, flashAttn})
    explicit AddonScorer(const Napi::CallbackInfo & info);

private:
    // run([{prompt, completion}], onEvent(kind, payload), abortFlag?) -> Promise<stats>
    Napi::Value Run(const Napi::CallbackInfo & info);
    // setAdapters([[adapter, scale], ...])
    Napi::Value SetAdapters(const Napi::CallbackInfo & info);
    Napi::Value Dispose(const Napi::CallbackInfo & info);

    std::shared_ptr<still::Scorer> Get(Napi::Env env) const;

    std::shared_ptr<still::Scorer> scorer_;
    std::shared_ptr<std::atomic<bool>> busy_ = std::make_shared<std::atomic<bool>>(false);
};

} // namespace still_addon
